
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * The client's event stream (ngx_http_llm_stream_t): events are written
 * into one pending buffer, sent with a flush, and the buffers are reused
 * once the client has taken them; ngx_http_llm_stream_send() says
 * whether it has, so that the caller can stop reading what it
 * translates.  The chunk writers below are what drivers call.
 */


static ngx_int_t ngx_http_llm_stream_reserve(ngx_http_llm_stream_t *s,
    size_t n);
static int ngx_http_llm_stream_dump_cb(const char *buffer, size_t size,
    void *data);
static void ngx_http_llm_stream_prefix(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o);
static void ngx_http_llm_stream_error_write(ngx_http_llm_out_t *o,
    ngx_str_t *type, ngx_str_t *code, ngx_str_t *message);
static void ngx_http_llm_stream_head(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o);
static ngx_int_t ngx_http_llm_stream_chunk(ngx_http_llm_call_t *call,
    json_int_t index, ngx_str_t *delta, const char *finish);
static void ngx_http_llm_stream_chunk_write(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, json_int_t index, ngx_str_t *delta,
    const char *finish);


void
ngx_http_llm_stream_init(ngx_http_llm_stream_t *s, ngx_pool_t *pool)
{
    ngx_memzero(s, sizeof(ngx_http_llm_stream_t));

    s->pool = pool;
}


ngx_int_t
ngx_http_llm_stream_send(ngx_http_llm_stream_t *s, ngx_http_request_t *r,
    ngx_http_output_body_filter_pt output, ngx_uint_t last)
{
    ngx_int_t     rc;
    ngx_buf_t    *b;
    ngx_chain_t  *out;

    if (s->pend == NULL && s->busy == NULL) {
        return NGX_OK;
    }

    out = s->pend;
    s->pend = NULL;

    if (out) {
        out->next = NULL;

        b = out->buf;
        b->flush = 1;

        if (last) {
            b->last_buf = 1;
            b->last_in_chain = 1;
        }
    }

    rc = output(r, out);

    ngx_chain_update_chains(s->pool, &s->free, &s->busy, &out,
                            (ngx_buf_tag_t) &ngx_http_llm_gateway_module);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    return s->busy ? NGX_AGAIN : NGX_OK;
}


ngx_int_t
ngx_http_llm_stream_data(ngx_http_llm_stream_t *s, ngx_str_t *data)
{
    ngx_buf_t  *b;

    if (ngx_http_llm_stream_reserve(s, data->len + sizeof("data: \n\n"))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    b = s->pend->buf;
    b->last = ngx_cpymem(b->last, "data: ", sizeof("data: ") - 1);
    b->last = ngx_cpymem(b->last, data->data, data->len);
    *b->last++ = '\n';
    *b->last++ = '\n';

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_stream_reserve(ngx_http_llm_stream_t *s, size_t n)
{
    size_t        size;
    u_char       *p;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (s->pend == NULL) {
        cl = ngx_chain_get_free_buf(s->pool, &s->free);
        if (cl == NULL) {
            return NGX_ERROR;
        }

        b = cl->buf;
        b->tag = (ngx_buf_tag_t) &ngx_http_llm_gateway_module;
        b->temporary = 1;
        b->flush = 0;
        b->last_buf = 0;
        b->last_in_chain = 0;
        b->pos = b->start;
        b->last = b->start;

        s->pend = cl;
    }

    b = s->pend->buf;

    if ((size_t) (b->end - b->last) >= n) {
        return NGX_OK;
    }

    size = ngx_max((size_t) (b->end - b->start) * 2, (b->last - b->pos) + n);
    size = ngx_max(size, 4096);

    p = ngx_pnalloc(s->pool, size);
    if (p == NULL) {
        return NGX_ERROR;
    }

    b->last = ngx_cpymem(p, b->pos, b->last - b->pos);
    b->start = p;
    b->pos = p;
    b->end = p + size;

    return NGX_OK;
}


static int
ngx_http_llm_stream_dump_cb(const char *buffer, size_t size, void *data)
{
    ngx_http_llm_stream_t *s = data;

    ngx_buf_t  *b;

    if (ngx_http_llm_stream_reserve(s, size) != NGX_OK) {
        return -1;
    }

    b = s->pend->buf;
    b->last = ngx_cpymem(b->last, buffer, size);

    return 0;
}


ngx_int_t
ngx_http_llm_stream_emit_raw(ngx_http_llm_call_t *call, ngx_str_t *data)
{
    if (call->acc && ngx_http_llm_acc_chunk(call->acc, data) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_stream_data(call->out, data);
}


ngx_int_t
ngx_http_llm_stream_delta(ngx_http_llm_call_t *call, json_int_t index,
    ngx_str_t *delta, const char *finish)
{
    return ngx_http_llm_stream_chunk(call, index, delta, finish);
}


ngx_int_t
ngx_http_llm_stream_text(ngx_http_llm_call_t *call, ngx_str_t *text)
{
    ngx_buf_t           *b;
    ngx_http_llm_out_t   o;

    static u_char  suffix[] = "},\"finish_reason\":null}]}\n\n";

    if (ngx_http_llm_stream_role(call) != NGX_OK) {
        return NGX_ERROR;
    }

    /* output tokens, estimated from the text (quotes included): about 4
     * bytes of ordinary text each */

    call->produced += ngx_max((ngx_int_t) (text->len - 2) / 4, 1);

    if (call->acc && ngx_http_llm_acc_text(call->acc, text) != NGX_OK) {
        return NGX_ERROR;
    }

    /* the chunk is written, not built: its fields in the order of
     * ngx_http_llm_chunk_new(); the prefix is the same for every text
     * chunk of the stream */

    if (call->chunk_prefix.len == 0) {
        o.pos = NULL;
        o.len = 0;

        ngx_http_llm_stream_prefix(call, &o);

        call->chunk_prefix.data = ngx_http_llm_out_alloc(&o, call->pool);
        if (call->chunk_prefix.data == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_stream_prefix(call, &o);

        call->chunk_prefix.len = o.pos - call->chunk_prefix.data;
    }

    if (ngx_http_llm_stream_reserve(call->out,
                                    call->chunk_prefix.len + text->len
                                    + sizeof(suffix) - 1)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    b = call->out->pend->buf;
    b->last = ngx_cpymem(b->last, call->chunk_prefix.data,
                         call->chunk_prefix.len);
    b->last = ngx_cpymem(b->last, text->data, text->len);
    b->last = ngx_cpymem(b->last, suffix, sizeof(suffix) - 1);

    return NGX_OK;
}


static void
ngx_http_llm_stream_prefix(ngx_http_llm_call_t *call, ngx_http_llm_out_t *o)
{
    ngx_http_llm_stream_head(call, o);
    ngx_http_llm_out_lit(o, "0,\"delta\":{\"content\":");
}


/* a chunk up to its choice's index: the fields of ngx_http_llm_chunk_new() */

static void
ngx_http_llm_stream_head(ngx_http_llm_call_t *call, ngx_http_llm_out_t *o)
{
    ngx_str_t  *model;

    model = call->resp_model.len ? &call->resp_model : &call->model;

    ngx_http_llm_out_lit(o, "data: {\"id\":");
    ngx_http_llm_out_string(o, &call->id);
    ngx_http_llm_out_lit(o, ",\"object\":\"chat.completion.chunk\","
                            "\"created\":");
    ngx_http_llm_out_int(o, call->created);
    ngx_http_llm_out_lit(o, ",\"model\":");
    ngx_http_llm_out_string(o, model);
    ngx_http_llm_out_lit(o, ",\"choices\":[{\"index\":");
}


ngx_int_t
ngx_http_llm_stream_emit(ngx_http_llm_call_t *call, json_t *chunk)
{
    int         rc;
    ngx_str_t   text;
    ngx_buf_t  *b;

    if (chunk == NULL) {
        return NGX_ERROR;
    }

    call->produced++;

    if (call->acc) {
        if (ngx_http_llm_json_dump(call->pool, chunk, &text) != NGX_OK
            || ngx_http_llm_acc_chunk(call->acc, &text) != NGX_OK)
        {
            json_decref(chunk);
            return NGX_ERROR;
        }
    }

    if (ngx_http_llm_stream_reserve(call->out, 512) != NGX_OK) {
        json_decref(chunk);
        return NGX_ERROR;
    }

    b = call->out->pend->buf;
    b->last = ngx_cpymem(b->last, "data: ", sizeof("data: ") - 1);

    rc = json_dump_callback(chunk, ngx_http_llm_stream_dump_cb, call->out,
                            JSON_COMPACT | JSON_REAL_PRECISION(10));

    json_decref(chunk);

    if (rc != 0 || ngx_http_llm_stream_reserve(call->out, 2) != NGX_OK) {
        return NGX_ERROR;
    }

    b = call->out->pend->buf;
    *b->last++ = '\n';
    *b->last++ = '\n';

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_stream_role(ngx_http_llm_call_t *call)
{
    static ngx_str_t  delta = ngx_string("{\"role\":\"assistant\","
                                         "\"content\":\"\"}");

    if (call->role_sent) {
        return NGX_OK;
    }

    if (call->id.len == 0
        && ngx_http_llm_make_id(call, "chatcmpl-", &call->id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    call->role_sent = 1;

    return ngx_http_llm_stream_chunk(call, 0, &delta, NULL);
}


ngx_int_t
ngx_http_llm_stream_finish(ngx_http_llm_call_t *call, json_int_t index,
    const char *finish)
{
    static ngx_str_t  delta = ngx_string("{}");

    return ngx_http_llm_stream_chunk(call, index, &delta, finish);
}


/*
 * A chunk written, not built: its fields in the order of
 * ngx_http_llm_chunk_new(); delta is JSON, finish a word or NULL.
 */

static ngx_int_t
ngx_http_llm_stream_chunk(ngx_http_llm_call_t *call, json_int_t index,
    ngx_str_t *delta, const char *finish)
{
    ngx_buf_t           *b;
    ngx_http_llm_out_t   o;

    o.pos = NULL;
    o.len = 0;

    ngx_http_llm_stream_chunk_write(call, &o, index, delta, finish);

    if (ngx_http_llm_stream_reserve(call->out, o.len) != NGX_OK) {
        return NGX_ERROR;
    }

    b = call->out->pend->buf;
    o.pos = b->last;

    ngx_http_llm_stream_chunk_write(call, &o, index, delta, finish);

    b->last = o.pos;

    return NGX_OK;
}


static void
ngx_http_llm_stream_chunk_write(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, json_int_t index, ngx_str_t *delta,
    const char *finish)
{
    ngx_http_llm_stream_head(call, o);
    ngx_http_llm_out_int(o, index);
    ngx_http_llm_out_lit(o, ",\"delta\":");
    ngx_http_llm_out_str(o, delta);
    ngx_http_llm_out_lit(o, ",\"finish_reason\":");

    if (finish) {
        ngx_http_llm_out_lit(o, "\"");
        ngx_http_llm_out_raw(o, finish, ngx_strlen(finish));
        ngx_http_llm_out_lit(o, "\"");

    } else {
        ngx_http_llm_out_lit(o, "null");
    }

    ngx_http_llm_out_lit(o, "}]}\n\n");
}


ngx_int_t
ngx_http_llm_stream_error(ngx_http_llm_call_t *call, ngx_str_t *type,
    ngx_str_t *code, ngx_str_t *message)
{
    ngx_buf_t           *b;
    ngx_http_llm_out_t   o;

    ngx_log_error(NGX_LOG_ERR, call->log, 0,
                  "llm provider \"%V\" model \"%V\" stream error: %V: %V",
                  &call->provider->name,
                  ngx_http_llm_escape(call->pool, &call->model, 1),
                  ngx_http_llm_escape(call->pool, code->len ? code : type, 1),
                  ngx_http_llm_escape(call->pool, message, 1));

    o.pos = NULL;
    o.len = 0;

    ngx_http_llm_stream_error_write(&o, type, code, message);

    if (ngx_http_llm_stream_reserve(call->out, o.len) != NGX_OK) {
        return NGX_ERROR;
    }

    b = call->out->pend->buf;
    o.pos = b->last;

    ngx_http_llm_stream_error_write(&o, type, code, message);

    b->last = o.pos;

    return NGX_DONE;
}


static void
ngx_http_llm_stream_error_write(ngx_http_llm_out_t *o, ngx_str_t *type,
    ngx_str_t *code, ngx_str_t *message)
{
    ngx_http_llm_out_lit(o, "data: {\"error\":{\"message\":");
    ngx_http_llm_out_string(o, message);
    ngx_http_llm_out_lit(o, ",\"type\":");
    ngx_http_llm_out_string(o, type);
    ngx_http_llm_out_lit(o, ",\"param\":null,\"code\":");

    if (code->len) {
        ngx_http_llm_out_string(o, code);

    } else {
        ngx_http_llm_out_lit(o, "null");
    }

    ngx_http_llm_out_lit(o, "}}\n\n");
}
