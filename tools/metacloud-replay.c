
/*
 * metacloud-replay: normalises stored raw webhook bodies again with this
 * build's core and applies the result against the same raw rows, through
 * metacloud_replay_request() (sql/006_metacloud_operations.sql): events a
 * previous release stored as "generic" become messages, bodies it could
 * not parse get their events; nothing is processed twice, no raw row is
 * added.  Idempotent: a second run changes nothing.
 *
 *   metacloud-replay [options]
 *     --db <conninfo>      libpq connection string (default: the PG*
 *                          environment); an administrator's role
 *     --since <time>       raw requests received at or after <time>
 *     --until <time>       ... and before <time> (timestamptz literals)
 *     --id <raw id>        only this raw request (repeatable)
 *     --outcome <outcome>  only raw requests stored with this outcome
 *                          (ok, invalid_json, not_webhook, other_object)
 *     --dry-run            do everything in a transaction that is rolled
 *                          back: prints what would change, writes nothing
 *     --batch <n>          raw requests read per query (100)
 *     --verbose            a line for every raw request, changed or not
 *
 * Prints one JSON line per raw request that changes (the function's
 * result), then a summary line.  Exit status 0, or 1 on any error.
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <libpq-fe.h>

#include "mc_core.h"


#define MC_REPLAY_MAX_IDS  64


typedef struct {
    const char  *conninfo;
    const char  *since;
    const char  *until;
    const char  *outcome;
    const char  *ids[MC_REPLAY_MAX_IDS];
    int          nids;
    int          dry_run;
    int          verbose;
    int          batch;
} mc_replay_opts_t;


typedef struct {
    long         requests;
    long         changed;
    long         counts[6];
} mc_replay_totals_t;


/* the counters of metacloud_replay_request()'s result, summed */
static const char  *mc_replay_keys[] = {
    "converted", "added", "kept", "unchanged", "duplicate", "failed"
};


static int mc_replay_one(PGconn *pg, const mc_replay_opts_t *o,
    const char *id, const unsigned char *body, size_t len,
    mc_replay_totals_t *tot);
static int mc_replay_exec(PGconn *pg, const char *sql);
static void mc_usage(FILE *f);


int
main(int argc, char **argv)
{
    int                  i, rc, n, done;
    char                 batch[16];
    char                *last_at, *last_id;
    size_t               len;
    PGconn              *pg;
    PGresult            *res;
    const char          *params[8];
    unsigned char       *body;
    mc_replay_opts_t     o;
    mc_replay_totals_t   tot;

    memset(&o, 0, sizeof(o));
    memset(&tot, 0, sizeof(tot));
    o.conninfo = "";
    o.batch = 100;

    for (i = 1; i < argc; i++) {

        if (strcmp(argv[i], "--dry-run") == 0) {
            o.dry_run = 1;
            continue;
        }

        if (strcmp(argv[i], "--verbose") == 0 || strcmp(argv[i], "-v") == 0)
        {
            o.verbose = 1;
            continue;
        }

        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            mc_usage(stdout);
            return 0;
        }

        if (i + 1 == argc) {
            fprintf(stderr, "metacloud-replay: \"%s\" needs a value\n",
                    argv[i]);
            mc_usage(stderr);
            return 1;
        }

        if (strcmp(argv[i], "--db") == 0) {
            o.conninfo = argv[++i];

        } else if (strcmp(argv[i], "--since") == 0) {
            o.since = argv[++i];

        } else if (strcmp(argv[i], "--until") == 0) {
            o.until = argv[++i];

        } else if (strcmp(argv[i], "--outcome") == 0) {
            o.outcome = argv[++i];

        } else if (strcmp(argv[i], "--id") == 0) {
            if (o.nids == MC_REPLAY_MAX_IDS) {
                fprintf(stderr, "metacloud-replay: at most %d --id\n",
                        MC_REPLAY_MAX_IDS);
                return 1;
            }

            o.ids[o.nids++] = argv[++i];

        } else if (strcmp(argv[i], "--batch") == 0) {
            o.batch = atoi(argv[++i]);

            if (o.batch < 1) {
                fprintf(stderr, "metacloud-replay: bad --batch\n");
                return 1;
            }

        } else {
            fprintf(stderr, "metacloud-replay: unknown option \"%s\"\n",
                    argv[i]);
            mc_usage(stderr);
            return 1;
        }
    }

    pg = PQconnectdb(o.conninfo);

    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "metacloud-replay: %s", PQerrorMessage(pg));
        PQfinish(pg);
        return 1;
    }

    snprintf(batch, sizeof(batch), "%d", o.batch);

    /*
     * Keyset pagination on ("receivedAt", id): each batch is its own short
     * query, and every raw request is replayed in its own transaction, so
     * the ingest never waits on a long replay.  The ids are passed as one
     * text array.
     */

    last_at = NULL;
    last_id = NULL;
    rc = 0;
    done = 0;

    while (!done && rc == 0) {
        char  ids[MC_REPLAY_MAX_IDS * 80 + 3], *p;

        p = ids;
        *p++ = '{';

        for (i = 0; i < o.nids; i++) {
            p += snprintf(p, ids + sizeof(ids) - p, "%s\"%.*s\"",
                          i ? "," : "", 70, o.ids[i]);
        }

        *p++ = '}';
        *p = '\0';

        params[0] = o.since;
        params[1] = o.until;
        params[2] = o.nids ? ids : NULL;
        params[3] = o.outcome;
        params[4] = last_at;
        params[5] = last_id;
        params[6] = batch;

        res = PQexecParams(pg,
            "SELECT r.id, r.body, r.\"receivedAt\"::text"
            "  FROM meta_cloud_webhook_requests r"
            " WHERE ($1::timestamptz IS NULL OR r.\"receivedAt\" >= $1)"
            "   AND ($2::timestamptz IS NULL OR r.\"receivedAt\" < $2)"
            "   AND ($3::text[] IS NULL OR r.id = ANY ($3))"
            "   AND ($4::text IS NULL OR r.outcome = $4)"
            "   AND ($5::timestamptz IS NULL"
            "        OR (r.\"receivedAt\", r.id) > ($5, $6::text))"
            " ORDER BY r.\"receivedAt\", r.id"
            " LIMIT $7::int",
            7, NULL, params, NULL, NULL, 0);

        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "metacloud-replay: %s", PQerrorMessage(pg));
            PQclear(res);
            rc = 1;
            break;
        }

        n = PQntuples(res);
        done = n < o.batch;

        for (i = 0; i < n && rc == 0; i++) {
            body = PQunescapeBytea((unsigned char *) PQgetvalue(res, i, 1),
                                   &len);
            if (body == NULL) {
                fprintf(stderr, "metacloud-replay: out of memory\n");
                rc = 1;
                break;
            }

            rc = mc_replay_one(pg, &o, PQgetvalue(res, i, 0), body, len,
                               &tot);
            PQfreemem(body);
        }

        if (n > 0) {
            free(last_at);
            free(last_id);
            last_at = strdup(PQgetvalue(res, n - 1, 2));
            last_id = strdup(PQgetvalue(res, n - 1, 0));

            if (last_at == NULL || last_id == NULL) {
                fprintf(stderr, "metacloud-replay: out of memory\n");
                rc = 1;
            }
        }

        PQclear(res);
    }

    free(last_at);
    free(last_id);
    PQfinish(pg);

    printf("{\"summary\":true,\"dryRun\":%s,\"requests\":%ld,"
           "\"changed\":%ld", o.dry_run ? "true" : "false", tot.requests,
           tot.changed);

    for (i = 0; i < 6; i++) {
        printf(",\"%s\":%ld", mc_replay_keys[i], tot.counts[i]);
    }

    printf("}\n");

    return rc;
}


static int
mc_replay_one(PGconn *pg, const mc_replay_opts_t *o, const char *id,
    const unsigned char *body, size_t len, mc_replay_totals_t *tot)
{
    int               i, changed;
    char             *info;
    json_t           *doc, *changes;
    PGresult         *res;
    const char       *params[3];
    json_error_t      err;
    mc_normalized_t   norm;

    if (mc_normalize(body, len, &norm) != 0) {
        fprintf(stderr, "metacloud-replay: out of memory\n");
        return 1;
    }

    doc = json_pack("{s:s, s:s?}", "outcome", mc_body_rc_str(norm.rc),
                    "error", norm.rc == MC_BODY_OK ? NULL : norm.error);
    info = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);

    if (info == NULL) {
        mc_normalized_free(&norm);
        fprintf(stderr, "metacloud-replay: out of memory\n");
        return 1;
    }

    params[0] = id;
    params[1] = norm.events;
    params[2] = info;

    if (mc_replay_exec(pg, "BEGIN") != 0) {
        free(info);
        mc_normalized_free(&norm);
        return 1;
    }

    res = PQexecParams(pg,
                       "SELECT metacloud_replay_request($1, $2::jsonb,"
                       " $3::jsonb)::text",
                       3, NULL, params, NULL, NULL, 0);

    free(info);
    mc_normalized_free(&norm);

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "metacloud-replay: raw request %s: %s", id,
                PQerrorMessage(pg));
        PQclear(res);
        (void) mc_replay_exec(pg, "ROLLBACK");
        return 1;
    }

    doc = json_loads(PQgetvalue(res, 0, 0), 0, &err);
    changes = json_object_get(doc, "changes");
    changed = json_array_size(changes) > 0;

    tot->requests++;
    tot->changed += changed;

    for (i = 0; i < 6; i++) {
        tot->counts[i] += json_integer_value(json_object_get(doc,
                                                       mc_replay_keys[i]));
    }

    if (changed || o->verbose) {
        printf("%s\n", PQgetvalue(res, 0, 0));
    }

    json_decref(doc);
    PQclear(res);

    /* a dry run shows the very changes a real run makes, then undoes them */

    return mc_replay_exec(pg, o->dry_run ? "ROLLBACK" : "COMMIT");
}


static int
mc_replay_exec(PGconn *pg, const char *sql)
{
    PGresult  *res;

    res = PQexec(pg, sql);

    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        fprintf(stderr, "metacloud-replay: %s: %s", sql, PQerrorMessage(pg));
        PQclear(res);
        return 1;
    }

    PQclear(res);

    return 0;
}


static void
mc_usage(FILE *f)
{
    fprintf(f,
        "usage: metacloud-replay [--db conninfo] [--since time] "
        "[--until time]\n"
        "                        [--id raw_id]... [--outcome outcome] "
        "[--dry-run]\n"
        "                        [--batch n] [--verbose]\n"
        "\n"
        "Normalises stored raw webhook bodies again and applies the events\n"
        "against the same raw rows (metacloud_replay_request()).  Without\n"
        "--db, the PG* environment names the database.  --dry-run prints\n"
        "what would change and writes nothing.\n"
        "\n"
        "exit status: 0 ok, 1 error\n");
}
