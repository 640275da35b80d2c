
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Metrics (ngx_http_metacloud_metrics_module, built into the same .so):
 * counters and histograms in one shared memory zone, written with atomic
 * adds by every worker, never under a lock a request could wait on.  The
 * zone is reused across reloads (as ngx_http_limit_req_module does).  A
 * request of a metacloud_webhook location is counted once, in the log
 * phase, whatever ended it.  Gauges of the PostgreSQL pools are per
 * worker: each worker writes its own slot once a second and the status
 * page adds the live slots up.  The backlog is read from PostgreSQL by
 * one worker at most every 10 seconds, through that worker's pool.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <jansson.h>

#include "ngx_http_metacloud.h"
#include "ngx_http_metacloud_ingest.h"
#include "ngx_http_metacloud_media.h"
#include "ngx_http_metacloud_metrics.h"
#include "ngx_http_metacloud_status_html.h"


#define NGX_HTTP_METACLOUD_METRICS_TICK     1000
#define NGX_HTTP_METACLOUD_BACKLOG_EVERY    10
#define NGX_HTTP_METACLOUD_WAMIDS_MAX       10
#define NGX_HTTP_METACLOUD_BUCKETS          13     /* and +Inf */
#define NGX_HTTP_METACLOUD_SLOTS            256    /* workers, old and new */
#define NGX_HTTP_METACLOUD_METRICS_MAGIC    0x4d434d32  /* "MCM2" */


#define NGX_HTTP_METACLOUD_COUNT(c)         + 1
#define NGX_HTTP_METACLOUD_NCODES                                             \
    (0 NGX_HTTP_METACLOUD_CODES(NGX_HTTP_METACLOUD_COUNT))

#define NGX_HTTP_METACLOUD_BACKLOG_ENUM(id, name)                             \
    NGX_HTTP_METACLOUD_BL_##id,

enum {
    NGX_HTTP_METACLOUD_BACKLOG(NGX_HTTP_METACLOUD_BACKLOG_ENUM)
    NGX_HTTP_METACLOUD_NBACKLOG
};


/* per bucket, not cumulative: the last one is +Inf */

typedef struct {
    ngx_atomic_t                          bucket[NGX_HTTP_METACLOUD_BUCKETS
                                                 + 1];
    ngx_atomic_t                          sum_us;
} ngx_http_metacloud_hist_t;


/* one worker's PostgreSQL pool, written by that worker only */

typedef struct {
    ngx_atomic_t                          pid;       /* 0: free */
    ngx_atomic_t                          size;
    ngx_atomic_t                          idle;
    ngx_atomic_t                          busy;
    ngx_atomic_t                          connecting;
    ngx_atomic_t                          waiting;
} ngx_http_metacloud_metrics_slot_t;


typedef struct {
    ngx_uint_t                          magic;
    time_t                              started;

    ngx_atomic_t                        requests[NGX_HTTP_METACLOUD_NOUTCOMES]
                                            [NGX_HTTP_METACLOUD_NCODES + 1];
    ngx_atomic_t                        events[MC_EVENT_NTYPES]
                                            [NGX_HTTP_METACLOUD_NRESULTS];
    ngx_http_metacloud_hist_t           request_duration;
    ngx_http_metacloud_hist_t           db_duration;
    ngx_atomic_t                        db_errors
                                            [NGX_HTTP_METACLOUD_NDB_ERRORS];
    ngx_atomic_t                        db_groups;
    ngx_atomic_t                        db_grouped;    /* their queries */
    ngx_atomic_t                        db_groups_failed;

    ngx_atomic_t                        media
                                            [NGX_HTTP_METACLOUD_NMEDIA_RESULTS];
    ngx_atomic_t                        media_bytes;
    ngx_atomic_t                        media_in_flight;
    ngx_http_metacloud_hist_t           media_duration;

    ngx_atomic_t                        backlog[NGX_HTTP_METACLOUD_NBACKLOG];
    ngx_atomic_t                        backlog_msec;  /* read at; 0: never */
    ngx_atomic_t                        backlog_claim; /* sec, last start */

    ngx_http_metacloud_metrics_slot_t   slots[NGX_HTTP_METACLOUD_SLOTS];
} ngx_http_metacloud_metrics_sh_t;


typedef struct {
    ngx_slab_pool_t                      *shpool;
    ngx_http_metacloud_metrics_sh_t      *sh;
} ngx_http_metacloud_metrics_zone_t;


typedef struct {
    ngx_flag_t                            enable;
    ngx_shm_zone_t                       *shm_zone;
    ngx_uint_t                            status_used;
} ngx_http_metacloud_metrics_main_conf_t;


typedef struct {
    ngx_flag_t                            status;
} ngx_http_metacloud_metrics_loc_conf_t;


/* what a request learnt on its way, for the log phase and the variables */

typedef struct {
    mc_body_rc_e                          body_rc;
    size_t                                ntypes[MC_EVENT_NTYPES];
    u_char                               *events;
    size_t                                events_len;
    ngx_str_t                             wamids;
    ngx_http_log_handler_pt               log_handler;  /* nginx's */
    ngx_http_metacloud_ingest_report_t    report;
    unsigned                              body:1;
    unsigned                              ingested:1;
    unsigned                              wamids_done:1;
} ngx_http_metacloud_metrics_ctx_t;


static ngx_int_t ngx_http_metacloud_metrics_log_handler(
    ngx_http_request_t *r);
static ngx_uint_t ngx_http_metacloud_metrics_outcome(ngx_http_request_t *r,
    ngx_http_metacloud_metrics_ctx_t *ctx);
static void ngx_http_metacloud_metrics_count_events(
    ngx_http_metacloud_metrics_sh_t *sh,
    ngx_http_metacloud_metrics_ctx_t *ctx);
static ngx_str_t *ngx_http_metacloud_metrics_wamids(ngx_http_request_t *r,
    ngx_http_metacloud_metrics_ctx_t *ctx);
static ngx_int_t ngx_http_metacloud_metrics_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static u_char *ngx_http_metacloud_metrics_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);
static ngx_int_t ngx_http_metacloud_status_handler(ngx_http_request_t *r);
static void ngx_http_metacloud_metrics_tick(ngx_event_t *ev);
static void ngx_http_metacloud_metrics_media_result(
    ngx_http_metacloud_media_result_t *res);
static void ngx_http_metacloud_metrics_pool_stats(
    ngx_http_metacloud_metrics_slot_t *slot);
static ngx_int_t ngx_http_metacloud_metrics_backlog_init(ngx_conf_t *cf);
static void ngx_http_metacloud_metrics_backlog(void);
static void ngx_http_metacloud_metrics_backlog_done(
    ngx_http_metacloud_pg_query_t *q);
static ngx_uint_t ngx_http_metacloud_metrics_counted(ngx_http_request_t *r);
static ngx_int_t ngx_http_metacloud_metrics_init_zone(
    ngx_shm_zone_t *shm_zone, void *data);
static char *ngx_http_metacloud_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_metacloud_metrics_add_variables(ngx_conf_t *cf);
static void ngx_http_metacloud_organization_init(ngx_conf_t *cf);
static ngx_int_t ngx_http_metacloud_metrics_init(ngx_conf_t *cf);
static void *ngx_http_metacloud_metrics_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_metrics_init_main_conf(ngx_conf_t *cf,
    void *conf);
static void *ngx_http_metacloud_metrics_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_metrics_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static ngx_int_t ngx_http_metacloud_metrics_init_process(ngx_cycle_t *cycle);
static void ngx_http_metacloud_metrics_exit_process(ngx_cycle_t *cycle);


static ngx_command_t  ngx_http_metacloud_metrics_commands[] = {

    { ngx_string("metacloud_metrics"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_metrics_main_conf_t, enable),
      NULL },

    { ngx_string("metacloud_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_metacloud_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_metacloud_metrics_module_ctx = {
    ngx_http_metacloud_metrics_add_variables,  /* preconfiguration */
    ngx_http_metacloud_metrics_init,           /* postconfiguration */

    ngx_http_metacloud_metrics_create_main_conf, /* create main conf */
    ngx_http_metacloud_metrics_init_main_conf, /* init main configuration */

    NULL,                                      /* create server conf */
    NULL,                                      /* merge server conf */

    ngx_http_metacloud_metrics_create_loc_conf, /* create location conf */
    ngx_http_metacloud_metrics_merge_loc_conf  /* merge location conf */
};


ngx_module_t  ngx_http_metacloud_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_metacloud_metrics_module_ctx,    /* module context */
    ngx_http_metacloud_metrics_commands,       /* module directives */
    NGX_HTTP_MODULE,                           /* module type */
    NULL,                                      /* init master */
    NULL,                                      /* init module */
    ngx_http_metacloud_metrics_init_process,   /* init process */
    NULL,                                      /* init thread */
    NULL,                                      /* exit thread */
    ngx_http_metacloud_metrics_exit_process,   /* exit process */
    NULL,                                      /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_http_variable_t  ngx_http_metacloud_metrics_vars[] = {

    { ngx_string("metacloud_wamids"), NULL,
      ngx_http_metacloud_metrics_variable, 0,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("metacloud_organization"), NULL,
      ngx_http_metacloud_metrics_variable, 1,
      NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


/* this worker's view of the zone: NULL when metrics are off */
static ngx_http_metacloud_metrics_sh_t    *ngx_http_metacloud_metrics_sh;
static ngx_http_metacloud_metrics_slot_t  *ngx_http_metacloud_metrics_slot;
static ngx_event_t                         ngx_http_metacloud_metrics_timer;


static ngx_str_t  ngx_http_metacloud_metrics_zone_name =
    ngx_string("metacloud_metrics");


/* histogram bounds in microseconds: 1 ms to 10 s */
static ngx_uint_t  ngx_http_metacloud_bounds[NGX_HTTP_METACLOUD_BUCKETS] = {
    1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000
};


void
ngx_http_metacloud_metrics_body(ngx_http_request_t *r, mc_normalized_t *norm)
{
    ngx_http_metacloud_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_metrics_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_metacloud_metrics_ctx_t));
        if (ctx == NULL) {
            return;
        }

        ngx_http_set_ctx(r, ctx, ngx_http_metacloud_metrics_module);
    }

    ctx->body = 1;
    ctx->body_rc = norm->rc;
    ngx_memcpy(ctx->ntypes, norm->ntypes, sizeof(ctx->ntypes));

    /* the request flow frees them in its pool cleanup, after the log */
    ctx->events = (u_char *) norm->events;
    ctx->events_len = norm->events_len;

    /* from now on the error log names the wamids, later the raw id */

    if (ctx->log_handler == NULL) {
        ctx->log_handler = r->log_handler;
        r->log_handler = ngx_http_metacloud_metrics_log_error;
    }
}


void
ngx_http_metacloud_metrics_ingest(ngx_http_request_t *r,
    ngx_http_metacloud_ingest_report_t *rep)
{
    ngx_http_metacloud_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_metrics_module);

    if (ctx == NULL) {
        return;
    }

    ctx->report = *rep;
    ctx->ingested = 1;
}


static void
ngx_http_metacloud_metrics_observe(ngx_http_metacloud_hist_t *h,
    ngx_uint_t us)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_METACLOUD_BUCKETS; i++) {
        if (us <= ngx_http_metacloud_bounds[i]) {
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&h->bucket[i], 1);
    (void) ngx_atomic_fetch_add(&h->sum_us, us);
}


void
ngx_http_metacloud_metrics_db_error(ngx_http_metacloud_db_error_e reason)
{
    if (ngx_http_metacloud_metrics_sh && reason < NGX_HTTP_METACLOUD_NDB_ERRORS)
    {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_metacloud_metrics_sh->db_errors[reason], 1);
    }
}


void
ngx_http_metacloud_metrics_db_group(ngx_uint_t n)
{
    if (ngx_http_metacloud_metrics_sh) {
        (void) ngx_atomic_fetch_add(&ngx_http_metacloud_metrics_sh->db_groups,
                                    1);
        (void) ngx_atomic_fetch_add(&ngx_http_metacloud_metrics_sh->db_grouped,
                                    n);
    }
}


void
ngx_http_metacloud_metrics_db_group_failed(void)
{
    if (ngx_http_metacloud_metrics_sh) {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_metacloud_metrics_sh->db_groups_failed, 1);
    }
}


void
ngx_http_metacloud_metrics_media(ngx_http_metacloud_media_result_e res,
    size_t bytes, ngx_msec_t duration)
{
    ngx_http_metacloud_metrics_sh_t  *sh;

    sh = ngx_http_metacloud_metrics_sh;

    if (sh == NULL || res >= NGX_HTTP_METACLOUD_NMEDIA_RESULTS) {
        return;
    }

    (void) ngx_atomic_fetch_add(&sh->media[res], 1);
    (void) ngx_atomic_fetch_add(&sh->media_bytes, bytes);
    ngx_http_metacloud_metrics_observe(&sh->media_duration, duration * 1000);
}


/* the media work's hook: one attempt ended */

static void
ngx_http_metacloud_metrics_media_result(ngx_http_metacloud_media_result_t *res)
{
    ngx_http_metacloud_media_result_e  r;

    switch (res->rc) {

    case NGX_HTTP_METACLOUD_FETCH_DONE:
        r = NGX_HTTP_METACLOUD_MEDIA_OK;
        break;

    case NGX_HTTP_METACLOUD_FETCH_RETRY:
        r = NGX_HTTP_METACLOUD_MEDIA_RETRY;
        break;

    case NGX_HTTP_METACLOUD_FETCH_EXPIRED:
        r = NGX_HTTP_METACLOUD_MEDIA_EXPIRED;
        break;

    default:
        r = NGX_HTTP_METACLOUD_MEDIA_FAILED;
        break;
    }

    ngx_http_metacloud_metrics_media(r, r == NGX_HTTP_METACLOUD_MEDIA_OK
                                        ? (size_t) res->bytes : 0,
                                     res->duration);
}


void
ngx_http_metacloud_metrics_media_in_flight(ngx_int_t delta)
{
    if (ngx_http_metacloud_metrics_sh) {
        (void) ngx_atomic_fetch_add(
                   &ngx_http_metacloud_metrics_sh->media_in_flight,
                   (ngx_atomic_uint_t) delta);
    }
}


/*
 * The log phase: every request of a metacloud_webhook location, however
 * it ended (a 413 before the handler ran, a client gone: 499).
 */

static ngx_int_t
ngx_http_metacloud_metrics_log_handler(ngx_http_request_t *r)
{
    ngx_uint_t                         code, i, outcome;
    ngx_msec_int_t                     ms;
    ngx_time_t                        *tp;
    ngx_http_metacloud_metrics_sh_t   *sh;
    ngx_http_metacloud_metrics_ctx_t  *ctx;

    static ngx_uint_t  codes[] = {
#define NGX_HTTP_METACLOUD_CODE(c)  c,
        NGX_HTTP_METACLOUD_CODES(NGX_HTTP_METACLOUD_CODE)
#undef NGX_HTTP_METACLOUD_CODE
    };

    sh = ngx_http_metacloud_metrics_sh;

    if (sh == NULL || r != r->main
        || !ngx_http_metacloud_metrics_counted(r))
    {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_metrics_module);

    outcome = ngx_http_metacloud_metrics_outcome(r, ctx);

    code = NGX_HTTP_METACLOUD_NCODES;

    for (i = 0; i < NGX_HTTP_METACLOUD_NCODES; i++) {
        if (r->headers_out.status == codes[i]) {
            code = i;
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&sh->requests[outcome][code], 1);

    /* as $request_time */
    tp = ngx_timeofday();
    ms = (ngx_msec_int_t) ((tp->sec - r->start_sec) * 1000
                           + (tp->msec - r->start_msec));
    ms = ngx_max(ms, 0);

    ngx_http_metacloud_metrics_observe(&sh->request_duration,
                                       (ngx_uint_t) ms * 1000);

    if (ctx && ctx->ingested) {
        ngx_http_metacloud_metrics_observe(&sh->db_duration,
                                           ctx->report.db_time * 1000);
        ngx_http_metacloud_metrics_count_events(sh, ctx);
    }

    return NGX_OK;
}


static ngx_uint_t
ngx_http_metacloud_metrics_outcome(ngx_http_request_t *r,
    ngx_http_metacloud_metrics_ctx_t *ctx)
{
    ngx_uint_t  status;

    status = r->headers_out.status;

    if (r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD)) {
        return status == NGX_HTTP_OK ? NGX_HTTP_METACLOUD_OUT_HANDSHAKE
               : status == NGX_HTTP_FORBIDDEN
                 ? NGX_HTTP_METACLOUD_OUT_HANDSHAKE_REFUSED
                 : NGX_HTTP_METACLOUD_OUT_ERROR;
    }

    switch (status) {

    case NGX_HTTP_OK:
        if (ctx == NULL || !ctx->body) {
            return NGX_HTTP_METACLOUD_OUT_ERROR;
        }

        switch (ctx->body_rc) {
        case MC_BODY_OK:
            return NGX_HTTP_METACLOUD_OUT_OK;
        case MC_BODY_INVALID_JSON:
            return NGX_HTTP_METACLOUD_OUT_INVALID_JSON;
        case MC_BODY_NOT_WEBHOOK:
            return NGX_HTTP_METACLOUD_OUT_NOT_WEBHOOK;
        case MC_BODY_OTHER_OBJECT:
            return NGX_HTTP_METACLOUD_OUT_OTHER_OBJECT;
        }

        return NGX_HTTP_METACLOUD_OUT_ERROR;

    case NGX_HTTP_UNAUTHORIZED:
        return NGX_HTTP_METACLOUD_OUT_BAD_SIGNATURE;

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        return NGX_HTTP_METACLOUD_OUT_TOO_LARGE;

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return NGX_HTTP_METACLOUD_OUT_UNAVAILABLE;

    case NGX_HTTP_NOT_ALLOWED:
        return NGX_HTTP_METACLOUD_OUT_METHOD;

    default:
        return NGX_HTTP_METACLOUD_OUT_ERROR;
    }
}


/*
 * metacloud_ingest() reports counts per delivery, the body gives the
 * types.  A delivery of one type (nearly all of them: Meta sends one field
 * per change) is exact.  In a mixed one, "pending" goes to statuses first
 * (only statuses wait for their message), the rest in type order; each
 * type's sum and each result's sum stay exact.
 */

static void
ngx_http_metacloud_metrics_count_events(ngx_http_metacloud_metrics_sh_t *sh,
    ngx_http_metacloud_metrics_ctx_t *ctx)
{
    size_t                               left[MC_EVENT_NTYPES];
    ngx_uint_t                           t, res, n, take, want[4];
    ngx_http_metacloud_ingest_report_t  *rep;

    static ngx_uint_t  order[] = {
        NGX_HTTP_METACLOUD_RES_PENDING, NGX_HTTP_METACLOUD_RES_UNROUTED,
        NGX_HTTP_METACLOUD_RES_FAILED, NGX_HTTP_METACLOUD_RES_DUPLICATE
    };

    rep = &ctx->report;

    ngx_memcpy(left, ctx->ntypes, sizeof(left));

    want[0] = rep->pending;
    want[1] = rep->unrouted;
    want[2] = rep->failed;
    want[3] = rep->duplicate;

    for (res = 0; res < 4; res++) {
        n = want[res];

        if (order[res] == NGX_HTTP_METACLOUD_RES_PENDING && n) {
            take = ngx_min(n, left[MC_EVENT_STATUS]);
            left[MC_EVENT_STATUS] -= take;
            n -= take;

            if (take) {
                (void) ngx_atomic_fetch_add(
                    &sh->events[MC_EVENT_STATUS][order[res]], take);
            }
        }

        for (t = 0; n && t < MC_EVENT_NTYPES; t++) {
            take = ngx_min(n, left[t]);

            if (take) {
                left[t] -= take;
                n -= take;
                (void) ngx_atomic_fetch_add(&sh->events[t][order[res]], take);
            }
        }
    }

    for (t = 0; t < MC_EVENT_NTYPES; t++) {
        if (left[t]) {
            (void) ngx_atomic_fetch_add(
                &sh->events[t][NGX_HTTP_METACLOUD_RES_INSERTED], left[t]);
        }
    }
}


/*
 * The message and status ids of the body, in order, each once, at most 10,
 * then ",+N" for the N more: read from the normalised events only when a
 * log format or an error line asks for them, once.
 */

static ngx_str_t *
ngx_http_metacloud_metrics_wamids(ngx_http_request_t *r,
    ngx_http_metacloud_metrics_ctx_t *ctx)
{
    u_char       *p, *last;
    size_t        i, j, n, more, len;
    json_t       *events, *ev, *sub;
    const char   *w, *seen[NGX_HTTP_METACLOUD_WAMIDS_MAX];

    if (ctx->wamids_done || ctx->events == NULL) {
        return &ctx->wamids;
    }

    ctx->wamids_done = 1;

    events = json_loadb((char *) ctx->events, ctx->events_len, 0, NULL);
    if (events == NULL) {
        return &ctx->wamids;
    }

    n = 0;
    more = 0;
    len = sizeof(",+") + NGX_SIZE_T_LEN;

    json_array_foreach(events, i, ev) {
        sub = json_object_get(ev, "message");
        if (sub == NULL) {
            sub = json_object_get(ev, "status");
        }

        w = json_string_value(json_object_get(sub, "wamid"));
        if (w == NULL) {
            continue;
        }

        for (j = 0; j < n; j++) {
            if (ngx_strcmp(seen[j], w) == 0) {
                break;
            }
        }

        if (j < n) {
            continue;
        }

        if (n == NGX_HTTP_METACLOUD_WAMIDS_MAX) {
            more++;
            continue;
        }

        seen[n++] = w;
        len += ngx_strlen(w) + 1;
    }

    p = ngx_pnalloc(r->pool, len);

    if (p != NULL) {
        ctx->wamids.data = p;
        last = p + len;

        for (j = 0; j < n; j++) {
            p = ngx_slprintf(p, last, j ? ",%s" : "%s", seen[j]);
        }

        if (more) {
            p = ngx_slprintf(p, last, ",+%uz", more);
        }

        ctx->wamids.len = p - ctx->wamids.data;
    }

    json_decref(events);

    return &ctx->wamids;
}


/* $metacloud_wamids (0), $metacloud_organization (1, after the commit) */

static ngx_int_t
ngx_http_metacloud_metrics_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data)
{
    ngx_str_t                         *s;
    ngx_http_metacloud_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_metrics_module);

    v->not_found = 1;

    if (ctx == NULL || (data == 1 && !ctx->ingested)) {
        return NGX_OK;
    }

    s = data ? &ctx->report.organizations
             : ngx_http_metacloud_metrics_wamids(r, ctx);

    if (s->len == 0) {
        return NGX_OK;
    }

    v->data = s->data;
    v->len = s->len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;

    return NGX_OK;
}


/*
 * The error lines of a delivery end with what identifies it, after
 * nginx's client, server, request and host: the raw request id and the
 * organisations once stored, the wamids once normalised.
 */

static u_char *
ngx_http_metacloud_metrics_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len)
{
    u_char                            *p;
    ngx_str_t                         *w;
    ngx_http_metacloud_metrics_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_metacloud_metrics_module);

    p = ctx->log_handler(r, sr, buf, len);
    len -= p - buf;

    if (ctx->ingested && ctx->report.raw_id.len) {
        buf = p;
        p = ngx_snprintf(buf, len, ", raw: %V", &ctx->report.raw_id);
        len -= p - buf;
    }

    if (ctx->ingested && ctx->report.organizations.len) {
        buf = p;
        p = ngx_snprintf(buf, len, ", organization: %V",
                         &ctx->report.organizations);
        len -= p - buf;
    }

    w = ngx_http_metacloud_metrics_wamids(r, ctx);

    if (w->len) {
        buf = p;
        p = ngx_snprintf(buf, len, ", wamid: %V", w);
    }

    return p;
}


/* a request of a metacloud_webhook location */

static ngx_uint_t
ngx_http_metacloud_metrics_counted(ngx_http_request_t *r)
{
    ngx_http_metacloud_loc_conf_t  *mlcf;

    mlcf = ngx_http_get_module_loc_conf(r, ngx_http_metacloud_module);

    return mlcf != NULL && mlcf->enable == 1;
}


/* the status page ------------------------------------------------------ */


static char  *ngx_http_metacloud_le[NGX_HTTP_METACLOUD_BUCKETS] = {
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25",
    "0.5", "1", "2.5", "5", "10"
};

#define NGX_HTTP_METACLOUD_NAME2(id, name)        name,
#define NGX_HTTP_METACLOUD_NAME3(id, name, code)  name,
#define NGX_HTTP_METACLOUD_CODE3(id, name, code)  code,
#define NGX_HTTP_METACLOUD_CODE_STR(c)            #c,

static char  *ngx_http_metacloud_outcome_names[] = {
    NGX_HTTP_METACLOUD_OUTCOMES(NGX_HTTP_METACLOUD_NAME3)
};

static ngx_uint_t  ngx_http_metacloud_outcome_codes[] = {
    NGX_HTTP_METACLOUD_OUTCOMES(NGX_HTTP_METACLOUD_CODE3)
};

static char  *ngx_http_metacloud_code_names[] = {
    NGX_HTTP_METACLOUD_CODES(NGX_HTTP_METACLOUD_CODE_STR) "other"
};

static char  *ngx_http_metacloud_result_names[] = {
    NGX_HTTP_METACLOUD_RESULTS(NGX_HTTP_METACLOUD_NAME2)
};

static char  *ngx_http_metacloud_db_error_names[] = {
    NGX_HTTP_METACLOUD_DB_ERRORS(NGX_HTTP_METACLOUD_NAME2)
};

static char  *ngx_http_metacloud_media_names[] = {
    NGX_HTTP_METACLOUD_MEDIA_RESULTS(NGX_HTTP_METACLOUD_NAME2)
};

static char  *ngx_http_metacloud_backlog_names[] = {
    NGX_HTTP_METACLOUD_BACKLOG(NGX_HTTP_METACLOUD_NAME2)
};


/* one consistent copy of the zone: what a scrape shows */

typedef struct {
    ngx_uint_t    count;
    ngx_uint_t    sum_us;
    ngx_uint_t    cum[NGX_HTTP_METACLOUD_BUCKETS + 1];
} ngx_http_metacloud_hist_snap_t;


typedef struct {
    ngx_uint_t                       requests[NGX_HTTP_METACLOUD_NOUTCOMES]
                                         [NGX_HTTP_METACLOUD_NCODES + 1];
    ngx_uint_t                       events[MC_EVENT_NTYPES]
                                         [NGX_HTTP_METACLOUD_NRESULTS];
    ngx_http_metacloud_hist_snap_t   request_duration;
    ngx_http_metacloud_hist_snap_t   db_duration;
    ngx_http_metacloud_hist_snap_t   media_duration;
    ngx_uint_t                       db_errors[NGX_HTTP_METACLOUD_NDB_ERRORS];
    ngx_uint_t                       db_groups;
    ngx_uint_t                       db_grouped;
    ngx_uint_t                       db_groups_failed;
    ngx_uint_t                       media[NGX_HTTP_METACLOUD_NMEDIA_RESULTS];
    ngx_uint_t                       media_bytes;
    ngx_int_t                        media_in_flight;

    ngx_uint_t                       workers;
    ngx_uint_t                       size;
    ngx_uint_t                       idle;
    ngx_uint_t                       busy;
    ngx_uint_t                       connecting;
    ngx_uint_t                       waiting;

    ngx_uint_t                       backlog[NGX_HTTP_METACLOUD_NBACKLOG];
    ngx_msec_t                       backlog_age;    /* ms */
    unsigned                         backlog_read:1;

    double                           now;
    time_t                           started;
} ngx_http_metacloud_snap_t;


static void
ngx_http_metacloud_hist_snap(ngx_http_metacloud_hist_t *h,
    ngx_http_metacloud_hist_snap_t *s)
{
    ngx_uint_t  i;

    s->count = 0;

    for (i = 0; i <= NGX_HTTP_METACLOUD_BUCKETS; i++) {
        s->count += h->bucket[i];
        s->cum[i] = s->count;
    }

    s->sum_us = h->sum_us;
}


static void
ngx_http_metacloud_metrics_snap(ngx_http_metacloud_metrics_sh_t *sh,
    ngx_http_metacloud_snap_t *s)
{
    ngx_uint_t                          i, j;
    ngx_pid_t                           pid;
    ngx_time_t                         *tp;
    ngx_msec_t                          now, at;
    ngx_http_metacloud_metrics_slot_t  *slot;

    ngx_memzero(s, sizeof(ngx_http_metacloud_snap_t));

    for (i = 0; i < NGX_HTTP_METACLOUD_NOUTCOMES; i++) {
        for (j = 0; j <= NGX_HTTP_METACLOUD_NCODES; j++) {
            s->requests[i][j] = sh->requests[i][j];
        }
    }

    for (i = 0; i < MC_EVENT_NTYPES; i++) {
        for (j = 0; j < NGX_HTTP_METACLOUD_NRESULTS; j++) {
            s->events[i][j] = sh->events[i][j];
        }
    }

    ngx_http_metacloud_hist_snap(&sh->request_duration, &s->request_duration);
    ngx_http_metacloud_hist_snap(&sh->db_duration, &s->db_duration);
    ngx_http_metacloud_hist_snap(&sh->media_duration, &s->media_duration);

    for (i = 0; i < NGX_HTTP_METACLOUD_NDB_ERRORS; i++) {
        s->db_errors[i] = sh->db_errors[i];
    }

    s->db_groups = sh->db_groups;
    s->db_grouped = sh->db_grouped;
    s->db_groups_failed = sh->db_groups_failed;

    for (i = 0; i < NGX_HTTP_METACLOUD_NMEDIA_RESULTS; i++) {
        s->media[i] = sh->media[i];
    }

    s->media_bytes = sh->media_bytes;
    s->media_in_flight = (ngx_int_t) sh->media_in_flight;

    /* the pools of the live workers; a crashed worker's slot is freed */

    for (i = 0; i < NGX_HTTP_METACLOUD_SLOTS; i++) {
        slot = &sh->slots[i];
        pid = (ngx_pid_t) slot->pid;

        if (pid == 0) {
            continue;
        }

        if (pid != ngx_pid && kill(pid, 0) == -1 && ngx_errno == NGX_ESRCH) {
            (void) ngx_atomic_cmp_set(&slot->pid, (ngx_atomic_uint_t) pid, 0);
            continue;
        }

        s->workers++;
        s->size += slot->size;
        s->idle += slot->idle;
        s->busy += slot->busy;
        s->connecting += slot->connecting;
        s->waiting += slot->waiting;
    }

    tp = ngx_timeofday();
    now = (ngx_msec_t) tp->sec * 1000 + tp->msec;
    s->now = tp->sec + tp->msec / 1000.0;
    s->started = sh->started;

    at = sh->backlog_msec;

    if (at) {
        s->backlog_read = 1;
        s->backlog_age = now > at ? now - at : 0;

        for (i = 0; i < NGX_HTTP_METACLOUD_NBACKLOG; i++) {
            s->backlog[i] = sh->backlog[i];
        }
    }
}


/* requests_total: each outcome's usual code always, any other when seen */

static ngx_uint_t
ngx_http_metacloud_request_shown(ngx_http_metacloud_snap_t *s, ngx_uint_t o,
    ngx_uint_t c)
{
    return s->requests[o][c] != 0
           || (c < NGX_HTTP_METACLOUD_NCODES
               && ngx_atoi((u_char *) ngx_http_metacloud_code_names[c], 3)
                  == (ngx_int_t) ngx_http_metacloud_outcome_codes[o]);
}


#define ngx_http_metacloud_prom_head(p, last, name, type, help)               \
    ngx_slprintf(p, last, "# HELP " name " " help "\n# TYPE " name " " type   \
                 "\n")


/* a counter without labels: its head and its one sample */
#define ngx_http_metacloud_prom_counter(p, last, name, help, value)           \
    ngx_slprintf(ngx_http_metacloud_prom_head(p, last, name, "counter",       \
                                              help),                          \
                 last, name " %ui\n", value)


static u_char *
ngx_http_metacloud_prom_hist(u_char *p, u_char *last, char *name,
    ngx_http_metacloud_hist_snap_t *h)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_METACLOUD_BUCKETS; i++) {
        p = ngx_slprintf(p, last, "%s_bucket{le=\"%s\"} %ui\n",
                         name, ngx_http_metacloud_le[i], h->cum[i]);
    }

    return ngx_slprintf(p, last,
                        "%s_bucket{le=\"+Inf\"} %ui\n"
                        "%s_sum %ui.%06ui\n"
                        "%s_count %ui\n",
                        name, h->count,
                        name, h->sum_us / 1000000, h->sum_us % 1000000,
                        name, h->count);
}


static u_char *
ngx_http_metacloud_prometheus(u_char *p, u_char *last,
    ngx_http_metacloud_snap_t *s)
{
    ngx_uint_t  i, j;

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_requests_total",
            "counter", "Requests of the webhook locations by outcome and "
            "status code.");

    for (i = 0; i < NGX_HTTP_METACLOUD_NOUTCOMES; i++) {
        for (j = 0; j <= NGX_HTTP_METACLOUD_NCODES; j++) {
            if (ngx_http_metacloud_request_shown(s, i, j)) {
                p = ngx_slprintf(p, last, "metacloud_requests_total"
                                 "{outcome=\"%s\",code=\"%s\"} %ui\n",
                                 ngx_http_metacloud_outcome_names[i],
                                 ngx_http_metacloud_code_names[j],
                                 s->requests[i][j]);
            }
        }
    }

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_events_total",
            "counter", "Events of committed deliveries by type and result.");

    for (i = 0; i < MC_EVENT_NTYPES; i++) {
        for (j = 0; j < NGX_HTTP_METACLOUD_NRESULTS; j++) {
            p = ngx_slprintf(p, last, "metacloud_events_total"
                             "{type=\"%s\",result=\"%s\"} %ui\n",
                             mc_event_type_str(i),
                             ngx_http_metacloud_result_names[j],
                             s->events[i][j]);
        }
    }

    p = ngx_http_metacloud_prom_head(p, last,
            "metacloud_request_duration_seconds", "histogram",
            "Time from the request line to the answer.");
    p = ngx_http_metacloud_prom_hist(p, last,
                                     "metacloud_request_duration_seconds",
                                     &s->request_duration);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_db_duration_seconds",
            "histogram", "Time of the ingest statement, queue included.");
    p = ngx_http_metacloud_prom_hist(p, last, "metacloud_db_duration_seconds",
                                     &s->db_duration);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_db_connections",
            "gauge", "PostgreSQL connections of all workers by state.");
    p = ngx_slprintf(p, last,
                     "metacloud_db_connections{state=\"idle\"} %ui\n"
                     "metacloud_db_connections{state=\"busy\"} %ui\n"
                     "metacloud_db_connections{state=\"connecting\"} %ui\n",
                     s->idle, s->busy, s->connecting);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_db_pool_size",
            "gauge", "PostgreSQL connections allowed, all workers.");
    p = ngx_slprintf(p, last, "metacloud_db_pool_size %ui\n", s->size);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_db_queue_waiting",
            "gauge", "Requests waiting for a PostgreSQL connection.");
    p = ngx_slprintf(p, last, "metacloud_db_queue_waiting %ui\n", s->waiting);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_db_errors_total",
            "counter", "PostgreSQL failures by reason.");

    for (i = 0; i < NGX_HTTP_METACLOUD_NDB_ERRORS; i++) {
        p = ngx_slprintf(p, last,
                         "metacloud_db_errors_total{reason=\"%s\"} %ui\n",
                         ngx_http_metacloud_db_error_names[i],
                         s->db_errors[i]);
    }

    p = ngx_http_metacloud_prom_counter(p, last, "metacloud_db_groups_total",
            "Calls that sent several queries in one transaction "
            "(metacloud_db_group).", s->db_groups);
    p = ngx_http_metacloud_prom_counter(p, last,
            "metacloud_db_grouped_queries_total",
            "Queries sent in those calls.", s->db_grouped);
    p = ngx_http_metacloud_prom_counter(p, last,
            "metacloud_db_groups_failed_total",
            "Those calls that failed as a whole, their queries sent again "
            "one by one.", s->db_groups_failed);

    p = ngx_http_metacloud_prom_head(p, last,
            "metacloud_media_downloads_total", "counter",
            "Media downloads by result.");

    for (i = 0; i < NGX_HTTP_METACLOUD_NMEDIA_RESULTS; i++) {
        p = ngx_slprintf(p, last,
                         "metacloud_media_downloads_total{result=\"%s\"} %ui\n",
                         ngx_http_metacloud_media_names[i], s->media[i]);
    }

    p = ngx_http_metacloud_prom_head(p, last,
            "metacloud_media_download_duration_seconds", "histogram",
            "Time of one media download.");
    p = ngx_http_metacloud_prom_hist(p, last,
                                "metacloud_media_download_duration_seconds",
                                &s->media_duration);

    p = ngx_http_metacloud_prom_counter(p, last, "metacloud_media_bytes_total",
            "Bytes of media downloaded.", s->media_bytes);

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_media_in_flight",
            "gauge", "Media downloads running now.");
    p = ngx_slprintf(p, last, "metacloud_media_in_flight %i\n",
                     s->media_in_flight);

    if (!s->backlog_read) {
        return p;
    }

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_backlog", "gauge",
            "Rows waiting in PostgreSQL by kind, as last read.");

    for (i = 0; i < NGX_HTTP_METACLOUD_NBACKLOG; i++) {
        p = ngx_slprintf(p, last, "metacloud_backlog{kind=\"%s\"} %ui\n",
                         ngx_http_metacloud_backlog_names[i], s->backlog[i]);
    }

    p = ngx_http_metacloud_prom_head(p, last, "metacloud_backlog_age_seconds",
            "gauge", "Seconds since metacloud_backlog was read.");

    return ngx_slprintf(p, last, "metacloud_backlog_age_seconds %M.%03M\n",
                        s->backlog_age / 1000, s->backlog_age % 1000);
}


static json_t *
ngx_http_metacloud_json_hist(ngx_http_metacloud_hist_snap_t *h)
{
    ngx_uint_t   i;
    json_t      *le, *cum;

    le = json_array();
    cum = json_array();

    for (i = 0; i < NGX_HTTP_METACLOUD_BUCKETS; i++) {
        json_array_append_new(le,
                             json_real(ngx_http_metacloud_bounds[i] / 1e6));
        json_array_append_new(cum, json_integer(h->cum[i]));
    }

    return json_pack("{s:o, s:o, s:I, s:f}", "le", le, "buckets", cum,
                     "count", (json_int_t) h->count,
                     "sum", h->sum_us / 1e6);
}


static json_t *
ngx_http_metacloud_json_counts(char **names, ngx_uint_t *v, ngx_uint_t n)
{
    ngx_uint_t   i;
    json_t      *o;

    o = json_object();

    for (i = 0; i < n; i++) {
        json_object_set_new(o, names[i], json_integer((json_int_t) v[i]));
    }

    return o;
}


/*
 * The same figures as the Prometheus text, for the HTML page and scripts.
 * jansson reports an allocation failure by a NULL that json_pack()
 * refuses ("o" of NULL): the whole document is then NULL.
 */

static json_t *
ngx_http_metacloud_json(ngx_http_metacloud_snap_t *s)
{
    ngx_uint_t   i, j;
    json_t      *requests, *events, *backlog;

    requests = json_array();

    for (i = 0; i < NGX_HTTP_METACLOUD_NOUTCOMES; i++) {
        for (j = 0; j <= NGX_HTTP_METACLOUD_NCODES; j++) {
            if (ngx_http_metacloud_request_shown(s, i, j)) {
                json_array_append_new(requests,
                    json_pack("{s:s, s:s, s:I}",
                              "outcome", ngx_http_metacloud_outcome_names[i],
                              "code", ngx_http_metacloud_code_names[j],
                              "count", (json_int_t) s->requests[i][j]));
            }
        }
    }

    events = json_object();

    for (i = 0; i < MC_EVENT_NTYPES; i++) {
        json_object_set_new(events, mc_event_type_str(i),
            ngx_http_metacloud_json_counts(ngx_http_metacloud_result_names,
                                           s->events[i],
                                           NGX_HTTP_METACLOUD_NRESULTS));
    }

    backlog = NULL;

    if (s->backlog_read) {
        backlog = ngx_http_metacloud_json_counts(
                      ngx_http_metacloud_backlog_names, s->backlog,
                      NGX_HTTP_METACLOUD_NBACKLOG);
        json_object_set_new(backlog, "age_seconds",
                            json_real(s->backlog_age / 1000.0));
    }

    return json_pack("{s:f, s:I, s:o, s:o, s:o, s:o,"
                     " s:{s:{s:I, s:I, s:I}, s:I, s:I, s:I, s:o,"
                     " s:{s:I, s:I, s:I}},"
                     " s:{s:o, s:I, s:I, s:o}, s:o*}",
        "time", s->now,
        "started", (json_int_t) s->started,
        "requests", requests,
        "events", events,
        "request_duration", ngx_http_metacloud_json_hist(&s->request_duration),
        "db_duration", ngx_http_metacloud_json_hist(&s->db_duration),
        "db",
            "connections",
                "idle", (json_int_t) s->idle,
                "busy", (json_int_t) s->busy,
                "connecting", (json_int_t) s->connecting,
            "size", (json_int_t) s->size,
            "waiting", (json_int_t) s->waiting,
            "workers", (json_int_t) s->workers,
            "errors", ngx_http_metacloud_json_counts(
                          ngx_http_metacloud_db_error_names, s->db_errors,
                          NGX_HTTP_METACLOUD_NDB_ERRORS),
            "groups",
                "sent", (json_int_t) s->db_groups,
                "queries", (json_int_t) s->db_grouped,
                "failed", (json_int_t) s->db_groups_failed,
        "media",
            "downloads", ngx_http_metacloud_json_counts(
                             ngx_http_metacloud_media_names, s->media,
                             NGX_HTTP_METACLOUD_NMEDIA_RESULTS),
            "bytes", (json_int_t) s->media_bytes,
            "in_flight", (json_int_t) s->media_in_flight,
            "duration", ngx_http_metacloud_json_hist(&s->media_duration),
        "backlog", backlog);
}


static ngx_str_t  ngx_http_metacloud_prom_type =
    ngx_string("text/plain; version=0.0.4; charset=utf-8");
static ngx_str_t  ngx_http_metacloud_json_type =
    ngx_string("application/json");
static ngx_str_t  ngx_http_metacloud_html_type =
    ngx_string("text/html; charset=utf-8");


static ngx_int_t
ngx_http_metacloud_status_handler(ngx_http_request_t *r)
{
    size_t                      len;
    u_char                     *p;
    json_t                     *doc;
    ngx_int_t                   rc;
    ngx_str_t                   format, *type;
    ngx_buf_t                  *b;
    ngx_chain_t                 out;
    ngx_http_metacloud_snap_t   s;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);

    if (rc != NGX_OK) {
        return rc;
    }

    if (ngx_http_metacloud_metrics_sh == NULL) {
        return NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    if (ngx_http_arg(r, (u_char *) "format", sizeof("format") - 1, &format)
        != NGX_OK)
    {
        ngx_str_set(&format, "prometheus");
    }

    ngx_http_metacloud_metrics_tick(NULL);
    ngx_http_metacloud_metrics_snap(ngx_http_metacloud_metrics_sh, &s);

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (format.len == 10 && ngx_strncmp(format.data, "prometheus", 10) == 0) {
        type = &ngx_http_metacloud_prom_type;

        /* at most a few hundred lines of under 128 bytes */
        len = 64 * 1024;

        p = ngx_pnalloc(r->pool, len);
        if (p == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->pos = p;
        b->last = ngx_http_metacloud_prometheus(p, p + len, &s);

    } else if (format.len == 4 && ngx_strncmp(format.data, "json", 4) == 0) {
        type = &ngx_http_metacloud_json_type;

        doc = ngx_http_metacloud_json(&s);
        len = doc ? json_dumpb(doc, NULL, 0, JSON_COMPACT) : 0;
        p = len ? ngx_pnalloc(r->pool, len + 1) : NULL;

        if (p == NULL) {
            json_decref(doc);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = json_dumpb(doc, (char *) p, len, JSON_COMPACT);
        json_decref(doc);

        p[len++] = '\n';

        b->pos = p;
        b->last = p + len;

    } else if (format.len == 4 && ngx_strncmp(format.data, "html", 4) == 0) {
        type = &ngx_http_metacloud_html_type;

        b->pos = ngx_http_metacloud_status_html.data;
        b->last = b->pos + ngx_http_metacloud_status_html.len;

    } else {
        return NGX_HTTP_BAD_REQUEST;
    }

    b->memory = 1;
    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = b->last - b->pos;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the worker's tick: its pool into its slot, and the backlog ---------- */

static void
ngx_http_metacloud_metrics_tick(ngx_event_t *ev)
{
    ngx_http_metacloud_metrics_slot_t  *slot;

    slot = ngx_http_metacloud_metrics_slot;

    if (slot) {
        ngx_http_metacloud_metrics_pool_stats(slot);
    }

    if (ev == NULL) {
        /* the status handler refreshes this worker's own figures */
        return;
    }

    ngx_http_metacloud_metrics_backlog();

    if (!ngx_exiting) {
        ngx_add_timer(ev, NGX_HTTP_METACLOUD_METRICS_TICK);
    }
}


/* configuration and processes ----------------------------------------- */

static ngx_int_t
ngx_http_metacloud_metrics_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_metacloud_metrics_zone_t *ozone = data;

    ngx_http_metacloud_metrics_zone_t  *zone;

    zone = shm_zone->data;

    /* a reload: the counters go on */

    if (ozone && ozone->sh->magic == NGX_HTTP_METACLOUD_METRICS_MAGIC) {
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
    }

    zone->sh = ngx_slab_calloc(zone->shpool,
                               sizeof(ngx_http_metacloud_metrics_sh_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    zone->sh->magic = NGX_HTTP_METACLOUD_METRICS_MAGIC;
    zone->sh->started = ngx_time();

    return NGX_OK;
}


static char *
ngx_http_metacloud_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_metrics_loc_conf_t *mmlcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (mmlcf->status != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    mmlcf->status = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_metacloud_status_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_metacloud_metrics_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_metacloud_metrics_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_metacloud_metrics_init(ngx_conf_t *cf)
{
    size_t                                   size;
    ngx_http_handler_pt                     *h;
    ngx_http_core_main_conf_t               *cmcf;
    ngx_http_metacloud_metrics_zone_t       *zone;
    ngx_http_metacloud_metrics_main_conf_t  *mmcf;

    ngx_http_metacloud_organization_init(cf);

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                          ngx_http_metacloud_metrics_module);

    if (!mmcf->enable) {
        if (mmcf->status_used) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"metacloud_status\" needs "
                               "\"metacloud_metrics on\"");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_metacloud_metrics_zone_t));
    if (zone == NULL) {
        return NGX_ERROR;
    }

    /* the slab pool's own pages, and room to spare */
    size = ngx_align(sizeof(ngx_http_metacloud_metrics_sh_t), ngx_pagesize)
           + 8 * ngx_pagesize;

    mmcf->shm_zone = ngx_shared_memory_add(cf,
                                         &ngx_http_metacloud_metrics_zone_name,
                                         size,
                                         &ngx_http_metacloud_metrics_module);
    if (mmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    mmcf->shm_zone->init = ngx_http_metacloud_metrics_init_zone;
    mmcf->shm_zone->data = zone;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_metacloud_metrics_log_handler;

    return ngx_http_metacloud_metrics_backlog_init(cf);
}


/*
 * $metacloud_organization asks PostgreSQL for the organisations in the
 * ingest round trip: only when a log format (or another module) indexed
 * the variable, as the metrics need no organisation.
 */

static void
ngx_http_metacloud_organization_init(ngx_conf_t *cf)
{
    ngx_uint_t                       i;
    ngx_http_variable_t             *v;
    ngx_http_core_main_conf_t       *cmcf;
    ngx_http_metacloud_main_conf_t  *mcf;

    static ngx_str_t  name = ngx_string("metacloud_organization");

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metacloud_module);
    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (mcf->ingest == NULL) {
        return;
    }

    v = cmcf->variables.elts;

    for (i = 0; i < cmcf->variables.nelts; i++) {
        if (v[i].name.len == name.len
            && ngx_strncmp(v[i].name.data, name.data, name.len) == 0)
        {
            ngx_http_metacloud_ingest_organizations(mcf->ingest);
            return;
        }
    }
}


static void *
ngx_http_metacloud_metrics_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_metacloud_metrics_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool,
                       sizeof(ngx_http_metacloud_metrics_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     mmcf->shm_zone = NULL;
     *     mmcf->status_used = 0;
     */

    mmcf->enable = NGX_CONF_UNSET;

    return mmcf;
}


static char *
ngx_http_metacloud_metrics_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_metacloud_metrics_main_conf_t *mmcf = conf;

    ngx_conf_init_value(mmcf->enable, 1);

    return NGX_CONF_OK;
}


static void *
ngx_http_metacloud_metrics_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_metacloud_metrics_loc_conf_t  *mmlcf;

    mmlcf = ngx_palloc(cf->pool,
                       sizeof(ngx_http_metacloud_metrics_loc_conf_t));
    if (mmlcf == NULL) {
        return NULL;
    }

    mmlcf->status = NGX_CONF_UNSET;

    return mmlcf;
}


static char *
ngx_http_metacloud_metrics_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_metacloud_metrics_loc_conf_t *conf = child;

    ngx_http_metacloud_metrics_main_conf_t  *mmcf;

    if (conf->status == 1) {
        mmcf = ngx_http_conf_get_module_main_conf(cf,
                                          ngx_http_metacloud_metrics_module);
        mmcf->status_used = 1;
    }

    return NGX_CONF_OK;
}


static void
ngx_http_metacloud_metrics_slot_clear(ngx_http_metacloud_metrics_slot_t *slot)
{
    slot->size = 0;
    slot->idle = 0;
    slot->busy = 0;
    slot->connecting = 0;
    slot->waiting = 0;
}


static ngx_int_t
ngx_http_metacloud_metrics_init_process(ngx_cycle_t *cycle)
{
    ngx_uint_t                               i;
    ngx_pid_t                                pid;
    ngx_event_t                             *ev;
    ngx_http_metacloud_metrics_slot_t       *slot;
    ngx_http_metacloud_metrics_zone_t       *zone;
    ngx_http_metacloud_metrics_main_conf_t  *mmcf;

    mmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                          ngx_http_metacloud_metrics_module);

    if (mmcf == NULL || mmcf->shm_zone == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    zone = mmcf->shm_zone->data;
    ngx_http_metacloud_metrics_sh = zone->sh;

    ngx_http_metacloud_media_result_handler =
                                        ngx_http_metacloud_metrics_media_result;

    /* a slot for this worker's pool: a free one, or a dead worker's */

    for (i = 0; i < NGX_HTTP_METACLOUD_SLOTS; i++) {
        slot = &zone->sh->slots[i];
        pid = (ngx_pid_t) slot->pid;

        if (pid != 0 && (kill(pid, 0) == 0 || ngx_errno != NGX_ESRCH)) {
            continue;
        }

        if (ngx_atomic_cmp_set(&slot->pid, (ngx_atomic_uint_t) pid,
                               (ngx_atomic_uint_t) ngx_pid))
        {
            ngx_http_metacloud_metrics_slot_clear(slot);
            ngx_http_metacloud_metrics_slot = slot;
            break;
        }
    }

    if (ngx_http_metacloud_metrics_slot == NULL) {
        ngx_log_error(NGX_LOG_WARN, cycle->log, 0,
                      "metacloud: no metrics slot left for this worker: "
                      "its PostgreSQL pool is not in metacloud_db_*");
    }

    ev = &ngx_http_metacloud_metrics_timer;
    ev->handler = ngx_http_metacloud_metrics_tick;
    ev->log = cycle->log;
    ev->data = zone;
    ev->cancelable = 1;

    ngx_add_timer(ev, NGX_HTTP_METACLOUD_METRICS_TICK);

    return NGX_OK;
}


static void
ngx_http_metacloud_metrics_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_metacloud_metrics_slot_t  *slot;

    slot = ngx_http_metacloud_metrics_slot;

    if (slot) {
        ngx_http_metacloud_metrics_slot_clear(slot);
        (void) ngx_atomic_cmp_set(&slot->pid, (ngx_atomic_uint_t) ngx_pid, 0);
        ngx_http_metacloud_metrics_slot = NULL;
    }

    ngx_http_metacloud_metrics_sh = NULL;
    ngx_http_metacloud_media_result_handler = NULL;
}



static void
ngx_http_metacloud_metrics_pool_stats(ngx_http_metacloud_metrics_slot_t *slot)
{
    ngx_http_metacloud_pg_t        *pg;
    ngx_http_metacloud_pg_stats_t   st;

    pg = ngx_http_metacloud_pg_get();

    if (pg == NULL) {
        return;
    }

    ngx_http_metacloud_pg_stats(pg, &st);

    slot->size = st.size;
    slot->idle = st.idle;
    slot->busy = st.busy;
    slot->connecting = st.connecting;
    slot->waiting = st.waiting;
}


/* the backlog: metacloud_backlog() through this worker's pool -------- */

static ngx_str_t  ngx_http_metacloud_backlog_name =
    ngx_string("metacloud_backlog_stmt");
static ngx_str_t  ngx_http_metacloud_backlog_sql =
    ngx_string("SELECT * FROM metacloud_backlog()");

static ngx_http_metacloud_pg_stmt_t   *ngx_http_metacloud_backlog_stmt;
static ngx_http_metacloud_pg_query_t   ngx_http_metacloud_backlog_query;
static ngx_uint_t                      ngx_http_metacloud_backlog_running;


/* only where the pool runs: a metacloud_webhook with its metacloud_db */

static ngx_int_t
ngx_http_metacloud_metrics_backlog_init(ngx_conf_t *cf)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_metacloud_module);

    ngx_http_metacloud_backlog_stmt = NULL;

    if (mcf->ingest == NULL || mcf->pg.conninfo.data == NULL) {
        return NGX_OK;
    }

    ngx_http_metacloud_backlog_stmt = ngx_http_metacloud_pg_add_stmt(cf,
                                          &ngx_http_metacloud_backlog_name,
                                          &ngx_http_metacloud_backlog_sql, 0);

    return ngx_http_metacloud_backlog_stmt ? NGX_OK : NGX_ERROR;
}


/*
 * Every worker's tick comes here; the first to find the last read 10 s
 * old claims the next one in the zone, so one worker reads it, whichever
 * is alive.  Never on a request's path: a request never waits for it
 * (it takes a connection from the pool like a request, at most one).
 */

static void
ngx_http_metacloud_metrics_backlog(void)
{
    time_t                           now, last;
    ngx_http_metacloud_pg_t         *pg;
    ngx_http_metacloud_pg_query_t   *q;
    ngx_http_metacloud_metrics_sh_t *sh;

    sh = ngx_http_metacloud_metrics_sh;
    pg = ngx_http_metacloud_pg_get();

    if (pg == NULL || ngx_http_metacloud_backlog_stmt == NULL
        || ngx_http_metacloud_backlog_running || ngx_exiting)
    {
        return;
    }

    now = ngx_time();
    last = (time_t) sh->backlog_claim;

    if (now - last < NGX_HTTP_METACLOUD_BACKLOG_EVERY
        || !ngx_atomic_cmp_set(&sh->backlog_claim, (ngx_atomic_uint_t) last,
                               (ngx_atomic_uint_t) now))
    {
        return;
    }

    q = &ngx_http_metacloud_backlog_query;
    ngx_memzero(q, sizeof(ngx_http_metacloud_pg_query_t));

    q->stmt = ngx_http_metacloud_backlog_stmt;
    q->handler = ngx_http_metacloud_metrics_backlog_done;
    q->log = ngx_cycle->log;

    if (ngx_http_metacloud_pg_run(pg, q) == NGX_OK) {
        ngx_http_metacloud_backlog_running = 1;
    }
}


static void
ngx_http_metacloud_metrics_backlog_done(ngx_http_metacloud_pg_query_t *q)
{
    char                             *v;
    ngx_int_t                         n;
    ngx_uint_t                        i;
    ngx_time_t                       *tp;
    ngx_http_metacloud_metrics_sh_t  *sh;

    ngx_http_metacloud_backlog_running = 0;

    sh = ngx_http_metacloud_metrics_sh;

    /* a failure is the pool's to log; the age shows the value is old */

    if (sh == NULL || q->rc != NGX_HTTP_METACLOUD_PG_OK
        || PQntuples(q->result) != 1
        || PQnfields(q->result) != NGX_HTTP_METACLOUD_NBACKLOG)
    {
        return;
    }

    for (i = 0; i < NGX_HTTP_METACLOUD_NBACKLOG; i++) {
        v = PQgetvalue(q->result, 0, i);
        n = ngx_atoi((u_char *) v, ngx_strlen(v));

        if (n != NGX_ERROR) {
            sh->backlog[i] = (ngx_atomic_uint_t) n;
        }
    }

    tp = ngx_timeofday();
    sh->backlog_msec = (ngx_atomic_uint_t) tp->sec * 1000 + tp->msec;
}
