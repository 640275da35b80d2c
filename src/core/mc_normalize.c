
/*
 * Normalisation of one WhatsApp Cloud API webhook body into the array of
 * events that metacloud_ingest() stores.  The event format is the contract
 * of docs/EVENTS.md; sql/events.schema.json is its machine-readable form.
 *
 * Nothing in a body is trusted to have the documented type: every getter
 * here tolerates a missing key or a value of another type (jansson's
 * getters return NULL for them), and every item of every change of every
 * entry yields an event, marked "invalid" when it cannot be processed, so
 * that nothing signed is dropped silently.
 */


#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "mc_core.h"


#define MC_SHA256_HEX_LEN  64

/* how items hashed for keys are serialised (docs/EVENTS.md) */
#define MC_HASH_FLAGS                                                        \
    (JSON_SORT_KEYS | JSON_COMPACT | JSON_ENSURE_ASCII                       \
     | JSON_REAL_PRECISION(17) | JSON_ENCODE_ANY)

/*
 * Numbers are written with 15 significant digits when every real of the
 * body survives that (37.422 stays 37.422, not 37.421999999999997), else
 * with 17, which every double survives.
 */
#define MC_EVENTS_FLAGS(ctx)                                                 \
    (JSON_COMPACT | JSON_REAL_PRECISION((ctx)->precise ? 17 : 15))


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
    char          *scope;              /* malloc()ed */
} mc_ctx_t;


typedef struct {
    const char    *raw;
    const char    *type;
} mc_map_t;


static const mc_map_t  mc_message_types[] = {
    { "text",              "TEXT" },
    { "image",             "IMAGE" },
    { "video",             "VIDEO" },
    { "audio",             "AUDIO" },
    { "document",          "DOCUMENT" },
    { "sticker",           "STICKER" },
    { "location",          "LOCATION" },
    { "contacts",          "CONTACTS" },
    { "button",            "BUTTON" },
    { "interactive",       "INTERACTIVE" },
    { "reaction",          "REACTION" },
    { "order",             "ORDER" },
    { "system",            "SYSTEM" },
    { "request_welcome",   "REQUEST_WELCOME" },
    { "edit",              "EDIT" },
    { "revoke",            "REVOKE" },
    { "unsupported",       "UNSUPPORTED" },
    { "media_placeholder", "MEDIA_PLACEHOLDER" },
    { NULL,                NULL }
};


static const mc_map_t  mc_media_types[] = {
    { "image",             "IMAGE" },
    { "video",             "VIDEO" },
    { "audio",             "AUDIO" },
    { "document",          "DOCUMENT" },
    { "sticker",           "STICKER" },
    { NULL,                NULL }
};


static const mc_map_t  mc_status_types[] = {
    { "sent",              "SENT" },
    { "delivered",         "DELIVERED" },
    { "read",              "READ" },
    { "failed",            "FAILED" },
    { "played",            "PLAYED" },
    { "deleted",           "DELETED" },
    { "warning",           "WARNING" },
    { NULL,                NULL }
};


static void mc_walk_entry(mc_ctx_t *ctx, json_t *entry);
static void mc_walk_change(mc_ctx_t *ctx, json_t *change);
static void mc_walk_messages(mc_ctx_t *ctx);
static void mc_walk_echoes(mc_ctx_t *ctx);
static void mc_walk_history(mc_ctx_t *ctx);
static void mc_walk_state_sync(mc_ctx_t *ctx);
static void mc_walk_whole_value(mc_ctx_t *ctx);
static int mc_walk_array(mc_ctx_t *ctx, const char *name,
    void (*handler)(mc_ctx_t *ctx, json_t *item, const char *name));
static void mc_change_reset(mc_ctx_t *ctx);

static void mc_on_message(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_echo(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_hmedia(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_hmedia_echo(mc_ctx_t *ctx, json_t *item,
    const char *name);
static void mc_on_status(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_error(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_history(mc_ctx_t *ctx, json_t *item, const char *name);
static void mc_on_state_sync(mc_ctx_t *ctx, json_t *item,
    const char *name);
static void mc_message_event(mc_ctx_t *ctx, json_t *item,
    const char *event_type, const char *source, const char *direction,
    json_t *thread);

static json_t *mc_event_new(mc_ctx_t *ctx, const char *event_type,
    json_t *payload, size_t idx, json_t *key, const char *invalid);
static void mc_event_add(mc_ctx_t *ctx, json_t *ev);
static void mc_count_types(json_t *events, size_t *ntypes);
static void mc_invalid_event(mc_ctx_t *ctx, const char *event_type,
    json_t *payload, const char *invalid);

static json_t *mc_message_new(mc_ctx_t *ctx, json_t *item,
    const char *source, const char *direction, json_t *contact,
    json_t *thread);
static json_t *mc_media_new(mc_ctx_t *ctx, json_t *msg);
static json_t *mc_status_new(mc_ctx_t *ctx, json_t *item);
static json_t *mc_contact_new(mc_ctx_t *ctx, json_t *contact);
static json_t *mc_contact_find(mc_ctx_t *ctx, json_t *wa_id,
    json_t *user_id);
static json_t *mc_message_text(json_t *msg, const char *type);

static json_t *mc_key_item(mc_ctx_t *ctx, size_t idx);
static json_t *mc_key(mc_ctx_t *ctx, const char *fmt, ...);
static const char *mc_map(const mc_map_t *map, const char *raw);

static void mc_put(mc_ctx_t *ctx, json_t *obj, const char *key, json_t *v);
static json_t *mc_ref(json_t *v);
static json_t *mc_string(mc_ctx_t *ctx, json_t *v);
static json_t *mc_time(mc_ctx_t *ctx, json_t *v);
static json_t *mc_int(mc_ctx_t *ctx, json_t *v);
static json_t *mc_number(mc_ctx_t *ctx, json_t *v);
static json_t *mc_bool(json_t *v);
static int mc_same(json_t *a, json_t *b);
static json_t *mc_get(json_t *obj, const char *k1, const char *k2);
static int mc_sanitize(mc_ctx_t *ctx, json_t *json);
static int mc_real_needs_17(double d);
static int mc_sha256_hex(const void *data, size_t len, char *hex);
static void mc_set_error(mc_normalized_t *out, const char *fmt, ...);


int
mc_normalize(const unsigned char *body, size_t len, mc_normalized_t *out)
{
    size_t          n, e;
    json_t         *root, *object, *entry;
    mc_ctx_t        ctx;
    json_error_t    err;
    unsigned char  *clean;

    memset(out, 0, sizeof(mc_normalized_t));
    memset(&ctx, 0, sizeof(mc_ctx_t));

    if (body == NULL) {
        body = (const unsigned char *) "";
        len = 0;
    }

    root = NULL;

    ctx.events = json_array();
    if (ctx.events == NULL) {
        return -1;
    }

    /* the key hash is over the body as received, not the pre-pass copy */

    if (mc_sha256_hex(body, len, ctx.body_sha) != 0) {
        goto failed;
    }

    clean = mc_prepass(body, len, &n);
    if (clean == NULL) {
        goto failed;
    }

    root = json_loadb((const char *) clean, n, JSON_ALLOW_NUL, &err);

    free(clean);

    if (root == NULL) {
        out->rc = MC_BODY_INVALID_JSON;
        mc_set_error(out, "line %d, column %d: %s",
                     err.line, err.column, err.text);
        goto done;
    }

    if (mc_sanitize(&ctx, root) != 0) {
        goto failed;
    }

    if (!json_is_object(root)) {
        out->rc = MC_BODY_NOT_WEBHOOK;
        mc_set_error(out, "the body is not a JSON object");
        goto done;
    }

    object = json_object_get(root, "object");

    if (!json_is_string(object)) {
        out->rc = MC_BODY_NOT_WEBHOOK;
        mc_set_error(out, "no \"object\" string");
        goto done;
    }

    if (strcmp(json_string_value(object), "whatsapp_business_account")
        != 0)
    {
        out->rc = MC_BODY_OTHER_OBJECT;
        mc_set_error(out, "\"object\" is \"%.100s\"",
                     json_string_value(object));
        goto done;
    }

    if (!json_is_array(json_object_get(root, "entry"))) {
        out->rc = MC_BODY_NOT_WEBHOOK;
        mc_set_error(out, "no \"entry\" array");
        goto done;
    }

    json_array_foreach(json_object_get(root, "entry"), e, entry) {
        ctx.e = e;
        mc_walk_entry(&ctx, entry);

        if (ctx.oom) {
            goto failed;
        }
    }

    out->rc = MC_BODY_OK;

done:

    /* an invalid body yields no event: the raw body alone is kept */

    if (out->rc != MC_BODY_OK) {
        json_array_clear(ctx.events);
    }

    out->nevents = json_array_size(ctx.events);
    mc_count_types(ctx.events, out->ntypes);
    out->events = json_dumps(ctx.events, MC_EVENTS_FLAGS(&ctx));

    if (out->events == NULL) {
        goto failed;
    }

    out->events_len = strlen(out->events);

    json_decref(ctx.events);
    json_decref(root);

    return 0;

failed:

    mc_change_reset(&ctx);
    json_decref(ctx.events);
    json_decref(root);
    mc_normalized_free(out);

    return -1;
}


void
mc_normalized_free(mc_normalized_t *out)
{
    free(out->events);
    out->events = NULL;
    out->events_len = 0;
    out->nevents = 0;
    memset(out->ntypes, 0, sizeof(out->ntypes));
}


#define MC_EVENT_TYPE_NAME(id, name)  name,

static const char  *mc_event_type_names[] = {
    MC_EVENT_TYPES(MC_EVENT_TYPE_NAME)
    NULL
};


const char *
mc_event_type_str(mc_event_type_e type)
{
    return type < MC_EVENT_NTYPES ? mc_event_type_names[type] : "unknown";
}


/* the metrics count events by type: every eventType is one of the list */

static void
mc_count_types(json_t *events, size_t *ntypes)
{
    size_t       i, t;
    const char  *type;

    memset(ntypes, 0, MC_EVENT_NTYPES * sizeof(size_t));

    for (i = 0; i < json_array_size(events); i++) {
        type = json_string_value(json_object_get(json_array_get(events, i),
                                                 "eventType"));

        for (t = 0; type != NULL && t < MC_EVENT_NTYPES; t++) {
            if (strcmp(type, mc_event_type_names[t]) == 0) {
                ntypes[t]++;
                break;
            }
        }
    }
}


const char *
mc_body_rc_str(mc_body_rc_e rc)
{
    switch (rc) {
    case MC_BODY_OK:
        return "ok";
    case MC_BODY_INVALID_JSON:
        return "invalid_json";
    case MC_BODY_NOT_WEBHOOK:
        return "not_webhook";
    case MC_BODY_OTHER_OBJECT:
        return "other_object";
    }

    return "unknown";
}


static void
mc_walk_entry(mc_ctx_t *ctx, json_t *entry)
{
    size_t   c;
    json_t  *changes, *change;

    mc_change_reset(ctx);

    ctx->c = 0;
    ctx->item = 0;
    ctx->waba_id = mc_string(ctx, json_object_get(entry, "id"));

    if (!json_is_object(entry)) {
        mc_invalid_event(ctx, "generic", entry, "entry is not an object");
        mc_change_reset(ctx);
        return;
    }

    changes = json_object_get(entry, "changes");

    if (!json_is_array(changes)) {
        mc_invalid_event(ctx, "generic", entry,
                         "entry without a changes array");
        mc_change_reset(ctx);
        return;
    }

    json_array_foreach(changes, c, change) {
        ctx->c = c;
        mc_walk_change(ctx, change);

        if (ctx->oom) {
            break;
        }
    }

    mc_change_reset(ctx);
}


static void
mc_walk_change(mc_ctx_t *ctx, json_t *change)
{
    json_t      *metadata, *v;
    const char  *field, *waba;

    json_decref(ctx->phone_number_id);
    json_decref(ctx->display_phone);
    free(ctx->scope);

    ctx->phone_number_id = NULL;
    ctx->display_phone = NULL;
    ctx->scope = NULL;
    ctx->item = 0;

    v = json_object_get(change, "field");
    ctx->field = json_is_string(v) ? v : NULL;
    ctx->value = json_object_get(change, "value");
    ctx->contacts = json_object_get(ctx->value, "contacts");

    if (!json_is_array(ctx->contacts)) {
        ctx->contacts = NULL;
    }

    metadata = json_object_get(ctx->value, "metadata");

    ctx->phone_number_id = mc_string(ctx,
                                 json_object_get(metadata, "phone_number_id"));
    ctx->display_phone = mc_string(ctx,
                            json_object_get(metadata, "display_phone_number"));

    if (ctx->phone_number_id != NULL
        && json_string_length(ctx->phone_number_id) > 0)
    {
        ctx->scope = strdup(json_string_value(ctx->phone_number_id));

    } else {
        /* fields without a phone number (account, templates) */
        waba = ctx->waba_id ? json_string_value(ctx->waba_id) : "";
        ctx->scope = malloc(sizeof("waba:") + strlen(waba));

        if (ctx->scope != NULL) {
            strcpy(ctx->scope, "waba:");
            strcat(ctx->scope, waba);
        }
    }

    if (ctx->scope == NULL) {
        ctx->oom = 1;
        return;
    }

    if (!json_is_object(change)) {
        mc_invalid_event(ctx, "generic", change, "change is not an object");
        return;
    }

    if (!json_is_object(ctx->value)) {
        mc_invalid_event(ctx, "generic", change,
                         "change without an object value");
        return;
    }

    field = ctx->field ? json_string_value(ctx->field) : "";

    if (strcmp(field, "messages") == 0) {
        mc_walk_messages(ctx);

    } else if (strcmp(field, "smb_message_echoes") == 0) {
        mc_walk_echoes(ctx);

    } else if (strcmp(field, "history") == 0) {
        mc_walk_history(ctx);

    } else if (strcmp(field, "smb_app_state_sync") == 0) {
        mc_walk_state_sync(ctx);

    } else {
        ctx->item = 1;
        mc_event_add(ctx, mc_event_new(ctx, "generic", ctx->value, 0,
                                       mc_key_item(ctx, 0), NULL));
    }
}


static void
mc_change_reset(mc_ctx_t *ctx)
{
    json_decref(ctx->waba_id);
    json_decref(ctx->phone_number_id);
    json_decref(ctx->display_phone);
    free(ctx->scope);

    ctx->waba_id = NULL;
    ctx->phone_number_id = NULL;
    ctx->display_phone = NULL;
    ctx->scope = NULL;
    ctx->field = NULL;
    ctx->value = NULL;
    ctx->contacts = NULL;
}


/* a change without the arrays its field should have: keep the whole value */

static void
mc_walk_whole_value(mc_ctx_t *ctx)
{
    mc_event_add(ctx, mc_event_new(ctx, "generic", ctx->value, ctx->item,
                                   mc_key_item(ctx, ctx->item), NULL));
    ctx->item++;
}


/*
 * The known arrays of a change.  A change that carries none of them still
 * yields one generic event with the whole value, so that a new kind of
 * notification on a known field is kept.
 */

static void
mc_walk_messages(mc_ctx_t *ctx)
{
    int  n;

    n = mc_walk_array(ctx, "messages", mc_on_message);
    n += mc_walk_array(ctx, "statuses", mc_on_status);
    n += mc_walk_array(ctx, "errors", mc_on_error);

    if (n == 0) {
        mc_walk_whole_value(ctx);
    }
}


static void
mc_walk_echoes(mc_ctx_t *ctx)
{
    if (mc_walk_array(ctx, "message_echoes", mc_on_echo) == 0) {
        mc_walk_whole_value(ctx);
    }
}


static void
mc_walk_history(mc_ctx_t *ctx)
{
    int  n;

    n = mc_walk_array(ctx, "history", mc_on_history);
    n += mc_walk_array(ctx, "messages", mc_on_hmedia);
    n += mc_walk_array(ctx, "message_echoes", mc_on_hmedia_echo);

    if (n == 0) {
        mc_walk_whole_value(ctx);
    }
}


static void
mc_walk_state_sync(mc_ctx_t *ctx)
{
    if (mc_walk_array(ctx, "state_sync", mc_on_state_sync) == 0) {
        mc_walk_whole_value(ctx);
    }
}


/*
 * Calls the handler for every element of value[name]; returns 0 when the
 * key is absent, 1 otherwise.  A present key that is not an array gives
 * one invalid generic event: its content is not dropped silently.
 */

static int
mc_walk_array(mc_ctx_t *ctx, const char *name,
    void (*handler)(mc_ctx_t *ctx, json_t *item, const char *name))
{
    size_t   i;
    json_t  *arr, *item;
    char     reason[64];

    arr = json_object_get(ctx->value, name);

    if (arr == NULL) {
        return 0;
    }

    if (!json_is_array(arr)) {
        snprintf(reason, sizeof(reason), "%s is not an array", name);
        mc_invalid_event(ctx, "generic", arr, reason);
        return 1;
    }

    json_array_foreach(arr, i, item) {
        if (ctx->oom) {
            break;
        }

        handler(ctx, item, name);
    }

    return 1;
}


static void
mc_on_message(mc_ctx_t *ctx, json_t *item, const char *name)
{
    mc_message_event(ctx, item, "message", "webhook", "INBOUND", NULL);
}


static void
mc_on_echo(mc_ctx_t *ctx, json_t *item, const char *name)
{
    mc_message_event(ctx, item, "echo", "echo", "OUTBOUND", NULL);
}


static void
mc_on_hmedia(mc_ctx_t *ctx, json_t *item, const char *name)
{
    mc_message_event(ctx, item, "history_media", "history_media", "INBOUND",
                     NULL);
}


static void
mc_on_hmedia_echo(mc_ctx_t *ctx, json_t *item, const char *name)
{
    mc_message_event(ctx, item, "history_media", "history_media",
                     "OUTBOUND", NULL);
}


static void
mc_on_history(mc_ctx_t *ctx, json_t *item, const char *name)
{
    size_t   t, m;
    json_t  *threads, *thread, *messages, *msg;

    if (!json_is_object(item)) {
        mc_invalid_event(ctx, "history_error", item,
                         "history item is not an object");
        return;
    }

    threads = json_object_get(item, "threads");

    if (!json_is_array(threads)) {
        /* a declined or failed sync: errors[] and no threads */
        mc_event_add(ctx, mc_event_new(ctx, "history_error", item, ctx->item,
                                       mc_key_item(ctx, ctx->item), NULL));
        ctx->item++;
        return;
    }

    json_array_foreach(threads, t, thread) {
        messages = json_object_get(thread, "messages");

        if (!json_is_array(messages)) {
            mc_invalid_event(ctx, "history_message", thread,
                             "history thread without a messages array");
            continue;
        }

        json_array_foreach(messages, m, msg) {
            if (ctx->oom) {
                return;
            }

            mc_message_event(ctx, msg, "history_message", "history", NULL,
                             thread);
        }
    }
}


static void
mc_on_status(mc_ctx_t *ctx, json_t *item, const char *name)
{
    json_t      *id, *status, *who, *ev, *contact;
    const char  *keys[] = { "recipient_participant_user_id",
                            "recipient_participant_id",
                            "recipient_user_id",
                            "recipient_id" };
    size_t       k;

    if (!json_is_object(item)) {
        mc_invalid_event(ctx, "status", item, "status is not an object");
        return;
    }

    id = mc_string(ctx, json_object_get(item, "id"));

    if (id == NULL || json_string_length(id) == 0) {
        json_decref(id);
        mc_invalid_event(ctx, "status", item, "status without id");
        return;
    }

    status = mc_string(ctx, json_object_get(item, "status"));
    who = NULL;

    for (k = 0; k < sizeof(keys) / sizeof(keys[0]) && who == NULL; k++) {
        who = mc_string(ctx, json_object_get(item, keys[k]));
    }

    ev = mc_event_new(ctx, "status", item, ctx->item,
                      mc_key(ctx, "status:%s:%s:%s", json_string_value(id),
                             status ? json_string_value(status) : "",
                             who ? json_string_value(who) : ""),
                      NULL);
    ctx->item++;

    json_decref(id);
    json_decref(status);
    json_decref(who);

    if (ev == NULL) {
        return;
    }

    mc_put(ctx, ev, "status", mc_status_new(ctx, item));

    /* a group receipt names the participant: it is the better match */

    contact = mc_contact_find(ctx,
                  json_object_get(item, "recipient_participant_id"),
                  json_object_get(item, "recipient_participant_user_id"));

    if (contact == NULL) {
        contact = mc_contact_find(ctx, json_object_get(item, "recipient_id"),
                               json_object_get(item, "recipient_user_id"));
    }

    if (contact != NULL) {
        mc_put(ctx, ev, "contact", mc_contact_new(ctx, contact));
    }

    mc_event_add(ctx, ev);
}


static void
mc_on_error(mc_ctx_t *ctx, json_t *item, const char *name)
{
    mc_event_add(ctx, mc_event_new(ctx, "error", item, ctx->item,
                                   mc_key_item(ctx, ctx->item), NULL));
    ctx->item++;
}


static void
mc_on_state_sync(mc_ctx_t *ctx, json_t *item, const char *name)
{
    char     hex[MC_SHA256_HEX_LEN + 1];
    char    *dump;
    json_t  *ev, *c, *contact, *v;

    dump = json_dumps(item, MC_HASH_FLAGS);

    if (dump == NULL) {
        ctx->oom = 1;
        return;
    }

    if (mc_sha256_hex(dump, strlen(dump), hex) != 0) {
        free(dump);
        ctx->oom = 1;
        return;
    }

    free(dump);

    ev = mc_event_new(ctx, "state_sync", item, ctx->item,
                      mc_key(ctx, "sync:%s", hex),
                      json_is_object(item)
                      ? NULL : "state_sync item is not an object");
    ctx->item++;

    if (ev == NULL) {
        return;
    }

    if (json_is_object(item)) {
        c = json_object_get(item, "contact");

        contact = json_object();
        if (contact == NULL) {
            ctx->oom = 1;
            json_decref(ev);
            return;
        }

        mc_put(ctx, contact, "action",
               mc_string(ctx, json_object_get(item, "action")));
        mc_put(ctx, contact, "name",
               mc_string(ctx, json_object_get(c, "full_name")));
        mc_put(ctx, contact, "firstName",
               mc_string(ctx, json_object_get(c, "first_name")));
        mc_put(ctx, contact, "phoneNumber",
               mc_string(ctx, json_object_get(c, "phone_number")));
        mc_put(ctx, contact, "userId",
               mc_string(ctx, json_object_get(c, "user_id")));
        mc_put(ctx, contact, "username",
               mc_string(ctx, json_object_get(c, "username")));

        v = mc_get(item, "metadata", "timestamp");
        mc_put(ctx, contact, "timestamp", mc_time(ctx, v));

        mc_put(ctx, ev, "contact", contact);
    }

    mc_event_add(ctx, ev);
}


/*
 * One inbound message, echo, history message or history media follow-up.
 * direction NULL: a history message, whose direction is found by comparing
 * its sender with the business number.
 */

static void
mc_message_event(mc_ctx_t *ctx, json_t *item, const char *event_type,
    const char *source, const char *direction, json_t *thread)
{
    int          outbound, hmedia;
    json_t      *id, *ev, *contact, *from, *ctxt, *c;
    const char  *who_key, *who_user_key;

    if (!json_is_object(item)) {
        mc_invalid_event(ctx, event_type, item, "message is not an object");
        return;
    }

    id = mc_string(ctx, json_object_get(item, "id"));

    if (id == NULL || json_string_length(id) == 0) {
        json_decref(id);
        mc_invalid_event(ctx, event_type, item, "message without id");
        return;
    }

    hmedia = (strcmp(event_type, "history_media") == 0);

    ev = mc_event_new(ctx, event_type, item, ctx->item,
                      mc_key(ctx, "%s:%s", hmedia ? "hmedia" : "msg",
                             json_string_value(id)),
                      NULL);
    ctx->item++;

    json_decref(id);

    if (ev == NULL) {
        return;
    }

    if (direction == NULL) {
        from = mc_string(ctx, json_object_get(item, "from"));
        outbound = (from != NULL && mc_same(from, ctx->display_phone));
        direction = outbound ? "OUTBOUND" : "INBOUND";
        json_decref(from);
    }

    outbound = (strcmp(direction, "OUTBOUND") == 0);

    /* the counterpart of an outbound message is its recipient */

    who_key = outbound ? "to" : "from";
    who_user_key = outbound ? "to_user_id" : "from_user_id";

    contact = NULL;

    if (thread == NULL) {
        contact = mc_contact_find(ctx, json_object_get(item, who_key),
                                  json_object_get(item, who_user_key));
    }

    mc_put(ctx, ev, "message",
           mc_message_new(ctx, item, source, direction, contact, thread));

    if (strcmp(event_type, "history_message") != 0) {
        mc_put(ctx, ev, "media", mc_media_new(ctx, item));
    }

    if (thread != NULL) {
        ctxt = json_object_get(thread, "context");

        c = json_object();
        if (c == NULL) {
            ctx->oom = 1;
            json_decref(ev);
            return;
        }

        from = mc_string(ctx, json_object_get(ctxt, "wa_id"));
        if (from == NULL) {
            from = mc_string(ctx, json_object_get(thread, "id"));
        }

        mc_put(ctx, c, "waId", from);
        mc_put(ctx, c, "userId",
               mc_string(ctx, json_object_get(ctxt, "user_id")));
        mc_put(ctx, c, "username",
               mc_string(ctx, json_object_get(ctxt, "username")));
        mc_put(ctx, ev, "contact", c);

    } else if (contact != NULL && !hmedia) {
        mc_put(ctx, ev, "contact", mc_contact_new(ctx, contact));
    }

    mc_event_add(ctx, ev);
}


static json_t *
mc_event_new(mc_ctx_t *ctx, const char *event_type, json_t *payload,
    size_t idx, json_t *key, const char *invalid)
{
    json_t  *ev;

    if (key == NULL || ctx->oom) {
        json_decref(key);
        ctx->oom = 1;
        return NULL;
    }

    ev = json_object();
    if (ev == NULL) {
        json_decref(key);
        ctx->oom = 1;
        return NULL;
    }

    mc_put(ctx, ev, "v", json_integer(MC_EVENT_VERSION));
    mc_put(ctx, ev, "field", ctx->field ? mc_ref(ctx->field) : json_null());
    mc_put(ctx, ev, "eventType", json_string(event_type));
    mc_put(ctx, ev, "scope", json_string(ctx->scope));
    mc_put(ctx, ev, "webhookId", key);
    mc_put(ctx, ev, "wabaId",
           ctx->waba_id ? mc_ref(ctx->waba_id) : json_null());
    mc_put(ctx, ev, "phoneNumberId",
           ctx->phone_number_id ? mc_ref(ctx->phone_number_id) : json_null());
    mc_put(ctx, ev, "displayPhoneNumber",
           ctx->display_phone ? mc_ref(ctx->display_phone) : json_null());
    mc_put(ctx, ev, "entryIndex", json_integer((json_int_t) ctx->e));
    mc_put(ctx, ev, "changeIndex", json_integer((json_int_t) ctx->c));
    mc_put(ctx, ev, "itemIndex", json_integer((json_int_t) idx));

    if (invalid != NULL) {
        mc_put(ctx, ev, "invalid", json_string(invalid));
    }

    mc_put(ctx, ev, "payload", payload ? mc_ref(payload) : json_null());

    return ev;
}


static void
mc_event_add(mc_ctx_t *ctx, json_t *ev)
{
    if (ev == NULL) {
        ctx->oom = 1;
        return;
    }

    if (ctx->oom) {
        json_decref(ev);
        return;
    }

    if (json_array_append_new(ctx->events, ev) != 0) {
        ctx->oom = 1;
    }
}


/* an item that cannot be processed: kept, keyed by position, marked */

static void
mc_invalid_event(mc_ctx_t *ctx, const char *event_type, json_t *payload,
    const char *invalid)
{
    if (ctx->scope == NULL) {
        /* an entry-level problem: no change has set the scope yet */
        ctx->scope = malloc(sizeof("waba:")
                            + (ctx->waba_id
                               ? json_string_length(ctx->waba_id) : 0));
        if (ctx->scope == NULL) {
            ctx->oom = 1;
            return;
        }

        strcpy(ctx->scope, "waba:");

        if (ctx->waba_id) {
            strcat(ctx->scope, json_string_value(ctx->waba_id));
        }
    }

    mc_event_add(ctx, mc_event_new(ctx, event_type, payload, ctx->item,
                                   mc_key_item(ctx, ctx->item), invalid));
    ctx->item++;
}


static json_t *
mc_message_new(mc_ctx_t *ctx, json_t *item, const char *source,
    const char *direction, json_t *contact, json_t *thread)
{
    json_t      *m, *t, *v, *context, *obj, *errors, *tctx;
    const char  *raw, *type, *itype;

    m = json_object();
    if (m == NULL) {
        ctx->oom = 1;
        return NULL;
    }

    t = json_object_get(item, "type");
    raw = json_string_value(t);
    type = mc_map(mc_message_types, raw);

    if (type == NULL) {
        type = "UNKNOWN";
    }

    itype = NULL;

    if (strcmp(type, "INTERACTIVE") == 0) {
        itype = json_string_value(mc_get(item, "interactive", "type"));

        if (itype != NULL && strcmp(itype, "button_reply") == 0) {
            type = "BUTTON_REPLY";

        } else if (itype != NULL && strcmp(itype, "list_reply") == 0) {
            type = "LIST_REPLY";
        }
    }

    mc_put(ctx, m, "wamid", mc_string(ctx, json_object_get(item, "id")));
    mc_put(ctx, m, "direction", json_string(direction));
    mc_put(ctx, m, "source", json_string(source));
    mc_put(ctx, m, "from", mc_string(ctx, json_object_get(item, "from")));
    mc_put(ctx, m, "to", mc_string(ctx, json_object_get(item, "to")));
    mc_put(ctx, m, "fromUserId",
           mc_string(ctx, json_object_get(item, "from_user_id")));
    mc_put(ctx, m, "fromParentUserId",
           mc_string(ctx, json_object_get(item, "from_parent_user_id")));
    mc_put(ctx, m, "toUserId",
           mc_string(ctx, json_object_get(item, "to_user_id")));
    mc_put(ctx, m, "groupId",
           mc_string(ctx, json_object_get(item, "group_id")));
    mc_put(ctx, m, "type", json_string(type));
    mc_put(ctx, m, "rawType", t ? mc_string(ctx, t) : json_null());

    if (json_object_get(m, "rawType") == NULL) {
        mc_put(ctx, m, "rawType", json_null());
    }

    mc_put(ctx, m, "unsupportedType",
           mc_string(ctx, mc_get(item, "unsupported", "type")));
    mc_put(ctx, m, "timestamp",
           mc_time(ctx, json_object_get(item, "timestamp")));

    /* text: the body, caption, title or new text of an edit */

    v = NULL;

    if (raw != NULL && strcmp(raw, "edit") == 0) {
        obj = mc_get(item, "edit", "message");
        v = mc_message_text(obj, json_string_value(
                                     json_object_get(obj, "type")));

    } else if (strcmp(type, "BUTTON_REPLY") == 0) {
        v = mc_get(mc_get(item, "interactive", "button_reply"), "title",
                   NULL);

    } else if (strcmp(type, "LIST_REPLY") == 0) {
        v = mc_get(mc_get(item, "interactive", "list_reply"), "title", NULL);

    } else if (raw != NULL) {
        v = mc_message_text(item, raw);
    }

    mc_put(ctx, m, "text", mc_string(ctx, v));

    if (thread != NULL) {
        tctx = json_object_get(thread, "context");
        v = mc_string(ctx, json_object_get(tctx, "wa_id"));

        if (v == NULL) {
            v = mc_string(ctx, json_object_get(thread, "id"));
        }

        mc_put(ctx, m, "contactWaId", v);
        mc_put(ctx, m, "contactUserId",
               mc_string(ctx, json_object_get(tctx, "user_id")));
        mc_put(ctx, m, "contactUsername",
               mc_string(ctx, json_object_get(tctx, "username")));

    } else if (contact != NULL) {
        mc_put(ctx, m, "contactName",
               mc_string(ctx, mc_get(contact, "profile", "name")));
        mc_put(ctx, m, "contactWaId",
               mc_string(ctx, json_object_get(contact, "wa_id")));
        mc_put(ctx, m, "contactUserId",
               mc_string(ctx, json_object_get(contact, "user_id")));
        mc_put(ctx, m, "contactUsername",
               mc_string(ctx, mc_get(contact, "profile", "username")));
    }

    context = json_object_get(item, "context");

    mc_put(ctx, m, "contextMessageId",
           mc_string(ctx, json_object_get(context, "id")));
    mc_put(ctx, m, "contextFrom",
           mc_string(ctx, json_object_get(context, "from")));
    mc_put(ctx, m, "isForwarded",
           json_boolean(json_is_true(json_object_get(context, "forwarded"))));
    mc_put(ctx, m, "isFrequentlyForwarded",
           json_boolean(json_is_true(json_object_get(context,
                                                 "frequently_forwarded"))));
    mc_put(ctx, m, "forwardedCount",
           json_integer(json_is_true(json_object_get(context,
                                                 "frequently_forwarded"))
                        ? 5
                        : json_is_true(json_object_get(context, "forwarded"))
                          ? 1 : 0));
    mc_put(ctx, m, "referredProductCatalogId",
           mc_string(ctx, mc_get(context, "referred_product", "catalog_id")));
    mc_put(ctx, m, "referredProductRetailerId",
           mc_string(ctx, mc_get(context, "referred_product",
                                 "product_retailer_id")));

    obj = json_object_get(item, "location");

    if (json_is_object(obj)) {
        mc_put(ctx, m, "locationLatitude",
               mc_number(ctx, json_object_get(obj, "latitude")));
        mc_put(ctx, m, "locationLongitude",
               mc_number(ctx, json_object_get(obj, "longitude")));
        mc_put(ctx, m, "locationName",
               mc_string(ctx, json_object_get(obj, "name")));
        mc_put(ctx, m, "locationAddress",
               mc_string(ctx, json_object_get(obj, "address")));
        mc_put(ctx, m, "locationUrl",
               mc_string(ctx, json_object_get(obj, "url")));
    }

    obj = json_object_get(item, "interactive");

    if (json_is_object(obj)) {
        mc_put(ctx, m, "interactiveType",
               mc_string(ctx, json_object_get(obj, "type")));
        mc_put(ctx, m, "buttonPayload",
               mc_string(ctx, mc_get(obj, "button_reply", "id")));
        mc_put(ctx, m, "buttonText",
               mc_string(ctx, mc_get(obj, "button_reply", "title")));
        mc_put(ctx, m, "listId",
               mc_string(ctx, mc_get(obj, "list_reply", "id")));
        mc_put(ctx, m, "listTitle",
               mc_string(ctx, mc_get(obj, "list_reply", "title")));
        mc_put(ctx, m, "listDescription",
               mc_string(ctx, mc_get(obj, "list_reply", "description")));
    }

    obj = json_object_get(item, "button");

    if (json_is_object(obj)) {
        mc_put(ctx, m, "buttonPayload",
               mc_string(ctx, json_object_get(obj, "payload")));
        mc_put(ctx, m, "buttonText",
               mc_string(ctx, json_object_get(obj, "text")));
    }

    obj = json_object_get(item, "reaction");

    if (json_is_object(obj)) {
        /* a removed reaction: no emoji key, or an empty one */
        v = mc_string(ctx, json_object_get(obj, "emoji"));

        if (v != NULL && json_string_length(v) == 0) {
            json_decref(v);
            v = NULL;
        }

        mc_put(ctx, m, "reactionEmoji", v ? v : json_null());
        mc_put(ctx, m, "reactionMessageId",
               mc_string(ctx, json_object_get(obj, "message_id")));
    }

    v = mc_get(item, "edit", "original_message_id");

    if (v == NULL) {
        v = mc_get(item, "revoke", "original_message_id");
    }

    mc_put(ctx, m, "originalMessageId", mc_string(ctx, v));

    errors = json_object_get(item, "errors");
    obj = json_array_get(errors, 0);

    if (json_is_object(obj)) {
        mc_put(ctx, m, "errorCode", mc_int(ctx, json_object_get(obj, "code")));
        mc_put(ctx, m, "errorTitle",
               mc_string(ctx, json_object_get(obj, "title")));
    }

    obj = json_object_get(item, "referral");

    if (json_is_object(obj)) {
        mc_put(ctx, m, "referral", mc_ref(obj));
    }

    mc_put(ctx, m, "historyStatus",
           mc_string(ctx, mc_get(item, "history_context", "status")));

    return m;
}


/* the text of a message of a given type, or NULL */

static json_t *
mc_message_text(json_t *msg, const char *type)
{
    if (type == NULL) {
        return NULL;
    }

    if (strcmp(type, "text") == 0) {
        return mc_get(msg, "text", "body");
    }

    if (strcmp(type, "image") == 0 || strcmp(type, "video") == 0
        || strcmp(type, "document") == 0)
    {
        return mc_get(msg, type, "caption");
    }

    if (strcmp(type, "button") == 0) {
        return mc_get(msg, "button", "text");
    }

    if (strcmp(type, "order") == 0) {
        return mc_get(msg, "order", "text");
    }

    if (strcmp(type, "system") == 0) {
        return mc_get(msg, "system", "body");
    }

    return NULL;
}


/* the media of a message (for an edit: of its new message), or NULL */

static json_t *
mc_media_new(mc_ctx_t *ctx, json_t *item)
{
    json_t      *msg, *obj, *id, *media;
    const char  *raw, *type;

    msg = item;
    raw = json_string_value(json_object_get(msg, "type"));

    if (raw != NULL && strcmp(raw, "edit") == 0) {
        msg = mc_get(item, "edit", "message");
        raw = json_string_value(json_object_get(msg, "type"));
    }

    type = mc_map(mc_media_types, raw);

    if (type == NULL) {
        return NULL;
    }

    obj = json_object_get(msg, raw);
    id = mc_string(ctx, json_object_get(obj, "id"));

    if (id == NULL) {
        return NULL;
    }

    media = json_object();
    if (media == NULL) {
        json_decref(id);
        ctx->oom = 1;
        return NULL;
    }

    mc_put(ctx, media, "mediaId", id);
    mc_put(ctx, media, "type", json_string(type));
    mc_put(ctx, media, "mimeType",
           mc_string(ctx, json_object_get(obj, "mime_type")));
    mc_put(ctx, media, "sha256",
           mc_string(ctx, json_object_get(obj, "sha256")));
    mc_put(ctx, media, "fileName",
           mc_string(ctx, json_object_get(obj, "filename")));
    mc_put(ctx, media, "caption",
           mc_string(ctx, json_object_get(obj, "caption")));
    mc_put(ctx, media, "downloadUrl",
           mc_string(ctx, json_object_get(obj, "url")));

    if (strcmp(raw, "audio") == 0) {
        mc_put(ctx, media, "voice", mc_bool(json_object_get(obj, "voice")));

    } else if (strcmp(raw, "sticker") == 0) {
        mc_put(ctx, media, "animated",
               mc_bool(json_object_get(obj, "animated")));
    }

    return media;
}


static json_t *
mc_status_new(mc_ctx_t *ctx, json_t *item)
{
    json_t      *s, *v, *err, *pricing, *conv;
    const char  *status;

    s = json_object();
    if (s == NULL) {
        ctx->oom = 1;
        return NULL;
    }

    v = json_object_get(item, "status");
    status = mc_map(mc_status_types, json_string_value(v));

    mc_put(ctx, s, "wamid", mc_string(ctx, json_object_get(item, "id")));
    mc_put(ctx, s, "status", json_string(status ? status : "UNKNOWN"));
    mc_put(ctx, s, "statusRaw", v ? mc_string(ctx, v) : json_null());

    if (json_object_get(s, "statusRaw") == NULL) {
        mc_put(ctx, s, "statusRaw", json_null());
    }

    mc_put(ctx, s, "timestamp",
           mc_time(ctx, json_object_get(item, "timestamp")));
    mc_put(ctx, s, "recipientId",
           mc_string(ctx, json_object_get(item, "recipient_id")));
    mc_put(ctx, s, "recipientUserId",
           mc_string(ctx, json_object_get(item, "recipient_user_id")));
    mc_put(ctx, s, "recipientParentUserId",
           mc_string(ctx, json_object_get(item, "recipient_parent_user_id")));
    mc_put(ctx, s, "recipientType",
           mc_string(ctx, json_object_get(item, "recipient_type")));
    mc_put(ctx, s, "recipientParticipantId",
           mc_string(ctx, json_object_get(item, "recipient_participant_id")));
    mc_put(ctx, s, "recipientParticipantUserId",
           mc_string(ctx, json_object_get(item,
                                          "recipient_participant_user_id")));

    err = json_array_get(json_object_get(item, "errors"), 0);

    if (json_is_object(err)) {
        mc_put(ctx, s, "errorCode", mc_int(ctx, json_object_get(err, "code")));
        mc_put(ctx, s, "errorTitle",
               mc_string(ctx, json_object_get(err, "title")));
        mc_put(ctx, s, "errorMessage",
               mc_string(ctx, json_object_get(err, "message")));

        v = json_object_get(err, "error_data");

        if (json_is_object(v)) {
            mc_put(ctx, s, "errorDetails", mc_ref(v));
        }

        mc_put(ctx, s, "errorHref",
               mc_string(ctx, json_object_get(err, "href")));
    }

    pricing = json_object_get(item, "pricing");

    mc_put(ctx, s, "pricingModel",
           mc_string(ctx, json_object_get(pricing, "pricing_model")));
    mc_put(ctx, s, "pricingCategory",
           mc_string(ctx, json_object_get(pricing, "category")));
    mc_put(ctx, s, "pricingType",
           mc_string(ctx, json_object_get(pricing, "type")));
    mc_put(ctx, s, "billable", mc_bool(json_object_get(pricing, "billable")));

    conv = json_object_get(item, "conversation");

    mc_put(ctx, s, "conversationId",
           mc_string(ctx, json_object_get(conv, "id")));
    mc_put(ctx, s, "conversationOriginType",
           mc_string(ctx, mc_get(conv, "origin", "type")));
    mc_put(ctx, s, "conversationExpiresAt",
           mc_time(ctx, json_object_get(conv, "expiration_timestamp")));
    mc_put(ctx, s, "bizOpaqueCallbackData",
           mc_string(ctx, json_object_get(item, "biz_opaque_callback_data")));

    return s;
}


static json_t *
mc_contact_new(mc_ctx_t *ctx, json_t *contact)
{
    json_t  *c;

    c = json_object();
    if (c == NULL) {
        ctx->oom = 1;
        return NULL;
    }

    mc_put(ctx, c, "waId", mc_string(ctx, json_object_get(contact, "wa_id")));
    mc_put(ctx, c, "userId",
           mc_string(ctx, json_object_get(contact, "user_id")));
    mc_put(ctx, c, "parentUserId",
           mc_string(ctx, json_object_get(contact, "parent_user_id")));
    mc_put(ctx, c, "name", mc_string(ctx, mc_get(contact, "profile", "name")));
    mc_put(ctx, c, "username",
           mc_string(ctx, mc_get(contact, "profile", "username")));
    mc_put(ctx, c, "identityKeyHash",
           mc_string(ctx, json_object_get(contact, "identity_key_hash")));

    return c;
}


/*
 * The value.contacts[] entry of a counterpart: by wa_id or by user_id,
 * never by position (a group receipt lists many contacts, a system
 * message none).
 */

static json_t *
mc_contact_find(mc_ctx_t *ctx, json_t *wa_id, json_t *user_id)
{
    size_t   i;
    json_t  *c, *wa, *user, *cw, *cu;
    int      found;

    if (ctx->contacts == NULL) {
        return NULL;
    }

    wa = mc_string(ctx, wa_id);
    user = mc_string(ctx, user_id);

    if (wa == NULL && user == NULL) {
        return NULL;
    }

    found = 0;

    json_array_foreach(ctx->contacts, i, c) {
        cw = mc_string(ctx, json_object_get(c, "wa_id"));
        cu = mc_string(ctx, json_object_get(c, "user_id"));

        found = (wa != NULL && cw != NULL && mc_same(wa, cw))
                || (user != NULL && cu != NULL && mc_same(user, cu));

        json_decref(cw);
        json_decref(cu);

        if (found) {
            break;
        }
    }

    json_decref(wa);
    json_decref(user);

    return found ? c : NULL;
}


static json_t *
mc_key_item(mc_ctx_t *ctx, size_t idx)
{
    return mc_key(ctx, "item:%s:%zu:%zu:%zu", ctx->body_sha, ctx->e, ctx->c,
                  idx);
}


static json_t *
mc_key(mc_ctx_t *ctx, const char *fmt, ...)
{
    int       n;
    char     *p;
    json_t   *key;
    va_list   args;

    va_start(args, fmt);
    n = vsnprintf(NULL, 0, fmt, args);
    va_end(args);

    if (n < 0) {
        ctx->oom = 1;
        return NULL;
    }

    p = malloc((size_t) n + 1);
    if (p == NULL) {
        ctx->oom = 1;
        return NULL;
    }

    va_start(args, fmt);
    (void) vsnprintf(p, (size_t) n + 1, fmt, args);
    va_end(args);

    /* the parts are valid UTF-8 strings without NUL: no check needed */
    key = json_stringn_nocheck(p, (size_t) n);

    free(p);

    if (key == NULL) {
        ctx->oom = 1;
    }

    return key;
}


static const char *
mc_map(const mc_map_t *map, const char *raw)
{
    if (raw == NULL) {
        return NULL;
    }

    for ( /* void */ ; map->raw != NULL; map++) {
        if (strcmp(map->raw, raw) == 0) {
            return map->type;
        }
    }

    return NULL;
}


/* sets obj[key] = v, stealing v; a NULL v means "absent" */

static void
mc_put(mc_ctx_t *ctx, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL) {
        return;
    }

    if (obj == NULL || json_object_set_new(obj, key, v) != 0) {
        if (obj == NULL) {
            json_decref(v);
        }

        ctx->oom = 1;
    }
}


static json_t *
mc_ref(json_t *v)
{
    return json_incref(v);
}


/*
 * A string column: strings as they are, numbers as their decimal form
 * (IDs sometimes arrive as numbers); anything else is absent.
 */

static json_t *
mc_string(mc_ctx_t *ctx, json_t *v)
{
    char     buf[64];
    json_t  *s;

    if (json_is_string(v)) {
        return json_incref(v);
    }

    if (json_is_integer(v)) {
        snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT,
                 json_integer_value(v));

    } else if (json_is_real(v)) {
        snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));

    } else {
        return NULL;
    }

    s = json_string(buf);
    if (s == NULL) {
        ctx->oom = 1;
    }

    return s;
}


/*
 * Unix seconds: a string of digits (as Meta sends them) or a number;
 * anything else is null.
 */

static json_t *
mc_time(mc_ctx_t *ctx, json_t *v)
{
    char        *end;
    double       d;
    json_t      *t;
    long long    n;
    const char  *s;

    if (v == NULL) {
        return NULL;
    }

    if (json_is_integer(v)) {
        t = json_integer(json_integer_value(v));

    } else if (json_is_real(v)) {
        d = json_real_value(v);

        if (!isfinite(d) || d < -9.2e18 || d > 9.2e18) {
            return json_null();
        }

        t = json_integer((json_int_t) d);

    } else if (json_is_string(v)) {
        s = json_string_value(v);

        if (!isdigit((unsigned char) s[0])) {
            return json_null();
        }

        errno = 0;
        n = strtoll(s, &end, 10);

        if (*end != '\0' || errno != 0) {
            return json_null();
        }

        t = json_integer((json_int_t) n);

    } else {
        return json_null();
    }

    if (t == NULL) {
        ctx->oom = 1;
    }

    return t;
}


/* an integer column (error codes): integer, integral real or digits */

static json_t *
mc_int(mc_ctx_t *ctx, json_t *v)
{
    char        *end;
    double       d;
    long long    n;
    const char  *s;

    if (json_is_integer(v)) {
        return json_incref(v);
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        if (!isfinite(d) || d != floor(d) || d < -9.2e18 || d > 9.2e18) {
            return NULL;
        }

        return json_integer((json_int_t) d);
    }

    if (json_is_string(v)) {
        s = json_string_value(v);

        if (s[0] != '-' && !isdigit((unsigned char) s[0])) {
            return NULL;
        }

        errno = 0;
        n = strtoll(s, &end, 10);

        if (*end != '\0' || end == s || errno != 0) {
            return NULL;
        }

        return json_integer((json_int_t) n);
    }

    (void) ctx;

    return NULL;
}


/* a number column (coordinates): numbers, or a string holding one */

static json_t *
mc_number(mc_ctx_t *ctx, json_t *v)
{
    char        *end;
    double       d;
    const char  *s;

    if (json_is_number(v)) {
        return json_incref(v);
    }

    if (!json_is_string(v)) {
        return NULL;
    }

    s = json_string_value(v);

    errno = 0;
    d = strtod(s, &end);

    if (end == s || *end != '\0' || errno != 0 || !isfinite(d)) {
        return NULL;
    }

    if (mc_real_needs_17(d)) {
        ctx->precise = 1;
    }

    return json_real(d);
}


static json_t *
mc_bool(json_t *v)
{
    return json_is_boolean(v) ? json_incref(v) : NULL;
}


/* two strings (as returned by mc_string()) are equal */

static int
mc_same(json_t *a, json_t *b)
{
    if (a == NULL || b == NULL) {
        return 0;
    }

    return json_string_length(a) == json_string_length(b)
           && memcmp(json_string_value(a), json_string_value(b),
                     json_string_length(a)) == 0;
}


/* obj[k1][k2] (or obj[k1] when k2 is NULL), NULL if any is missing */

static json_t *
mc_get(json_t *obj, const char *k1, const char *k2)
{
    obj = json_object_get(obj, k1);

    return (k2 != NULL) ? json_object_get(obj, k2) : obj;
}


/*
 * NUL, allowed by JSON_ALLOW_NUL so that the document parses, becomes
 * U+FFFD in every string: PostgreSQL refuses it in text and in jsonb.
 * (Keys cannot hold NUL: jansson refuses them, and the pre-pass already
 * replaced them.)  The same walk notes whether a real needs 17 digits.
 * The depth is bounded by jansson's parser.
 */

static int
mc_sanitize(mc_ctx_t *ctx, json_t *json)
{
    size_t       i, j, n, len;
    char        *p;
    json_t      *v;
    const char  *k, *s;

    switch (json_typeof(json)) {

    case JSON_OBJECT:
        json_object_foreach(json, k, v) {
            if (mc_sanitize(ctx, v) != 0) {
                return -1;
            }
        }

        return 0;

    case JSON_ARRAY:
        json_array_foreach(json, i, v) {
            if (mc_sanitize(ctx, v) != 0) {
                return -1;
            }
        }

        return 0;

    case JSON_STRING:
        s = json_string_value(json);
        len = json_string_length(json);

        if (memchr(s, '\0', len) == NULL) {
            return 0;
        }

        n = 0;

        for (i = 0; i < len; i++) {
            n += (s[i] == '\0') ? 3 : 1;
        }

        p = malloc(n);
        if (p == NULL) {
            return -1;
        }

        for (i = 0, j = 0; i < len; i++) {
            if (s[i] == '\0') {
                memcpy(p + j, "\xef\xbf\xbd", 3);
                j += 3;

            } else {
                p[j++] = s[i];
            }
        }

        if (json_string_setn_nocheck(json, p, n) != 0) {
            free(p);
            return -1;
        }

        free(p);

        return 0;

    case JSON_REAL:
        if (!ctx->precise && mc_real_needs_17(json_real_value(json))) {
            ctx->precise = 1;
        }

        return 0;

    default:
        return 0;
    }
}


/* whether "%.15g" fails to give back the same double */

static int
mc_real_needs_17(double d)
{
    char  buf[32];

    snprintf(buf, sizeof(buf), "%.15g", d);

    return strtod(buf, NULL) != d;
}


static int
mc_sha256_hex(const void *data, size_t len, char *hex)
{
    size_t         i, n;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Q_digest(NULL, "SHA256", NULL, data, len, md, &n) != 1
        || n != 32)
    {
        return -1;
    }

    /* OpenSSL writes upper-case hex; the keys use lower case */

    if (OPENSSL_buf2hexstr_ex(hex, MC_SHA256_HEX_LEN + 1, &n, md, 32, '\0')
        != 1)
    {
        return -1;
    }

    for (i = 0; i < MC_SHA256_HEX_LEN; i++) {
        hex[i] = (char) tolower((unsigned char) hex[i]);
    }

    hex[MC_SHA256_HEX_LEN] = '\0';

    return 0;
}


/*
 * The reason is handed to SQL as a JSON string; jansson's messages may
 * quote bytes of the body, which need not be UTF-8: only printable ASCII
 * is kept.
 */

static void
mc_set_error(mc_normalized_t *out, const char *fmt, ...)
{
    size_t    i;
    va_list   args;

    va_start(args, fmt);
    (void) vsnprintf(out->error, sizeof(out->error), fmt, args);
    va_end(args);

    for (i = 0; out->error[i] != '\0'; i++) {
        if ((unsigned char) out->error[i] < 0x20
            || (unsigned char) out->error[i] >= 0x7f)
        {
            out->error[i] = '?';
        }
    }
}
