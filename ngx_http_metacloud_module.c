
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Receives WhatsApp Cloud API (Meta) webhooks: the GET verification
 * handshake, the X-Hub-Signature-256 check over the raw body, and one
 * transaction in PostgreSQL (metacloud_ingest) per delivery.  A 200 is sent
 * only once that transaction has committed: Meta retries anything else.
 */


#include "ngx_metacloud.h"
#include "ngx_http_metacloud_metrics.h"

#include <jansson.h>
#include <openssl/crypto.h>


#define NGX_HTTP_METACLOUD_MIN_BODY     (3 * 1024 * 1024)
#define NGX_HTTP_METACLOUD_MAX_CHALLENGE 1024


typedef struct {
    ngx_metacloud_pg_query_t   query;
    ngx_str_t                  body;
    mc_normalized_t            norm;
    char                      *info;
    ngx_msec_t                 start;
} ngx_http_metacloud_ctx_t;


static ngx_int_t ngx_http_metacloud_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_metacloud_handshake(ngx_http_request_t *r,
    ngx_http_metacloud_loc_conf_t *mlcf);
static void ngx_http_metacloud_body_handler(ngx_http_request_t *r);
static void ngx_http_metacloud_ingest_done(ngx_metacloud_pg_query_t *q,
    ngx_metacloud_pg_rc_e rc, PGresult *res);
static void ngx_http_metacloud_cleanup(void *data);
static ngx_int_t ngx_http_metacloud_send(ngx_http_request_t *r,
    ngx_uint_t status, ngx_str_t *type, u_char *data, size_t len);
static ngx_int_t ngx_http_metacloud_send_error(ngx_http_request_t *r,
    ngx_uint_t status, char *error);
static ngx_table_elt_t *ngx_http_metacloud_header(ngx_http_request_t *r,
    ngx_str_t *name);
static ngx_int_t ngx_http_metacloud_arg(ngx_http_request_t *r, char *name,
    ngx_str_t *value);

static char *ngx_http_metacloud_db(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metacloud_webhook(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metacloud_app_secret(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_metacloud_app_secret_file(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_metacloud_add_secret(ngx_conf_t *cf,
    ngx_http_metacloud_loc_conf_t *mlcf, u_char *data, size_t len);
static char *ngx_http_metacloud_check_bounds(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_metacloud_check_token(ngx_conf_t *cf, void *post,
    void *data);
static void *ngx_http_metacloud_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_metacloud_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_metacloud_init_process(ngx_cycle_t *cycle);
static void ngx_http_metacloud_exit_process(ngx_cycle_t *cycle);


static ngx_conf_post_t  ngx_http_metacloud_token_post = {
    ngx_http_metacloud_check_token
};


/* like ngx_conf_check_num_bounds(), but the message names the directive */
static ngx_conf_num_bounds_t  ngx_http_metacloud_pool_bounds = {
    ngx_http_metacloud_check_bounds, 1, 1024
};

static ngx_conf_num_bounds_t  ngx_http_metacloud_queue_bounds = {
    ngx_http_metacloud_check_bounds, 0, 1048576
};


static ngx_command_t  ngx_http_metacloud_commands[] = {

    { ngx_string("metacloud_db"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_metacloud_db,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metacloud_db_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, pool_size),
      &ngx_http_metacloud_pool_bounds },

    { ngx_string("metacloud_db_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, queue_size),
      &ngx_http_metacloud_queue_bounds },

    { ngx_string("metacloud_db_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, timeout),
      NULL },

    { ngx_string("metacloud_webhook"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_metacloud_webhook,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metacloud_verify_token"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_metacloud_loc_conf_t, verify_token),
      &ngx_http_metacloud_token_post },

    { ngx_string("metacloud_app_secret"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_metacloud_app_secret,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metacloud_app_secret_file"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_metacloud_app_secret_file,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_metacloud_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    ngx_http_metacloud_create_main_conf,   /* create main configuration */
    ngx_http_metacloud_init_main_conf,     /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_metacloud_create_loc_conf,    /* create location configuration */
    ngx_http_metacloud_merge_loc_conf      /* merge location configuration */
};


ngx_module_t  ngx_http_metacloud_module = {
    NGX_MODULE_V1,
    &ngx_http_metacloud_module_ctx,        /* module context */
    ngx_http_metacloud_commands,           /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_metacloud_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_metacloud_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_metacloud_json = ngx_string("application/json");
static ngx_str_t  ngx_http_metacloud_text = ngx_string("text/plain");
static ngx_str_t  ngx_http_metacloud_ok = ngx_string("{\"status\":\"ok\"}");
static ngx_str_t  ngx_http_metacloud_sig_header =
    ngx_string("X-Hub-Signature-256");


static ngx_int_t
ngx_http_metacloud_handler(ngx_http_request_t *r)
{
    ngx_int_t                       rc;
    ngx_table_elt_t                *h;
    ngx_http_metacloud_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return ngx_http_metacloud_handshake(r, mlcf);
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


/*
 * GET ?hub.mode=subscribe&hub.challenge=X&hub.verify_token=T: Meta checks
 * the endpoint by expecting X back, byte for byte, as the whole body.
 */

static ngx_int_t
ngx_http_metacloud_handshake(ngx_http_request_t *r,
    ngx_http_metacloud_loc_conf_t *mlcf)
{
    ngx_int_t  rc;
    ngx_str_t  mode, token, challenge;

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

        return ngx_http_metacloud_send(r, NGX_HTTP_OK, &ngx_http_metacloud_text,
                                       challenge.data, challenge.len);
    }

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "metacloud: webhook verification handshake refused%s",
                  mlcf->verify_token.len ? ""
                  : ": no metacloud_verify_token is configured");

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
    json_t                          *info;
    ngx_int_t                        rc;
    mc_sig_rc_e                      src;
    ngx_table_elt_t                 *h;
    ngx_pool_cleanup_t              *cln;
    ngx_http_metacloud_ctx_t        *ctx;
    ngx_metacloud_pg_query_t        *q;
    ngx_http_metacloud_loc_conf_t   *mlcf;
    ngx_http_metacloud_main_conf_t  *mcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);
    mcf = ngx_http_get_module_main_conf(r, ngx_http_metacloud_module);

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_metacloud_ctx_t));
    if (ctx == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    cln->handler = ngx_http_metacloud_cleanup;
    cln->data = ctx;

    ngx_http_set_ctx(r, ctx, ngx_http_metacloud_module);

    ctx->start = ngx_current_msec;

    if (ngx_metacloud_read_body(r, &ctx->body) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    if (!mlcf->secret_off) {
        r->connection->log->action = "verifying webhook signature";

        h = ngx_http_metacloud_header(r, &ngx_http_metacloud_sig_header);

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

            ngx_http_finalize_request(r,
                ngx_http_metacloud_send_error(r, NGX_HTTP_UNAUTHORIZED,
                                              "invalid signature"));
            return;
        }
    }

    r->connection->log->action = "normalising webhook";

    if (mc_normalize(ctx->body.data, ctx->body.len, &ctx->norm) != 0) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "metacloud: out of memory normalising %uz bytes",
                      ctx->body.len);
        ngx_http_finalize_request(r,
            ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "out of memory"));
        return;
    }

    ngx_http_metacloud_metrics_body(r, &ctx->norm);

    if (ctx->norm.rc != MC_BODY_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "metacloud: signed body kept as %s: %s",
                      mc_body_rc_str(ctx->norm.rc), ctx->norm.error);
    }

    info = json_pack("{s:s, s:s?, s:b}",
                     "outcome", mc_body_rc_str(ctx->norm.rc),
                     "error", ctx->norm.rc == MC_BODY_OK
                              ? NULL : ctx->norm.error,
                     "signatureChecked", !mlcf->secret_off);

    ctx->info = info ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);

    if (ctx->info == NULL) {
        ngx_http_finalize_request(r,
            ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                          "out of memory"));
        return;
    }

    q = &ctx->query;

    q->values[0] = (const char *) ctx->body.data;
    q->lengths[0] = (int) ctx->body.len;
    q->formats[0] = 1;
    q->values[1] = ctx->norm.events;
    q->lengths[1] = (int) ctx->norm.events_len;
    q->formats[1] = 0;
    q->values[2] = ctx->info;
    q->lengths[2] = (int) ngx_strlen(ctx->info);
    q->formats[2] = 0;

    q->handler = ngx_http_metacloud_ingest_done;
    q->data = r;
    q->log = r->connection->log;

    r->connection->log->action = "storing webhook in PostgreSQL";

    rc = ngx_metacloud_pg_ingest(mcf->pool, q);

    if (rc == NGX_OK) {
        /* the handler finalizes the request, maybe already has */
        return;
    }

    ngx_http_finalize_request(r,
        ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                                      "database unavailable"));
}


static void
ngx_http_metacloud_ingest_done(ngx_metacloud_pg_query_t *q,
    ngx_metacloud_pg_rc_e rc, PGresult *res)
{
    size_t                     len;
    u_char                    *out;
    json_t                    *doc, *media;
    ngx_int_t                  status;
    ngx_uint_t                 level;
    json_error_t               err;
    ngx_connection_t          *c;
    ngx_http_request_t        *r;
    ngx_http_metacloud_ctx_t  *ctx;

    ngx_http_metacloud_ingest_report_t  rep;

    r = q->data;
    c = r->connection;
    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_module);

    c->log->action = NULL;

    if (rc != NGX_METACLOUD_PG_OK) {
        /* logged by the pool; Meta retries a 503 */
        status = ngx_http_metacloud_send_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                    rc == NGX_METACLOUD_PG_ERROR ? "database error"
                                                 : "database unavailable");
        goto done;
    }

    doc = json_loads(PQgetvalue(res, 0, 0), 0, &err);

    if (doc == NULL || !json_is_object(doc)) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0,
                      "metacloud: metacloud_ingest() returned no object: %s",
                      err.text);
        json_decref(doc);

        /* the transaction has committed: the data is durable */
        status = ngx_http_metacloud_send(r, NGX_HTTP_OK,
                                         &ngx_http_metacloud_json,
                                         ngx_http_metacloud_ok.data,
                                         ngx_http_metacloud_ok.len);
        goto done;
    }

    media = json_object_get(doc, "media");

    rep.inserted = json_integer_value(json_object_get(doc, "inserted"));
    rep.duplicate = json_integer_value(json_object_get(doc, "duplicate"));
    rep.failed = json_integer_value(json_object_get(doc, "failed"));
    rep.unrouted = json_integer_value(json_object_get(doc, "unrouted"));
    rep.pending = json_integer_value(json_object_get(doc, "pending"));
    rep.db_time = ngx_current_msec - q->start;

    ngx_http_metacloud_metrics_ingest(r, &rep);

    /* events that failed in SQL are the module's or the schema's fault */
    level = json_integer_value(json_object_get(doc, "failed")) ? NGX_LOG_WARN
                                                               : NGX_LOG_INFO;

    ngx_log_error(level, c->log, 0,
                  "metacloud: webhook stored in %M ms: %uz bytes, %s, "
                  "%uz events, %L new, %L duplicate, %L failed, "
                  "%L unrouted, %uz media",
                  ngx_current_msec - ctx->start, ctx->body.len,
                  mc_body_rc_str(ctx->norm.rc), ctx->norm.nevents,
                  (int64_t) json_integer_value(
                                json_object_get(doc, "inserted")),
                  (int64_t) json_integer_value(
                                json_object_get(doc, "duplicate")),
                  (int64_t) json_integer_value(
                                json_object_get(doc, "failed")),
                  (int64_t) json_integer_value(
                                json_object_get(doc, "unrouted")),
                  json_array_size(media));

    /* the answer is a summary; the media list is for the media queue */
    json_object_del(doc, "media");
    json_object_set_new(doc, "status", json_string("ok"));
    json_object_set_new(doc, "outcome",
                        json_string(mc_body_rc_str(ctx->norm.rc)));
    json_object_set_new(doc, "events", json_integer(ctx->norm.nevents));

    /* jansson writes straight into the request's pool */

    len = json_dumpb(doc, NULL, 0, JSON_COMPACT|JSON_SORT_KEYS);
    out = len ? ngx_pnalloc(r->pool, len) : NULL;

    if (out) {
        json_dumpb(doc, (char *) out, len, JSON_COMPACT|JSON_SORT_KEYS);

    } else {
        out = ngx_http_metacloud_ok.data;
        len = ngx_http_metacloud_ok.len;
    }

    json_decref(doc);

    status = ngx_http_metacloud_send(r, NGX_HTTP_OK, &ngx_http_metacloud_json,
                                     out, len);

done:

    ngx_http_finalize_request(r, status);
    ngx_http_run_posted_requests(c);
}


static void
ngx_http_metacloud_cleanup(void *data)
{
    ngx_http_metacloud_ctx_t  *ctx = data;

    if (ctx->query.pool) {
        ngx_metacloud_pg_query_cancel(&ctx->query);
    }

    mc_normalized_free(&ctx->norm);

    if (ctx->info) {
        free(ctx->info);
        ctx->info = NULL;
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


static ngx_table_elt_t *
ngx_http_metacloud_header(ngx_http_request_t *r, ngx_str_t *name)
{
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len == name->len
            && ngx_strncasecmp(h[i].key.data, name->data, name->len) == 0)
        {
            return &h[i];
        }
    }
}


static char *
ngx_http_metacloud_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_main_conf_t *mcf = conf;

    ngx_str_t  *value;

    if (mcf->conninfo.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the conninfo is handed to libpq as a C string */
    mcf->conninfo.len = value[1].len;
    mcf->conninfo.data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (mcf->conninfo.data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(mcf->conninfo.data, value[1].data, value[1].len + 1);

    if (ngx_strlen(mcf->conninfo.data) != value[1].len) {
        return "contains a NUL byte";
    }

    if (ngx_metacloud_pg_check_conninfo(cf, &mcf->conninfo) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_metacloud_webhook(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_loc_conf_t *mlcf = conf;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_metacloud_main_conf_t  *mcf;

    if (mlcf->enable != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    mlcf->enable = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_metacloud_handler;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metacloud_module);
    mcf->used = 1;

    return NGX_CONF_OK;
}


static char *
ngx_http_metacloud_app_secret(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (mlcf->secrets) {
            return "\"off\" cannot be combined with secrets";
        }

        if (mlcf->secret_off != NGX_CONF_UNSET) {
            return "is duplicate";
        }

        mlcf->secret_off = 1;
        return NGX_CONF_OK;
    }

    return ngx_http_metacloud_add_secret(cf, mlcf, value[1].data,
                                         value[1].len);
}


/* one secret a line; blank lines and lines starting with "#" are skipped */

static char *
ngx_http_metacloud_app_secret_file(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_metacloud_loc_conf_t *mlcf = conf;

    char             *rv;
    u_char           *buf, *p, *last, *start, *end;
    size_t            size;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_str_t        *value, name;
    ngx_uint_t        count;
    ngx_file_info_t   fi;

    value = cf->args->elts;
    name = value[1];

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"metacloud_app_secret_file\": "
                           ngx_open_file_n " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_ERROR;
    buf = NULL;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"metacloud_app_secret_file\": "
                           ngx_fd_info_n " \"%s\" failed", name.data);
        goto done;
    }

    size = (size_t) ngx_file_size(&fi);

    if (size > 65536) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_app_secret_file\" \"%s\" is too "
                           "large", name.data);
        goto done;
    }

    buf = ngx_pnalloc(cf->temp_pool, size + 1);
    if (buf == NULL) {
        goto done;
    }

    n = ngx_read_fd(fd, buf, size);

    if (n == -1 || (size_t) n != size) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"metacloud_app_secret_file\": "
                           ngx_read_fd_n " \"%s\" failed", name.data);
        goto done;
    }

    count = 0;
    p = buf;
    last = buf + size;

    while (p < last) {
        start = p;

        while (p < last && *p != '\n') {
            p++;
        }

        end = p++;

        while (end > start && (end[-1] == '\r' || end[-1] == ' '
                               || end[-1] == '\t'))
        {
            end--;
        }

        while (start < end && (*start == ' ' || *start == '\t')) {
            start++;
        }

        if (start == end || *start == '#') {
            continue;
        }

        if (ngx_http_metacloud_add_secret(cf, mlcf, start, end - start)
            != NGX_CONF_OK)
        {
            goto done;
        }

        count++;
    }

    if (count == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_app_secret_file\" \"%s\" holds no "
                           "secret", name.data);
        goto done;
    }

    rv = NGX_CONF_OK;

done:

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name.data);
    }

    return rv;
}


static char *
ngx_http_metacloud_add_secret(ngx_conf_t *cf,
    ngx_http_metacloud_loc_conf_t *mlcf, u_char *data, size_t len)
{
    u_char    *p;
    mc_str_t  *s;

    if (mlcf->secret_off == 1) {
        return "cannot be combined with \"metacloud_app_secret off\"";
    }

    if (len == 0) {
        return "empty secret";
    }

    if (mlcf->secrets == NULL) {
        mlcf->secrets = ngx_array_create(cf->pool, 2, sizeof(mc_str_t));
        if (mlcf->secrets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    p = ngx_pnalloc(cf->pool, len);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memcpy(p, data, len);

    s = ngx_array_push(mlcf->secrets);
    if (s == NULL) {
        return NGX_CONF_ERROR;
    }

    s->len = len;
    s->data = p;

    mlcf->secret_off = 0;

    return NGX_CONF_OK;
}


static char *
ngx_http_metacloud_check_bounds(ngx_conf_t *cf, void *post, void *data)
{
    ngx_conf_num_bounds_t  *bounds = post;
    ngx_int_t              *np = data;

    if (*np < bounds->low || *np > bounds->high) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%V\" must be between %i and %i",
                           &((ngx_str_t *) cf->args->elts)[0],
                           bounds->low, bounds->high);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* an empty token is a typo, not a choice: say so at nginx -t */

static char *
ngx_http_metacloud_check_token(ngx_conf_t *cf, void *post, void *data)
{
    ngx_str_t  *token = data;

    if (token->len == 0) {
        return "must not be empty";
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_metacloud_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_metacloud_main_conf_t));
    if (mcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mcf->conninfo = { 0, NULL };
     *     mcf->used = 0;
     *     mcf->pool = NULL;
     */

    mcf->pool_size = NGX_CONF_UNSET_UINT;
    mcf->queue_size = NGX_CONF_UNSET_UINT;
    mcf->timeout = NGX_CONF_UNSET_MSEC;

    return mcf;
}


static char *
ngx_http_metacloud_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_metacloud_main_conf_t *mcf = conf;

    ngx_conf_init_uint_value(mcf->pool_size, 4);
    ngx_conf_init_uint_value(mcf->queue_size, 256);
    ngx_conf_init_msec_value(mcf->timeout, 3000);

    if (mcf->timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_db_timeout\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_metacloud_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_metacloud_loc_conf_t  *mlcf;

    mlcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_metacloud_loc_conf_t));
    if (mlcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mlcf->verify_token = { 0, NULL };
     *     mlcf->secrets = NULL;
     */

    mlcf->enable = NGX_CONF_UNSET;
    mlcf->secret_off = NGX_CONF_UNSET;

    return mlcf;
}


static char *
ngx_http_metacloud_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_metacloud_loc_conf_t *prev = parent;
    ngx_http_metacloud_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_metacloud_main_conf_t  *mcf;

    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_str_value(conf->verify_token, prev->verify_token, "");

    if (conf->secrets == NULL && conf->secret_off == NGX_CONF_UNSET) {
        conf->secrets = prev->secrets;
        conf->secret_off = prev->secret_off;
    }

    if (conf->secret_off == NGX_CONF_UNSET) {
        conf->secret_off = 0;
    }

    if (!conf->enable) {
        return NGX_CONF_OK;
    }

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metacloud_module);

    if (mcf->conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_webhook\" needs \"metacloud_db\" "
                           "in the http block");
        return NGX_CONF_ERROR;
    }

    if (conf->secrets == NULL && !conf->secret_off) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_webhook\" needs "
                           "\"metacloud_app_secret\" or "
                           "\"metacloud_app_secret_file\"; "
                           "\"metacloud_app_secret off\" accepts unsigned "
                           "bodies on purpose");
        return NGX_CONF_ERROR;
    }

    if (conf->verify_token.len == 0) {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"metacloud_webhook\" without "
                           "\"metacloud_verify_token\" refuses every "
                           "verification handshake");
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (clcf->client_max_body_size != 0
        && clcf->client_max_body_size < NGX_HTTP_METACLOUD_MIN_BODY)
    {
        ngx_conf_log_error(NGX_LOG_WARN, cf, 0,
                           "\"client_max_body_size\" is %O in a "
                           "\"metacloud_webhook\" location: Meta sends "
                           "webhooks of up to 3 MB, set 4m",
                           clcf->client_max_body_size);
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_metacloud_init_process(ngx_cycle_t *cycle)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_metacloud_module);

    if (mcf == NULL || !mcf->used) {
        return NGX_OK;
    }

    mcf->pool = ngx_metacloud_pg_pool_create(cycle, mcf);
    if (mcf->pool == NULL) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static void
ngx_http_metacloud_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_metacloud_module);

    if (mcf == NULL || mcf->pool == NULL) {
        return;
    }

    ngx_metacloud_pg_pool_destroy(mcf->pool);
    mcf->pool = NULL;
}
