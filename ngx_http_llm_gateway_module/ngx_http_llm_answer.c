
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * What the gateway sends to the client: the response header with the
 * x-llm-* headers, whole answers, OpenAI-shaped errors, and the end of a
 * stream.
 */


ngx_int_t
ngx_http_llm_add_header(ngx_http_request_t *r, char *key, ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_send_header(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    u_char     *p;
    ngx_str_t   s;

    ctx->own = 1;

    if (a) {
        ctx->answer = a;

        if (ngx_http_llm_add_header(r, "x-llm-provider",
                                    &a->target->provider->name)
            != NGX_OK
            || ngx_http_llm_add_header(r, "x-llm-model",
                                       ngx_http_llm_escape(r->pool,
                                                           &a->call.model, 0))
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (ctx->nattempts) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        s.data = p;
        s.len = ngx_sprintf(p, "%ui", ctx->nattempts) - p;

        if (ngx_http_llm_add_header(r, "x-llm-attempts", &s) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_llm_spend_headers(r, ctx, a) != NGX_OK
        || ngx_http_llm_cache_headers(r, ctx) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (a && a->streaming && r->headers_out.status == 0
        && ngx_http_llm_stream_headers(r) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_send_header(r);
}


/* the header fields of an event stream */

ngx_int_t
ngx_http_llm_stream_headers(ngx_http_request_t *r)
{
    ngx_str_t  s;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = -1;
    ngx_str_set(&r->headers_out.content_type, "text/event-stream");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    ngx_str_set(&s, "no-cache");
    if (ngx_http_llm_add_header(r, "Cache-Control", &s) != NGX_OK) {
        return NGX_ERROR;
    }

    /* event streams must reach the client as they come */
    r->gzip_tested = 1;
    r->gzip_ok = 0;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_send_cooling(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    time_t                 secs;
    ngx_str_t              value;
    ngx_http_llm_error_t   err;

    secs = (time_t) ((ctx->wait + 999) / 1000);

    p = ngx_pnalloc(r->pool, NGX_TIME_T_LEN + 120 + ctx->model.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    value.data = p;
    value.len = ngx_sprintf(p, "%T", secs) - p;

    if (ngx_http_llm_add_header(r, "Retry-After", &value) != NGX_OK) {
        return NGX_ERROR;
    }

    p += value.len;

    ngx_http_llm_error_set(&err, NGX_HTTP_TOO_MANY_REQUESTS,
                           "rate_limit_error", "rate_limit_exceeded", NULL,
                           NULL);

    err.message.data = p;
    err.message.len = ngx_sprintf(p, "Every provider of model `%V` asked "
                                  "for a pause. Please try again in %Ts.",
                                  &ctx->model, secs)
                      - p;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "llm: every target of \"%V\" is cooling down, "
                  "answered 429",
                  ngx_http_llm_escape(r->pool, &ctx->model, 1));

    return ngx_http_llm_send_error(r, ctx, NULL, &err);
}


ngx_int_t
ngx_http_llm_send_answer(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_str_t *body)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t   out;

    if (r->headers_out.status == 0) {
        r->headers_out.status = NGX_HTTP_OK;
    }

    r->headers_out.content_length_n = body->len;
    ngx_str_set(&r->headers_out.content_type, "application/json");
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_llm_send_header(r, ctx, a);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->memory = body->len ? 1 : 0;
    b->last_buf = 1;
    b->last_in_chain = 1;

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


ngx_int_t
ngx_http_llm_stream_tail(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_http_llm_error_t *err)
{
    json_t               *chunk, *delta, *usage;
    ngx_str_t             s;
    ngx_http_llm_call_t  *call;

    call = &a->call;

    if (err) {
        if (ngx_http_llm_error_json(r->pool, err, &s) != NGX_OK
            || ngx_http_llm_stream_emit_raw(call, &s) != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ctx->include_usage && call->usage.prompt >= 0) {
        chunk = ngx_http_llm_chunk_new(call, &delta);
        if (chunk == NULL) {
            return NGX_ERROR;
        }

        usage = json_pack("{s:I,s:I,s:I}",
                          "prompt_tokens", (json_int_t) call->usage.prompt,
                          "completion_tokens",
                          (json_int_t) ngx_max(call->usage.completion, 0),
                          "total_tokens",
                          (json_int_t) (call->usage.prompt
                                        + ngx_max(call->usage.completion, 0)));

        if (usage == NULL
            || json_object_set_new(chunk, "choices", json_array()) != 0
            || json_object_set_new(chunk, "usage", usage) != 0)
        {
            json_decref(chunk);
            return NGX_ERROR;
        }

        if (ngx_http_llm_stream_emit(call, chunk) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&s, "[DONE]");

    if (ngx_http_llm_stream_emit_raw(call, &s) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_stream_send(&ctx->out, r, ngx_http_output_filter, 1);
}


void
ngx_http_llm_error_set(ngx_http_llm_error_t *err, ngx_uint_t status,
    char *type, char *code, char *param, ngx_str_t *message)
{
    err->status = status;

    err->type.data = (u_char *) type;
    err->type.len = ngx_strlen(type);

    if (code) {
        err->code.data = (u_char *) code;
        err->code.len = ngx_strlen(code);

    } else {
        ngx_str_null(&err->code);
    }

    if (param) {
        err->param.data = (u_char *) param;
        err->param.len = ngx_strlen(param);

    } else {
        ngx_str_null(&err->param);
    }

    if (message) {
        err->message = *message;

    } else {
        ngx_str_null(&err->message);
    }
}


ngx_int_t
ngx_http_llm_error_json(ngx_pool_t *pool, ngx_http_llm_error_t *err,
    ngx_str_t *out)
{
    json_t     *root;
    ngx_int_t   rc;

    root = json_pack("{s:{s:s%,s:s%,s:o,s:o}}",
                     "error",
                     "message", err->message.data ? (char *) err->message.data
                                                  : "",
                     err->message.len,
                     "type", (char *) err->type.data, err->type.len,
                     "param", err->param.len
                              ? ngx_http_llm_json_str(&err->param)
                              : json_null(),
                     "code", err->code.len
                             ? ngx_http_llm_json_str(&err->code)
                             : json_null());
    if (root == NULL) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_json_dump(pool, root, out);

    json_decref(root);

    return rc;
}


ngx_int_t
ngx_http_llm_send_error(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_http_llm_error_t *err)
{
    ngx_str_t                body;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h, *copy;
    ngx_uint_t               i;

    if (ngx_http_llm_error_json(r->pool, err, &body) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a provider's pause request is passed on to the client */

    if (a && a->sr && err->status == NGX_HTTP_TOO_MANY_REQUESTS) {
        part = &a->sr->headers_out.headers.part;
        h = part->elts;

        for (i = 0; /* void */; i++) {

            if (i >= part->nelts) {
                if (part->next == NULL) {
                    break;
                }

                part = part->next;
                h = part->elts;
                i = 0;
            }

            if (h[i].hash == 0) {
                continue;
            }

            if ((h[i].key.len == 11
                 && ngx_strncasecmp(h[i].key.data, (u_char *) "retry-after",
                                    11) == 0)
                || (h[i].key.len > 12
                    && ngx_strncasecmp(h[i].key.data,
                                       (u_char *) "x-ratelimit-", 12) == 0))
            {
                copy = ngx_list_push(&r->headers_out.headers);
                if (copy == NULL) {
                    return NGX_ERROR;
                }

                *copy = h[i];
            }
        }
    }

    r->headers_out.status = err->status;

    return ngx_http_llm_send_answer(r, ctx, a, &body);
}
