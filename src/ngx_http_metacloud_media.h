
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Media downloads, the event loop's side: each worker claims media jobs
 * from PostgreSQL (metacloud_media_claim(): FOR UPDATE SKIP LOCKED and a
 * lease), hands each to an nginx thread pool (ngx_http_metacloud_fetch.c
 * does the download and the store there), and records the result
 * (metacloud_media_done() / _fail()) when the thread is done.
 */


#ifndef _NGX_HTTP_METACLOUD_MEDIA_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_MEDIA_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_metacloud_pg.h"
#include "ngx_http_metacloud_fetch.h"


/* the directives' values: part of the module's main configuration */

typedef struct {
    ngx_flag_t                        enable;
    ngx_str_t                         thread_pool_name;
    void                             *thread_pool;  /* ngx_thread_pool_t */
    ngx_uint_t                        concurrency;
    ngx_str_t                         graph_url;
    ngx_str_t                         path;
    ngx_str_t                         url_prefix;
    size_t                            max_size;
    ngx_msec_t                        timeout;
    ngx_uint_t                        retries;
    ngx_uint_t                        s3;           /* metacloud_media_s3 */

    ngx_http_metacloud_fetch_conf_t   fetch;        /* for the threads */

    ngx_http_metacloud_pg_stmt_t     *claim;
    ngx_http_metacloud_pg_stmt_t     *done;
    ngx_http_metacloud_pg_stmt_t     *fail;
    ngx_http_metacloud_pg_stmt_t     *cleanup_claim;
    ngx_http_metacloud_pg_stmt_t     *cleanup_done;
} ngx_http_metacloud_media_conf_t;


/* what one attempt gave, for whoever counts (metrics) */

typedef struct {
    ngx_http_metacloud_fetch_rc_e     rc;
    int64_t                           bytes;
    ngx_msec_t                        duration;     /* in the thread */
    ngx_uint_t                        lookups;      /* Graph API calls */
} ngx_http_metacloud_media_result_t;

/* called on the event loop after every attempt when set (NULL: none) */
extern void (*ngx_http_metacloud_media_result_handler)(
    ngx_http_metacloud_media_result_t *res);


/* configuration: the module's main conf calls these */
char *ngx_http_metacloud_media_s3(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
void ngx_http_metacloud_media_create_conf(ngx_http_metacloud_media_conf_t *mc);
char *ngx_http_metacloud_media_init_conf(ngx_conf_t *cf,
    ngx_http_metacloud_media_conf_t *mc, ngx_http_metacloud_pg_conf_t *pgcf);

/* worker hooks, after the pool's */
ngx_int_t ngx_http_metacloud_media_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_media_conf_t *mc, ngx_http_metacloud_pg_t *pg);
void ngx_http_metacloud_media_exit_worker(void);

/*
 * Media rows an ingest just made PENDING (an array of
 * ngx_http_metacloud_media_t): claimed at once when this worker has room,
 * else left to the sweep.
 */
void ngx_http_metacloud_media_queue(ngx_array_t *media);


#endif /* _NGX_HTTP_METACLOUD_MEDIA_H_INCLUDED_ */
