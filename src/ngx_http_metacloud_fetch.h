
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * One media download attempt, run in a thread of an nginx thread pool:
 * the Graph API lookup, the download with the bearer token, the size
 * limit, the SHA-256 check, and the store (a local directory or
 * S3-compatible storage).  It uses malloc(), libcurl and OpenSSL only: no
 * nginx pool, no nginx log, nothing shared with the event loop but the
 * job it was given, so this file includes no nginx header.  The event loop
 * (ngx_http_metacloud_media.c) reads the result and logs it.
 */


#ifndef _NGX_HTTP_METACLOUD_FETCH_H_INCLUDED_
#define _NGX_HTTP_METACLOUD_FETCH_H_INCLUDED_


#include <stdint.h>


typedef enum {
    NGX_HTTP_METACLOUD_FETCH_DONE = 0,  /* stored */
    NGX_HTTP_METACLOUD_FETCH_RETRY,     /* failed; a later attempt may not */
    NGX_HTTP_METACLOUD_FETCH_FAILED,    /* failed for good (size, key) */
    NGX_HTTP_METACLOUD_FETCH_EXPIRED    /* the media id is gone */
} ngx_http_metacloud_fetch_rc_e;


/* where files go: set once at configuration, read-only in the threads */

typedef struct {
    const char                    *graph_url;   /* no trailing '/' */
    const char                    *path;        /* local storage, or NULL */

    const char                    *s3_endpoint; /* S3 storage, or NULL */
    const char                    *s3_bucket;
    const char                    *s3_region;
    const char                    *s3_prefix;   /* "" or "p/" */
    const char                    *s3_key_id;
    const char                    *s3_secret;

    const char                    *url_prefix;  /* "storageUrl", or NULL */
    const char                    *tmp_dir;     /* S3 mode's temp files */

    int64_t                        max_size;
    long                           timeout;     /* ms, one transfer */
} ngx_http_metacloud_fetch_conf_t;


typedef struct {
    const ngx_http_metacloud_fetch_conf_t  *conf;

    /* in: NUL-terminated, owned by the caller; NULL when absent */
    const char                    *media_id;    /* Meta's */
    const char                    *org;
    const char                    *mime;        /* the webhook's */
    const char                    *sha256;      /* the webhook's (base64) */
    const char                    *url;         /* the webhook's, fresh */
    const char                    *day;         /* yyyy/mm/dd */
    const char                    *token;

    /* out: strings malloc()ed (ngx_http_metacloud_fetch_free()) */
    ngx_http_metacloud_fetch_rc_e  rc;
    char                           error[200];  /* never holds the token */
    char                          *key;         /* "storageKey" */
    char                          *storage_url;
    char                          *mime_found;  /* the lookup's */
    int64_t                        size;
    uint64_t                       duration;    /* ms */
    unsigned                       lookups;     /* Graph API calls made */
} ngx_http_metacloud_fetch_t;


/* libcurl's global state: once per process, before any thread runs */
int ngx_http_metacloud_fetch_global_init(void);

/* one attempt; fills the out fields.  Thread-safe, blocking. */
void ngx_http_metacloud_fetch_run(ngx_http_metacloud_fetch_t *f);

void ngx_http_metacloud_fetch_free(ngx_http_metacloud_fetch_t *f);

/*
 * Removes a stored file (a row of meta_cloud_media_deletions): 0 when it
 * is gone (a file missing already included), or -1 with a reason in error.
 * Thread-safe, blocking.
 */
int ngx_http_metacloud_fetch_remove(const ngx_http_metacloud_fetch_conf_t *conf,
    const char *provider, const char *bucket, const char *key, char *error,
    size_t size);

const char *ngx_http_metacloud_fetch_rc_str(ngx_http_metacloud_fetch_rc_e rc);


#endif /* _NGX_HTTP_METACLOUD_FETCH_H_INCLUDED_ */
