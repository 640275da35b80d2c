
/*
 * mc_normalize(): every eventType, the keys and columns of docs/EVENTS.md,
 * contact matching, NUL, big batches, broken and ill-typed bodies.
 */


#include <jansson.h>
#include <openssl/evp.h>

#include "mc_tap.h"
#include "mc_core.h"


#define META                                                                 \
    "\"messaging_product\":\"whatsapp\",\"metadata\":"                       \
    "{\"display_phone_number\":\"15550001111\",\"phone_number_id\":\"PN1\"}"

#define BODY(field, value)                                                   \
    "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"W1\","   \
    "\"changes\":[{\"field\":\"" field "\",\"value\":" value "}]}]}"

#define FFFD  "\xef\xbf\xbd"


static mc_body_rc_e  rc;
static char          sha[65];


static json_t *
norm_len(const char *body, size_t len)
{
    size_t           i, n, t, total;
    json_t          *events;
    unsigned char    md[32];
    json_error_t     err;
    mc_normalized_t  out;

    EVP_Q_digest(NULL, "SHA256", NULL, body, len, md, &n);

    for (i = 0; i < 32; i++) {
        snprintf(sha + 2 * i, 3, "%02x", md[i]);
    }

    if (mc_normalize((const unsigned char *) body, len, &out) != 0) {
        printf("# mc_normalize() failed\n");
        exit(1);
    }

    rc = out.rc;
    total = 0;

    events = json_loadb(out.events, out.events_len, 0, &err);

    if (events == NULL || json_array_size(events) != out.nevents
        || (out.rc == MC_BODY_OK) != (out.error[0] == '\0'))
    {
        printf("# inconsistent output: %s\n", out.events);
        exit(1);
    }

    /* ntypes: each event counted once, under its own eventType */

    for (t = 0; t < MC_EVENT_NTYPES; t++) {
        n = 0;

        for (i = 0; i < json_array_size(events); i++) {
            n += strcmp(json_string_value(json_object_get(
                            json_array_get(events, i), "eventType")),
                        mc_event_type_str(t)) == 0;
        }

        if (n != out.ntypes[t]) {
            printf("# ntypes[%s] is %zu, the events have %zu\n",
                   mc_event_type_str(t), out.ntypes[t], n);
            exit(1);
        }

        total += n;
    }

    if (total != out.nevents) {
        printf("# an eventType outside MC_EVENT_TYPES: %s\n", out.events);
        exit(1);
    }

    mc_normalized_free(&out);

    return events;
}


static json_t *
norm(const char *body)
{
    return norm_len(body, strlen(body));
}


static json_t *
get(json_t *ev, const char *sub, const char *key)
{
    if (key == NULL) {
        return json_object_get(ev, sub);
    }

    return json_object_get(json_object_get(ev, sub), key);
}


static const char *
S(json_t *ev, const char *sub, const char *key)
{
    return json_string_value(get(ev, sub, key));
}


static long long
I(json_t *ev, const char *sub, const char *key)
{
    json_t  *v;

    v = get(ev, sub, key);

    return json_is_integer(v) ? json_integer_value(v) : -999;
}


/* the keys of obj, sorted, comma separated */

static const char *
keys(json_t *obj)
{
    size_t       i, j, n;
    const char  *k, *tmp[128];
    json_t      *v;

    static char  buf[4096];

    n = 0;

    json_object_foreach(obj, k, v) {
        if (n < 128) {
            tmp[n++] = k;
        }
    }

    for (i = 1; i < n; i++) {
        for (j = i; j > 0 && strcmp(tmp[j - 1], tmp[j]) > 0; j--) {
            k = tmp[j];
            tmp[j] = tmp[j - 1];
            tmp[j - 1] = k;
        }
    }

    buf[0] = '\0';

    for (i = 0; i < n; i++) {
        strcat(buf, i ? "," : "");
        strcat(buf, tmp[i]);
    }

    return buf;
}


/* every key of obj is in the documented list */

static int
allowed(json_t *obj, const char *list)
{
    const char  *k;
    json_t      *v;
    char         pat[128];

    json_object_foreach(obj, k, v) {
        snprintf(pat, sizeof(pat), ",%s,", k);

        if (strstr(list, pat) == NULL) {
            printf("#   undocumented key \"%s\"\n", k);
            return 0;
        }
    }

    return 1;
}


static const char  *event_keys =
    ",v,field,eventType,scope,webhookId,wabaId,phoneNumberId,"
    "displayPhoneNumber,entryIndex,changeIndex,itemIndex,invalid,payload,"
    "message,media,status,contact,";

static const char  *message_keys =
    ",wamid,direction,source,from,to,fromUserId,fromParentUserId,toUserId,"
    "groupId,type,rawType,unsupportedType,timestamp,text,contactName,"
    "contactWaId,contactUserId,contactUsername,contextMessageId,contextFrom,"
    "isForwarded,isFrequentlyForwarded,forwardedCount,"
    "referredProductCatalogId,referredProductRetailerId,locationLatitude,"
    "locationLongitude,locationName,locationAddress,locationUrl,"
    "interactiveType,buttonPayload,buttonText,listId,listTitle,"
    "listDescription,reactionEmoji,reactionMessageId,originalMessageId,"
    "errorCode,errorTitle,referral,historyStatus,";

static const char  *media_keys =
    ",mediaId,type,mimeType,sha256,fileName,caption,downloadUrl,voice,"
    "animated,";

static const char  *status_keys =
    ",wamid,status,statusRaw,timestamp,recipientId,recipientUserId,"
    "recipientParentUserId,recipientType,recipientParticipantId,"
    "recipientParticipantUserId,errorCode,errorTitle,errorMessage,"
    "errorDetails,errorHref,pricingModel,pricingCategory,pricingType,"
    "billable,conversationId,conversationOriginType,conversationExpiresAt,"
    "bizOpaqueCallbackData,";

static const char  *contact_keys =
    ",waId,userId,parentUserId,name,username,identityKeyHash,";

static const char  *sync_contact_keys =
    ",action,name,firstName,phoneNumber,userId,username,timestamp,";


/* all keys of all events are documented ones */

static int
documented(json_t *events)
{
    size_t   i;
    json_t  *ev;
    int      good;

    good = 1;

    json_array_foreach(events, i, ev) {
        good &= allowed(ev, event_keys);
        good &= allowed(get(ev, "message", NULL), message_keys);
        good &= allowed(get(ev, "media", NULL), media_keys);
        good &= allowed(get(ev, "status", NULL), status_keys);
        good &= allowed(get(ev, "contact", NULL),
                        strcmp(S(ev, "eventType", NULL), "state_sync") == 0
                        ? sync_contact_keys : contact_keys);
    }

    return good;
}


static char *
item_key(size_t e, size_t c, size_t i)
{
    static char  buf[128];

    snprintf(buf, sizeof(buf), "item:%s:%zu:%zu:%zu", sha, e, c, i);

    return buf;
}


static void
test_message(void)
{
    json_t  *evs, *ev;

    evs = norm(BODY("messages", "{" META ","
        "\"contacts\":[{\"profile\":{\"name\":\"Other\"},\"wa_id\":\"111\"},"
        "{\"profile\":{\"name\":\"Ana\",\"username\":\"@ana\"},"
        "\"wa_id\":\"5511999\",\"user_id\":\"BR.1\","
        "\"identity_key_hash\":\"h\"}],"
        "\"messages\":[{\"from\":\"5511999\",\"id\":\"wamid.A\","
        "\"timestamp\":\"1749416383\",\"type\":\"text\","
        "\"text\":{\"body\":\"Ol\\u00e1 \\/ \\ud83d\\ude00\"}}]}"));

    is_int(rc, MC_BODY_OK, "message: ok");
    is_int(json_array_size(evs), 1, "message: one event");
    ev = json_array_get(evs, 0);

    is_str(keys(ev), "changeIndex,contact,displayPhoneNumber,entryIndex,"
           "eventType,field,itemIndex,message,payload,phoneNumberId,scope,"
           "v,wabaId,webhookId", "message: event keys exactly");
    is_int(I(ev, "v", NULL), 1, "v is 1");
    is_str(S(ev, "field", NULL), "messages", "field");
    is_str(S(ev, "eventType", NULL), "message", "eventType message");
    is_str(S(ev, "scope", NULL), "PN1", "scope is the phone_number_id");
    is_str(S(ev, "webhookId", NULL), "msg:wamid.A", "key msg:<wamid>");
    is_str(S(ev, "wabaId", NULL), "W1", "wabaId");
    is_str(S(ev, "phoneNumberId", NULL), "PN1", "phoneNumberId");
    is_str(S(ev, "displayPhoneNumber", NULL), "15550001111",
           "displayPhoneNumber");
    is_int(I(ev, "itemIndex", NULL), 0, "itemIndex");
    is_str(S(json_object_get(ev, "payload"), "text", "body"),
           "Ol\xc3\xa1 / \xf0\x9f\x98\x80", "payload is the item, decoded");

    is_str(keys(json_object_get(ev, "message")),
           "contactName,contactUserId,contactUsername,contactWaId,direction,"
           "forwardedCount,from,isForwarded,isFrequentlyForwarded,rawType,"
           "source,text,timestamp,type,wamid", "message: column keys exactly");
    is_str(S(ev, "message", "wamid"), "wamid.A", "wamid");
    is_str(S(ev, "message", "direction"), "INBOUND", "direction INBOUND");
    is_str(S(ev, "message", "source"), "webhook", "source webhook");
    is_str(S(ev, "message", "type"), "TEXT", "type TEXT");
    is_str(S(ev, "message", "rawType"), "text", "rawType text");
    is_int(I(ev, "message", "timestamp"), 1749416383,
           "timestamp string -> integer");
    is_str(S(ev, "message", "text"), "Ol\xc3\xa1 / \xf0\x9f\x98\x80", "text");
    is_str(S(ev, "message", "contactName"), "Ana",
           "contact matched by wa_id, not position");
    is_str(S(ev, "message", "contactUsername"), "@ana", "contactUsername");
    ok(json_is_false(get(ev, "message", "isForwarded")), "isForwarded false");
    is_int(I(ev, "message", "forwardedCount"), 0, "forwardedCount 0");

    is_str(keys(json_object_get(ev, "contact")),
           "identityKeyHash,name,userId,username,waId",
           "contact keys exactly");
    is_str(S(ev, "contact", "waId"), "5511999", "contact waId");
    is_str(S(ev, "contact", "userId"), "BR.1", "contact userId");
    is_str(S(ev, "contact", "identityKeyHash"), "h", "identityKeyHash");

    json_decref(evs);

    /* BSUID era: no from, no wa_id; matched by user_id */

    evs = norm(BODY("messages", "{" META ","
        "\"contacts\":[{\"profile\":{\"name\":\"X\"},\"user_id\":\"US.9\"},"
        "{\"profile\":{\"name\":\"Y\"},\"user_id\":\"US.7\","
        "\"parent_user_id\":\"US.ENT.1\"}],"
        "\"messages\":[{\"from_user_id\":\"US.7\","
        "\"from_parent_user_id\":\"US.ENT.1\",\"id\":\"wamid.B\","
        "\"timestamp\":\"1\",\"type\":\"text\",\"text\":{\"body\":\"b\"}}]}"));
    ev = json_array_get(evs, 0);
    is_str(S(ev, "message", "contactName"), "Y", "matched by user_id");
    is_str(S(ev, "message", "fromUserId"), "US.7", "fromUserId");
    is_str(S(ev, "message", "fromParentUserId"), "US.ENT.1",
           "fromParentUserId");
    ok(get(ev, "message", "from") == NULL, "no from");
    is_str(S(ev, "contact", "parentUserId"), "US.ENT.1", "parentUserId");
    json_decref(evs);

    /* no match: no contact at all, never the first one */

    evs = norm(BODY("messages", "{" META ","
        "\"contacts\":[{\"profile\":{\"name\":\"X\"},\"wa_id\":\"1\"}],"
        "\"messages\":[{\"from\":\"2\",\"id\":\"wamid.C\",\"type\":\"text\","
        "\"text\":{\"body\":\"c\"}}]}"));
    ev = json_array_get(evs, 0);
    ok(get(ev, "contact", NULL) == NULL, "no matching contact: none");
    ok(get(ev, "message", "contactName") == NULL, "no contactName");
    ok(json_is_null(get(ev, "message", "timestamp"))
       || get(ev, "message", "timestamp") == NULL, "no timestamp: null");
    json_decref(evs);
}


static void
test_message_types(void)
{
    json_t  *evs, *ev;

    evs = norm(BODY("messages", "{" META ",\"messages\":["
        "{\"from\":\"1\",\"id\":\"m0\",\"type\":\"image\",\"image\":{"
        "\"caption\":\"cap\",\"mime_type\":\"image/jpeg\",\"sha256\":\"s=\","
        "\"id\":\"MID0\",\"url\":\"https://x/y\"}},"
        "{\"from\":\"1\",\"id\":\"m1\",\"type\":\"audio\",\"audio\":{"
        "\"mime_type\":\"audio/ogg\",\"id\":\"MID1\",\"voice\":true}},"
        "{\"from\":\"1\",\"id\":\"m2\",\"type\":\"document\",\"document\":{"
        "\"filename\":\"a.pdf\",\"id\":\"MID2\"}},"
        "{\"from\":\"1\",\"id\":\"m3\",\"type\":\"sticker\",\"sticker\":{"
        "\"id\":\"MID3\",\"animated\":false}},"
        "{\"from\":\"1\",\"id\":\"m4\",\"type\":\"location\",\"location\":{"
        "\"latitude\":37.422,\"longitude\":\"-122.5\",\"name\":\"N\"}},"
        "{\"from\":\"1\",\"id\":\"m5\",\"type\":\"interactive\","
        "\"interactive\":{\"type\":\"list_reply\",\"list_reply\":{"
        "\"id\":\"L\",\"title\":\"T\",\"description\":\"D\"}}},"
        "{\"from\":\"1\",\"id\":\"m6\",\"type\":\"interactive\","
        "\"interactive\":{\"type\":\"button_reply\",\"button_reply\":{"
        "\"id\":\"B\",\"title\":\"BT\"}}},"
        "{\"from\":\"1\",\"id\":\"m7\",\"type\":\"interactive\","
        "\"interactive\":{\"type\":\"nfm_reply\",\"nfm_reply\":{}}},"
        "{\"from\":\"1\",\"id\":\"m8\",\"type\":\"reaction\",\"reaction\":{"
        "\"message_id\":\"wamid.R\",\"emoji\":\"\"}},"
        "{\"from\":\"1\",\"id\":\"m9\",\"type\":\"button\",\"button\":{"
        "\"payload\":\"P\",\"text\":\"BTX\"},"
        "\"context\":{\"from\":\"15550001111\","
        "\"id\":\"wamid.CTX\",\"frequently_forwarded\":true}},"
        "{\"from\":\"1\",\"id\":\"m10\",\"type\":\"unsupported\","
        "\"unsupported\":{\"type\":\"poll\"},\"errors\":[{\"code\":131051,"
        "\"title\":\"Message type unknown\"}]},"
        "{\"from\":\"1\",\"id\":\"m11\",\"type\":\"unknown\"},"
        "{\"from\":\"1\",\"id\":\"m12\",\"type\":\"edit\",\"edit\":{"
        "\"original_message_id\":\"wamid.O\",\"message\":{\"type\":\"text\","
        "\"text\":{\"body\":\"new\"}}}},"
        "{\"from\":\"1\",\"id\":\"m13\",\"type\":\"system\",\"system\":{"
        "\"body\":\"changed\",\"type\":\"user_changed_number\"}},"
        "{\"from\":\"1\",\"id\":\"m14\",\"type\":\"order\",\"order\":{"
        "\"catalog_id\":\"c\",\"text\":\"\"}},"
        "{\"from\":\"1\",\"id\":\"m15\",\"type\":\"request_welcome\"},"
        "{\"from\":\"1\",\"id\":\"m16\",\"type\":\"revoke\",\"revoke\":{"
        "\"original_message_id\":\"wamid.RV\"}},"
        "{\"from\":\"1\",\"id\":\"m17\",\"type\":\"contacts\","
        "\"contacts\":[{\"name\":{\"formatted_name\":\"F\"}}]},"
        "{\"from\":\"1\",\"id\":\"m18\",\"type\":\"video\",\"video\":{"
        "\"id\":\"MID18\"},\"referral\":{\"source_id\":\"ad\"},"
        "\"context\":{\"forwarded\":true,\"referred_product\":{"
        "\"catalog_id\":\"CAT\",\"product_retailer_id\":\"SKU\"}}}"
        "]}"));

    is_int(json_array_size(evs), 19, "19 messages, 19 events");
    ok(documented(evs), "every key is a documented one");

    ev = json_array_get(evs, 0);
    is_str(S(ev, "message", "type"), "IMAGE", "image: IMAGE");
    is_str(S(ev, "message", "text"), "cap", "image: caption as text");
    is_str(keys(json_object_get(ev, "media")),
           "caption,downloadUrl,mediaId,mimeType,sha256,type",
           "image: media keys exactly");
    is_str(S(ev, "media", "mediaId"), "MID0", "media id");
    is_str(S(ev, "media", "type"), "IMAGE", "media type");
    is_str(S(ev, "media", "mimeType"), "image/jpeg", "mimeType");
    is_str(S(ev, "media", "sha256"), "s=", "sha256 verbatim");
    is_str(S(ev, "media", "downloadUrl"), "https://x/y", "downloadUrl");

    ev = json_array_get(evs, 1);
    ok(json_is_true(get(ev, "media", "voice")), "audio: voice true");
    is_str(S(ev, "media", "type"), "AUDIO", "audio: AUDIO");

    ev = json_array_get(evs, 2);
    is_str(S(ev, "media", "fileName"), "a.pdf", "document: fileName");

    ev = json_array_get(evs, 3);
    ok(json_is_false(get(ev, "media", "animated")), "sticker: animated false");

    ev = json_array_get(evs, 4);
    is_str(S(ev, "message", "type"), "LOCATION", "LOCATION");
    ok(json_real_value(get(ev, "message", "locationLatitude")) == 37.422,
       "latitude 37.422");
    ok(json_real_value(get(ev, "message", "locationLongitude")) == -122.5,
       "longitude given as a string: -122.5");
    is_str(S(ev, "message", "locationName"), "N", "locationName");
    ok(get(ev, "media", NULL) == NULL, "location: no media");

    ev = json_array_get(evs, 5);
    is_str(S(ev, "message", "type"), "LIST_REPLY", "LIST_REPLY");
    is_str(S(ev, "message", "listId"), "L", "listId");
    is_str(S(ev, "message", "listTitle"), "T", "listTitle");
    is_str(S(ev, "message", "listDescription"), "D", "listDescription");
    is_str(S(ev, "message", "text"), "T", "list title as text");
    is_str(S(ev, "message", "interactiveType"), "list_reply",
           "interactiveType");

    ev = json_array_get(evs, 6);
    is_str(S(ev, "message", "type"), "BUTTON_REPLY", "BUTTON_REPLY");
    is_str(S(ev, "message", "buttonPayload"), "B", "buttonPayload (id)");
    is_str(S(ev, "message", "buttonText"), "BT", "buttonText (title)");

    ev = json_array_get(evs, 7);
    is_str(S(ev, "message", "type"), "INTERACTIVE", "nfm_reply: INTERACTIVE");

    ev = json_array_get(evs, 8);
    is_str(S(ev, "message", "type"), "REACTION", "REACTION");
    ok(json_is_null(get(ev, "message", "reactionEmoji")),
       "empty emoji: null");
    is_str(S(ev, "message", "reactionMessageId"), "wamid.R",
           "reactionMessageId");

    ev = json_array_get(evs, 9);
    is_str(S(ev, "message", "type"), "BUTTON", "BUTTON");
    is_str(S(ev, "message", "buttonPayload"), "P", "button payload");
    is_str(S(ev, "message", "text"), "BTX", "button text as text");
    is_str(S(ev, "message", "contextMessageId"), "wamid.CTX",
           "contextMessageId");
    is_str(S(ev, "message", "contextFrom"), "15550001111", "contextFrom");
    ok(json_is_true(get(ev, "message", "isFrequentlyForwarded")),
       "isFrequentlyForwarded");
    is_int(I(ev, "message", "forwardedCount"), 5, "frequently: count 5");

    ev = json_array_get(evs, 10);
    is_str(S(ev, "message", "type"), "UNSUPPORTED", "UNSUPPORTED");
    is_str(S(ev, "message", "rawType"), "unsupported", "rawType unsupported");
    is_str(S(ev, "message", "unsupportedType"), "poll", "unsupportedType");
    is_int(I(ev, "message", "errorCode"), 131051, "errorCode");
    is_str(S(ev, "message", "errorTitle"), "Message type unknown",
           "errorTitle");

    ev = json_array_get(evs, 11);
    is_str(S(ev, "message", "type"), "UNKNOWN", "unknown: UNKNOWN");
    is_str(S(ev, "message", "rawType"), "unknown", "rawType kept");

    ev = json_array_get(evs, 12);
    is_str(S(ev, "message", "type"), "EDIT", "EDIT");
    is_str(S(ev, "message", "text"), "new", "edit: the new text");
    is_str(S(ev, "message", "originalMessageId"), "wamid.O",
           "edit: originalMessageId");

    ev = json_array_get(evs, 13);
    is_str(S(ev, "message", "type"), "SYSTEM", "SYSTEM");
    is_str(S(ev, "message", "text"), "changed", "system body as text");

    ev = json_array_get(evs, 14);
    is_str(S(ev, "message", "type"), "ORDER", "ORDER");
    is_str(S(ev, "message", "text"), "", "order: empty text kept as sent");

    ev = json_array_get(evs, 15);
    is_str(S(ev, "message", "type"), "REQUEST_WELCOME", "REQUEST_WELCOME");

    ev = json_array_get(evs, 16);
    is_str(S(ev, "message", "type"), "REVOKE", "REVOKE");
    is_str(S(ev, "message", "originalMessageId"), "wamid.RV",
           "revoke: originalMessageId");

    ev = json_array_get(evs, 17);
    is_str(S(ev, "message", "type"), "CONTACTS", "CONTACTS");

    ev = json_array_get(evs, 18);
    is_str(S(ev, "media", "type"), "VIDEO", "VIDEO media");
    is_str(S(json_object_get(ev, "message"), "referral", "source_id"), "ad",
           "referral as is");
    is_int(I(ev, "message", "forwardedCount"), 1, "forwarded: count 1");
    is_str(S(ev, "message", "referredProductCatalogId"), "CAT",
           "referredProductCatalogId");
    is_str(S(ev, "message", "referredProductRetailerId"), "SKU",
           "referredProductRetailerId");
    is_int(I(ev, "itemIndex", NULL), 18, "itemIndex 18");

    json_decref(evs);
}


static void
test_echo_history(void)
{
    json_t  *evs, *ev;

    evs = norm(BODY("smb_message_echoes", "{" META ","
        "\"contacts\":[{\"profile\":{\"username\":\"@u\"},\"wa_id\":\"777\","
        "\"user_id\":\"US.77\"}],"
        "\"message_echoes\":[{\"from\":\"15550001111\",\"to\":\"777\","
        "\"to_user_id\":\"US.77\",\"id\":\"wamid.E\",\"timestamp\":\"5\","
        "\"type\":\"edit\",\"edit\":{\"original_message_id\":\"wamid.O\","
        "\"message\":{\"context\":{\"id\":\"M0\"},\"type\":\"image\","
        "\"image\":{\"caption\":\"new cap\",\"id\":\"IMG\"}}}}]}"));
    ev = json_array_get(evs, 0);
    is_str(S(ev, "eventType", NULL), "echo", "eventType echo");
    is_str(S(ev, "webhookId", NULL), "msg:wamid.E", "echo key");
    is_str(S(ev, "message", "direction"), "OUTBOUND", "echo OUTBOUND");
    is_str(S(ev, "message", "source"), "echo", "source echo");
    is_str(S(ev, "message", "toUserId"), "US.77", "toUserId");
    is_str(S(ev, "message", "contactWaId"), "777", "echo matched by to");
    is_str(S(ev, "message", "text"), "new cap", "edit: the new caption");
    is_str(S(ev, "media", "mediaId"), "IMG", "edit: media of the new message");
    is_str(S(ev, "contact", "username"), "@u", "echo contact");
    ok(documented(evs), "echo: documented keys");
    json_decref(evs);

    evs = norm(BODY("history", "{" META ",\"history\":["
        "{\"metadata\":{\"phase\":0},\"threads\":["
        "{\"id\":\"222\",\"context\":{\"user_id\":\"US.2\","
        "\"username\":\"@two\"},\"messages\":["
        "{\"from\":\"15550001111\",\"to\":\"222\",\"id\":\"wamid.H1\","
        "\"timestamp\":\"10\",\"type\":\"text\",\"text\":{\"body\":\"hi\"},"
        "\"history_context\":{\"status\":\"READ\"}},"
        "{\"from\":\"222\",\"id\":\"wamid.H2\",\"timestamp\":\"11\","
        "\"type\":\"media_placeholder\"}]},"
        "{\"id\":\"333\",\"messages\":[{\"from\":\"333\",\"id\":\"wamid.H3\","
        "\"type\":\"text\",\"text\":{\"body\":\"x\"}}]}]},"
        "{\"errors\":[{\"code\":2593109,\"title\":\"off\"}]}],"
        "\"messages\":[{\"from\":\"222\",\"id\":\"wamid.H2\","
        "\"type\":\"image\","
        "\"image\":{\"id\":\"HM\",\"sha256\":\"abc\"}}],"
        "\"message_echoes\":[{\"from\":\"15550001111\",\"to\":\"222\","
        "\"id\":\"wamid.H4\",\"type\":\"video\",\"video\":{\"id\":\"HV\"}}]}"));

    is_int(json_array_size(evs), 6, "history: 3 messages + error + 2 media");
    ok(documented(evs), "history: documented keys");

    ev = json_array_get(evs, 0);
    is_str(S(ev, "eventType", NULL), "history_message", "history_message");
    is_str(S(ev, "webhookId", NULL), "msg:wamid.H1", "history key msg:");
    is_str(S(ev, "message", "direction"), "OUTBOUND",
           "from == display number: OUTBOUND");
    is_str(S(ev, "message", "source"), "history", "source history");
    is_str(S(ev, "message", "historyStatus"), "READ", "historyStatus");
    is_str(S(ev, "message", "contactWaId"), "222", "thread id as contactWaId");
    is_str(S(ev, "contact", "waId"), "222", "history contact waId");
    is_str(S(ev, "contact", "userId"), "US.2", "history contact userId");
    is_str(S(ev, "contact", "username"), "@two", "history contact username");

    ev = json_array_get(evs, 1);
    is_str(S(ev, "message", "direction"), "INBOUND", "user message INBOUND");
    is_str(S(ev, "message", "type"), "MEDIA_PLACEHOLDER", "MEDIA_PLACEHOLDER");
    is_int(I(ev, "itemIndex", NULL), 1, "running itemIndex");

    ev = json_array_get(evs, 2);
    is_str(S(ev, "contact", "waId"), "333", "second thread");
    is_int(I(ev, "itemIndex", NULL), 2, "itemIndex over threads");

    ev = json_array_get(evs, 3);
    is_str(S(ev, "eventType", NULL), "history_error", "history_error");
    is_str(S(ev, "webhookId", NULL), item_key(0, 0, 3), "history_error key");
    ok(json_array_size(get(ev, "payload", "errors")) == 1,
       "payload has its errors");

    ev = json_array_get(evs, 4);
    is_str(S(ev, "eventType", NULL), "history_media", "history_media");
    is_str(S(ev, "webhookId", NULL), "hmedia:wamid.H2", "key hmedia:");
    is_str(S(ev, "message", "source"), "history_media", "source");
    is_str(S(ev, "message", "direction"), "INBOUND", "messages[]: INBOUND");
    is_str(S(ev, "media", "mediaId"), "HM", "history media id");
    is_str(S(ev, "media", "sha256"), "abc", "hex sha256 verbatim");

    ev = json_array_get(evs, 5);
    is_str(S(ev, "message", "direction"), "OUTBOUND", "echoes: OUTBOUND");
    is_str(S(ev, "webhookId", NULL), "hmedia:wamid.H4", "echo hmedia key");

    json_decref(evs);
}


static void
test_status(void)
{
    json_t  *evs, *ev;

    evs = norm(BODY("messages", "{" META ","
        "\"contacts\":[{\"wa_id\":\"900\",\"user_id\":\"US.900\"},"
        "{\"wa_id\":\"901\",\"user_id\":\"US.901\"}],"
        "\"statuses\":["
        "{\"id\":\"wamid.S\",\"status\":\"read\",\"timestamp\":\"7\","
        "\"recipient_id\":\"G1\",\"recipient_type\":\"group\","
        "\"recipient_user_id\":\"US.G\",\"recipient_participant_id\":\"901\","
        "\"recipient_participant_user_id\":\"US.901\"},"
        "{\"id\":\"wamid.S\",\"status\":\"read\",\"recipient_id\":\"G1\","
        "\"recipient_user_id\":\"US.G\",\"recipient_participant_id\":\"900\"},"
        "{\"id\":\"wamid.S\",\"status\":\"delivered\",\"recipient_id\":\"900\","
        "\"recipient_user_id\":\"US.900\"},"
        "{\"id\":\"wamid.S\",\"status\":\"sent\",\"recipient_id\":\"900\"},"
        "{\"id\":\"wamid.S\",\"status\":\"deleted\"},"
        "{\"id\":\"wamid.F\",\"status\":\"failed\",\"timestamp\":1700000000,"
        "\"recipient_id\":\"900\",\"errors\":[{\"code\":\"131049\","
        "\"title\":\"T\",\"message\":\"M\",\"error_data\":{\"details\":\"D\"},"
        "\"href\":\"/h\"}],\"pricing\":{\"billable\":false,"
        "\"pricing_model\":\"PMP\",\"category\":\"marketing\","
        "\"type\":\"regular\"},\"conversation\":{\"id\":\"C\","
        "\"expiration_timestamp\":\"99\",\"origin\":{\"type\":\"service\"}},"
        "\"biz_opaque_callback_data\":\"opaque\"},"
        "{\"id\":\"wamid.X\",\"status\":\"bounced\",\"recipient_id\":\"1\"}"
        "]}"));

    is_int(json_array_size(evs), 7, "7 statuses, 7 events");
    ok(documented(evs), "status: documented keys");

    ev = json_array_get(evs, 0);
    is_str(S(ev, "eventType", NULL), "status", "eventType status");
    is_str(S(ev, "webhookId", NULL), "status:wamid.S:read:US.901",
           "who: recipient_participant_user_id first");
    is_str(S(ev, "contact", "waId"), "901",
           "group receipt: the participant's contact");
    is_str(S(ev, "status", "recipientParticipantId"), "901",
           "recipientParticipantId");
    is_str(S(ev, "status", "recipientParticipantUserId"), "US.901",
           "recipientParticipantUserId");
    is_str(S(ev, "status", "recipientType"), "group", "recipientType");

    ev = json_array_get(evs, 1);
    is_str(S(ev, "webhookId", NULL), "status:wamid.S:read:900",
           "who: then recipient_participant_id");
    is_str(S(ev, "contact", "userId"), "US.900", "participant by wa_id");

    ev = json_array_get(evs, 2);
    is_str(S(ev, "webhookId", NULL), "status:wamid.S:delivered:US.900",
           "who: then recipient_user_id");
    is_str(S(ev, "status", "status"), "DELIVERED", "DELIVERED");

    ev = json_array_get(evs, 3);
    is_str(S(ev, "webhookId", NULL), "status:wamid.S:sent:900",
           "who: then recipient_id");

    ev = json_array_get(evs, 4);
    is_str(S(ev, "webhookId", NULL), "status:wamid.S:deleted:",
           "who: empty when none");
    is_str(S(ev, "status", "status"), "DELETED", "DELETED");
    ok(get(ev, "contact", NULL) == NULL, "no recipient: no contact");

    ev = json_array_get(evs, 5);
    is_str(S(ev, "status", "status"), "FAILED", "FAILED");
    is_str(S(ev, "status", "statusRaw"), "failed", "statusRaw");
    is_int(I(ev, "status", "timestamp"), 1700000000,
           "numeric timestamp accepted");
    is_int(I(ev, "status", "errorCode"), 131049, "errorCode from a string");
    is_str(S(ev, "status", "errorTitle"), "T", "errorTitle");
    is_str(S(ev, "status", "errorMessage"), "M", "errorMessage");
    is_str(S(json_object_get(ev, "status"), "errorDetails", "details"), "D",
           "errorDetails object");
    is_str(S(ev, "status", "errorHref"), "/h", "errorHref");
    ok(json_is_false(get(ev, "status", "billable")), "billable false");
    is_str(S(ev, "status", "pricingModel"), "PMP", "pricingModel");
    is_str(S(ev, "status", "pricingCategory"), "marketing", "pricingCategory");
    is_str(S(ev, "status", "pricingType"), "regular", "pricingType");
    is_str(S(ev, "status", "conversationId"), "C", "conversationId");
    is_str(S(ev, "status", "conversationOriginType"), "service",
           "conversationOriginType");
    is_int(I(ev, "status", "conversationExpiresAt"), 99,
           "conversationExpiresAt");
    is_str(S(ev, "status", "bizOpaqueCallbackData"), "opaque",
           "bizOpaqueCallbackData");

    ev = json_array_get(evs, 6);
    is_str(S(ev, "status", "status"), "UNKNOWN", "unknown status: UNKNOWN");
    is_str(S(ev, "status", "statusRaw"), "bounced", "statusRaw verbatim");

    json_decref(evs);
}


static void
test_other_types(void)
{
    char     want[128];
    size_t   i, n;
    json_t  *evs, *ev;

    unsigned char       md[32];
    static const char  *sorted =
        "{\"action\":\"add\",\"contact\":{\"full_name\":\"P M\","
        "\"phone_number\":\"165\"},\"metadata\":{\"timestamp\":\"1739321024\"},"
        "\"type\":\"contact\"}";

    evs = norm(BODY("messages", "{" META ",\"errors\":["
        "{\"code\":130429,\"title\":\"Rate limit hit\"},{\"code\":1}]}"));
    is_int(json_array_size(evs), 2, "value.errors: one event each");
    ev = json_array_get(evs, 1);
    is_str(S(ev, "eventType", NULL), "error", "eventType error");
    is_str(S(ev, "webhookId", NULL), item_key(0, 0, 1), "error key item:");
    ok(get(ev, "message", NULL) == NULL && get(ev, "status", NULL) == NULL,
       "error: no sub-object");
    json_decref(evs);

    evs = norm(BODY("smb_app_state_sync", "{" META ",\"state_sync\":["
        "{\"type\":\"contact\",\"contact\":{\"full_name\":\"P M\","
        "\"phone_number\":\"165\"},\"action\":\"add\","
        "\"metadata\":{\"timestamp\":\"1739321024\"}}]}"));
    ev = json_array_get(evs, 0);
    is_str(S(ev, "eventType", NULL), "state_sync", "eventType state_sync");

    EVP_Q_digest(NULL, "SHA256", NULL, sorted, strlen(sorted), md, &n);
    strcpy(want, "sync:");

    for (i = 0; i < 32; i++) {
        snprintf(want + 5 + 2 * i, 3, "%02x", md[i]);
    }

    is_str(S(ev, "webhookId", NULL), want,
           "sync key: sha256 of the item with sorted keys");
    is_str(keys(json_object_get(ev, "contact")),
           "action,name,phoneNumber,timestamp", "state_sync contact keys");
    is_str(S(ev, "contact", "name"), "P M", "state_sync name");
    is_int(I(ev, "contact", "timestamp"), 1739321024, "state_sync timestamp");
    json_decref(evs);

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":[{"
               "\"id\":\"W9\",\"time\":1739212624,\"changes\":[{"
               "\"field\":\"account_update\",\"value\":{"
               "\"event\":\"PARTNER_REMOVED\"}}]}]}");
    ev = json_array_get(evs, 0);
    is_str(S(ev, "eventType", NULL), "generic", "other field: generic");
    is_str(S(ev, "scope", NULL), "waba:W9", "no phone number: waba scope");
    is_str(S(ev, "webhookId", NULL), item_key(0, 0, 0), "generic key");
    ok(json_is_null(get(ev, "phoneNumberId", NULL)), "phoneNumberId null");
    is_str(S(json_object_get(ev, "payload"), "event", NULL),
           "PARTNER_REMOVED", "payload is the whole value");
    json_decref(evs);
}


static void
test_nul(void)
{
    json_t      *evs, *ev, *p;
    const char  *k;
    json_t      *v;
    int          found;

    static const char  body[] = BODY("messages", "{" META ","
        "\"messages\":[{\"from\":\"1\",\"id\":\"wamid.N\",\"type\":\"text\","
        "\"text\":{\"body\":\"a\\u0000b\",\"k\\u0000\":\"raw\0nul\"}}]}");

    evs = norm_len(body, sizeof(body) - 1);
    is_int(rc, MC_BODY_OK, "NUL: parsed");
    ev = json_array_get(evs, 0);
    is_str(S(ev, "message", "text"), "a" FFFD "b", "NUL in text: U+FFFD");

    p = get(json_object_get(ev, "payload"), "text", NULL);
    is_str(S(p, "body", NULL), "a" FFFD "b", "NUL in the payload: U+FFFD");

    found = 0;

    json_object_foreach(p, k, v) {
        if (strcmp(k, "k" FFFD) == 0) {
            found = 1;
            is_str(json_string_value(v), "raw" FFFD "nul",
                   "raw NUL byte in a value: U+FFFD");
        }
    }

    ok(found, "NUL in a key: U+FFFD");
    json_decref(evs);
}


static void
test_batch(void)
{
    char     *body, *p;
    size_t    i;
    json_t   *evs;
    int       distinct;

    body = malloc(200 * 1000 + 1024);
    p = body + sprintf(body, "{\"object\":\"whatsapp_business_account\","
                       "\"entry\":[{\"id\":\"W1\",\"changes\":[{"
                       "\"field\":\"messages\",\"value\":{" META
                       ",\"messages\":[");

    for (i = 0; i < 1000; i++) {
        p += sprintf(p, "%s{\"from\":\"1\",\"id\":\"wamid.%zu\","
                     "\"type\":\"text\",\"text\":{\"body\":\"%s\"}}",
                     i ? "," : "", i,
                     (i == 500) ? "lone \\ud83d" : (i == 501) ? "bad \xff"
                     : "fine");
    }

    strcpy(p, "]}}]}]}");

    evs = norm(body);
    is_int(rc, MC_BODY_OK, "1,000 messages with bad strings: ok");
    is_int(json_array_size(evs), 1000, "1,000 messages, 1,000 events");
    is_str(S(json_array_get(evs, 999), "webhookId", NULL), "msg:wamid.999",
           "the last one");
    is_int(I(json_array_get(evs, 999), "itemIndex", NULL), 999,
           "itemIndex 999");
    is_str(S(json_array_get(evs, 500), "message", "text"), "lone " FFFD,
           "lone surrogate replaced");
    is_str(S(json_array_get(evs, 501), "message", "text"), "bad " FFFD,
           "bad byte replaced");

    distinct = 1;

    for (i = 1; i < 1000; i++) {
        if (strcmp(S(json_array_get(evs, i), "webhookId", NULL),
                   S(json_array_get(evs, i - 1), "webhookId", NULL)) == 0)
        {
            distinct = 0;
        }
    }

    ok(distinct, "keys distinct");

    json_decref(evs);
    free(body);

    /* several entries and changes: every one, never the first only */

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":["
        "{\"id\":\"W1\",\"changes\":[{\"field\":\"messages\",\"value\":{"
        META ",\"messages\":[{\"id\":\"a\",\"type\":\"text\"}]}},"
        "{\"field\":\"messages\",\"value\":{" META ",\"statuses\":["
        "{\"id\":\"b\",\"status\":\"sent\",\"recipient_id\":\"1\"}]}}]},"
        "{\"id\":\"W2\",\"changes\":[{\"field\":\"messages\",\"value\":{"
        "\"metadata\":{\"phone_number_id\":\"PN2\"},"
        "\"messages\":[{\"id\":\"c\",\"type\":\"text\"}]}}]}]}");
    is_int(json_array_size(evs), 3, "2 entries, 3 changes: 3 events");
    is_int(I(json_array_get(evs, 1), "changeIndex", NULL), 1, "changeIndex");
    is_int(I(json_array_get(evs, 2), "entryIndex", NULL), 1, "entryIndex");
    is_str(S(json_array_get(evs, 2), "scope", NULL), "PN2", "scope per change");
    is_str(S(json_array_get(evs, 2), "wabaId", NULL), "W2", "wabaId per entry");
    json_decref(evs);
}


static void
test_bad_bodies(void)
{
    json_t  *evs;

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":[");
    is_int(rc, MC_BODY_INVALID_JSON, "truncated: invalid_json");
    is_int(json_array_size(evs), 0, "invalid_json: no event");
    json_decref(evs);

    evs = norm("");
    is_int(rc, MC_BODY_INVALID_JSON, "empty body: invalid_json");
    json_decref(evs);

    evs = norm("{\"a\":1}\xff");
    is_int(rc, MC_BODY_INVALID_JSON, "garbage after the document");
    json_decref(evs);

    evs = norm("{\"object\":\"page\",\"entry\":[{\"id\":\"1\"}]}");
    is_int(rc, MC_BODY_OTHER_OBJECT, "object page: other_object");
    is_int(json_array_size(evs), 0, "other_object: no event");
    json_decref(evs);

    evs = norm("[1,2]");
    is_int(rc, MC_BODY_NOT_WEBHOOK, "array: not_webhook");
    json_decref(evs);

    evs = norm("{\"object\":\"whatsapp_business_account\"}");
    is_int(rc, MC_BODY_NOT_WEBHOOK, "no entry: not_webhook");
    json_decref(evs);

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":{}}");
    is_int(rc, MC_BODY_NOT_WEBHOOK, "entry object: not_webhook");
    json_decref(evs);

    evs = norm("{\"object\":7,\"entry\":[]}");
    is_int(rc, MC_BODY_NOT_WEBHOOK, "numeric object: not_webhook");
    json_decref(evs);

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":[]}");
    is_int(rc, MC_BODY_OK, "no entries: ok");
    is_int(json_array_size(evs), 0, "no entries: no event");
    json_decref(evs);

    is_str(mc_body_rc_str(MC_BODY_OK), "ok", "rc string ok");
    is_str(mc_body_rc_str(MC_BODY_INVALID_JSON), "invalid_json",
           "rc string invalid_json");
    is_str(mc_body_rc_str(MC_BODY_NOT_WEBHOOK), "not_webhook",
           "rc string not_webhook");
    is_str(mc_body_rc_str(MC_BODY_OTHER_OBJECT), "other_object",
           "rc string other_object");
}


static void
test_wrong_types(void)
{
    json_t  *evs, *ev;

    evs = norm("{\"object\":\"whatsapp_business_account\",\"entry\":["
        "7,"
        "{\"id\":123,\"changes\":\"x\"},"
        "{\"id\":\"W3\",\"changes\":[5,{\"field\":\"messages\","
        "\"value\":[]},{\"field\":\"messages\",\"value\":{" META ","
        "\"messages\":{\"id\":\"m\"},\"statuses\":[\"s\"]}},"
        "{\"field\":\"messages\",\"value\":{\"metadata\":[],"
        "\"contacts\":{\"wa_id\":\"1\"},\"messages\":["
        "{\"from\":1,\"id\":42,\"timestamp\":[1],\"type\":\"text\","
        "\"text\":{\"body\":17},\"context\":\"c\",\"location\":[1],"
        "\"interactive\":[],\"reaction\":\"r\",\"errors\":{\"code\":1},"
        "\"image\":{\"id\":{}}},"
        "{\"type\":\"text\"},\"str\",null,"
        "{\"id\":\"x\",\"type\":{\"t\":1},\"timestamp\":\"12a\"}]}},"
        "{\"field\":7,\"value\":{}}]}]}");

    is_int(rc, MC_BODY_OK, "ill-typed body: ok");
    is_int(json_array_size(evs), 12, "ill-typed body: 12 events");
    ok(documented(evs), "ill-typed: documented keys");

    ev = json_array_get(evs, 0);
    is_str(S(ev, "invalid", NULL), "entry is not an object",
           "entry 7: invalid");
    is_str(S(ev, "eventType", NULL), "generic", "entry 7: generic");
    is_str(S(ev, "webhookId", NULL), item_key(0, 0, 0), "entry 7: key");
    is_str(S(ev, "scope", NULL), "waba:", "entry 7: scope waba:");

    ev = json_array_get(evs, 1);
    is_str(S(ev, "invalid", NULL), "entry without a changes array",
           "changes string: invalid");
    is_str(S(ev, "wabaId", NULL), "123", "numeric entry id: decimal string");
    is_str(S(ev, "scope", NULL), "waba:123", "scope waba:123");

    ev = json_array_get(evs, 2);
    is_str(S(ev, "invalid", NULL), "change is not an object", "change 5");
    is_str(S(ev, "webhookId", NULL), item_key(2, 0, 0), "change 5: key");

    ev = json_array_get(evs, 3);
    is_str(S(ev, "invalid", NULL), "change without an object value",
           "value array: invalid");
    is_str(S(ev, "field", NULL), "messages", "field kept");

    ev = json_array_get(evs, 4);
    is_str(S(ev, "invalid", NULL), "messages is not an array",
           "messages object: invalid");
    is_str(S(ev, "webhookId", NULL), item_key(2, 2, 0), "its key");

    ev = json_array_get(evs, 5);
    is_str(S(ev, "eventType", NULL), "status", "status string: status event");
    is_str(S(ev, "invalid", NULL), "status is not an object", "invalid");
    is_str(S(ev, "webhookId", NULL), item_key(2, 2, 1),
           "running index: no clash with the one before");

    ev = json_array_get(evs, 6);
    is_str(S(ev, "webhookId", NULL), "msg:42", "numeric id: msg:42");
    is_str(S(ev, "message", "from"), "1", "numeric from: \"1\"");
    is_str(S(ev, "message", "text"), "17", "numeric body: \"17\"");
    ok(json_is_null(get(ev, "message", "timestamp")),
       "array timestamp: null");
    ok(get(ev, "media", NULL) == NULL, "object media id: no media");
    ok(get(ev, "message", "errorCode") == NULL, "errors object: ignored");
    is_str(S(ev, "scope", NULL), "waba:W3", "metadata array: waba scope");

    ev = json_array_get(evs, 7);
    is_str(S(ev, "invalid", NULL), "message without id", "no id: invalid");
    is_str(S(ev, "webhookId", NULL), item_key(2, 3, 1), "no id: item key");
    ok(get(ev, "message", NULL) == NULL, "invalid: no sub-object");

    ev = json_array_get(evs, 8);
    is_str(S(ev, "invalid", NULL), "message is not an object", "string item");
    ev = json_array_get(evs, 9);
    is_str(S(ev, "invalid", NULL), "message is not an object", "null item");
    ok(json_is_null(get(ev, "payload", NULL)), "null payload");

    ev = json_array_get(evs, 10);
    is_str(S(ev, "message", "type"), "UNKNOWN", "object type: UNKNOWN");
    ok(json_is_null(get(ev, "message", "rawType")),
       "object type: rawType null");
    ok(json_is_null(get(ev, "message", "timestamp")), "\"12a\": null");

    ev = json_array_get(evs, 11);
    is_str(S(ev, "eventType", NULL), "generic", "numeric field: generic");
    ok(json_is_null(get(ev, "field", NULL)), "numeric field: null");

    json_decref(evs);
}


/* a 10 KB id: a prefix and many letters, so that two differ at the end */

static char *
long_id(const char *prefix, char last)
{
    char    *p;
    size_t   n;

    n = strlen(prefix);
    p = malloc(10240 + 1);
    memcpy(p, prefix, n);
    memset(p + n, 'x', 10240 - n);
    p[10239] = last;
    p[10240] = '\0';

    return p;
}


static int
bounded(const char *s, const char *prefix)
{
    size_t  n;

    n = strlen(s);

    return n > 200 && n <= 200 + 1 + 64
           && strncmp(s, prefix, strlen(prefix)) == 0 && s[n - 65] == '~';
}


static void
test_long_ids(void)
{
    char        *body, *id1, *id2, *pn, *waba, *who;
    char         k1[600], k2[600];
    size_t       i;
    json_t      *evs, *ev, *again;
    const char  *key;

    id1 = long_id("wamid.", 'a');
    id2 = long_id("wamid.", 'b');
    pn = long_id("PN", '1');
    waba = long_id("W", '1');
    who = long_id("55", '9');

    body = malloc(10 * 10240 + 2048);
    sprintf(body, "{\"object\":\"whatsapp_business_account\",\"entry\":[{"
            "\"id\":\"%s\",\"changes\":[{\"field\":\"messages\",\"value\":{"
            "\"metadata\":{\"phone_number_id\":\"%s\"},"
            "\"messages\":[{\"from\":\"%s\",\"id\":\"%s\",\"type\":\"text\","
            "\"text\":{\"body\":\"hi\"}},{\"from\":\"1\",\"id\":\"%s\","
            "\"type\":\"text\"},{\"from\":\"1\",\"id\":\"wamid.short\","
            "\"type\":\"text\"}],"
            "\"statuses\":[{\"id\":\"%s\",\"status\":\"%s\","
            "\"recipient_id\":\"%s\"}]}}]}]}",
            waba, pn, who, id1, id2, id1, who, who);

    evs = norm(body);
    is_int(rc, MC_BODY_OK, "10 KB ids: ok");
    is_int(json_array_size(evs), 4, "10 KB ids: every event");

    ev = json_array_get(evs, 0);
    key = S(ev, "webhookId", NULL);
    ok(key != NULL && strncmp(key, "msg:", 4) == 0
       && bounded(key + 4, "wamid.xxx"), "long wamid: key bounded");
    ok(bounded(S(ev, "message", "wamid"), "wamid.xxx"),
       "long wamid: column bounded, the same as in the key");
    ok(strcmp(key + 4, S(ev, "message", "wamid")) == 0,
       "key and column agree");
    ok(bounded(S(ev, "scope", NULL), "PNxxx")
       && strcmp(S(ev, "scope", NULL), S(ev, "phoneNumberId", NULL)) == 0,
       "long phone_number_id: scope and column bounded");
    ok(bounded(S(ev, "wabaId", NULL), "Wxxx"), "long entry id: bounded");
    ok(bounded(S(ev, "message", "from"), "55xxx"), "long from: bounded");
    is_str(S(ev, "message", "text"), "hi", "the text is intact");
    is_int(json_string_length(get(ev, "payload", "id")), 10240,
           "the payload keeps the whole id");

    snprintf(k1, sizeof(k1), "%s", key);
    snprintf(k2, sizeof(k2), "%s", S(json_array_get(evs, 1), "webhookId",
                                     NULL));
    ok(strcmp(k1, k2) != 0, "two long ids differing at the end: two keys");
    is_str(S(json_array_get(evs, 2), "webhookId", NULL), "msg:wamid.short",
           "a short id is kept as it is");

    ev = json_array_get(evs, 3);
    key = S(ev, "webhookId", NULL);
    ok(key != NULL && strlen(key) < 7 + 3 * 266 + 2,
       "status of a long id, status and recipient: key bounded");
    ok(strcmp(S(ev, "status", "wamid"), k1 + 4) == 0,
       "the status names the message as its key does");

    again = norm(body);

    for (i = 0; i < 4; i++) {
        is_str(S(json_array_get(again, i), "webhookId", NULL),
               S(json_array_get(evs, i), "webhookId", NULL),
               "a retry gives the same key");
    }

    json_decref(again);
    json_decref(evs);

    /* a multi-byte character across the cut: whole characters only */

    memset(id1, 'x', 10240);
    memcpy(id1 + 199, "\xc3\xa9", 2);
    id1[10240] = '\0';
    sprintf(body, BODY("messages", "{" META ",\"messages\":[{\"id\":\"%s\","
                       "\"type\":\"text\"}]}"), id1);
    evs = norm(body);
    key = S(json_array_get(evs, 0), "webhookId", NULL);
    ok(key != NULL && key[4 + 199] == '~', "the cut stays before the é");
    json_decref(evs);

    free(body);
    free(id1);
    free(id2);
    free(pn);
    free(waba);
    free(who);
}


static void
test_big_numbers(void)
{
    json_t  *evs, *ev;

    evs = norm(BODY("messages", "{" META ",\"unknown\":1e999,"
        "\"messages\":[{\"from\":123456789012345678901234567890,"
        "\"id\":\"m1\",\"timestamp\":1e999,\"type\":\"location\","
        "\"location\":{\"latitude\":1e999,\"longitude\":-2.5},"
        "\"errors\":[{\"code\":99999999999999999999}]},"
        "{\"from\":\"1\",\"id\":\"m2\",\"type\":\"text\","
        "\"text\":{\"body\":\"fine\"}}],"
        "\"statuses\":[{\"id\":\"s1\",\"status\":\"sent\","
        "\"timestamp\":-123456789012345678901234567890,"
        "\"recipient_id\":\"1\"}]}"));

    is_int(rc, MC_BODY_OK, "numbers jansson refuses: still ok");
    is_int(json_array_size(evs), 3, "every event kept");

    ev = json_array_get(evs, 0);
    is_str(S(ev, "payload", "timestamp"), "1e999",
           "payload keeps the text of 1e999");
    is_str(S(ev, "message", "from"), "123456789012345678901234567890",
           "a 30-digit id: its digits");
    ok(json_is_null(get(ev, "message", "timestamp")), "timestamp 1e999: null");
    ok(get(ev, "message", "locationLatitude") == NULL,
       "latitude 1e999: absent");
    ok(json_real_value(get(ev, "message", "locationLongitude")) == -2.5,
       "the longitude beside it is kept");
    ok(get(ev, "message", "errorCode") == NULL, "20-digit code: absent");

    ev = json_array_get(evs, 1);
    is_str(S(ev, "message", "text"), "fine", "the next message intact");

    ev = json_array_get(evs, 2);
    ok(json_is_null(get(ev, "status", "timestamp")),
       "status timestamp of 30 digits: null");
    is_str(S(ev, "payload", "timestamp"), "-123456789012345678901234567890",
           "payload keeps the negative digits");

    json_decref(evs);
}


int
main(void)
{
    test_message();
    test_message_types();
    test_echo_history();
    test_status();
    test_other_types();
    test_nul();
    test_batch();
    test_bad_bodies();
    test_wrong_types();
    test_long_ids();
    test_big_numbers();

    return done_testing();
}
