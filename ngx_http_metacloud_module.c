
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Receives WhatsApp Cloud API (Meta) webhooks and stores them in
 * PostgreSQL.  This file is the module: its directives, configuration and
 * worker hooks.  The request flow is src/ngx_http_metacloud_handler.c, the
 * PostgreSQL pool src/ngx_http_metacloud_pg.c, the pure core src/core/.
 */


#include "ngx_http_metacloud.h"
#include "ngx_http_metacloud_handler.h"
#include "ngx_http_metacloud_ingest.h"


#define NGX_HTTP_METACLOUD_MIN_BODY         (3 * 1024 * 1024)

/*
 * Normalising costs about 0.1-0.25 ms per kB (a batch of text messages, on
 * the 2-core development machine): 64 kB stalls the event loop for some
 * 5-15 ms, while ordinary webhooks (1-10 kB) stay inline and never pay the
 * hand-off to a thread
 */
#define NGX_HTTP_METACLOUD_THREAD_MIN_SIZE  (64 * 1024)


static ngx_int_t ngx_http_metacloud_preconfiguration(ngx_conf_t *cf);
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
static char *ngx_http_metacloud_thread_pool(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_metacloud_check_bounds(ngx_conf_t *cf, void *post,
    void *data);
static char *ngx_http_metacloud_check_token(ngx_conf_t *cf, void *post,
    void *data);
static void *ngx_http_metacloud_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_metacloud_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_metacloud_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static ngx_int_t ngx_http_metacloud_init_module(ngx_cycle_t *cycle);
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

static ngx_conf_num_bounds_t  ngx_http_metacloud_group_bounds = {
    ngx_http_metacloud_check_bounds, 1, 64
};

static ngx_conf_num_bounds_t  ngx_http_metacloud_media_concurrency_bounds = {
    ngx_http_metacloud_check_bounds, 1, 1024
};

static ngx_conf_num_bounds_t  ngx_http_metacloud_media_retries_bounds = {
    ngx_http_metacloud_check_bounds, 1, 100
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
      offsetof(ngx_http_metacloud_main_conf_t, pg.size),
      &ngx_http_metacloud_pool_bounds },

    { ngx_string("metacloud_db_queue"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, pg.queue_size),
      &ngx_http_metacloud_queue_bounds },

    { ngx_string("metacloud_db_group"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, pg.group),
      &ngx_http_metacloud_group_bounds },

    { ngx_string("metacloud_db_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, pg.timeout),
      NULL },

    { ngx_string("metacloud_maintenance"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_metacloud_maintenance,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metacloud_db_idle_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, pg.idle_timeout),
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

    { ngx_string("metacloud_media"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.enable),
      NULL },

    { ngx_string("metacloud_media_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.thread_pool_name),
      NULL },

    { ngx_string("metacloud_media_concurrency"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.concurrency),
      &ngx_http_metacloud_media_concurrency_bounds },

    { ngx_string("metacloud_graph_url"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.graph_url),
      NULL },

    { ngx_string("metacloud_media_path"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.path),
      NULL },

    { ngx_string("metacloud_media_s3"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_metacloud_media_s3,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media),
      NULL },

    { ngx_string("metacloud_media_max_size"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.max_size),
      NULL },

    { ngx_string("metacloud_media_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.timeout),
      NULL },

    { ngx_string("metacloud_media_retries"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.retries),
      &ngx_http_metacloud_media_retries_bounds },

    { ngx_string("metacloud_media_url_prefix"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_metacloud_main_conf_t, media.url_prefix),
      NULL },

    { ngx_string("metacloud_thread_pool"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_metacloud_thread_pool,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("metacloud_thread_min_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_metacloud_loc_conf_t, thread_min_size),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_metacloud_module_ctx = {
    ngx_http_metacloud_preconfiguration,   /* preconfiguration */
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
    ngx_http_metacloud_init_module,        /* init module */
    ngx_http_metacloud_init_process,       /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_metacloud_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_metacloud_preconfiguration(ngx_conf_t *cf)
{
    return ngx_http_metacloud_add_variables(cf);
}


static char *
ngx_http_metacloud_db(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_metacloud_main_conf_t *mcf = conf;

    ngx_str_t  *value, *ci;

    ci = &mcf->pg.conninfo;

    if (ci->data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    /* the conninfo is handed to libpq as a C string */
    ci->len = value[1].len;
    ci->data = ngx_pnalloc(cf->pool, value[1].len + 1);
    if (ci->data == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_cpystrn(ci->data, value[1].data, value[1].len + 1);

    if (ngx_strlen(ci->data) != value[1].len) {
        return "contains a NUL byte";
    }

    if (ngx_http_metacloud_pg_check_conninfo(cf, ci) != NGX_OK) {
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

    if (mcf->ingest == NULL) {
        mcf->ingest = ngx_http_metacloud_ingest_register(cf);
        if (mcf->ingest == NULL) {
            return NGX_CONF_ERROR;
        }
    }

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


/*
 * Large bodies are normalised in this thread pool; nginx -t refuses a pool
 * that no "thread_pool" directive defines ("default" excepted, as for aio).
 */

static char *
ngx_http_metacloud_thread_pool(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
#if (NGX_THREADS)
    ngx_http_metacloud_loc_conf_t *mlcf = conf;

    ngx_str_t  *value;

    if (mlcf->thread_pool != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        mlcf->thread_pool = NULL;
        return NGX_CONF_OK;
    }

    mlcf->thread_pool = ngx_thread_pool_add(cf, &value[1]);
    if (mlcf->thread_pool == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;

#else

    return "needs nginx built with threads (--with-threads)";

#endif
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
     *     mcf->pg.conninfo = { 0, NULL };
     *     mcf->pg.pg = NULL;
     *     mcf->ingest = NULL;
     */

    mcf->pg.size = NGX_CONF_UNSET_UINT;
    mcf->pg.queue_size = NGX_CONF_UNSET_UINT;
    mcf->pg.group = NGX_CONF_UNSET_UINT;
    mcf->pg.timeout = NGX_CONF_UNSET_MSEC;
    mcf->pg.idle_timeout = NGX_CONF_UNSET_MSEC;
    mcf->pg.schema_version = MC_SCHEMA_VERSION;
    mcf->maint.interval = NGX_CONF_UNSET_MSEC;

    ngx_http_metacloud_media_create_conf(&mcf->media);

    if (ngx_array_init(&mcf->pg.stmts, cf->pool, 4,
                       sizeof(ngx_http_metacloud_pg_stmt_t *))
        != NGX_OK)
    {
        return NULL;
    }

    return mcf;
}


static char *
ngx_http_metacloud_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_metacloud_main_conf_t *mcf = conf;

    ngx_conf_init_uint_value(mcf->pg.size, 4);
    ngx_conf_init_uint_value(mcf->pg.queue_size, 256);
    ngx_conf_init_uint_value(mcf->pg.group, 8);

    if (mcf->ingest && mcf->pg.group > 1
        && ngx_http_metacloud_ingest_register_group(cf, mcf->ingest)
           != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }
    ngx_conf_init_msec_value(mcf->pg.timeout, 3000);

    if (mcf->pg.timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_db_timeout\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    /*
     * an idle connection holds one of the server's max_connections slots:
     * released after this, so that one worker cannot keep them all
     */

    ngx_conf_init_msec_value(mcf->pg.idle_timeout, 60000);

    if (mcf->pg.idle_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_db_idle_timeout\" must be more "
                           "than 0");
        return NGX_CONF_ERROR;
    }

    if (ngx_http_metacloud_maint_init_conf(cf, &mcf->maint, &mcf->pg)
        != NGX_CONF_OK)
    {
        return NGX_CONF_ERROR;
    }

    return ngx_http_metacloud_media_init_conf(cf, &mcf->media, &mcf->pg);
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
#if (NGX_THREADS)
    mlcf->thread_pool = NGX_CONF_UNSET_PTR;
#endif
    mlcf->thread_min_size = NGX_CONF_UNSET_SIZE;

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
#if (NGX_THREADS)
    ngx_conf_merge_ptr_value(conf->thread_pool, prev->thread_pool, NULL);
#endif
    ngx_conf_merge_size_value(conf->thread_min_size, prev->thread_min_size,
                              NGX_HTTP_METACLOUD_THREAD_MIN_SIZE);

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

    if (mcf->pg.conninfo.data == NULL) {
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


/*
 * libcurl's global state and the core's allocator hook, once, before any
 * worker or thread exists: both are process-wide and not thread-safe to
 * install.
 */

static ngx_int_t
ngx_http_metacloud_init_module(ngx_cycle_t *cycle)
{
    mc_core_init();

    if (ngx_http_metacloud_fetch_global_init() != 0) {
        ngx_log_error(NGX_LOG_EMERG, cycle->log, 0,
                      "metacloud: curl_global_init() failed");
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_metacloud_init_process(ngx_cycle_t *cycle)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_metacloud_module);

    if (mcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_metacloud_pg_init_worker(cycle, &mcf->pg) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ngx_http_metacloud_maint_init_worker(cycle, &mcf->maint) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_metacloud_media_init_worker(cycle, &mcf->media,
                                                mcf->pg.pg);
}


static void
ngx_http_metacloud_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_metacloud_main_conf_t  *mcf;

    mcf = ngx_http_cycle_get_module_main_conf(cycle,
                                              ngx_http_metacloud_module);

    if (mcf == NULL) {
        return;
    }

    ngx_http_metacloud_media_exit_worker();
    ngx_http_metacloud_maint_exit_worker();
    ngx_http_metacloud_pg_exit_worker(&mcf->pg);
}
