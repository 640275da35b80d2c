
/*
 * Copyright (C) ngx_http_metacloud_module authors
 */


#include "ngx_http_metacloud.h"

#include <jansson.h>


/* the pause between rounds while a purge still finds rows */
#define NGX_HTTP_METACLOUD_MAINT_BUSY  200


typedef struct {
    ngx_http_metacloud_pg_query_t     query;
    const char                       *values[3];
    ngx_event_t                       timer;
    ngx_http_metacloud_maint_conf_t  *conf;
    unsigned                          running:1;
} ngx_http_metacloud_maint_t;


static void ngx_http_metacloud_maint_round(ngx_event_t *ev);
static void ngx_http_metacloud_maint_done(ngx_http_metacloud_pg_query_t *q);


static ngx_str_t  ngx_http_metacloud_maint_name =
    ngx_string("metacloud_maintain_stmt");
static ngx_str_t  ngx_http_metacloud_maint_sql =
    ngx_string("SELECT metacloud_maintain($1::interval, $2::interval,"
               " $3::interval)::text");

static const char  *ngx_http_metacloud_maint_keys[] = {
    "raw=", "events=", "expire="
};

/* this worker's, when it runs the maintenance */
static ngx_http_metacloud_maint_t  *ngx_http_metacloud_maint;


/*
 * metacloud_maintenance off | <interval> [raw=<time>] [events=<time>]
 *                                        [expire=<time>];
 */

char *
ngx_http_metacloud_maintenance(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_metacloud_main_conf_t *mcf = conf;

    time_t                            age;
    ngx_str_t                        *value, s;
    ngx_int_t                         interval;
    ngx_uint_t                        i, k;
    ngx_http_metacloud_pg_conf_t     *pgcf;
    ngx_http_metacloud_maint_conf_t  *mtcf;

    mtcf = &mcf->maint;
    pgcf = &mcf->pg;

    if (mtcf->interval != NGX_CONF_UNSET_MSEC) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts > 2) {
            return "takes no ages with \"off\"";
        }

        mtcf->interval = 0;
        return NGX_CONF_OK;
    }

    interval = ngx_parse_time(&value[1], 0);

    if (interval == NGX_ERROR || interval == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid interval \"%V\" in "
                           "\"metacloud_maintenance\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    mtcf->interval = (ngx_msec_t) interval;

    for (i = 2; i < cf->args->nelts; i++) {

        for (k = 0; k < 3; k++) {
            if (ngx_strncmp(value[i].data, ngx_http_metacloud_maint_keys[k],
                            ngx_strlen(ngx_http_metacloud_maint_keys[k]))
                == 0)
            {
                break;
            }
        }

        if (k == 3 || mtcf->ages[k].len) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid or repeated parameter \"%V\" in "
                               "\"metacloud_maintenance\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        s.data = value[i].data + ngx_strlen(ngx_http_metacloud_maint_keys[k]);
        s.len = value[i].len - ngx_strlen(ngx_http_metacloud_maint_keys[k]);

        age = ngx_parse_time(&s, 1);

        if (age == (time_t) NGX_ERROR || age == 0) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid age \"%V\" in "
                               "\"metacloud_maintenance\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        /* an SQL interval, as text: "2592000 seconds" */

        mtcf->ages[k].data = ngx_pnalloc(cf->pool, NGX_TIME_T_LEN + 10);
        if (mtcf->ages[k].data == NULL) {
            return NGX_CONF_ERROR;
        }

        mtcf->ages[k].len = ngx_sprintf(mtcf->ages[k].data, "%T seconds%Z",
                                        age)
                            - mtcf->ages[k].data - 1;
    }

    mtcf->stmt = ngx_http_metacloud_pg_add_stmt(cf,
                                                &ngx_http_metacloud_maint_name,
                                                &ngx_http_metacloud_maint_sql,
                                                3);
    if (mtcf->stmt == NULL) {
        return NGX_CONF_ERROR;
    }

    /* the statement is prepared on every connection: it must exist */

    if (pgcf->schema_version < NGX_HTTP_METACLOUD_MAINT_SCHEMA) {
        pgcf->schema_version = NGX_HTTP_METACLOUD_MAINT_SCHEMA;
    }

    return NGX_CONF_OK;
}


char *
ngx_http_metacloud_maint_init_conf(ngx_conf_t *cf,
    ngx_http_metacloud_maint_conf_t *mtcf, ngx_http_metacloud_pg_conf_t *pgcf)
{
    ngx_conf_init_msec_value(mtcf->interval, 0);

    if (mtcf->interval && pgcf->conninfo.data == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "\"metacloud_maintenance\" needs "
                           "\"metacloud_db\" in the http block");
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* one worker runs it: the first; after a reload, the new first one */

ngx_int_t
ngx_http_metacloud_maint_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_maint_conf_t *mtcf)
{
    ngx_uint_t                   k;
    ngx_http_metacloud_maint_t  *mt;

    if (mtcf->interval == 0 || mtcf->interval == NGX_CONF_UNSET_MSEC
        || mtcf->stmt == NULL || ngx_worker != 0)
    {
        return NGX_OK;
    }

    mt = ngx_pcalloc(cycle->pool, sizeof(ngx_http_metacloud_maint_t));
    if (mt == NULL) {
        return NGX_ERROR;
    }

    mt->conf = mtcf;

    for (k = 0; k < 3; k++) {
        mt->values[k] = mtcf->ages[k].len ? (const char *) mtcf->ages[k].data
                                          : NULL;
    }

    /* a pending round must not hold a worker that is shutting down */

    mt->timer.handler = ngx_http_metacloud_maint_round;
    mt->timer.data = mt;
    mt->timer.log = cycle->log;
    mt->timer.cancelable = 1;

    ngx_http_metacloud_maint = mt;

    ngx_add_timer(&mt->timer, mtcf->interval);

    return NGX_OK;
}


void
ngx_http_metacloud_maint_exit_worker(void)
{
    ngx_http_metacloud_maint_t  *mt;

    mt = ngx_http_metacloud_maint;

    if (mt == NULL) {
        return;
    }

    if (mt->running) {
        ngx_http_metacloud_pg_cancel(&mt->query);
        mt->running = 0;
    }

    if (mt->timer.timer_set) {
        ngx_del_timer(&mt->timer);
    }

    ngx_http_metacloud_maint = NULL;
}


static void
ngx_http_metacloud_maint_round(ngx_event_t *ev)
{
    ngx_http_metacloud_pg_t     *pg;
    ngx_http_metacloud_maint_t  *mt;

    mt = ev->data;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    pg = ngx_http_metacloud_pg_get();

    ngx_memzero(&mt->query, sizeof(ngx_http_metacloud_pg_query_t));

    mt->query.stmt = mt->conf->stmt;
    mt->query.values = mt->values;
    mt->query.handler = ngx_http_metacloud_maint_done;
    mt->query.data = mt;
    mt->query.log = ev->log;

    if (pg == NULL || ngx_http_metacloud_pg_run(pg, &mt->query) != NGX_OK) {
        /* the database is down or busy: the next round tries again */
        ngx_add_timer(&mt->timer, mt->conf->interval);
        return;
    }

    mt->running = 1;
}


static void
ngx_http_metacloud_maint_done(ngx_http_metacloud_pg_query_t *q)
{
    json_t                      *doc, *r, *p;
    ngx_int_t                    more;
    json_error_t                 err;
    ngx_http_metacloud_maint_t  *mt;

    mt = q->data;
    mt->running = 0;
    more = 0;

    if (q->rc == NGX_HTTP_METACLOUD_PG_OK && PQntuples(q->result) == 1) {
        doc = json_loads(PQgetvalue(q->result, 0, 0), 0, &err);
        r = json_object_get(doc, "reprocess");
        p = json_object_get(doc, "purge");
        more = json_is_true(json_object_get(doc, "more"));

        if (json_integer_value(json_object_get(r, "retried")) || more) {
            ngx_log_error(NGX_LOG_INFO, q->log, 0,
                          "metacloud: maintenance: %L retried (%L ok), "
                          "purged %L raw requests, %L events, %L media, "
                          "%L statuses expired",
                          (int64_t) json_integer_value(
                                        json_object_get(r, "retried")),
                          (int64_t) json_integer_value(
                                        json_object_get(r, "ok")),
                          (int64_t) json_integer_value(
                                        json_object_get(p, "raw")),
                          (int64_t) json_integer_value(
                                        json_object_get(p, "events")),
                          (int64_t) json_integer_value(
                                        json_object_get(p, "media")),
                          (int64_t) json_integer_value(
                                        json_object_get(p, "expired")));
        }

        json_decref(doc);
    }

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    ngx_add_timer(&mt->timer, more ? NGX_HTTP_METACLOUD_MAINT_BUSY
                                   : mt->conf->interval);
}
