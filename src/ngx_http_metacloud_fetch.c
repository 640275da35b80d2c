
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * One media download attempt, in a thread (ngx_http_metacloud_fetch.h).
 *
 * The file is streamed into a temporary file while its SHA-256 is
 * computed and its size checked; only a complete file with the right
 * digest is stored.  A store is a small vtable: "local" renames the
 * temporary file (made in the same tree) into place and fsyncs it and its
 * directory; "s3" PUTs it, signed by libcurl's AWS SigV4.
 */


/* mkostemp(), O_TMPFILE: nginx's own files get this from ngx_linux_config.h */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <openssl/evp.h>

#include "mc_media.h"
#include "ngx_http_metacloud_fetch.h"


#define MC_FETCH_UA          "ngx_http_metacloud_module"
#define MC_FETCH_BODY_MAX    65536      /* a lookup answer */
#define MC_FETCH_CONNECT     10000      /* ms, at most */
#define MC_FETCH_LOW_SPEED   10         /* s without a byte: stalled */


typedef struct mc_fetch_store_s  mc_fetch_store_t;

typedef struct {
    ngx_http_metacloud_fetch_t      *job;
    const mc_fetch_store_t          *store;
    CURL                            *curl;
    uint64_t                         deadline;  /* ms, monotonic */

    /* the current response */
    long                             status;
    char                            *body;      /* a lookup's */
    size_t                           body_len;

    /* the download */
    int                              fd;
    char                            *tmp;       /* its name, local store */
    EVP_MD_CTX                      *sha;
    int64_t                          size;
    unsigned                         too_big:1;
    unsigned                         write_error:1;

    /* what the lookup said */
    char                            *url;
    char                            *sha256;
    int64_t                          file_size;
} mc_fetch_ctx_t;


struct mc_fetch_store_s {
    const char  *name;
    int        (*open)(mc_fetch_ctx_t *ctx);
    int        (*commit)(mc_fetch_ctx_t *ctx, const char *key,
                         const char *mime, const unsigned char *digest);
    void       (*close)(mc_fetch_ctx_t *ctx);
};


static ngx_http_metacloud_fetch_rc_e mc_fetch_fail(mc_fetch_ctx_t *ctx,
    ngx_http_metacloud_fetch_rc_e rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int mc_fetch_local_open(mc_fetch_ctx_t *ctx);
static int mc_fetch_local_commit(mc_fetch_ctx_t *ctx, const char *key,
    const char *mime, const unsigned char *digest);
static int mc_fetch_tmp_open(mc_fetch_ctx_t *ctx);
static int mc_fetch_s3_commit(mc_fetch_ctx_t *ctx, const char *key,
    const char *mime, const unsigned char *digest);
static void mc_fetch_close(mc_fetch_ctx_t *ctx);


static const mc_fetch_store_t  mc_fetch_local = {
    "local", mc_fetch_local_open, mc_fetch_local_commit, mc_fetch_close
};

static const mc_fetch_store_t  mc_fetch_s3 = {
    "s3", mc_fetch_tmp_open, mc_fetch_s3_commit, mc_fetch_close
};


int
ngx_http_metacloud_fetch_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}


const char *
ngx_http_metacloud_fetch_rc_str(ngx_http_metacloud_fetch_rc_e rc)
{
    switch (rc) {
    case NGX_HTTP_METACLOUD_FETCH_DONE:
        return "downloaded";
    case NGX_HTTP_METACLOUD_FETCH_RETRY:
        return "failed, will retry";
    case NGX_HTTP_METACLOUD_FETCH_FAILED:
        return "failed";
    default:
        return "expired";
    }
}


static uint64_t
mc_fetch_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return (uint64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}


static ngx_http_metacloud_fetch_rc_e
mc_fetch_fail(mc_fetch_ctx_t *ctx, ngx_http_metacloud_fetch_rc_e rc,
    const char *fmt, ...)
{
    va_list                      args;
    ngx_http_metacloud_fetch_t  *f = ctx->job;

    va_start(args, fmt);
    vsnprintf(f->error, sizeof(f->error), fmt, args);
    va_end(args);

    /* curl's and Meta's texts are ours to quote, the token never */
    mc_scrub(f->error, f->token);
    f->rc = rc;

    return rc;
}


/* libcurl callbacks */

static size_t
mc_fetch_body_cb(char *p, size_t size, size_t n, void *data)
{
    mc_fetch_ctx_t  *ctx = data;
    char            *b;

    n *= size;

    if (ctx->body_len + n > MC_FETCH_BODY_MAX) {
        return 0;
    }

    b = realloc(ctx->body, ctx->body_len + n + 1);
    if (b == NULL) {
        return 0;
    }

    memcpy(b + ctx->body_len, p, n);
    ctx->body = b;
    ctx->body_len += n;
    ctx->body[ctx->body_len] = '\0';

    return n;
}


static size_t
mc_fetch_file_cb(char *p, size_t size, size_t n, void *data)
{
    mc_fetch_ctx_t  *ctx = data;
    size_t           left;
    ssize_t          w;

    n *= size;

    curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &ctx->status);

    /* an error page is not the file: drop it */
    if (ctx->status != 200) {
        return n;
    }

    if (ctx->size + (int64_t) n > ctx->job->conf->max_size) {
        ctx->too_big = 1;
        return 0;
    }

    EVP_DigestUpdate(ctx->sha, p, n);
    ctx->size += n;

    for (left = n; left; left -= w, p += w) {
        w = write(ctx->fd, p, left);

        if (w < 0) {
            if (errno == EINTR) {
                w = 0;
                continue;
            }

            ctx->write_error = 1;
            return 0;
        }
    }

    return n;
}


/*
 * A fresh set of options with the attempt's limits: the whole transfer
 * within the timeout (and the attempt's deadline), no more than 10 s to
 * connect, and a transfer without a byte for 10 s (or the timeout) is
 * stalled.  Returns 0, or -1 when the deadline has passed.
 */
static int
mc_fetch_setup(mc_fetch_ctx_t *ctx, const char *url)
{
    long                                    left, low;
    const ngx_http_metacloud_fetch_conf_t  *conf = ctx->job->conf;

    left = (long) ((int64_t) ctx->deadline - (int64_t) mc_fetch_now());

    if (left <= 0) {
        return -1;
    }

    if (left > conf->timeout) {
        left = conf->timeout;
    }

    low = conf->timeout / 1000;
    low = low < 1 ? 1 : (low > MC_FETCH_LOW_SPEED ? MC_FETCH_LOW_SPEED : low);

    curl_easy_reset(ctx->curl);
    curl_easy_setopt(ctx->curl, CURLOPT_URL, url);
    curl_easy_setopt(ctx->curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(ctx->curl, CURLOPT_USERAGENT, MC_FETCH_UA);
    curl_easy_setopt(ctx->curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(ctx->curl, CURLOPT_TIMEOUT_MS, left);
    curl_easy_setopt(ctx->curl, CURLOPT_CONNECTTIMEOUT_MS,
                     left < MC_FETCH_CONNECT ? left : MC_FETCH_CONNECT);
    curl_easy_setopt(ctx->curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(ctx->curl, CURLOPT_LOW_SPEED_TIME, low);

    ctx->status = 0;
    ctx->body_len = 0;

    return 0;
}


/* a GET with the bearer token: a lookup's answer, or the file */

static CURLcode
mc_fetch_get(mc_fetch_ctx_t *ctx, const char *url, int file)
{
    const ngx_http_metacloud_fetch_conf_t  *conf = ctx->job->conf;

    if (mc_fetch_setup(ctx, url) != 0) {
        return CURLE_OPERATION_TIMEDOUT;
    }

    curl_easy_setopt(ctx->curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(ctx->curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(ctx->curl, CURLOPT_MAXREDIRS, 3L);

    /*
     * The bearer token through libcurl's own option: unlike a custom
     * header, it is not sent on to another host after a redirect.
     */
    curl_easy_setopt(ctx->curl, CURLOPT_HTTPAUTH, CURLAUTH_BEARER);
    curl_easy_setopt(ctx->curl, CURLOPT_XOAUTH2_BEARER,
                     ctx->job->token ? ctx->job->token : "");

    if (file) {
        curl_easy_setopt(ctx->curl, CURLOPT_MAXFILESIZE_LARGE,
                         (curl_off_t) conf->max_size);
        curl_easy_setopt(ctx->curl, CURLOPT_WRITEFUNCTION, mc_fetch_file_cb);

    } else {
        curl_easy_setopt(ctx->curl, CURLOPT_WRITEFUNCTION, mc_fetch_body_cb);
    }

    curl_easy_setopt(ctx->curl, CURLOPT_WRITEDATA, ctx);

    return curl_easy_perform(ctx->curl);
}


/* GET <graph>/<media id>: a fresh URL, the MIME type, the digest, the size */

static ngx_http_metacloud_fetch_rc_e
mc_fetch_lookup(mc_fetch_ctx_t *ctx)
{
    char                        *url, err[128];
    size_t                       len;
    CURLcode                     rc;
    mc_graph_rc_e                grc;
    mc_graph_media_t             m;
    ngx_http_metacloud_fetch_t  *f = ctx->job;

    len = strlen(f->conf->graph_url) + 1 + strlen(f->media_id) + 1;

    url = malloc(len);
    if (url == NULL) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "lookup: out of memory");
    }

    snprintf(url, len, "%s/%s", f->conf->graph_url, f->media_id);

    f->lookups++;
    rc = mc_fetch_get(ctx, url, 0);
    free(url);

    if (rc != CURLE_OK) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "lookup: %s (curl %ld)", curl_easy_strerror(rc),
                             (long) rc);
    }

    curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &ctx->status);

    grc = mc_graph_parse(ctx->status, ctx->body ? ctx->body : "",
                         ctx->body_len, &m, err, sizeof(err));

    if (grc != MC_GRAPH_OK) {
        mc_graph_media_free(&m);
        return mc_fetch_fail(ctx, grc == MC_GRAPH_GONE
                                  ? NGX_HTTP_METACLOUD_FETCH_EXPIRED
                                  : NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "%s", err);
    }

    free(ctx->url);
    free(ctx->sha256);
    ctx->url = m.url;
    ctx->sha256 = m.sha256;
    ctx->file_size = m.file_size;

    if (f->mime_found == NULL) {
        f->mime_found = m.mime_type;
        m.mime_type = NULL;
    }

    m.url = NULL;
    m.sha256 = NULL;
    mc_graph_media_free(&m);

    if (ctx->file_size > f->conf->max_size) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_FAILED,
                             "lookup: file_size %lld over the size limit",
                             (long long) ctx->file_size);
    }

    return NGX_HTTP_METACLOUD_FETCH_DONE;
}


/* GET the file into the temporary file; 404 means the URL expired */

static ngx_http_metacloud_fetch_rc_e
mc_fetch_download(mc_fetch_ctx_t *ctx, int *expired)
{
    CURLcode  rc;

    *expired = 0;

    if (ftruncate(ctx->fd, 0) != 0 || lseek(ctx->fd, 0, SEEK_SET) != 0
        || EVP_DigestInit_ex(ctx->sha, EVP_sha256(), NULL) != 1)
    {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "download: temporary file: %s",
                             strerror(errno));
    }

    ctx->size = 0;
    ctx->too_big = 0;
    ctx->write_error = 0;

    rc = mc_fetch_get(ctx, ctx->url, 1);

    if (ctx->too_big || rc == CURLE_FILESIZE_EXCEEDED) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_FAILED,
                             "download: over the size limit of %lld bytes",
                             (long long) ctx->job->conf->max_size);
    }

    if (ctx->write_error) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "download: temporary file: %s",
                             strerror(errno));
    }

    if (rc != CURLE_OK) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "download: %s (curl %ld)", curl_easy_strerror(rc),
                             (long) rc);
    }

    curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &ctx->status);

    if (ctx->status == 404) {
        *expired = 1;
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "download: HTTP 404 (url expired)");
    }

    if (ctx->status != 200) {
        return mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                             "download: HTTP %ld", ctx->status);
    }

    return NGX_HTTP_METACLOUD_FETCH_DONE;
}


void
ngx_http_metacloud_fetch_run(ngx_http_metacloud_fetch_t *f)
{
    int                             expired, tries;
    char                           *key, *su;
    size_t                          len;
    uint64_t                        start;
    const char                     *mime, *want;
    unsigned char                   digest[MC_SHA256_LEN];
    mc_fetch_ctx_t                  ctx;
    ngx_http_metacloud_fetch_rc_e   rc;

    start = mc_fetch_now();

    memset(&ctx, 0, sizeof(mc_fetch_ctx_t));
    ctx.job = f;
    ctx.fd = -1;
    ctx.file_size = -1;
    ctx.store = f->conf->path ? &mc_fetch_local : &mc_fetch_s3;

    /* a lookup, a download, another lookup and download, the store */
    ctx.deadline = start + 2 * (uint64_t) f->conf->timeout;

    f->rc = NGX_HTTP_METACLOUD_FETCH_RETRY;
    f->error[0] = '\0';

    mime = f->mime;

    ctx.curl = curl_easy_init();
    ctx.sha = EVP_MD_CTX_new();

    if (ctx.curl == NULL || ctx.sha == NULL) {
        mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "out of memory");
        goto done;
    }

    /* the key's parts first: an id that could escape its directory */
    key = mc_media_key(f->org, f->day, f->media_id, "bin");
    free(key);

    if (key == NULL) {
        mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_FAILED,
                      "media id, organization or day unfit for a key");
        goto done;
    }

    if (ctx.store->open(&ctx) != 0) {
        mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "store: temporary file: %s", strerror(errno));
        goto done;
    }

    /* the webhook's own URL while it is fresh, else a lookup */
    if (f->url) {
        ctx.url = strdup(f->url);
        ctx.sha256 = f->sha256 ? strdup(f->sha256) : NULL;

    } else if (mc_fetch_lookup(&ctx) != NGX_HTTP_METACLOUD_FETCH_DONE) {
        goto done;
    }

    for (tries = 0; /* void */; tries++) {
        rc = mc_fetch_download(&ctx, &expired);

        if (rc == NGX_HTTP_METACLOUD_FETCH_DONE) {
            break;
        }

        /* an expired URL: a fresh one within the same attempt, once */
        if (!expired || tries > 0 || f->lookups > 1) {
            goto done;
        }

        if (mc_fetch_lookup(&ctx) != NGX_HTTP_METACLOUD_FETCH_DONE) {
            goto done;
        }
    }

    EVP_DigestFinal_ex(ctx.sha, digest, NULL);

    /* the lookup's hex digest, else the webhook's base64 one */
    want = ctx.sha256;

    if (want && !mc_sha256_match(want, digest)) {
        mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "download: sha256 mismatch (%lld bytes)",
                      (long long) ctx.size);
        goto done;
    }

    if (mime == NULL) {
        mime = f->mime_found;
    }

    key = mc_media_key(f->org, f->day, f->media_id, mc_media_ext(mime));

    if (key == NULL) {
        mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_FAILED,
                      "media type unfit for a key");
        goto done;
    }

    if (ctx.store->commit(&ctx, key, mime, digest) != 0) {
        free(key);
        goto done;
    }

    /* in a bucket, "storageKey" is the object's whole key */
    if (f->conf->path == NULL && f->conf->s3_prefix[0]) {
        len = strlen(f->conf->s3_prefix) + strlen(key) + 1;
        su = malloc(len);

        if (su == NULL) {
            free(key);
            mc_fetch_fail(&ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                          "out of memory");
            goto done;
        }

        snprintf(su, len, "%s%s", f->conf->s3_prefix, key);
        free(key);
        key = su;
    }

    f->key = key;
    f->size = ctx.size;

    if (f->conf->url_prefix) {
        len = strlen(f->conf->url_prefix) + strlen(key) + 1;
        su = malloc(len);

        if (su) {
            snprintf(su, len, "%s%s", f->conf->url_prefix, key);
        }

        f->storage_url = su;
    }

    f->rc = NGX_HTTP_METACLOUD_FETCH_DONE;
    f->error[0] = '\0';

done:

    if (ctx.store) {
        ctx.store->close(&ctx);
    }

    if (ctx.curl) {
        curl_easy_cleanup(ctx.curl);
    }

    EVP_MD_CTX_free(ctx.sha);
    free(ctx.body);
    free(ctx.url);
    free(ctx.sha256);

    f->duration = mc_fetch_now() - start;
}


void
ngx_http_metacloud_fetch_free(ngx_http_metacloud_fetch_t *f)
{
    free(f->key);
    free(f->storage_url);
    free(f->mime_found);
    f->key = NULL;
    f->storage_url = NULL;
    f->mime_found = NULL;
}


/* the local store */

static int
mc_fetch_mkdirs(char *path)
{
    char  *p;

    /* every parent of the file, in turn; existing ones are fine */
    for (p = strchr(path + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';

        if (mkdir(path, 0755) != 0 && errno != EEXIST) {
            *p = '/';
            return -1;
        }

        *p = '/';
    }

    return 0;
}


static int
mc_fetch_fsync_dir(const char *path)
{
    int  fd, rc;

    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }

    rc = fsync(fd);
    close(fd);

    return rc;
}


/*
 * The temporary file lives in <path>/.tmp: the same file system as its
 * final place (rename() is atomic there), and never a storage key (keys
 * start with an organization id, never with a dot).
 */
static int
mc_fetch_local_open(mc_fetch_ctx_t *ctx)
{
    size_t       len;
    const char  *dir = ctx->job->conf->path;

    len = strlen(dir) + sizeof("/.tmp/") + strlen(ctx->job->media_id)
          + sizeof(".XXXXXX");

    ctx->tmp = malloc(len);
    if (ctx->tmp == NULL) {
        return -1;
    }

    snprintf(ctx->tmp, len, "%s/.tmp", dir);

    if (mkdir(ctx->tmp, 0700) != 0 && errno != EEXIST) {
        return -1;
    }

    snprintf(ctx->tmp, len, "%s/.tmp/%s.XXXXXX", dir, ctx->job->media_id);

    ctx->fd = mkostemp(ctx->tmp, O_CLOEXEC);
    if (ctx->fd < 0) {
        free(ctx->tmp);
        ctx->tmp = NULL;
        return -1;
    }

    fchmod(ctx->fd, 0644);

    return 0;
}


static int
mc_fetch_local_commit(mc_fetch_ctx_t *ctx, const char *key, const char *mime,
    const unsigned char *digest)
{
    char        *path, *slash;
    size_t       len;
    const char  *dir = ctx->job->conf->path;

    len = strlen(dir) + 1 + strlen(key) + 1;

    path = malloc(len);
    if (path == NULL) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "store: out of memory");
        return -1;
    }

    snprintf(path, len, "%s/%s", dir, key);

    /*
     * The data on disk before the name: after a crash the key names the
     * whole file or nothing.  The same media stored twice (two attempts
     * whose leases crossed) replaces one file with an identical one.
     */
    if (fsync(ctx->fd) != 0 || mc_fetch_mkdirs(path) != 0
        || rename(ctx->tmp, path) != 0)
    {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "store: %s", strerror(errno));
        free(path);
        return -1;
    }

    free(ctx->tmp);
    ctx->tmp = NULL;

    slash = strrchr(path, '/');
    *slash = '\0';

    if (mc_fetch_fsync_dir(path) != 0) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "store: fsync of the directory: %s",
                      strerror(errno));
        free(path);
        return -1;
    }

    free(path);

    return 0;
}


static void
mc_fetch_close(mc_fetch_ctx_t *ctx)
{
    if (ctx->fd >= 0) {
        close(ctx->fd);
        ctx->fd = -1;
    }

    if (ctx->tmp) {
        unlink(ctx->tmp);
        free(ctx->tmp);
        ctx->tmp = NULL;
    }
}


/* the S3 store: an anonymous temporary file, then one signed PUT */

static int
mc_fetch_tmp_open(mc_fetch_ctx_t *ctx)
{
    const char  *dir = ctx->job->conf->tmp_dir;

    ctx->fd = open(dir ? dir : "/tmp", O_RDWR | O_TMPFILE | O_CLOEXEC, 0600);

    return ctx->fd < 0 ? -1 : 0;
}


static size_t
mc_fetch_read_cb(char *p, size_t size, size_t n, void *data)
{
    mc_fetch_ctx_t  *ctx = data;
    ssize_t          r;

    do {
        r = read(ctx->fd, p, size * n);
    } while (r < 0 && errno == EINTR);

    return r < 0 ? CURL_READFUNC_ABORT : (size_t) r;
}


/*
 * One request to S3, path-style (works with every S3-compatible server):
 * a PUT of the temporary file (upload) or a DELETE, signed by libcurl's
 * AWS SigV4 with the caller's headers (the payload hash among them).
 * Returns 0 with ctx->status, or -1 with the error set.
 */
static int
mc_fetch_s3_request(mc_fetch_ctx_t *ctx, const char *bucket,
    const char *prefix, const char *key, struct curl_slist *hdrs, int upload)
{
    char                                   *url, *sigv4;
    size_t                                  len, slen;
    CURLcode                                rc;
    const ngx_http_metacloud_fetch_conf_t  *conf = ctx->job->conf;

    len = strlen(conf->s3_endpoint) + strlen(bucket) + strlen(prefix)
          + strlen(key) + 3;
    slen = strlen(conf->s3_region) + sizeof("aws:amz::s3");
    url = malloc(len);
    sigv4 = malloc(slen);

    if (url == NULL || sigv4 == NULL) {
        rc = CURLE_OUT_OF_MEMORY;
        goto failed;
    }

    snprintf(url, len, "%s/%s/%s%s", conf->s3_endpoint, bucket, prefix, key);
    snprintf(sigv4, slen, "aws:amz:%s:s3", conf->s3_region);

    /* a fresh handle's options: the bearer token must not go to S3 */
    if (mc_fetch_setup(ctx, url) != 0) {
        rc = CURLE_OPERATION_TIMEDOUT;
        goto failed;
    }

    if (upload) {
        curl_easy_setopt(ctx->curl, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(ctx->curl, CURLOPT_INFILESIZE_LARGE,
                         (curl_off_t) ctx->size);
        curl_easy_setopt(ctx->curl, CURLOPT_READFUNCTION, mc_fetch_read_cb);
        curl_easy_setopt(ctx->curl, CURLOPT_READDATA, ctx);

    } else {
        curl_easy_setopt(ctx->curl, CURLOPT_CUSTOMREQUEST, "DELETE");
    }

    curl_easy_setopt(ctx->curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(ctx->curl, CURLOPT_AWS_SIGV4, sigv4);
    curl_easy_setopt(ctx->curl, CURLOPT_USERNAME, conf->s3_key_id);
    curl_easy_setopt(ctx->curl, CURLOPT_PASSWORD, conf->s3_secret);
    curl_easy_setopt(ctx->curl, CURLOPT_WRITEFUNCTION, mc_fetch_body_cb);
    curl_easy_setopt(ctx->curl, CURLOPT_WRITEDATA, ctx);

    rc = curl_easy_perform(ctx->curl);

    if (rc == CURLE_OK) {
        curl_easy_getinfo(ctx->curl, CURLINFO_RESPONSE_CODE, &ctx->status);
    }

failed:

    /* the handle must not keep pointers to what is freed here */
    curl_easy_setopt(ctx->curl, CURLOPT_HTTPHEADER, NULL);
    free(url);
    free(sigv4);

    if (rc != CURLE_OK) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "s3: %s (curl %ld)", curl_easy_strerror(rc), (long) rc);
        return -1;
    }

    return 0;
}


static int
mc_fetch_s3_commit(mc_fetch_ctx_t *ctx, const char *key, const char *mime,
    const unsigned char *digest)
{
    int                                     rc;
    char                                    hex[65], b64[45];
    char                                    h_sha[100], h_sum[100], h_ct[300];
    struct curl_slist                      *hdrs, *h;
    const ngx_http_metacloud_fetch_conf_t  *conf = ctx->job->conf;

    mc_sha256_digest_hex(digest, hex);
    mc_sha256_base64(digest, b64);

    /* a signed payload: the hash S3 checks the body against */
    snprintf(h_sha, sizeof(h_sha), "x-amz-content-sha256: %s", hex);
    snprintf(h_sum, sizeof(h_sum), "x-amz-checksum-sha256: %s", b64);
    snprintf(h_ct, sizeof(h_ct), "Content-Type: %.250s",
             mime ? mime : "application/octet-stream");

    hdrs = NULL;
    h = NULL;

    if ((h = curl_slist_append(hdrs, h_sha)) != NULL) {
        hdrs = h;
        h = curl_slist_append(hdrs, h_sum);
    }

    if (h != NULL) {
        h = curl_slist_append(hdrs, h_ct);
    }

    if (h == NULL || lseek(ctx->fd, 0, SEEK_SET) != 0) {
        curl_slist_free_all(hdrs);
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "s3: %s (curl %ld)",
                      curl_easy_strerror(CURLE_OUT_OF_MEMORY),
                      (long) CURLE_OUT_OF_MEMORY);
        return -1;
    }

    rc = mc_fetch_s3_request(ctx, conf->s3_bucket, conf->s3_prefix, key,
                             hdrs, 1);
    curl_slist_free_all(hdrs);

    if (rc != 0) {
        return -1;
    }

    if (ctx->status != 200) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "s3: PUT answered HTTP %ld", ctx->status);
        return -1;
    }

    return 0;
}


/* removal ------------------------------------------------------------- */

static int mc_fetch_remove_s3(mc_fetch_ctx_t *ctx, const char *bucket,
    const char *key);


int
ngx_http_metacloud_fetch_remove(const ngx_http_metacloud_fetch_conf_t *conf,
    const char *provider, const char *bucket, const char *key, char *error,
    size_t size)
{
    int                          rc;
    char                        *path;
    size_t                       len;
    const char                  *p;
    mc_fetch_ctx_t               ctx;
    ngx_http_metacloud_fetch_t   f;

    memset(&f, 0, sizeof(ngx_http_metacloud_fetch_t));
    f.conf = conf;

    /*
     * A key is relative and never climbs: a row written by hand (or by a
     * platform) must not make a worker remove a file outside the storage.
     */
    for (p = key; *p; p += strcspn(p, "/"), p += (*p == '/')) {
        if (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0')) {
            break;
        }
    }

    if (key[0] == '\0' || key[0] == '/' || *p != '\0') {
        snprintf(error, size, "refused: the key leaves the storage");
        return -1;
    }

    if (strcmp(provider, "local") == 0) {
        if (conf->path == NULL) {
            snprintf(error, size, "no local storage configured here");
            return -1;
        }

        len = strlen(conf->path) + strlen(key) + 2;
        path = malloc(len);

        if (path == NULL) {
            snprintf(error, size, "out of memory");
            return -1;
        }

        snprintf(path, len, "%s/%s", conf->path, key);

        rc = 0;

        if (unlink(path) != 0 && errno != ENOENT) {
            snprintf(error, size, "unlink() failed: %s", strerror(errno));
            rc = -1;
        }

        free(path);
        return rc;
    }

    if (strcmp(provider, "s3") != 0 || conf->s3_endpoint == NULL) {
        snprintf(error, size, "no %.20s storage configured here", provider);
        return -1;
    }

    memset(&ctx, 0, sizeof(mc_fetch_ctx_t));
    ctx.job = &f;
    ctx.fd = -1;
    ctx.deadline = mc_fetch_now() + (uint64_t) conf->timeout;
    ctx.curl = curl_easy_init();

    if (ctx.curl == NULL) {
        snprintf(error, size, "out of memory");
        return -1;
    }

    rc = mc_fetch_remove_s3(&ctx, bucket ? bucket : conf->s3_bucket, key);

    if (rc != 0) {
        snprintf(error, size, "%s", f.error);
    }

    curl_easy_cleanup(ctx.curl);
    free(ctx.body);

    return rc;
}


/* a DELETE signed like the uploads; S3 answers 204 for a missing key too */

static int
mc_fetch_remove_s3(mc_fetch_ctx_t *ctx, const char *bucket, const char *key)
{
    int                 rc;
    struct curl_slist  *hdrs;

    /* the hash of an empty body */
    hdrs = curl_slist_append(NULL, "x-amz-content-sha256: "
                             "e3b0c44298fc1c149afbf4c8996fb924"
                             "27ae41e4649b934ca495991b7852b855");
    if (hdrs == NULL) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "s3: out of memory");
        return -1;
    }

    rc = mc_fetch_s3_request(ctx, bucket, "", key, hdrs, 0);
    curl_slist_free_all(hdrs);

    if (rc != 0) {
        return -1;
    }

    if (ctx->status != 204 && ctx->status != 200 && ctx->status != 404) {
        mc_fetch_fail(ctx, NGX_HTTP_METACLOUD_FETCH_RETRY,
                      "s3: DELETE answered HTTP %ld", ctx->status);
        return -1;
    }

    return 0;
}
