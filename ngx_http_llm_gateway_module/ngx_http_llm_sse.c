
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_sse.h"


static ngx_int_t ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse);
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


ngx_int_t
ngx_http_llm_sse_feed(ngx_http_llm_sse_t *sse, u_char *p, u_char *last)
{
    u_char     *eol;
    size_t      n;
    ngx_int_t   rc;

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

        for (eol = p; eol < last && *eol != LF && *eol != CR; eol++) {
            /* void */
        }

        n = eol - p;

        if (n) {
            if (sse->line_len + n > sse->max) {
                return NGX_DECLINED;
            }

            if (ngx_http_llm_sse_grow(sse->pool, &sse->line, sse->line_len,
                                      &sse->line_size, n)
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

        sse->skip_lf = (*eol == CR);
        p = eol + 1;

        rc = ngx_http_llm_sse_line(sse);

        sse->line_len = 0;

        if (rc == NGX_ERROR || rc == NGX_DECLINED) {
            return rc;
        }

        if (rc == NGX_DONE) {
            sse->stopped = 1;
            return NGX_DONE;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_sse_line(ngx_http_llm_sse_t *sse)
{
    u_char     *colon, *value, *end;
    size_t      name_len, len;
    ngx_int_t   rc;
    ngx_str_t   event, payload;

    if (sse->line_len == 0) {

        /* a blank line dispatches the event */

        if (!sse->has_data) {
            sse->event_len = 0;
            return NGX_OK;
        }

        event.data = sse->event;
        event.len = sse->event_len;
        payload.data = sse->payload;
        payload.len = sse->payload_len;

        rc = sse->handler(sse->data, &event, &payload);

        sse->event_len = 0;
        sse->payload_len = 0;
        sse->has_data = 0;

        return rc;
    }

    end = sse->line + sse->line_len;

    if (sse->line[0] == ':') {
        return NGX_OK;
    }

    colon = ngx_strlchr(sse->line, end, ':');

    if (colon) {
        name_len = colon - sse->line;
        value = colon + 1;

        if (value < end && *value == ' ') {
            value++;
        }

    } else {
        name_len = sse->line_len;
        value = end;
    }

    len = end - value;

    if (name_len == 4 && ngx_strncmp(sse->line, "data", 4) == 0) {

        if (sse->payload_len + len > sse->max) {
            return NGX_DECLINED;
        }

        if (ngx_http_llm_sse_grow(sse->pool, &sse->payload, sse->payload_len,
                                  &sse->payload_size, len + 2)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (sse->has_data) {
            sse->payload[sse->payload_len++] = LF;
        }

        ngx_memcpy(sse->payload + sse->payload_len, value, len);
        sse->payload_len += len;
        sse->payload[sse->payload_len] = '\0';
        sse->has_data = 1;

        return NGX_OK;
    }

    if (name_len == 5 && ngx_strncmp(sse->line, "event", 5) == 0) {
        sse->event_len = ngx_min(len, sizeof(sse->event));
        ngx_memcpy(sse->event, value, sse->event_len);
    }

    /* "id:", "retry:" and unknown fields are ignored */

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
