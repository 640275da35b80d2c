
/*
 * Messages, echoes, history messages and history media follow-ups: the
 * event, its "message" sub-object (the columns of meta_cloud_messages) and
 * its "media" sub-object (meta_cloud_media).  The column maps are the
 * tables below, in the order the columns appear in the event.
 */


#include <string.h>

#include "mc_normalize_int.h"


static json_t *mc_message_new(mc_ctx_t *ctx, json_t *item,
    const char *source, const char *direction, json_t *contact,
    json_t *thread);
static const char *mc_message_type(json_t *item, const char *raw);
static json_t *mc_message_text(json_t *item, const char *raw,
    const char *type);
static json_t *mc_text_of(json_t *msg, const char *type);
static json_t *mc_thread_contact(mc_ctx_t *ctx, json_t *thread);
static json_t *mc_thread_wa_id(mc_ctx_t *ctx, json_t *thread);
static json_t *mc_media_new(mc_ctx_t *ctx, json_t *msg);
static json_t *mc_forwarded_count(mc_ctx_t *ctx, json_t *context);
static json_t *mc_emoji(mc_ctx_t *ctx, json_t *v);


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


/* the item's parties, after wamid, direction and source */
static const mc_field_t  mc_message_parties[] = {
    { "from",                 { "from" },                  mc_id },
    { "to",                   { "to" },                    mc_id },
    { "fromUserId",           { "from_user_id" },          mc_id },
    { "fromParentUserId",     { "from_parent_user_id" },   mc_id },
    { "toUserId",             { "to_user_id" },            mc_id },
    { "groupId",              { "group_id" },              mc_id },
    { NULL,                   { NULL },                    NULL }
};

/* after type and rawType */
static const mc_field_t  mc_message_meta[] = {
    { "unsupportedType",      { "unsupported", "type" },   mc_string },
    { "timestamp",            { "timestamp" },             mc_time },
    { NULL,                   { NULL },                    NULL }
};

/* the matched value.contacts[] entry */
static const mc_field_t  mc_message_contact[] = {
    { "contactName",          { "profile", "name" },       mc_string },
    { "contactWaId",          { "wa_id" },                 mc_id },
    { "contactUserId",        { "user_id" },               mc_id },
    { "contactUsername",      { "profile", "username" },   mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* item.context */
static const mc_field_t  mc_message_context[] = {
    { "contextMessageId",     { "id" },                    mc_id },
    { "contextFrom",          { "from" },                  mc_id },
    { "isForwarded",          { "forwarded" },             mc_flag },
    { "isFrequentlyForwarded", { "frequently_forwarded" }, mc_flag },
    { "forwardedCount",       { NULL },                    mc_forwarded_count },
    { "referredProductCatalogId",
                      { "referred_product", "catalog_id" }, mc_string },
    { "referredProductRetailerId",
             { "referred_product", "product_retailer_id" }, mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* item.location */
static const mc_field_t  mc_message_location[] = {
    { "locationLatitude",     { "latitude" },              mc_number },
    { "locationLongitude",    { "longitude" },             mc_number },
    { "locationName",         { "name" },                  mc_string },
    { "locationAddress",      { "address" },               mc_string },
    { "locationUrl",          { "url" },                   mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* item.interactive */
static const mc_field_t  mc_message_interactive[] = {
    { "interactiveType",      { "type" },                  mc_string },
    { "buttonPayload",        { "button_reply", "id" },    mc_string },
    { "buttonText",           { "button_reply", "title" }, mc_string },
    { "listId",               { "list_reply", "id" },      mc_string },
    { "listTitle",            { "list_reply", "title" },   mc_string },
    { "listDescription",      { "list_reply", "description" }, mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* item.button */
static const mc_field_t  mc_message_button[] = {
    { "buttonPayload",        { "payload" },               mc_string },
    { "buttonText",           { "text" },                  mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* item.reaction */
static const mc_field_t  mc_message_reaction[] = {
    { "reactionEmoji",        { "emoji" },                 mc_emoji },
    { "reactionMessageId",    { "message_id" },            mc_id },
    { NULL,                   { NULL },                    NULL }
};

/* item.errors[0] */
static const mc_field_t  mc_message_error[] = {
    { "errorCode",            { "code" },                  mc_int },
    { "errorTitle",           { "title" },                 mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* the last columns, from the item */
static const mc_field_t  mc_message_tail[] = {
    { "referral",             { "referral" },              mc_sub_object },
    { "historyStatus",        { "history_context", "status" }, mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* the media object of a message, after mediaId and type */
static const mc_field_t  mc_media_fields[] = {
    { "mimeType",             { "mime_type" },             mc_string },
    { "sha256",               { "sha256" },                mc_string },
    { "fileName",             { "filename" },              mc_string },
    { "caption",              { "caption" },               mc_string },
    { "downloadUrl",          { "url" },                   mc_string },
    { NULL,                   { NULL },                    NULL }
};

static const mc_field_t  mc_media_audio[] = {
    { "voice",                { "voice" },                 mc_bool },
    { NULL,                   { NULL },                    NULL }
};

static const mc_field_t  mc_media_sticker[] = {
    { "animated",             { "animated" },              mc_bool },
    { NULL,                   { NULL },                    NULL }
};


/*
 * One inbound message, echo, history message or history media follow-up.
 * direction NULL: a history message, whose direction is found by comparing
 * its sender with the business number.
 */

void
mc_message_event(mc_ctx_t *ctx, json_t *item, const char *event_type,
    const char *source, const char *direction, json_t *thread)
{
    int          outbound, hmedia;
    json_t      *id, *ev, *contact, *from;
    const char  *who_key, *who_user_key;

    if (!json_is_object(item)) {
        mc_invalid_event(ctx, event_type, item, "message is not an object");
        return;
    }

    id = mc_id(ctx, json_object_get(item, "id"));

    if (id == NULL || json_string_length(id) == 0) {
        json_decref(id);

        if (!ctx->oom) {
            mc_invalid_event(ctx, event_type, item, "message without id");
        }

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
        mc_put(ctx, ev, "contact", mc_thread_contact(ctx, thread));

    } else if (contact != NULL && !hmedia) {
        mc_put(ctx, ev, "contact", mc_contact_new(ctx, contact));
    }

    mc_event_add(ctx, ev);
}


static json_t *
mc_message_new(mc_ctx_t *ctx, json_t *item, const char *source,
    const char *direction, json_t *contact, json_t *thread)
{
    json_t      *m, *t, *v, *obj, *tctx;
    const char  *raw, *type;

    m = mc_object(ctx);
    if (m == NULL) {
        return NULL;
    }

    t = json_object_get(item, "type");
    raw = json_string_value(t);
    type = mc_message_type(item, raw);

    mc_put(ctx, m, "wamid", mc_id(ctx, json_object_get(item, "id")));
    mc_put(ctx, m, "direction", mc_cstring(ctx, direction));
    mc_put(ctx, m, "source", mc_cstring(ctx, source));
    mc_put_fields(ctx, m, item, mc_message_parties);
    mc_put(ctx, m, "type", mc_cstring(ctx, type));

    v = mc_string(ctx, t);
    mc_put(ctx, m, "rawType", v ? v : json_null());

    mc_put_fields(ctx, m, item, mc_message_meta);
    mc_put(ctx, m, "text", mc_string(ctx, mc_message_text(item, raw, type)));

    if (thread != NULL) {
        tctx = json_object_get(thread, "context");

        mc_put(ctx, m, "contactWaId", mc_thread_wa_id(ctx, thread));
        mc_put(ctx, m, "contactUserId",
               mc_id(ctx, json_object_get(tctx, "user_id")));
        mc_put(ctx, m, "contactUsername",
               mc_string(ctx, json_object_get(tctx, "username")));

    } else if (contact != NULL) {
        mc_put_fields(ctx, m, contact, mc_message_contact);
    }

    mc_put_fields(ctx, m, json_object_get(item, "context"),
                  mc_message_context);

    obj = json_object_get(item, "location");

    if (json_is_object(obj)) {
        mc_put_fields(ctx, m, obj, mc_message_location);
    }

    obj = json_object_get(item, "interactive");

    if (json_is_object(obj)) {
        mc_put_fields(ctx, m, obj, mc_message_interactive);
    }

    obj = json_object_get(item, "button");

    if (json_is_object(obj)) {
        mc_put_fields(ctx, m, obj, mc_message_button);
    }

    obj = json_object_get(item, "reaction");

    if (json_is_object(obj)) {
        mc_put_fields(ctx, m, obj, mc_message_reaction);
    }

    v = mc_get(item, "edit", "original_message_id");

    if (v == NULL) {
        v = mc_get(item, "revoke", "original_message_id");
    }

    mc_put(ctx, m, "originalMessageId", mc_id(ctx, v));

    obj = json_array_get(json_object_get(item, "errors"), 0);

    if (json_is_object(obj)) {
        mc_put_fields(ctx, m, obj, mc_message_error);
    }

    mc_put_fields(ctx, m, item, mc_message_tail);

    return m;
}


/* the MetaCloudMessageType of an item; interactive replies have their own */

static const char *
mc_message_type(json_t *item, const char *raw)
{
    const char  *type, *itype;

    type = mc_map(mc_message_types, raw);

    if (type == NULL) {
        return "UNKNOWN";
    }

    if (strcmp(type, "INTERACTIVE") == 0) {
        itype = json_string_value(mc_get(item, "interactive", "type"));

        if (itype != NULL && strcmp(itype, "button_reply") == 0) {
            return "BUTTON_REPLY";
        }

        if (itype != NULL && strcmp(itype, "list_reply") == 0) {
            return "LIST_REPLY";
        }
    }

    return type;
}


/* text: the body, caption, title or new text of an edit */

static json_t *
mc_message_text(json_t *item, const char *raw, const char *type)
{
    json_t  *msg;

    if (raw != NULL && strcmp(raw, "edit") == 0) {
        msg = mc_get(item, "edit", "message");
        return mc_text_of(msg, json_string_value(json_object_get(msg,
                                                                 "type")));
    }

    if (strcmp(type, "BUTTON_REPLY") == 0) {
        return mc_get(mc_get(item, "interactive", "button_reply"), "title",
                      NULL);
    }

    if (strcmp(type, "LIST_REPLY") == 0) {
        return mc_get(mc_get(item, "interactive", "list_reply"), "title",
                      NULL);
    }

    return mc_text_of(item, raw);
}


/* the text of a message of a given type, or NULL */

static json_t *
mc_text_of(json_t *msg, const char *type)
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


/* the contact of a history message: its thread's context and id */

static json_t *
mc_thread_contact(mc_ctx_t *ctx, json_t *thread)
{
    json_t  *c, *tctx;

    c = mc_object(ctx);
    if (c == NULL) {
        return NULL;
    }

    tctx = json_object_get(thread, "context");

    mc_put(ctx, c, "waId", mc_thread_wa_id(ctx, thread));
    mc_put(ctx, c, "userId", mc_id(ctx, json_object_get(tctx, "user_id")));
    mc_put(ctx, c, "username",
           mc_string(ctx, json_object_get(tctx, "username")));

    return c;
}


/* the counterpart of a history thread: context.wa_id, else the thread id */

static json_t *
mc_thread_wa_id(mc_ctx_t *ctx, json_t *thread)
{
    json_t  *wa;

    wa = mc_id(ctx, mc_get(thread, "context", "wa_id"));

    if (wa == NULL && !ctx->oom) {
        wa = mc_id(ctx, json_object_get(thread, "id"));
    }

    return wa;
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
    id = mc_id(ctx, json_object_get(obj, "id"));

    if (id == NULL) {
        return NULL;
    }

    media = mc_object(ctx);
    if (media == NULL) {
        json_decref(id);
        return NULL;
    }

    mc_put(ctx, media, "mediaId", id);
    mc_put(ctx, media, "type", mc_cstring(ctx, type));
    mc_put_fields(ctx, media, obj, mc_media_fields);

    if (strcmp(raw, "audio") == 0) {
        mc_put_fields(ctx, media, obj, mc_media_audio);

    } else if (strcmp(raw, "sticker") == 0) {
        mc_put_fields(ctx, media, obj, mc_media_sticker);
    }

    return media;
}


/* 0; 1 when forwarded; 5 when frequently forwarded (Meta says ">= 5") */

static json_t *
mc_forwarded_count(mc_ctx_t *ctx, json_t *context)
{
    json_int_t  n;

    n = json_is_true(json_object_get(context, "frequently_forwarded"))
        ? 5 : json_is_true(json_object_get(context, "forwarded")) ? 1 : 0;

    return mc_integer(ctx, n);
}


/* a removed reaction has no emoji key, or an empty one: null */

static json_t *
mc_emoji(mc_ctx_t *ctx, json_t *v)
{
    v = mc_string(ctx, v);

    if (v != NULL && json_string_length(v) == 0) {
        json_decref(v);
        v = NULL;
    }

    return v ? v : json_null();
}
