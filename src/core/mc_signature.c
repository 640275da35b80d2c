
/*
 * X-Hub-Signature-256 check: "sha256=" followed by 64 hex digits of
 * HMAC-SHA256(app secret, raw body).  Several secrets may be configured
 * (one per app subscribed to the same callback, or an old and a new one
 * during a rotation): any one matching passes.
 */


#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "mc_core.h"


#define MC_SIG_PREFIX       "sha256="
#define MC_SIG_PREFIX_LEN   (sizeof(MC_SIG_PREFIX) - 1)
#define MC_SIG_HEX_LEN      64
#define MC_SIG_LEN          32


static int mc_signature_hmac(EVP_MAC *mac, const mc_str_t *secret,
    const unsigned char *body, size_t body_len, unsigned char *md);


mc_sig_rc_e
mc_signature_check(const unsigned char *hdr, size_t hdr_len,
    const unsigned char *body, size_t body_len,
    const mc_str_t *secrets, size_t nsecrets)
{
    size_t          i, n;
    EVP_MAC        *mac;
    mc_sig_rc_e     rc;
    unsigned char   want[MC_SIG_LEN], md[MC_SIG_LEN];
    char            hex[MC_SIG_HEX_LEN + 1];

    if (hdr == NULL || hdr_len == 0) {
        return MC_SIG_MISSING;
    }

    /*
     * Meta sends exactly "sha256=" and 64 hex digits; anything else,
     * including surrounding blanks, is not a signature we can trust.
     */

    if (hdr_len != MC_SIG_PREFIX_LEN + MC_SIG_HEX_LEN
        || memcmp(hdr, MC_SIG_PREFIX, MC_SIG_PREFIX_LEN) != 0)
    {
        return MC_SIG_MALFORMED;
    }

    for (i = 0; i < MC_SIG_HEX_LEN; i++) {
        if (OPENSSL_hexchar2int(hdr[MC_SIG_PREFIX_LEN + i]) < 0) {
            return MC_SIG_MALFORMED;
        }
    }

    /* OPENSSL_hexstr2buf_ex() wants a NUL-terminated string */

    memcpy(hex, hdr + MC_SIG_PREFIX_LEN, MC_SIG_HEX_LEN);
    hex[MC_SIG_HEX_LEN] = '\0';

    if (OPENSSL_hexstr2buf_ex(want, sizeof(want), &n, hex, '\0')
        != 1
        || n != MC_SIG_LEN)
    {
        return MC_SIG_MALFORMED;
    }

    if (body == NULL) {
        body = (const unsigned char *) "";
        body_len = 0;
    }

    mac = EVP_MAC_fetch(NULL, OSSL_MAC_NAME_HMAC, NULL);
    if (mac == NULL) {
        /* no HMAC provider: nothing can be verified, so nothing passes */
        return MC_SIG_MISMATCH;
    }

    rc = MC_SIG_MISMATCH;

    /*
     * Every secret is tried, even after a match, so that the time taken
     * does not tell which secret matched.
     */

    for (i = 0; i < nsecrets; i++) {
        if (mc_signature_hmac(mac, &secrets[i], body, body_len, md) != 0) {
            continue;
        }

        if (CRYPTO_memcmp(md, want, MC_SIG_LEN) == 0) {
            rc = MC_SIG_OK;
        }
    }

    OPENSSL_cleanse(md, sizeof(md));
    EVP_MAC_free(mac);

    return rc;
}


static int
mc_signature_hmac(EVP_MAC *mac, const mc_str_t *secret,
    const unsigned char *body, size_t body_len, unsigned char *md)
{
    int                   rc;
    size_t                len;
    EVP_MAC_CTX          *ctx;
    OSSL_PARAM            params[2];
    const unsigned char  *key;

    ctx = EVP_MAC_CTX_new(mac);
    if (ctx == NULL) {
        return -1;
    }

    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                 (char *) "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();

    /* a NULL key would mean "reuse the previous key" to EVP_MAC_init() */

    key = (secret->data != NULL) ? secret->data
                                 : (const unsigned char *) "";

    rc = -1;

    if (EVP_MAC_init(ctx, key, secret->len, params) == 1
        && EVP_MAC_update(ctx, body, body_len) == 1
        && EVP_MAC_final(ctx, md, &len, MC_SIG_LEN) == 1
        && len == MC_SIG_LEN)
    {
        rc = 0;
    }

    EVP_MAC_CTX_free(ctx);

    return rc;
}


const char *
mc_signature_rc_str(mc_sig_rc_e rc)
{
    switch (rc) {
    case MC_SIG_OK:
        return "ok";
    case MC_SIG_MISSING:
        return "missing";
    case MC_SIG_MALFORMED:
        return "malformed";
    case MC_SIG_MISMATCH:
        return "mismatch";
    }

    return "unknown";
}
