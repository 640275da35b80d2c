
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * A per-worker pool of non-blocking libpq connections driven by the nginx
 * event loop.  Connections are opened lazily; each one checks the schema
 * version and prepares every registered statement once, then runs one
 * query at a time.  Queries that find every connection busy wait in a
 * bounded queue.  Nothing here ever blocks: PQconnectPoll, PQflush and
 * PQconsumeInput are only called when the socket is ready, and every
 * completion reaches its caller as a posted event.
 */


#include "ngx_http_metacloud.h"
#include "ngx_http_metacloud_metrics.h"


#define NGX_HTTP_METACLOUD_PG_BACKOFF_MIN   100
#define NGX_HTTP_METACLOUD_PG_BACKOFF_MAX   5000

/* what a group statement may have: parameters, and columns per query */
#define NGX_HTTP_METACLOUD_PG_GROUP_PARAMS  8
#define NGX_HTTP_METACLOUD_PG_GROUP_COLUMNS 8

/* pg_type OIDs of a group's array elements (fixed in every server) */
#define NGX_HTTP_METACLOUD_PG_BYTEAOID      17
#define NGX_HTTP_METACLOUD_PG_TEXTOID       25


typedef enum {
    NGX_HTTP_METACLOUD_PG_CLOSED = 0,
    NGX_HTTP_METACLOUD_PG_CONNECTING,
    NGX_HTTP_METACLOUD_PG_INIT,         /* version check and PREPAREs */
    NGX_HTTP_METACLOUD_PG_IDLE,
    NGX_HTTP_METACLOUD_PG_BUSY
} ngx_http_metacloud_pg_state_e;


struct ngx_http_metacloud_pg_conn_s {
    ngx_queue_t                       queue;    /* in pg->idle */
    ngx_http_metacloud_pg_t          *pg;
    PGconn                           *pgconn;
    ngx_connection_t                 *c;
    ngx_file_uniq_t                   sock;     /* the wrapped socket inode */
    ngx_http_metacloud_pg_query_t    *query;
    ngx_http_metacloud_pg_query_t   **group;    /* or these, in one call */
    ngx_uint_t                        ngroup;
    PGresult                         *result;   /* the last one, kept */
    ngx_http_metacloud_pg_state_e     state;
    ngx_int_t                         version;
    unsigned                          failed:1;
    unsigned                          grouped:1; /* busy with a groupable
                                                    statement */
};


struct ngx_http_metacloud_pg_s {
    ngx_http_metacloud_pg_conf_t     *conf;
    ngx_http_metacloud_pg_conn_t     *conns;
    u_char                           *init_sql;

    ngx_queue_t                       idle;
    ngx_queue_t                       waiting;
    ngx_uint_t                        nwaiting;
    ngx_uint_t                        ngrouped; /* conns busy, grouped:1 */

    ngx_event_t                       retry;    /* back-off after failure */
    ngx_event_t                       redispatch; /* posted by a close */
    ngx_msec_t                        backoff;
    ngx_uint_t                        nopen;    /* connecting or better */

    unsigned                          down:1;   /* last attempt failed */
    unsigned                          no_slots:1; /* that warning is out */
    unsigned                          outage:1; /* logged, not over yet */
};


static u_char *ngx_http_metacloud_pg_init_sql(ngx_cycle_t *cycle,
    ngx_http_metacloud_pg_conf_t *pgcf);
static void ngx_http_metacloud_pg_connect(ngx_http_metacloud_pg_conn_t *pc);
static ngx_int_t ngx_http_metacloud_pg_wrap_socket(
    ngx_http_metacloud_pg_conn_t *pc);
static ngx_int_t ngx_http_metacloud_pg_wait(ngx_http_metacloud_pg_conn_t *pc,
    ngx_uint_t write);
static void ngx_http_metacloud_pg_forget_socket(ngx_connection_t *c);
static void ngx_http_metacloud_pg_event_handler(ngx_event_t *ev);
static void ngx_http_metacloud_pg_connect_poll(
    ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_connect_failed(
    ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_init_send(ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_send(ngx_http_metacloud_pg_conn_t *pc,
    ngx_http_metacloud_pg_query_t *q);
static ngx_uint_t ngx_http_metacloud_pg_groupable(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q);
static void ngx_http_metacloud_pg_enqueue(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q);
static ngx_msec_t ngx_http_metacloud_pg_time_left(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q);
static void ngx_http_metacloud_pg_send_group(
    ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_group_done(
    ngx_http_metacloud_pg_conn_t *pc);
static PGresult *ngx_http_metacloud_pg_group_row(
    ngx_http_metacloud_pg_conn_t *pc, PGresult *res, ngx_uint_t row);
static void ngx_http_metacloud_pg_busy(ngx_http_metacloud_pg_conn_t *pc,
    ngx_uint_t grouped);
static void ngx_http_metacloud_pg_flush(ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_read(ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_init_done(ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_query_done(
    ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_set_idle(ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_set_log(ngx_connection_t *c,
    ngx_log_t *log);
static void ngx_http_metacloud_pg_dispatch(ngx_http_metacloud_pg_t *pg);
static void ngx_http_metacloud_pg_take(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_conn_t *pc);
static ngx_http_metacloud_pg_conn_t *ngx_http_metacloud_pg_idle_get(
    ngx_http_metacloud_pg_t *pg);
static ngx_uint_t ngx_http_metacloud_pg_alive(
    ngx_http_metacloud_pg_conn_t *pc);
static void ngx_http_metacloud_pg_close(ngx_http_metacloud_pg_conn_t *pc,
    ngx_uint_t failed);
static void ngx_http_metacloud_pg_retry(ngx_event_t *ev);
static void ngx_http_metacloud_pg_redispatch(ngx_event_t *ev);
static void ngx_http_metacloud_pg_fail_waiting(ngx_http_metacloud_pg_t *pg);
static void ngx_http_metacloud_pg_wait_timeout(ngx_event_t *ev);
static void ngx_http_metacloud_pg_complete(ngx_http_metacloud_pg_query_t *q,
    ngx_http_metacloud_pg_rc_e rc, PGresult *res);
static void ngx_http_metacloud_pg_completed(ngx_event_t *ev);
static void ngx_http_metacloud_pg_notice(void *arg, const PGresult *res);
static u_char *ngx_http_metacloud_pg_flatten(const char *msg, u_char *buf,
    size_t len);
static u_char *ngx_http_metacloud_pg_errmsg(PGconn *pgconn, u_char *buf,
    size_t len);
static ngx_uint_t ngx_http_metacloud_pg_failure(ngx_http_metacloud_pg_t *pg,
    ngx_uint_t level, ngx_http_metacloud_db_error_e reason);
static ngx_uint_t ngx_http_metacloud_pg_result_failure(
    ngx_http_metacloud_pg_conn_t *pc, PGresult *res);
static void ngx_http_metacloud_pg_recovered(ngx_http_metacloud_pg_t *pg,
    ngx_log_t *log);


ngx_http_metacloud_pg_stmt_t *
ngx_http_metacloud_pg_add_stmt(ngx_conf_t *cf, ngx_str_t *name,
    ngx_str_t *sql, ngx_uint_t nparams)
{
    ngx_uint_t                       i;
    ngx_http_metacloud_pg_stmt_t    *stmt, **stmtp;
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metacloud_module);

    /* it goes into a PREPARE command as is: an identifier, nothing more */

    for (i = 0; i < name->len; i++) {
        if (!(name->data[i] == '_' || (name->data[i] >= 'a'
                                       && name->data[i] <= 'z')
              || (i > 0 && name->data[i] >= '0' && name->data[i] <= '9')))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "metacloud: invalid statement name \"%V\"",
                               name);
            return NULL;
        }
    }

    stmtp = mcf->pg.stmts.elts;

    for (i = 0; i < mcf->pg.stmts.nelts; i++) {
        if (stmtp[i]->name.len == name->len
            && ngx_strncmp(stmtp[i]->name.data, name->data, name->len) == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "metacloud: statement \"%V\" is registered "
                               "twice", name);
            return NULL;
        }
    }

    stmt = ngx_pcalloc(cf->pool, sizeof(ngx_http_metacloud_pg_stmt_t));
    if (stmt == NULL) {
        return NULL;
    }

    stmt->name.len = name->len;
    stmt->name.data = ngx_pnalloc(cf->pool, name->len + 1);
    if (stmt->name.data == NULL) {
        return NULL;
    }

    ngx_cpystrn(stmt->name.data, name->data, name->len + 1);

    stmt->sql = *sql;
    stmt->nparams = nparams;

    stmtp = ngx_array_push(&mcf->pg.stmts);
    if (stmtp == NULL) {
        return NULL;
    }

    *stmtp = stmt;

    return stmt;
}


ngx_int_t
ngx_http_metacloud_pg_add_group(ngx_conf_t *cf,
    ngx_http_metacloud_pg_stmt_t *stmt, ngx_str_t *name, ngx_str_t *sql)
{
    if (stmt->nparams > NGX_HTTP_METACLOUD_PG_GROUP_PARAMS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "metacloud: statement \"%V\" has too many "
                           "parameters for a group", &stmt->name);
        return NGX_ERROR;
    }

    stmt->group = ngx_http_metacloud_pg_add_stmt(cf, name, sql,
                                                 stmt->nparams);

    return stmt->group ? NGX_OK : NGX_ERROR;
}


ngx_http_metacloud_pg_t *
ngx_http_metacloud_pg_get(void)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(ngx_cycle,
                                              ngx_http_metacloud_module);

    return mcf ? mcf->pg.pg : NULL;
}


void
ngx_http_metacloud_pg_stats(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_stats_t *st)
{
    ngx_uint_t  i;

    ngx_memzero(st, sizeof(ngx_http_metacloud_pg_stats_t));

    st->size = pg->conf->size;
    st->waiting = pg->nwaiting;
    st->queue_size = pg->conf->queue_size;
    st->down = pg->down;

    for (i = 0; i < pg->conf->size; i++) {

        switch (pg->conns[i].state) {

        case NGX_HTTP_METACLOUD_PG_CONNECTING:
        case NGX_HTTP_METACLOUD_PG_INIT:
            st->connecting++;
            break;

        case NGX_HTTP_METACLOUD_PG_IDLE:
            st->idle++;
            break;

        case NGX_HTTP_METACLOUD_PG_BUSY:
            st->busy++;
            break;

        default:
            break;
        }
    }
}


ngx_int_t
ngx_http_metacloud_pg_check_conninfo(ngx_conf_t *cf, ngx_str_t *conninfo)
{
    char               *err;
    u_char             *p, *last, *start;
    ngx_int_t           rc;
    ngx_uint_t          hostaddr;
    ngx_addr_t          addr;
    PQconninfoOption   *opts, *o;

    err = NULL;
    opts = PQconninfoParse((char *) conninfo->data, &err);

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


ngx_int_t
ngx_http_metacloud_pg_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_pg_conf_t *pgcf)
{
    ngx_uint_t                i;
    ngx_http_metacloud_pg_t  *pg;

    if (pgcf->conninfo.data == NULL || pgcf->stmts.nelts == 0) {
        return NGX_OK;
    }

    pg = ngx_pcalloc(cycle->pool, sizeof(ngx_http_metacloud_pg_t));
    if (pg == NULL) {
        return NGX_ERROR;
    }

    pg->conns = ngx_pcalloc(cycle->pool,
                        pgcf->size * sizeof(ngx_http_metacloud_pg_conn_t));
    if (pg->conns == NULL) {
        return NGX_ERROR;
    }

    pg->init_sql = ngx_http_metacloud_pg_init_sql(cycle, pgcf);
    if (pg->init_sql == NULL) {
        return NGX_ERROR;
    }

    pg->conf = pgcf;
    pg->backoff = NGX_HTTP_METACLOUD_PG_BACKOFF_MIN;

    for (i = 0; i < pgcf->size; i++) {
        pg->conns[i].pg = pg;

        if (pgcf->group > 1) {
            pg->conns[i].group = ngx_pcalloc(cycle->pool, pgcf->group
                                       * sizeof(ngx_http_metacloud_pg_query_t *));
            if (pg->conns[i].group == NULL) {
                return NGX_ERROR;
            }
        }
    }

    ngx_queue_init(&pg->idle);
    ngx_queue_init(&pg->waiting);

    pg->retry.handler = ngx_http_metacloud_pg_retry;
    pg->retry.data = pg;
    pg->retry.log = cycle->log;
    pg->retry.cancelable = 1;

    pg->redispatch.handler = ngx_http_metacloud_pg_redispatch;
    pg->redispatch.data = pg;
    pg->redispatch.log = cycle->log;

    pgcf->pg = pg;

    return NGX_OK;
}


void
ngx_http_metacloud_pg_exit_worker(ngx_http_metacloud_pg_conf_t *pgcf)
{
    ngx_uint_t                i;
    ngx_http_metacloud_pg_t  *pg;

    pg = pgcf->pg;

    if (pg == NULL) {
        return;
    }

    if (pg->retry.timer_set) {
        ngx_del_timer(&pg->retry);
    }

    if (pg->redispatch.posted) {
        ngx_delete_posted_event(&pg->redispatch);
    }

    ngx_http_metacloud_pg_fail_waiting(pg);

    for (i = 0; i < pgcf->size; i++) {
        if (pg->conns[i].state != NGX_HTTP_METACLOUD_PG_CLOSED) {
            ngx_http_metacloud_pg_close(&pg->conns[i], 0);
        }
    }

    pgcf->pg = NULL;
}


/*
 * One round trip per new connection: statement_timeout makes the server
 * end a query that the worker gave up on, the schema version is checked,
 * and every registered statement is prepared.
 */

static u_char *
ngx_http_metacloud_pg_init_sql(ngx_cycle_t *cycle,
    ngx_http_metacloud_pg_conf_t *pgcf)
{
    u_char                         *sql, *p;
    size_t                          len;
    ngx_uint_t                      i;
    ngx_http_metacloud_pg_stmt_t  **stmt;

    stmt = pgcf->stmts.elts;

    len = sizeof("SET statement_timeout = ;") - 1 + NGX_INT_T_LEN
          + sizeof("SELECT metacloud_schema_version();") - 1 + 1;

    for (i = 0; i < pgcf->stmts.nelts; i++) {
        len += sizeof("PREPARE  AS ;") - 1
               + stmt[i]->name.len + stmt[i]->sql.len;
    }

    sql = ngx_pnalloc(cycle->pool, len);
    if (sql == NULL) {
        return NULL;
    }

    p = ngx_sprintf(sql, "SET statement_timeout = %M;"
                    "SELECT metacloud_schema_version();", pgcf->timeout);

    for (i = 0; i < pgcf->stmts.nelts; i++) {
        p = ngx_sprintf(p, "PREPARE %V AS %V;",
                        &stmt[i]->name, &stmt[i]->sql);
    }

    *p = '\0';

    return sql;
}


/*
 * Takes a query: sends it on an idle connection, or queues it.  Whatever
 * happens, even a failure to send or to connect right here, the handler
 * runs later from a posted event, so no caller is ever re-entered.
 */

ngx_int_t
ngx_http_metacloud_pg_run(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q)
{
    ngx_uint_t                     i, connecting, level;
    ngx_http_metacloud_pg_conn_t  *pc;

    q->pg = pg;
    q->conn = NULL;
    q->result = NULL;
    q->rc = NGX_HTTP_METACLOUD_PG_UNAVAILABLE;
    q->start = ngx_current_msec;
    q->solo = 0;

    if (ngx_http_metacloud_pg_groupable(pg, q) && pg->ngrouped
        && pg->nwaiting + 1 < pg->conf->group
        && pg->nwaiting < pg->conf->queue_size)
    {
        /*
         * group commit: while a connection runs queries of this kind, the
         * next ones wait for it and then go together, in one transaction,
         * rather than on more connections at once (metacloud_db_group);
         * within metacloud_db_queue, which 0 makes "no waiting"
         */

        ngx_http_metacloud_pg_enqueue(pg, q);
        return NGX_OK;
    }

    pc = ngx_http_metacloud_pg_idle_get(pg);

    if (pc) {
        if (pg->nwaiting && ngx_http_metacloud_pg_groupable(pg, q)) {
            /* this one fills a group: they go at once, together */
            ngx_http_metacloud_pg_enqueue(pg, q);
            ngx_http_metacloud_pg_take(pg, pc);
            return NGX_OK;
        }

        ngx_http_metacloud_pg_send(pc, q);
        return NGX_OK;
    }

    if (pg->down && pg->nopen == 0) {
        /* the last attempt failed and back-off runs: the caller retries */
        q->pg = NULL;
        return NGX_DECLINED;
    }

    /* every open connection is busy: one more is opened, if there is room */

    connecting = 0;
    pc = NULL;

    for (i = 0; i < pg->conf->size; i++) {

        switch (pg->conns[i].state) {

        case NGX_HTTP_METACLOUD_PG_CONNECTING:
        case NGX_HTTP_METACLOUD_PG_INIT:
            connecting++;
            break;

        case NGX_HTTP_METACLOUD_PG_CLOSED:
            if (pc == NULL && !pg->retry.timer_set) {
                pc = &pg->conns[i];
            }

            break;

        default:
            break;
        }
    }

    /*
     * a query may always wait for a connection being opened (one each):
     * metacloud_db_queue bounds only those waiting for a busy one, and 0
     * means no such waiting, not no service
     */

    if (pg->nwaiting >= pg->conf->queue_size + connecting + (pc ? 1 : 0)) {
        if (pg->conf->queue_size) {
            level = ngx_http_metacloud_pg_failure(pg, NGX_LOG_WARN,
                                              NGX_HTTP_METACLOUD_DB_TIMEOUT);

            ngx_log_error(level, q->log, 0,
                          "metacloud: %ui queries wait for a database "
                          "connection, metacloud_db_queue is full",
                          pg->nwaiting);
        }

        q->pg = NULL;

        if (pc) {
            /* for the next query: the pool grows all the same */
            ngx_http_metacloud_pg_connect(pc);
        }

        return NGX_DECLINED;
    }

    ngx_http_metacloud_pg_enqueue(pg, q);

    if (pc) {
        /* a failure right here completes q from a posted event */
        ngx_http_metacloud_pg_connect(pc);
    }

    return NGX_OK;
}


void
ngx_http_metacloud_pg_cancel(ngx_http_metacloud_pg_query_t *q)
{
    ngx_uint_t                     i;
    ngx_http_metacloud_pg_conn_t  *pc;

    if (q->pg == NULL) {
        return;
    }

    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->pg->nwaiting--;
        q->waiting = 0;
    }

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    if (q->event.posted) {
        ngx_delete_posted_event(&q->event);
    }

    if (q->result) {
        PQclear(q->result);
        q->result = NULL;
    }

    pc = q->conn;

    if (pc) {
        /* the answer still comes and is dropped; the log goes away now */

        if (pc->query == q) {
            pc->query = NULL;
            ngx_http_metacloud_pg_set_log(pc->c, ngx_cycle->log);
        }

        for (i = 0; i < pc->ngroup; i++) {
            if (pc->group[i] == q) {
                pc->group[i] = NULL;
            }
        }

        q->conn = NULL;
    }

    q->pg = NULL;
}


static void
ngx_http_metacloud_pg_connect(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char                    msg[NGX_MAX_ERROR_STR];
    ngx_uint_t                level;
    ngx_http_metacloud_pg_t  *pg;

    pg = pc->pg;

    pc->pgconn = PQconnectStart((char *) pg->conf->conninfo.data);

    if (pc->pgconn == NULL) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, 0,
                      "metacloud: PQconnectStart() failed: out of memory");
        goto failed;
    }

    pc->state = NGX_HTTP_METACLOUD_PG_CONNECTING;
    pg->nopen++;

    if (PQstatus(pc->pgconn) == CONNECTION_BAD) {
        level = ngx_http_metacloud_pg_failure(pg, NGX_LOG_ERR,
                                              NGX_HTTP_METACLOUD_DB_CONNECT);

        ngx_log_error(level, ngx_cycle->log, 0,
                      "metacloud: could not connect to PostgreSQL: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        goto failed;
    }

    PQsetNoticeReceiver(pc->pgconn, ngx_http_metacloud_pg_notice, pc);

    if (PQsetnonblocking(pc->pgconn, 1) == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "metacloud: PQsetnonblocking() failed");
        goto failed;
    }

    /* the first PQconnectPoll() waits for the socket to be writable */

    if (ngx_http_metacloud_pg_wrap_socket(pc) != NGX_OK
        || ngx_http_metacloud_pg_wait(pc, 1) != NGX_OK)
    {
        goto failed;
    }

    ngx_add_timer(pc->c->read, pg->conf->timeout);

    return;

failed:

    ngx_http_metacloud_pg_close(pc, 1);
}


/*
 * libpq owns the socket; nginx gets an ngx_connection_t around it only to
 * receive its events.  During PQconnectPoll() libpq may switch to another
 * socket (several hosts or addresses), so the wrapper is renewed then.
 * The new socket usually gets the number the old one had, which the kernel
 * dropped from epoll when libpq closed it: the inode tells them apart.
 */

static ngx_int_t
ngx_http_metacloud_pg_wrap_socket(ngx_http_metacloud_pg_conn_t *pc)
{
    int                fd;
    ngx_uint_t         timer;
    ngx_file_info_t    fi;
    ngx_connection_t  *c;

    fd = PQsocket(pc->pgconn);

    if (fd == -1) {
        ngx_log_error(NGX_LOG_ERR, ngx_cycle->log, 0,
                      "metacloud: PostgreSQL connection has no socket");
        return NGX_ERROR;
    }

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, ngx_cycle->log, ngx_errno,
                      "metacloud: " ngx_fd_info_n " on a PostgreSQL socket "
                      "failed");
        return NGX_ERROR;
    }

    timer = 0;

    if (pc->c) {
        if (pc->c->fd == fd && pc->sock == ngx_file_uniq(&fi)) {
            return NGX_OK;
        }

        timer = pc->c->read->timer_set;

        /* the old socket is libpq's to close: only forget it here */
        if (pc->c->read->timer_set) {
            ngx_del_timer(pc->c->read);
        }

        ngx_http_metacloud_pg_forget_socket(pc->c);
        pc->c = NULL;
    }

    c = ngx_get_connection(fd, ngx_cycle->log);
    if (c == NULL) {
        return NGX_ERROR;
    }

    c->data = pc;
    ngx_http_metacloud_pg_set_log(c, ngx_cycle->log);

    pc->sock = ngx_file_uniq(&fi);

    c->read->handler = ngx_http_metacloud_pg_event_handler;
    c->write->handler = ngx_http_metacloud_pg_event_handler;
    pc->c = c;

    if (timer) {
        ngx_add_timer(c->read, pc->pg->conf->timeout);
    }

    return NGX_OK;
}


/*
 * libpq has just said what it waits for: input always (an answer, or the
 * end of an idle connection), output only while it connects or flushes.
 * libpq did the reading and writing, so it is libpq's "would block" that
 * clears the ready flags here, as ngx_unix_recv() does on EAGAIN; the
 * ngx_handle_*_event() calls then register the socket the way the event
 * method wants: once, edge-triggered, with epoll and kqueue; with a
 * level-triggered method (poll, select) the write event is added only
 * while it is wanted, so an idle connection does not spin.  Verified on
 * epoll only, the one method Debian's nginx is built with: the suites
 * (make test, also under valgrind) drive connect, query, flush, idle and
 * close, PostgreSQL stopped and restarted under an idle connection, its
 * FATAL and EOF in one event (t/70-pg-down.t), libpq moving to a second
 * host (t/72-pg-caller.t) and reloads under traffic (t/80-reload.t).
 */

static ngx_int_t
ngx_http_metacloud_pg_wait(ngx_http_metacloud_pg_conn_t *pc, ngx_uint_t write)
{
    ngx_event_t  *rev, *wev;

    rev = pc->c->read;
    wev = pc->c->write;

    rev->ready = 0;

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    if (write) {
        wev->ready = 0;
    }

    if ((write || wev->active)
        && ngx_handle_write_event(wev, 0) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the descriptor belongs to libpq (PQfinish() closes it): only unwrap it */

static void
ngx_http_metacloud_pg_forget_socket(ngx_connection_t *c)
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
ngx_http_metacloud_pg_event_handler(ngx_event_t *ev)
{
    ngx_uint_t                     level;
    ngx_connection_t              *c;
    ngx_http_metacloud_pg_conn_t  *pc;

    c = ev->data;
    pc = c->data;

    if (c->close) {
        /* the worker is shutting down and this connection is idle */
        ngx_http_metacloud_pg_close(pc, 0);
        return;
    }

    if (ev->timedout && pc->state == NGX_HTTP_METACLOUD_PG_IDLE) {
        ev->timedout = 0;

        ngx_log_debug0(NGX_LOG_DEBUG_HTTP, c->log, 0,
                       "metacloud: idle PostgreSQL connection released");

        ngx_http_metacloud_pg_close(pc, 0);
        return;
    }

    if (ev->timedout) {
        ev->timedout = 0;

        level = ngx_http_metacloud_pg_failure(pc->pg, NGX_LOG_ERR,
                                              NGX_HTTP_METACLOUD_DB_TIMEOUT);

        ngx_log_error(level, c->log, NGX_ETIMEDOUT,
                      "metacloud: PostgreSQL %s timed out (%M ms)",
                      pc->state == NGX_HTTP_METACLOUD_PG_CONNECTING
                      ? "connect" : "query", pc->pg->conf->timeout);

        /*
         * libpq 15 has no non-blocking cancel: close the connection, the
         * server's statement_timeout ends the query; a commit that still
         * lands is harmless, Meta's retry is then a duplicate
         */

        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    switch (pc->state) {

    case NGX_HTTP_METACLOUD_PG_CONNECTING:
        ngx_http_metacloud_pg_connect_poll(pc);
        return;

    case NGX_HTTP_METACLOUD_PG_INIT:
    case NGX_HTTP_METACLOUD_PG_BUSY:
        if (ev->write) {
            ngx_http_metacloud_pg_flush(pc);

        } else {
            ngx_http_metacloud_pg_read(pc);
        }

        return;

    case NGX_HTTP_METACLOUD_PG_IDLE:
        /* a server that goes away shows up as input on an idle socket */

        if (ev->write) {
            (void) ngx_http_metacloud_pg_wait(pc, 0);
            return;
        }

        if (!ngx_http_metacloud_pg_alive(pc)) {
            ngx_http_metacloud_pg_close(pc, 0);
            return;
        }

        if (ngx_http_metacloud_pg_wait(pc, 0) != NGX_OK) {
            ngx_http_metacloud_pg_close(pc, 1);
        }

        return;

    default:
        return;
    }
}


static void
ngx_http_metacloud_pg_connect_poll(ngx_http_metacloud_pg_conn_t *pc)
{
    PostgresPollingStatusType  rc;

    rc = PQconnectPoll(pc->pgconn);

    if (rc == PGRES_POLLING_FAILED) {
        ngx_http_metacloud_pg_connect_failed(pc);
        return;
    }

    if (ngx_http_metacloud_pg_wrap_socket(pc) != NGX_OK) {
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    if (rc == PGRES_POLLING_OK) {
        ngx_http_metacloud_pg_init_send(pc);
        return;
    }

    /* READING or WRITING: libpq says which event it waits for */

    if (ngx_http_metacloud_pg_wait(pc, rc == PGRES_POLLING_WRITING)
        != NGX_OK)
    {
        ngx_http_metacloud_pg_close(pc, 1);
    }
}


/*
 * The server refuses a connection when its slots are taken (SQLSTATE 53300;
 * libpq keeps no code for a failed connection, so its English text is
 * matched).  That is a sizing problem, told once per worker at warn; the
 * refusals themselves then go to the info level, or they would fill the
 * log while the other workers hold the slots.
 */

static void
ngx_http_metacloud_pg_connect_failed(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char                   msg[NGX_MAX_ERROR_STR];
    ngx_uint_t               level;
    ngx_http_metacloud_pg_t  *pg;

    pg = pc->pg;

    (void) ngx_http_metacloud_pg_errmsg(pc->pgconn, msg, sizeof(msg));

    /* counted, and an outage logged once (at its start) */
    level = ngx_http_metacloud_pg_failure(pg, NGX_LOG_ERR,
                                          NGX_HTTP_METACLOUD_DB_CONNECT);

    if (ngx_strstr(msg, "too many clients") == NULL
        && ngx_strstr(msg, "too many connections") == NULL
        && ngx_strstr(msg, "connection slots are reserved") == NULL)
    {
        ngx_log_error(level, pc->c->log, 0,
                      "metacloud: could not connect to PostgreSQL: %s", msg);
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    if (!pg->no_slots) {
        pg->no_slots = 1;

        ngx_log_error(NGX_LOG_WARN, pc->c->log, 0,
                      "metacloud: PostgreSQL refused a connection for lack "
                      "of slots (%s): its max_connections (or the role's or "
                      "database's connection limit) must be at least "
                      "worker_processes x metacloud_db_pool (%ui here) plus "
                      "its other clients; idle connections are released "
                      "after metacloud_db_idle_timeout",
                      msg, pg->conf->size);

    } else {
        ngx_log_error(NGX_LOG_INFO, pc->c->log, 0,
                      "metacloud: could not connect to PostgreSQL: %s", msg);
    }

    ngx_http_metacloud_pg_close(pc, 1);
}


static void
ngx_http_metacloud_pg_init_send(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char  msg[NGX_MAX_ERROR_STR];

    pc->state = NGX_HTTP_METACLOUD_PG_INIT;
    pc->version = -1;
    pc->failed = 0;

    if (!PQsendQuery(pc->pgconn, (char *) pc->pg->init_sql)) {
        ngx_log_error(NGX_LOG_ERR, pc->c->log, 0,
                      "metacloud: PQsendQuery() failed: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    ngx_http_metacloud_pg_flush(pc);
}


/*
 * While a connection serves a query its log is the query's, so that an
 * error line names the caller (for a request: the client and the request
 * line), as the upstream keepalive module does with cached connections.
 */

static void
ngx_http_metacloud_pg_send(ngx_http_metacloud_pg_conn_t *pc,
    ngx_http_metacloud_pg_query_t *q)
{
    u_char                         msg[NGX_MAX_ERROR_STR];
    ngx_http_metacloud_pg_stmt_t  *stmt;

    stmt = q->stmt;

    /* a group's query sent alone: the next ones wait for it all the same */
    ngx_http_metacloud_pg_busy(pc, q->solo
                                   || ngx_http_metacloud_pg_groupable(pc->pg,
                                                                      q));
    pc->query = q;
    q->conn = pc;

    pc->c->idle = 0;
    ngx_http_metacloud_pg_set_log(pc->c, q->log);

    if (!PQsendQueryPrepared(pc->pgconn, (char *) stmt->name.data,
                             (int) stmt->nparams, q->values, q->lengths,
                             q->formats, 0))
    {
        ngx_log_error(NGX_LOG_ERR, q->log, 0,
                      "metacloud: PQsendQueryPrepared() failed: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    ngx_add_timer(pc->c->read, ngx_http_metacloud_pg_time_left(pc->pg, q));

    ngx_http_metacloud_pg_flush(pc);
}


static void
ngx_http_metacloud_pg_busy(ngx_http_metacloud_pg_conn_t *pc,
    ngx_uint_t grouped)
{
    pc->state = NGX_HTTP_METACLOUD_PG_BUSY;
    pc->failed = 0;
    pc->grouped = grouped ? 1 : 0;

    if (grouped) {
        pc->pg->ngrouped++;
    }
}


static ngx_uint_t
ngx_http_metacloud_pg_groupable(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q)
{
    return pg->conf->group > 1 && q->stmt->group && !q->solo && !q->alone;
}


static void
ngx_http_metacloud_pg_enqueue(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q)
{
    ngx_queue_insert_tail(&pg->waiting, &q->queue);
    pg->nwaiting++;
    q->waiting = 1;

    q->timer.handler = ngx_http_metacloud_pg_wait_timeout;
    q->timer.data = q;
    q->timer.log = q->log;
    ngx_add_timer(&q->timer, ngx_http_metacloud_pg_time_left(pg, q));
}


/*
 * metacloud_db_timeout bounds the whole wait of a query since it was run:
 * in the queue, on a connection, and again in the queue when its group
 * failed
 */

static ngx_msec_t
ngx_http_metacloud_pg_time_left(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q)
{
    ngx_msec_t  elapsed;

    elapsed = ngx_current_msec - q->start;

    return elapsed < pg->conf->timeout ? pg->conf->timeout - elapsed : 1;
}


/*
 * A group is one call of the statement's group statement: each parameter
 * an array in binary (ndim, has-null flag, element type, then the length
 * and lower bound of the dimension, then each element's length and bytes,
 * all big-endian: array_recv() in PostgreSQL), one element per query.
 */

static void
ngx_http_metacloud_pg_send_group(ngx_http_metacloud_pg_conn_t *pc)
{
    int                             lengths[NGX_HTTP_METACLOUD_PG_GROUP_PARAMS];
    int                             formats[NGX_HTTP_METACLOUD_PG_GROUP_PARAMS];
    char                           *values[NGX_HTTP_METACLOUD_PG_GROUP_PARAMS];
    u_char                         *p, msg[NGX_MAX_ERROR_STR];
    size_t                          len, size;
    uint32_t                        n;
    ngx_int_t                       rc;
    ngx_uint_t                      i, j, binary;
    ngx_http_metacloud_pg_stmt_t   *stmt;
    ngx_http_metacloud_pg_query_t  *q;

    stmt = pc->group[0]->stmt;

    ngx_http_metacloud_pg_busy(pc, 1);

    pc->c->idle = 0;

    for (i = 0; i < pc->ngroup; i++) {
        pc->group[i]->conn = pc;
    }

    ngx_memzero(values, sizeof(values));
    rc = NGX_OK;

    for (j = 0; j < stmt->nparams; j++) {
        binary = pc->group[0]->formats && pc->group[0]->formats[j];

        size = 5 * sizeof(uint32_t);

        for (i = 0; i < pc->ngroup; i++) {
            q = pc->group[i];
            size += sizeof(uint32_t)
                    + (binary ? (size_t) q->lengths[j]
                              : ngx_strlen(q->values[j]));
        }

        if (size > NGX_MAX_INT32_VALUE) {
            rc = NGX_ERROR;
            break;
        }

        p = ngx_alloc(size, pc->c->log);
        if (p == NULL) {
            rc = NGX_ERROR;
            break;
        }

        values[j] = (char *) p;
        lengths[j] = (int) size;
        formats[j] = 1;

        n = htonl(1);                                  /* ndim */
        p = ngx_cpymem(p, &n, sizeof(uint32_t));
        n = 0;                                         /* no NULLs */
        p = ngx_cpymem(p, &n, sizeof(uint32_t));
        n = htonl(binary ? NGX_HTTP_METACLOUD_PG_BYTEAOID
                         : NGX_HTTP_METACLOUD_PG_TEXTOID);
        p = ngx_cpymem(p, &n, sizeof(uint32_t));
        n = htonl((uint32_t) pc->ngroup);              /* elements */
        p = ngx_cpymem(p, &n, sizeof(uint32_t));
        n = htonl(1);                                  /* lower bound */
        p = ngx_cpymem(p, &n, sizeof(uint32_t));

        for (i = 0; i < pc->ngroup; i++) {
            q = pc->group[i];
            len = binary ? (size_t) q->lengths[j] : ngx_strlen(q->values[j]);

            n = htonl((uint32_t) len);
            p = ngx_cpymem(p, &n, sizeof(uint32_t));
            p = ngx_cpymem(p, q->values[j], len);
        }
    }

    if (rc == NGX_OK
        && !PQsendQueryPrepared(pc->pgconn, (char *) stmt->group->name.data,
                                (int) stmt->nparams,
                                (const char *const *) values, lengths,
                                formats, 0))
    {
        ngx_log_error(NGX_LOG_ERR, pc->c->log, 0,
                      "metacloud: PQsendQueryPrepared() failed: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        rc = NGX_DECLINED;
    }

    /* libpq has copied the parameters into its buffer */

    for (j = 0; j < stmt->nparams; j++) {
        if (values[j]) {
            ngx_free(values[j]);
        }
    }

    if (rc != NGX_OK) {
        if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ALERT, pc->c->log, 0,
                          "metacloud: no memory for a group of %ui queries",
                          pc->ngroup);
        }

        ngx_http_metacloud_pg_close(pc, rc == NGX_DECLINED);
        return;
    }

    ngx_http_metacloud_metrics_db_group(pc->ngroup);

    /* the first is the oldest */

    ngx_add_timer(pc->c->read,
                  ngx_http_metacloud_pg_time_left(pc->pg, pc->group[0]));

    ngx_http_metacloud_pg_flush(pc);
}


static void
ngx_http_metacloud_pg_flush(ngx_http_metacloud_pg_conn_t *pc)
{
    int     rc;
    u_char  msg[NGX_MAX_ERROR_STR];

    rc = PQflush(pc->pgconn);

    if (rc == -1) {
        ngx_log_error(NGX_LOG_ERR, pc->c->log, 0,
                      "metacloud: sending to PostgreSQL failed: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    /* 1: libpq's buffer is not empty yet, wait for the write event */

    if (ngx_http_metacloud_pg_wait(pc, rc == 1) != NGX_OK) {
        ngx_http_metacloud_pg_close(pc, 1);
    }
}


static void
ngx_http_metacloud_pg_read(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char          msg[NGX_MAX_ERROR_STR];
    char           *v;
    ngx_uint_t      level;
    PGresult       *res;
    ExecStatusType  st;

    if (!PQconsumeInput(pc->pgconn)) {
        ngx_log_error(NGX_LOG_ERR, pc->c->log, 0,
                      "metacloud: reading from PostgreSQL failed: %s",
                      ngx_http_metacloud_pg_errmsg(pc->pgconn, msg,
                                                   sizeof(msg)));
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    while (!PQisBusy(pc->pgconn)) {

        res = PQgetResult(pc->pgconn);

        if (res == NULL) {
            /* every result of the statement has come */

            if (pc->c->read->timer_set) {
                ngx_del_timer(pc->c->read);
            }

            if (pc->state == NGX_HTTP_METACLOUD_PG_INIT) {
                ngx_http_metacloud_pg_init_done(pc);

            } else {
                ngx_http_metacloud_pg_query_done(pc);
            }

            return;
        }

        st = PQresultStatus(res);

        if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE
            || st == PGRES_NONFATAL_ERROR)
        {
            if (!pc->failed && pc->ngroup) {
                /* not the queries' own failure: each is sent again */
                ngx_http_metacloud_metrics_db_group_failed();

                ngx_log_error(NGX_LOG_WARN, pc->c->log, 0,
                              "metacloud: PostgreSQL: %s (a group of %ui, "
                              "sent again one by one)",
                              ngx_http_metacloud_pg_flatten(
                                  PQresultErrorMessage(res), msg, sizeof(msg)),
                              pc->ngroup);

            } else if (!pc->failed) {
                level = ngx_http_metacloud_pg_result_failure(pc, res);

                ngx_log_error(level, pc->c->log, 0,
                              "metacloud: PostgreSQL: %s%s",
                              ngx_http_metacloud_pg_flatten(
                                  PQresultErrorMessage(res), msg, sizeof(msg)),
                              pc->state == NGX_HTTP_METACLOUD_PG_INIT
                              ? " (is the schema migrated? run sql/migrate)"
                              : "");
            }

            pc->failed = 1;
            PQclear(res);
            continue;
        }

        if (pc->state == NGX_HTTP_METACLOUD_PG_INIT) {
            if (st == PGRES_TUPLES_OK && PQntuples(res) == 1
                && !PQgetisnull(res, 0, 0))
            {
                v = PQgetvalue(res, 0, 0);
                pc->version = ngx_atoi((u_char *) v, ngx_strlen(v));
            }

            PQclear(res);
            continue;
        }

        /* the last result is the query's */

        if (pc->result) {
            PQclear(pc->result);
        }

        pc->result = res;
    }

    if (ngx_http_metacloud_pg_wait(pc, 0) != NGX_OK) {
        ngx_http_metacloud_pg_close(pc, 1);
    }
}


static void
ngx_http_metacloud_pg_init_done(ngx_http_metacloud_pg_conn_t *pc)
{
    ngx_uint_t                level;
    ngx_http_metacloud_pg_t  *pg;

    pg = pc->pg;

    if (pc->version != NGX_ERROR && pc->version < pg->conf->schema_version) {
        level = ngx_http_metacloud_pg_failure(pg, NGX_LOG_ALERT,
                                              NGX_HTTP_METACLOUD_DB_SCHEMA);

        ngx_log_error(level, pc->c->log, 0,
                      "metacloud: the database schema is version %i, this "
                      "module needs %i: run sql/migrate",
                      pc->version, pg->conf->schema_version);
        pc->failed = 1;
    }

    if (pc->failed) {
        ngx_http_metacloud_pg_close(pc, 1);
        return;
    }

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->c->log, 0,
                   "metacloud: PostgreSQL connection ready, schema %i",
                   pc->version);

    pg->down = 0;
    pg->backoff = NGX_HTTP_METACLOUD_PG_BACKOFF_MIN;

    ngx_http_metacloud_pg_recovered(pg, pc->c->log);

    ngx_http_metacloud_pg_set_idle(pc);
    ngx_http_metacloud_pg_dispatch(pg);
}


static void
ngx_http_metacloud_pg_query_done(ngx_http_metacloud_pg_conn_t *pc)
{
    PGresult                       *res;
    ngx_http_metacloud_pg_query_t  *q;

    if (pc->ngroup) {
        ngx_http_metacloud_pg_group_done(pc);
        return;
    }

    q = pc->query;
    res = pc->result;

    pc->query = NULL;
    pc->result = NULL;

    if (q) {
        if (pc->failed || res == NULL
            || (PQresultStatus(res) != PGRES_TUPLES_OK
                && PQresultStatus(res) != PGRES_COMMAND_OK))
        {
            ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_ERROR,
                                           NULL);

        } else {
            ngx_http_metacloud_pg_recovered(pc->pg, pc->c->log);
            ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_OK, res);
            res = NULL;
        }
    }

    if (res) {
        PQclear(res);
    }

    ngx_http_metacloud_pg_set_idle(pc);
    ngx_http_metacloud_pg_dispatch(pc->pg);
}


/*
 * A group's answer: each query completes with its row, or with its error.
 * A call that failed as a whole (a deadlock with another group, say) has
 * committed nothing: each query waits again, first in the queue, and goes
 * on its own.
 */

static void
ngx_http_metacloud_pg_group_done(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char                          msg[NGX_MAX_ERROR_STR];
    ngx_uint_t                      i, n;
    PGresult                       *res, *row;
    ngx_http_metacloud_pg_t        *pg;
    ngx_http_metacloud_pg_query_t  *q;

    pg = pc->pg;
    res = pc->result;
    n = pc->ngroup;

    pc->result = NULL;
    pc->ngroup = 0;

    if (pc->failed || res == NULL
        || PQresultStatus(res) != PGRES_TUPLES_OK)
    {
        for (i = n; i > 0; i--) {
            q = pc->group[i - 1];

            if (q == NULL) {
                continue;
            }

            q->conn = NULL;
            q->solo = 1;

            ngx_http_metacloud_pg_enqueue(pg, q);

            /* back to the head, in the order they had */
            ngx_queue_remove(&q->queue);
            ngx_queue_insert_head(&pg->waiting, &q->queue);
        }

        goto done;
    }

    ngx_http_metacloud_pg_recovered(pg, pc->c->log);

    for (i = 0; i < n; i++) {
        q = pc->group[i];

        if (q == NULL) {
            continue;
        }

        if ((ngx_uint_t) PQntuples(res) != n || PQnfields(res) < 2) {
            /* committed, but not the contract: nothing to tell each */
            ngx_http_metacloud_metrics_db_error(NGX_HTTP_METACLOUD_DB_QUERY);
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "metacloud: the group statement returned %d rows "
                          "of %d columns for %ui queries",
                          PQntuples(res), PQnfields(res), n);
            ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_ERROR,
                                           NULL);
            continue;
        }

        if (!PQgetisnull(res, (int) i, 0)) {
            ngx_http_metacloud_metrics_db_error(NGX_HTTP_METACLOUD_DB_QUERY);
            ngx_log_error(NGX_LOG_ERR, q->log, 0,
                          "metacloud: PostgreSQL: %s",
                          ngx_http_metacloud_pg_flatten(
                              PQgetvalue(res, (int) i, 0), msg, sizeof(msg)));
            ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_ERROR,
                                           NULL);
            continue;
        }

        row = ngx_http_metacloud_pg_group_row(pc, res, i);

        ngx_http_metacloud_pg_complete(q, row ? NGX_HTTP_METACLOUD_PG_OK
                                              : NGX_HTTP_METACLOUD_PG_ERROR,
                                       row);
    }

done:

    if (res) {
        PQclear(res);
    }

    ngx_http_metacloud_pg_set_idle(pc);
    ngx_http_metacloud_pg_dispatch(pg);
}


/* a query's own result: its row of the group's, without the error column */

static PGresult *
ngx_http_metacloud_pg_group_row(ngx_http_metacloud_pg_conn_t *pc,
    PGresult *res, ngx_uint_t row)
{
    int               i, n;
    PGresult         *r;
    PGresAttDesc      attrs[NGX_HTTP_METACLOUD_PG_GROUP_COLUMNS];

    n = PQnfields(res) - 1;

    if (n > NGX_HTTP_METACLOUD_PG_GROUP_COLUMNS) {
        ngx_log_error(NGX_LOG_ERR, pc->c->log, 0,
                      "metacloud: the group statement returned %d columns",
                      n + 1);
        return NULL;
    }

    r = PQmakeEmptyPGresult(pc->pgconn, PGRES_TUPLES_OK);
    if (r == NULL) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        attrs[i].name = PQfname(res, i + 1);
        attrs[i].tableid = PQftable(res, i + 1);
        attrs[i].columnid = PQftablecol(res, i + 1);
        attrs[i].format = PQfformat(res, i + 1);
        attrs[i].typid = PQftype(res, i + 1);
        attrs[i].typlen = PQfsize(res, i + 1);
        attrs[i].atttypmod = PQfmod(res, i + 1);
    }

    if (!PQsetResultAttrs(r, n, attrs)) {
        goto failed;
    }

    for (i = 0; i < n; i++) {
        if (!PQsetvalue(r, 0, i,
                        PQgetisnull(res, (int) row, i + 1)
                        ? NULL : PQgetvalue(res, (int) row, i + 1),
                        PQgetisnull(res, (int) row, i + 1)
                        ? -1 : PQgetlength(res, (int) row, i + 1)))
        {
            goto failed;
        }
    }

    return r;

failed:

    ngx_log_error(NGX_LOG_ALERT, pc->c->log, 0,
                  "metacloud: no memory for a query's result");

    if (r) {
        PQclear(r);
    }

    return NULL;
}


static void
ngx_http_metacloud_pg_set_idle(ngx_http_metacloud_pg_conn_t *pc)
{
    if (pc->grouped) {
        pc->grouped = 0;
        pc->pg->ngrouped--;
    }

    pc->state = NGX_HTTP_METACLOUD_PG_IDLE;

    pc->c->idle = 1;
    ngx_http_metacloud_pg_set_log(pc->c, ngx_cycle->log);

    ngx_queue_insert_tail(&pc->pg->idle, &pc->queue);

    /*
     * an idle connection holds one of the server's max_connections slots,
     * which another worker may need: metacloud_db_idle_timeout gives it
     * back (cancelable: a worker that shuts down does not wait for it)
     */

    pc->c->read->cancelable = 1;
    ngx_add_timer(pc->c->read, pc->pg->conf->idle_timeout);
}


static void
ngx_http_metacloud_pg_set_log(ngx_connection_t *c, ngx_log_t *log)
{
    c->log = log;
    c->read->log = log;
    c->write->log = log;
}


static void
ngx_http_metacloud_pg_dispatch(ngx_http_metacloud_pg_t *pg)
{
    ngx_http_metacloud_pg_conn_t  *pc;

    while (!ngx_queue_empty(&pg->waiting)) {

        pc = ngx_http_metacloud_pg_idle_get(pg);

        if (pc == NULL) {
            return;
        }

        ngx_http_metacloud_pg_take(pg, pc);
    }
}


/*
 * pc takes the first waiting query, and with a groupable one the others
 * of its statement that wait, up to metacloud_db_group, in their order
 */

static void
ngx_http_metacloud_pg_take(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_conn_t *pc)
{
    ngx_uint_t                      n, group;
    ngx_queue_t                    *qu, *next;
    ngx_http_metacloud_pg_query_t  *q, *first;

    first = NULL;
    group = 0;
    n = 0;

    for (qu = ngx_queue_head(&pg->waiting);
         qu != ngx_queue_sentinel(&pg->waiting);
         qu = next)
    {
        next = ngx_queue_next(qu);
        q = ngx_queue_data(qu, ngx_http_metacloud_pg_query_t, queue);

        if (first == NULL) {
            first = q;
            group = ngx_http_metacloud_pg_groupable(pg, q);

        } else if (!ngx_http_metacloud_pg_groupable(pg, q)
                   || q->stmt != first->stmt)
        {
            continue;
        }

        ngx_queue_remove(qu);
        pg->nwaiting--;
        q->waiting = 0;

        if (q->timer.timer_set) {
            ngx_del_timer(&q->timer);
        }

        if (!group) {
            ngx_http_metacloud_pg_send(pc, q);
            return;
        }

        pc->group[n++] = q;

        if (n == pg->conf->group) {
            break;
        }
    }

    if (n == 1) {
        /* alone: as the statement itself, no arrays */
        ngx_http_metacloud_pg_send(pc, first);
        return;
    }

    pc->ngroup = n;

    ngx_log_debug1(NGX_LOG_DEBUG_HTTP, pc->c->log, 0,
                   "metacloud: %ui queries in one transaction", n);

    ngx_http_metacloud_pg_send_group(pc);
}


/*
 * An idle connection whose server went away (a restart, an idle timeout)
 * is found here, before a query is written into it: a write to a closed
 * socket may look successful to libpq, and the answer would then be
 * awaited until the timeout.
 */

static ngx_http_metacloud_pg_conn_t *
ngx_http_metacloud_pg_idle_get(ngx_http_metacloud_pg_t *pg)
{
    ngx_queue_t                   *qu;
    ngx_http_metacloud_pg_conn_t  *pc;

    while (!ngx_queue_empty(&pg->idle)) {
        qu = ngx_queue_head(&pg->idle);
        pc = ngx_queue_data(qu, ngx_http_metacloud_pg_conn_t, queue);

        if (ngx_http_metacloud_pg_alive(pc)) {
            ngx_queue_remove(qu);

            if (pc->c->read->timer_set) {
                ngx_del_timer(pc->c->read);
            }

            pc->c->read->cancelable = 0;

            return pc;
        }

        ngx_http_metacloud_pg_close(pc, 0);
    }

    return NULL;
}


/*
 * reads what an idle connection has: a closed one reports the end here;
 * the server's FATAL message and the end of the stream may come in one
 * edge-triggered event, in which PQconsumeInput() reads the message but
 * not the end, so the event's own flags are looked at too, and, when
 * they do not say it (an event not delivered yet, a worker that was
 * stopped), a peek at the socket: recv() of 0 bytes is the end
 */

static ngx_uint_t
ngx_http_metacloud_pg_alive(ngx_http_metacloud_pg_conn_t *pc)
{
    u_char     msg[NGX_MAX_ERROR_STR], b;
    ssize_t    n;
    ngx_err_t  err;

    if (!pc->c->read->pending_eof && !pc->c->read->eof
        && PQconsumeInput(pc->pgconn)
        && PQstatus(pc->pgconn) != CONNECTION_BAD)
    {
        n = recv(pc->c->fd, &b, 1, MSG_PEEK|MSG_DONTWAIT);
        err = ngx_socket_errno;

        if (n > 0 || (n == -1 && (err == NGX_EAGAIN || err == NGX_EINTR))) {
            return 1;
        }

        ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, n == -1 ? err : 0,
                      "metacloud: idle PostgreSQL connection lost: "
                      "the server closed it");
        return 0;
    }

    ngx_log_error(NGX_LOG_WARN, ngx_cycle->log, 0,
                  "metacloud: idle PostgreSQL connection lost: %s",
                  ngx_http_metacloud_pg_errmsg(pc->pgconn, msg, sizeof(msg)));

    return 0;
}


/*
 * Closes a connection.  A query on it completes "unavailable" (503: Meta
 * retries).  After a failure the pool backs off before it connects again,
 * and when no connection is left, the waiting queries complete at once
 * rather than at their timeout.
 */

static void
ngx_http_metacloud_pg_close(ngx_http_metacloud_pg_conn_t *pc,
    ngx_uint_t failed)
{
    ngx_uint_t                      i, n;
    ngx_http_metacloud_pg_t        *pg;
    ngx_http_metacloud_pg_query_t  *q;

    pg = pc->pg;
    q = pc->query;
    n = pc->ngroup;

    if (pc->c) {
        if (pc->c->read->timer_set) {
            ngx_del_timer(pc->c->read);
        }

        if (pc->c->write->timer_set) {
            ngx_del_timer(pc->c->write);
        }

        ngx_http_metacloud_pg_forget_socket(pc->c);
        pc->c = NULL;
    }

    if (pc->state == NGX_HTTP_METACLOUD_PG_IDLE) {
        ngx_queue_remove(&pc->queue);
    }

    if (pc->result) {
        PQclear(pc->result);
        pc->result = NULL;
    }

    if (pc->pgconn) {
        PQfinish(pc->pgconn);
        pc->pgconn = NULL;
    }

    if (pc->state != NGX_HTTP_METACLOUD_PG_CLOSED && pg->nopen) {
        pg->nopen--;
    }

    if (pc->grouped) {
        pc->grouped = 0;
        pg->ngrouped--;
    }

    pc->state = NGX_HTTP_METACLOUD_PG_CLOSED;
    pc->query = NULL;
    pc->ngroup = 0;

    if (q) {
        ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_UNAVAILABLE,
                                       NULL);
    }

    for (i = 0; i < n; i++) {
        if (pc->group[i]) {
            ngx_http_metacloud_pg_complete(pc->group[i],
                                           NGX_HTTP_METACLOUD_PG_UNAVAILABLE,
                                           NULL);
        }
    }

    if (!failed || ngx_exiting || ngx_terminate) {
        return;
    }

    pg->down = 1;

    if (!pg->retry.timer_set) {
        ngx_add_timer(&pg->retry, pg->backoff);
        pg->backoff = ngx_min(pg->backoff * 2,
                              NGX_HTTP_METACLOUD_PG_BACKOFF_MAX);
    }

    if (pg->nopen == 0) {
        ngx_http_metacloud_pg_fail_waiting(pg);
        return;
    }

    /*
     * queries that waited for this connection's group go to an idle one
     * now, not when the retry timer fires; posted, since the caller may
     * be walking the idle list (ngx_http_metacloud_pg_idle_get())
     */

    if (!ngx_queue_empty(&pg->waiting)) {
        ngx_post_event(&pg->redispatch, &ngx_posted_events);
    }
}


static void
ngx_http_metacloud_pg_redispatch(ngx_event_t *ev)
{
    ngx_http_metacloud_pg_dispatch(ev->data);
}


static void
ngx_http_metacloud_pg_retry(ngx_event_t *ev)
{
    ngx_uint_t                i;
    ngx_http_metacloud_pg_t  *pg;

    pg = ev->data;

    if (ngx_queue_empty(&pg->waiting)) {
        /* connect lazily: the next query opens a connection */
        pg->down = 0;
        return;
    }

    for (i = 0; i < pg->conf->size; i++) {
        if (pg->conns[i].state == NGX_HTTP_METACLOUD_PG_CLOSED) {
            ngx_http_metacloud_pg_connect(&pg->conns[i]);
            return;
        }
    }
}


static void
ngx_http_metacloud_pg_fail_waiting(ngx_http_metacloud_pg_t *pg)
{
    ngx_queue_t                    *qu;
    ngx_http_metacloud_pg_query_t  *q;

    while (!ngx_queue_empty(&pg->waiting)) {
        qu = ngx_queue_head(&pg->waiting);
        q = ngx_queue_data(qu, ngx_http_metacloud_pg_query_t, queue);

        ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_UNAVAILABLE,
                                       NULL);
    }
}


static void
ngx_http_metacloud_pg_wait_timeout(ngx_event_t *ev)
{
    ngx_uint_t                      level;
    ngx_http_metacloud_pg_query_t  *q;

    q = ev->data;

    level = ngx_http_metacloud_pg_failure(q->pg, NGX_LOG_ERR,
                                          NGX_HTTP_METACLOUD_DB_TIMEOUT);

    ngx_log_error(level, q->log, NGX_ETIMEDOUT,
                  "metacloud: no PostgreSQL connection within %M ms",
                  q->pg->conf->timeout);

    ngx_http_metacloud_pg_complete(q, NGX_HTTP_METACLOUD_PG_UNAVAILABLE,
                                   NULL);
}


/*
 * The query leaves the pool here; its handler runs from the posted event,
 * as ngx_thread_pool.c completes its tasks, so a failure found inside
 * ngx_http_metacloud_pg_run() never calls the caller back from within.
 */

static void
ngx_http_metacloud_pg_complete(ngx_http_metacloud_pg_query_t *q,
    ngx_http_metacloud_pg_rc_e rc, PGresult *res)
{
    if (q->waiting) {
        ngx_queue_remove(&q->queue);
        q->pg->nwaiting--;
        q->waiting = 0;
    }

    if (q->timer.timer_set) {
        ngx_del_timer(&q->timer);
    }

    q->conn = NULL;
    q->rc = rc;
    q->result = res;

    q->event.handler = ngx_http_metacloud_pg_completed;
    q->event.data = q;
    q->event.log = q->log;

    ngx_post_event(&q->event, &ngx_posted_events);
}


static void
ngx_http_metacloud_pg_completed(ngx_event_t *ev)
{
    PGresult                       *res;
    ngx_http_metacloud_pg_query_t  *q;

    q = ev->data;
    res = q->result;

    q->pg = NULL;

    /* the handler may free the query: only res is used after it */
    q->handler(q);

    if (res) {
        PQclear(res);
    }
}


static void
ngx_http_metacloud_pg_notice(void *arg, const PGresult *res)
{
    u_char                         msg[NGX_MAX_ERROR_STR];
    ngx_http_metacloud_pg_conn_t  *pc = arg;

    ngx_log_error(NGX_LOG_NOTICE, pc->c ? pc->c->log : ngx_cycle->log, 0,
                  "metacloud: PostgreSQL: %s",
                  ngx_http_metacloud_pg_flatten(PQresultErrorMessage(res),
                                                msg, sizeof(msg)));
}


/*
 * libpq's messages span lines (DETAIL, HINT, CONTEXT, the statement):
 * one log line each, with the line breaks turned into spaces
 */

static u_char *
ngx_http_metacloud_pg_flatten(const char *msg, u_char *buf, size_t len)
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
ngx_http_metacloud_pg_errmsg(PGconn *pgconn, u_char *buf, size_t len)
{
    return ngx_http_metacloud_pg_flatten(pgconn ? PQerrorMessage(pgconn)
                                                : "out of memory",
                                         buf, len);
}


/*
 * An outage (PostgreSQL unreachable, too slow, overloaded, an old schema)
 * is logged at its level once, when it starts: the same trouble again, on
 * each reconnection attempt or each request refused, is "info" until a
 * connection or a statement succeeds, which is logged at "notice".  Every
 * failure is counted (metacloud_db_errors_total).
 */

static ngx_uint_t
ngx_http_metacloud_pg_failure(ngx_http_metacloud_pg_t *pg, ngx_uint_t level,
    ngx_http_metacloud_db_error_e reason)
{
    ngx_http_metacloud_metrics_db_error(reason);

    if (pg->outage) {
        return NGX_LOG_INFO;
    }

    pg->outage = 1;

    return level;
}


static void
ngx_http_metacloud_pg_recovered(ngx_http_metacloud_pg_t *pg, ngx_log_t *log)
{
    if (pg->outage) {
        pg->outage = 0;
        ngx_log_error(NGX_LOG_NOTICE, log, 0,
                      "metacloud: PostgreSQL answers again");
    }
}


/*
 * A statement's error: during the connection's set-up it is the schema's
 * (a function missing), a cancelled statement is the server's
 * statement_timeout, connection and resource errors are an outage; any
 * other is that statement's own, logged each time.
 */

static ngx_uint_t
ngx_http_metacloud_pg_result_failure(ngx_http_metacloud_pg_conn_t *pc,
    PGresult *res)
{
    char  *state;

    if (pc->state == NGX_HTTP_METACLOUD_PG_INIT) {
        return ngx_http_metacloud_pg_failure(pc->pg, NGX_LOG_ERR,
                                             NGX_HTTP_METACLOUD_DB_SCHEMA);
    }

    state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    if (state && ngx_strcmp(state, "57014") == 0) {
        return ngx_http_metacloud_pg_failure(pc->pg, NGX_LOG_ERR,
                                             NGX_HTTP_METACLOUD_DB_TIMEOUT);
    }

    if (state && (ngx_strncmp(state, "08", 2) == 0
                  || ngx_strncmp(state, "53", 2) == 0
                  || ngx_strncmp(state, "57P", 3) == 0))
    {
        return ngx_http_metacloud_pg_failure(pc->pg, NGX_LOG_ERR,
                                             NGX_HTTP_METACLOUD_DB_QUERY);
    }

    ngx_http_metacloud_metrics_db_error(NGX_HTTP_METACLOUD_DB_QUERY);

    return NGX_LOG_ERR;
}
