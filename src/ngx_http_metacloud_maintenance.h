
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * metacloud_maintenance: a timer in one worker that calls
 * metacloud_maintain() (sql/006_metacloud_operations.sql) through the
 * pool: failed events retried, late statuses applied, and, when ages are
 * configured, one purge batch a round (rounds follow each other quickly
 * while a purge finds work).
 */


#ifndef _NGX_HTTP_METACLOUD_MAINTENANCE_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_MAINTENANCE_H_INCLUDED_


#include "ngx_http_metacloud_pg.h"


/* the schema version metacloud_maintain() comes with */
#define NGX_HTTP_METACLOUD_MAINT_SCHEMA  6


typedef struct {
    ngx_msec_t                     interval;  /* 0: off */
    ngx_str_t                      ages[3];   /* raw, events, expire: SQL
                                                 intervals, NUL-terminated;
                                                 empty: not purged */
    ngx_http_metacloud_pg_stmt_t  *stmt;
} ngx_http_metacloud_maint_conf_t;


char *ngx_http_metacloud_maintenance(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
char *ngx_http_metacloud_maint_init_conf(ngx_conf_t *cf,
    ngx_http_metacloud_maint_conf_t *mtcf, ngx_http_metacloud_pg_conf_t *pgcf);
ngx_int_t ngx_http_metacloud_maint_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_maint_conf_t *mtcf);
void ngx_http_metacloud_maint_exit_worker(void);


#endif /* _NGX_HTTP_METACLOUD_MAINTENANCE_H_INCLUDED_ */
