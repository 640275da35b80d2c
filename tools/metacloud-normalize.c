
/*
 * metacloud-normalize: prints the events that ngx_http_metacloud_module
 * would store for a webhook body read from stdin.
 *
 *   metacloud-normalize [--compact] < body.json
 *       the events array, pretty (or compact, as sent to SQL), on stdout;
 *       the outcome on stderr; exit status 0 ok, 2 invalid_json,
 *       3 not_webhook, 4 other_object, 1 any other failure
 *
 *   metacloud-normalize --wire < pretty.json
 *       the body re-serialised the way Meta sends it: compact, ASCII only
 *       with lower-case \uXXXX, "/" as "\/", key order kept, no trailing
 *       newline
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "mc_core.h"


static unsigned char *mc_read_all(FILE *f, size_t *len);
static int mc_wire(const unsigned char *body, size_t len);
static int mc_events(const unsigned char *body, size_t len, int compact);
static int mc_reals_need_17(json_t *json);
static void mc_usage(FILE *f);


int
main(int argc, char **argv)
{
    int             i, compact, wire, rc;
    size_t          len;
    unsigned char  *body;

    compact = 0;
    wire = 0;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--compact") == 0) {
            compact = 1;

        } else if (strcmp(argv[i], "--wire") == 0) {
            wire = 1;

        } else if (strcmp(argv[i], "--help") == 0
                   || strcmp(argv[i], "-h") == 0)
        {
            mc_usage(stdout);
            return 0;

        } else {
            fprintf(stderr, "metacloud-normalize: unknown option \"%s\"\n",
                    argv[i]);
            mc_usage(stderr);
            return 1;
        }
    }

    body = mc_read_all(stdin, &len);
    if (body == NULL) {
        fprintf(stderr, "metacloud-normalize: cannot read stdin\n");
        return 1;
    }

    rc = wire ? mc_wire(body, len) : mc_events(body, len, compact);

    free(body);

    return rc;
}


static void
mc_usage(FILE *f)
{
    fprintf(f,
        "usage: metacloud-normalize [--compact] < body.json\n"
        "       metacloud-normalize --wire < pretty.json\n"
        "\n"
        "  (default)  print the normalised events of a webhook body\n"
        "  --compact  print them compact, as sent to metacloud_ingest()\n"
        "  --wire     re-serialise a body the way Meta sends it\n"
        "\n"
        "exit status: 0 ok, 2 invalid_json, 3 not_webhook, "
        "4 other_object, 1 error\n");
}


static unsigned char *
mc_read_all(FILE *f, size_t *len)
{
    size_t          n, size;
    unsigned char  *buf, *p;

    size = 65536;
    n = 0;

    buf = malloc(size);
    if (buf == NULL) {
        return NULL;
    }

    for ( ;; ) {
        if (n == size) {
            size *= 2;

            p = realloc(buf, size);
            if (p == NULL) {
                free(buf);
                return NULL;
            }

            buf = p;
        }

        n += fread(buf + n, 1, size - n, f);

        if (n < size) {
            if (ferror(f)) {
                free(buf);
                return NULL;
            }

            if (feof(f)) {
                break;
            }
        }
    }

    *len = n;

    return buf;
}


static int
mc_wire(const unsigned char *body, size_t len)
{
    char          *out, *p;
    json_t        *root;
    size_t         flags, k;
    json_error_t   err;

    root = json_loadb((const char *) body, len, JSON_ALLOW_NUL, &err);

    if (root == NULL) {
        fprintf(stderr, "metacloud-normalize: line %d, column %d: %s\n",
                err.line, err.column, err.text);
        return 2;
    }

    flags = JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ESCAPE_SLASH
            | JSON_PRESERVE_ORDER
            | JSON_REAL_PRECISION(mc_reals_need_17(root) ? 17 : 15);

    out = json_dumps(root, flags);

    json_decref(root);

    if (out == NULL) {
        fprintf(stderr, "metacloud-normalize: out of memory\n");
        return 1;
    }

    /*
     * jansson writes "\uD83D"; Meta writes lower-case hex ("\ud83d"), and
     * its signature covers those bytes.  A "\\" pair is skipped whole, so
     * that the text "\\u0041" stays as it is.
     */

    for (p = out; *p != '\0'; p++) {
        if (*p != '\\') {
            continue;
        }

        p++;

        if (*p == '\0') {
            break;
        }

        if (*p == 'u') {
            for (k = 1; k <= 4 && p[k] != '\0'; k++) {
                if (p[k] >= 'A' && p[k] <= 'F') {
                    p[k] = (char) (p[k] - 'A' + 'a');
                }
            }
        }
    }

    fputs(out, stdout);
    free(out);

    return 0;
}


static int
mc_events(const unsigned char *body, size_t len, int compact)
{
    int               rc;
    char             *out;
    json_t           *events;
    json_error_t      err;
    mc_normalized_t   n;

    if (mc_normalize(body, len, &n) != 0) {
        fprintf(stderr, "metacloud-normalize: out of memory\n");
        return 1;
    }

    if (compact) {
        fwrite(n.events, 1, n.events_len, stdout);
        fputc('\n', stdout);

    } else {
        events = json_loadb(n.events, n.events_len, 0, &err);

        if (events == NULL) {
            fprintf(stderr, "metacloud-normalize: bad events: %s\n",
                    err.text);
            mc_normalized_free(&n);
            return 1;
        }

        out = json_dumps(events,
                         JSON_INDENT(2)
                         | JSON_REAL_PRECISION(mc_reals_need_17(events)
                                               ? 17 : 15));
        json_decref(events);

        if (out == NULL) {
            fprintf(stderr, "metacloud-normalize: out of memory\n");
            mc_normalized_free(&n);
            return 1;
        }

        puts(out);
        free(out);
    }

    if (n.rc == MC_BODY_OK) {
        fprintf(stderr, "outcome: ok, events: %zu\n", n.nevents);

    } else {
        fprintf(stderr, "outcome: %s: %s\n", mc_body_rc_str(n.rc), n.error);
    }

    switch (n.rc) {
    case MC_BODY_OK:
        rc = 0;
        break;
    case MC_BODY_INVALID_JSON:
        rc = 2;
        break;
    case MC_BODY_NOT_WEBHOOK:
        rc = 3;
        break;
    default:
        rc = 4;
        break;
    }

    mc_normalized_free(&n);

    return rc;
}


/* whether a real of the document does not survive "%.15g" */

static int
mc_reals_need_17(json_t *json)
{
    char         buf[32];
    size_t       i;
    json_t      *v;
    const char  *k;

    switch (json_typeof(json)) {

    case JSON_OBJECT:
        json_object_foreach(json, k, v) {
            if (mc_reals_need_17(v)) {
                return 1;
            }
        }

        return 0;

    case JSON_ARRAY:
        json_array_foreach(json, i, v) {
            if (mc_reals_need_17(v)) {
                return 1;
            }
        }

        return 0;

    case JSON_REAL:
        snprintf(buf, sizeof(buf), "%.15g", json_real_value(json));
        return strtod(buf, NULL) != json_real_value(json);

    default:
        return 0;
    }
}
