
/*
 * Normalisation of one WhatsApp Cloud API webhook body into the array of
 * events that metacloud_ingest() stores.  The event format is the contract
 * of docs/EVENTS.md; sql/events.schema.json is its machine-readable form.
 * This file holds the entry point and the walk: entries, changes, and the
 * arrays each field carries, dispatched to their items' layers.
 *
 * Nothing in a body is trusted to have the documented type: every getter
 * tolerates a missing key or a value of another type (jansson's getters
 * return NULL for them), and every item of every change of every entry
 * yields an event, marked "invalid" when it cannot be processed, so that
 * nothing signed is dropped silently.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mc_normalize_int.h"


/*
 * Numbers are written with 15 significant digits when every real of the
 * body survives that (37.422 stays 37.422, not 37.421999999999997), else
 * with 17, which every double survives.
 */
#define MC_EVENTS_FLAGS(ctx)                                                 \
    (JSON_COMPACT | JSON_REAL_PRECISION((ctx)->precise ? 17 : 15))


typedef void (*mc_item_pt)(mc_ctx_t *ctx, json_t *item);

typedef struct {
    const char    *name;
    mc_item_pt     handler;
} mc_array_t;

typedef struct {
    const char         *name;
    const mc_array_t   *arrays;
} mc_change_field_t;


static int mc_parse(const unsigned char *body, size_t len, json_t **root,
    mc_normalized_t *out);
static mc_body_rc_e mc_webhook_check(json_t *root, mc_normalized_t *out);
static void mc_walk_entry(mc_ctx_t *ctx, json_t *entry);
static void mc_walk_change(mc_ctx_t *ctx, json_t *change);
static int mc_walk_array(mc_ctx_t *ctx, const char *name,
    mc_item_pt handler);
static void mc_walk_whole_value(mc_ctx_t *ctx);
static void mc_count_types(json_t *events, size_t *ntypes);

static void mc_on_message(mc_ctx_t *ctx, json_t *item);
static void mc_on_echo(mc_ctx_t *ctx, json_t *item);
static void mc_on_hmedia(mc_ctx_t *ctx, json_t *item);
static void mc_on_hmedia_echo(mc_ctx_t *ctx, json_t *item);
static void mc_on_error(mc_ctx_t *ctx, json_t *item);
static void mc_on_history(mc_ctx_t *ctx, json_t *item);

static void mc_set_error(mc_normalized_t *out, const char *fmt, ...);


/*
 * The arrays of each known field, walked in this order (the order gives
 * itemIndex, so it is part of the keys: never reorder).  A change of a
 * known field that carries none of them still yields one generic event
 * with the whole value, so that a new kind of notification is kept; any
 * other field gives that generic event directly.
 */

static const mc_array_t  mc_messages_arrays[] = {
    { "messages",        mc_on_message },
    { "statuses",        mc_on_status },
    { "errors",          mc_on_error },
    { NULL,              NULL }
};

static const mc_array_t  mc_echoes_arrays[] = {
    { "message_echoes",  mc_on_echo },
    { NULL,              NULL }
};

static const mc_array_t  mc_history_arrays[] = {
    { "history",         mc_on_history },
    { "messages",        mc_on_hmedia },
    { "message_echoes",  mc_on_hmedia_echo },
    { NULL,              NULL }
};

static const mc_array_t  mc_state_sync_arrays[] = {
    { "state_sync",      mc_on_state_sync },
    { NULL,              NULL }
};

static const mc_change_field_t  mc_change_fields[] = {
    { "messages",            mc_messages_arrays },
    { "smb_message_echoes",  mc_echoes_arrays },
    { "history",             mc_history_arrays },
    { "smb_app_state_sync",  mc_state_sync_arrays },
    { NULL,                  NULL }
};


int
mc_normalize(const unsigned char *body, size_t len, mc_normalized_t *out)
{
    size_t     e;
    json_t    *root, *entry;
    mc_ctx_t   ctx;

    memset(out, 0, sizeof(mc_normalized_t));
    memset(&ctx, 0, sizeof(mc_ctx_t));

    if (body == NULL) {
        body = (const unsigned char *) "";
        len = 0;
    }

    mc_alloc_begin();

    root = NULL;

    ctx.events = json_array();
    if (ctx.events == NULL) {
        return -1;
    }

    /* the key hash is over the body as received, not the pre-pass copy */

    if (mc_sha256_hex(body, len, ctx.body_sha) != 0) {
        goto failed;
    }

    if (mc_parse(body, len, &root, out) != 0) {
        goto failed;
    }

    if (root == NULL) {
        goto done;
    }

    if (mc_sanitize(&ctx, root) != 0) {
        goto failed;
    }

    out->rc = mc_webhook_check(root, out);

    if (out->rc != MC_BODY_OK) {
        goto done;
    }

    json_array_foreach(json_object_get(root, "entry"), e, entry) {
        ctx.e = e;
        mc_walk_entry(&ctx, entry);

        if (ctx.oom) {
            goto failed;
        }
    }

done:

    /* an invalid body yields no event: the raw body alone is kept */

    if (out->rc != MC_BODY_OK) {
        json_array_clear(ctx.events);
    }

    out->nevents = json_array_size(ctx.events);
    mc_count_types(ctx.events, out->ntypes);
    out->events = json_dumps(ctx.events, MC_EVENTS_FLAGS(&ctx));

    if (out->events == NULL || ctx.oom || mc_alloc_failed()) {
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
    mc_free(out->events);
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


/*
 * The pre-pass and the parser.  *root is NULL with out->rc set when the
 * body is not JSON; -1 when an allocation failed anywhere on the way, which
 * jansson may report as a syntax error (mc_json.c): a body is called
 * invalid only when every allocation succeeded.
 */

static int
mc_parse(const unsigned char *body, size_t len, json_t **root,
    mc_normalized_t *out)
{
    size_t          n;
    json_error_t    err;
    unsigned char  *clean;

    n = mc_prepass_run(body, len, NULL);

    clean = mc_malloc(n + 1);
    if (clean == NULL) {
        return -1;
    }

    (void) mc_prepass_run(body, len, clean);

    memset(&err, 0, sizeof(json_error_t));

    *root = json_loadb((const char *) clean, n, JSON_ALLOW_NUL, &err);

    mc_free(clean);

    if (mc_alloc_failed()
        || (*root == NULL && json_error_code(&err) == json_error_out_of_memory))
    {
        json_decref(*root);
        *root = NULL;
        return -1;
    }

    if (*root == NULL) {
        out->rc = MC_BODY_INVALID_JSON;
        mc_set_error(out, "line %d, column %d: %s",
                     err.line, err.column, err.text);
    }

    return 0;
}


static mc_body_rc_e
mc_webhook_check(json_t *root, mc_normalized_t *out)
{
    json_t  *object;

    if (!json_is_object(root)) {
        mc_set_error(out, "the body is not a JSON object");
        return MC_BODY_NOT_WEBHOOK;
    }

    object = json_object_get(root, "object");

    if (!json_is_string(object)) {
        mc_set_error(out, "no \"object\" string");
        return MC_BODY_NOT_WEBHOOK;
    }

    if (strcmp(json_string_value(object), "whatsapp_business_account")
        != 0)
    {
        mc_set_error(out, "\"object\" is \"%.100s\"",
                     json_string_value(object));
        return MC_BODY_OTHER_OBJECT;
    }

    if (!json_is_array(json_object_get(root, "entry"))) {
        mc_set_error(out, "no \"entry\" array");
        return MC_BODY_NOT_WEBHOOK;
    }

    return MC_BODY_OK;
}


static void
mc_walk_entry(mc_ctx_t *ctx, json_t *entry)
{
    size_t   c;
    json_t  *changes, *change;

    mc_change_reset(ctx);

    ctx->c = 0;
    ctx->item = 0;
    ctx->waba_id = mc_id(ctx, json_object_get(entry, "id"));

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
    int                        n;
    json_t                    *metadata, *v;
    const char                *field;
    const mc_array_t          *a;
    const mc_change_field_t   *f;

    json_decref(ctx->phone_number_id);
    json_decref(ctx->display_phone);

    ctx->phone_number_id = NULL;
    ctx->display_phone = NULL;
    ctx->item = 0;

    v = json_object_get(change, "field");
    ctx->field = json_is_string(v) ? v : NULL;
    ctx->value = json_object_get(change, "value");
    ctx->contacts = json_object_get(ctx->value, "contacts");

    if (!json_is_array(ctx->contacts)) {
        ctx->contacts = NULL;
    }

    metadata = json_object_get(ctx->value, "metadata");

    ctx->phone_number_id = mc_id(ctx,
                                 json_object_get(metadata, "phone_number_id"));
    ctx->display_phone = mc_string(ctx,
                            json_object_get(metadata, "display_phone_number"));

    if (mc_scope_set(ctx) != 0) {
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

    for (f = mc_change_fields; f->name != NULL; f++) {
        if (strcmp(field, f->name) == 0) {
            break;
        }
    }

    n = 0;

    for (a = f->arrays; a != NULL && a->name != NULL; a++) {
        n += mc_walk_array(ctx, a->name, a->handler);
    }

    if (n == 0) {
        mc_walk_whole_value(ctx);
    }
}


void
mc_change_reset(mc_ctx_t *ctx)
{
    json_decref(ctx->waba_id);
    json_decref(ctx->phone_number_id);
    json_decref(ctx->display_phone);
    json_decref(ctx->scope);

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
 * Calls the handler for every element of value[name]; returns 0 when the
 * key is absent, 1 otherwise.  A present key that is not an array gives
 * one invalid generic event: its content is not dropped silently.
 */

static int
mc_walk_array(mc_ctx_t *ctx, const char *name, mc_item_pt handler)
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

        handler(ctx, item);
    }

    return 1;
}


static void
mc_on_message(mc_ctx_t *ctx, json_t *item)
{
    mc_message_event(ctx, item, "message", "webhook", "INBOUND", NULL);
}


static void
mc_on_echo(mc_ctx_t *ctx, json_t *item)
{
    mc_message_event(ctx, item, "echo", "echo", "OUTBOUND", NULL);
}


static void
mc_on_hmedia(mc_ctx_t *ctx, json_t *item)
{
    mc_message_event(ctx, item, "history_media", "history_media", "INBOUND",
                     NULL);
}


static void
mc_on_hmedia_echo(mc_ctx_t *ctx, json_t *item)
{
    mc_message_event(ctx, item, "history_media", "history_media",
                     "OUTBOUND", NULL);
}


static void
mc_on_error(mc_ctx_t *ctx, json_t *item)
{
    mc_event_add(ctx, mc_event_new(ctx, "error", item, ctx->item,
                                   mc_key_item(ctx, ctx->item), NULL));
    ctx->item++;
}


static void
mc_on_history(mc_ctx_t *ctx, json_t *item)
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
