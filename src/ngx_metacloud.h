
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * The nginx glue of the module: configuration, the PostgreSQL pool that
 * runs on the event loop, and body assembly.  The pure core is in core/.
 */


#ifndef _NGX_METACLOUD_H_INCLUDED_
#define _NGX_METACLOUD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <libpq-fe.h>

#include "mc_core.h"


typedef struct ngx_metacloud_pg_pool_s   ngx_metacloud_pg_pool_t;
typedef struct ngx_metacloud_pg_conn_s   ngx_metacloud_pg_conn_t;
typedef struct ngx_metacloud_pg_query_s  ngx_metacloud_pg_query_t;


typedef enum {
    NGX_METACLOUD_PG_OK = 0,        /* a result row arrived: committed */
    NGX_METACLOUD_PG_ERROR,         /* the statement failed */
    NGX_METACLOUD_PG_UNAVAILABLE    /* no connection, timeout, old schema */
} ngx_metacloud_pg_rc_e;


typedef void (*ngx_metacloud_pg_handler_pt)(ngx_metacloud_pg_query_t *q,
    ngx_metacloud_pg_rc_e rc, PGresult *res);


struct ngx_metacloud_pg_query_s {
    ngx_queue_t                   queue;       /* in pool->waiting */
    ngx_event_t                   timer;       /* waiting for a connection */

    ngx_metacloud_pg_pool_t      *pool;
    ngx_metacloud_pg_conn_t      *conn;

    ngx_metacloud_pg_handler_pt   handler;
    void                         *data;
    ngx_log_t                    *log;
    ngx_msec_t                    start;

    /* the parameters of the prepared ingest statement */
    const char                   *values[3];
    int                           lengths[3];
    int                           formats[3];

    unsigned                      waiting:1;
};


typedef struct {
    ngx_str_t                     conninfo;    /* NUL-terminated */
    ngx_uint_t                    pool_size;
    ngx_uint_t                    queue_size;
    ngx_msec_t                    timeout;
    ngx_flag_t                    used;        /* a metacloud_webhook exists */

    ngx_metacloud_pg_pool_t      *pool;        /* this worker's */
} ngx_http_metacloud_main_conf_t;


typedef struct {
    ngx_flag_t                    enable;
    ngx_str_t                     verify_token;
    ngx_array_t                  *secrets;     /* of mc_str_t */
    ngx_flag_t                    secret_off;
} ngx_http_metacloud_loc_conf_t;


extern ngx_module_t  ngx_http_metacloud_module;


ngx_int_t ngx_metacloud_pg_check_conninfo(ngx_conf_t *cf, ngx_str_t *ci);
ngx_metacloud_pg_pool_t *ngx_metacloud_pg_pool_create(ngx_cycle_t *cycle,
    ngx_http_metacloud_main_conf_t *mcf);
void ngx_metacloud_pg_pool_destroy(ngx_metacloud_pg_pool_t *pool);
ngx_int_t ngx_metacloud_pg_ingest(ngx_metacloud_pg_pool_t *pool,
    ngx_metacloud_pg_query_t *q);
void ngx_metacloud_pg_query_cancel(ngx_metacloud_pg_query_t *q);

ngx_int_t ngx_metacloud_read_body(ngx_http_request_t *r, ngx_str_t *body);


#endif /* _NGX_METACLOUD_H_INCLUDED_ */
