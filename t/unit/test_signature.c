
/*
 * mc_signature_check(): X-Hub-Signature-256 against HMAC-SHA256 vectors
 * (RFC 4231 test case 2, and an empty body checked with openssl dgst).
 */


#include "mc_tap.h"
#include "mc_core.h"


#define JEFE_BODY  "what do ya want for nothing?"
#define JEFE_SIG   "sha256=5bdcc146bf60754e6a042426089575c7" \
                   "5a003f089d2739839dec58b964ec3843"
#define JEFE_SIG_UC "sha256=5BDCC146BF60754E6A042426089575C7" \
                    "5A003F089D2739839DEC58B964EC3843"
#define EMPTY_SIG  "sha256=5d5d139563c95b5967b9bd9a8c9b233a" \
                   "9dedb45072794cd232dc1b74832607d0"


static mc_sig_rc_e
check(const char *hdr, const char *body, const char **keys, size_t n)
{
    size_t    i;
    mc_str_t  secrets[4];

    for (i = 0; i < n; i++) {
        secrets[i].data = (const unsigned char *) keys[i];
        secrets[i].len = strlen(keys[i]);
    }

    return mc_signature_check((const unsigned char *) hdr,
                              hdr ? strlen(hdr) : 0,
                              (const unsigned char *) body, strlen(body),
                              secrets, n);
}


int
main(void)
{
    char         buf[128];
    const char  *jefe[] = { "Jefe" };
    const char  *two[] = { "old-secret", "Jefe" };
    const char  *none[] = { "a", "b", "c" };
    const char  *key[] = { "key" };

    is_int(check(JEFE_SIG, JEFE_BODY, jefe, 1), MC_SIG_OK, "valid signature");
    is_int(check(JEFE_SIG_UC, JEFE_BODY, jefe, 1), MC_SIG_OK,
           "upper-case hex is accepted");

    strcpy(buf, JEFE_SIG);
    buf[7 + 63] = (buf[7 + 63] == '3') ? '4' : '3';
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MISMATCH,
           "last digit changed: mismatch");

    is_int(check(JEFE_SIG, JEFE_BODY "x", jefe, 1), MC_SIG_MISMATCH,
           "body changed: mismatch");
    is_int(check(JEFE_SIG, JEFE_BODY, none, 3), MC_SIG_MISMATCH,
           "wrong secrets: mismatch");
    is_int(check(JEFE_SIG, JEFE_BODY, two, 2), MC_SIG_OK,
           "the second secret matches");
    is_int(check(JEFE_SIG, JEFE_BODY, jefe, 0), MC_SIG_MISMATCH,
           "no secret at all: mismatch");

    is_int(check(NULL, JEFE_BODY, jefe, 1), MC_SIG_MISSING, "NULL header");
    is_int(check("", JEFE_BODY, jefe, 1), MC_SIG_MISSING, "empty header");

    is_int(check(JEFE_SIG + 7, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED,
           "no sha256= prefix");

    strcpy(buf, JEFE_SIG);
    memcpy(buf, "SHA256=", 7);
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED,
           "upper-case prefix");

    strcpy(buf, "sha1=");
    strcat(buf, JEFE_SIG + 7);
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED, "sha1= prefix");

    strcpy(buf, JEFE_SIG);
    buf[strlen(buf) - 1] = '\0';
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED, "63 digits");

    strcpy(buf, JEFE_SIG);
    strcat(buf, "0");
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED, "65 digits");

    strcpy(buf, JEFE_SIG);
    strcat(buf, " ");
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED, "trailing blank");

    strcpy(buf, JEFE_SIG);
    buf[10] = 'g';
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED, "a non-hex digit");

    strcpy(buf, JEFE_SIG);
    buf[10] = ':';
    is_int(check(buf, JEFE_BODY, jefe, 1), MC_SIG_MALFORMED,
           "a colon (an OpenSSL hex separator) is refused");

    is_int(check("sha256=", JEFE_BODY, jefe, 1), MC_SIG_MALFORMED,
           "prefix only");

    is_int(check(EMPTY_SIG, "", key, 1), MC_SIG_OK, "empty body, valid");
    is_int(check(JEFE_SIG, "", jefe, 1), MC_SIG_MISMATCH,
           "empty body, wrong signature");
    is_int(mc_signature_check((const unsigned char *) EMPTY_SIG,
                              strlen(EMPTY_SIG), NULL, 0,
                              &(mc_str_t) { 3, (const unsigned char *) "key" },
                              1),
           MC_SIG_OK, "NULL body of length 0");

    is_str(mc_signature_rc_str(MC_SIG_OK), "ok", "rc string ok");
    is_str(mc_signature_rc_str(MC_SIG_MISSING), "missing", "rc string missing");
    is_str(mc_signature_rc_str(MC_SIG_MALFORMED), "malformed",
           "rc string malformed");
    is_str(mc_signature_rc_str(MC_SIG_MISMATCH), "mismatch",
           "rc string mismatch");

    return done_testing();
}
