
/*
 * t/lib/fetch-driver.c: runs one ngx_http_metacloud_fetch_run() attempt
 * outside nginx, for t/84-fetch.t, and prints its result as one JSON line.
 *
 *   fetch-driver name=value ...
 *     graph=URL path=DIR | s3=ENDPOINT bucket=B region=R key_id=K secret=S
 *     prefix=P url_prefix=U max=BYTES timeout=MS
 *     media_id=ID org=ORG day=yyyy/mm/dd token=T mime=M sha256=S url=U
 */


#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "ngx_http_metacloud_fetch.h"


static const char *
arg(int argc, char **argv, const char *name)
{
    int     i;
    size_t  n = strlen(name);

    for (i = 1; i < argc; i++) {
        if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=') {
            return argv[i] + n + 1;
        }
    }

    return NULL;
}


int
main(int argc, char **argv)
{
    char                             *out;
    const char                       *v;
    json_t                           *j;
    ngx_http_metacloud_fetch_t        f;
    ngx_http_metacloud_fetch_conf_t   conf;

    memset(&conf, 0, sizeof(conf));
    memset(&f, 0, sizeof(f));

    conf.graph_url = arg(argc, argv, "graph");
    conf.path = arg(argc, argv, "path");
    conf.s3_endpoint = arg(argc, argv, "s3");
    conf.s3_bucket = arg(argc, argv, "bucket");
    conf.s3_region = arg(argc, argv, "region");
    conf.s3_key_id = arg(argc, argv, "key_id");
    conf.s3_secret = arg(argc, argv, "secret");
    conf.s3_prefix = (v = arg(argc, argv, "prefix")) ? v : "";
    conf.url_prefix = arg(argc, argv, "url_prefix");
    conf.tmp_dir = arg(argc, argv, "tmp_dir");
    conf.max_size = (v = arg(argc, argv, "max")) ? atoll(v) : 100 << 20;
    conf.timeout = (v = arg(argc, argv, "timeout")) ? atol(v) : 60000;

    f.conf = &conf;
    f.media_id = arg(argc, argv, "media_id");
    f.org = arg(argc, argv, "org");
    f.day = arg(argc, argv, "day");
    f.token = arg(argc, argv, "token");
    f.mime = arg(argc, argv, "mime");
    f.sha256 = arg(argc, argv, "sha256");
    f.url = arg(argc, argv, "url");

    if (ngx_http_metacloud_fetch_global_init() != 0) {
        return 2;
    }

    ngx_http_metacloud_fetch_run(&f);

    j = json_pack("{s:s, s:s, s:s?, s:s?, s:s?, s:I, s:I, s:i}",
                  "rc", ngx_http_metacloud_fetch_rc_str(f.rc),
                  "error", f.error,
                  "key", f.key, "storage_url", f.storage_url,
                  "mime_found", f.mime_found,
                  "size", (json_int_t) f.size,
                  "duration", (json_int_t) f.duration,
                  "lookups", (int) f.lookups);
    out = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    printf("%s\n", out);

    free(out);
    json_decref(j);
    ngx_http_metacloud_fetch_free(&f);
    curl_global_cleanup();

    return 0;
}
