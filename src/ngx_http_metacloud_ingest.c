
/*
 * Copyright (C) ngx_http_metacloud_module authors
 */


#include "ngx_http_metacloud_ingest.h"

#include <jansson.h>


static ngx_int_t ngx_http_metacloud_ingest_media(json_t *media,
    ngx_pool_t *pool, ngx_http_metacloud_summary_t *s);
static ngx_int_t ngx_http_metacloud_ingest_orgs(const char *orgs,
    ngx_pool_t *pool, ngx_http_metacloud_summary_t *s);
static ngx_int_t ngx_http_metacloud_json_str(json_t *v, ngx_pool_t *pool,
    ngx_str_t *s);


static ngx_str_t  ngx_http_metacloud_ingest_name =
    ngx_string("metacloud_ingest_stmt");
static ngx_str_t  ngx_http_metacloud_ingest_sql =
    ngx_string("SELECT metacloud_ingest($1::bytea, $2::jsonb, $3::jsonb)");
static ngx_str_t  ngx_http_metacloud_ingest_orgs_sql =
    ngx_string("SELECT metacloud_ingest($1::bytea, $2::jsonb, $3::jsonb), "
               "metacloud_organizations($2::jsonb)");
static ngx_str_t  ngx_http_metacloud_ingest_group_name =
    ngx_string("metacloud_ingest_group_stmt");
static ngx_str_t  ngx_http_metacloud_ingest_group_sql =
    ngx_string("SELECT g.error, g.result "
               "FROM metacloud_ingest_group($1::bytea[], $2::text[], "
                                           "$3::text[]) AS g "
               "ORDER BY g.ord");
static ngx_str_t  ngx_http_metacloud_ingest_group_orgs_sql =
    ngx_string("SELECT g.error, g.result, "
                      "CASE WHEN g.error IS NULL THEN metacloud_organizations("
                          "($2::text[])[g.ord]::jsonb) END "
               "FROM metacloud_ingest_group($1::bytea[], $2::text[], "
                                           "$3::text[]) AS g "
               "ORDER BY g.ord");
static ngx_str_t  ngx_http_metacloud_ingest_ok =
    ngx_string("{\"status\":\"ok\"}");


ngx_http_metacloud_pg_stmt_t *
ngx_http_metacloud_ingest_register(ngx_conf_t *cf)
{
    return ngx_http_metacloud_pg_add_stmt(cf, &ngx_http_metacloud_ingest_name,
                                          &ngx_http_metacloud_ingest_sql, 3);
}


/* metacloud_db_group: deliveries that wait go together (sql/011) */

ngx_int_t
ngx_http_metacloud_ingest_register_group(ngx_conf_t *cf,
    ngx_http_metacloud_pg_stmt_t *stmt)
{
    return ngx_http_metacloud_pg_add_group(cf, stmt,
                                           &ngx_http_metacloud_ingest_group_name,
                                           &ngx_http_metacloud_ingest_group_sql);
}


/*
 * The organisations of the delivery ($metacloud_organization) in the same
 * round trip: a second column, asked for only when a log format uses the
 * variable (it costs PostgreSQL a function call per delivery).
 */

void
ngx_http_metacloud_ingest_organizations(ngx_http_metacloud_pg_stmt_t *stmt)
{
    stmt->sql = ngx_http_metacloud_ingest_orgs_sql;

    if (stmt->group) {
        stmt->group->sql = ngx_http_metacloud_ingest_group_orgs_sql;
    }
}


/* the raw body goes as binary bytea, the events and the info as text */

ngx_int_t
ngx_http_metacloud_ingest_init(ngx_http_metacloud_ingest_t *in,
    ngx_http_metacloud_pg_stmt_t *stmt, ngx_str_t *body,
    mc_normalized_t *norm, ngx_uint_t signature_checked)
{
    json_t  *info;

    info = json_pack("{s:s, s:s?, s:b}",
                     "outcome", mc_body_rc_str(norm->rc),
                     "error", norm->rc == MC_BODY_OK ? NULL : norm->error,
                     "signatureChecked", (int) signature_checked);

    in->info = info ? json_dumps(info, JSON_COMPACT) : NULL;
    json_decref(info);

    if (in->info == NULL) {
        return NGX_ERROR;
    }

    in->values[0] = (const char *) body->data;
    in->lengths[0] = (int) body->len;
    in->formats[0] = 1;
    in->values[1] = norm->events;
    in->lengths[1] = (int) norm->events_len;
    in->formats[1] = 0;
    in->values[2] = in->info;
    in->lengths[2] = (int) ngx_strlen(in->info);
    in->formats[2] = 0;

    /*
     * a big delivery runs long: in a group, or with deliveries waiting
     * for it to be done, it would make small ones wait for its time
     */

    in->query.alone = norm->nevents > NGX_HTTP_METACLOUD_INGEST_GROUP_EVENTS;

    in->query.stmt = stmt;
    in->query.values = in->values;
    in->query.lengths = in->lengths;
    in->query.formats = in->formats;

    return NGX_OK;
}


void
ngx_http_metacloud_ingest_free(ngx_http_metacloud_ingest_t *in)
{
    ngx_http_metacloud_pg_cancel(&in->query);

    if (in->info) {
        free(in->info);
        in->info = NULL;
    }
}


/*
 * Reads {rawId, inserted, duplicate, failed, unrouted, pending, media}.
 * The transaction has committed whatever this finds: NGX_DECLINED (logged)
 * for a result that is not such an object, with the plain "ok" answer;
 * NGX_ERROR when memory runs out.
 */

ngx_int_t
ngx_http_metacloud_ingest_summary(PGresult *res, mc_normalized_t *norm,
    ngx_pool_t *pool, ngx_log_t *log, ngx_http_metacloud_summary_t *s)
{
    size_t        len;
    u_char       *out;
    json_t       *doc;
    ngx_int_t     rc;
    json_error_t  err;

    ngx_memzero(s, sizeof(ngx_http_metacloud_summary_t));
    s->reply = ngx_http_metacloud_ingest_ok;

    if (PQntuples(res) != 1 || PQnfields(res) < 1) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "metacloud: metacloud_ingest() returned %d rows",
                      PQntuples(res));
        return NGX_DECLINED;
    }

    doc = json_loads(PQgetvalue(res, 0, 0), 0, &err);

    if (doc == NULL || !json_is_object(doc)) {
        ngx_log_error(NGX_LOG_ERR, log, 0,
                      "metacloud: metacloud_ingest() returned no object: %s",
                      doc ? "not an object" : err.text);
        json_decref(doc);
        return NGX_DECLINED;
    }

    s->inserted = json_integer_value(json_object_get(doc, "inserted"));
    s->duplicate = json_integer_value(json_object_get(doc, "duplicate"));
    s->failed = json_integer_value(json_object_get(doc, "failed"));
    s->unrouted = json_integer_value(json_object_get(doc, "unrouted"));
    s->pending = json_integer_value(json_object_get(doc, "pending"));

    rc = ngx_http_metacloud_json_str(json_object_get(doc, "rawId"), pool,
                                     &s->raw_id);

    if (rc == NGX_OK) {
        rc = ngx_http_metacloud_ingest_media(json_object_get(doc, "media"),
                                             pool, s);
    }

    if (rc == NGX_OK && PQnfields(res) > 1) {
        rc = ngx_http_metacloud_ingest_orgs(PQgetvalue(res, 0, 1), pool, s);
    }

    /* the answer is the summary: the media list is for the media queue */

    (void) json_object_del(doc, "media");

    if (rc == NGX_OK
        && (json_object_set_new(doc, "status", json_string("ok")) != 0
            || json_object_set_new(doc, "outcome",
                                   json_string(mc_body_rc_str(norm->rc)))
               != 0
            || json_object_set_new(doc, "events",
                                   json_integer(norm->nevents)) != 0))
    {
        rc = NGX_ERROR;
    }

    if (rc == NGX_OK) {
        /* jansson writes straight into the pool */

        len = json_dumpb(doc, NULL, 0, JSON_COMPACT|JSON_SORT_KEYS);
        out = len ? ngx_pnalloc(pool, len) : NULL;

        if (out) {
            s->reply.len = json_dumpb(doc, (char *) out, len,
                                      JSON_COMPACT|JSON_SORT_KEYS);
            s->reply.data = out;

        } else {
            rc = NGX_ERROR;
        }
    }

    json_decref(doc);

    return rc;
}


static ngx_int_t
ngx_http_metacloud_ingest_media(json_t *media, ngx_pool_t *pool,
    ngx_http_metacloud_summary_t *s)
{
    size_t                       i;
    json_t                      *item;
    ngx_http_metacloud_media_t  *m;

    if (json_array_size(media) == 0) {
        return NGX_OK;
    }

    s->media = ngx_array_create(pool, json_array_size(media),
                                sizeof(ngx_http_metacloud_media_t));
    if (s->media == NULL) {
        return NGX_ERROR;
    }

    json_array_foreach(media, i, item) {
        m = ngx_array_push(s->media);
        if (m == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_metacloud_json_str(json_object_get(item, "id"), pool,
                                        &m->id)
            != NGX_OK
            || ngx_http_metacloud_json_str(json_object_get(item, "mediaId"),
                                           pool, &m->media_id)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* metacloud_organizations(): a jsonb array of ids, joined with "," */

static ngx_int_t
ngx_http_metacloud_ingest_orgs(const char *orgs, ngx_pool_t *pool,
    ngx_http_metacloud_summary_t *s)
{
    size_t   i, len;
    u_char  *p;
    json_t  *doc, *org;

    doc = json_loads(orgs, 0, NULL);

    len = 0;

    json_array_foreach(doc, i, org) {
        len += json_string_length(org) + 1;
    }

    if (len == 0) {
        json_decref(doc);
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, len);
    if (p == NULL) {
        json_decref(doc);
        return NGX_ERROR;
    }

    s->organizations.data = p;

    json_array_foreach(doc, i, org) {
        if (p > s->organizations.data) {
            *p++ = ',';
        }

        p = ngx_cpymem(p, json_string_value(org), json_string_length(org));
    }

    s->organizations.len = p - s->organizations.data;

    json_decref(doc);

    return NGX_OK;
}


/* a JSON string copied into the pool; anything else is the empty string */

static ngx_int_t
ngx_http_metacloud_json_str(json_t *v, ngx_pool_t *pool, ngx_str_t *s)
{
    s->len = json_string_length(v);
    s->data = (u_char *) "";

    if (s->len == 0) {
        return NGX_OK;
    }

    s->data = ngx_pnalloc(pool, s->len);
    if (s->data == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(s->data, json_string_value(v), s->len);

    return NGX_OK;
}
