
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_driver.h"


typedef struct {
    ngx_int_t                   ntools;
    unsigned                    tool_calls:1;
} ngx_http_llm_gemini_stream_t;


static ngx_int_t ngx_http_llm_gemini_build_request(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_gemini_uri(ngx_http_llm_call_t *call,
    ngx_str_t *model, const char *method);
static ngx_int_t ngx_http_llm_gemini_system(ngx_http_llm_call_t *call,
    json_t *body, ngx_str_t *text);
static ngx_int_t ngx_http_llm_gemini_function_call(json_t *parts,
    ngx_str_t *id, ngx_str_t *name, json_t *args);
static ngx_int_t ngx_http_llm_gemini_tool_result(ngx_http_llm_call_t *call,
    json_t *messages, size_t n, json_t *parts);
static ngx_int_t ngx_http_llm_gemini_text_part(json_t *parts, u_char *text,
    size_t len);
static ngx_int_t ngx_http_llm_gemini_function_part(json_t *parts,
    const char *type, ngx_str_t *name, const char *key, json_t *value);
static ngx_int_t ngx_http_llm_gemini_image_part(ngx_http_llm_call_t *call,
    json_t *part, json_t *parts);
static void ngx_http_llm_gemini_image_type(ngx_str_t *url, ngx_str_t *type);
static ngx_int_t ngx_http_llm_gemini_config(ngx_http_llm_call_t *call,
    json_t *req, json_t *body);
static ngx_int_t ngx_http_llm_gemini_tools(ngx_http_llm_call_t *call,
    json_t *req, json_t *body);
static void ngx_http_llm_gemini_schema(json_t *schema);
static ngx_int_t ngx_http_llm_gemini_tool_config(ngx_http_llm_call_t *call,
    json_t *req, json_t *body);
static ngx_int_t ngx_http_llm_gemini_embed_request(ngx_http_llm_call_t *call,
    json_t *req, ngx_str_t *model);
static json_t *ngx_http_llm_gemini_embed_one(ngx_str_t *name, json_t *text,
    json_t *dims);

static ngx_int_t ngx_http_llm_gemini_parse_response(ngx_http_llm_call_t *call,
    json_t *in, json_t **out);
static ngx_int_t ngx_http_llm_gemini_choice(ngx_http_llm_call_t *call,
    json_t *cand, size_t n, json_t *choices);
static json_t *ngx_http_llm_gemini_tool_call(ngx_http_llm_call_t *call,
    json_t *fc);
static json_t *ngx_http_llm_gemini_usage(ngx_http_llm_call_t *call,
    json_t *meta);
static const char *ngx_http_llm_gemini_finish(ngx_str_t *reason);
static ngx_int_t ngx_http_llm_gemini_embed_response(
    ngx_http_llm_call_t *call, json_t *in, json_t **out);
static json_t *ngx_http_llm_gemini_base64(ngx_http_llm_call_t *call,
    json_t *values);

static ngx_int_t ngx_http_llm_gemini_parse_stream_event(
    ngx_http_llm_call_t *call, ngx_str_t *event, ngx_str_t *data);
static ngx_int_t ngx_http_llm_gemini_text_event(ngx_http_llm_call_t *call,
    ngx_str_t *data);
static ngx_int_t ngx_http_llm_gemini_stream_candidate(
    ngx_http_llm_call_t *call, json_t *cand, size_t n);
static ngx_int_t ngx_http_llm_gemini_stream_error(ngx_http_llm_call_t *call,
    json_t *error);

static void ngx_http_llm_gemini_map_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err);


static ngx_http_llm_turns_t  ngx_http_llm_gemini_turns = {
    .key = "parts",
    .assistant = "model",
    .system = ngx_http_llm_gemini_system,
    .text = ngx_http_llm_gemini_text_part,
    .image = ngx_http_llm_gemini_image_part,
    .tool_call = ngx_http_llm_gemini_function_call,
    .tool_result = ngx_http_llm_gemini_tool_result
};


ngx_http_llm_driver_t  ngx_http_llm_gemini_driver = {
    .name = ngx_string("gemini"),
    .auth_header = ngx_string("x-goog-api-key"),
    .framing = NGX_HTTP_LLM_FRAMING_SSE,
    .build_request = ngx_http_llm_gemini_build_request,
    .parse_response = ngx_http_llm_gemini_parse_response,
    .parse_stream_event = ngx_http_llm_gemini_parse_stream_event,
    .map_error = ngx_http_llm_gemini_map_error
};


static ngx_int_t
ngx_http_llm_gemini_build_request(ngx_http_llm_call_t *call)
{
    json_t     *req, *body, *contents;
    ngx_int_t   rc;
    ngx_str_t   model;

    model = call->model;

    if (model.len > 7 && ngx_strncmp(model.data, "models/", 7) == 0) {
        model.data += 7;
        model.len -= 7;
    }

    /* the model name goes into the path */

    if (ngx_http_llm_path_name(&model) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (gemini): invalid model name "
                      "\"%V\"", &call->provider->name,
                      ngx_http_llm_escape(call->pool, &call->model, 1));
        return NGX_DECLINED;
    }

    if (call->endpoint != NGX_HTTP_LLM_CHAT
        && call->endpoint != NGX_HTTP_LLM_EMBEDDINGS)
    {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (gemini): endpoint not supported",
                      &call->provider->name);
        return NGX_DECLINED;
    }

    req = ngx_http_llm_call_tree(call);
    if (req == NULL) {
        return NGX_ABORT;
    }

    if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        return ngx_http_llm_gemini_embed_request(call, req, &model);
    }

    body = json_object();
    if (body == NULL) {
        return NGX_ERROR;
    }

    contents = json_array();
    if (json_object_set_new(body, "contents", contents) != 0) {
        json_decref(body);
        return NGX_ERROR;
    }

    rc = ngx_http_llm_turns(call, req, body, contents,
                            &ngx_http_llm_gemini_turns);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_gemini_config(call, req, body);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_gemini_tools(call, req, body);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_gemini_uri(call, &model,
                                     call->stream ? ":streamGenerateContent"
                                                  : ":generateContent");
    }

    if (rc != NGX_OK) {
        json_decref(body);
        return rc;
    }

    if (call->stream) {
        ngx_str_set(&call->args, "alt=sse");

    } else {
        ngx_str_null(&call->args);
    }

    call->body = body;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_gemini_uri(ngx_http_llm_call_t *call, ngx_str_t *model,
    const char *method)
{
    u_char  *p;

    p = ngx_pnalloc(call->pool, sizeof("v1beta/models/") - 1 + model->len
                                + ngx_strlen(method));
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->uri.data = p;
    call->uri.len = ngx_sprintf(p, "v1beta/models/%V%s", model, method) - p;

    return NGX_OK;
}


/*
 * System and developer messages become systemInstruction; the rest
 * become "user" and "model" turns of parts, consecutive turns of one
 * role merged (tool results go back as user turns).
 */

static ngx_int_t
ngx_http_llm_gemini_system(ngx_http_llm_call_t *call, json_t *body,
    ngx_str_t *text)
{
    json_t  *system, *parts;

    system = json_object_get(body, "systemInstruction");

    if (system == NULL) {
        parts = json_array();
        system = json_object();

        if (json_object_set_new(system, "parts", parts) != 0) {
            json_decref(system);
            return NGX_ERROR;
        }

        if (json_object_set_new(body, "systemInstruction", system) != 0) {
            return NGX_ERROR;
        }
    }

    return ngx_http_llm_gemini_text_part(json_object_get(system, "parts"),
                                         text->data, text->len);
}


/* Gemini's functionCall has no id */

static ngx_int_t
ngx_http_llm_gemini_function_call(json_t *parts, ngx_str_t *id,
    ngx_str_t *name, json_t *args)
{
    return ngx_http_llm_gemini_function_part(parts, "functionCall", name,
                                             "args", args);
}


/*
 * Gemini matches a functionResponse to its call by function name; the
 * name is found at the assistant's tool call with the message's
 * tool_call_id.
 */

static ngx_int_t
ngx_http_llm_gemini_tool_result(ngx_http_llm_call_t *call, json_t *messages,
    size_t n, json_t *parts)
{
    size_t      i, j;
    json_t     *msg, *tc, *response;
    ngx_str_t   id, name, text, s;

    msg = json_array_get(messages, n);

    ngx_http_llm_json_get_str(msg, "tool_call_id", &id);
    ngx_str_null(&name);

    for (i = n; id.len && name.len == 0 && i-- > 0; /* void */) {

        json_array_foreach(json_object_get(json_array_get(messages, i),
                                           "tool_calls"),
                           j, tc)
        {
            ngx_http_llm_json_get_str(tc, "id", &s);

            if (s.len == id.len && ngx_strncmp(s.data, id.data, s.len) == 0)
            {
                ngx_http_llm_json_get_str(json_object_get(tc, "function"),
                                          "name", &name);
                break;
            }
        }
    }

    if (name.len == 0) {
        ngx_http_llm_json_get_str(msg, "name", &name);
    }

    if (name.len == 0) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (gemini): no tool call "
                      "\"%V\" for a tool message",
                      &call->provider->name,
                      ngx_http_llm_escape(call->pool, &id, 1));
        name = id;
    }

    if (ngx_http_llm_content_text(call->pool, json_object_get(msg, "content"),
                                  &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    response = NULL;

    if (text.len) {
        response = json_loadb((char *) text.data, text.len, 0, NULL);
    }

    if (!json_is_object(response)) {
        json_decref(response);

        response = json_object();
        if (json_object_set_new(response, "content",
                                ngx_http_llm_json_str(&text))
            != 0)
        {
            json_decref(response);
            return NGX_ERROR;
        }
    }

    return ngx_http_llm_gemini_function_part(parts, "functionResponse", &name,
                                             "response", response);
}


static ngx_int_t
ngx_http_llm_gemini_text_part(json_t *parts, u_char *text, size_t len)
{
    json_t  *part;

    if (len == 0) {
        return NGX_OK;
    }

    part = json_object();
    if (json_array_append_new(parts, part) != 0
        || json_object_set_new(part, "text", json_stringn((char *) text, len))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* a part {type: {key: value, name: name}} onto parts; steals value */

static ngx_int_t
ngx_http_llm_gemini_function_part(json_t *parts, const char *type,
    ngx_str_t *name, const char *key, json_t *value)
{
    json_t  *fn, *part;

    fn = json_object();
    if (json_object_set_new(fn, key, value) != 0
        || json_object_set_new(fn, "name", ngx_http_llm_json_str(name)) != 0)
    {
        json_decref(fn);
        return NGX_ERROR;
    }

    part = json_object();
    if (json_object_set_new(part, type, fn) != 0) {
        json_decref(part);
        return NGX_ERROR;
    }

    if (json_array_append_new(parts, part) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_gemini_image_part(ngx_http_llm_call_t *call, json_t *part,
    json_t *parts)
{
    json_t      *data, *out;
    ngx_str_t    url, type, b64;
    const char  *key;

    if (ngx_http_llm_image_url(part, &url, &type, &b64) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (gemini): image url "
                      "not understood, ignored", &call->provider->name);
        return NGX_OK;
    }

    data = json_object();
    if (data == NULL) {
        return NGX_ERROR;
    }

    if (type.len) {
        key = "inlineData";

        if (json_object_set_new(data, "mimeType",
                                ngx_http_llm_json_str(&type))
            != 0
            || json_object_set_new(data, "data", ngx_http_llm_json_str(&b64))
               != 0)
        {
            json_decref(data);
            return NGX_ERROR;
        }

    } else {
        ngx_http_llm_gemini_image_type(&url, &type);

        key = "fileData";

        if (json_object_set_new(data, "mimeType",
                                ngx_http_llm_json_str(&type))
            != 0
            || json_object_set_new(data, "fileUri",
                                   ngx_http_llm_json_str(&url))
               != 0)
        {
            json_decref(data);
            return NGX_ERROR;
        }
    }

    out = json_object();
    if (json_object_set_new(out, key, data) != 0) {
        json_decref(out);
        return NGX_ERROR;
    }

    if (json_array_append_new(parts, out) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* fileData needs a MIME type: guess it from the URL path's extension */

static void
ngx_http_llm_gemini_image_type(ngx_str_t *url, ngx_str_t *type)
{
    u_char     *p, *last, *dot;
    ngx_str_t   ext;

    last = url->data + url->len;

    for (p = url->data; p < last; p++) {
        if (*p == '?' || *p == '#') {
            break;
        }
    }

    last = p;
    dot = NULL;

    for (p = last; p > url->data; p--) {
        if (p[-1] == '.') {
            dot = p;
            break;
        }

        if (p[-1] == '/') {
            break;
        }
    }

    ngx_str_set(type, "image/*");

    if (dot == NULL) {
        return;
    }

    ext.data = dot;
    ext.len = last - dot;

    if (ext.len == 3 && ngx_strncasecmp(ext.data, (u_char *) "png", 3) == 0)
    {
        ngx_str_set(type, "image/png");

    } else if ((ext.len == 3
                && ngx_strncasecmp(ext.data, (u_char *) "jpg", 3) == 0)
               || (ext.len == 4
                   && ngx_strncasecmp(ext.data, (u_char *) "jpeg", 4) == 0))
    {
        ngx_str_set(type, "image/jpeg");

    } else if (ext.len == 3
               && ngx_strncasecmp(ext.data, (u_char *) "gif", 3) == 0)
    {
        ngx_str_set(type, "image/gif");

    } else if (ext.len == 4
               && ngx_strncasecmp(ext.data, (u_char *) "webp", 4) == 0)
    {
        ngx_str_set(type, "image/webp");

    } else if (ext.len == 4
               && ngx_strncasecmp(ext.data, (u_char *) "heic", 4) == 0)
    {
        ngx_str_set(type, "image/heic");

    } else if (ext.len == 4
               && ngx_strncasecmp(ext.data, (u_char *) "heif", 4) == 0)
    {
        ngx_str_set(type, "image/heif");
    }
}


static ngx_int_t
ngx_http_llm_gemini_config(ngx_http_llm_call_t *call, json_t *req,
    json_t *body)
{
    json_t      *config, *v, *stop;
    ngx_str_t    type;
    json_int_t   max;

    config = json_object();
    if (config == NULL) {
        return NGX_ERROR;
    }

    v = json_object_get(req, "temperature");

    if (json_is_number(v) && json_object_set(config, "temperature", v) != 0) {
        goto failed;
    }

    v = json_object_get(req, "top_p");

    if (json_is_number(v) && json_object_set(config, "topP", v) != 0) {
        goto failed;
    }

    max = ngx_http_llm_max_tokens(req);

    if (call->max_tokens > 0) {
        max = call->max_tokens;
    }

    if (max
        && json_object_set_new(config, "maxOutputTokens", json_integer(max))
           != 0)
    {
        goto failed;
    }

    if (ngx_http_llm_stop(req, &stop) != NGX_OK
        || (stop && json_object_set_new(config, "stopSequences", stop) != 0))
    {
        goto failed;
    }

    v = json_object_get(req, "n");

    if (json_is_integer(v) && json_integer_value(v) > 1
        && json_object_set(config, "candidateCount", v) != 0)
    {
        goto failed;
    }

    v = json_object_get(req, "seed");

    if (json_is_integer(v) && json_object_set(config, "seed", v) != 0) {
        goto failed;
    }

    ngx_http_llm_json_get_str(json_object_get(req, "response_format"), "type",
                              &type);

    if ((ngx_http_llm_str_is(&type, "json_object")
         || ngx_http_llm_str_is(&type, "json_schema"))
        && json_object_set_new(config, "responseMimeType",
                               json_string("application/json"))
           != 0)
    {
        goto failed;
    }

    if (json_object_size(config) == 0) {
        json_decref(config);
        return NGX_OK;
    }

    if (json_object_set_new(body, "generationConfig", config) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;

failed:

    json_decref(config);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_llm_gemini_tools(ngx_http_llm_call_t *call, json_t *req,
    json_t *body)
{
    size_t   i;
    json_t  *decls, *wrap, *tools, *d;

    decls = ngx_http_llm_tools(call, req, "parameters", 0);
    if (decls == NULL) {
        return NGX_ERROR;
    }

    if (json_array_size(decls) == 0) {
        json_decref(decls);
        return NGX_OK;
    }

    json_array_foreach(decls, i, d) {
        ngx_http_llm_gemini_schema(json_object_get(d, "parameters"));
    }

    wrap = json_object();
    if (json_object_set_new(wrap, "functionDeclarations", decls) != 0) {
        json_decref(wrap);
        return NGX_ERROR;
    }

    tools = json_array();
    if (json_array_append_new(tools, wrap) != 0) {
        json_decref(tools);
        return NGX_ERROR;
    }

    if (json_object_set_new(body, "tools", tools) != 0) {
        return NGX_ERROR;
    }

    return ngx_http_llm_gemini_tool_config(call, req, body);
}


/* Gemini's OpenAPI schema subset rejects these JSON Schema keywords */

static void
ngx_http_llm_gemini_schema(json_t *schema)
{
    size_t       i;
    json_t      *v;
    const char  *key;

    if (!json_is_object(schema)) {
        return;
    }

    json_object_del(schema, "$schema");
    json_object_del(schema, "additionalProperties");

    json_object_foreach(json_object_get(schema, "properties"), key, v) {
        ngx_http_llm_gemini_schema(v);
    }

    ngx_http_llm_gemini_schema(json_object_get(schema, "items"));

    json_array_foreach(json_object_get(schema, "anyOf"), i, v) {
        ngx_http_llm_gemini_schema(v);
    }
}


static ngx_int_t
ngx_http_llm_gemini_tool_config(ngx_http_llm_call_t *call, json_t *req,
    json_t *body)
{
    json_t      *tc, *fcc, *names;
    ngx_str_t    name;
    const char  *m;

    switch (ngx_http_llm_tool_choice(req, &name)) {

    case NGX_HTTP_LLM_TOOLS_REQUIRED:
    case NGX_HTTP_LLM_TOOLS_FUNCTION:
        m = "ANY";
        break;

    case NGX_HTTP_LLM_TOOLS_NONE:
        m = "NONE";
        break;

    case NGX_HTTP_LLM_TOOLS_AUTO:
        m = "AUTO";
        break;

    default:
        return NGX_OK;
    }

    fcc = json_object();
    if (json_object_set_new(fcc, "mode", json_string(m)) != 0) {
        json_decref(fcc);
        return NGX_ERROR;
    }

    if (name.len) {
        names = json_array();
        if (json_object_set_new(fcc, "allowedFunctionNames", names) != 0
            || json_array_append_new(names, ngx_http_llm_json_str(&name))
               != 0)
        {
            json_decref(fcc);
            return NGX_ERROR;
        }
    }

    tc = json_object();
    if (json_object_set_new(tc, "functionCallingConfig", fcc) != 0) {
        json_decref(tc);
        return NGX_ERROR;
    }

    if (json_object_set_new(body, "toolConfig", tc) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_gemini_embed_request(ngx_http_llm_call_t *call, json_t *req,
    ngx_str_t *model)
{
    u_char     *p;
    size_t      i;
    json_t     *input, *dims, *body, *requests, *one, *s;
    ngx_str_t   name;

    input = json_object_get(req, "input");
    dims = json_object_get(req, "dimensions");

    if (!json_is_integer(dims) || json_integer_value(dims) <= 0) {
        dims = NULL;
    }

    json_array_foreach(input, i, s) {
        if (!json_is_string(s)) {
            break;
        }
    }

    if (!json_is_string(input)
        && (!json_is_array(input) || json_array_size(input) == 0
            || i != json_array_size(input)))
    {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (gemini): embeddings input "
                      "must be a string or an array of strings",
                      &call->provider->name);
        return NGX_DECLINED;
    }

    p = ngx_pnalloc(call->pool, sizeof("models/") - 1 + model->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    name.data = p;
    name.len = ngx_sprintf(p, "models/%V", model) - p;

    if (json_is_string(input)) {
        body = ngx_http_llm_gemini_embed_one(&name, input, dims);
        if (body == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_llm_gemini_uri(call, model, ":embedContent") != NGX_OK) {
            json_decref(body);
            return NGX_ERROR;
        }

    } else {
        body = json_object();
        requests = json_array();

        if (json_object_set_new(body, "requests", requests) != 0) {
            json_decref(body);
            return NGX_ERROR;
        }

        json_array_foreach(input, i, s) {
            one = ngx_http_llm_gemini_embed_one(&name, s, dims);

            if (json_array_append_new(requests, one) != 0) {
                json_decref(body);
                return NGX_ERROR;
            }
        }

        if (ngx_http_llm_gemini_uri(call, model, ":batchEmbedContents")
            != NGX_OK)
        {
            json_decref(body);
            return NGX_ERROR;
        }
    }

    ngx_str_null(&call->args);
    call->body = body;

    return NGX_OK;
}


static json_t *
ngx_http_llm_gemini_embed_one(ngx_str_t *name, json_t *text, json_t *dims)
{
    json_t  *req, *content, *parts, *part;

    req = json_object();
    content = json_object();
    parts = json_array();
    part = json_object();

    if (json_object_set(part, "text", text) != 0
        || json_array_append(parts, part) != 0
        || json_object_set(content, "parts", parts) != 0
        || json_object_set(req, "content", content) != 0
        || json_object_set_new(req, "model", ngx_http_llm_json_str(name))
           != 0
        || (dims && json_object_set(req, "outputDimensionality", dims) != 0))
    {
        json_decref(part);
        json_decref(parts);
        json_decref(content);
        json_decref(req);
        return NULL;
    }

    json_decref(part);
    json_decref(parts);
    json_decref(content);

    return req;
}


static ngx_int_t
ngx_http_llm_gemini_parse_response(ngx_http_llm_call_t *call, json_t *in,
    json_t **out)
{
    size_t      i;
    json_t     *candidates, *cand, *res, *choices, *meta, *message;
    ngx_str_t   blocked, model;

    if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        return ngx_http_llm_gemini_embed_response(call, in, out);
    }

    candidates = json_object_get(in, "candidates");
    ngx_http_llm_json_get_str(json_object_get(in, "promptFeedback"),
                              "blockReason", &blocked);

    if (json_array_size(candidates) == 0 && blocked.len == 0) {
        return NGX_DECLINED;
    }

    if (call->id.len == 0
        && ngx_http_llm_make_id(call, "chatcmpl-", &call->id) != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_http_llm_json_get_str(in, "modelVersion", &model);

    if (ngx_http_llm_str_keep(call->pool, &call->resp_model, &model)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (model.len == 0) {
        model = call->model;
    }

    res = ngx_http_llm_completion_new(call, &call->id, &model, &choices);
    if (res == NULL) {
        return NGX_ERROR;
    }

    if (json_array_size(candidates) == 0) {
        ngx_str_set(&call->finish_reason, "content_filter");

        message = json_pack("{s:s, s:n}", "role", "assistant", "content");

        if (message == NULL
            || ngx_http_llm_choice_add(choices, 0, message, "content_filter")
               != NGX_OK)
        {
            goto failed;
        }
    }

    json_array_foreach(candidates, i, cand) {
        if (ngx_http_llm_gemini_choice(call, cand, i, choices) != NGX_OK) {
            goto failed;
        }
    }

    meta = json_object_get(in, "usageMetadata");

    if (json_is_object(meta)
        && json_object_set_new(res, "usage",
                               ngx_http_llm_gemini_usage(call, meta))
           != 0)
    {
        goto failed;
    }

    *out = res;

    return NGX_OK;

failed:

    json_decref(res);
    return NGX_ERROR;
}


static ngx_int_t
ngx_http_llm_gemini_choice(ngx_http_llm_call_t *call, json_t *cand, size_t n,
    json_t *choices)
{
    size_t       i;
    json_t      *parts, *part, *fc, *message, *calls, *v;
    ngx_str_t    text, reason;
    json_int_t   index;
    const char  *finish;

    parts = json_object_get(json_object_get(cand, "content"), "parts");

    if (ngx_http_llm_text_join(call->pool, parts, NULL, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    message = json_object();

    if (json_object_set_new(message, "role", json_string("assistant")) != 0
        || json_object_set_new(message, "content",
                               text.len ? ngx_http_llm_json_str(&text)
                                        : json_null())
           != 0)
    {
        json_decref(message);
        return NGX_ERROR;
    }

    calls = NULL;

    json_array_foreach(parts, i, part) {
        fc = json_object_get(part, "functionCall");

        if (!json_is_object(fc)) {
            continue;
        }

        if (calls == NULL) {
            calls = json_array();
            if (json_object_set_new(message, "tool_calls", calls) != 0) {
                json_decref(message);
                return NGX_ERROR;
            }
        }

        if (json_array_append_new(calls,
                                  ngx_http_llm_gemini_tool_call(call, fc))
            != 0)
        {
            json_decref(message);
            return NGX_ERROR;
        }
    }

    ngx_http_llm_json_get_str(cand, "finishReason", &reason);

    finish = ngx_http_llm_gemini_finish(&reason);

    if (calls && ngx_strcmp(finish, "stop") == 0) {
        finish = "tool_calls";
    }

    if (n == 0) {
        call->finish_reason.data = (u_char *) finish;
        call->finish_reason.len = ngx_strlen(finish);
    }

    v = json_object_get(cand, "index");
    index = json_is_integer(v) ? json_integer_value(v) : (json_int_t) n;

    return ngx_http_llm_choice_add(choices, index, message, finish);
}


/* an OpenAI tool call of a functionCall; Gemini gives no id, make one */

static json_t *
ngx_http_llm_gemini_tool_call(ngx_http_llm_call_t *call, json_t *fc)
{
    ngx_str_t  id, name;

    ngx_http_llm_json_get_str(fc, "id", &id);

    if (id.len == 0
        && ngx_http_llm_make_id(call, "call_", &id) != NGX_OK)
    {
        return NULL;
    }

    ngx_http_llm_json_get_str(fc, "name", &name);

    return ngx_http_llm_tool_call(call->pool, &id, &name,
                                  json_object_get(fc, "args"));
}


/* records usage into call->usage, returns it in OpenAI shape */

static json_t *
ngx_http_llm_gemini_usage(ngx_http_llm_call_t *call, json_t *meta)
{
    json_t      *cached, *thoughts, *total;
    json_int_t   prompt, completion;

    prompt = json_integer_value(json_object_get(meta, "promptTokenCount"));
    thoughts = json_object_get(meta, "thoughtsTokenCount");
    completion = json_integer_value(json_object_get(meta,
                                                    "candidatesTokenCount"))
                 + json_integer_value(thoughts);
    cached = json_object_get(meta, "cachedContentTokenCount");
    total = json_object_get(meta, "totalTokenCount");

    call->usage.prompt = prompt;
    call->usage.completion = completion;
    call->usage.cached = json_integer_value(cached);

    return ngx_http_llm_usage_json(prompt, completion,
                                   json_is_integer(total)
                                   ? json_integer_value(total)
                                   : prompt + completion,
                                   json_is_integer(cached)
                                   ? json_integer_value(cached) : -1,
                                   json_is_integer(thoughts)
                                   ? json_integer_value(thoughts) : -1);
}


static const char *
ngx_http_llm_gemini_finish(ngx_str_t *reason)
{
    if (ngx_http_llm_str_is(reason, "MAX_TOKENS")) {
        return "length";
    }

    if (ngx_http_llm_str_is(reason, "SAFETY")
        || ngx_http_llm_str_is(reason, "RECITATION")
        || ngx_http_llm_str_is(reason, "BLOCKLIST")
        || ngx_http_llm_str_is(reason, "PROHIBITED_CONTENT")
        || ngx_http_llm_str_is(reason, "SPII")
        || ngx_http_llm_str_is(reason, "IMAGE_SAFETY"))
    {
        return "content_filter";
    }

    return "stop";
}


static ngx_int_t
ngx_http_llm_gemini_embed_response(ngx_http_llm_call_t *call, json_t *in,
    json_t **out)
{
    size_t      i, n;
    json_t     *list, *values, *res, *data, *item, *usage;
    ngx_str_t   encoding;

    values = NULL;
    list = json_object_get(in, "embeddings");

    if (list == NULL) {
        values = json_object_get(json_object_get(in, "embedding"), "values");
        n = json_is_array(values) ? 1 : 0;

    } else {
        n = json_array_size(list);
    }

    if (n == 0) {
        return NGX_DECLINED;
    }

    for (i = 0; i < n; i++) {
        if (list) {
            values = json_object_get(json_array_get(list, i), "values");
        }

        if (!json_is_array(values)) {
            return NGX_DECLINED;
        }
    }

    ngx_http_llm_json_get_str(ngx_http_llm_call_tree(call), "encoding_format",
                              &encoding);

    res = json_object();
    data = json_array();

    if (json_object_set_new(res, "data", data) != 0) {
        json_decref(res);
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        if (list) {
            values = json_object_get(json_array_get(list, i), "values");
        }

        item = json_object();
        if (json_array_append_new(data, item) != 0
            || json_object_set_new(item, "object", json_string("embedding"))
               != 0
            || json_object_set_new(item, "index", json_integer(i)) != 0
            || json_object_set_new(item, "embedding",
                                   ngx_http_llm_str_is(&encoding, "base64")
                                   ? ngx_http_llm_gemini_base64(call, values)
                                   : json_incref(values))
               != 0)
        {
            json_decref(res);
            return NGX_ERROR;
        }
    }

    usage = json_object();
    if (json_object_set_new(res, "usage", usage) != 0
        || json_object_set_new(usage, "prompt_tokens", json_integer(0)) != 0
        || json_object_set_new(usage, "total_tokens", json_integer(0)) != 0
        || json_object_set_new(res, "object", json_string("list")) != 0
        || json_object_set_new(res, "model",
                               ngx_http_llm_json_str(&call->public_model))
           != 0)
    {
        json_decref(res);
        return NGX_ERROR;
    }

    /* Gemini does not count embedding tokens */

    call->usage.prompt = 0;
    call->usage.completion = 0;

    *out = res;

    return NGX_OK;
}


/* OpenAI's base64 encoding: the vector as little-endian float32 */

static json_t *
ngx_http_llm_gemini_base64(ngx_http_llm_call_t *call, json_t *values)
{
    u_char     *p;
    size_t      i;
    json_t     *v;
    uint32_t    bits;
    ngx_str_t   raw, b64;
    union {
        float     f;
        uint32_t  u;
    }           num;

    raw.len = 4 * json_array_size(values);
    raw.data = ngx_pnalloc(call->pool, raw.len);
    if (raw.data == NULL) {
        return NULL;
    }

    p = raw.data;

    json_array_foreach(values, i, v) {
        num.f = (float) json_number_value(v);
        bits = num.u;

        *p++ = (u_char) (bits & 0xff);
        *p++ = (u_char) ((bits >> 8) & 0xff);
        *p++ = (u_char) ((bits >> 16) & 0xff);
        *p++ = (u_char) (bits >> 24);
    }

    b64.data = ngx_pnalloc(call->pool, ngx_base64_encoded_length(raw.len));
    if (b64.data == NULL) {
        return NULL;
    }

    ngx_encode_base64(&b64, &raw);

    return ngx_http_llm_json_str(&b64);
}


/*
 * Every event is a whole GenerateContentResponse with the new text; the
 * stream has no end marker, the core ends it at the provider's EOF.  An
 * error object ends it early.
 */

static ngx_int_t
ngx_http_llm_gemini_parse_stream_event(ngx_http_llm_call_t *call,
    ngx_str_t *event, ngx_str_t *data)
{
    size_t                         i;
    json_t                        *root, *candidates, *cand, *meta, *usage;
    ngx_int_t                      rc;
    ngx_str_t                      blocked, model;
    ngx_http_llm_gemini_stream_t  *st;

    if (data->len == 0) {
        return NGX_OK;
    }

    if (call->state == NULL) {
        st = ngx_pcalloc(call->pool, sizeof(ngx_http_llm_gemini_stream_t));
        if (st == NULL) {
            return NGX_ERROR;
        }

        call->state = st;
    }

    rc = ngx_http_llm_gemini_text_event(call, data);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    root = ngx_http_llm_json_object(data);
    if (root == NULL) {
        return NGX_DECLINED;
    }

    if (json_object_get(root, "error")) {
        rc = ngx_http_llm_gemini_stream_error(call,
                                              json_object_get(root, "error"));
        json_decref(root);
        return rc;
    }

    ngx_http_llm_json_get_str(root, "modelVersion", &model);

    if (ngx_http_llm_str_keep(call->pool, &call->resp_model, &model)
        != NGX_OK)
    {
        json_decref(root);
        return NGX_ERROR;
    }

    rc = ngx_http_llm_stream_role(call);
    if (rc != NGX_OK) {
        goto done;
    }

    candidates = json_object_get(root, "candidates");

    json_array_foreach(candidates, i, cand) {
        rc = ngx_http_llm_gemini_stream_candidate(call, cand, i);
        if (rc != NGX_OK) {
            goto done;
        }
    }

    ngx_http_llm_json_get_str(json_object_get(root, "promptFeedback"),
                              "blockReason", &blocked);

    if (json_array_size(candidates) == 0 && blocked.len) {
        rc = ngx_http_llm_stream_finish(call, 0, "content_filter");
        if (rc != NGX_OK) {
            goto done;
        }
    }

    meta = json_object_get(root, "usageMetadata");

    if (json_is_object(meta)) {
        usage = ngx_http_llm_gemini_usage(call, meta);
        if (usage == NULL) {
            rc = NGX_ERROR;
        }

        json_decref(usage);
    }

done:

    json_decref(root);

    return rc;
}


/*
 * Most events of a stream carry one candidate with one text part and
 * nothing else: the text, a JSON string, goes into the OpenAI chunk as it
 * is, with no tree built.  NGX_DECLINED: any other event, for the general
 * path.
 */

static ngx_int_t
ngx_http_llm_gemini_text_event(ngx_http_llm_call_t *call, ngx_str_t *data)
{
    ngx_str_t  m[5], cand, c[3], content[1], part, t[3], model;

    static const char  *event[] = {
        "candidates", "modelVersion", "usageMetadata", "error",
        "promptFeedback", NULL
    };

    static const char  *candidate[] = {
        "content", "finishReason", "index", NULL
    };

    static const char  *parts[] = { "parts", NULL };
    static const char  *text[] = { "text", "thought", "functionCall", NULL };

    /* one candidate, not the last, with one plain text part */

    if (ngx_http_llm_json_get(data->data, data->data + data->len, event,
                              m)
        != NGX_OK
        || m[2].len || m[3].len || m[4].len
        || ngx_http_llm_json_only(&m[0], &cand) != NGX_OK
        || ngx_http_llm_json_get(cand.data, cand.data + cand.len,
                                 candidate, c)
           != NGX_OK
        || c[1].len
        || (c[2].len && !(c[2].len == 1 && c[2].data[0] == '0'))
        || c[0].len == 0 || c[0].data[0] != '{'
        || ngx_http_llm_json_get(c[0].data, c[0].data + c[0].len, parts,
                                 content)
           != NGX_OK
        || ngx_http_llm_json_only(&content[0], &part) != NGX_OK
        || ngx_http_llm_json_get(part.data, part.data + part.len, text, t)
           != NGX_OK
        || t[1].len || t[2].len
        || t[0].len < 2 || t[0].data[0] != '"')
    {
        return NGX_DECLINED;
    }

    if (m[1].len
        && ngx_http_llm_json_string(call->pool, &m[1], &model) == NGX_OK
        && ngx_http_llm_str_keep(call->pool, &call->resp_model, &model)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (t[0].len == 2) {
        return ngx_http_llm_stream_role(call);
    }

    return ngx_http_llm_stream_text(call, &t[0]);
}


static ngx_int_t
ngx_http_llm_gemini_stream_candidate(ngx_http_llm_call_t *call, json_t *cand,
    size_t n)
{
    size_t                         i;
    json_t                        *parts, *part, *fc, *chunk, *delta, *calls;
    json_t                        *tc, *v;
    ngx_str_t                      text, reason;
    json_int_t                     index;
    const char                    *finish;
    ngx_http_llm_gemini_stream_t  *st;

    st = call->state;

    v = json_object_get(cand, "index");
    index = json_is_integer(v) ? json_integer_value(v) : (json_int_t) n;

    parts = json_object_get(json_object_get(cand, "content"), "parts");

    if (ngx_http_llm_text_join(call->pool, parts, NULL, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    if (text.len) {
        chunk = ngx_http_llm_chunk_at(call, index, &delta);
        if (chunk == NULL) {
            return NGX_ERROR;
        }

        if (json_object_set_new(delta, "content",
                                ngx_http_llm_json_str(&text))
            != 0)
        {
            json_decref(chunk);
            return NGX_ERROR;
        }

        if (ngx_http_llm_stream_emit(call, chunk) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    chunk = NULL;
    calls = NULL;

    json_array_foreach(parts, i, part) {
        fc = json_object_get(part, "functionCall");

        if (!json_is_object(fc)) {
            continue;
        }

        if (chunk == NULL) {
            chunk = ngx_http_llm_chunk_at(call, index, &delta);
            if (chunk == NULL) {
                return NGX_ERROR;
            }

            calls = json_array();
            if (json_object_set_new(delta, "tool_calls", calls) != 0) {
                json_decref(chunk);
                return NGX_ERROR;
            }
        }

        tc = ngx_http_llm_gemini_tool_call(call, fc);

        if (json_array_append_new(calls, tc) != 0
            || json_object_set_new(tc, "index", json_integer(st->ntools))
               != 0)
        {
            json_decref(chunk);
            return NGX_ERROR;
        }

        st->ntools++;
        st->tool_calls = 1;
    }

    if (chunk && ngx_http_llm_stream_emit(call, chunk) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_json_get_str(cand, "finishReason", &reason);

    if (reason.len == 0) {
        return NGX_OK;
    }

    finish = ngx_http_llm_gemini_finish(&reason);

    if (st->tool_calls && ngx_strcmp(finish, "stop") == 0) {
        finish = "tool_calls";
    }

    if (n == 0) {
        call->finish_reason.data = (u_char *) finish;
        call->finish_reason.len = ngx_strlen(finish);
    }

    return ngx_http_llm_stream_finish(call, index, finish);
}


static ngx_int_t
ngx_http_llm_gemini_stream_error(ngx_http_llm_call_t *call, json_t *error)
{
    ngx_str_t  type, message, status;

    ngx_http_llm_json_get_str(error, "message", &message);
    ngx_http_llm_json_get_str(error, "status", &status);

    if (message.len == 0) {
        ngx_str_set(&message, "gemini stream error");
    }

    ngx_str_set(&type, "api_error");

    return ngx_http_llm_stream_error(call, &type, &status, &message);
}


static void
ngx_http_llm_gemini_map_error(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_str_t *body, ngx_http_llm_error_t *err)
{
    json_t  *root, *error;

    ngx_http_llm_error_defaults(status, err);

    root = NULL;

    if (body->len) {
        root = json_loadb((char *) body->data, body->len, 0, NULL);
    }

    /* some Gemini endpoints wrap the error object in an array */

    error = json_is_array(root) ? json_array_get(root, 0) : root;

    ngx_http_llm_error_read(call, status, json_object_get(error, "error"),
                            NULL, "status", err);

    json_decref(root);
}
