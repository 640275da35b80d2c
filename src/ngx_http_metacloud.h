
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * What the files of the nginx glue share: the module's configuration.
 * The pure core is in core/ and includes no nginx header.
 */


#ifndef _NGX_HTTP_METACLOUD_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "mc_core.h"
#include "ngx_http_metacloud_pg.h"
#include "ngx_http_metacloud_media.h"
#include "ngx_http_metacloud_maintenance.h"


typedef struct {
    ngx_http_metacloud_pg_conf_t      pg;
    ngx_http_metacloud_pg_stmt_t     *ingest; /* a metacloud_webhook exists */
    ngx_http_metacloud_media_conf_t   media;
    ngx_http_metacloud_maint_conf_t   maint;
} ngx_http_metacloud_main_conf_t;


typedef struct {
    ngx_flag_t                     enable;
    ngx_str_t                      verify_token;
    ngx_array_t                   *secrets;   /* of mc_str_t */
    ngx_flag_t                     secret_off;
} ngx_http_metacloud_loc_conf_t;


extern ngx_module_t  ngx_http_metacloud_module;


ngx_int_t ngx_http_metacloud_read_body(ngx_http_request_t *r,
    ngx_str_t *body);


#endif /* _NGX_HTTP_METACLOUD_H_INCLUDED_ */
