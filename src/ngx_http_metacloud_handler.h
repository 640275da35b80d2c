
/*
 * Copyright (C) ngx_http_metacloud_module authors
 */


#ifndef _NGX_HTTP_METACLOUD_HANDLER_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_HANDLER_H_INCLUDED_


#include "ngx_http_metacloud.h"


ngx_int_t ngx_http_metacloud_handler(ngx_http_request_t *r);
ngx_int_t ngx_http_metacloud_add_variables(ngx_conf_t *cf);


#endif /* _NGX_HTTP_METACLOUD_HANDLER_H_INCLUDED_ */
