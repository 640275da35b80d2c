
/*
 * Statuses (value.statuses[]): the event, its key and its "status"
 * sub-object (the columns of meta_cloud_message_statuses).  The column
 * maps are the tables below, in the order the columns appear.
 */


#include <string.h>

#include "mc_normalize_int.h"


static json_t *mc_status_key(mc_ctx_t *ctx, json_t *item, json_t *id);
static json_t *mc_status_new(mc_ctx_t *ctx, json_t *item);


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


/* who a status is about, most precise first: the last part of its key */
static const char  *mc_status_who[] = {
    "recipient_participant_user_id",
    "recipient_participant_id",
    "recipient_user_id",
    "recipient_id",
    NULL
};


/* after wamid, status and statusRaw */
static const mc_field_t  mc_status_recipient[] = {
    { "timestamp",            { "timestamp" },             mc_time },
    { "recipientId",          { "recipient_id" },          mc_id },
    { "recipientUserId",      { "recipient_user_id" },     mc_id },
    { "recipientParentUserId", { "recipient_parent_user_id" }, mc_id },
    { "recipientType",        { "recipient_type" },        mc_string },
    { "recipientParticipantId", { "recipient_participant_id" }, mc_id },
    { "recipientParticipantUserId",
                         { "recipient_participant_user_id" }, mc_id },
    { NULL,                   { NULL },                    NULL }
};

/* item.errors[0] */
static const mc_field_t  mc_status_error[] = {
    { "errorCode",            { "code" },                  mc_int },
    { "errorTitle",           { "title" },                 mc_string },
    { "errorMessage",         { "message" },               mc_string },
    { "errorDetails",         { "error_data" },            mc_sub_object },
    { "errorHref",            { "href" },                  mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* pricing, conversation and the callback data */
static const mc_field_t  mc_status_billing[] = {
    { "pricingModel",         { "pricing", "pricing_model" }, mc_string },
    { "pricingCategory",      { "pricing", "category" },   mc_string },
    { "pricingType",          { "pricing", "type" },       mc_string },
    { "billable",             { "pricing", "billable" },   mc_bool },
    { "conversationId",       { "conversation", "id" },    mc_id },
    { "conversationOriginType",
                        { "conversation", "origin", "type" }, mc_string },
    { "conversationExpiresAt",
                { "conversation", "expiration_timestamp" }, mc_time },
    { "bizOpaqueCallbackData", { "biz_opaque_callback_data" }, mc_string },
    { NULL,                   { NULL },                    NULL }
};


void
mc_on_status(mc_ctx_t *ctx, json_t *item)
{
    json_t  *id, *ev, *contact;

    if (!json_is_object(item)) {
        mc_invalid_event(ctx, "status", item, "status is not an object");
        return;
    }

    id = mc_id(ctx, json_object_get(item, "id"));

    if (id == NULL || json_string_length(id) == 0) {
        json_decref(id);

        if (!ctx->oom) {
            mc_invalid_event(ctx, "status", item, "status without id");
        }

        return;
    }

    ev = mc_event_new(ctx, "status", item, ctx->item,
                      mc_status_key(ctx, item, id), NULL);
    ctx->item++;

    json_decref(id);

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


/* status:<id>:<status>:<who> */

static json_t *
mc_status_key(mc_ctx_t *ctx, json_t *item, json_t *id)
{
    json_t        *status, *who, *key;
    const char   **k;

    status = mc_id(ctx, json_object_get(item, "status"));
    who = NULL;

    for (k = mc_status_who; *k != NULL && who == NULL; k++) {
        who = mc_id(ctx, json_object_get(item, *k));
    }

    key = mc_key(ctx, "status:%s:%s:%s", json_string_value(id),
                 status ? json_string_value(status) : "",
                 who ? json_string_value(who) : "");

    json_decref(status);
    json_decref(who);

    return key;
}


static json_t *
mc_status_new(mc_ctx_t *ctx, json_t *item)
{
    json_t      *s, *v, *err;
    const char  *status;

    s = mc_object(ctx);
    if (s == NULL) {
        return NULL;
    }

    v = json_object_get(item, "status");
    status = mc_map(mc_status_types, json_string_value(v));

    mc_put(ctx, s, "wamid", mc_id(ctx, json_object_get(item, "id")));
    mc_put(ctx, s, "status", mc_cstring(ctx, status ? status : "UNKNOWN"));

    v = mc_string(ctx, v);
    mc_put(ctx, s, "statusRaw", v ? v : json_null());

    mc_put_fields(ctx, s, item, mc_status_recipient);

    err = json_array_get(json_object_get(item, "errors"), 0);

    if (json_is_object(err)) {
        mc_put_fields(ctx, s, err, mc_status_error);
    }

    mc_put_fields(ctx, s, item, mc_status_billing);

    return s;
}
