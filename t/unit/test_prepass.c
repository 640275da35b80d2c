
/*
 * mc_prepass(): what jansson would refuse inside strings is rewritten, and
 * numbers it cannot hold become strings; everything else is left byte for
 * byte.
 */


#include <jansson.h>

#include "mc_tap.h"
#include "mc_core.h"


#define FFFD  "\xef\xbf\xbd"


static int
pp(const char *in, size_t len, const char *want, size_t want_len,
    const char *name)
{
    int             cond;
    size_t          n;
    unsigned char  *out;

    out = mc_prepass((const unsigned char *) in, len, &n);

    cond = (out != NULL && n == want_len && memcmp(out, want, n) == 0);

    if (!ok(cond, name) && out != NULL) {
        printf("#   got (%zu): %.*s\n#   expected (%zu): %.*s\n",
               n, (int) n, out, want_len, (int) want_len, want);
    }

    free(out);

    return cond;
}


#define PP(in, want, name)  pp(in, sizeof(in) - 1, want, sizeof(want) - 1, name)
#define SAME(in, name)      PP(in, in, name)


static int
parses(const char *in, size_t len)
{
    size_t          n;
    json_t         *j;
    unsigned char  *out;
    json_error_t    err;

    out = mc_prepass((const unsigned char *) in, len, &n);
    if (out == NULL) {
        return 0;
    }

    j = json_loadb((const char *) out, n, JSON_ALLOW_NUL, &err);
    free(out);

    if (j == NULL) {
        printf("#   %s\n", err.text);
        return 0;
    }

    json_decref(j);

    return 1;
}


int
main(void)
{
    size_t          n;
    unsigned char  *out;

    static const char  batch[] =
        "[\"ok\",\"bad \xff byte\",\"lone \\ud83d\",\"raw \x01\",\"\\ude00\","
        "{\"k\\u0000ey\":\"v\\u0000\"},\"\xc0\xaf\",\"\xed\xa0\x80\"]";

    static const char  big[] =
        "{\"a\":[1e999,-1e999,123456789012345678901234567890]}";

    SAME("{\"a\":\"plain ASCII\",\"b\":[1,2.5,true,null]}",
         "plain ASCII untouched");
    SAME("{\"t\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}",
         "valid 2, 3 and 4 byte UTF-8 untouched");
    SAME("{\"t\":\"caf\\u00e9 \\/ \\\" \\\\ \\n\"}", "escapes untouched");

    PP("[\"a\xff" "b\"]", "[\"a" FFFD "b\"]", "invalid byte 0xff");
    PP("[\"a\x80" "b\"]", "[\"a" FFFD "b\"]", "lone continuation byte");
    PP("[\"\xc0\xaf\"]", "[\"" FFFD FFFD "\"]",
       "overlong C0 AF: one U+FFFD per byte");
    PP("[\"\xe0\x80\xaf\"]", "[\"" FFFD FFFD FFFD "\"]",
       "overlong E0 80 AF");
    PP("[\"\xf0\x80\x80\xaf\"]", "[\"" FFFD FFFD FFFD FFFD "\"]",
       "overlong F0 80 80 AF");
    PP("[\"\xed\xa0\x80\"]", "[\"" FFFD FFFD FFFD "\"]",
       "UTF-8 encoded surrogate");
    PP("[\"\xf4\x90\x80\x80\"]", "[\"" FFFD FFFD FFFD FFFD "\"]",
       "above U+10FFFF");
    PP("[\"x\xe2\x82\"]", "[\"x" FFFD "\"]",
       "truncated 3 byte sequence: one U+FFFD");
    PP("[\"\xe2\x82" "A\"]", "[\"" FFFD "A\"]",
       "truncated sequence followed by ASCII");

    PP("[\"\\ud83d\"]", "[\"\\ufffd\"]", "lone high surrogate at the end");
    PP("[\"\\ud83dx\"]", "[\"\\ufffdx\"]", "lone high surrogate, then text");
    PP("[\"\\ud83d\\u0041\"]", "[\"\\ufffd\\u0041\"]",
       "high surrogate, then a non-surrogate escape");
    PP("[\"\\ud83d\\ud83d\\ude00\"]", "[\"\\ufffd\\ud83d\\ude00\"]",
       "two highs then a low: the first is lone");
    PP("[\"\\ude00\"]", "[\"\\ufffd\"]", "lone low surrogate");
    PP("[\"\\uDE00x\"]", "[\"\\ufffdx\"]", "lone low surrogate, upper case");
    SAME("[\"\\ud83d\\ude00\"]", "valid surrogate pair untouched");
    SAME("[\"\\uD83D\\uDE00\"]", "valid pair in upper case untouched");

    PP("[\"a\nb\"]", "[\"a\\u000ab\"]", "raw newline in a string");
    PP("[\"\t\x1f\"]", "[\"\\u0009\\u001f\"]", "raw tab and 0x1f");
    PP("[\"a\0b\"]", "[\"a\\u0000b\"]", "raw NUL in a value: \\u0000");
    SAME("[\"a\\u0000b\"]", "\\u0000 in a value is left to jansson");

    PP("{\"a\\u0000b\":1}", "{\"a\\ufffdb\":1}", "\\u0000 in a key");
    PP("{\"a\0b\" : 1}", "{\"a\\ufffdb\" : 1}", "raw NUL in a key");

    SAME("{\"a\":1}\xff", "invalid byte outside strings untouched");
    SAME("[\x01]", "control byte outside strings untouched");
    SAME("{\"a\" :\n [1,\t2]}\n", "whitespace outside strings untouched");
    SAME("{\"a\":\"unterminated", "unterminated string stays broken");
    SAME("[\"bad escape \\x\"]", "unknown escape stays broken");
    SAME("[\"short \\u12\"]", "short \\u escape stays broken");
    PP("[\"q\\\"\xff\"]", "[\"q\\\"" FFFD "\"]",
       "an escaped quote does not end the string");

    /* numbers jansson refuses: their text, quoted */

    PP("[1e999]", "[\"1e999\"]", "1e999 quoted");
    PP("[-1E+999]", "[\"-1E+999\"]", "-1E+999 quoted");
    PP("{\"a\":123456789012345678901234567890}",
       "{\"a\":\"123456789012345678901234567890\"}",
       "30-digit integer quoted");
    SAME("[9223372036854775807,-9223372036854775808]",
         "the 64-bit limits untouched");
    PP("[9223372036854775808]", "[\"9223372036854775808\"]",
       "2^63 quoted");
    PP("[-9223372036854775809]", "[\"-9223372036854775809\"]",
       "-2^63 - 1 quoted");
    SAME("[1.7976931348623157e308,179769313486231570000e288]",
         "the largest double untouched");
    PP("[1.7976931348623159e308]", "[\"1.7976931348623159e308\"]",
       "just above the largest double quoted");
    PP("[0.000001e315]", "[\"0.000001e315\"]",
       "leading zeros of the fraction count");
    SAME("[0.0001e311,1e-999,0e99999,0.0e400,-0]",
         "finite, underflowing and zero reals untouched");
    SAME("[1.5,-2,0,37.422,1e10,2E-3]", "ordinary numbers untouched");
    PP("[1e99999999999999999999999]", "[\"1e99999999999999999999999\"]",
       "a huge exponent quoted");
    SAME("[\"1e999\"]", "inside a string: untouched");
    SAME("{1e999:1}", "a number as a key stays broken");
    SAME("[01e999]", "a leading zero stays broken");
    SAME("[1.e999]", "a dot without digits stays broken");
    SAME("[-]", "a minus alone stays broken");

    ok(parses(big, sizeof(big) - 1),
       "a body with refused numbers parses after the pre-pass");
    ok(!parses("{1e999:1}", 9), "a number as a key: still not JSON");

    out = mc_prepass((const unsigned char *) "", 0, &n);
    ok(out != NULL && n == 0, "empty input");
    free(out);

    ok(parses(batch, sizeof(batch) - 1),
       "a batch with every kind of bad string parses after the pre-pass");
    ok(parses("[\"\xff\"]", 5), "invalid UTF-8 parses after the pre-pass");
    ok(!parses("[1,]", 4), "broken JSON stays broken");

    return done_testing();
}
