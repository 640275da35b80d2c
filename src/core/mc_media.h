
/*
 * The pure part of the media downloads: the Graph API media lookup
 * answer, the file extension of a MIME type, the SHA-256 that Meta gives
 * as base64 (webhooks) or hex (lookups), the storage key, and the
 * scrubbing of a secret out of an error text.  No nginx header, no I/O:
 * the thread code (ngx_http_metacloud_fetch.c) uses these, unit tests
 * check them alone.
 */


#ifndef _MC_MEDIA_H_INCLUDED_
#define _MC_MEDIA_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


#define MC_SHA256_LEN        32

/*
 * the schema version (sql/) that brings the media queue's functions (5)
 * and those of the file cleanup (9)
 */
#define MC_MEDIA_SCHEMA_VERSION  9


typedef enum {
    MC_GRAPH_OK = 0,          /* url (and the rest) filled */
    MC_GRAPH_GONE,            /* the media id is unknown or deleted */
    MC_GRAPH_AUTH,            /* the token was refused */
    MC_GRAPH_ERROR            /* anything else: worth another attempt */
} mc_graph_rc_e;


typedef struct {
    char                 *url;            /* all malloc()ed, or NULL */
    char                 *mime_type;
    char                 *sha256;         /* as given: hex, or base64 */
    char                 *id;
    int64_t               file_size;      /* -1 when absent */
} mc_graph_media_t;


/*
 * Reads the answer to GET <graph>/<media id>: status is its HTTP status.
 * A 200 needs an http(s) "url"; "file_size" may be a number or a string.
 * Meta answers an unknown id with 400, code 100 (subcode 33), a deleted one
 * with 404: both are MC_GRAPH_GONE.  A refused token (401, or code 190) is
 * MC_GRAPH_AUTH.  err (at least 128 bytes) says why for every rc but OK;
 * it holds Meta's code and type, never its message (which could echo a
 * request).  Free m with mc_graph_media_free() whatever the rc.
 */
mc_graph_rc_e mc_graph_parse(long status, const char *body, size_t len,
    mc_graph_media_t *m, char *err, size_t err_size);

void mc_graph_media_free(mc_graph_media_t *m);


/*
 * The extension for a MIME type (parameters such as "; codecs=opus" and
 * case ignored): "jpg", "ogg", "pdf" ...; "bin" for anything unknown or
 * NULL.  Never taken from the sender's file name.
 */
const char *mc_media_ext(const char *mime);


/*
 * Decodes a SHA-256 given as 64 hex digits or as base64 (44 characters
 * with padding, 43 without; the URL-safe alphabet too) into 32 bytes.
 * Returns 0, or -1 when it is neither.
 */
int mc_sha256_decode(const char *s, unsigned char out[MC_SHA256_LEN]);

/* 1 when expected (hex or base64) is the digest, 0 otherwise */
int mc_sha256_match(const char *expected,
    const unsigned char digest[MC_SHA256_LEN]);

/* hex (65 bytes with the NUL) and base64 (45 bytes) of a digest */
void mc_sha256_digest_hex(const unsigned char digest[MC_SHA256_LEN],
    char out[65]);
void mc_sha256_base64(const unsigned char digest[MC_SHA256_LEN],
    char out[45]);


/*
 * The storage key "<organization>/<yyyy>/<mm>/<dd>/<media id>.<ext>",
 * malloc()ed.  day is "yyyy/mm/dd".  NULL when a part could escape its
 * directory or is not what it should be: the ids may hold only letters,
 * digits, '-', '_' and '.', may not start with '.', and are at most 128
 * bytes.  (NULL on allocation failure too.)
 */
char *mc_media_key(const char *org, const char *day, const char *media_id,
    const char *ext);


/*
 * Replaces every occurrence of secret in s (NUL-terminated, in place) by
 * "***": for error texts that could quote a request.  A secret shorter
 * than 4 bytes is left alone (it would mask ordinary words).
 */
void mc_scrub(char *s, const char *secret);


#endif /* _MC_MEDIA_H_INCLUDED_ */
