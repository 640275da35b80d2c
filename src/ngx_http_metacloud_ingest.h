
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * The ingest statement: metacloud_ingest(raw bytea, events jsonb, info
 * jsonb) stores one delivery in one transaction (docs/SQL.md).  Its
 * parameters are built from a normalised body, its jsonb result is read
 * into a summary: the counts, the answer to Meta, the organisations of the
 * delivery (metacloud_organizations(), same round trip), and the media
 * rows it made pending, which the media work takes from here.
 */


#ifndef _NGX_HTTP_METACLOUD_INGEST_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_INGEST_H_INCLUDED_


#include "ngx_http_metacloud.h"


/*
 * a delivery of more events goes alone, never in a group (sql/011): its
 * own work outweighs what a group saves (a commit, a session), and small
 * deliveries would wait for its time (a batch of 50 statuses: fewer
 * statuses/s and a higher p99 in groups, in make bench)
 */
#define NGX_HTTP_METACLOUD_INGEST_GROUP_EVENTS  10


typedef struct {
    ngx_str_t                       id;         /* meta_cloud_media.id */
    ngx_str_t                       media_id;   /* Meta's media id */
} ngx_http_metacloud_media_t;


typedef struct {
    ngx_str_t                       raw_id;
    ngx_str_t                       organizations; /* "a,b", or empty;
                                                      see _organizations() */
    int64_t                         inserted;
    int64_t                         duplicate;
    int64_t                         failed;
    int64_t                         unrouted;
    int64_t                         pending;
    ngx_array_t                    *media;      /* of ..._media_t, or NULL */
    ngx_str_t                       reply;      /* the JSON answer to Meta */
} ngx_http_metacloud_summary_t;


typedef struct {
    ngx_http_metacloud_pg_query_t   query;
    const char                     *values[3];
    int                             lengths[3];
    int                             formats[3];
    char                           *info;       /* malloc()ed by jansson */
} ngx_http_metacloud_ingest_t;


ngx_http_metacloud_pg_stmt_t *ngx_http_metacloud_ingest_register(
    ngx_conf_t *cf);
ngx_int_t ngx_http_metacloud_ingest_register_group(ngx_conf_t *cf,
    ngx_http_metacloud_pg_stmt_t *stmt);
void ngx_http_metacloud_ingest_organizations(
    ngx_http_metacloud_pg_stmt_t *stmt);
ngx_int_t ngx_http_metacloud_ingest_init(ngx_http_metacloud_ingest_t *in,
    ngx_http_metacloud_pg_stmt_t *stmt, ngx_str_t *body,
    mc_normalized_t *norm, ngx_uint_t signature_checked);
ngx_int_t ngx_http_metacloud_ingest_summary(PGresult *res,
    mc_normalized_t *norm, ngx_pool_t *pool, ngx_log_t *log,
    ngx_http_metacloud_summary_t *s);
void ngx_http_metacloud_ingest_free(ngx_http_metacloud_ingest_t *in);


#endif /* _NGX_HTTP_METACLOUD_INGEST_H_INCLUDED_ */
