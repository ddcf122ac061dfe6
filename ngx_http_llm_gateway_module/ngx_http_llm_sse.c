
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_sse.h"


static ngx_int_t ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse, u_char *line,
    size_t len, ngx_uint_t transient);
static ngx_int_t ngx_http_llm_sse_keep(ngx_http_llm_sse_t *sse);
static u_char *ngx_http_llm_sse_eol(u_char *p, u_char *last);
static ngx_int_t ngx_http_llm_sse_grow(ngx_pool_t *pool, u_char **buf,
    size_t len, size_t *size, size_t need);


void
ngx_http_llm_sse_init(ngx_http_llm_sse_t *sse, ngx_pool_t *pool, size_t max,
    ngx_http_llm_sse_handler_pt handler, void *data)
{
    ngx_memzero(sse, sizeof(ngx_http_llm_sse_t));

    sse->pool = pool;
    sse->max = max;
    sse->handler = handler;
    sse->data = data;
}


/*
 * Lines and one-line payloads are read where they are in the input; only
 * what continues into the next buffer is copied.
 */

ngx_int_t
ngx_http_llm_sse_feed(ngx_http_llm_sse_t *sse, u_char *p, u_char *last)
{
    u_char     *eol, *line;
    size_t      n, len;
    ngx_int_t   rc;
    ngx_uint_t  transient;

    while (p < last) {

        if (sse->stopped) {
            return NGX_DONE;
        }

        if (sse->skip_lf) {
            sse->skip_lf = 0;

            if (*p == LF) {
                p++;
                continue;
            }
        }

        eol = ngx_http_llm_sse_eol(p, last);

        n = eol - p;

        if (sse->line_len + n > sse->max) {
            return NGX_DECLINED;
        }

        if (eol == last || sse->line_len) {

            /* a line begun in an earlier buffer or going on in the next */

            if (n) {
                if (ngx_http_llm_sse_grow(sse->pool, &sse->line,
                                          sse->line_len, &sse->line_size, n)
                    != NGX_OK)
                {
                    return NGX_ERROR;
                }

                ngx_memcpy(sse->line + sse->line_len, p, n);
                sse->line_len += n;
            }

            if (eol == last) {
                break;
            }

            line = sse->line;
            len = sse->line_len;
            transient = 0;

        } else {
            line = p;
            len = n;
            transient = 1;
        }

        sse->skip_lf = (*eol == CR);
        p = eol + 1;

        rc = ngx_http_llm_sse_line(sse, line, len, transient);

        sse->line_len = 0;

        if (rc == NGX_ERROR || rc == NGX_DECLINED) {
            return rc;
        }

        if (rc == NGX_DONE) {
            sse->stopped = 1;
            return NGX_DONE;
        }
    }

    /* a payload still in the input is copied before the input goes */

    return ngx_http_llm_sse_keep(sse);
}


static ngx_int_t
ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse, u_char *line, size_t len,
    ngx_uint_t transient)
{
    u_char     *colon, *value, *end;
    size_t      name_len, n;
    ngx_int_t   rc;
    ngx_str_t   event, payload;

    if (len == 0) {

        /* a blank line dispatches the event */

        if (!sse->has_data) {
            sse->event_len = 0;
            return NGX_OK;
        }

        event.data = sse->event;
        event.len = sse->event_len;

        if (sse->ext.data) {
            payload = sse->ext;

        } else {
            payload.data = sse->payload;
            payload.len = sse->payload_len;
        }

        rc = sse->handler(sse->data, &event, &payload);

        sse->event_len = 0;
        sse->payload_len = 0;
        sse->ext.data = NULL;
        sse->has_data = 0;

        return rc;
    }

    end = line + len;

    if (line[0] == ':') {
        return NGX_OK;
    }

    colon = ngx_strlchr(line, end, ':');

    if (colon) {
        name_len = colon - line;
        value = colon + 1;

        if (value < end && *value == ' ') {
            value++;
        }

    } else {
        name_len = len;
        value = end;
    }

    n = end - value;

    if (name_len == 4 && ngx_strncmp(line, "data", 4) == 0) {

        if (transient && !sse->has_data) {
            /* the common event: one data line, read in place */
            sse->ext.data = value;
            sse->ext.len = n;
            sse->has_data = 1;
            return NGX_OK;
        }

        if (ngx_http_llm_sse_keep(sse) != NGX_OK) {
            return NGX_ERROR;
        }

        if (sse->payload_len + n > sse->max) {
            return NGX_DECLINED;
        }

        if (ngx_http_llm_sse_grow(sse->pool, &sse->payload, sse->payload_len,
                                  &sse->payload_size, n + 1)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (sse->has_data) {
            sse->payload[sse->payload_len++] = LF;
        }

        ngx_memcpy(sse->payload + sse->payload_len, value, n);
        sse->payload_len += n;
        sse->has_data = 1;

        return NGX_OK;
    }

    if (name_len == 5 && ngx_strncmp(line, "event", 5) == 0) {
        sse->event_len = ngx_min(n, sizeof(sse->event));
        ngx_memcpy(sse->event, value, sse->event_len);
    }

    /* "id:", "retry:" and unknown fields are ignored */

    return NGX_OK;
}


/* the first CR or LF, or last: the C library's memchr is vectorized */

static u_char *
ngx_http_llm_sse_eol(u_char *p, u_char *last)
{
    u_char  *lf, *cr;

    lf = memchr(p, LF, last - p);

    if (lf == NULL) {
        lf = last;
    }

    cr = memchr(p, CR, lf - p);

    return cr ? cr : lf;
}


/* a payload read in place becomes the parser's own */

static ngx_int_t
ngx_http_llm_sse_keep(ngx_http_llm_sse_t *sse)
{
    if (sse->ext.data == NULL) {
        return NGX_OK;
    }

    if (ngx_http_llm_sse_grow(sse->pool, &sse->payload, 0,
                              &sse->payload_size, sse->ext.len + 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(sse->payload, sse->ext.data, sse->ext.len);
    sse->payload_len = sse->ext.len;
    sse->ext.data = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_sse_grow(ngx_pool_t *pool, u_char **buf, size_t len,
    size_t *size, size_t need)
{
    size_t   n;
    u_char  *p;

    if (*size - len >= need && *buf) {
        return NGX_OK;
    }

    n = ngx_max(*size * 2, len + need);
    n = ngx_max(n, 256);

    p = ngx_pnalloc(pool, n);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (len) {
        ngx_memcpy(p, *buf, len);
    }

    *buf = p;
    *size = n;

    return NGX_OK;
}
