
/*
 * The pure core of ngx_http_metacloud_module: signature check, body
 * sanitising and normalisation of WhatsApp Cloud API webhooks into the
 * events that metacloud_ingest() stores.  No nginx header may be included
 * here: unit tests, the metacloud-normalize tool and fuzzers link the core
 * alone.  The event format is written down in docs/EVENTS.md and
 * sql/events.schema.json.
 */


#ifndef _MC_CORE_H_INCLUDED_
#define _MC_CORE_H_INCLUDED_


#include <stddef.h>
#include <stdint.h>


/* the version of the event objects ("v" of every event) */
#define MC_EVENT_VERSION     1

/* the schema version (sql/) this build of the module needs at least */
#define MC_SCHEMA_VERSION    11     /* metacloud_ingest_group() */


typedef struct {
    size_t                len;
    const unsigned char  *data;
} mc_str_t;


typedef enum {
    MC_SIG_OK = 0,
    MC_SIG_MISSING,           /* no header, or an empty one */
    MC_SIG_MALFORMED,         /* not "sha256=" + 64 hex digits */
    MC_SIG_MISMATCH           /* well formed, no secret matches */
} mc_sig_rc_e;


/*
 * Checks an X-Hub-Signature-256 header value ("sha256=<64 hex>", hex in
 * either case) against HMAC-SHA256(secret, body) for each secret in turn;
 * any one matching passes.  hdr may be NULL (missing).  Constant time in
 * the comparison (CRYPTO_memcmp).
 */
mc_sig_rc_e mc_signature_check(const unsigned char *hdr, size_t hdr_len,
    const unsigned char *body, size_t body_len,
    const mc_str_t *secrets, size_t nsecrets);

const char *mc_signature_rc_str(mc_sig_rc_e rc);


/*
 * The pre-pass: returns a malloc()ed copy of the body in which, inside JSON
 * strings only, every sequence jansson would refuse is replaced so that the
 * document still parses: invalid UTF-8 and lone surrogate escapes become
 * U+FFFD, raw control bytes become \u00XX escapes.  Bytes outside strings
 * are left alone, so broken JSON stays broken.  *out_len receives the new
 * length; NULL on allocation failure.
 */
unsigned char *mc_prepass(const unsigned char *body, size_t len,
    size_t *out_len);


typedef enum {
    MC_BODY_OK = 0,           /* a whatsapp_business_account webhook */
    MC_BODY_INVALID_JSON,     /* not JSON at all */
    MC_BODY_NOT_WEBHOOK,      /* JSON, but not {"object":..,"entry":[..]} */
    MC_BODY_OTHER_OBJECT      /* a webhook for another object type */
} mc_body_rc_e;


/* the eventType values of docs/EVENTS.md, in a fixed order */
#define MC_EVENT_TYPES(X)                                                     \
    X(MESSAGE,         "message")                                             \
    X(STATUS,          "status")                                              \
    X(ECHO,            "echo")                                                \
    X(HISTORY_MESSAGE, "history_message")                                     \
    X(HISTORY_MEDIA,   "history_media")                                       \
    X(HISTORY_ERROR,   "history_error")                                       \
    X(STATE_SYNC,      "state_sync")                                          \
    X(ERROR,           "error")                                               \
    X(GENERIC,         "generic")

#define MC_EVENT_TYPE_ENUM(id, name)  MC_EVENT_##id,

typedef enum {
    MC_EVENT_TYPES(MC_EVENT_TYPE_ENUM)
    MC_EVENT_NTYPES
} mc_event_type_e;


typedef struct {
    mc_body_rc_e          rc;
    char                  error[200];     /* why, when rc != MC_BODY_OK */

    char                 *events;         /* malloc()ed, compact JSON array */
    size_t                events_len;
    size_t                nevents;
    size_t                ntypes[MC_EVENT_NTYPES];  /* events per type */
} mc_normalized_t;


/*
 * Turns one raw body into the array of normalised events (docs/EVENTS.md).
 * Always fills out->events with a JSON array ("[]" when rc != MC_BODY_OK).
 * Returns 0, or -1 on allocation failure anywhere, jansson's parser
 * included (out is then freed already): a result is never partial, and a
 * body is invalid JSON only when no allocation failed.
 *
 * To see jansson's failures, the first call wraps jansson's allocator
 * (json_set_alloc_funcs(), chained to the one in place, again if someone
 * replaces it): call mc_core_init(), or make the first call, or install other allocation
 * functions, before other threads use jansson.
 */
int mc_normalize(const unsigned char *body, size_t len, mc_normalized_t *out);

/*
 * Installs the allocator wrapper that mc_normalize() would install on its
 * first call: a program with threads calls it before they start.
 */
void mc_core_init(void);

void mc_normalized_free(mc_normalized_t *out);

const char *mc_body_rc_str(mc_body_rc_e rc);

/* "message", "status", ... (the eventType of docs/EVENTS.md) */
const char *mc_event_type_str(mc_event_type_e type);


#endif /* _MC_CORE_H_INCLUDED_ */
