
/*
 * A minimal TAP producer for the core's unit tests: each test binary
 * prints "ok N - name" lines and a closing plan, which prove reads.
 */


#ifndef _MC_TAP_H_INCLUDED_
#define _MC_TAP_H_INCLUDED_


#include <stdio.h>
#include <stdlib.h>
#include <string.h>


static int  mc_tap_n;
static int  mc_tap_failed;


static inline int
mc_tap_ok(int cond, const char *file, int line, const char *name)
{
    mc_tap_n++;

    printf("%s %d - %s\n", cond ? "ok" : "not ok", mc_tap_n, name);

    if (!cond) {
        mc_tap_failed++;
        printf("#   failed at %s line %d\n", file, line);
    }

    return cond;
}


static inline int
mc_tap_is_str(const char *got, const char *want, const char *file, int line,
    const char *name)
{
    int  cond;

    cond = (got != NULL && want != NULL && strcmp(got, want) == 0)
           || (got == NULL && want == NULL);

    if (!mc_tap_ok(cond, file, line, name)) {
        printf("#   got:      %s%s%s\n", got ? "\"" : "",
               got ? got : "NULL", got ? "\"" : "");
        printf("#   expected: %s%s%s\n", want ? "\"" : "",
               want ? want : "NULL", want ? "\"" : "");
    }

    return cond;
}


static inline int
mc_tap_is_int(long long got, long long want, const char *file, int line,
    const char *name)
{
    if (!mc_tap_ok(got == want, file, line, name)) {
        printf("#   got:      %lld\n#   expected: %lld\n", got, want);
        return 0;
    }

    return 1;
}


static inline int
mc_tap_done(void)
{
    printf("1..%d\n", mc_tap_n);

    if (mc_tap_failed) {
        printf("# failed %d of %d\n", mc_tap_failed, mc_tap_n);
    }

    return mc_tap_failed ? 1 : 0;
}


#define ok(cond, name)        mc_tap_ok(!!(cond), __FILE__, __LINE__, name)
#define is_str(g, w, name)    mc_tap_is_str(g, w, __FILE__, __LINE__, name)
#define is_int(g, w, name)                                                   \
    mc_tap_is_int((long long) (g), (long long) (w), __FILE__, __LINE__, name)
#define done_testing()        mc_tap_done()


#endif /* _MC_TAP_H_INCLUDED_ */
