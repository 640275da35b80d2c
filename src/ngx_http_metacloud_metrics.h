
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * Metrics in one shared memory zone: every worker counts into the same
 * numbers with atomic adds, the zone survives a reload, and
 * "metacloud_status" serves them as Prometheus text, JSON or an HTML page.
 * The label values are fixed lists (X-macros below): never an
 * organisation, a number or a wamid.
 */


#ifndef _NGX_HTTP_METACLOUD_METRICS_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "mc_core.h"


/* metacloud_requests_total{outcome} */
#define NGX_HTTP_METACLOUD_OUTCOMES(X)                                        \
    X(HANDSHAKE,          "handshake",          200)                          \
    X(HANDSHAKE_REFUSED,  "handshake_refused",  403)                          \
    X(BAD_SIGNATURE,      "bad_signature",      401)                          \
    X(OK,                 "ok",                 200)                          \
    X(INVALID_JSON,       "invalid_json",       200)                          \
    X(NOT_WEBHOOK,        "not_webhook",        200)                          \
    X(OTHER_OBJECT,       "other_object",       200)                          \
    X(TOO_LARGE,          "too_large",          413)                          \
    X(UNAVAILABLE,        "unavailable",        503)                          \
    X(METHOD,             "method_not_allowed", 405)                          \
    X(ERROR,              "error",              500)

/* metacloud_requests_total{code}: the codes of this location, and "other" */
#define NGX_HTTP_METACLOUD_CODES(X)                                           \
    X(200) X(400) X(401) X(403) X(405) X(408) X(413) X(499) X(500) X(503)

/* metacloud_events_total{type}: mc_core.h's MC_EVENT_TYPES */

/* metacloud_events_total{result}: each new or seen event has one */
#define NGX_HTTP_METACLOUD_RESULTS(X)                                         \
    X(INSERTED,   "inserted")                                                 \
    X(DUPLICATE,  "duplicate")                                                \
    X(FAILED,     "failed")                                                   \
    X(UNROUTED,   "unrouted")                                                 \
    X(PENDING,    "pending")

/* metacloud_db_errors_total{reason} */
#define NGX_HTTP_METACLOUD_DB_ERRORS(X)                                       \
    X(CONNECT,    "connect")                                                  \
    X(TIMEOUT,    "timeout")                                                  \
    X(QUERY,      "query")                                                    \
    X(SCHEMA,     "schema")

/* metacloud_media_downloads_total{result} */
#define NGX_HTTP_METACLOUD_MEDIA_RESULTS(X)                                   \
    X(OK,         "ok")                                                       \
    X(RETRY,      "retry")                                                    \
    X(FAILED,     "failed")                                                   \
    X(EXPIRED,    "expired")

/* metacloud_backlog{kind}, and the SQL column of metacloud_backlog() */
#define NGX_HTTP_METACLOUD_BACKLOG(X)                                         \
    X(EVENTS,     "events_unprocessed")                                       \
    X(STATUSES,   "statuses_pending")                                         \
    X(MEDIA,      "media_pending")                                            \
    X(MEDIA_FAIL, "media_failed")


#define NGX_HTTP_METACLOUD_OUT_ENUM(id, name, code)                           \
    NGX_HTTP_METACLOUD_OUT_##id,
#define NGX_HTTP_METACLOUD_RES_ENUM(id, name)  NGX_HTTP_METACLOUD_RES_##id,
#define NGX_HTTP_METACLOUD_DB_ENUM(id, name)   NGX_HTTP_METACLOUD_DB_##id,
#define NGX_HTTP_METACLOUD_MEDIA_ENUM(id, name)                               \
    NGX_HTTP_METACLOUD_MEDIA_##id,

typedef enum {
    NGX_HTTP_METACLOUD_OUTCOMES(NGX_HTTP_METACLOUD_OUT_ENUM)
    NGX_HTTP_METACLOUD_NOUTCOMES
} ngx_http_metacloud_outcome_e;

typedef enum {
    NGX_HTTP_METACLOUD_RESULTS(NGX_HTTP_METACLOUD_RES_ENUM)
    NGX_HTTP_METACLOUD_NRESULTS
} ngx_http_metacloud_result_e;

typedef enum {
    NGX_HTTP_METACLOUD_DB_ERRORS(NGX_HTTP_METACLOUD_DB_ENUM)
    NGX_HTTP_METACLOUD_NDB_ERRORS
} ngx_http_metacloud_db_error_e;

typedef enum {
    NGX_HTTP_METACLOUD_MEDIA_RESULTS(NGX_HTTP_METACLOUD_MEDIA_ENUM)
    NGX_HTTP_METACLOUD_NMEDIA_RESULTS
} ngx_http_metacloud_media_result_e;


/* what one ingest call reported (metacloud_ingest()'s counts) */

typedef struct {
    ngx_uint_t                    inserted;   /* new events, all of them */
    ngx_uint_t                    duplicate;
    ngx_uint_t                    failed;     /* parts of "inserted" */
    ngx_uint_t                    unrouted;
    ngx_uint_t                    pending;
    ngx_msec_t                    db_time;
    ngx_str_t                     raw_id;     /* in the request's pool */
    ngx_str_t                     organizations;  /* "a,b" */
} ngx_http_metacloud_ingest_report_t;


extern ngx_module_t  ngx_http_metacloud_metrics_module;


/*
 * The request flow reports what it learnt; the log phase counts the
 * request once, whatever ended it (413 and 499 included).  Each call is
 * a no-op when metrics are off.
 */

/* the body was normalised: its outcome and events (mc_core.h) */
void ngx_http_metacloud_metrics_body(ngx_http_request_t *r,
    mc_normalized_t *norm);

/* the ingest transaction committed */
void ngx_http_metacloud_metrics_ingest(ngx_http_request_t *r,
    ngx_http_metacloud_ingest_report_t *rep);

/* the PostgreSQL layer: one failure of that kind */
void ngx_http_metacloud_metrics_db_error(ngx_http_metacloud_db_error_e reason);

/* group commit: n queries sent in one call; a call failed as a whole */
void ngx_http_metacloud_metrics_db_group(ngx_uint_t n);
void ngx_http_metacloud_metrics_db_group_failed(void);

/* the media work: a download ended; in flight +1 / -1 */
void ngx_http_metacloud_metrics_media(ngx_http_metacloud_media_result_e res,
    size_t bytes, ngx_msec_t duration);
void ngx_http_metacloud_metrics_media_in_flight(ngx_int_t delta);


#endif /* _NGX_HTTP_METACLOUD_METRICS_H_INCLUDED_ */
