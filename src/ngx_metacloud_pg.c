
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * A per-worker pool of non-blocking libpq connections driven by the nginx
 * event loop.  Connections are opened lazily, checked against the schema
 * version once, then run the prepared ingest statement one request at a
 * time.  Requests that find every connection busy wait in a bounded queue.
 * Nothing here ever blocks: PQconnectPoll, PQsendQueryPrepared, PQflush and
 * PQconsumeInput are only called when the socket is ready.
 */


#include "ngx_metacloud.h"


#define NGX_METACLOUD_PG_BACKOFF_MIN   100
#define NGX_METACLOUD_PG_BACKOFF_MAX   5000


typedef enum {
    NGX_METACLOUD_PG_CLOSED = 0,
    NGX_METACLOUD_PG_CONNECTING,
    NGX_METACLOUD_PG_INIT,            /* version check and PREPARE */
    NGX_METACLOUD_PG_IDLE,
    NGX_METACLOUD_PG_BUSY
} ngx_metacloud_pg_state_e;


struct ngx_metacloud_pg_conn_s {
    ngx_queue_t                      queue;     /* in pool->idle */
    ngx_metacloud_pg_pool_t         *pool;
    PGconn                          *pg;
    ngx_connection_t                *c;
    ngx_metacloud_pg_query_t        *query;
    PGresult                        *result;    /* kept until the end */
    ngx_metacloud_pg_state_e         state;
    ngx_int_t                        version;
    unsigned                         flushing:1;
    unsigned                         failed:1;
};


struct ngx_metacloud_pg_pool_s {
    ngx_http_metacloud_main_conf_t  *conf;
    ngx_log_t                       *log;
    ngx_metacloud_pg_conn_t         *conns;
    ngx_uint_t                       nconns;

    ngx_queue_t                      idle;
    ngx_queue_t                      waiting;
    ngx_uint_t                       nwaiting;

    ngx_event_t                      retry;     /* back-off after failure */
    ngx_msec_t                       backoff;
    ngx_uint_t                       nopen;     /* connecting or better */

    unsigned                         down:1;    /* last attempt failed */
};


static ngx_int_t ngx_metacloud_pg_connect(ngx_metacloud_pg_conn_t *pc);
static ngx_int_t ngx_metacloud_pg_wrap_socket(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_forget_socket(ngx_connection_t *c);
static void ngx_metacloud_pg_event_handler(ngx_event_t *ev);
static void ngx_metacloud_pg_connect_poll(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_init_send(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_read(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_init_done(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_query_done(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_send(ngx_metacloud_pg_conn_t *pc,
    ngx_metacloud_pg_query_t *q);
static void ngx_metacloud_pg_flush(ngx_metacloud_pg_conn_t *pc);
static void ngx_metacloud_pg_close(ngx_metacloud_pg_conn_t *pc,
    ngx_uint_t failed);
static void ngx_metacloud_pg_dispatch(ngx_metacloud_pg_pool_t *pool);
static ngx_metacloud_pg_conn_t *ngx_metacloud_pg_idle_get(
    ngx_metacloud_pg_pool_t *pool);
static ngx_uint_t ngx_metacloud_pg_alive(ngx_metacloud_pg_conn_t *pc);
static u_char *ngx_metacloud_pg_flatten(const char *msg, u_char *buf,
    size_t len);
static void ngx_metacloud_pg_fail_waiting(ngx_metacloud_pg_pool_t *pool);
static void ngx_metacloud_pg_finish(ngx_metacloud_pg_query_t *q,
    ngx_metacloud_pg_rc_e rc, PGresult *res);
static void ngx_metacloud_pg_wait_timeout(ngx_event_t *ev);
static void ngx_metacloud_pg_retry(ngx_event_t *ev);
static void ngx_metacloud_pg_notice(void *arg, const PGresult *res);
static u_char *ngx_metacloud_pg_errmsg(PGconn *pg, u_char *buf, size_t len);


ngx_int_t
ngx_metacloud_pg_check_conninfo(ngx_conf_t *cf, ngx_str_t *ci)
{
    char               *err;
    u_char             *p, *last, *start;
    ngx_int_t           rc;
    ngx_uint_t          hostaddr;
    ngx_addr_t          addr;
    PQconninfoOption   *opts, *o;

    err = NULL;
    opts = PQconninfoParse((char *) ci->data, &err);

    if (opts == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid \"metacloud_db\" conninfo: %s",
                           err ? err : "out of memory");
        if (err) {
            PQfreemem(err);
        }
        return NGX_ERROR;
    }

    hostaddr = 0;

    for (o = opts; o->keyword; o++) {
        if (ngx_strcmp(o->keyword, "hostaddr") == 0
            && o->val && o->val[0])
        {
            hostaddr = 1;
        }
    }

    rc = NGX_OK;

    for (o = opts; o->keyword; o++) {

        if (ngx_strcmp(o->keyword, "host") != 0 || o->val == NULL
            || hostaddr)
        {
            continue;
        }

        /*
         * libpq resolves a host name with a blocking getaddrinfo() inside
         * PQconnectPoll(): only Unix socket paths and numeric addresses
         * keep the worker from stalling on DNS
         */

        p = (u_char *) o->val;
        last = p + ngx_strlen(p);

        while (p < last) {
            start = p;

            while (p < last && *p != ',') {
                p++;
            }

            if (p > start && *start != '/' && *start != '@') {
                if (ngx_parse_addr(cf->pool, &addr, start, p - start)
                    != NGX_OK)
                {
                    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "\"metacloud_db\" host \"%*s\" is a name: "
                                   "use a Unix socket path, a numeric "
                                   "address, or \"hostaddr\"",
                                   p - start, start);
                    rc = NGX_ERROR;
                    break;
                }
            }

            if (p < last) {
                p++;
            }
        }
    }

    PQconninfoFree(opts);

    return rc;
}


ngx_metacloud_pg_pool_t *
ngx_metacloud_pg_pool_create(ngx_cycle_t *cycle,
    ngx_http_metacloud_main_conf_t *mcf)
{
    ngx_uint_t                i;
    ngx_metacloud_pg_pool_t  *pool;

    pool = ngx_pcalloc(cycle->pool, sizeof(ngx_metacloud_pg_pool_t));
    if (pool == NULL) {
        return NULL;
    }

    pool->conns = ngx_pcalloc(cycle->pool,
                           mcf->pool_size * sizeof(ngx_metacloud_pg_conn_t));
    if (pool->conns == NULL) {
        return NULL;
    }

    pool->conf = mcf;
    pool->log = cycle->log;
    pool->nconns = mcf->pool_size;
    pool->backoff = NGX_METACLOUD_PG_BACKOFF_MIN;

    for (i = 0; i < pool->nconns; i++) {
        pool->conns[i].pool = pool;
    }

    ngx_queue_init(&pool->idle);
    ngx_queue_init(&pool->waiting);

    pool->retry.handler = ngx_metacloud_pg_retry;
    pool->retry.data = pool;
    pool->retry.log = cycle->log;
    pool->retry.cancelable = 1;

    return pool;
}


void
ngx_metacloud_pg_pool_destroy(ngx_metacloud_pg_pool_t *pool)
{
    ngx_uint_t  i;

    if (pool->retry.timer_set) {
        ngx_del_timer(&pool->retry);
    }

    ngx_metacloud_pg_fail_waiting(pool);

    for (i = 0; i < pool->nconns; i++) {
        if (pool->conns[i].state != NGX_METACLOUD_PG_CLOSED) {
            ngx_metacloud_pg_close(&pool->conns[i], 0);
        }
    }
}


/*
 * Takes a query: sends it on an idle connection, or queues it.  The handler
 * is always called later, from the event loop, exactly once.  NGX_DECLINED
 * means the pool cannot take it now (queue full, database down): answer 503.
 */

ngx_int_t
ngx_metacloud_pg_ingest(ngx_metacloud_pg_pool_t *pool,
    ngx_metacloud_pg_query_t *q)
{
    ngx_uint_t                i;
    ngx_metacloud_pg_conn_t  *pc;

    q->pool = pool;
    q->start = ngx_current_msec;

    pc = ngx_metacloud_pg_idle_get(pool);

    if (pc) {
        ngx_metacloud_pg_send(pc, q);
        return NGX_OK;
    }

    if (pool->down && pool->nopen == 0) {
        /* the last attempt failed and back-off runs: Meta will retry */
        return NGX_DECLINED;
    }

    if (pool->nwaiting >= pool->conf->queue_size) {
        ngx_log_error(NGX_LOG_WARN, q->log, 0,
                      "metacloud: %ui requests wait for a database "
                      "connection, metacloud_db_queue is full",
                      pool->nwaiting);
        return NGX_DECLINED;
    }

    ngx_queue_insert_tail(&pool->waiting, &q->queue);
    pool->nwaiting++;
    q->waiting = 1;

    q->timer.handler = ngx_metacloud_pg_wait_timeout;
    q->timer.data = q;
    q->timer.log = q->log;
    ngx_add_timer(&q->timer, pool->conf->timeout);

    /* open one more connection when every open one is busy */

    if (!pool->retry.timer_set) {
        for (i = 0; i < pool->nconns; i++) {
            pc = &pool->conns[i];

            if (pc->state == NGX_METACLOUD_PG_CLOSED) {
                if (ngx_metacloud_pg_connect(pc) != NGX_OK) {
                    ngx_metacloud_pg_close(pc, 1);
                }
                break;
            }
        }
    }

    return NGX_OK;
}


/* detaches a query whose request goes away: its result is dropped */

void
ngx_metacloud_pg_query_cancel(ngx_metacloud_pg_query_t *q)
{
    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->pool->nwaiting--;
        q->waiting = 0;
    }

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    if (q->conn) {
        q->conn->query = NULL;
        q->conn = NULL;
    }

    q->handler = NULL;
}


static ngx_int_t
ngx_metacloud_pg_connect(ngx_metacloud_pg_conn_t *pc)
{
    ngx_metacloud_pg_pool_t  *pool;

    pool = pc->pool;

    pc->pg = PQconnectStart((char *) pool->conf->conninfo.data);

    if (pc->pg == NULL) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "metacloud: PQconnectStart() failed: out of memory");
        return NGX_ERROR;
    }

    pc->state = NGX_METACLOUD_PG_CONNECTING;
    pool->nopen++;

    if (PQstatus(pc->pg) == CONNECTION_BAD) {
        u_char  msg[NGX_MAX_ERROR_STR];

        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "metacloud: could not connect to PostgreSQL: %s",
                      ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));
        return NGX_ERROR;
    }

    PQsetNoticeReceiver(pc->pg, ngx_metacloud_pg_notice, pool->log);

    if (PQsetnonblocking(pc->pg, 1) == -1) {
        ngx_log_error(NGX_LOG_ERR, pool->log, 0,
                      "metacloud: PQsetnonblocking() failed");
        return NGX_ERROR;
    }

    if (ngx_metacloud_pg_wrap_socket(pc) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the first PQconnectPoll() waits for the socket to be writable */
    ngx_add_timer(pc->c->read, pool->conf->timeout);

    return NGX_OK;
}


/*
 * libpq owns the socket; nginx gets an ngx_connection_t around it only to
 * receive its events.  During PQconnectPoll() libpq may switch to another
 * socket (several hosts or addresses), so the wrapper is renewed then.
 */

static ngx_int_t
ngx_metacloud_pg_wrap_socket(ngx_metacloud_pg_conn_t *pc)
{
    int                fd;
    ngx_int_t          timer;
    ngx_event_t       *rev, *wev;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pg);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "metacloud: PostgreSQL connection has no socket");
        return NGX_ERROR;
    }

    timer = 0;

    if (pc->c) {
        if (pc->c->fd == fd) {
            return NGX_OK;
        }

        timer = pc->c->read->timer_set;

        /* the old socket is libpq's to close: only forget it here */
        if (pc->c->read->timer_set) {
            ngx_del_timer(pc->c->read);
        }

        ngx_metacloud_pg_forget_socket(pc->c);
        pc->c = NULL;
    }

    c = ngx_get_connection(fd, pc->pool->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    c->log = pc->pool->log;

    rev = c->read;
    wev = c->write;

    rev->handler = ngx_metacloud_pg_event_handler;
    wev->handler = ngx_metacloud_pg_event_handler;
    rev->log = c->log;
    wev->log = c->log;

    pc->c = c;

    if (ngx_add_conn) {
        if (ngx_add_conn(c) == NGX_ERROR) {
            return NGX_ERROR;
        }

    } else {
        if (ngx_add_event(rev, NGX_READ_EVENT, NGX_CLEAR_EVENT) != NGX_OK
            || ngx_add_event(wev, NGX_WRITE_EVENT, NGX_CLEAR_EVENT) != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (timer) {
        ngx_add_timer(rev, pc->pool->conf->timeout);
    }

    return NGX_OK;
}


/* the descriptor belongs to libpq (PQfinish() closes it): only unwrap it */

static void
ngx_metacloud_pg_forget_socket(ngx_connection_t *c)
{
    if (ngx_del_conn) {
        ngx_del_conn(c, NGX_CLOSE_EVENT);

    } else {
        if (c->read->active) {
            ngx_del_event(c->read, NGX_READ_EVENT, NGX_CLOSE_EVENT);
        }

        if (c->write->active) {
            ngx_del_event(c->write, NGX_WRITE_EVENT, NGX_CLOSE_EVENT);
        }
    }

    if (c->read->posted) {
        ngx_delete_posted_event(c->read);
    }

    if (c->write->posted) {
        ngx_delete_posted_event(c->write);
    }

    c->read->closed = 1;
    c->write->closed = 1;
    c->fd = (ngx_socket_t) -1;
    ngx_free_connection(c);
}


static void
ngx_metacloud_pg_event_handler(ngx_event_t *ev)
{
    ngx_connection_t         *c;
    ngx_metacloud_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (c->close) {
        /* the worker is shutting down and this connection is idle */
        ngx_metacloud_pg_close(pc, 0);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;

        ngx_log_error(NGX_LOG_ERR, pc->pool->log, NGX_ETIMEDOUT,
                      "metacloud: PostgreSQL %s timed out (%M ms)",
                      pc->state == NGX_METACLOUD_PG_CONNECTING
                      ? "connect" : "query", pc->pool->conf->timeout);

        /*
         * libpq 15 has no non-blocking cancel: close the connection, the
         * server's statement_timeout ends the query; a commit that still
         * lands is harmless, Meta's retry is then a duplicate
         */

        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    switch (pc->state) {

    case NGX_METACLOUD_PG_CONNECTING:
        ngx_metacloud_pg_connect_poll(pc);
        return;

    case NGX_METACLOUD_PG_INIT:
    case NGX_METACLOUD_PG_BUSY:
        if (pc->flushing) {
            ngx_metacloud_pg_flush(pc);

            if (pc->state == NGX_METACLOUD_PG_CLOSED || pc->flushing) {
                return;
            }
        }

        ngx_metacloud_pg_read(pc);
        return;

    case NGX_METACLOUD_PG_IDLE:
        /* a server that goes away shows up as input on an idle socket */
        if (ev->write) {
            return;
        }

        /*
         * the server's FATAL message and the end of the stream may come in
         * one edge-triggered event: PQconsumeInput() then reads the message
         * but not the end, so look at the event's own flags too
         */

        if (!ngx_metacloud_pg_alive(pc)) {
            ngx_metacloud_pg_close(pc, 0);
        }

        return;

    default:
        return;
    }
}


static void
ngx_metacloud_pg_connect_poll(ngx_metacloud_pg_conn_t *pc)
{
    u_char                 msg[NGX_MAX_ERROR_STR];
    PostgresPollingStatusType  rc;

    for ( ;; ) {
        rc = PQconnectPoll(pc->pg);

        if (rc == PGRES_POLLING_FAILED) {
            ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                          "metacloud: could not connect to PostgreSQL: %s",
                          ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));
            ngx_metacloud_pg_close(pc, 1);
            return;
        }

        if (ngx_metacloud_pg_wrap_socket(pc) != NGX_OK) {
            ngx_metacloud_pg_close(pc, 1);
            return;
        }

        if (rc == PGRES_POLLING_OK) {
            ngx_metacloud_pg_init_send(pc);
            return;
        }

        /*
         * READING or WRITING: with edge-triggered events a state change
         * may need another poll before the next event comes; libpq says
         * what it waits for, and nginx reports both directions
         */

        if (rc == PGRES_POLLING_READING && !pc->c->read->ready) {
            return;
        }

        if (rc == PGRES_POLLING_WRITING && !pc->c->write->ready) {
            return;
        }

        pc->c->read->ready = 0;
        pc->c->write->ready = 0;
    }
}


/*
 * One round trip checks the schema version and prepares the ingest
 * statement; statement_timeout makes the server end a query that the
 * worker gave up on.
 */

static void
ngx_metacloud_pg_init_send(ngx_metacloud_pg_conn_t *pc)
{
    u_char   *p, sql[512];

    p = ngx_snprintf(sql, sizeof(sql) - 1,
                     "SET statement_timeout = %M;"
                     "SELECT metacloud_schema_version();"
                     "PREPARE metacloud_ingest_stmt (bytea, jsonb, jsonb) AS "
                     "SELECT metacloud_ingest($1, $2, $3)",
                     pc->pool->conf->timeout);
    *p = '\0';

    pc->state = NGX_METACLOUD_PG_INIT;
    pc->version = -1;
    pc->failed = 0;

    if (!PQsendQuery(pc->pg, (char *) sql)) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "metacloud: PQsendQuery() failed: %s",
                      ngx_metacloud_pg_errmsg(pc->pg, sql, sizeof(sql)));
        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    ngx_metacloud_pg_flush(pc);
}


static void
ngx_metacloud_pg_send(ngx_metacloud_pg_conn_t *pc, ngx_metacloud_pg_query_t *q)
{
    u_char      msg[NGX_MAX_ERROR_STR];
    ngx_msec_t  elapsed, timeout;

    pc->state = NGX_METACLOUD_PG_BUSY;
    pc->c->idle = 0;
    pc->query = q;
    pc->failed = 0;
    q->conn = pc;

    if (!PQsendQueryPrepared(pc->pg, "metacloud_ingest_stmt", 3, q->values,
                             q->lengths, q->formats, 0))
    {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "metacloud: PQsendQueryPrepared() failed: %s",
                      ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));
        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    /* metacloud_db_timeout bounds the whole wait, queue included */

    timeout = pc->pool->conf->timeout;
    elapsed = ngx_current_msec - q->start;

    ngx_add_timer(pc->c->read, elapsed < timeout ? timeout - elapsed : 1);

    ngx_metacloud_pg_flush(pc);
}


static void
ngx_metacloud_pg_flush(ngx_metacloud_pg_conn_t *pc)
{
    int     rc;
    u_char  msg[NGX_MAX_ERROR_STR];

    rc = PQflush(pc->pg);

    if (rc == -1) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "metacloud: sending to PostgreSQL failed: %s",
                      ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));
        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    /* 1: libpq's buffer is not empty yet, wait for the write event */
    pc->flushing = (rc == 1);
}


static void
ngx_metacloud_pg_read(ngx_metacloud_pg_conn_t *pc)
{
    u_char          msg[NGX_MAX_ERROR_STR];
    char           *v;
    PGresult       *res;
    ExecStatusType  st;

    if (!PQconsumeInput(pc->pg)) {
        ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                      "metacloud: reading from PostgreSQL failed: %s",
                      ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));
        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    while (!PQisBusy(pc->pg)) {

        res = PQgetResult(pc->pg);

        if (res == NULL) {
            /* every result of the statement has come */

            if (pc->c->read->timer_set) {
                ngx_del_timer(pc->c->read);
            }

            if (pc->state == NGX_METACLOUD_PG_INIT) {
                ngx_metacloud_pg_init_done(pc);

            } else {
                ngx_metacloud_pg_query_done(pc);
            }

            return;
        }

        st = PQresultStatus(res);

        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE
            || st == PGRES_NONFATAL_ERROR)
        {
            if (!pc->failed) {
                ngx_log_error(NGX_LOG_ERR, pc->pool->log, 0,
                              "metacloud: PostgreSQL: %s%s",
                              ngx_metacloud_pg_flatten(
                                  PQresultErrorMessage(res), msg, sizeof(msg)),
                              pc->state == NGX_METACLOUD_PG_INIT
                              ? " (is the schema migrated? run sql/migrate)"
                              : "");
            }

            pc->failed = 1;
            PQclear(res);
            continue;
        }

        if (pc->state == NGX_METACLOUD_PG_INIT) {
            if (st == PGRES_TUPLES_OK && PQntuples(res) == 1
                && !PQgetisnull(res, 0, 0))
            {
                v = PQgetvalue(res, 0, 0);
                pc->version = ngx_atoi((u_char *) v, ngx_strlen(v));
            }

            PQclear(res);
            continue;
        }

        /* the ingest statement returns one row; keep it for the handler */

        if (pc->result) {
            PQclear(pc->result);
        }

        pc->result = res;
    }
}


static void
ngx_metacloud_pg_init_done(ngx_metacloud_pg_conn_t *pc)
{
    ngx_metacloud_pg_pool_t  *pool;

    pool = pc->pool;

    if (pc->version != NGX_ERROR && pc->version < MC_SCHEMA_VERSION) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0,
                      "metacloud: the database schema is version %i, this "
                      "module needs %d: run sql/migrate",
                      pc->version, MC_SCHEMA_VERSION);
        pc->failed = 1;
    }

    if (pc->failed) {
        ngx_metacloud_pg_close(pc, 1);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pool->log, 0,
                   "metacloud: PostgreSQL connection ready, schema %i",
                   pc->version);

    pool->down = 0;
    pool->backoff = NGX_METACLOUD_PG_BACKOFF_MIN;

    pc->state = NGX_METACLOUD_PG_IDLE;
    pc->c->idle = 1;
    ngx_queue_insert_tail(&pool->idle, &pc->queue);

    ngx_metacloud_pg_dispatch(pool);
}


static void
ngx_metacloud_pg_query_done(ngx_metacloud_pg_conn_t *pc)
{
    PGresult                  *res;
    ngx_metacloud_pg_query_t  *q;

    q = pc->query;
    res = pc->result;

    pc->query = NULL;
    pc->result = NULL;
    pc->state = NGX_METACLOUD_PG_IDLE;
    pc->c->idle = 1;
    ngx_queue_insert_tail(&pc->pool->idle, &pc->queue);

    if (q) {
        q->conn = NULL;

        if (pc->failed || res == NULL || PQresultStatus(res) != PGRES_TUPLES_OK
            || PQntuples(res) != 1)
        {
            ngx_metacloud_pg_finish(q, NGX_METACLOUD_PG_ERROR, NULL);

        } else {
            ngx_metacloud_pg_finish(q, NGX_METACLOUD_PG_OK, res);
        }
    }

    if (res) {
        PQclear(res);
    }

    ngx_metacloud_pg_dispatch(pc->pool);
}


static void
ngx_metacloud_pg_dispatch(ngx_metacloud_pg_pool_t *pool)
{
    ngx_queue_t               *qu;
    ngx_metacloud_pg_conn_t   *pc;
    ngx_metacloud_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiting)) {

        pc = ngx_metacloud_pg_idle_get(pool);

        if (pc == NULL) {
            return;
        }

        qu = ngx_queue_head(&pool->waiting);
        ngx_queue_remove(qu);
        pool->nwaiting--;

        q = ngx_queue_data(qu, ngx_metacloud_pg_query_t, queue);
        q->waiting = 0;

        if (q->timer.timer_set) {
            ngx_del_timer(&q->timer);
        }

        ngx_metacloud_pg_send(pc, q);
    }
}


/*
 * An idle connection whose server went away (a restart, an idle timeout)
 * is found here, before a query is written into it: a write to a closed
 * socket may look successful to libpq, and the answer would then be
 * awaited until the timeout.
 */

static ngx_metacloud_pg_conn_t *
ngx_metacloud_pg_idle_get(ngx_metacloud_pg_pool_t *pool)
{
    ngx_queue_t              *qu;
    ngx_metacloud_pg_conn_t  *pc;

    while (!ngx_queue_empty(&pool->idle)) {
        qu = ngx_queue_head(&pool->idle);
        pc = ngx_queue_data(qu, ngx_metacloud_pg_conn_t, queue);

        if (ngx_metacloud_pg_alive(pc)) {
            ngx_queue_remove(qu);
            return pc;
        }

        ngx_metacloud_pg_close(pc, 0);
    }

    return NULL;
}


/* reads what an idle connection has: a closed one reports the end here */

static ngx_uint_t
ngx_metacloud_pg_alive(ngx_metacloud_pg_conn_t *pc)
{
    u_char  msg[NGX_MAX_ERROR_STR];

    if (!pc->c->read->pending_eof && !pc->c->read->eof
        && PQconsumeInput(pc->pg) && PQstatus(pc->pg) != CONNECTION_BAD)
    {
        return 1;
    }

    ngx_log_error(NGX_LOG_WARN, pc->pool->log, 0,
                  "metacloud: idle PostgreSQL connection lost: %s",
                  ngx_metacloud_pg_errmsg(pc->pg, msg, sizeof(msg)));

    return 0;
}


/*
 * Closes a connection.  A query on it is answered "unavailable" (503: Meta
 * retries).  After a failure the pool backs off before it connects again,
 * and when no connection is left, the waiting requests get 503 at once
 * rather than at their timeout.
 */

static void
ngx_metacloud_pg_close(ngx_metacloud_pg_conn_t *pc, ngx_uint_t failed)
{
    ngx_metacloud_pg_query_t  *q;
    ngx_metacloud_pg_pool_t   *pool;

    pool = pc->pool;
    q = pc->query;

    if (pc->c) {
        if (pc->c->read->timer_set) {
            ngx_del_timer(pc->c->read);
        }

        if (pc->c->write->timer_set) {
            ngx_del_timer(pc->c->write);
        }

        ngx_metacloud_pg_forget_socket(pc->c);
        pc->c = NULL;
    }

    if (pc->state == NGX_METACLOUD_PG_IDLE) {
        ngx_queue_remove(&pc->queue);
    }

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pg) {
        PQfinish(pc->pg);
        pc->pg = NULL;
    }

    if (pc->state != NGX_METACLOUD_PG_CLOSED && pool->nopen) {
        pool->nopen--;
    }

    pc->state = NGX_METACLOUD_PG_CLOSED;
    pc->query = NULL;
    pc->flushing = 0;

    if (q) {
        q->conn = NULL;
        ngx_metacloud_pg_finish(q, NGX_METACLOUD_PG_UNAVAILABLE, NULL);
    }

    if (!failed || ngx_exiting || ngx_terminate) {
        return;
    }

    pool->down = 1;

    if (!pool->retry.timer_set) {
        ngx_add_timer(&pool->retry, pool->backoff);
        pool->backoff = ngx_min(pool->backoff * 2,
                                NGX_METACLOUD_PG_BACKOFF_MAX);
    }

    if (pool->nopen == 0) {
        ngx_metacloud_pg_fail_waiting(pool);
    }
}


static void
ngx_metacloud_pg_retry(ngx_event_t *ev)
{
    ngx_uint_t                i;
    ngx_metacloud_pg_pool_t  *pool;

    pool = ev->data;

    if (ngx_queue_empty(&pool->waiting)) {
        /* connect lazily: the next request opens a connection */
        pool->down = 0;
        return;
    }

    for (i = 0; i < pool->nconns; i++) {
        if (pool->conns[i].state == NGX_METACLOUD_PG_CLOSED) {
            if (ngx_metacloud_pg_connect(&pool->conns[i]) != NGX_OK) {
                ngx_metacloud_pg_close(&pool->conns[i], 1);
            }
            return;
        }
    }
}


static void
ngx_metacloud_pg_fail_waiting(ngx_metacloud_pg_pool_t *pool)
{
    ngx_queue_t               *qu;
    ngx_metacloud_pg_query_t  *q;

    while (!ngx_queue_empty(&pool->waiting)) {
        qu = ngx_queue_head(&pool->waiting);
        ngx_queue_remove(qu);
        pool->nwaiting--;

        q = ngx_queue_data(qu, ngx_metacloud_pg_query_t, queue);
        q->waiting = 0;

        if (q->timer.timer_set) {
            ngx_del_timer(&q->timer);
        }

        ngx_metacloud_pg_finish(q, NGX_METACLOUD_PG_UNAVAILABLE, NULL);
    }
}


static void
ngx_metacloud_pg_wait_timeout(ngx_event_t *ev)
{
    ngx_metacloud_pg_query_t  *q;

    q = ev->data;

    ngx_log_error(NGX_LOG_ERR, q->log, NGX_ETIMEDOUT,
                  "metacloud: no PostgreSQL connection within %M ms",
                  q->pool->conf->timeout);

    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->pool->nwaiting--;
        q->waiting = 0;
    }

    ngx_metacloud_pg_finish(q, NGX_METACLOUD_PG_UNAVAILABLE, NULL);
}


static void
ngx_metacloud_pg_finish(ngx_metacloud_pg_query_t *q, ngx_metacloud_pg_rc_e rc,
    PGresult *res)
{
    ngx_metacloud_pg_handler_pt  handler;

    handler = q->handler;
    q->handler = NULL;

    if (handler) {
        handler(q, rc, res);
    }
}


static void
ngx_metacloud_pg_notice(void *arg, const PGresult *res)
{
    u_char      msg[NGX_MAX_ERROR_STR];
    ngx_log_t  *log = arg;

    ngx_log_error(NGX_LOG_NOTICE, log, 0, "metacloud: PostgreSQL: %s",
                  ngx_metacloud_pg_flatten(PQresultErrorMessage(res), msg,
                                           sizeof(msg)));
}


/*
 * libpq's messages span lines (DETAIL, HINT, CONTEXT, the statement):
 * one log line each, with the line breaks turned into spaces
 */

static u_char *
ngx_metacloud_pg_flatten(const char *msg, u_char *buf, size_t len)
{
    u_char  *p, *last;

    p = buf;
    last = buf + len - 1;

    for ( /* void */ ; msg && *msg && p < last; msg++) {

        if (*msg == '\n' || *msg == '\r' || *msg == '\t') {
            if (p > buf && p[-1] != ' ') {
                *p++ = ' ';
            }

            continue;
        }

        *p++ = *msg;
    }

    while (p > buf && p[-1] == ' ') {
        p--;
    }

    if (p == buf) {
        p = ngx_cpymem(buf, "server closed the connection",
                       ngx_min(len - 1, sizeof("server closed the connection")
                                        - 1));
    }

    *p = '\0';

    return buf;
}


static u_char *
ngx_metacloud_pg_errmsg(PGconn *pg, u_char *buf, size_t len)
{
    return ngx_metacloud_pg_flatten(pg ? PQerrorMessage(pg) : "out of memory",
                                    buf, len);
}
