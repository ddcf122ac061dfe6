
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


static ngx_int_t ngx_http_llm_openai_build(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_azure_build(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_openai_body(ngx_http_llm_call_t *call,
    ngx_uint_t keep_model);
static void ngx_http_llm_openai_usage(ngx_http_llm_call_t *call,
    json_t *usage);
static ngx_int_t ngx_http_llm_openai_parse(ngx_http_llm_call_t *call,
    json_t *in, json_t **out);
static ngx_int_t ngx_http_llm_openai_event(ngx_http_llm_call_t *call,
    ngx_str_t *event, ngx_str_t *data);
static void ngx_http_llm_openai_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err);


ngx_http_llm_driver_t  ngx_http_llm_openai_driver = {
    ngx_string("openai"),
    ngx_string("Authorization"),
    ngx_string("Bearer "),
    NULL,
    ngx_http_llm_openai_build,
    ngx_http_llm_openai_parse,
    ngx_http_llm_openai_event,
    ngx_http_llm_openai_error
};


ngx_http_llm_driver_t  ngx_http_llm_azure_driver = {
    ngx_string("azure"),
    ngx_string("api-key"),
    ngx_null_string,
    NULL,
    ngx_http_llm_azure_build,
    ngx_http_llm_openai_parse,
    ngx_http_llm_openai_event,
    ngx_http_llm_openai_error
};


static ngx_int_t
ngx_http_llm_openai_build(ngx_http_llm_call_t *call)
{
    if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        ngx_str_set(&call->uri, "v1/embeddings");

    } else {
        ngx_str_set(&call->uri, "v1/chat/completions");
    }

    return ngx_http_llm_openai_body(call, 1);
}


static ngx_int_t
ngx_http_llm_azure_build(ngx_http_llm_call_t *call)
{
    u_char     *p;
    ngx_str_t  *ver;

    /* the deployment is named in the path; the body keeps no model */

    p = ngx_pnalloc(call->pool, sizeof("openai/deployments//chat/completions")
                                - 1 + call->model.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->uri.data = p;
    p = ngx_sprintf(p, "openai/deployments/%V/%s", &call->model,
                    call->endpoint == NGX_HTTP_LLM_EMBEDDINGS
                    ? "embeddings" : "chat/completions");
    call->uri.len = p - call->uri.data;

    ver = &call->provider->api_version;

    p = ngx_pnalloc(call->pool, sizeof("api-version=") - 1 + ver->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->args.data = p;
    p = ngx_sprintf(p, "api-version=%V", ver);
    call->args.len = p - call->args.data;

    return ngx_http_llm_openai_body(call, 0);
}


static ngx_int_t
ngx_http_llm_openai_body(ngx_http_llm_call_t *call, ngx_uint_t keep_model)
{
    json_t  *body, *opts;

    /* a shallow copy: only top-level members are replaced */

    body = json_copy(call->request);
    if (body == NULL) {
        return NGX_ERROR;
    }

    if (keep_model) {
        if (json_object_set_new(body, "model",
                                ngx_http_llm_json_str(&call->model))
            != 0)
        {
            goto failed;
        }

    } else {
        json_object_del(body, "model");
    }

    if (call->stream) {

        /* usage is always asked for: the core reports it, and strips the
         * usage chunk if the client did not ask */

        opts = json_pack("{sb}", "include_usage", 1);

        if (opts == NULL
            || json_object_set_new(body, "stream_options", opts) != 0)
        {
            goto failed;
        }
    }

    call->body = body;

    return NGX_OK;

failed:

    json_decref(body);
    return NGX_ERROR;
}


static void
ngx_http_llm_openai_usage(ngx_http_llm_call_t *call, json_t *usage)
{
    json_t  *v;

    if (!json_is_object(usage)) {
        return;
    }

    v = json_object_get(usage, "prompt_tokens");
    if (json_is_integer(v)) {
        call->usage.prompt = json_integer_value(v);
    }

    v = json_object_get(usage, "completion_tokens");
    if (json_is_integer(v)) {
        call->usage.completion = json_integer_value(v);

    } else if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        call->usage.completion = 0;
    }

    v = json_object_get(json_object_get(usage, "prompt_tokens_details"),
                        "cached_tokens");
    if (json_is_integer(v)) {
        call->usage.cached = json_integer_value(v);
    }
}


static ngx_int_t
ngx_http_llm_openai_parse(ngx_http_llm_call_t *call, json_t *in, json_t **out)
{
    const char  *key;

    key = (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) ? "data" : "choices";

    if (!json_is_object(in) || !json_is_array(json_object_get(in, key))) {
        return NGX_DECLINED;
    }

    ngx_http_llm_openai_usage(call, json_object_get(in, "usage"));

    *out = NULL;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_openai_event(ngx_http_llm_call_t *call, ngx_str_t *event,
    ngx_str_t *data)
{
    json_t        *chunk, *choices, *v;
    ngx_int_t      rc;
    ngx_str_t      s;
    json_error_t   jerr;

    if (data->len == 6 && ngx_strncmp(data->data, "[DONE]", 6) == 0) {
        return NGX_DONE;
    }

    chunk = json_loadb((char *) data->data, data->len, 0, &jerr);

    if (!json_is_object(chunk)) {
        json_decref(chunk);
        return NGX_DECLINED;
    }

    v = json_object_get(chunk, "error");

    if (v) {
        /* an error in the middle of a stream goes to the client as is */
        rc = ngx_http_llm_stream_emit_raw(call, data);
        json_decref(chunk);
        return rc == NGX_OK ? NGX_DONE : NGX_ERROR;
    }

    if (call->id.len == 0) {
        ngx_http_llm_json_get_str(chunk, "id", &s);

        if (s.len) {
            call->id.data = ngx_pstrdup(call->pool, &s);
            if (call->id.data == NULL) {
                json_decref(chunk);
                return NGX_ERROR;
            }

            call->id.len = s.len;
        }

        ngx_http_llm_json_get_str(chunk, "model", &s);

        if (s.len) {
            call->resp_model.data = ngx_pstrdup(call->pool, &s);
            if (call->resp_model.data == NULL) {
                json_decref(chunk);
                return NGX_ERROR;
            }

            call->resp_model.len = s.len;
        }

        v = json_object_get(chunk, "created");
        if (json_is_integer(v)) {
            call->created = json_integer_value(v);
        }
    }

    v = json_object_get(chunk, "usage");

    if (json_is_object(v)) {
        ngx_http_llm_openai_usage(call, v);
    }

    choices = json_object_get(chunk, "choices");

    if (json_is_array(choices) && json_array_size(choices) == 0) {
        /* the usage chunk: the core sends its own if the client asked */
        json_decref(chunk);
        return NGX_OK;
    }

    if (call->finish_reason.len == 0) {
        ngx_http_llm_json_get_str(json_array_get(choices, 0),
                                  "finish_reason", &s);

        if (s.len) {
            call->finish_reason.data = ngx_pstrdup(call->pool, &s);
            if (call->finish_reason.data == NULL) {
                json_decref(chunk);
                return NGX_ERROR;
            }

            call->finish_reason.len = s.len;
        }
    }

    if (json_is_object(v)) {
        /* usage riding on a content chunk: keep it from the client */
        json_object_del(chunk, "usage");
        call->role_sent = 1;
        return ngx_http_llm_stream_emit(call, chunk);
    }

    json_decref(chunk);
    call->role_sent = 1;

    return ngx_http_llm_stream_emit_raw(call, data);
}


static void
ngx_http_llm_openai_error(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_str_t *body, ngx_http_llm_error_t *err)
{
    json_t        *root, *e, *v;
    ngx_str_t      s;
    json_error_t   jerr;

    ngx_http_llm_error_defaults(status, err);

    root = json_loadb((char *) body->data, body->len, 0, &jerr);

    e = json_object_get(root, "error");

    if (json_is_object(e)) {

        ngx_http_llm_json_get_str(e, "message", &s);
        err->message.data = ngx_pstrdup(call->pool, &s);
        err->message.len = err->message.data ? s.len : 0;

        ngx_http_llm_json_get_str(e, "type", &s);
        if (s.len) {
            err->type.data = ngx_pstrdup(call->pool, &s);
            err->type.len = err->type.data ? s.len : 0;
        }

        v = json_object_get(e, "code");

        if (json_is_string(v)) {
            ngx_http_llm_json_get_str(e, "code", &s);
            err->code.data = ngx_pstrdup(call->pool, &s);
            err->code.len = err->code.data ? s.len : 0;
        }

        ngx_http_llm_json_get_str(e, "param", &s);
        if (s.len) {
            err->param.data = ngx_pstrdup(call->pool, &s);
            err->param.len = err->param.data ? s.len : 0;
        }

    } else if (json_is_string(e)) {
        /* some compatible servers send {"error": "text"} */
        ngx_http_llm_json_get_str(root, "error", &s);
        err->message.data = ngx_pstrdup(call->pool, &s);
        err->message.len = err->message.data ? s.len : 0;
    }

    json_decref(root);
}
