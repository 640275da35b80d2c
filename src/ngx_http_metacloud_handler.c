
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * The content handler of a metacloud_webhook location: the GET
 * verification handshake; for a POST, the whole body, the
 * X-Hub-Signature-256 check over the raw bytes, the normalisation by the
 * core, and one transaction in PostgreSQL.  A 200 is sent only once that
 * transaction has committed: Meta retries anything else.  What happened is
 * told by the $metacloud_* variables, for the access log.
 */


#include "ngx_http_metacloud_handler.h"
#include "ngx_http_metacloud_ingest.h"
#include "ngx_http_metacloud_metrics.h"

#include <openssl/crypto.h>


#define NGX_HTTP_METACLOUD_MAX_CHALLENGE  1024


typedef struct {
    ngx_http_metacloud_ingest_t    ingest;
    ngx_http_metacloud_summary_t   summary;
    ngx_str_t                      body;
    mc_normalized_t                norm;
    const char                    *outcome;
    ngx_msec_t                     db_time;
#if (NGX_THREADS)
    ngx_thread_task_t             *task;      /* normalising in a thread */
#endif
    int                            norm_rc;
    unsigned                       heap_body:1;
    unsigned                       normalized:1;
    unsigned                       stored:1;
    unsigned                       db_done:1;
} ngx_http_metacloud_ctx_t;


#if (NGX_THREADS)

/*
 * A thread task's own memory, malloc()ed with the task: the thread reads
 * the body (malloc()ed too) and writes norm and rc, nothing else.  r is
 * NULL once the request went away; the completion then frees it all.
 */

typedef struct {
    ngx_http_request_t            *r;
    u_char                        *body;
    size_t                         len;
    mc_normalized_t                norm;
    int                            rc;
} ngx_http_metacloud_task_t;

#endif


typedef enum {
    NGX_HTTP_METACLOUD_VAR_OUTCOME = 0,
    NGX_HTTP_METACLOUD_VAR_EVENTS,
    NGX_HTTP_METACLOUD_VAR_INSERTED,
    NGX_HTTP_METACLOUD_VAR_DUPLICATE,
    NGX_HTTP_METACLOUD_VAR_FAILED,
    NGX_HTTP_METACLOUD_VAR_UNROUTED,
    NGX_HTTP_METACLOUD_VAR_RAW_ID,
    NGX_HTTP_METACLOUD_VAR_DB_TIME
} ngx_http_metacloud_var_e;


static ngx_http_metacloud_ctx_t *ngx_http_metacloud_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_metacloud_handshake(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx);
static ngx_int_t ngx_http_metacloud_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);
static void ngx_http_metacloud_body_handler(ngx_http_request_t *r);
static void ngx_http_metacloud_normalized(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx);
#if (NGX_THREADS)
static ngx_int_t ngx_http_metacloud_thread_post(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx, ngx_thread_pool_t *tp);
static void ngx_http_metacloud_thread_run(void *data, ngx_log_t *log);
static void ngx_http_metacloud_thread_done(ngx_event_t *ev);
static void ngx_http_metacloud_thread_resume(ngx_http_request_t *r);
#endif
static ngx_int_t ngx_http_metacloud_store(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx);
static void ngx_http_metacloud_stored(ngx_http_metacloud_pg_query_t *q);
static void ngx_http_metacloud_cleanup(void *data);
static ngx_int_t ngx_http_metacloud_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, u_char *data, size_t len);
static ngx_int_t ngx_http_metacloud_send_error(ngx_http_request_t *r,
    ngx_uint_t status, char *error);
static ngx_table_elt_t *ngx_http_metacloud_header(ngx_http_request_t *r,
    ngx_str_t *name, ngx_uint_t *n);
static ngx_int_t ngx_http_metacloud_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);


static ngx_str_t  ngx_http_metacloud_json = ngx_string("application/json");
static ngx_str_t  ngx_http_metacloud_text = ngx_string("text/plain");
static ngx_str_t  ngx_http_metacloud_sig_header =
    ngx_string("X-Hub-Signature-256");


static ngx_http_variable_t  ngx_http_metacloud_vars[] = {

    { ngx_string("metacloud_outcome"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_OUTCOME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_events"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_EVENTS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_inserted"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_INSERTED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_duplicate"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_DUPLICATE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_failed"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_FAILED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_unrouted"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_UNROUTED, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_raw_id"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_RAW_ID, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_db_time"), NULL, ngx_http_metacloud_variable,
      NGX_HTTP_METACLOUD_VAR_DB_TIME, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


ngx_int_t
ngx_http_metacloud_handler(ngx_http_request_t *r)
{
    ngx_int_t                  rc;
    ngx_table_elt_t           *h;
    ngx_http_metacloud_ctx_t  *ctx;

    ctx = ngx_http_metacloud_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return ngx_http_metacloud_handshake(r, ctx);
    }

    if (!(r->method & NGX_HTTP_POST)) {
        rc = ngx_http_discard_request_body(r);

        if (rc != NGX_OK) {
            return rc;
        }

        h = ngx_list_push(&r->headers_out.headers);
        if (h == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        h->hash = 1;
        ngx_str_set(&h->key, "Allow");
        ngx_str_set(&h->value, "GET, POST");

        ctx->outcome = "method_not_allowed";

        return ngx_http_metacloud_send_error(r, NGX_HTTP_NOT_ALLOWED,
                                             "method not allowed");
    }

    r->connection->log->action = "reading webhook body";

    rc = ngx_http_read_client_request_body(r, ngx_http_metacloud_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static ngx_http_metacloud_ctx_t *
ngx_http_metacloud_ctx(ngx_http_request_t *r)
{
    ngx_pool_cleanup_t        *cln;
    ngx_http_metacloud_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_metacloud_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     ctx->ingest = { 0 };
     *     ctx->norm = { 0 };
     *     ctx->outcome = NULL;
     *     ctx->task = NULL;
     *     ctx->norm_rc = 0;
     *     ctx->heap_body = 0;
     *     ctx->normalized = 0;
     *     ctx->stored = 0;
     *     ctx->db_done = 0;
     */

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_metacloud_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_metacloud_module);

    return ctx;
}


/*
 * GET ?hub.mode=subscribe&hub.challenge=X&hub.verify_token=T: Meta checks
 * the endpoint by expecting X back, byte for byte, as the whole body.
 */

static ngx_int_t
ngx_http_metacloud_handshake(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_str_t                       mode, token, challenge;
    ngx_http_metacloud_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_metacloud_arg(r, "hub.mode", &mode) != NGX_OK
        || ngx_http_metacloud_arg(r, "hub.verify_token", &token) != NGX_OK
        || ngx_http_metacloud_arg(r, "hub.challenge", &challenge) != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (mode.len == sizeof("subscribe") - 1
        && ngx_strncmp(mode.data, "subscribe", mode.len) == 0
        && mlcf->verify_token.len != 0
        && token.len == mlcf->verify_token.len
        && CRYPTO_memcmp(token.data, mlcf->verify_token.data, token.len) == 0
        && challenge.len > 0
        && challenge.len <= NGX_HTTP_METACLOUD_MAX_CHALLENGE)
    {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "metacloud: webhook verification handshake accepted");

        ctx->outcome = "handshake";

        return ngx_http_metacloud_send(r, NGX_HTTP_OK,
                                       &ngx_http_metacloud_text,
                                       challenge.data, challenge.len);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "metacloud: webhook verification handshake refused%s",
                  mlcf->verify_token.len ? ""
                  : ": no metacloud_verify_token is configured");

    ctx->outcome = "handshake_refused";

    return ngx_http_metacloud_send_error(r, NGX_HTTP_FORBIDDEN,
                                         "verification refused");
}


/* a query argument, URL-decoded ("+" is a space in a query string) */

static ngx_int_t
ngx_http_metacloud_arg(ngx_http_request_t *r, char *name, ngx_str_t *value)
{
    u_char     *p, *dst, *src;
    ngx_str_t   raw;

    value->len = 0;
    value->data = (u_char *) "";

    if (ngx_http_arg(r, (u_char *) name, ngx_strlen(name), &raw) != NGX_OK) {
        return NGX_OK;
    }

    dst = ngx_pnalloc(r->pool, raw.len + 1);
    if (dst == NULL) {
        return NGX_ERROR;
    }

    for (p = raw.data; p < raw.data + raw.len; p++) {
        dst[p - raw.data] = (*p == '+') ? ' ' : *p;
    }

    value->data = dst;
    src = dst;

    ngx_unescape_uri(&dst, &src, raw.len, 0);

    value->len = dst - value->data;

    return NGX_OK;
}


static void
ngx_http_metacloud_body_handler(ngx_http_request_t *r)
{
    size_t                          heap_min;
    ngx_uint_t                      n;
    mc_sig_rc_e                     src;
    ngx_table_elt_t                *h;
    ngx_http_metacloud_ctx_t       *ctx;
    ngx_http_metacloud_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);
    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    heap_min = 0;

#if (NGX_THREADS)
    if (mlcf->thread_pool) {
        heap_min = ngx_max(mlcf->thread_min_size, 1);
    }
#endif

    if (ngx_http_metacloud_read_body(r, &ctx->body, heap_min) != NGX_OK) {
        ctx->outcome = "error";
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->heap_body = (heap_min && ctx->body.len >= heap_min);

    if (!mlcf->secret_off) {
        r->connection->log->action = "verifying webhook signature";

        h = ngx_http_metacloud_header(r, &ngx_http_metacloud_sig_header, &n);

        /*
         * Meta sends one; with two, which one the signature was meant to
         * be read from is a guess: a malformed request, 400, not a 401
         * that would say the body was signed wrongly
         */

        if (n > 1) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "metacloud: webhook refused, %ui "
                          "X-Hub-Signature-256 headers", n);

            ctx->outcome = "duplicate_signature";

            ngx_http_finalize_request(r,
                ngx_http_metacloud_send_error(r, NGX_HTTP_BAD_REQUEST,
                                              "more than one signature"));
            return;
        }

        src = mc_signature_check(h ? h->value.data : NULL,
                                 h ? h->value.len : 0,
                                 ctx->body.data, ctx->body.len,
                                 mlcf->secrets->elts, mlcf->secrets->nelts);

        if (src != MC_SIG_OK) {
            /* the sender is at fault: info, as nginx logs client errors */
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "metacloud: webhook refused, signature %s, "
                          "%uz bytes", mc_signature_rc_str(src),
                          ctx->body.len);

            ctx->outcome = "invalid_signature";

            ngx_http_finalize_request(r,
                ngx_http_metacloud_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                              "invalid signature"));
            return;
        }
    }

    r->connection->log->action = "normalising webhook";

#if (NGX_THREADS)

    /* a large body in the thread pool: the worker serves others meanwhile */

    if (ctx->heap_body
        && ngx_http_metacloud_thread_post(r, ctx, mlcf->thread_pool)
           == NGX_OK)
    {
        return;
    }

#endif

    ctx->norm_rc = mc_normalize(ctx->body.data, ctx->body.len, &ctx->norm);

    ngx_http_metacloud_normalized(r, ctx);
}


static void
ngx_http_metacloud_normalized(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx)
{
    ngx_int_t  rc;

    /* -1 is an allocation failure anywhere in the core: Meta retries */

    if (ctx->norm_rc != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "metacloud: out of memory normalising %uz bytes",
                      ctx->body.len);

        ctx->outcome = "out_of_memory";

        ngx_http_finalize_request(r,
            ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "out of memory"));
        return;
    }

    ctx->normalized = 1;

    ngx_http_metacloud_metrics_body(r, &ctx->norm);

    if (ctx->norm.rc != MC_BODY_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "metacloud: signed body kept as %s: %s",
                      mc_body_rc_str(ctx->norm.rc), ctx->norm.error);
    }

    rc = ngx_http_metacloud_store(r, ctx);

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r,
            ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          rc == NGX_ERROR
                                          ? "out of memory"
                                          : "database unavailable"));
    }
}


#if (NGX_THREADS)

/*
 * As ngx_http_file_cache.c does with its thread tasks: the request is
 * blocked (nginx does not free it while the task runs) and resumes from
 * its write event handler, which a terminated request replaces with the
 * finalizer.  The task is malloc()ed, not taken from the request's pool.
 */

static ngx_int_t
ngx_http_metacloud_thread_post(ngx_http_request_t *r,
    ngx_http_metacloud_ctx_t *ctx, ngx_thread_pool_t *tp)
{
    ngx_thread_task_t          *task;
    ngx_http_metacloud_task_t  *t;

    task = ngx_calloc(sizeof(ngx_thread_task_t)
                      + sizeof(ngx_http_metacloud_task_t),
                      r->connection->log);
    if (task == NULL) {
        return NGX_ERROR;
    }

    t = (ngx_http_metacloud_task_t *) (task + 1);

    t->r = r;
    t->body = ctx->body.data;
    t->len = ctx->body.len;

    task->ctx = t;
    task->handler = ngx_http_metacloud_thread_run;
    task->event.handler = ngx_http_metacloud_thread_done;
    task->event.data = task;
    task->event.log = r->connection->log;

    if (ngx_thread_task_post(tp, task) != NGX_OK) {
        /* logged by nginx (a full queue): normalise inline instead */
        ngx_free(task);
        return NGX_ERROR;
    }

    ctx->task = task;

    r->main->blocked++;
    r->aio = 1;
    r->write_event_handler = ngx_http_metacloud_thread_resume;

    return NGX_OK;
}


/* in a thread: the pure core on the task's own memory, nothing else */

static void
ngx_http_metacloud_thread_run(void *data, ngx_log_t *log)
{
    ngx_http_metacloud_task_t  *t = data;

    t->rc = mc_normalize(t->body, t->len, &t->norm);
}


static void
ngx_http_metacloud_thread_done(ngx_event_t *ev)
{
    ngx_connection_t           *c;
    ngx_thread_task_t          *task;
    ngx_http_request_t         *r;
    ngx_http_metacloud_ctx_t   *ctx;
    ngx_http_metacloud_task_t  *t;

    task = ev->data;
    t = task->ctx;
    r = t->r;

    if (r == NULL) {
        /* the request went away: the body and the result are the task's */
        if (t->rc == 0) {
            mc_normalized_free(&t->norm);
        }

        ngx_free(t->body);
        ngx_free(task);
        return;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    ctx->norm = t->norm;
    ctx->norm_rc = t->rc;
    ctx->task = NULL;

    ngx_free(task);

    c = r->connection;

    ngx_http_set_log_request(c->log, r);

    r->main->blocked--;
    r->aio = 0;

    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_metacloud_thread_resume(ngx_http_request_t *r)
{
    ngx_http_metacloud_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    if (ctx->task) {
        /* a write event while the task runs */
        return;
    }

    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_http_metacloud_normalized(r, ctx);
}

#endif


/*
 * NGX_OK: ngx_http_metacloud_stored() answers, from a posted event;
 * NGX_DECLINED: the pool cannot take it now; NGX_ERROR: out of memory
 */

static ngx_int_t
ngx_http_metacloud_store(ngx_http_request_t *r, ngx_http_metacloud_ctx_t *ctx)
{
    ngx_http_metacloud_pg_t         *pg;
    ngx_http_metacloud_pg_query_t   *q;
    ngx_http_metacloud_loc_conf_t   *mlcf;
    ngx_http_metacloud_main_conf_t  *mcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_metacloud_module);

    if (ngx_http_metacloud_ingest_init(&ctx->ingest, mcf->ingest, &ctx->body,
                                       &ctx->norm, !mlcf->secret_off)
        != NGX_OK)
    {
        ctx->outcome = "out_of_memory";
        return NGX_ERROR;
    }

    q = &ctx->ingest.query;

    q->handler = ngx_http_metacloud_stored;
    q->data = r;
    q->log = r->connection->log;

    r->connection->log->action = "storing webhook in PostgreSQL";

    ctx->outcome = "db_unavailable";

    pg = mcf->pg.pg;

    if (pg == NULL || ngx_http_metacloud_pg_run(pg, q) != NGX_OK) {
        return NGX_DECLINED;
    }

    return NGX_OK;
}


static void
ngx_http_metacloud_stored(ngx_http_metacloud_pg_query_t *q)
{
    ngx_int_t                            rc, status;
    ngx_connection_t                    *c;
    ngx_http_request_t                  *r;
    ngx_http_metacloud_ctx_t            *ctx;
    ngx_http_metacloud_ingest_report_t   rep;

    r = q->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    c->log->action = NULL;

    ctx->db_time = ngx_current_msec - q->start;
    ctx->db_done = 1;

    if (q->rc != NGX_HTTP_METACLOUD_PG_OK) {
        /* logged by the pool; Meta retries a 503 */

        if (q->rc == NGX_HTTP_METACLOUD_PG_ERROR) {
            ctx->outcome = "db_error";
            status = ngx_http_metacloud_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "database error");

        } else {
            status = ngx_http_metacloud_send_error(r,
                                              NGX_HTTP_SERVICE_UNAVAILABLE,
                                              "database unavailable");
        }

        goto done;
    }

    /* the transaction has committed: whatever follows, the answer is 200 */

    ctx->stored = 1;
    ctx->outcome = mc_body_rc_str(ctx->norm.rc);

    rc = ngx_http_metacloud_ingest_summary(q->result, &ctx->norm, r->pool,
                                           c->log, &ctx->summary);

    if (rc == NGX_ERROR) {
        ngx_log_error(NGX_LOG_ALERT, c->log, 0,
                      "metacloud: out of memory reading the ingest summary");
    }

    if (rc == NGX_OK) {
        rep.inserted = ctx->summary.inserted;
        rep.duplicate = ctx->summary.duplicate;
        rep.failed = ctx->summary.failed;
        rep.unrouted = ctx->summary.unrouted;
        rep.pending = ctx->summary.pending;
        rep.db_time = ctx->db_time;
        rep.raw_id = ctx->summary.raw_id;
        rep.organizations = ctx->summary.organizations;

        ngx_http_metacloud_metrics_ingest(r, &rep);
    }

    /* the new media go to this worker's downloads (never awaited) */
    ngx_http_metacloud_media_queue(ctx->summary.media);

    /* events that failed in SQL are the module's or the schema's fault */

    if (ctx->summary.failed) {
        ngx_log_error(NGX_LOG_WARN, c->log, 0,
                      "metacloud: %L of %uz events failed in "
                      "metacloud_ingest(), raw request %V",
                      ctx->summary.failed, ctx->norm.nevents,
                      &ctx->summary.raw_id);
    }

    status = ngx_http_metacloud_send(r, NGX_HTTP_OK, &ngx_http_metacloud_json,
                                     ctx->summary.reply.data,
                                     ctx->summary.reply.len);

done:

    ngx_http_finalize_request(r, status);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_metacloud_cleanup(void *data)
{
    ngx_http_metacloud_ctx_t  *ctx = data;

    ngx_http_metacloud_ingest_free(&ctx->ingest);
    mc_normalized_free(&ctx->norm);

#if (NGX_THREADS)

    if (ctx->task) {
        /* nginx blocks a request with a task: this is only a safeguard */
        ((ngx_http_metacloud_task_t *) ctx->task->ctx)->r = NULL;
        return;
    }

#endif

    if (ctx->heap_body) {
        ngx_free(ctx->body.data);
    }
}


static ngx_int_t
ngx_http_metacloud_send(ngx_http_request_t *r, ngx_uint_t status,
    ngx_str_t *type, u_char *data, size_t len)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    r->headers_out.status = status;
    r->headers_out.content_length_n = len;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    if (len == 0) {
        r->header_only = 1;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = data;
    b->last = data + len;
    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


static ngx_int_t
ngx_http_metacloud_send_error(ngx_http_request_t *r, ngx_uint_t status,
    char *error)
{
    u_char  *p, *last;
    size_t   len;

    len = sizeof("{\"status\":\"error\",\"error\":\"\"}") - 1
          + ngx_strlen(error);

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    last = ngx_sprintf(p, "{\"status\":\"error\",\"error\":\"%s\"}", error);

    return ngx_http_metacloud_send(r, status, &ngx_http_metacloud_json,
                                   p, last - p);
}


/* the first header of that name; *n: how many there are */

static ngx_table_elt_t *
ngx_http_metacloud_header(ngx_http_request_t *r, ngx_str_t *name,
    ngx_uint_t *n)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h, *first;

    part = &r->headers_in.headers.part;
    h = part->elts;
    first = NULL;
    *n = 0;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return first;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            if (first == NULL) {
                first = &h[i];
            }

            (*n)++;
        }
    }
}


ngx_int_t
ngx_http_metacloud_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_metacloud_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


/*
 * Each is empty ("not found") until the request got that far: no counts
 * before the commit, no events before the normalisation.
 */

static ngx_int_t
ngx_http_metacloud_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    u_char                    *p;
    int64_t                    n;
    ngx_http_metacloud_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    v->not_found = 1;

    if (ctx == NULL) {
        return NGX_OK;
    }

    if (data >= NGX_HTTP_METACLOUD_VAR_INSERTED
        && data <= NGX_HTTP_METACLOUD_VAR_RAW_ID && !ctx->stored)
    {
        return NGX_OK;
    }

    switch (data) {

    case NGX_HTTP_METACLOUD_VAR_OUTCOME:
        if (ctx->outcome == NULL) {
            return NGX_OK;
        }

        v->data = (u_char *) ctx->outcome;
        v->len = ngx_strlen(ctx->outcome);
        goto found;

    case NGX_HTTP_METACLOUD_VAR_EVENTS:
        if (!ctx->normalized) {
            return NGX_OK;
        }

        n = ctx->norm.nevents;
        break;

    case NGX_HTTP_METACLOUD_VAR_INSERTED:
        n = ctx->summary.inserted;
        break;

    case NGX_HTTP_METACLOUD_VAR_DUPLICATE:
        n = ctx->summary.duplicate;
        break;

    case NGX_HTTP_METACLOUD_VAR_FAILED:
        n = ctx->summary.failed;
        break;

    case NGX_HTTP_METACLOUD_VAR_UNROUTED:
        n = ctx->summary.unrouted;
        break;

    case NGX_HTTP_METACLOUD_VAR_RAW_ID:
        v->data = ctx->summary.raw_id.data;
        v->len = ctx->summary.raw_id.len;
        goto found;

    default: /* NGX_HTTP_METACLOUD_VAR_DB_TIME */
        if (!ctx->db_done) {
            return NGX_OK;
        }

        n = ctx->db_time;
        break;
    }

    p = ngx_pnalloc(r->pool, NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v->data = p;
    v->len = ngx_sprintf(p, "%L", n) - p;

found:

    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}
