
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_sse.h"


/*
 * What comes back from a provider.  The header filter keeps an attempt's
 * status from the client; the body filter collects a JSON answer or
 * feeds a 2xx stream to the SSE parser, whose events the driver writes
 * into the client's stream.  Provider buffers stay busy until the client
 * has taken what they were translated into, so the provider is not read
 * faster than the client reads (as the upstream module does without
 * buffering).  In a gateway location, nginx's own error pages are
 * replaced by OpenAI-shaped JSON.
 */


#define NGX_HTTP_LLM_MAX_ERROR_BODY  65536


static ngx_int_t ngx_http_llm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_llm_feed(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, ngx_buf_t *b);
static ngx_int_t ngx_http_llm_hold(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, ngx_buf_t *b);
static void ngx_http_llm_release(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a);
static ngx_int_t ngx_http_llm_collect(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, u_char *p, u_char *last, size_t max);
static ngx_int_t ngx_http_llm_sse_event(void *data, ngx_str_t *event,
    ngx_str_t *payload);
static ngx_int_t ngx_http_llm_replace_header(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_replace_body(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_int_t
ngx_http_llm_header_filter(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_attempt_t   *a;
    ngx_http_llm_sse_t       *sse;
    ngx_http_llm_loc_conf_t  *llcf;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_gateway_module);

    if (r == r->main) {

        if ((ctx && ctx->own) || r->headers_out.status < 400) {
            return ngx_http_next_header_filter(r);
        }

        llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

        if (!llcf->gateway) {
            return ngx_http_next_header_filter(r);
        }

        /* nginx's own error page in a gateway location, e.g. 413 */
        return ngx_http_llm_replace_header(r, ctx);
    }

    if (ctx == NULL || ctx->cur == NULL || ctx->cur->sr != r) {
        return ngx_http_next_header_filter(r);
    }

    a = ctx->cur;
    a->header = 1;
    a->status = r->headers_out.status;

    r->filter_need_in_memory = 1;

    if (a->status >= 200 && a->status < 300 && !a->embed) {
        ctx->ttft = ngx_current_msec - ctx->start;

        if (ctx->stream) {

            /* the parser of the driver's framing; SSE is the only one */

            switch (a->target->provider->driver->framing) {

            case NGX_HTTP_LLM_FRAMING_SSE:
                sse = ngx_palloc(r->pool, sizeof(ngx_http_llm_sse_t));
                if (sse == NULL) {
                    return NGX_ERROR;
                }

                ngx_http_llm_sse_init(sse, r->pool, ctx->conf->max_response,
                                      ngx_http_llm_sse_event, a);

                a->sse = sse;
                break;
            }

            a->streaming = 1;
        }
    }

    /* the provider's header goes no further: the gateway answers */

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    size_t                   max;
    ngx_int_t                rc;
    ngx_buf_t               *b;
    ngx_chain_t             *cl;
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_attempt_t  *a;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_gateway_module);

    if (r == r->main) {
        if (ctx && ctx->replacing) {
            return ngx_http_llm_replace_body(r, ctx, in);
        }

        return ngx_http_next_body_filter(r, in);
    }

    if (ctx == NULL || ctx->cur == NULL || ctx->cur->sr != r) {
        return ngx_http_next_body_filter(r, in);
    }

    a = ctx->cur;

    max = (a->status >= 200 && a->status < 300) ? ctx->conf->max_response
                                                : NGX_HTTP_LLM_MAX_ERROR_BODY;

    for (cl = in; cl; cl = cl->next) {
        b = cl->buf;

        if (a->streaming) {
            if (ngx_http_llm_feed(r, a, b) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        if (ngx_buf_in_memory(b) && b->last > b->pos
            && ngx_http_llm_collect(r, a, b->pos, b->last, max) != NGX_OK)
        {
            return NGX_ERROR;
        }

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }
    }

    if (!a->streaming) {
        return NGX_OK;
    }

    if (ctx->out.pend && !r->main->header_sent) {
        rc = ngx_http_llm_send_header(r->main, ctx, a);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            return NGX_ERROR;
        }
    }

    rc = ngx_http_llm_stream_send(&ctx->out, r, ngx_http_next_body_filter, 0);

    if (rc == NGX_OK || a->failed) {
        /* after a failure, the rest of the stream is read and dropped */
        ngx_http_llm_release(r, a);
    }

    return rc;
}


/*
 * A buffer of a 2xx stream: its events go to the driver; the buffer is
 * held, unless the attempt has failed or the stream is over.
 */

static ngx_int_t
ngx_http_llm_feed(ngx_http_request_t *r, ngx_http_llm_attempt_t *a,
    ngx_buf_t *b)
{
    ngx_int_t  rc;

    if (ngx_buf_in_memory(b) && b->last > b->pos
        && !a->stream_done && !a->failed)
    {
        rc = ngx_http_llm_sse_feed(a->sse, b->pos, b->last);

        /*
         * On failure the rest of the stream is read and dropped: an error
         * from a filter would close the client's connection with no
         * answer at all.
         */

        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "llm: provider \"%V\" model \"%V\" sent a stream "
                          "event longer than llm_max_response_size",
                          &a->target->provider->name,
                          ngx_http_llm_escape(r->pool, &a->call.model, 1));
            a->too_big = 1;
            a->failed = 1;

        } else if (rc == NGX_ERROR) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "llm: the stream of provider \"%V\" model \"%V\" "
                          "could not be translated",
                          &a->target->provider->name,
                          ngx_http_llm_escape(r->pool, &a->call.model, 1));
            a->untranslated = 1;
            a->failed = 1;
        }
    }

    if (!a->failed && !a->stream_done && ngx_buf_size(b)) {
        return ngx_http_llm_hold(r, a, b);
    }

    b->pos = b->last;

    if (b->in_file) {
        b->file_pos = b->file_last;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_hold(ngx_http_request_t *r, ngx_http_llm_attempt_t *a,
    ngx_buf_t *b)
{
    ngx_chain_t  *cl;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = a->held;
    a->held = cl;

    return NGX_OK;
}


/* the held provider buffers are taken: the provider may be read on */

static void
ngx_http_llm_release(ngx_http_request_t *r, ngx_http_llm_attempt_t *a)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, *next;

    for (cl = a->held; cl; cl = next) {
        next = cl->next;

        b = cl->buf;
        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }

        ngx_free_chain(r->pool, cl);
    }

    a->held = NULL;
}


static ngx_int_t
ngx_http_llm_collect(ngx_http_request_t *r, ngx_http_llm_attempt_t *a,
    u_char *p, u_char *last, size_t max)
{
    size_t   n, size;
    u_char  *nb;

    if (a->too_big) {
        return NGX_OK;
    }

    n = last - p;

    if (a->body_len + n > max) {
        a->too_big = 1;
        return NGX_OK;
    }

    if (a->body_size - a->body_len < n) {
        size = ngx_max(a->body_size * 2, a->body_len + n);
        size = ngx_max(size, 4096);

        nb = ngx_pnalloc(r->pool, size + 1);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        if (a->body_len) {
            ngx_memcpy(nb, a->body, a->body_len);
        }

        a->body = nb;
        a->body_size = size;
    }

    ngx_memcpy(a->body + a->body_len, p, n);
    a->body_len += n;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_sse_event(void *data, ngx_str_t *event, ngx_str_t *payload)
{
    ngx_http_llm_attempt_t *a = data;

    ngx_int_t  rc;
    ngx_str_t  text;

    text = *payload;

    if (ngx_http_llm_provider_text(a, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = a->target->provider->driver->parse_stream_event(&a->call, event,
                                                         &text);

    if (rc == NGX_OK
        && ngx_http_llm_spend_over(ngx_http_get_module_ctx(a->sr->main,
                                                  ngx_http_llm_gateway_module),
                                   a))
    {
        /* the provider went past the max_tokens it was asked for */

        ngx_log_error(NGX_LOG_WARN, a->call.log, 0,
                      "llm: provider \"%V\" model \"%V\" went on past the "
                      "%i tokens reserved for its answer, stream ended",
                      &a->target->provider->name,
                      ngx_http_llm_escape(a->call.pool, &a->call.model, 1),
                      a->max_output);

        a->over_budget = 1;
        a->failed = 1;

        return NGX_DONE;
    }

    switch (rc) {

    case NGX_OK:
        return NGX_OK;

    case NGX_DONE:
        a->stream_done = 1;
        return NGX_DONE;

    case NGX_DECLINED:
        ngx_log_error(NGX_LOG_WARN, a->call.log, 0,
                      "llm: provider \"%V\" model \"%V\" sent a malformed "
                      "stream event, ignored", &a->target->provider->name,
                      ngx_http_llm_escape(a->call.pool, &a->call.model, 1));
        return NGX_OK;

    default:
        return NGX_ERROR;
    }
}


static ngx_int_t
ngx_http_llm_replace_header(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_error_t  err;

    if (ctx == NULL) {
        ctx = ngx_http_llm_ctx_create(r);
        if (ctx == NULL) {
            return NGX_ERROR;
        }
    }

    ngx_http_llm_error_defaults(r->headers_out.status, &err);

    switch (r->headers_out.status) {

    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ngx_str_set(&err.code, "request_too_large");
        ngx_str_set(&err.message, "The request body is too large "
                                  "(client_max_body_size).");
        break;

    case NGX_HTTP_REQUEST_TIME_OUT:
        ngx_str_set(&err.code, "request_timeout");
        ngx_str_set(&err.message, "The request body was not received in "
                                  "time.");
        break;

    case NGX_HTTP_BAD_REQUEST:
        ngx_str_set(&err.message, "The request could not be read.");
        break;

    default:
        if (r->headers_out.status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_str_set(&err.code, "internal_error");
            ngx_str_set(&err.message, "The gateway failed to process the "
                                      "request.");

        } else {
            ngx_str_set(&err.message, "The request was refused.");
        }
    }

    if (ngx_http_llm_error_json(r->pool, &err, &ctx->replace) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->replacing = 1;
    ctx->own = 1;

    ngx_http_clear_content_length(r);

    r->headers_out.content_length_n = ctx->replace.len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;
    r->headers_out.charset.len = 0;

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_llm_replace_body(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_chain_t *in)
{
    ngx_buf_t    *b;
    ngx_chain_t  *cl, out;

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->replaced) {
        return NGX_OK;
    }

    ctx->replaced = 1;

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = ctx->replace.data;
    b->last = ctx->replace.data + ctx->replace.len;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}


ngx_int_t
ngx_http_llm_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_body_filter;

    return NGX_OK;
}
