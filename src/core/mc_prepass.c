
/*
 * The pre-pass: jansson refuses a whole document for one bad string (a lone
 * surrogate escape, a byte that is not UTF-8, a raw control byte).  Meta
 * batches up to 1,000 updates in one body, and user text is arbitrary, so
 * one bad string must not make the others "invalid JSON".  The pre-pass
 * rewrites such sequences, inside strings only, into something jansson
 * accepts; bytes outside strings are copied as they are, so a document that
 * is not JSON stays not JSON.
 *
 * Object keys get one more rewrite: jansson refuses a NUL in a key even with
 * JSON_ALLOW_NUL, so inside a key "\u0000" and a raw NUL byte become U+FFFD
 * here (in values the NUL survives parsing and mc_normalize() replaces it).
 *
 * Outside strings, one thing is rewritten: a number jansson cannot hold (an
 * integer beyond 64 bits, a real beyond the range of a double) fails the
 * whole document, so it becomes a string holding its exact text
 * (docs/EVENTS.md).  Only a well-formed number in a value position is
 * quoted: a document that is not JSON stays not JSON.
 */


#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mc_normalize_int.h"


#define MC_FFFD_ESC      "\\ufffd"
#define MC_FFFD_ESC_LEN  6
#define MC_FFFD_UTF8     "\xef\xbf\xbd"


static int mc_prepass_is_key(const unsigned char *p, size_t len, size_t i);
static size_t mc_prepass_number(const unsigned char *p, size_t len,
    size_t i, int *refused);
static int mc_prepass_int_overflows(const unsigned char *p, size_t n,
    int negative);
static int mc_prepass_real_overflows(const unsigned char *p, size_t len,
    size_t i, size_t frac, size_t exp, size_t end);
static long mc_prepass_hex4(const unsigned char *p, size_t len, size_t i);
static size_t mc_prepass_utf8(const unsigned char *p, size_t len, size_t i,
    int *valid);


unsigned char *
mc_prepass(const unsigned char *body, size_t len, size_t *out_len)
{
    size_t          n;
    unsigned char  *out;

    /*
     * Two runs of the same code: the first one measures, the second one
     * writes.  The output can be up to six times the input (a raw control
     * byte becomes "\u00XX"), and a 3 MB body should not cost 18 MB.
     */

    n = mc_prepass_run(body, len, NULL);

    out = malloc(n + 1);
    if (out == NULL) {
        return NULL;
    }

    (void) mc_prepass_run(body, len, out);

    /* not counted in the length: a convenience for string functions */
    out[n] = '\0';

    *out_len = n;

    return out;
}


#define mc_emit(s, l)                                                        \
    do {                                                                     \
        if (out != NULL) {                                                   \
            memcpy(out + n, s, l);                                           \
        }                                                                    \
        n += l;                                                              \
    } while (0)


/*
 * One run over the body: writes into out unless it is NULL, and returns the
 * length of the output either way.
 */

size_t
mc_prepass_run(const unsigned char *p, size_t len, unsigned char *out)
{
    int             in_string, is_key, valid;
    long            cp, lo;
    size_t          i, n, k;
    unsigned char   c, esc[6];

    static const char  hex[] = "0123456789abcdef";

    n = 0;
    i = 0;
    in_string = 0;
    is_key = 0;

    while (i < len) {
        c = p[i];

        if (!in_string) {
            if (c == '-' || (c >= '0' && c <= '9')) {
                k = mc_prepass_number(p, len, i, &valid);

                if (valid) {
                    mc_emit("\"", 1);
                    mc_emit(&p[i], k);
                    mc_emit("\"", 1);

                } else {
                    mc_emit(&p[i], k);
                }

                i += k;
                continue;
            }

            if (c == '"') {
                in_string = 1;
                is_key = mc_prepass_is_key(p, len, i + 1);
            }

            mc_emit(&p[i], 1);
            i++;
            continue;
        }

        if (c == '"') {
            in_string = 0;
            mc_emit(&p[i], 1);
            i++;
            continue;
        }

        if (c == '\\') {
            if (i + 1 >= len || p[i + 1] != 'u') {
                /* a short escape, or a broken one that stays broken */
                k = (i + 1 < len) ? 2 : 1;
                mc_emit(&p[i], k);
                i += k;
                continue;
            }

            cp = mc_prepass_hex4(p, len, i + 2);
            if (cp < 0) {
                mc_emit(&p[i], 2);
                i += 2;
                continue;
            }

            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (i + 11 < len && p[i + 6] == '\\' && p[i + 7] == 'u') {
                    lo = mc_prepass_hex4(p, len, i + 8);

                    if (lo >= 0xdc00 && lo <= 0xdfff) {
                        /* a valid pair is left exactly as it was */
                        mc_emit(&p[i], 12);
                        i += 12;
                        continue;
                    }
                }

                /* a high surrogate without its low half */
                mc_emit(MC_FFFD_ESC, MC_FFFD_ESC_LEN);
                i += 6;
                continue;
            }

            if ((cp >= 0xdc00 && cp <= 0xdfff) || (cp == 0 && is_key)) {
                mc_emit(MC_FFFD_ESC, MC_FFFD_ESC_LEN);
                i += 6;
                continue;
            }

            mc_emit(&p[i], 6);
            i += 6;
            continue;
        }

        if (c < 0x20) {
            if (c == 0 && is_key) {
                mc_emit(MC_FFFD_ESC, MC_FFFD_ESC_LEN);

            } else {
                esc[0] = '\\';
                esc[1] = 'u';
                esc[2] = '0';
                esc[3] = '0';
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 0x0f];
                mc_emit(esc, 6);
            }

            i++;
            continue;
        }

        if (c < 0x80) {
            mc_emit(&p[i], 1);
            i++;
            continue;
        }

        k = mc_prepass_utf8(p, len, i, &valid);

        if (valid) {
            mc_emit(&p[i], k);

        } else {
            /* one U+FFFD for each maximal ill-formed subpart (Unicode 3.9) */
            mc_emit(MC_FFFD_UTF8, 3);
        }

        i += k;
    }

    return n;
}


/*
 * Whether the string whose contents start at p[i] is an object key: its
 * closing quote is followed, after blanks, by a colon.
 */

static int
mc_prepass_is_key(const unsigned char *p, size_t len, size_t i)
{
    while (i < len && p[i] != '"') {
        i += (p[i] == '\\') ? 2 : 1;
    }

    if (i >= len) {
        return 0;
    }

    for (i++; i < len; i++) {
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\n' && p[i] != '\r') {
            return p[i] == ':';
        }
    }

    return 0;
}


/*
 * The length of the number token at p[i] (JSON's grammar, at least 1);
 * *refused: it is a well-formed number in a value position that jansson
 * would refuse for its size.
 */

static size_t
mc_prepass_number(const unsigned char *p, size_t len, size_t i,
    int *refused)
{
    size_t  j, digits, frac, exp;

    *refused = 0;
    j = i;

    if (p[j] == '-') {
        j++;
    }

    digits = j;

    if (j < len && p[j] == '0') {
        j++;

    } else {
        while (j < len && p[j] >= '0' && p[j] <= '9') {
            j++;
        }
    }

    if (j == digits || (j < len && p[j] >= '0' && p[j] <= '9')) {
        /* "-" alone, or a leading zero: jansson refuses it */
        goto broken;
    }

    frac = 0;
    exp = 0;

    if (j < len && p[j] == '.') {
        frac = ++j;

        while (j < len && p[j] >= '0' && p[j] <= '9') {
            j++;
        }

        if (j == frac) {
            goto broken;
        }
    }

    if (j < len && (p[j] == 'e' || p[j] == 'E')) {
        j++;

        if (j < len && (p[j] == '+' || p[j] == '-')) {
            j++;
        }

        exp = j;

        while (j < len && p[j] >= '0' && p[j] <= '9') {
            j++;
        }

        if (j == exp) {
            goto broken;
        }
    }

    if (frac == 0 && exp == 0) {
        *refused = mc_prepass_int_overflows(&p[digits], j - digits,
                                            p[i] == '-');

    } else {
        *refused = mc_prepass_real_overflows(p, len, digits, frac, exp, j);
    }

    /* a number before a colon is a key: broken JSON, left broken */

    if (*refused) {
        for (digits = j; digits < len; digits++) {
            if (p[digits] != ' ' && p[digits] != '\t' && p[digits] != '\n'
                && p[digits] != '\r')
            {
                *refused = (p[digits] != ':');
                break;
            }
        }
    }

    return j - i;

broken:

    /* the whole run of number characters stays as it is, broken */

    while (j < len && p[j] != '\0' && strchr("0123456789.eE+-", p[j])) {
        j++;
    }

    return j - i;
}


/* whether n digits (no leading zero) overflow a 64-bit integer */

static int
mc_prepass_int_overflows(const unsigned char *p, size_t n, int negative)
{
    const char  *max;

    max = negative ? "9223372036854775808" : "9223372036854775807";

    if (n != 19) {
        return n > 19;
    }

    return memcmp(p, max, 19) > 0;
}


/*
 * Whether the real at p[i..end) overflows a double, as strtod() sees it
 * (jansson refuses HUGE_VAL; an underflow becomes 0 and is accepted).  The
 * decimal exponent of the first significant digit decides, and only the
 * 308 boundary needs strtod(), on the first 40 significant digits written
 * without a decimal point (no locale can misread it).
 */

static int
mc_prepass_real_overflows(const unsigned char *p, size_t len, size_t i,
    size_t frac, size_t exp, size_t end)
{
    int         neg_exp;
    char        buf[64];
    size_t      j, n, int_end;
    long long   e, lead;

    int_end = frac ? frac - 1 : (exp ? exp - 1 : end);

    while (int_end > i && (p[int_end - 1] < '0' || p[int_end - 1] > '9')) {
        int_end--;
    }

    /* the exponent, saturated: beyond a million it no longer matters */

    e = 0;
    neg_exp = 0;

    if (exp) {
        neg_exp = (p[exp - 1] == '-');

        for (j = exp; j < end && e < 1000000; j++) {
            e = e * 10 + (p[j] - '0');
        }

        if (neg_exp) {
            e = -e;
        }
    }

    /* the decimal exponent of the first significant digit, and 40 digits */

    n = 0;
    lead = 0;

    for (j = i; j < end && n < 40; j++) {
        if (p[j] < '0' || p[j] > '9') {
            if (exp && j >= exp - 1) {
                break;
            }

            continue;
        }

        if (n == 0 && p[j] == '0') {
            continue;
        }

        if (n == 0) {
            lead = (j < int_end) ? (long long) (int_end - j) - 1
                                 : -(long long) (j - frac + 1);
        }

        buf[n++] = (char) p[j];
    }

    if (n == 0) {
        /* zero */
        return 0;
    }

    if (lead + e != 308) {
        return lead + e > 308;
    }

    snprintf(buf + n, sizeof(buf) - n, "e%lld", 308 - (long long) (n - 1));

    return isinf(strtod(buf, NULL));
}


/* the value of 4 hex digits at p[i], or -1 */

static long
mc_prepass_hex4(const unsigned char *p, size_t len, size_t i)
{
    long           v;
    size_t         k;
    unsigned char  c;

    if (i + 4 > len) {
        return -1;
    }

    v = 0;

    for (k = i; k < i + 4; k++) {
        c = p[k];

        if (c >= '0' && c <= '9') {
            v = v * 16 + (c - '0');

        } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
            v = v * 16 + ((c | 0x20) - 'a' + 10);

        } else {
            return -1;
        }
    }

    return v;
}


/*
 * The length of the UTF-8 sequence starting at p[i] (a byte >= 0x80) if it
 * is well formed (Unicode Table 3-7: no overlong forms, no surrogates,
 * nothing above U+10FFFF), else the length of its maximal ill-formed
 * subpart, at least 1.
 */

static size_t
mc_prepass_utf8(const unsigned char *p, size_t len, size_t i, int *valid)
{
    size_t         need, k;
    unsigned char  c, lo, hi;

    c = p[i];
    lo = 0x80;
    hi = 0xbf;

    if (c >= 0xc2 && c <= 0xdf) {
        need = 1;

    } else if (c >= 0xe0 && c <= 0xef) {
        need = 2;

        if (c == 0xe0) {
            lo = 0xa0;

        } else if (c == 0xed) {
            hi = 0x9f;
        }

    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 3;

        if (c == 0xf0) {
            lo = 0x90;

        } else if (c == 0xf4) {
            hi = 0x8f;
        }

    } else {
        *valid = 0;
        return 1;
    }

    for (k = 1; k <= need; k++) {
        if (i + k >= len || p[i + k] < lo || p[i + k] > hi) {
            *valid = 0;
            return k;
        }

        /* only the second byte has a narrower range */
        lo = 0x80;
        hi = 0xbf;
    }

    *valid = 1;
    return need + 1;
}
