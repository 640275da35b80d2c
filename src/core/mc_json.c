
/*
 * The JSON layer of the normaliser: the field tables, the value converters
 * (every getter tolerates a missing key or a value of another type), the
 * allocator hook that tells "out of memory" from "invalid JSON", the walk
 * after parsing, and hashing.
 */


#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "mc_normalize_int.h"
#include "mc_media.h"


/*
 * jansson 2.14 does not report its own allocation failures reliably: the
 * parser returns "invalid token" when a string cannot be allocated, and a
 * failed growth of its token buffer silently drops a byte of the token.
 * So the core wraps whatever allocator jansson uses and counts, per
 * thread, the allocations that failed: mc_normalize() trusts a result only
 * when none did.  The wrapper chains to the allocator installed before it
 * (libc's, or a test's), and is installed again if someone replaces it.
 */

static json_malloc_t       mc_base_malloc = malloc;
static json_free_t         mc_base_free = free;
static __thread unsigned   mc_alloc_failures;


static void *
mc_hook_malloc(size_t size)
{
    void  *p;

    p = mc_base_malloc(size);

    if (p == NULL) {
        mc_alloc_failures++;
    }

    return p;
}


static void
mc_hook_free(void *p)
{
    mc_base_free(p);
}


void
mc_alloc_begin(void)
{
    json_free_t    f;
    json_malloc_t  m;

    json_get_alloc_funcs(&m, &f);

    if (m != mc_hook_malloc) {
        mc_base_malloc = m;
        mc_base_free = f;
        json_set_alloc_funcs(mc_hook_malloc, mc_hook_free);
    }

    mc_alloc_failures = 0;
}


void
mc_core_init(void)
{
    mc_alloc_begin();
}


int
mc_alloc_failed(void)
{
    return mc_alloc_failures != 0;
}


void *
mc_malloc(size_t size)
{
    return mc_hook_malloc(size);
}


void
mc_free(void *p)
{
    mc_hook_free(p);
}


/* sets obj[key] = v, stealing v; a NULL v means "absent" */

void
mc_put(mc_ctx_t *ctx, json_t *obj, const char *key, json_t *v)
{
    if (v == NULL) {
        return;
    }

    if (obj == NULL) {
        json_decref(v);
        ctx->oom = 1;
        return;
    }

    if (json_object_set_new(obj, key, v) != 0) {
        ctx->oom = 1;
    }
}


void
mc_put_fields(mc_ctx_t *ctx, json_t *obj, json_t *src,
    const mc_field_t *f)
{
    size_t   i;
    json_t  *v;

    for ( /* void */ ; f->column != NULL; f++) {
        v = src;

        for (i = 0; i < 3 && f->path[i] != NULL; i++) {
            v = json_object_get(v, f->path[i]);
        }

        mc_put(ctx, obj, f->column, f->conv(ctx, v));
    }
}


json_t *
mc_object(mc_ctx_t *ctx)
{
    json_t  *obj;

    obj = json_object();
    if (obj == NULL) {
        ctx->oom = 1;
    }

    return obj;
}


json_t *
mc_cstring(mc_ctx_t *ctx, const char *s)
{
    json_t  *v;

    v = json_string(s);
    if (v == NULL) {
        ctx->oom = 1;
    }

    return v;
}


json_t *
mc_integer(mc_ctx_t *ctx, json_int_t n)
{
    json_t  *v;

    v = json_integer(n);
    if (v == NULL) {
        ctx->oom = 1;
    }

    return v;
}


/*
 * A string column: strings as they are, numbers as their decimal form
 * (IDs sometimes arrive as numbers); anything else is absent.
 */

json_t *
mc_string(mc_ctx_t *ctx, json_t *v)
{
    char  buf[64];

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

    return mc_cstring(ctx, buf);
}


/*
 * Unix seconds: a string of digits (as Meta sends them) or a number;
 * anything else is null.
 */

json_t *
mc_time(mc_ctx_t *ctx, json_t *v)
{
    char        *end;
    double       d;
    long long    n;
    const char  *s;

    if (v == NULL) {
        return NULL;
    }

    if (json_is_integer(v)) {
        return json_incref(v);
    }

    if (json_is_real(v)) {
        d = json_real_value(v);

        if (!isfinite(d) || d < -9.2e18 || d > 9.2e18) {
            return json_null();
        }

        return mc_integer(ctx, (json_int_t) d);
    }

    if (json_is_string(v)) {
        s = json_string_value(v);

        if (!isdigit((unsigned char) s[0])) {
            return json_null();
        }

        errno = 0;
        n = strtoll(s, &end, 10);

        if (*end != '\0' || errno != 0) {
            return json_null();
        }

        return mc_integer(ctx, (json_int_t) n);
    }

    return json_null();
}


/* an integer column (error codes): integer, integral real or digits */

json_t *
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

        return mc_integer(ctx, (json_int_t) d);
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

        return mc_integer(ctx, (json_int_t) n);
    }

    return NULL;
}


/* a number column (coordinates): numbers, or a string holding one */

json_t *
mc_number(mc_ctx_t *ctx, json_t *v)
{
    char        *end;
    double       d;
    json_t      *r;
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

    r = json_real(d);
    if (r == NULL) {
        ctx->oom = 1;
    }

    return r;
}


json_t *
mc_bool(mc_ctx_t *ctx, json_t *v)
{
    return json_is_boolean(v) ? json_incref(v) : NULL;
}


/* a boolean column that defaults to false */

json_t *
mc_flag(mc_ctx_t *ctx, json_t *v)
{
    return json_boolean(json_is_true(v));
}


/* a jsonb column: objects as they are, anything else absent */

json_t *
mc_sub_object(mc_ctx_t *ctx, json_t *v)
{
    return json_is_object(v) ? json_incref(v) : NULL;
}


json_t *
mc_ref_or_null(json_t *v)
{
    return v ? json_incref(v) : json_null();
}


/* two strings (as returned by mc_string()) are equal */

int
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

json_t *
mc_get(json_t *obj, const char *k1, const char *k2)
{
    obj = json_object_get(obj, k1);

    return (k2 != NULL) ? json_object_get(obj, k2) : obj;
}


const char *
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


/*
 * NUL, allowed by JSON_ALLOW_NUL so that the document parses, becomes
 * U+FFFD in every string: PostgreSQL refuses it in text and in jsonb.
 * (Keys cannot hold NUL: jansson refuses them, and the pre-pass already
 * replaced them.)  The same walk notes whether a real needs 17 digits.
 * The depth is bounded by jansson's parser.
 */

int
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

        p = mc_malloc(n);
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
            mc_free(p);
            return -1;
        }

        mc_free(p);

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

int
mc_real_needs_17(double d)
{
    char  buf[32];

    snprintf(buf, sizeof(buf), "%.15g", d);

    return strtod(buf, NULL) != d;
}


int
mc_sha256_hex(const void *data, size_t len, char *hex)
{
    size_t         n;
    unsigned char  md[EVP_MAX_MD_SIZE];

    /*
     * The only way this fails is an allocation inside OpenSSL; its error
     * queue is cleared so that nginx's next TLS call does not see it.
     */

    if (EVP_Q_digest(NULL, "SHA256", NULL, data, len, md, &n) != 1
        || n != 32)
    {
        ERR_clear_error();
        return -1;
    }

    mc_sha256_digest_hex(md, hex);

    return 0;
}
