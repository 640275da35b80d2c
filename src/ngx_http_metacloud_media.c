
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Media downloads on the event loop (ngx_http_metacloud_media.h).
 *
 * A job's life: claimed (metacloud_media_claim(), which counts the attempt
 * and leases the row) -> a thread task (ngx_http_metacloud_fetch_run())
 * -> its completion event logs a failure once -> metacloud_media_done()
 * or _fail() -> the job is freed and its slot claims again.  A worker
 * holds at most metacloud_media_concurrency jobs.  Jobs reach a worker
 * in two ways: the media an ingest just created, claimed by id right
 * after its commit, and a sweep every second of whatever is due (retries,
 * expired leases of dead workers, other machines' leftovers, rows written
 * while media was off).
 *
 * The same sweep drains meta_cloud_media_deletions (sql/009): one batch
 * of at most metacloud_media_concurrency files at a time per worker,
 * claimed with a lease, removed in one thread task, and the results
 * recorded in one query (a removed or missing file's row goes, a failure
 * backs off).
 *
 * A worker that is shutting down (reload) claims nothing more, but stays
 * until its threads are done and their results recorded: the transfers
 * are bounded by their timeouts.  A worker that dies leaves leases that
 * expire: the rows are claimed again.
 */


#include "ngx_http_metacloud.h"
#include "ngx_http_metacloud_ingest.h"
#include "ngx_http_metacloud_media.h"
#include "ngx_http_metacloud_metrics.h"

#include "mc_media.h"

#if (NGX_THREADS)
#include <ngx_thread_pool.h>
#endif


#define NGX_HTTP_METACLOUD_MEDIA_SWEEP    1000     /* ms */
#define NGX_HTTP_METACLOUD_MEDIA_RETRY    1000     /* ms, a mark refused */
#define NGX_HTTP_METACLOUD_MEDIA_MARGIN   10000    /* ms of lease to spare */
#define NGX_HTTP_METACLOUD_MEDIA_BACKOFF  "30 seconds"
#define NGX_HTTP_METACLOUD_MEDIA_CLEANUP_BACKOFF  "1 minute"  /* x attempts */


typedef struct ngx_http_metacloud_media_job_s  ngx_http_metacloud_media_job_t;
typedef struct ngx_http_metacloud_media_batch_s
    ngx_http_metacloud_media_batch_t;


/* this worker's state */

typedef struct {
    ngx_http_metacloud_media_conf_t  *conf;
    ngx_http_metacloud_pg_t          *pg;
    ngx_log_t                        *log;

    ngx_uint_t                        busy;     /* slots taken, claims
                                                   in flight included */
    ngx_uint_t                        running;  /* in a thread */
    ngx_uint_t                        marking;  /* results in the pool */

    ngx_event_t                       sweep;
    ngx_event_t                       guard;    /* holds a worker that
                                                   shuts down */
    u_char                            lease[NGX_INT_T_LEN + 16];
    u_char                            retries[NGX_INT_T_LEN + 1];

    /* the file removals: one batch at a time */
    unsigned                          cleaning:1;
    ngx_msec_t                        cleanup_next;  /* the next claim */
    ngx_http_metacloud_pg_query_t     cleanup;  /* its claim */
    const char                       *cleanup_values[2];
    u_char                            cleanup_limit[NGX_INT_T_LEN + 1];
    u_char                            cleanup_lease[NGX_INT_T_LEN + 16];
} ngx_http_metacloud_media_worker_t;


typedef struct {
    ngx_http_metacloud_pg_query_t     query;
    const char                       *values[4];
    u_char                           *ids;      /* text[] literal, or NULL */
    ngx_uint_t                        limit;
    u_char                            nlimit[NGX_INT_T_LEN + 1];
} ngx_http_metacloud_media_claim_t;


struct ngx_http_metacloud_media_job_s {
#if (NGX_THREADS)
    ngx_thread_task_t                 task;
#endif
    ngx_http_metacloud_fetch_t        fetch;
    ngx_http_metacloud_pg_query_t     query;
    ngx_event_t                       retry;
    const char                       *values[8];

    /* the claimed row: strings in the same allocation */
    char                             *id;
    char                             *attempt;
    u_char                            size[NGX_INT64_LEN + 1];
    u_char                            max[NGX_INT_T_LEN + 1];
    char                             *key;      /* "storageKey" */
};


static void ngx_http_metacloud_media_claim(ngx_uint_t limit, u_char *ids);
static void ngx_http_metacloud_media_claimed(
    ngx_http_metacloud_pg_query_t *q);
static ngx_http_metacloud_media_job_t *ngx_http_metacloud_media_job(
    PGresult *res, int row);
#if (NGX_THREADS)
static void ngx_http_metacloud_media_thread(void *data, ngx_log_t *log);
#endif
static void ngx_http_metacloud_media_fetched(ngx_event_t *ev);
static void ngx_http_metacloud_media_mark(ngx_http_metacloud_media_job_t *job);
static void ngx_http_metacloud_media_mark_retry(ngx_event_t *ev);
static void ngx_http_metacloud_media_marked(ngx_http_metacloud_pg_query_t *q);
static void ngx_http_metacloud_media_job_free(
    ngx_http_metacloud_media_job_t *job);
static void ngx_http_metacloud_media_sweep(ngx_event_t *ev);
static void ngx_http_metacloud_media_cleanup_claim(
    ngx_http_metacloud_media_worker_t *w);
static void ngx_http_metacloud_media_cleanup_claimed(
    ngx_http_metacloud_pg_query_t *q);
#if (NGX_THREADS)
static void ngx_http_metacloud_media_cleanup_thread(void *data,
    ngx_log_t *log);
#endif
static void ngx_http_metacloud_media_cleanup_removed(ngx_event_t *ev);
static void ngx_http_metacloud_media_cleanup_record(ngx_event_t *ev);
static void ngx_http_metacloud_media_cleanup_recorded(
    ngx_http_metacloud_pg_query_t *q);
static u_char *ngx_http_metacloud_media_array(u_char *p, const char *s,
    ngx_uint_t first);
static void ngx_http_metacloud_media_guard(ngx_event_t *ev);
static void ngx_http_metacloud_media_hold(void);
static void ngx_http_metacloud_media_clean_tmp(ngx_cycle_t *cycle,
    ngx_http_metacloud_media_conf_t *mc);
static char *ngx_http_metacloud_media_cstr(ngx_conf_t *cf, ngx_str_t *s,
    const char **out);
static char *ngx_http_metacloud_media_credentials(ngx_conf_t *cf,
    ngx_str_t *file, ngx_http_metacloud_fetch_conf_t *fc);


void (*ngx_http_metacloud_media_result_handler)(
    ngx_http_metacloud_media_result_t *res);

static ngx_http_metacloud_media_worker_t  *ngx_http_metacloud_media_w;


static ngx_str_t  ngx_http_metacloud_media_claim_name =
    ngx_string("metacloud_media_claim_stmt");
static ngx_str_t  ngx_http_metacloud_media_claim_sql = ngx_string(
    "SELECT id, media_id, organization_id, mime_type, sha256, url, day, "
    "attempt, token "
    "FROM metacloud_media_claim($1::text[], $2::int, $3::interval, $4::int)");

static ngx_str_t  ngx_http_metacloud_media_done_name =
    ngx_string("metacloud_media_done_stmt");
static ngx_str_t  ngx_http_metacloud_media_done_sql = ngx_string(
    "SELECT metacloud_media_done($1, $2::int, $3, $4, $5, $6, $7::bigint, "
    "$8)");

static ngx_str_t  ngx_http_metacloud_media_fail_name =
    ngx_string("metacloud_media_fail_stmt");
static ngx_str_t  ngx_http_metacloud_media_fail_sql = ngx_string(
    "SELECT metacloud_media_fail($1, $2::int, $3, $4::boolean, $5::int, "
    "$6::interval)");


static ngx_str_t  ngx_http_metacloud_media_cleanup_claim_name =
    ngx_string("metacloud_media_cleanup_claim_stmt");
static ngx_str_t  ngx_http_metacloud_media_cleanup_claim_sql = ngx_string(
    "SELECT id, media_id, provider, bucket, key, attempt "
    "FROM metacloud_media_cleanup_claim($1::int, $2::interval)");

static ngx_str_t  ngx_http_metacloud_media_cleanup_done_name =
    ngx_string("metacloud_media_cleanup_done_stmt");
static ngx_str_t  ngx_http_metacloud_media_cleanup_done_sql = ngx_string(
    "SELECT metacloud_media_cleanup_done($1::text[], $2::int[], $3::text[], "
    "$4::interval)");


/* the columns of the claim's result */
enum {
    MC_COL_ID = 0, MC_COL_MEDIA_ID, MC_COL_ORG, MC_COL_MIME, MC_COL_SHA256,
    MC_COL_URL, MC_COL_DAY, MC_COL_ATTEMPT, MC_COL_TOKEN, MC_COL_N
};

/* the columns of the cleanup claim's result */
enum {
    MC_DEL_ID = 0, MC_DEL_MEDIA_ID, MC_DEL_PROVIDER, MC_DEL_BUCKET,
    MC_DEL_KEY, MC_DEL_ATTEMPT, MC_DEL_N
};


/* one claimed file to remove, and the thread's result */

typedef struct {
    const char                       *s[MC_DEL_N];
    int                               rc;       /* 0: gone */
    char                              error[200];
} ngx_http_metacloud_media_removal_t;


struct ngx_http_metacloud_media_batch_s {
#if (NGX_THREADS)
    ngx_thread_task_t                 task;
#endif
    ngx_http_metacloud_pg_query_t     query;
    ngx_event_t                       retry;
    const char                       *values[4];
    const ngx_http_metacloud_fetch_conf_t  *conf;
    u_char                           *arrays;   /* the results, text[] */
    ngx_uint_t                        n;
    ngx_http_metacloud_media_removal_t  removal[1];
};


/* configuration ------------------------------------------------------ */

void
ngx_http_metacloud_media_create_conf(ngx_http_metacloud_media_conf_t *mc)
{
    /*
     * set by ngx_pcalloc() of the main configuration:
     *
     *     mc->thread_pool_name = { 0, NULL };
     *     mc->graph_url = { 0, NULL };
     *     mc->path = { 0, NULL };
     *     mc->url_prefix = { 0, NULL };
     *     mc->s3 = 0;
     *     mc->fetch = { 0 };
     */

    mc->enable = NGX_CONF_UNSET;
    mc->concurrency = NGX_CONF_UNSET_UINT;
    mc->max_size = NGX_CONF_UNSET_SIZE;
    mc->timeout = NGX_CONF_UNSET_MSEC;
    mc->retries = NGX_CONF_UNSET_UINT;
}


/*
 * metacloud_media_s3 endpoint=<url> bucket=<name> region=<region>
 *                    credentials=<file> [prefix=<p>];
 */

char *
ngx_http_metacloud_media_s3(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_media_conf_t *mc = (void *) ((u_char *) conf
                                                    + cmd->offset);

    char                             *rv;
    u_char                           *eq;
    ngx_str_t                        *value, v, creds, prefix;
    ngx_uint_t                        i;
    ngx_http_metacloud_fetch_conf_t  *fc;

    if (mc->s3) {
        return "is duplicate";
    }

    mc->s3 = 1;
    fc = &mc->fetch;
    value = cf->args->elts;
    ngx_str_null(&creds);
    ngx_str_null(&prefix);

    for (i = 1; i < cf->args->nelts; i++) {
        eq = ngx_strlchr(value[i].data, value[i].data + value[i].len, '=');

        if (eq == NULL || eq == value[i].data || eq + 1 == value[i].data
                                                            + value[i].len)
        {
            goto invalid;
        }

        v.data = eq + 1;
        v.len = value[i].data + value[i].len - v.data;

#define MC_S3_ARG(name)                                                      \
        ((size_t) (eq - value[i].data) == sizeof(name) - 1                   \
         && ngx_strncmp(value[i].data, name, sizeof(name) - 1) == 0)

        if (MC_S3_ARG("endpoint")) {
            if (ngx_strncmp(v.data, "http://", 7) != 0
                && ngx_strncmp(v.data, "https://", 8) != 0)
            {
                return "endpoint must be an http:// or https:// URL";
            }

            while (v.len > 8 && v.data[v.len - 1] == '/') {
                v.len--;
            }

            rv = ngx_http_metacloud_media_cstr(cf, &v, &fc->s3_endpoint);

        } else if (MC_S3_ARG("bucket")) {
            rv = ngx_http_metacloud_media_cstr(cf, &v, &fc->s3_bucket);

        } else if (MC_S3_ARG("region")) {
            rv = ngx_http_metacloud_media_cstr(cf, &v, &fc->s3_region);

        } else if (MC_S3_ARG("credentials")) {
            creds = v;
            rv = NGX_CONF_OK;

        } else if (MC_S3_ARG("prefix")) {
            prefix = v;
            rv = NGX_CONF_OK;

        } else {
            goto invalid;
        }

#undef MC_S3_ARG

        if (rv != NGX_CONF_OK) {
            return rv;
        }
    }

    if (fc->s3_endpoint == NULL || fc->s3_bucket == NULL
        || fc->s3_region == NULL || creds.data == NULL)
    {
        return "needs endpoint=, bucket=, region= and credentials=";
    }

    /* the prefix is a key prefix: "p" and "p/" both store under "p/" */
    if (prefix.len && prefix.data[prefix.len - 1] != '/') {
        v.len = prefix.len + 1;
        v.data = ngx_pnalloc(cf->pool, v.len);
        if (v.data == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memcpy(ngx_cpymem(v.data, prefix.data, prefix.len), "/", 1);
        prefix = v;
    }

    if (ngx_http_metacloud_media_cstr(cf, &prefix, &fc->s3_prefix)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_http_metacloud_media_credentials(cf, &creds, fc);

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\" of \"metacloud_media_s3\"",
                       &value[i]);
    return NGX_CONF_ERROR;
}


/* the credentials file: the access key id, then the secret, one a line */

static char *
ngx_http_metacloud_media_credentials(ngx_conf_t *cf, ngx_str_t *file,
    ngx_http_metacloud_fetch_conf_t *fc)
{
    u_char     *p, *last, *line[2], *end[2];
    ssize_t     n;
    ngx_fd_t    fd;
    ngx_str_t   name, v;
    ngx_uint_t  i;
    u_char      buf[4096];

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"metacloud_media_s3\": " ngx_open_file_n
                           " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    n = ngx_read_fd(fd, buf, sizeof(buf));

    if (ngx_close_file(fd) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_ALERT, cf, ngx_errno,
                           ngx_close_file_n " \"%s\" failed", name.data);
    }

    if (n == -1) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "\"metacloud_media_s3\": " ngx_read_fd_n
                           " \"%s\" failed", name.data);
        return NGX_CONF_ERROR;
    }

    p = buf;
    last = buf + n;

    for (i = 0; i < 2; i++) {
        line[i] = p;

        while (p < last && *p != '\n') {
            p++;
        }

        end[i] = p;

        while (end[i] > line[i] && (end[i][-1] == '\r' || end[i][-1] == ' '
                                    || end[i][-1] == '\t'))
        {
            end[i]--;
        }

        if (end[i] == line[i]) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "\"metacloud_media_s3\": \"%s\" must hold the "
                               "access key id and the secret, one a line",
                               name.data);
            return NGX_CONF_ERROR;
        }

        if (p < last) {
            p++;
        }
    }

    v.data = line[0];
    v.len = end[0] - line[0];

    if (ngx_http_metacloud_media_cstr(cf, &v, &fc->s3_key_id) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    v.data = line[1];
    v.len = end[1] - line[1];

    if (ngx_http_metacloud_media_cstr(cf, &v, &fc->s3_secret) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    ngx_explicit_memzero(buf, sizeof(buf));

    return NGX_CONF_OK;
}


static char *
ngx_http_metacloud_media_cstr(ngx_conf_t *cf, ngx_str_t *s, const char **out)
{
    u_char  *p;

    p = ngx_pnalloc(cf->pool, s->len + 1);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(p, s->data, s->len + 1);

    if (ngx_strlen(p) != s->len) {
        return "contains a NUL byte";
    }

    *out = (const char *) p;

    return NGX_CONF_OK;
}


char *
ngx_http_metacloud_media_init_conf(ngx_conf_t *cf,
    ngx_http_metacloud_media_conf_t *mc, ngx_http_metacloud_pg_conf_t *pgcf)
{
    ngx_str_t                         v;
    ngx_file_info_t                   fi;
    ngx_http_metacloud_fetch_conf_t  *fc;

    ngx_conf_init_value(mc->enable, 0);
    ngx_conf_init_uint_value(mc->concurrency, 4);
    ngx_conf_init_size_value(mc->max_size, 100 * 1024 * 1024);
    ngx_conf_init_msec_value(mc->timeout, 60000);
    ngx_conf_init_uint_value(mc->retries, 3);

    if (mc->graph_url.data == NULL) {
        ngx_str_set(&mc->graph_url, "https://graph.facebook.com/v21.0");
    }

    if (mc->thread_pool_name.data == NULL) {
        ngx_str_set(&mc->thread_pool_name, "default");
    }

    if (!mc->enable) {
        return NGX_CONF_OK;
    }

#if !(NGX_THREADS)

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "\"metacloud_media on\" needs an nginx built "
                       "--with-threads");
    return NGX_CONF_ERROR;

#else

    if (pgcf->conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_media on\" needs \"metacloud_db\"");
        return NGX_CONF_ERROR;
    }

    if ((mc->path.data != NULL) == (mc->s3 != 0)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_media on\" needs exactly one of "
                           "\"metacloud_media_path\" and "
                           "\"metacloud_media_s3\"");
        return NGX_CONF_ERROR;
    }

    if (mc->timeout == 0 || mc->max_size == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"%s\" must be more than 0",
                           mc->timeout ? "metacloud_media_max_size"
                                       : "metacloud_media_timeout");
        return NGX_CONF_ERROR;
    }

    fc = &mc->fetch;

    /* "url" + "/" + the media id: no trailing slash */
    v = mc->graph_url;

    while (v.len && v.data[v.len - 1] == '/') {
        v.len--;
    }

    if (ngx_strncmp(v.data, "http://", 7) != 0
        && ngx_strncmp(v.data, "https://", 8) != 0)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_graph_url\" must be an http:// or "
                           "https:// URL");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_metacloud_media_cstr(cf, &v, &fc->graph_url) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    if (mc->path.data) {
        if (ngx_conf_full_name(cf->cycle, &mc->path, 0) != NGX_OK) {
            return NGX_CONF_ERROR;
        }

        while (mc->path.len > 1 && mc->path.data[mc->path.len - 1] == '/') {
            mc->path.len--;
        }

        if (ngx_file_info(mc->path.data, &fi) == NGX_FILE_ERROR
            || !ngx_is_dir(&fi))
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                               "\"metacloud_media_path\" \"%V\" is not a "
                               "directory", &mc->path);
            return NGX_CONF_ERROR;
        }

        if (ngx_http_metacloud_media_cstr(cf, &mc->path, &fc->path)
            != NGX_CONF_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    if (mc->url_prefix.data
        && ngx_http_metacloud_media_cstr(cf, &mc->url_prefix, &fc->url_prefix)
           != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    fc->max_size = mc->max_size;
    fc->timeout = mc->timeout;

    /* nginx -t refuses a pool no "thread_pool" defines (but "default") */
    mc->thread_pool = ngx_thread_pool_add(cf, &mc->thread_pool_name);
    if (mc->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    mc->claim = ngx_http_metacloud_pg_add_stmt(cf,
                                        &ngx_http_metacloud_media_claim_name,
                                        &ngx_http_metacloud_media_claim_sql, 4);
    mc->done = ngx_http_metacloud_pg_add_stmt(cf,
                                        &ngx_http_metacloud_media_done_name,
                                        &ngx_http_metacloud_media_done_sql, 8);
    mc->fail = ngx_http_metacloud_pg_add_stmt(cf,
                                        &ngx_http_metacloud_media_fail_name,
                                        &ngx_http_metacloud_media_fail_sql, 6);
    mc->cleanup_claim = ngx_http_metacloud_pg_add_stmt(cf,
                                &ngx_http_metacloud_media_cleanup_claim_name,
                                &ngx_http_metacloud_media_cleanup_claim_sql, 2);
    mc->cleanup_done = ngx_http_metacloud_pg_add_stmt(cf,
                                &ngx_http_metacloud_media_cleanup_done_name,
                                &ngx_http_metacloud_media_cleanup_done_sql, 4);

    if (mc->claim == NULL || mc->done == NULL || mc->fail == NULL
        || mc->cleanup_claim == NULL || mc->cleanup_done == NULL)
    {
        return NGX_CONF_ERROR;
    }

    /* the media functions came with schema version 5, their cleanup 9 */
    if (pgcf->schema_version < MC_MEDIA_SCHEMA_VERSION) {
        pgcf->schema_version = MC_MEDIA_SCHEMA_VERSION;
    }

    return NGX_CONF_OK;

#endif
}


/* the worker ---------------------------------------------------------- */

ngx_int_t
ngx_http_metacloud_media_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_media_conf_t *mc, ngx_http_metacloud_pg_t *pg)
{
    ngx_http_metacloud_media_worker_t  *w;

    if (!mc->enable || pg == NULL
        || (ngx_process != NGX_PROCESS_WORKER
            && ngx_process != NGX_PROCESS_SINGLE))
    {
        return NGX_OK;
    }

    w = ngx_pcalloc(cycle->pool, sizeof(ngx_http_metacloud_media_worker_t));
    if (w == NULL) {
        return NGX_ERROR;
    }

    w->conf = mc;
    w->pg = pg;
    w->log = cycle->log;

    /*
     * The lease outlives the attempt: its transfers end within twice the
     * timeout (ngx_http_metacloud_fetch.c), the result needs one query.
     */
    ngx_sprintf(w->lease, "%M milliseconds%Z",
                2 * mc->timeout + NGX_HTTP_METACLOUD_MEDIA_MARGIN);
    ngx_sprintf(w->retries, "%ui%Z", mc->retries);

    /* a batch's removals run one after another, each within the timeout */
    ngx_sprintf(w->cleanup_limit, "%ui%Z", mc->concurrency);
    ngx_sprintf(w->cleanup_lease, "%M milliseconds%Z",
                mc->concurrency * mc->timeout
                + NGX_HTTP_METACLOUD_MEDIA_MARGIN);

    w->sweep.handler = ngx_http_metacloud_media_sweep;
    w->sweep.data = w;
    w->sweep.log = cycle->log;
    w->sweep.cancelable = 1;

    w->guard.handler = ngx_http_metacloud_media_guard;
    w->guard.data = w;
    w->guard.log = cycle->log;

    ngx_http_metacloud_media_w = w;

    if (mc->fetch.path && ngx_worker == 0) {
        ngx_http_metacloud_media_clean_tmp(cycle, mc);
    }

    /* the first sweep soon: rows left by a previous run or while off */
    ngx_add_timer(&w->sweep, 100);

    return NGX_OK;
}


/*
 * Temporary files of attempts that ended with their worker (kill -9, a
 * crash): older than a lease, no attempt can still be writing them, on
 * this machine or another one sharing the directory.  One small directory,
 * read once when the first worker starts.
 */

static void
ngx_http_metacloud_media_clean_tmp(ngx_cycle_t *cycle,
    ngx_http_metacloud_media_conf_t *mc)
{
    time_t      old;
    ngx_dir_t   dir;
    ngx_str_t   name;
    u_char      file[NGX_MAX_PATH];

    name.len = mc->path.len + sizeof("/.tmp") - 1;
    name.data = file;

    if (name.len + 2 >= NGX_MAX_PATH) {
        return;
    }

    ngx_sprintf(file, "%V/.tmp%Z", &mc->path);

    if (ngx_open_dir(&name, &dir) == NGX_ERROR) {
        return;
    }

    old = ngx_time() - (time_t) (2 * mc->timeout
                                 + NGX_HTTP_METACLOUD_MEDIA_MARGIN) / 1000;

    for ( ;; ) {
        ngx_set_errno(0);

        if (ngx_read_dir(&dir) == NGX_ERROR) {
            break;
        }

        if (ngx_de_name(&dir)[0] == '.'
            || name.len + 1 + ngx_de_namelen(&dir) + 1 > NGX_MAX_PATH)
        {
            continue;
        }

        ngx_sprintf(file + name.len, "/%s%Z", ngx_de_name(&dir));

        if (ngx_de_info(file, &dir) == NGX_FILE_ERROR
            || !ngx_de_is_file(&dir) || ngx_de_mtime(&dir) >= old)
        {
            continue;
        }

        if (ngx_delete_file(file) == NGX_FILE_ERROR) {
            ngx_log_error(NGX_LOG_WARN, cycle->log, ngx_errno,
                          ngx_delete_file_n " \"%s\" failed", file);
        }
    }

    (void) ngx_close_dir(&dir);
}


void
ngx_http_metacloud_media_exit_worker(void)
{
    /*
     * Jobs still in threads or in the pool's queue are left as they are:
     * their leases expire and the rows are claimed again.
     */
    ngx_http_metacloud_media_w = NULL;
}


void
ngx_http_metacloud_media_queue(ngx_array_t *media)
{
    u_char                             *ids, *p;
    size_t                              len;
    ngx_uint_t                          i, n, room;
    ngx_http_metacloud_media_t         *m;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    if (w == NULL || media == NULL || media->nelts == 0 || ngx_exiting) {
        return;
    }

    room = w->conf->concurrency - w->busy;

    if (room == 0) {
        /* the sweep takes them when a slot frees */
        return;
    }

    m = media->elts;
    n = ngx_min(media->nelts, room);

    /* a text[] literal: {"id","id"}; the ids are generated uuids */
    len = sizeof("{}");

    for (i = 0; i < n; i++) {
        len += m[i].id.len + sizeof("\"\",") - 1;
    }

    ids = ngx_alloc(len, w->log);
    if (ids == NULL) {
        return;
    }

    p = ngx_cpymem(ids, "{", 1);

    for (i = 0; i < n; i++) {
        if (ngx_strlchr(m[i].id.data, m[i].id.data + m[i].id.len, '"')
            || ngx_strlchr(m[i].id.data, m[i].id.data + m[i].id.len, '\\'))
        {
            continue;
        }

        p = ngx_sprintf(p, "%s\"%V\"", p[-1] == '{' ? "" : ",", &m[i].id);
    }

    ngx_memcpy(p, "}", sizeof("}"));

    ngx_http_metacloud_media_claim(n, ids);
}


/* claims up to limit jobs: those of ids (freed here), or any due one */

static void
ngx_http_metacloud_media_claim(ngx_uint_t limit, u_char *ids)
{
    ngx_http_metacloud_media_claim_t   *cl;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    cl = ngx_calloc(sizeof(ngx_http_metacloud_media_claim_t), w->log);
    if (cl == NULL) {
        ngx_free(ids);
        return;
    }

    ngx_sprintf(cl->nlimit, "%ui%Z", limit);

    cl->ids = ids;
    cl->limit = limit;
    cl->values[0] = (const char *) ids;
    cl->values[1] = (const char *) cl->nlimit;
    cl->values[2] = (const char *) w->lease;
    cl->values[3] = (const char *) w->retries;

    cl->query.stmt = w->conf->claim;
    cl->query.values = cl->values;
    cl->query.handler = ngx_http_metacloud_media_claimed;
    cl->query.data = cl;
    cl->query.log = w->log;

    /* the slots are taken now: two claims at once never overfill */
    w->busy += limit;

    if (ngx_http_metacloud_pg_run(w->pg, &cl->query) != NGX_OK) {
        w->busy -= limit;
        ngx_free(ids);
        ngx_free(cl);
    }
}


static void
ngx_http_metacloud_media_claimed(ngx_http_metacloud_pg_query_t *q)
{
    int                                 row, rows;
    ngx_http_metacloud_media_job_t     *job;
    ngx_http_metacloud_media_claim_t   *cl = q->data;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    rows = 0;

    if (q->rc == NGX_HTTP_METACLOUD_PG_OK && w != NULL) {
        rows = PQntuples(q->result);

        if (PQnfields(q->result) != MC_COL_N) {
            rows = 0;
        }
    }

    if (w == NULL) {
        goto done;
    }

    /* the slots this claim did not fill are free again */
    w->busy -= cl->limit - ngx_min((ngx_uint_t) rows, cl->limit);

    for (row = 0; row < rows && (ngx_uint_t) row < cl->limit; row++) {

        job = ngx_http_metacloud_media_job(q->result, row);

        if (job == NULL) {
            /* its lease expires, the row is claimed again */
            w->busy--;
            continue;
        }

#if (NGX_THREADS)
        if (ngx_thread_task_post(w->conf->thread_pool, &job->task) != NGX_OK)
        {
            ngx_http_metacloud_media_job_free(job);
            w->busy--;
            continue;
        }
#endif

        w->running++;
        ngx_http_metacloud_metrics_media_in_flight(1);
        ngx_http_metacloud_media_hold();
    }

done:

    ngx_free(cl->ids);
    ngx_free(cl);
}


/* a job from one claimed row: one malloc()ed block for the thread */

static ngx_http_metacloud_media_job_t *
ngx_http_metacloud_media_job(PGresult *res, int row)
{
    int                                 col;
    u_char                             *p;
    size_t                              len;
    const char                         *s[MC_COL_N];
    ngx_http_metacloud_media_job_t     *job;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    len = sizeof(ngx_http_metacloud_media_job_t);

    for (col = 0; col < MC_COL_N; col++) {
        s[col] = PQgetisnull(res, row, col) ? NULL
                                            : PQgetvalue(res, row, col);
        len += s[col] ? ngx_strlen(s[col]) + 1 : 0;
    }

    if (s[MC_COL_ID] == NULL || s[MC_COL_ATTEMPT] == NULL) {
        return NULL;
    }

    job = ngx_calloc(len, w->log);
    if (job == NULL) {
        return NULL;
    }

    p = (u_char *) &job[1];

    for (col = 0; col < MC_COL_N; col++) {
        if (s[col] == NULL) {
            continue;
        }

        len = ngx_strlen(s[col]) + 1;
        ngx_memcpy(p, s[col], len);
        s[col] = (const char *) p;
        p += len;
    }

    job->id = (char *) s[MC_COL_ID];
    job->attempt = (char *) s[MC_COL_ATTEMPT];

    job->fetch.conf = &w->conf->fetch;
    job->fetch.media_id = s[MC_COL_MEDIA_ID];
    job->fetch.org = s[MC_COL_ORG];
    job->fetch.mime = s[MC_COL_MIME];
    job->fetch.sha256 = s[MC_COL_SHA256];
    job->fetch.url = s[MC_COL_URL];
    job->fetch.day = s[MC_COL_DAY];
    job->fetch.token = s[MC_COL_TOKEN];

#if (NGX_THREADS)
    job->task.ctx = job;
    job->task.handler = ngx_http_metacloud_media_thread;
    job->task.event.handler = ngx_http_metacloud_media_fetched;
    job->task.event.data = job;
    job->task.event.log = w->log;
#endif

    job->retry.handler = ngx_http_metacloud_media_mark_retry;
    job->retry.data = job;
    job->retry.log = w->log;
    job->retry.cancelable = 1;

    return job;
}


#if (NGX_THREADS)

/* in a thread: nothing of nginx but the task */

static void
ngx_http_metacloud_media_thread(void *data, ngx_log_t *log)
{
    ngx_http_metacloud_media_job_t  *job = data;

    ngx_http_metacloud_fetch_run(&job->fetch);
}

#endif


/* back on the event loop: log a failure once, report, record */

static void
ngx_http_metacloud_media_fetched(ngx_event_t *ev)
{
    ngx_uint_t                          level;
    ngx_http_metacloud_fetch_t         *f;
    ngx_http_metacloud_media_job_t     *job = ev->data;
    ngx_http_metacloud_media_result_t   res;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    f = &job->fetch;

    if (w == NULL) {
        ngx_http_metacloud_media_job_free(job);
        return;
    }

    w->running--;
    ngx_http_metacloud_metrics_media_in_flight(-1);

    if (f->rc != NGX_HTTP_METACLOUD_FETCH_DONE) {
        /*
         * Meta's side or the network: a warning; a file gone: a notice;
         * our own storage: an error.  The text never holds the token.
         */
        level = f->rc == NGX_HTTP_METACLOUD_FETCH_EXPIRED ? NGX_LOG_NOTICE
                : (ngx_strncmp(f->error, "store:", 6) == 0
                   || ngx_strncmp(f->error, "s3:", 3) == 0) ? NGX_LOG_ERR
                : NGX_LOG_WARN;

        ngx_log_error(level, w->log, 0,
                      "metacloud: media %s (row %s, attempt %s) %s: %s",
                      f->media_id ? f->media_id : "-", job->id, job->attempt,
                      ngx_http_metacloud_fetch_rc_str(f->rc), f->error);

    } else {
        ngx_log_debug4(NGX_LOG_DEBUG_HTTP, w->log, 0,
                       "metacloud: media %s stored as %s, %L bytes, %M ms",
                       f->media_id, f->key, f->size, (ngx_msec_t) f->duration);
    }

    if (ngx_http_metacloud_media_result_handler) {
        res.rc = f->rc;
        res.bytes = f->size;
        res.duration = (ngx_msec_t) f->duration;
        res.lookups = f->lookups;
        ngx_http_metacloud_media_result_handler(&res);
    }

    ngx_http_metacloud_media_mark(job);
}


static void
ngx_http_metacloud_media_mark(ngx_http_metacloud_media_job_t *job)
{
    ngx_http_metacloud_fetch_t         *f;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    f = &job->fetch;

    ngx_memzero(&job->query, sizeof(ngx_http_metacloud_pg_query_t));

    job->values[0] = job->id;
    job->values[1] = job->attempt;

    if (f->rc == NGX_HTTP_METACLOUD_FETCH_DONE) {
        ngx_sprintf(job->size, "%L%Z", f->size);

        job->values[2] = f->conf->path ? "local" : "s3";
        job->values[3] = f->key;
        job->values[4] = f->conf->path ? NULL : f->conf->s3_bucket;
        job->values[5] = f->storage_url;
        job->values[6] = (const char *) job->size;
        job->values[7] = f->mime_found;
        job->query.stmt = w->conf->done;

    } else {
        /* a permanent failure is the last attempt */
        if (f->rc == NGX_HTTP_METACLOUD_FETCH_FAILED) {
            ngx_cpystrn(job->max, (u_char *) job->attempt, sizeof(job->max));

        } else {
            ngx_cpystrn(job->max, w->retries, sizeof(job->max));
        }

        job->values[2] = f->error;
        job->values[3] = f->rc == NGX_HTTP_METACLOUD_FETCH_EXPIRED ? "t" : "f";
        job->values[4] = (const char *) job->max;
        job->values[5] = NGX_HTTP_METACLOUD_MEDIA_BACKOFF;
        job->query.stmt = w->conf->fail;
    }

    job->query.values = job->values;
    job->query.handler = ngx_http_metacloud_media_marked;
    job->query.data = job;
    job->query.log = w->log;

    if (ngx_http_metacloud_pg_run(w->pg, &job->query) != NGX_OK) {
        ngx_add_timer(&job->retry, NGX_HTTP_METACLOUD_MEDIA_RETRY);
        return;
    }

    w->marking++;
    ngx_http_metacloud_media_hold();
}


static void
ngx_http_metacloud_media_mark_retry(ngx_event_t *ev)
{
    ngx_http_metacloud_media_job_t  *job = ev->data;

    if (ngx_http_metacloud_media_w == NULL) {
        return;
    }

    ngx_http_metacloud_media_mark(job);
}


static void
ngx_http_metacloud_media_marked(ngx_http_metacloud_pg_query_t *q)
{
    ngx_http_metacloud_media_job_t     *job = q->data;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    if (w == NULL) {
        ngx_http_metacloud_media_job_free(job);
        return;
    }

    w->marking--;

    /*
     * The database did not take the result (logged by the pool): try
     * again, unless the worker is leaving (the lease then expires and the
     * row is downloaded again).  The retry timer is cancelable: it does
     * not hold a worker that shuts down.
     */
    if (q->rc != NGX_HTTP_METACLOUD_PG_OK) {
        if (!ngx_exiting && !ngx_terminate) {
            ngx_add_timer(&job->retry, NGX_HTTP_METACLOUD_MEDIA_RETRY);
            return;
        }

        ngx_log_error(NGX_LOG_WARN, w->log, 0,
                      "metacloud: media %s: the result of attempt %s is "
                      "lost, the row will be claimed again",
                      job->fetch.media_id ? job->fetch.media_id : "-",
                      job->attempt);
    }

    w->busy--;

    ngx_http_metacloud_media_job_free(job);

    /* a free slot: take whatever is due without waiting for the sweep */
    if (!ngx_exiting && w->busy < w->conf->concurrency
        && !w->sweep.posted)
    {
        if (w->sweep.timer_set) {
            ngx_del_timer(&w->sweep);
        }

        ngx_post_event(&w->sweep, &ngx_posted_events);
    }
}


static void
ngx_http_metacloud_media_job_free(ngx_http_metacloud_media_job_t *job)
{
    if (job->retry.timer_set) {
        ngx_del_timer(&job->retry);
    }

    ngx_http_metacloud_fetch_free(&job->fetch);
    ngx_free(job);
}


static void
ngx_http_metacloud_media_sweep(ngx_event_t *ev)
{
    ngx_http_metacloud_media_worker_t  *w = ev->data;

    if (ngx_exiting || ngx_terminate || ngx_http_metacloud_media_w != w) {
        return;
    }

    if (w->busy < w->conf->concurrency) {
        ngx_http_metacloud_media_claim(w->conf->concurrency - w->busy, NULL);
    }

    /*
     * Removals are claimed once a sweep interval, not after every
     * download, unless the last batch was full (more may be due).
     */
    if (!w->cleaning
        && (ngx_msec_int_t) (ngx_current_msec - w->cleanup_next) >= 0)
    {
        w->cleanup_next = ngx_current_msec + NGX_HTTP_METACLOUD_MEDIA_SWEEP;
        ngx_http_metacloud_media_cleanup_claim(w);
    }

    if (!ev->timer_set) {
        ngx_add_timer(ev, NGX_HTTP_METACLOUD_MEDIA_SWEEP);
    }
}


/*
 * A worker that shuts down gracefully waits for its non-cancelable
 * timers: this one is kept while a job is in a thread or its result is
 * being recorded.
 */

static void
ngx_http_metacloud_media_hold(void)
{
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    if (!w->guard.timer_set) {
        ngx_add_timer(&w->guard, NGX_HTTP_METACLOUD_MEDIA_SWEEP);
    }
}


static void
ngx_http_metacloud_media_guard(ngx_event_t *ev)
{
    ngx_http_metacloud_media_worker_t  *w = ev->data;

    if (ngx_http_metacloud_media_w == w && (w->running || w->marking)) {
        ngx_add_timer(ev, NGX_HTTP_METACLOUD_MEDIA_SWEEP);
    }
}


/* file removals (meta_cloud_media_deletions) --------------------------- */

static void
ngx_http_metacloud_media_cleanup_claim(ngx_http_metacloud_media_worker_t *w)
{
    ngx_memzero(&w->cleanup, sizeof(ngx_http_metacloud_pg_query_t));

    w->cleanup_values[0] = (const char *) w->cleanup_limit;
    w->cleanup_values[1] = (const char *) w->cleanup_lease;

    w->cleanup.stmt = w->conf->cleanup_claim;
    w->cleanup.values = w->cleanup_values;
    w->cleanup.handler = ngx_http_metacloud_media_cleanup_claimed;
    w->cleanup.data = w;
    w->cleanup.log = w->log;

    if (ngx_http_metacloud_pg_run(w->pg, &w->cleanup) == NGX_OK) {
        w->cleaning = 1;
    }
}


/* the claimed rows: one malloc()ed batch for the thread */

static void
ngx_http_metacloud_media_cleanup_claimed(ngx_http_metacloud_pg_query_t *q)
{
    int                                  row, rows, col;
    u_char                              *p;
    size_t                               len;
    const char                          *v;
    ngx_http_metacloud_media_batch_t    *b;
    ngx_http_metacloud_media_worker_t   *w = q->data;
    ngx_http_metacloud_media_removal_t  *r;

    if (ngx_http_metacloud_media_w != w) {
        return;
    }

    w->cleaning = 0;

    if (q->rc != NGX_HTTP_METACLOUD_PG_OK
        || PQnfields(q->result) != MC_DEL_N
        || (rows = PQntuples(q->result)) == 0)
    {
        return;
    }

    /* the batch, its removals, then their strings */
    len = sizeof(ngx_http_metacloud_media_batch_t)
          + (size_t) (rows - 1) * sizeof(ngx_http_metacloud_media_removal_t);

    for (row = 0; row < rows; row++) {
        for (col = 0; col < MC_DEL_N; col++) {
            len += ngx_strlen(PQgetvalue(q->result, row, col)) + 1;
        }
    }

    /* the leases expire if this fails: the rows are claimed again */
    b = ngx_calloc(len, w->log);
    if (b == NULL) {
        return;
    }

    b->n = rows;
    b->conf = &w->conf->fetch;
    p = (u_char *) b + sizeof(ngx_http_metacloud_media_batch_t)
        + (size_t) (rows - 1) * sizeof(ngx_http_metacloud_media_removal_t);

    for (row = 0; row < rows; row++) {
        r = &b->removal[row];

        for (col = 0; col < MC_DEL_N; col++) {
            if (PQgetisnull(q->result, row, col)) {
                continue;
            }

            v = PQgetvalue(q->result, row, col);
            r->s[col] = (const char *) p;
            p = ngx_cpymem(p, v, ngx_strlen(v) + 1);
        }

        if (r->s[MC_DEL_ID] == NULL || r->s[MC_DEL_ATTEMPT] == NULL
            || r->s[MC_DEL_PROVIDER] == NULL || r->s[MC_DEL_KEY] == NULL)
        {
            ngx_free(b);
            return;
        }
    }

    b->retry.handler = ngx_http_metacloud_media_cleanup_record;
    b->retry.data = b;
    b->retry.log = w->log;
    b->retry.cancelable = 1;

#if (NGX_THREADS)
    b->task.ctx = b;
    b->task.handler = ngx_http_metacloud_media_cleanup_thread;
    b->task.event.handler = ngx_http_metacloud_media_cleanup_removed;
    b->task.event.data = b;
    b->task.event.log = w->log;

    if (ngx_thread_task_post(w->conf->thread_pool, &b->task) != NGX_OK) {
        ngx_free(b);
        return;
    }
#endif

    w->cleaning = 1;
    w->running++;
    ngx_http_metacloud_media_hold();
}


#if (NGX_THREADS)

static void
ngx_http_metacloud_media_cleanup_thread(void *data, ngx_log_t *log)
{
    ngx_uint_t                           i;
    ngx_http_metacloud_media_batch_t    *b = data;
    ngx_http_metacloud_media_removal_t  *r;

    for (i = 0; i < b->n; i++) {
        r = &b->removal[i];
        r->rc = ngx_http_metacloud_fetch_remove(b->conf,
                    r->s[MC_DEL_PROVIDER], r->s[MC_DEL_BUCKET],
                    r->s[MC_DEL_KEY], r->error, sizeof(r->error));
    }
}

#endif


/* back on the event loop: log the failures, the results as text[] */

static void
ngx_http_metacloud_media_cleanup_removed(ngx_event_t *ev)
{
    u_char                              *p;
    size_t                               len;
    ngx_uint_t                           i;
    ngx_http_metacloud_media_batch_t    *b = ev->data;
    ngx_http_metacloud_media_worker_t   *w = ngx_http_metacloud_media_w;
    ngx_http_metacloud_media_removal_t  *r;

    if (w == NULL) {
        ngx_free(b);
        return;
    }

    w->running--;

    /* each element quoted with every byte escaped at worst */
    len = 3 * sizeof("{}");

    for (i = 0; i < b->n; i++) {
        r = &b->removal[i];
        len += 2 * (ngx_strlen(r->s[MC_DEL_ID])
                    + ngx_strlen(r->s[MC_DEL_ATTEMPT])
                    + ngx_strlen(r->error))
               + 3 * sizeof("\"\",");

        if (r->rc != 0) {
            ngx_log_error(NGX_LOG_ERR, w->log, 0,
                          "metacloud: media %s: removing %s \"%s\" "
                          "(attempt %s) failed: %s",
                          r->s[MC_DEL_MEDIA_ID] ? r->s[MC_DEL_MEDIA_ID] : "-",
                          r->s[MC_DEL_PROVIDER], r->s[MC_DEL_KEY],
                          r->s[MC_DEL_ATTEMPT], r->error);
        }
    }

    b->arrays = ngx_alloc(len, w->log);
    if (b->arrays == NULL) {
        /* the leases expire: the files are removed again */
        ngx_free(b);
        w->cleaning = 0;
        return;
    }

    p = b->arrays;

    b->values[0] = (const char *) p;

    for (i = 0; i < b->n; i++) {
        p = ngx_http_metacloud_media_array(p, b->removal[i].s[MC_DEL_ID],
                                           i == 0);
    }

    p = ngx_cpymem(p, "}", sizeof("}"));
    b->values[1] = (const char *) p;

    for (i = 0; i < b->n; i++) {
        p = ngx_http_metacloud_media_array(p, b->removal[i].s[MC_DEL_ATTEMPT],
                                           i == 0);
    }

    p = ngx_cpymem(p, "}", sizeof("}"));
    b->values[2] = (const char *) p;

    for (i = 0; i < b->n; i++) {
        r = &b->removal[i];
        p = ngx_http_metacloud_media_array(p, r->rc == 0 ? NULL : r->error,
                                           i == 0);
    }

    (void) ngx_cpymem(p, "}", sizeof("}"));
    b->values[3] = NGX_HTTP_METACLOUD_MEDIA_CLEANUP_BACKOFF;

    ngx_http_metacloud_media_cleanup_record(&b->retry);
}


/* one element of an array literal: "{" first, NULL unquoted */

static u_char *
ngx_http_metacloud_media_array(u_char *p, const char *s, ngx_uint_t first)
{
    *p++ = first ? '{' : ',';

    if (s == NULL) {
        return ngx_cpymem(p, "NULL", 4);
    }

    *p++ = '"';

    for ( /* void */ ; *s; s++) {
        if (*s == '"' || *s == '\\') {
            *p++ = '\\';
        }

        *p++ = *s;
    }

    *p++ = '"';

    return p;
}


static void
ngx_http_metacloud_media_cleanup_record(ngx_event_t *ev)
{
    ngx_http_metacloud_media_batch_t   *b = ev->data;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    if (w == NULL) {
        return;
    }

    ngx_memzero(&b->query, sizeof(ngx_http_metacloud_pg_query_t));

    b->query.stmt = w->conf->cleanup_done;
    b->query.values = b->values;
    b->query.handler = ngx_http_metacloud_media_cleanup_recorded;
    b->query.data = b;
    b->query.log = w->log;

    if (ngx_http_metacloud_pg_run(w->pg, &b->query) != NGX_OK) {
        ngx_add_timer(&b->retry, NGX_HTTP_METACLOUD_MEDIA_RETRY);
        return;
    }

    w->marking++;
    ngx_http_metacloud_media_hold();
}


static void
ngx_http_metacloud_media_cleanup_recorded(ngx_http_metacloud_pg_query_t *q)
{
    ngx_http_metacloud_media_batch_t   *b = q->data;
    ngx_http_metacloud_media_worker_t  *w = ngx_http_metacloud_media_w;

    if (w != NULL) {
        w->marking--;

        /* as a download's result: again unless the worker is leaving */
        if (q->rc != NGX_HTTP_METACLOUD_PG_OK && !ngx_exiting
            && !ngx_terminate)
        {
            ngx_add_timer(&b->retry, NGX_HTTP_METACLOUD_MEDIA_RETRY);
            return;
        }

        w->cleaning = 0;

        if (b->n == w->conf->concurrency && !ngx_exiting
            && !w->sweep.posted)
        {
            w->cleanup_next = ngx_current_msec;

            if (w->sweep.timer_set) {
                ngx_del_timer(&w->sweep);
            }

            ngx_post_event(&w->sweep, &ngx_posted_events);
        }
    }

    ngx_free(b->arrays);
    ngx_free(b);
}
