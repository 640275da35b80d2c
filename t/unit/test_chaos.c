
/*
 * Out of memory is never invalid JSON, nor a partial result: every
 * allocation of a normalisation (jansson's, the core's own, and OpenSSL's
 * for the hashes) is failed in turn, and each run must return either -1
 * or exactly what the undisturbed run returns (the way jansson's own
 * test_chaos.c fails its allocations).  Under ASan, no failure path leaks.
 *
 * One kind of allocation is not failed: the growth of the token buffer of
 * jansson's lexer.  jansson 2.14 ignores that failure (lex_save() drops
 * the byte) and then reads the string past its end: a crash inside
 * jansson that no caller can prevent.  The reference run finds those
 * allocations (inside json_loadb(), the one that replaces the buffer the
 * lexer allocated first), and the chaos runs skip exactly those.
 */


#define _GNU_SOURCE
#include <dlfcn.h>


#include <jansson.h>
#include <openssl/crypto.h>

#include "mc_tap.h"
#include "mc_core.h"


#ifndef MC_FIXTURES
#define MC_FIXTURES  "t/fixtures"
#endif


#define CHAOS_MAX  (1 << 20)


static unsigned long   chaos_count;
static unsigned long   chaos_fail_at;      /* 0: never */
static unsigned long   chaos_failed;
static unsigned long   chaos_skipped;

/* the reference run: which allocations grow jansson's token buffer */
static int             chaos_recording;
static unsigned char  *chaos_lexer_growth;

static int             chaos_in_parse;
static void           *chaos_lexer_buf;
static void           *chaos_last_alloc;


static int
chaos_fail(void)
{
    ++chaos_count;

    if (chaos_count != chaos_fail_at) {
        return 0;
    }

    if (chaos_count >= CHAOS_MAX || chaos_lexer_growth[chaos_count]) {
        chaos_skipped++;
        return 0;
    }

    chaos_failed++;
    return 1;
}


static void *
chaos_malloc(size_t size)
{
    void  *p;

    p = chaos_fail() ? NULL : malloc(size);

    if (chaos_in_parse && p != NULL) {
        if (chaos_lexer_buf == NULL) {
            /* strbuffer_init() is the first allocation of json_loadb() */
            chaos_lexer_buf = p;
        }

        chaos_last_alloc = p;
    }

    return p;
}


static void
chaos_free(void *p)
{
    if (chaos_in_parse && p != NULL && p == chaos_lexer_buf
        && chaos_last_alloc != NULL)
    {
        /* the allocation just before replaces the lexer's buffer */
        chaos_lexer_buf = chaos_last_alloc;

        if (chaos_recording && chaos_count < CHAOS_MAX) {
            chaos_lexer_growth[chaos_count] = 1;
        }
    }

    chaos_last_alloc = NULL;

    free(p);
}


/* the core's json_loadb() comes here first: marks the parser's window */

json_t *
json_loadb(const char *buffer, size_t buflen, size_t flags,
    json_error_t *error)
{
    json_t         *root;
    static json_t  *(*real)(const char *, size_t, size_t, json_error_t *);

    if (real == NULL) {
        *(void **) &real = dlsym(RTLD_NEXT, "json_loadb");
    }

    chaos_in_parse = 1;
    chaos_lexer_buf = NULL;
    chaos_last_alloc = NULL;

    root = real(buffer, buflen, flags, error);

    chaos_in_parse = 0;

    return root;
}


static void *
chaos_crypto_malloc(size_t size, const char *file, int line)
{
    return chaos_fail() ? NULL : malloc(size);
}


static void *
chaos_crypto_realloc(void *p, size_t size, const char *file, int line)
{
    return chaos_fail() ? NULL : realloc(p, size);
}


static void
chaos_crypto_free(void *p, const char *file, int line)
{
    free(p);
}


static char *
slurp(const char *name, size_t *len)
{
    char   path[512];
    char  *buf;
    long   n;
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", MC_FIXTURES, name);

    f = fopen(path, "rb");
    if (f == NULL) {
        printf("# cannot open %s\n", path);
        exit(1);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);

    buf = malloc(n + 1);
    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        exit(1);
    }

    fclose(f);
    buf[n] = '\0';
    *len = (size_t) n;

    return buf;
}


static void
chaos(const char *name, const char *body, size_t len, mc_body_rc_e want_rc)
{
    int              rc;
    char            *ref;
    char             msg[200];
    unsigned long    i, runs, failures, bad;
    mc_body_rc_e     ref_rc;
    mc_normalized_t  out;

    /*
     * The reference run, nothing failed, after a first one that lets
     * OpenSSL fetch and cache its digest: the runs after it allocate the
     * same sequence until the allocation that fails.
     */

    for (i = 0; i < 2; i++) {
        chaos_fail_at = 0;
        chaos_count = 0;
        chaos_recording = (i == 1);
        memset(chaos_lexer_growth, 0, CHAOS_MAX);

        if (mc_normalize((const unsigned char *) body, len, &out) != 0) {
            printf("# %s: the undisturbed run failed\n", name);
            exit(1);
        }

        if (i == 0) {
            mc_normalized_free(&out);
        }
    }

    chaos_recording = 0;

    ref = strdup(out.events);
    ref_rc = out.rc;
    mc_normalized_free(&out);

    snprintf(msg, sizeof(msg), "%s: outcome %s", name, mc_body_rc_str(ref_rc));
    is_str(mc_body_rc_str(ref_rc), mc_body_rc_str(want_rc), msg);

    runs = 0;
    failures = 0;
    bad = 0;
    chaos_skipped = 0;

    for (i = 1; /* void */ ; i++) {
        chaos_fail_at = i;
        chaos_count = 0;
        chaos_failed = 0;

        rc = mc_normalize((const unsigned char *) body, len, &out);

        if (chaos_failed == 0 && chaos_skipped == 0) {
            /* every allocation of the run came before i: all tried */
            if (rc == 0) {
                mc_normalized_free(&out);
            }

            break;
        }

        if (chaos_failed == 0) {
            /* a lexer growth, not failed: nothing to check */
            chaos_skipped = 0;

            if (rc == 0) {
                mc_normalized_free(&out);
            }

            continue;
        }

        runs++;

        if (rc == -1) {
            failures++;
            continue;
        }

        if (out.rc != ref_rc || strcmp(out.events, ref) != 0) {
            if (bad++ < 3) {
                printf("# %s: allocation %lu failed, result %s (%zu events)"
                       " instead of -1 or %s\n", name, i,
                       mc_body_rc_str(out.rc), out.nevents,
                       mc_body_rc_str(ref_rc));
            }
        }

        mc_normalized_free(&out);
    }

    printf("# %s: %lu allocations failed in turn, %lu runs returned -1\n",
           name, runs, failures);

    snprintf(msg, sizeof(msg), "%s: every run is -1 or the full result",
             name);
    ok(bad == 0 && runs > 10, msg);

    free(ref);
}


static void
chaos_file(const char *file, mc_body_rc_e want_rc)
{
    char    *body;
    size_t   len;

    body = slurp(file, &len);
    chaos(file, body, len, want_rc);
    free(body);
}


#define CHAOS(name, body, rc)  chaos(name, body, sizeof(body) - 1, rc)


int
main(void)
{
    /* before the first allocation of either library */

    if (!CRYPTO_set_mem_functions(chaos_crypto_malloc, chaos_crypto_realloc,
                                  chaos_crypto_free))
    {
        printf("# CRYPTO_set_mem_functions() refused\n");
        return 1;
    }

    json_set_alloc_funcs(chaos_malloc, chaos_free);

    chaos_lexer_growth = calloc(CHAOS_MAX, 1);
    if (chaos_lexer_growth == NULL) {
        return 1;
    }

    chaos_file("meta_text.json", MC_BODY_OK);
    chaos_file("pywa_status_read_group_participant.json", MC_BODY_OK);
    chaos_file("meta_history_threads_phase0.json", MC_BODY_OK);
    chaos_file("meta_history_media_asset_follow_up.json", MC_BODY_OK);
    chaos_file("pywa_contacts_three_cards.json", MC_BODY_OK);
    chaos_file("meta_smb_app_state_sync_contact_add.json", MC_BODY_OK);
    chaos_file("meta_location_named_place.json", MC_BODY_OK);

    /* a batch: a message, three statuses (one failed), an error */

    CHAOS("batch",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"W1\","
        "\"changes\":[{\"field\":\"messages\",\"value\":{"
        "\"messaging_product\":\"whatsapp\",\"metadata\":"
        "{\"display_phone_number\":\"15550001111\",\"phone_number_id\":"
        "\"PN1\"},\"contacts\":[{\"profile\":{\"name\":\"Ana\"},"
        "\"wa_id\":\"5511999990000\"}],\"messages\":[{\"from\":"
        "\"5511999990000\",\"id\":\"wamid.M1\",\"timestamp\":\"1749416383\","
        "\"type\":\"text\",\"text\":{\"body\":\"ol\\u00e1 \\ud83d\\ude00\"}}],"
        "\"statuses\":[{\"id\":\"wamid.S1\",\"status\":\"sent\","
        "\"timestamp\":\"1749416384\",\"recipient_id\":\"5511999990000\","
        "\"pricing\":{\"billable\":true,\"pricing_model\":\"PMP\","
        "\"category\":\"utility\",\"type\":\"regular\"}},"
        "{\"id\":\"wamid.S1\",\"status\":\"delivered\",\"timestamp\":"
        "1749416385,\"recipient_id\":\"5511999990000\"},"
        "{\"id\":\"wamid.S2\",\"status\":\"failed\",\"timestamp\":"
        "\"1749416386\",\"recipient_id\":\"5511999990001\",\"errors\":"
        "[{\"code\":131049,\"title\":\"t\",\"message\":\"m\","
        "\"error_data\":{\"details\":\"d\"}}]}],"
        "\"errors\":[{\"code\":130429,\"title\":\"Rate limit\"}]}},"
        "{\"field\":\"account_update\",\"value\":{\"event\":\"X\","
        "\"lat\":37.422}}]}]}",
        MC_BODY_OK);

    /* the pre-pass and the NUL walk: bad UTF-8, lone surrogate, NUL */

    CHAOS("hostile text",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"W1\","
        "\"changes\":[{\"field\":\"messages\",\"value\":{\"metadata\":"
        "{\"phone_number_id\":\"PN1\"},\"messages\":[{\"from\":\"1\","
        "\"id\":\"wamid.H1\",\"type\":\"text\",\"text\":{\"body\":"
        "\"a\xff\\ud800 b\\u0000c\"}}]}}]}]}",
        MC_BODY_OK);

    /* a number jansson refuses, and an id shortened with its hash */

    {
        char    *b;
        size_t   n;

        b = malloc(4096);
        n = (size_t) sprintf(b,
            "{\"object\":\"whatsapp_business_account\",\"entry\":[{"
            "\"id\":\"W1\",\"changes\":[{\"field\":\"messages\",\"value\":"
            "{\"metadata\":{\"phone_number_id\":\"PN1\"},\"odd\":1e999,"
            "\"messages\":[{\"from\":\"1\",\"id\":\"wamid.%0300d\","
            "\"timestamp\":123456789012345678901234567890,"
            "\"type\":\"text\",\"text\":{\"body\":\"x\"}}]}}]}]}", 7);
        chaos("long id, big numbers", b, n, MC_BODY_OK);
        free(b);
    }

    CHAOS("invalid body", "{\"object\": \"whatsapp_business_account\", "
          "\"entry\": [{\"id\": \"W1\", \"changes\": [", MC_BODY_INVALID_JSON);

    CHAOS("not a webhook", "[1, 2, {\"a\": \"b\"}]", MC_BODY_NOT_WEBHOOK);

    /* OpenSSL still allocates at exit */
    chaos_fail_at = 0;

    return done_testing();
}
