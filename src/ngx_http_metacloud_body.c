
/*
 * Copyright (C) ngx_http_metacloud_module authors
 *
 * The signature covers the raw body exactly as received, and the body goes
 * to PostgreSQL as one bytea: gather the whole buffer chain, from memory or
 * from the temporary file, into one contiguous buffer.  A body of at least
 * heap_min bytes (0: none) is malloc()ed, for a thread task that may
 * outlive nothing of the request: the caller frees it.
 */


#include "ngx_http_metacloud.h"


ngx_int_t
ngx_http_metacloud_read_body(ngx_http_request_t *r, ngx_str_t *body,
    size_t heap_min)
{
    off_t         len;
    u_char       *p;
    ssize_t       n;
    size_t        size;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        len += ngx_buf_size(cl->buf);
    }

    if (len == 0) {
        return NGX_OK;
    }

    /* one byte more: the core may want the body NUL-terminated */

    if (heap_min && (size_t) len >= heap_min) {
        p = ngx_alloc((size_t) len + 1, r->connection->log);

    } else {
        p = ngx_pnalloc(r->pool, (size_t) len + 1);
    }

    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file || b->file == NULL) {
            continue;
        }

        size = (size_t) (b->file_last - b->file_pos);

        n = ngx_read_file(b->file, p, size, b->file_pos);

        if (n == NGX_ERROR) {
            goto failed;
        }

        if ((size_t) n != size) {
            ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                          ngx_read_file_n " read only %z of %uz bytes "
                          "from \"%V\"", n, size, &b->file->name);
            goto failed;
        }

        p += n;
    }

    /* the caller tells a malloc()ed body by its length: it must be len */

    if (p - body->data != len) {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "metacloud: request body of %O bytes read as %z",
                      len, p - body->data);
        goto failed;
    }

    body->len = (size_t) len;
    *p = '\0';

    return NGX_OK;

failed:

    if (heap_min && (size_t) len >= heap_min) {
        ngx_free(body->data);
    }

    body->data = (u_char *) "";

    return NGX_ERROR;
}
