
/*
 * mc_media.c: the Graph API lookup answer (Meta's documented and observed
 * forms, its error objects), extensions, SHA-256 in hex and base64 (the
 * vector is SHA-256("abc"), FIPS 180-2), storage keys, scrubbing.
 */


#include "mc_tap.h"
#include "mc_media.h"


#define ABC_HEX  "ba7816bf8f01cfea414140de5dae2223" \
                 "b00361a396177a9cb410ff61f20015ad"
#define ABC_B64  "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
#define ABC_B64URL  "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"


static mc_graph_rc_e
parse(long status, const char *body, mc_graph_media_t *m, char *err)
{
    return mc_graph_parse(status, body, strlen(body), m, err, 128);
}


int
main(void)
{
    char              *key, err[128], hex[65], b64[45], buf[256];
    unsigned char      abc[MC_SHA256_LEN], d[MC_SHA256_LEN];
    mc_graph_media_t   m;

    /* lookups */

    is_int(parse(200, "{\"messaging_product\":\"whatsapp\","
                 "\"url\":\"https://lookaside.fbsbx.com/whatsapp_business/"
                 "attachments/?mid=1\",\"mime_type\":\"image/jpeg\","
                 "\"sha256\":\"" ABC_HEX "\",\"file_size\":\"303833\","
                 "\"id\":\"1037543291543636\"}", &m, err),
           MC_GRAPH_OK, "documented lookup answer");
    is_str(m.url, "https://lookaside.fbsbx.com/whatsapp_business/attachments/"
           "?mid=1", "url");
    is_str(m.mime_type, "image/jpeg", "mime_type");
    is_str(m.sha256, ABC_HEX, "sha256 as given");
    is_str(m.id, "1037543291543636", "id");
    is_int(m.file_size, 303833, "file_size as a string");
    mc_graph_media_free(&m);

    is_int(parse(200, "{\"url\":\"http://127.0.0.1:9/f\",\"file_size\":93895,"
                 "\"id\":\"2\"}", &m, err), MC_GRAPH_OK,
           "observed answer: integer size, no mime");
    is_int(m.file_size, 93895, "file_size as a number");
    ok(m.mime_type == NULL, "no mime_type: NULL");
    mc_graph_media_free(&m);

    is_int(parse(200, "{\"file_size\":\"12x\",\"url\":\"https://a/b\"}", &m,
                 err), MC_GRAPH_OK, "bad file_size");
    is_int(m.file_size, -1, "bad file_size: unknown");
    mc_graph_media_free(&m);

    is_int(parse(200, "{\"id\":\"3\"}", &m, err), MC_GRAPH_ERROR,
           "200 without url");
    is_str(err, "lookup: HTTP 200 without a download url", "its error");
    mc_graph_media_free(&m);

    is_int(parse(200, "{\"url\":\"file:///etc/passwd\"}", &m, err),
           MC_GRAPH_ERROR, "a url that is not http(s) is refused");
    mc_graph_media_free(&m);

    is_int(parse(200, "<html>", &m, err), MC_GRAPH_ERROR, "200, not JSON");
    mc_graph_media_free(&m);

    is_int(parse(400, "{\"error\":{\"message\":\"Unsupported get request. "
                 "Object with ID '9' does not exist\",\"type\":"
                 "\"GraphMethodException\",\"code\":100,\"error_subcode\":33,"
                 "\"fbtrace_id\":\"A\"}}", &m, err), MC_GRAPH_GONE,
           "unknown media id: gone");
    is_str(err, "lookup: HTTP 400 (GraphMethodException code 100 subcode 33)",
           "code and subcode, not the message");
    mc_graph_media_free(&m);

    is_int(parse(404, "", &m, err), MC_GRAPH_GONE, "404: gone");
    is_str(err, "lookup: HTTP 404", "404 without a body");
    mc_graph_media_free(&m);

    is_int(parse(401, "{\"error\":{\"message\":\"Invalid OAuth access token\","
                 "\"type\":\"OAuthException\",\"code\":190}}", &m, err),
           MC_GRAPH_AUTH, "401: auth");
    is_str(err, "lookup: HTTP 401 (OAuthException code 190)", "auth error");
    mc_graph_media_free(&m);

    is_int(parse(400, "{\"error\":{\"type\":\"OAuthException\",\"code\":190}}",
                 &m, err), MC_GRAPH_AUTH, "code 190 with 400: auth");
    mc_graph_media_free(&m);

    is_int(parse(500, "{\"error\":{\"message\":\"x\",\"type\":"
                 "\"OAuthException\",\"code\":2,\"is_transient\":true}}", &m,
                 err), MC_GRAPH_ERROR, "500: try again");
    is_int(parse(503, "Service Unavailable", &m, err), MC_GRAPH_ERROR,
           "503 text: try again");
    is_str(err, "lookup: HTTP 503", "503 error");
    mc_graph_media_free(&m);

    /* extensions */

    is_str(mc_media_ext("image/jpeg"), "jpg", "jpeg");
    is_str(mc_media_ext("IMAGE/PNG"), "png", "case ignored");
    is_str(mc_media_ext("audio/ogg; codecs=opus"), "ogg", "parameters ignored");
    is_str(mc_media_ext("application/vnd.openxmlformats-officedocument."
                        "wordprocessingml.document"), "docx", "docx");
    is_str(mc_media_ext("image/jpegx"), "bin", "no prefix match");
    is_str(mc_media_ext("../../etc/passwd"), "bin", "garbage");
    is_str(mc_media_ext(NULL), "bin", "NULL");

    /* SHA-256 */

    ok(mc_sha256_decode(ABC_HEX, abc) == 0, "hex decodes");
    ok(mc_sha256_decode(ABC_B64, d) == 0 && memcmp(abc, d, 32) == 0,
       "base64 decodes to the same bytes");
    ok(mc_sha256_decode(ABC_B64URL, d) == 0 && memcmp(abc, d, 32) == 0,
       "url-safe base64 without padding too");
    ok(mc_sha256_match(ABC_HEX, abc), "hex matches");
    ok(mc_sha256_match(ABC_B64, abc), "base64 matches");
    ok(mc_sha256_match("BA7816BF8F01CFEA414140DE5DAE2223"
                       "B00361A396177A9CB410FF61F20015AD", abc),
       "upper-case hex matches");
    d[0] ^= 1;
    ok(!mc_sha256_match(ABC_HEX, d), "another digest does not match");
    ok(!mc_sha256_match(ABC_B64, d), "nor in base64");
    ok(!mc_sha256_match("b64==", abc), "a short value never matches");
    ok(!mc_sha256_match(NULL, abc), "NULL never matches");
    ok(mc_sha256_decode("zz7816bf8f01cfea414140de5dae2223"
                        "b00361a396177a9cb410ff61f20015ad", d) == -1,
       "bad hex");
    ok(mc_sha256_decode("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa==", d)
       == -1, "two padding characters: not 32 bytes");
    ok(mc_sha256_decode("ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAF!0=", d)
       == -1, "bad base64 character");
    mc_sha256_digest_hex(abc, hex);
    is_str(hex, ABC_HEX, "hex of a digest");
    mc_sha256_base64(abc, b64);
    is_str(b64, ABC_B64, "base64 of a digest");

    /* keys */

    key = mc_media_key("org-1", "2026/01/31", "1037543291543636", "jpg");
    is_str(key, "org-1/2026/01/31/1037543291543636.jpg", "key");
    free(key);
    ok(mc_media_key("../x", "2026/01/31", "1", "jpg") == NULL,
       "org with a slash refused");
    ok(mc_media_key(".hidden", "2026/01/31", "1", "jpg") == NULL,
       "leading dot refused");
    ok(mc_media_key("o", "2026/01/31", "a/../../b", "jpg") == NULL,
       "media id with slashes refused");
    ok(mc_media_key("o", "2026/01/31", "", "jpg") == NULL, "empty id refused");
    ok(mc_media_key("o", "2026-01-31", "1", "jpg") == NULL, "bad day refused");
    ok(mc_media_key("o", "2026/01/3/", "1", "jpg") == NULL, "bad day refused 2");
    ok(mc_media_key(NULL, "2026/01/31", "1", "jpg") == NULL, "NULL org");
    memset(buf, 'a', 129);
    buf[129] = '\0';
    ok(mc_media_key("o", "2026/01/31", buf, "jpg") == NULL,
       "an id over 128 bytes refused");
    buf[128] = '\0';
    key = mc_media_key("o", "2026/01/31", buf, "jpg");
    ok(key != NULL, "128 bytes accepted");
    free(key);

    /* scrub */

    strcpy(buf, "Bearer sekrit-token and sekrit-token!");
    mc_scrub(buf, "sekrit-token");
    is_str(buf, "Bearer *** and ***!", "every occurrence");
    strcpy(buf, "a b c");
    mc_scrub(buf, "b");
    is_str(buf, "a b c", "short secrets left alone");
    mc_scrub(buf, NULL);
    is_str(buf, "a b c", "NULL secret");

    return done_testing();
}
