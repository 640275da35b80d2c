
/*
 * The pure part of the media downloads (mc_media.h): the Graph API lookup
 * answer, extensions, SHA-256 in either of Meta's encodings, storage keys.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ctype.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "mc_media.h"


#define MC_MEDIA_ID_MAX  128


static char *
mc_media_strdup(json_t *obj, const char *key)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v) || json_string_length(v) == 0) {
        return NULL;
    }

    return strdup(json_string_value(v));
}


static mc_graph_rc_e
mc_graph_error(long status, json_t *doc, char *err, size_t err_size)
{
    json_t      *e;
    const char  *type;
    long long    code, subcode;

    e = json_object_get(doc, "error");
    code = json_integer_value(json_object_get(e, "code"));
    subcode = json_integer_value(json_object_get(e, "error_subcode"));
    type = json_string_value(json_object_get(e, "type"));

    if (!json_is_object(e)) {
        snprintf(err, err_size, "lookup: HTTP %ld", status);

    } else if (subcode) {
        snprintf(err, err_size, "lookup: HTTP %ld (%s code %lld subcode %lld)",
                 status, type ? type : "error", code, subcode);

    } else {
        snprintf(err, err_size, "lookup: HTTP %ld (%s code %lld)",
                 status, type ? type : "error", code);
    }

    /* 404: the media was deleted; code 100 (subcode 33): no such object */
    if (status == 404 || (status == 400 && code == 100)) {
        return MC_GRAPH_GONE;
    }

    if (status == 401 || code == 190) {
        return MC_GRAPH_AUTH;
    }

    return MC_GRAPH_ERROR;
}


mc_graph_rc_e
mc_graph_parse(long status, const char *body, size_t len,
    mc_graph_media_t *m, char *err, size_t err_size)
{
    json_t         *doc, *size;
    const char     *s;
    char           *end;
    mc_graph_rc_e   rc;
    json_error_t    jerr;

    memset(m, 0, sizeof(mc_graph_media_t));
    m->file_size = -1;
    err[0] = '\0';

    doc = json_loadb(body, len, 0, &jerr);

    if (status != 200) {
        rc = mc_graph_error(status, doc, err, err_size);
        json_decref(doc);
        return rc;
    }

    if (!json_is_object(doc)) {
        snprintf(err, err_size, "lookup: HTTP 200 without a JSON object");
        json_decref(doc);
        return MC_GRAPH_ERROR;
    }

    m->url = mc_media_strdup(doc, "url");
    m->mime_type = mc_media_strdup(doc, "mime_type");
    m->sha256 = mc_media_strdup(doc, "sha256");
    m->id = mc_media_strdup(doc, "id");

    size = json_object_get(doc, "file_size");

    if (json_is_integer(size) && json_integer_value(size) >= 0) {
        m->file_size = json_integer_value(size);

    } else if (json_is_string(size)) {
        s = json_string_value(size);
        m->file_size = strtoll(s, &end, 10);

        if (end == s || *end != '\0' || m->file_size < 0) {
            m->file_size = -1;
        }
    }

    json_decref(doc);

    if (m->url == NULL
        || (strncmp(m->url, "https://", 8) != 0
            && strncmp(m->url, "http://", 7) != 0))
    {
        snprintf(err, err_size, "lookup: HTTP 200 without a download url");
        return MC_GRAPH_ERROR;
    }

    return MC_GRAPH_OK;
}


void
mc_graph_media_free(mc_graph_media_t *m)
{
    free(m->url);
    free(m->mime_type);
    free(m->sha256);
    free(m->id);
    memset(m, 0, sizeof(mc_graph_media_t));
    m->file_size = -1;
}


/* Meta's accepted types (META-WEBHOOKS.md section 6) and a few neighbours */

static const struct {
    const char  *mime;
    const char  *ext;
} mc_media_exts[] = {
    { "image/jpeg", "jpg" },
    { "image/png", "png" },
    { "image/webp", "webp" },
    { "image/gif", "gif" },
    { "video/mp4", "mp4" },
    { "video/3gpp", "3gp" },
    { "audio/aac", "aac" },
    { "audio/amr", "amr" },
    { "audio/mpeg", "mp3" },
    { "audio/mp4", "m4a" },
    { "audio/ogg", "ogg" },
    { "audio/opus", "opus" },
    { "text/plain", "txt" },
    { "text/csv", "csv" },
    { "application/pdf", "pdf" },
    { "application/msword", "doc" },
    { "application/vnd.ms-excel", "xls" },
    { "application/vnd.ms-powerpoint", "ppt" },
    { "application/vnd.openxmlformats-officedocument.wordprocessingml"
      ".document", "docx" },
    { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
      "xlsx" },
    { "application/vnd.openxmlformats-officedocument.presentationml"
      ".presentation", "pptx" },
    { "application/zip", "zip" },
};


const char *
mc_media_ext(const char *mime)
{
    size_t  i, n;

    if (mime == NULL) {
        return "bin";
    }

    while (*mime == ' ') {
        mime++;
    }

    /* the type and subtype end at ';' or a blank */
    n = strcspn(mime, "; \t");

    for (i = 0; i < sizeof(mc_media_exts) / sizeof(mc_media_exts[0]); i++) {
        if (strlen(mc_media_exts[i].mime) == n
            && strncasecmp(mc_media_exts[i].mime, mime, n) == 0)
        {
            return mc_media_exts[i].ext;
        }
    }

    return "bin";
}


static int
mc_hex_value(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c = tolower(c);

    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }

    return -1;
}


int
mc_sha256_decode(const char *s, unsigned char out[MC_SHA256_LEN])
{
    int            hi, lo;
    size_t         i, len;
    char           b64[45];
    unsigned char  buf[48];

    if (s == NULL) {
        return -1;
    }

    len = strlen(s);

    if (len == 2 * MC_SHA256_LEN) {
        for (i = 0; i < MC_SHA256_LEN; i++) {
            hi = mc_hex_value((unsigned char) s[2 * i]);
            lo = mc_hex_value((unsigned char) s[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                return -1;
            }

            out[i] = (unsigned char) (hi << 4 | lo);
        }

        return 0;
    }

    /* 32 bytes are 43 base64 digits and one '=' of padding */
    if (len != 43 && !(len == 44 && s[43] == '=')) {
        return -1;
    }

    for (i = 0; i < 43; i++) {
        switch (s[i]) {
        case '-':
            b64[i] = '+';
            break;
        case '_':
            b64[i] = '/';
            break;
        default:
            if (!isalnum((unsigned char) s[i]) && s[i] != '+' && s[i] != '/') {
                return -1;
            }
            b64[i] = s[i];
        }
    }

    b64[43] = '=';
    b64[44] = '\0';

    /* EVP_DecodeBlock() counts the padding as a zero byte: 33 */
    if (EVP_DecodeBlock(buf, (unsigned char *) b64, 44) != MC_SHA256_LEN + 1) {
        return -1;
    }

    memcpy(out, buf, MC_SHA256_LEN);

    return 0;
}


int
mc_sha256_match(const char *expected, const unsigned char digest[MC_SHA256_LEN])
{
    unsigned char  want[MC_SHA256_LEN];

    if (mc_sha256_decode(expected, want) != 0) {
        return 0;
    }

    return memcmp(want, digest, MC_SHA256_LEN) == 0;
}


void
mc_sha256_digest_hex(const unsigned char digest[MC_SHA256_LEN], char out[65])
{
    size_t              i;
    static const char   hex[] = "0123456789abcdef";

    for (i = 0; i < MC_SHA256_LEN; i++) {
        out[2 * i] = hex[digest[i] >> 4];
        out[2 * i + 1] = hex[digest[i] & 0xf];
    }

    out[64] = '\0';
}


void
mc_sha256_base64(const unsigned char digest[MC_SHA256_LEN], char out[45])
{
    EVP_EncodeBlock((unsigned char *) out, digest, MC_SHA256_LEN);
}


static int
mc_media_safe_id(const char *s)
{
    size_t  i;

    if (s == NULL || s[0] == '\0' || s[0] == '.') {
        return 0;
    }

    for (i = 0; s[i]; i++) {
        if (i == MC_MEDIA_ID_MAX
            || !(isalnum((unsigned char) s[i])
                 || s[i] == '-' || s[i] == '_' || s[i] == '.'))
        {
            return 0;
        }
    }

    return 1;
}


char *
mc_media_key(const char *org, const char *day, const char *media_id,
    const char *ext)
{
    char    *key;
    size_t   i, len;

    if (!mc_media_safe_id(org) || !mc_media_safe_id(media_id)
        || !mc_media_safe_id(ext) || day == NULL || strlen(day) != 10)
    {
        return NULL;
    }

    for (i = 0; i < 10; i++) {
        if (i == 4 || i == 7 ? day[i] != '/' : !isdigit((unsigned char) day[i]))
        {
            return NULL;
        }
    }

    len = strlen(org) + 1 + 10 + 1 + strlen(media_id) + 1 + strlen(ext) + 1;

    key = malloc(len);
    if (key == NULL) {
        return NULL;
    }

    snprintf(key, len, "%s/%s/%s.%s", org, day, media_id, ext);

    return key;
}


void
mc_scrub(char *s, const char *secret)
{
    char    *p;
    size_t   n;

    if (s == NULL || secret == NULL) {
        return;
    }

    n = strlen(secret);

    if (n < 4) {
        return;
    }

    while ((p = strstr(s, secret)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + n, strlen(p + n) + 1);
    }
}
