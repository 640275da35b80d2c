
/*
 * Contacts: the value.contacts[] entry matched to an item (the "contact"
 * sub-object), and the items of smb_app_state_sync, whose contact is the
 * whole point.  The column maps are the tables below.
 */


#include <string.h>

#include "mc_normalize_int.h"


/* a value.contacts[] entry */
static const mc_field_t  mc_contact_fields[] = {
    { "waId",                 { "wa_id" },                 mc_id },
    { "userId",               { "user_id" },               mc_id },
    { "parentUserId",         { "parent_user_id" },        mc_id },
    { "name",                 { "profile", "name" },       mc_string },
    { "username",             { "profile", "username" },   mc_string },
    { "identityKeyHash",      { "identity_key_hash" },     mc_string },
    { NULL,                   { NULL },                    NULL }
};

/* a state_sync item */
static const mc_field_t  mc_sync_fields[] = {
    { "action",               { "action" },                mc_string },
    { "name",                 { "contact", "full_name" },  mc_string },
    { "firstName",            { "contact", "first_name" }, mc_string },
    { "phoneNumber",          { "contact", "phone_number" }, mc_id },
    { "userId",               { "contact", "user_id" },    mc_id },
    { "username",             { "contact", "username" },   mc_string },
    { "timestamp",            { "metadata", "timestamp" }, mc_time },
    { NULL,                   { NULL },                    NULL }
};


json_t *
mc_contact_new(mc_ctx_t *ctx, json_t *contact)
{
    json_t  *c;

    c = mc_object(ctx);

    if (c != NULL) {
        mc_put_fields(ctx, c, contact, mc_contact_fields);
    }

    return c;
}


/*
 * The value.contacts[] entry of a counterpart: by wa_id or by user_id,
 * never by position (a group receipt lists many contacts, a system
 * message none).
 */

json_t *
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


void
mc_on_state_sync(mc_ctx_t *ctx, json_t *item)
{
    char     hex[MC_SHA256_HEX_LEN + 1];
    char    *dump;
    json_t  *ev, *contact;
    int      rc;

    dump = json_dumps(item, MC_HASH_FLAGS);

    if (dump == NULL) {
        ctx->oom = 1;
        return;
    }

    rc = mc_sha256_hex(dump, strlen(dump), hex);

    mc_free(dump);

    if (rc != 0) {
        ctx->oom = 1;
        return;
    }

    ev = mc_event_new(ctx, "state_sync", item, ctx->item,
                      mc_key(ctx, "sync:%s", hex),
                      json_is_object(item)
                      ? NULL : "state_sync item is not an object");
    ctx->item++;

    if (ev == NULL) {
        return;
    }

    if (json_is_object(item)) {
        contact = mc_object(ctx);

        if (contact != NULL) {
            mc_put_fields(ctx, contact, item, mc_sync_fields);
        }

        mc_put(ctx, ev, "contact", contact);
    }

    mc_event_add(ctx, ev);
}
