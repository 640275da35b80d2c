
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * A per-worker pool of non-blocking libpq connections, driven by the nginx
 * event loop.  It knows statements and parameters, not requests: callers
 * may be requests, timers or thread pool completions.
 *
 * At configuration time a caller registers its statements; every new
 * connection checks the schema version and PREPAREs them all.  In a worker
 * a caller fills an ngx_http_metacloud_pg_query_t and runs it; the handler
 * is then called exactly once, always from a posted event, never from
 * inside ngx_http_metacloud_pg_run() or ngx_http_metacloud_pg_cancel().
 */


#ifndef _NGX_HTTP_METACLOUD_PG_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_PG_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_event.h>

#include <libpq-fe.h>


typedef struct ngx_http_metacloud_pg_s        ngx_http_metacloud_pg_t;
typedef struct ngx_http_metacloud_pg_conn_s   ngx_http_metacloud_pg_conn_t;
typedef struct ngx_http_metacloud_pg_stmt_s   ngx_http_metacloud_pg_stmt_t;
typedef struct ngx_http_metacloud_pg_query_s  ngx_http_metacloud_pg_query_t;


typedef enum {
    NGX_HTTP_METACLOUD_PG_OK = 0,       /* the statement succeeded */
    NGX_HTTP_METACLOUD_PG_ERROR,        /* the statement failed (logged) */
    NGX_HTTP_METACLOUD_PG_UNAVAILABLE   /* no connection, timeout, old
                                           schema */
} ngx_http_metacloud_pg_rc_e;


typedef void (*ngx_http_metacloud_pg_handler_pt)(
    ngx_http_metacloud_pg_query_t *q);


/* a prepared statement, registered at configuration time */

struct ngx_http_metacloud_pg_stmt_s {
    ngx_str_t                          name;     /* NUL-terminated */
    ngx_str_t                          sql;
    ngx_uint_t                         nparams;

    /* several queries of this statement in one call: metacloud_db_group */
    ngx_http_metacloud_pg_stmt_t      *group;
};


/*
 * A query is the caller's memory (zeroed, e.g. ngx_pcalloc()), and so are
 * the parameter arrays: both must stay valid until the handler has run or
 * the query was cancelled.
 */

struct ngx_http_metacloud_pg_query_s {
    /* set by the caller before ngx_http_metacloud_pg_run() */
    ngx_http_metacloud_pg_stmt_t      *stmt;
    const char *const                 *values;   /* stmt->nparams each */
    const int                         *lengths;
    const int                         *formats;  /* NULL: all text */

    ngx_http_metacloud_pg_handler_pt   handler;
    void                              *data;
    ngx_log_t                         *log;      /* PostgreSQL errors too */
    unsigned                           alone:1;  /* never in a group, and
                                                    none waits for it */

    /* set by the pool when the handler runs */
    ngx_http_metacloud_pg_rc_e         rc;
    PGresult                          *result;   /* on OK: the last result;
                                                    valid while the handler
                                                    runs, cleared after */
    ngx_msec_t                         start;    /* when it was run */

    /* private to the pool */
    ngx_queue_t                        queue;
    ngx_event_t                        timer;    /* waiting for a connection */
    ngx_event_t                        event;    /* the posted completion */
    ngx_http_metacloud_pg_t           *pg;
    ngx_http_metacloud_pg_conn_t      *conn;
    unsigned                           waiting:1;
    unsigned                           solo:1;   /* its group failed */
};


/* the pool's configuration: part of the module's main configuration */

typedef struct {
    ngx_str_t                          conninfo; /* NUL-terminated */
    ngx_uint_t                         size;     /* connections per worker */
    ngx_uint_t                         queue_size;
    ngx_uint_t                         group;    /* queries per call */
    ngx_msec_t                         timeout;
    ngx_msec_t                         idle_timeout;
    ngx_int_t                          schema_version; /* at least */
    ngx_array_t                        stmts;    /* of stmt pointers */

    ngx_http_metacloud_pg_t           *pg;       /* this worker's */
} ngx_http_metacloud_pg_conf_t;


/* read-only counts, for metrics */

typedef struct {
    ngx_uint_t                         size;
    ngx_uint_t                         connecting; /* incl. the schema check */
    ngx_uint_t                         idle;
    ngx_uint_t                         busy;
    ngx_uint_t                         waiting;    /* queries in the queue */
    ngx_uint_t                         queue_size;
    ngx_uint_t                         down;       /* backing off */
} ngx_http_metacloud_pg_stats_t;


/*
 * Configuration time, from any directive of the http block (or a
 * postconfiguration handler): the returned handle stays valid for the
 * cycle.  name is an SQL identifier; sql may use $1..$nparams (cast them,
 * $1::bytea, where PostgreSQL cannot infer a type).  A registered
 * statement makes the workers open a pool, which needs "metacloud_db":
 * a caller that requires one says so in its own configuration check.
 */
ngx_http_metacloud_pg_stmt_t *ngx_http_metacloud_pg_add_stmt(ngx_conf_t *cf,
    ngx_str_t *name, ngx_str_t *sql, ngx_uint_t nparams);

/*
 * Configuration time: queries of stmt that wait for a connection may go
 * as one call of a group statement (at most metacloud_db_group of them,
 * one transaction).  Its sql takes each parameter of stmt as an array
 * with one element per query, in order (bytea[] for a binary parameter,
 * text[] for a text one, as $1::bytea[], $2::text[]), and returns one row
 * per query in that order: first the error of that query (NULL: none),
 * then the columns stmt returns.  A query whose error is set completes
 * with NGX_HTTP_METACLOUD_PG_ERROR, the others with their own row; when
 * the whole call fails, each query is sent again on its own.
 */
ngx_int_t ngx_http_metacloud_pg_add_group(ngx_conf_t *cf,
    ngx_http_metacloud_pg_stmt_t *stmt, ngx_str_t *name, ngx_str_t *sql);

/* the pool of this worker: NULL when none is configured or running here */
ngx_http_metacloud_pg_t *ngx_http_metacloud_pg_get(void);

/*
 * NGX_OK: the handler will run once, from a posted event.  NGX_DECLINED:
 * refused now (queue full, database down and backing off), nothing more
 * happens.  Safe to call from any event handler of the worker.
 */
ngx_int_t ngx_http_metacloud_pg_run(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_query_t *q);

/*
 * The caller goes away: the handler will not run, a result is dropped.
 * (A handler itself may free its query: the pool no longer uses it.)
 * A no-op for a query never run or already completed.
 */
void ngx_http_metacloud_pg_cancel(ngx_http_metacloud_pg_query_t *q);

void ngx_http_metacloud_pg_stats(ngx_http_metacloud_pg_t *pg,
    ngx_http_metacloud_pg_stats_t *st);


/* for the module itself: directives and worker hooks */
ngx_int_t ngx_http_metacloud_pg_check_conninfo(ngx_conf_t *cf,
    ngx_str_t *conninfo);
ngx_int_t ngx_http_metacloud_pg_init_worker(ngx_cycle_t *cycle,
    ngx_http_metacloud_pg_conf_t *pgcf);
void ngx_http_metacloud_pg_exit_worker(ngx_http_metacloud_pg_conf_t *pgcf);


#endif /* _NGX_HTTP_METACLOUD_PG_H_INCLUDED_ */
