
/*
 * Internals of the normaliser, shared by its layers:
 *
 *   mc_normalize.c   the entry point, the walk of entries and changes, and
 *                    the dispatch of each field's arrays to their items
 *   mc_event.c       the event object, its keys and scope
 *   mc_message.c     messages, echoes, history messages, media
 *   mc_status.c      statuses
 *   mc_contact.c     value.contacts[] and state sync items
 *   mc_json.c        field tables, value converters, the allocator hook,
 *                    the post-parse walk, hashing
 *
 * Allocation failures: every function that allocates records a failure in
 * ctx->oom; a NULL value handed to mc_put() means "absent", never "failed".
 * mc_normalize() returns -1 as soon as ctx->oom is set, so no event is
 * ever built from a partial result.
 */


#ifndef _MC_NORMALIZE_INT_H_INCLUDED_
#define _MC_NORMALIZE_INT_H_INCLUDED_


#include <stddef.h>

#include <jansson.h>

#include "mc_core.h"


#define MC_SHA256_HEX_LEN  64

/* ids longer than this are shortened in keys and columns (mc_id()) */
#define MC_ID_MAX          200

/* how items hashed for keys are serialised (docs/EVENTS.md) */
#define MC_HASH_FLAGS                                                        \
    (JSON_SORT_KEYS | JSON_COMPACT | JSON_ENSURE_ASCII                       \
     | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY)


typedef struct {
    json_t        *events;
    int            oom;
    int            precise;            /* a real needs 17 digits */

    char           body_sha[MC_SHA256_HEX_LEN + 1];

    /* the change being walked */
    size_t         e;
    size_t         c;
    size_t         item;               /* running item number */
    json_t        *field;              /* string or NULL */
    json_t        *value;
    json_t        *contacts;           /* value.contacts[] or NULL */
    json_t        *waba_id;            /* owned string or NULL */
    json_t        *phone_number_id;    /* owned string or NULL */
    json_t        *display_phone;      /* owned string or NULL */
    json_t        *scope;              /* owned string or NULL */
} mc_ctx_t;


/* a value converter: a new reference, or NULL for "absent" */
typedef json_t *(*mc_conv_pt)(mc_ctx_t *ctx, json_t *v);

/*
 * One column of a sub-object: src[path[0]][path[1]][path[2]] (path[0]
 * NULL: src itself) converted by conv.  Tables end with a NULL column.
 */
typedef struct {
    const char    *column;
    const char    *path[3];
    mc_conv_pt     conv;
} mc_field_t;


typedef struct {
    const char    *raw;
    const char    *type;
} mc_map_t;


/* mc_prepass.c */
size_t mc_prepass_run(const unsigned char *p, size_t len,
    unsigned char *out);

/* mc_normalize.c */
void mc_change_reset(mc_ctx_t *ctx);

/* mc_event.c */
json_t *mc_event_new(mc_ctx_t *ctx, const char *event_type,
    json_t *payload, size_t idx, json_t *key, const char *invalid);
void mc_event_add(mc_ctx_t *ctx, json_t *ev);
void mc_invalid_event(mc_ctx_t *ctx, const char *event_type,
    json_t *payload, const char *invalid);
json_t *mc_id(mc_ctx_t *ctx, json_t *v);
json_t *mc_key_item(mc_ctx_t *ctx, size_t idx);
json_t *mc_key(mc_ctx_t *ctx, const char *fmt, ...);
int mc_scope_set(mc_ctx_t *ctx);

/* mc_message.c */
void mc_message_event(mc_ctx_t *ctx, json_t *item, const char *event_type,
    const char *source, const char *direction, json_t *thread);

/* mc_status.c */
void mc_on_status(mc_ctx_t *ctx, json_t *item);

/* mc_contact.c */
json_t *mc_contact_new(mc_ctx_t *ctx, json_t *contact);
json_t *mc_contact_find(mc_ctx_t *ctx, json_t *wa_id, json_t *user_id);
void mc_on_state_sync(mc_ctx_t *ctx, json_t *item);

/* mc_json.c */
void mc_put(mc_ctx_t *ctx, json_t *obj, const char *key, json_t *v);
void mc_put_fields(mc_ctx_t *ctx, json_t *obj, json_t *src,
    const mc_field_t *fields);
json_t *mc_object(mc_ctx_t *ctx);
json_t *mc_cstring(mc_ctx_t *ctx, const char *s);
json_t *mc_integer(mc_ctx_t *ctx, json_int_t n);
json_t *mc_string(mc_ctx_t *ctx, json_t *v);
json_t *mc_time(mc_ctx_t *ctx, json_t *v);
json_t *mc_int(mc_ctx_t *ctx, json_t *v);
json_t *mc_number(mc_ctx_t *ctx, json_t *v);
json_t *mc_bool(mc_ctx_t *ctx, json_t *v);
json_t *mc_flag(mc_ctx_t *ctx, json_t *v);
json_t *mc_sub_object(mc_ctx_t *ctx, json_t *v);
json_t *mc_ref_or_null(json_t *v);
int mc_same(json_t *a, json_t *b);
json_t *mc_get(json_t *obj, const char *k1, const char *k2);
const char *mc_map(const mc_map_t *map, const char *raw);
int mc_sanitize(mc_ctx_t *ctx, json_t *json);
int mc_real_needs_17(double d);
int mc_sha256_hex(const void *data, size_t len, char *hex);

void mc_alloc_begin(void);
int mc_alloc_failed(void);
void *mc_malloc(size_t size);
void mc_free(void *p);


#endif /* _MC_NORMALIZE_INT_H_INCLUDED_ */
