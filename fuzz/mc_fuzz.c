
/*
 * libFuzzer target: the pre-pass and the normaliser on arbitrary bytes.
 * Whatever the input, mc_normalize() must return an events array that
 * jansson parses, and must neither crash nor leak.
 */


#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mc_core.h"


int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);


int
LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    size_t            n;
    json_t           *events;
    unsigned char    *p;
    json_error_t      err;
    mc_normalized_t   out;

    p = mc_prepass(data, size, &n);
    if (p == NULL) {
        abort();
    }

    free(p);

    if (mc_normalize(data, size, &out) != 0) {
        abort();
    }

    events = json_loadb(out.events, out.events_len, 0, &err);

    if (events == NULL || !json_is_array(events)
        || json_array_size(events) != out.nevents)
    {
        abort();
    }

    json_decref(events);
    mc_normalized_free(&out);

    return 0;
}
