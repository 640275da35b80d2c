
/*
 * The event object (docs/EVENTS.md): its common members, its key and its
 * scope.
 */


#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mc_normalize_int.h"


json_t *
mc_event_new(mc_ctx_t *ctx, const char *event_type, json_t *payload,
    size_t idx, json_t *key, const char *invalid)
{
    json_t  *ev;

    if (key == NULL || ctx->oom) {
        json_decref(key);
        ctx->oom = 1;
        return NULL;
    }

    ev = mc_object(ctx);
    if (ev == NULL) {
        json_decref(key);
        return NULL;
    }

    mc_put(ctx, ev, "v", mc_integer(ctx, MC_EVENT_VERSION));
    mc_put(ctx, ev, "field", mc_ref_or_null(ctx->field));
    mc_put(ctx, ev, "eventType", mc_cstring(ctx, event_type));
    mc_put(ctx, ev, "scope", json_incref(ctx->scope));
    mc_put(ctx, ev, "webhookId", key);
    mc_put(ctx, ev, "wabaId", mc_ref_or_null(ctx->waba_id));
    mc_put(ctx, ev, "phoneNumberId", mc_ref_or_null(ctx->phone_number_id));
    mc_put(ctx, ev, "displayPhoneNumber", mc_ref_or_null(ctx->display_phone));
    mc_put(ctx, ev, "entryIndex", mc_integer(ctx, (json_int_t) ctx->e));
    mc_put(ctx, ev, "changeIndex", mc_integer(ctx, (json_int_t) ctx->c));
    mc_put(ctx, ev, "itemIndex", mc_integer(ctx, (json_int_t) idx));

    if (invalid != NULL) {
        mc_put(ctx, ev, "invalid", mc_cstring(ctx, invalid));
    }

    mc_put(ctx, ev, "payload", mc_ref_or_null(payload));

    return ev;
}


/* appends ev (stolen); a NULL ev is a failure already recorded */

void
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

void
mc_invalid_event(mc_ctx_t *ctx, const char *event_type, json_t *payload,
    const char *invalid)
{
    /* an entry-level problem: no change has set the scope yet */

    if (ctx->scope == NULL && mc_scope_set(ctx) != 0) {
        return;
    }

    mc_event_add(ctx, mc_event_new(ctx, event_type, payload, ctx->item,
                                   mc_key_item(ctx, ctx->item), invalid));
    ctx->item++;
}


/*
 * The scope of the change: its phone_number_id, or "waba:<entry.id>" for
 * fields without one (account, templates) and entry-level problems.
 */

int
mc_scope_set(mc_ctx_t *ctx)
{
    json_decref(ctx->scope);

    if (ctx->phone_number_id != NULL
        && json_string_length(ctx->phone_number_id) > 0)
    {
        ctx->scope = json_incref(ctx->phone_number_id);
        return 0;
    }

    ctx->scope = mc_key(ctx, "waba:%s",
                        ctx->waba_id ? json_string_value(ctx->waba_id) : "");

    return (ctx->scope != NULL) ? 0 : -1;
}


/*
 * An id as it enters a key or an indexed column: as it is up to
 * MC_ID_MAX bytes; longer, its first MC_ID_MAX bytes (cut back to a whole
 * UTF-8 character), "~" and the SHA-256 (hex) of the whole id.  Bounded,
 * so that neither a key nor a btree entry can outgrow PostgreSQL's limit;
 * stable across retries; unique, because a kept id is never longer than
 * MC_ID_MAX and a shortened one always is.
 */

json_t *
mc_id(mc_ctx_t *ctx, json_t *v)
{
    char         hex[MC_SHA256_HEX_LEN + 1];
    char        *p;
    size_t       cut, len;
    json_t      *id;
    const char  *s;

    v = mc_string(ctx, v);

    if (v == NULL || json_string_length(v) <= MC_ID_MAX) {
        return v;
    }

    s = json_string_value(v);
    len = json_string_length(v);

    for (cut = MC_ID_MAX; cut > 0 && ((unsigned char) s[cut] & 0xc0) == 0x80;
         cut--)
    {
        /* void */
    }

    id = NULL;
    p = mc_malloc(cut + 1 + MC_SHA256_HEX_LEN);

    if (p != NULL && mc_sha256_hex(s, len, hex) == 0) {
        memcpy(p, s, cut);
        p[cut] = '~';
        memcpy(p + cut + 1, hex, MC_SHA256_HEX_LEN);

        id = json_stringn_nocheck(p, cut + 1 + MC_SHA256_HEX_LEN);
    }

    if (id == NULL) {
        ctx->oom = 1;
    }

    mc_free(p);
    json_decref(v);

    return id;
}


json_t *
mc_key_item(mc_ctx_t *ctx, size_t idx)
{
    return mc_key(ctx, "item:%s:%zu:%zu:%zu", ctx->body_sha, ctx->e, ctx->c,
                  idx);
}


json_t *
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

    p = mc_malloc((size_t) n + 1);
    if (p == NULL) {
        ctx->oom = 1;
        return NULL;
    }

    va_start(args, fmt);
    (void) vsnprintf(p, (size_t) n + 1, fmt, args);
    va_end(args);

    /* the parts are valid UTF-8 strings without NUL: no check needed */
    key = json_stringn_nocheck(p, (size_t) n);

    mc_free(p);

    if (key == NULL) {
        ctx->oom = 1;
    }

    return key;
}
