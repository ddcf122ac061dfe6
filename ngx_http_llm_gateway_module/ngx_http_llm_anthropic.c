
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_llm_module.h"


/* content block indexes beyond this are taken for a broken stream */
#define NGX_HTTP_LLM_ANTHROPIC_MAX_BLOCKS  4096


#define ngx_http_llm_anthropic_eq(s, lit)                                     \
    ((s)->len == sizeof(lit) - 1                                              \
     && ngx_strncmp((s)->data, lit, sizeof(lit) - 1) == 0)


typedef struct {
    ngx_array_t                 tools;     /* ngx_int_t per block, -1: none */
    ngx_int_t                   ntools;
} ngx_http_llm_anthropic_stream_t;


static ngx_int_t ngx_http_llm_anthropic_build_request(
    ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_anthropic_messages(ngx_http_llm_call_t *call,
    json_t *body);
static ngx_int_t ngx_http_llm_anthropic_system(ngx_http_llm_call_t *call,
    ngx_str_t *system, json_t *content);
static ngx_int_t ngx_http_llm_anthropic_user(ngx_http_llm_call_t *call,
    json_t *msg, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_assistant(ngx_http_llm_call_t *call,
    json_t *msg, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_tool_result(
    ngx_http_llm_call_t *call, json_t *msg, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_text_block(json_t *blocks,
    u_char *text, size_t len);
static ngx_int_t ngx_http_llm_anthropic_image_block(ngx_http_llm_call_t *call,
    json_t *part, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_params(ngx_http_llm_call_t *call,
    json_t *body);
static ngx_int_t ngx_http_llm_anthropic_tools(ngx_http_llm_call_t *call,
    json_t *body);
static ngx_int_t ngx_http_llm_anthropic_tool_choice(ngx_http_llm_call_t *call,
    json_t *body);

static ngx_int_t ngx_http_llm_anthropic_parse_response(
    ngx_http_llm_call_t *call, json_t *in, json_t **out);
static json_t *ngx_http_llm_anthropic_message(ngx_http_llm_call_t *call,
    json_t *content);
static json_t *ngx_http_llm_anthropic_usage(ngx_http_llm_call_t *call,
    json_t *usage);
static const char *ngx_http_llm_anthropic_finish(ngx_str_t *reason);

static ngx_int_t ngx_http_llm_anthropic_parse_stream_event(
    ngx_http_llm_call_t *call, ngx_str_t *event, ngx_str_t *data);
static ngx_int_t ngx_http_llm_anthropic_build_raw(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_anthropic_meta(ngx_http_llm_call_t *call,
    ngx_str_t *id, ngx_str_t *model, ngx_str_t *reason, const char **finish);
static ngx_int_t ngx_http_llm_anthropic_parse_raw(ngx_http_llm_call_t *call,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_anthropic_text_delta(ngx_http_llm_call_t *call,
    ngx_str_t *data);
static ngx_int_t ngx_http_llm_anthropic_stream_start(
    ngx_http_llm_call_t *call, json_t *msg);
static ngx_int_t ngx_http_llm_anthropic_stream_block(
    ngx_http_llm_call_t *call, json_t *data);
static ngx_int_t ngx_http_llm_anthropic_stream_delta(
    ngx_http_llm_call_t *call, json_t *data);
static ngx_int_t ngx_http_llm_anthropic_stream_stop(
    ngx_http_llm_call_t *call, json_t *data);
static ngx_int_t ngx_http_llm_anthropic_stream_error(
    ngx_http_llm_call_t *call, json_t *data);
static ngx_int_t ngx_http_llm_anthropic_emit_text(ngx_http_llm_call_t *call,
    ngx_str_t *text);
static ngx_int_t ngx_http_llm_anthropic_emit_tool(ngx_http_llm_call_t *call,
    ngx_int_t index, ngx_str_t *id, ngx_str_t *name, ngx_str_t *args);

static void ngx_http_llm_anthropic_map_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err);


static ngx_str_t  ngx_http_llm_anthropic_headers[] = {
    ngx_string("anthropic-version"), ngx_string("2023-06-01"),
    ngx_null_string, ngx_null_string
};


ngx_http_llm_driver_t  ngx_http_llm_anthropic_driver = {
    ngx_string("anthropic"),
    ngx_string("x-api-key"),
    ngx_null_string,
    ngx_http_llm_anthropic_headers,
    ngx_http_llm_anthropic_build_request,
    ngx_http_llm_anthropic_parse_response,
    ngx_http_llm_anthropic_parse_stream_event,
    ngx_http_llm_anthropic_map_error,
    ngx_http_llm_anthropic_parse_raw,
    1
};


static ngx_int_t
ngx_http_llm_anthropic_build_request(ngx_http_llm_call_t *call)
{
    json_t     *body;
    ngx_int_t   rc;

    if (call->endpoint != NGX_HTTP_LLM_CHAT) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (anthropic) serves "
                      "chat completions only", &call->provider->name);
        return NGX_DECLINED;
    }

    ngx_str_set(&call->uri, "v1/messages");
    ngx_str_null(&call->args);

    rc = ngx_http_llm_anthropic_build_raw(call);

    if (rc != NGX_DECLINED) {
        return rc;
    }

    if (call->request == NULL) {
        call->request = ngx_http_llm_call_tree(call);

        if (call->request == NULL) {
            return NGX_ABORT;
        }
    }

    body = json_object();
    if (body == NULL) {
        return NGX_ERROR;
    }

    if (json_object_set_new(body, "model",
                            ngx_http_llm_json_str(&call->model))
        != 0)
    {
        json_decref(body);
        return NGX_ERROR;
    }

    rc = ngx_http_llm_anthropic_messages(call, body);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_anthropic_params(call, body);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_anthropic_tools(call, body);
    }

    if (rc != NGX_OK) {
        json_decref(body);
        return rc;
    }

    call->body = body;

    return NGX_OK;
}


/*
 * A plain conversation (string contents, at most one system message,
 * alternating turns, only the common parameters) is written straight from
 * the client's bytes, each text copied as the JSON string it is.
 * NGX_DECLINED: anything else, for the tree.
 */

static ngx_int_t
ngx_http_llm_anthropic_build_raw(ngx_http_llm_call_t *call)
{
    u_char      *pos, *out, *q, num[32];
    size_t       len, n;
    double       temp;
    ngx_str_t    m[8], msg, f[2], system, temperature;
    ngx_int_t    max;
    ngx_uint_t   i, found, prev, count;

    static const char  *names[] = {
        "model", "messages", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "stream", "stream_options", NULL
    };

    static const char  *fields[] = { "role", "content", NULL };

    if (ngx_http_llm_json_get_n(call->raw.data,
                                call->raw.data + call->raw.len, names, m,
                                &count)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    /* no other member than these */

    found = 0;

    for (i = 0; names[i]; i++) {
        found += (m[i].len != 0);
    }

    if (count != found
        || (m[5].len && m[5].data[0] != '-'
            && (m[5].data[0] < '0' || m[5].data[0] > '9')))
    {
        return NGX_DECLINED;
    }

    max = ngx_http_llm_json_int(&m[3]);

    if (max <= 0) {
        max = ngx_http_llm_json_int(&m[2]);
    }

    if (max <= 0) {
        max = NGX_HTTP_LLM_DEFAULT_MAX_TOKENS;
    }

    temperature = m[4];

    if (temperature.len) {
        if (temperature.len >= sizeof(num)
            || ((temperature.data[0] < '0' || temperature.data[0] > '9')
                && temperature.data[0] != '-'))
        {
            return NGX_DECLINED;
        }

        /* Anthropic's range is 0..1, OpenAI's 0..2 */

        ngx_memcpy(num, temperature.data, temperature.len);
        num[temperature.len] = '\0';
        temp = strtod((char *) num, NULL);

        if (temp < 0.0) {
            ngx_str_set(&temperature, "0.0");

        } else if (temp > 1.0) {
            ngx_str_set(&temperature, "1.0");
        }
    }

    /* the messages: their texts are copied, so the size is bounded by
     * the body's plus the framing of each turn */

    if (m[1].len < 2 || m[1].data[0] != '[') {
        return NGX_DECLINED;
    }

    ngx_str_null(&system);

    len = sizeof("{\"model\":\"\",\"max_tokens\":,\"system\":,"
                 "\"messages\":[],\"temperature\":,\"top_p\":,"
                 "\"stream\":true}")
          + call->model.len
          + ngx_escape_json(NULL, call->model.data, call->model.len)
          + NGX_INT_T_LEN + temperature.len + m[5].len;

    pos = NULL;
    prev = 0;

    while (ngx_http_llm_json_next(&m[1], &pos, &msg) == NGX_OK) {

        if (ngx_http_llm_json_get_n(msg.data, msg.data + msg.len, fields,
                                    f, &count)
            != NGX_OK
            || count != 2
            || f[1].len <= 2 || f[1].data[0] != '"')
        {
            return NGX_DECLINED;
        }

        if (ngx_http_llm_anthropic_eq(&f[0], "\"system\"")
            || ngx_http_llm_anthropic_eq(&f[0], "\"developer\""))
        {
            if (system.len) {
                return NGX_DECLINED;
            }

            system = f[1];
            len += f[1].len;
            continue;
        }

        if (ngx_http_llm_anthropic_eq(&f[0], "\"user\"")) {
            n = 1;

        } else if (ngx_http_llm_anthropic_eq(&f[0], "\"assistant\"")) {
            n = 2;

        } else {
            return NGX_DECLINED;
        }

        if (n == prev) {
            return NGX_DECLINED;
        }

        prev = n;
        len += sizeof("{\"role\":\"assistant\",\"content\":[{\"type\":"
                      "\"text\",\"text\":}]},")
               + f[1].len;
    }

    if (prev == 0) {
        return NGX_DECLINED;
    }

    out = ngx_pnalloc(call->pool, len);
    if (out == NULL) {
        return NGX_ERROR;
    }

    q = ngx_cpymem(out, "{\"model\":\"", sizeof("{\"model\":\"") - 1);
    q = (u_char *) ngx_escape_json(q, call->model.data, call->model.len);
    q = ngx_sprintf(q, "\",\"max_tokens\":%i", max);

    if (system.len) {
        q = ngx_cpymem(q, ",\"system\":", sizeof(",\"system\":") - 1);
        q = ngx_cpymem(q, system.data, system.len);
    }

    q = ngx_cpymem(q, ",\"messages\":[", sizeof(",\"messages\":[") - 1);

    /* the second pass, over what the first one checked */

    pos = NULL;
    n = 0;

    while (ngx_http_llm_json_next(&m[1], &pos, &msg) == NGX_OK) {

        (void) ngx_http_llm_json_get(msg.data, msg.data + msg.len,
                                     fields, f);

        if (ngx_http_llm_anthropic_eq(&f[0], "\"system\"")
            || ngx_http_llm_anthropic_eq(&f[0], "\"developer\""))
        {
            continue;
        }

        if (n++) {
            *q++ = ',';
        }

        q = ngx_cpymem(q, "{\"role\":", sizeof("{\"role\":") - 1);
        q = ngx_cpymem(q, f[0].data, f[0].len);
        q = ngx_cpymem(q, ",\"content\":[{\"type\":\"text\",\"text\":",
                       sizeof(",\"content\":[{\"type\":\"text\",\"text\":")
                       - 1);
        q = ngx_cpymem(q, f[1].data, f[1].len);
        q = ngx_cpymem(q, "}]}", 3);
    }

    *q++ = ']';

    if (temperature.len) {
        q = ngx_cpymem(q, ",\"temperature\":", sizeof(",\"temperature\":") - 1);
        q = ngx_cpymem(q, temperature.data, temperature.len);
    }

    if (m[5].len) {
        q = ngx_cpymem(q, ",\"top_p\":", sizeof(",\"top_p\":") - 1);
        q = ngx_cpymem(q, m[5].data, m[5].len);
    }

    if (call->stream) {
        q = ngx_cpymem(q, ",\"stream\":true", sizeof(",\"stream\":true") - 1);
    }

    *q++ = '}';

    call->raw_body.data = out;
    call->raw_body.len = q - out;

    return NGX_OK;
}


/*
 * System and developer messages go to the top level "system"; the rest
 * become turns of content blocks, consecutive turns of one role merged,
 * as Anthropic wants user and assistant to alternate.
 */

static ngx_int_t
ngx_http_llm_anthropic_messages(ngx_http_llm_call_t *call, json_t *body)
{
    size_t       i;
    json_t      *messages, *msg, *turns, *blocks;
    ngx_int_t    rc;
    ngx_str_t    role, system;
    const char  *turn_role;

    messages = json_object_get(call->request, "messages");

    if (!json_is_array(messages)) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (anthropic): no messages",
                      &call->provider->name);
        return NGX_DECLINED;
    }

    turns = json_array();
    if (json_object_set_new(body, "messages", turns) != 0) {
        return NGX_ERROR;
    }

    ngx_str_null(&system);

    json_array_foreach(messages, i, msg) {

        ngx_http_llm_json_get_str(msg, "role", &role);

        if (ngx_http_llm_anthropic_eq(&role, "system")
            || ngx_http_llm_anthropic_eq(&role, "developer"))
        {
            rc = ngx_http_llm_anthropic_system(call, &system,
                                             json_object_get(msg, "content"));
            if (rc != NGX_OK) {
                return rc;
            }

            continue;
        }

        blocks = json_array();
        if (blocks == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_llm_anthropic_eq(&role, "user")) {
            turn_role = "user";
            rc = ngx_http_llm_anthropic_user(call, msg, blocks);

        } else if (ngx_http_llm_anthropic_eq(&role, "assistant")) {
            turn_role = "assistant";
            rc = ngx_http_llm_anthropic_assistant(call, msg, blocks);

        } else if (ngx_http_llm_anthropic_eq(&role, "tool")) {
            turn_role = "user";
            rc = ngx_http_llm_anthropic_tool_result(call, msg, blocks);

        } else {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (anthropic): message "
                          "with role \"%V\" ignored",
                          &call->provider->name,
                          ngx_http_llm_escape(call->pool, &role, 1));
            json_decref(blocks);
            continue;
        }

        if (rc != NGX_OK) {
            json_decref(blocks);
            return rc;
        }

        if (ngx_http_llm_turn_add(turns, "content", turn_role, blocks)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (system.len
        && json_object_set_new(body, "system",
                               ngx_http_llm_json_str(&system))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_system(ngx_http_llm_call_t *call, ngx_str_t *system,
    json_t *content)
{
    u_char     *p;
    ngx_str_t   text;

    if (ngx_http_llm_content_text(call->pool, content, &text) != NGX_OK) {
        return NGX_ERROR;
    }

    if (text.len == 0) {
        return NGX_OK;
    }

    if (system->len == 0) {
        *system = text;
        return NGX_OK;
    }

    p = ngx_pnalloc(call->pool, system->len + 2 + text.len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    system->data = ngx_cpymem(p, system->data, system->len);
    *system->data++ = '\n';
    *system->data++ = '\n';
    ngx_memcpy(system->data, text.data, text.len);

    system->len += 2 + text.len;
    system->data = p;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_user(ngx_http_llm_call_t *call, json_t *msg,
    json_t *blocks)
{
    size_t      i;
    json_t     *content, *part;
    ngx_str_t   type, text;

    content = json_object_get(msg, "content");

    if (json_is_string(content)) {
        return ngx_http_llm_anthropic_text_block(blocks,
                                       (u_char *) json_string_value(content),
                                       json_string_length(content));
    }

    json_array_foreach(content, i, part) {

        ngx_http_llm_json_get_str(part, "type", &type);

        if (ngx_http_llm_anthropic_eq(&type, "text")) {
            ngx_http_llm_json_get_str(part, "text", &text);

            if (ngx_http_llm_anthropic_text_block(blocks, text.data, text.len)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else if (ngx_http_llm_anthropic_eq(&type, "image_url")) {

            if (ngx_http_llm_anthropic_image_block(call, part, blocks)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

        } else {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (anthropic): content part "
                          "\"%V\" ignored", &call->provider->name,
                          ngx_http_llm_escape(call->pool, &type, 1));
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_assistant(ngx_http_llm_call_t *call, json_t *msg,
    json_t *blocks)
{
    size_t      i;
    json_t     *calls, *tc, *fn, *block;
    ngx_str_t   text, id, name, args;

    if (ngx_http_llm_content_text(call->pool, json_object_get(msg, "content"),
                                  &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_llm_anthropic_text_block(blocks, text.data, text.len)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    calls = json_object_get(msg, "tool_calls");

    json_array_foreach(calls, i, tc) {

        fn = json_object_get(tc, "function");

        ngx_http_llm_json_get_str(tc, "id", &id);
        ngx_http_llm_json_get_str(fn, "name", &name);
        ngx_http_llm_json_get_str(fn, "arguments", &args);

        block = json_object();
        if (json_object_set_new(block, "input", ngx_http_llm_tool_args(&args))
            != 0)
        {
            json_decref(block);
            return NGX_ERROR;
        }

        if (json_array_append_new(blocks, block) != 0) {
            return NGX_ERROR;
        }

        if (json_object_set_new(block, "type", json_string("tool_use")) != 0
            || json_object_set_new(block, "id", ngx_http_llm_json_str(&id))
               != 0
            || json_object_set_new(block, "name",
                                   ngx_http_llm_json_str(&name))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_tool_result(ngx_http_llm_call_t *call, json_t *msg,
    json_t *blocks)
{
    json_t     *block;
    ngx_str_t   id, text;

    ngx_http_llm_json_get_str(msg, "tool_call_id", &id);

    if (ngx_http_llm_content_text(call->pool, json_object_get(msg, "content"),
                                  &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    block = json_object();
    if (json_array_append_new(blocks, block) != 0
        || json_object_set_new(block, "type", json_string("tool_result")) != 0
        || json_object_set_new(block, "tool_use_id",
                               ngx_http_llm_json_str(&id))
           != 0)
    {
        return NGX_ERROR;
    }

    if (text.len
        && json_object_set_new(block, "content",
                               ngx_http_llm_json_str(&text))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_text_block(json_t *blocks, u_char *text, size_t len)
{
    json_t  *block;

    /* Anthropic rejects empty text blocks */

    if (len == 0) {
        return NGX_OK;
    }

    block = json_object();
    if (json_array_append_new(blocks, block) != 0
        || json_object_set_new(block, "type", json_string("text")) != 0
        || json_object_set_new(block, "text",
                               json_stringn((char *) text, len))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_image_block(ngx_http_llm_call_t *call, json_t *part,
    json_t *blocks)
{
    json_t     *block, *source;
    ngx_str_t   url, type, data;

    if (ngx_http_llm_image_url(part, &url, &type, &data) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (anthropic): image url "
                      "not understood, ignored", &call->provider->name);
        return NGX_OK;
    }

    source = json_object();
    if (source == NULL) {
        return NGX_ERROR;
    }

    if (type.len) {
        if (json_object_set_new(source, "type", json_string("base64")) != 0
            || json_object_set_new(source, "media_type",
                                   ngx_http_llm_json_str(&type))
               != 0
            || json_object_set_new(source, "data",
                                   ngx_http_llm_json_str(&data))
               != 0)
        {
            json_decref(source);
            return NGX_ERROR;
        }

    } else if (json_object_set_new(source, "type", json_string("url")) != 0
               || json_object_set_new(source, "url",
                                      ngx_http_llm_json_str(&url))
                  != 0)
    {
        json_decref(source);
        return NGX_ERROR;
    }

    block = json_object();
    if (json_object_set_new(block, "source", source) != 0) {
        json_decref(block);
        return NGX_ERROR;
    }

    if (json_array_append_new(blocks, block) != 0) {
        return NGX_ERROR;
    }

    if (json_object_set_new(block, "type", json_string("image")) != 0) {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_params(ngx_http_llm_call_t *call, json_t *body)
{
    size_t      i;
    double      temp;
    json_t     *req, *v, *stop, *s, *meta;
    ngx_str_t   user;
    json_int_t  max;

    req = call->request;

    v = json_object_get(req, "max_completion_tokens");
    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        v = json_object_get(req, "max_tokens");
    }

    max = (json_is_integer(v) && json_integer_value(v) > 0)
          ? json_integer_value(v) : NGX_HTTP_LLM_DEFAULT_MAX_TOKENS;

    if (json_object_set_new(body, "max_tokens", json_integer(max)) != 0) {
        return NGX_ERROR;
    }

    v = json_object_get(req, "temperature");

    if (json_is_number(v)) {
        temp = json_number_value(v);

        /* Anthropic's range is 0..1, OpenAI's 0..2 */

        if (temp < 0.0 || temp > 1.0) {
            v = json_real(temp < 0.0 ? 0.0 : 1.0);

        } else {
            json_incref(v);
        }

        if (json_object_set_new(body, "temperature", v) != 0) {
            return NGX_ERROR;
        }
    }

    v = json_object_get(req, "top_p");

    if (json_is_number(v) && json_object_set(body, "top_p", v) != 0) {
        return NGX_ERROR;
    }

    v = json_object_get(req, "stop");

    if (json_is_string(v) || json_is_array(v)) {
        stop = json_array();
        if (stop == NULL) {
            return NGX_ERROR;
        }

        if (json_is_string(v)) {
            if (json_string_length(v)
                && json_array_append(stop, v) != 0)
            {
                json_decref(stop);
                return NGX_ERROR;
            }

        } else {
            json_array_foreach(v, i, s) {
                if (json_is_string(s) && json_string_length(s)
                    && json_array_append(stop, s) != 0)
                {
                    json_decref(stop);
                    return NGX_ERROR;
                }
            }
        }

        if (json_array_size(stop) == 0) {
            json_decref(stop);

        } else if (json_object_set_new(body, "stop_sequences", stop) != 0) {
            return NGX_ERROR;
        }
    }

    if (call->stream
        && json_object_set_new(body, "stream", json_true()) != 0)
    {
        return NGX_ERROR;
    }

    ngx_http_llm_json_get_str(req, "user", &user);

    if (user.len) {
        meta = json_object();
        if (json_object_set_new(body, "metadata", meta) != 0
            || json_object_set_new(meta, "user_id",
                                   ngx_http_llm_json_str(&user))
               != 0)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_tools(ngx_http_llm_call_t *call, json_t *body)
{
    size_t      i;
    json_t     *tools, *tool, *fn, *out, *t, *v;
    ngx_str_t   name;

    tools = json_object_get(call->request, "tools");

    if (json_array_size(tools) == 0) {
        return NGX_OK;
    }

    out = json_array();
    if (json_object_set_new(body, "tools", out) != 0) {
        return NGX_ERROR;
    }

    json_array_foreach(tools, i, tool) {

        fn = json_object_get(tool, "function");
        ngx_http_llm_json_get_str(fn, "name", &name);

        if (name.len == 0) {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (anthropic): tool without "
                          "function name ignored", &call->provider->name);
            continue;
        }

        t = json_object();
        if (json_array_append_new(out, t) != 0
            || json_object_set_new(t, "name", ngx_http_llm_json_str(&name))
               != 0)
        {
            return NGX_ERROR;
        }

        v = json_object_get(fn, "description");

        if (json_is_string(v)
            && json_object_set(t, "description", v) != 0)
        {
            return NGX_ERROR;
        }

        v = json_object_get(fn, "parameters");

        v = json_is_object(v)
            ? json_deep_copy(v)
            : json_pack("{s:s, s:{}}", "type", "object", "properties");

        if (json_object_set_new(t, "input_schema", v) != 0) {
            return NGX_ERROR;
        }
    }

    if (json_array_size(out) == 0) {
        json_object_del(body, "tools");
        return NGX_OK;
    }

    return ngx_http_llm_anthropic_tool_choice(call, body);
}


static ngx_int_t
ngx_http_llm_anthropic_tool_choice(ngx_http_llm_call_t *call, json_t *body)
{
    json_t     *v, *choice, *parallel;
    ngx_str_t   mode, name;

    v = json_object_get(call->request, "tool_choice");
    parallel = json_object_get(call->request, "parallel_tool_calls");

    ngx_str_null(&name);

    if (json_is_string(v)) {
        mode.data = (u_char *) json_string_value(v);
        mode.len = json_string_length(v);

        if (ngx_http_llm_anthropic_eq(&mode, "required")) {
            ngx_str_set(&mode, "any");

        } else if (!ngx_http_llm_anthropic_eq(&mode, "none")) {
            ngx_str_set(&mode, "auto");
        }

    } else if (json_is_object(v)) {
        ngx_http_llm_json_get_str(json_object_get(v, "function"), "name",
                                  &name);
        if (name.len) {
            ngx_str_set(&mode, "tool");

        } else {
            ngx_str_set(&mode, "auto");
        }

    } else if (json_is_false(parallel)) {
        ngx_str_set(&mode, "auto");

    } else {
        return NGX_OK;
    }

    choice = json_object();
    if (json_object_set_new(body, "tool_choice", choice) != 0
        || json_object_set_new(choice, "type",
                               ngx_http_llm_json_str(&mode))
           != 0)
    {
        return NGX_ERROR;
    }

    if (name.len
        && json_object_set_new(choice, "name",
                               ngx_http_llm_json_str(&name))
           != 0)
    {
        return NGX_ERROR;
    }

    if (json_is_false(parallel)
        && !ngx_http_llm_anthropic_eq(&mode, "none")
        && json_object_set_new(choice, "disable_parallel_tool_use",
                               json_true())
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_parse_response(ngx_http_llm_call_t *call, json_t *in,
    json_t **out)
{
    json_t      *content, *res, *choices, *message, *usage;
    ngx_str_t    type, id, model, reason;
    const char  *finish;

    ngx_http_llm_json_get_str(in, "type", &type);
    content = json_object_get(in, "content");

    if (!ngx_http_llm_anthropic_eq(&type, "message")
        || !json_is_array(content))
    {
        return NGX_DECLINED;
    }

    ngx_http_llm_json_get_str(in, "id", &id);
    ngx_http_llm_json_get_str(in, "model", &model);
    ngx_http_llm_json_get_str(in, "stop_reason", &reason);

    if (ngx_http_llm_anthropic_meta(call, &id, &model, &reason, &finish)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    res = ngx_http_llm_completion_new(call, &id, &model, &choices);
    if (res == NULL) {
        return NGX_ERROR;
    }

    message = ngx_http_llm_anthropic_message(call, content);

    if (message == NULL
        || ngx_http_llm_choice_add(choices, 0, message, finish) != NGX_OK)
    {
        goto failed;
    }

    usage = json_object_get(in, "usage");

    if (json_is_object(usage)
        && json_object_set_new(res, "usage",
                               ngx_http_llm_anthropic_usage(call, usage))
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


/*
 * The common answer, one text block, is written straight into an OpenAI
 * completion, its text copied as the JSON string it is.  Anything else
 * (tool calls, several blocks) goes through the tree: NGX_AGAIN.
 */

/* the answer's id, model and finish reason, kept in the call; an id or a
 * model the provider did not name is filled in */

static ngx_int_t
ngx_http_llm_anthropic_meta(ngx_http_llm_call_t *call, ngx_str_t *id,
    ngx_str_t *model, ngx_str_t *reason, const char **finish)
{
    if (ngx_http_llm_str_keep(call->pool, &call->id, id) != NGX_OK
        || (call->id.len == 0
            && ngx_http_llm_make_id(call, "chatcmpl-", &call->id) != NGX_OK)
        || ngx_http_llm_str_keep(call->pool, &call->resp_model, model)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (id->len == 0) {
        *id = call->id;
    }

    if (model->len == 0) {
        *model = call->model;
    }

    *finish = ngx_http_llm_anthropic_finish(reason);
    call->finish_reason.data = (u_char *) *finish;
    call->finish_reason.len = ngx_strlen(*finish);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_parse_raw(ngx_http_llm_call_t *call, ngx_str_t *body)
{
    u_char      *p;
    size_t       len;
    ngx_int_t    n[4];
    ngx_str_t    m[6], block, b[2], u[4], id, model, reason;
    ngx_uint_t   i;
    const char  *finish;

    static const char  *names[] = {
        "type", "id", "model", "content", "stop_reason", "usage", NULL
    };

    static const char  *text[] = { "type", "text", NULL };

    static const char  *usage[] = {
        "input_tokens", "output_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens", NULL
    };

    if (ngx_http_llm_json_get(body->data, body->data + body->len, names,
                              m)
        != NGX_OK
        || !ngx_http_llm_anthropic_eq(&m[0], "\"message\"")
        || ngx_http_llm_json_only(&m[3], &block) != NGX_OK
        || ngx_http_llm_json_get(block.data, block.data + block.len,
                                 text, b)
           != NGX_OK
        || !ngx_http_llm_anthropic_eq(&b[0], "\"text\"")
        || b[1].len < 2 || b[1].data[0] != '"'
        || m[5].len == 0 || m[5].data[0] != '{'
        || ngx_http_llm_json_get(m[5].data, m[5].data + m[5].len, usage,
                                 u)
           != NGX_OK)
    {
        return NGX_AGAIN;
    }

    for (i = 0; i < 4; i++) {
        n[i] = ngx_http_llm_json_int(&u[i]);
        n[i] = ngx_max(n[i], 0);
    }

    call->usage.prompt = n[0] + n[2] + n[3];
    call->usage.completion = n[1];
    call->usage.cached = n[3];

    if (ngx_http_llm_json_string(call->pool, &m[1], &id) != NGX_OK) {
        ngx_str_null(&id);
    }

    if (ngx_http_llm_json_string(call->pool, &m[2], &model) != NGX_OK) {
        ngx_str_null(&model);
    }

    if (ngx_http_llm_json_string(call->pool, &m[4], &reason) != NGX_OK) {
        ngx_str_null(&reason);
    }

    if (ngx_http_llm_anthropic_meta(call, &id, &model, &reason, &finish)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    len = sizeof("{\"id\":\"\",\"object\":\"chat.completion\",\"created\":,"
                 "\"model\":\"\",\"choices\":[{\"index\":0,\"message\":"
                 "{\"role\":\"assistant\",\"content\":},\"logprobs\":null,"
                 "\"finish_reason\":\"\"}],\"usage\":{\"prompt_tokens\":,"
                 "\"completion_tokens\":,\"total_tokens\":,"
                 "\"prompt_tokens_details\":{\"cached_tokens\":}}}")
          + id.len + ngx_escape_json(NULL, id.data, id.len)
          + model.len + ngx_escape_json(NULL, model.data, model.len)
          + b[1].len + ngx_strlen(finish) + NGX_TIME_T_LEN
          + 4 * NGX_INT_T_LEN;

    p = ngx_pnalloc(call->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->answer.data = p;

    p = ngx_cpymem(p, "{\"id\":\"", sizeof("{\"id\":\"") - 1);
    p = (u_char *) ngx_escape_json(p, id.data, id.len);
    p = ngx_sprintf(p, "\",\"object\":\"chat.completion\",\"created\":%T,"
                       "\"model\":\"", call->created);
    p = (u_char *) ngx_escape_json(p, model.data, model.len);
    p = ngx_cpymem(p, "\",\"choices\":[{\"index\":0,\"message\":"
                      "{\"role\":\"assistant\",\"content\":",
                   sizeof("\",\"choices\":[{\"index\":0,\"message\":"
                          "{\"role\":\"assistant\",\"content\":") - 1);
    p = ngx_cpymem(p, b[1].data, b[1].len);
    p = ngx_sprintf(p, "},\"logprobs\":null,\"finish_reason\":\"%s\"}],"
                       "\"usage\":{\"prompt_tokens\":%i,"
                       "\"completion_tokens\":%i,\"total_tokens\":%i",
                    finish, call->usage.prompt, call->usage.completion,
                    call->usage.prompt + call->usage.completion);

    if (ngx_http_llm_json_int(&u[3]) >= 0) {
        p = ngx_sprintf(p, ",\"prompt_tokens_details\":{\"cached_tokens\":%i}",
                        call->usage.cached);
    }

    *p++ = '}';
    *p++ = '}';

    call->answer.len = p - call->answer.data;

    return NGX_OK;
}


static json_t *
ngx_http_llm_anthropic_message(ngx_http_llm_call_t *call, json_t *content)
{
    u_char     *p;
    size_t      i, len;
    json_t     *block, *message, *calls, *tc;
    ngx_str_t   type, text, id, name, s;

    len = 0;

    json_array_foreach(content, i, block) {
        ngx_http_llm_json_get_str(block, "type", &type);

        if (ngx_http_llm_anthropic_eq(&type, "text")) {
            ngx_http_llm_json_get_str(block, "text", &s);
            len += s.len;
        }
    }

    text.len = 0;
    text.data = ngx_pnalloc(call->pool, len + 1);
    if (text.data == NULL) {
        return NULL;
    }

    message = json_object();
    if (message == NULL) {
        return NULL;
    }

    calls = NULL;

    json_array_foreach(content, i, block) {
        ngx_http_llm_json_get_str(block, "type", &type);

        if (ngx_http_llm_anthropic_eq(&type, "text")) {
            ngx_http_llm_json_get_str(block, "text", &s);

            if (s.len) {
                p = ngx_cpymem(text.data + text.len, s.data, s.len);
                text.len = p - text.data;
            }

            continue;
        }

        if (!ngx_http_llm_anthropic_eq(&type, "tool_use")) {
            continue;
        }

        if (calls == NULL) {
            calls = json_array();
            if (json_object_set_new(message, "tool_calls", calls) != 0) {
                goto failed;
            }
        }

        ngx_http_llm_json_get_str(block, "id", &id);
        ngx_http_llm_json_get_str(block, "name", &name);

        tc = ngx_http_llm_tool_call(call->pool, &id, &name,
                                    json_object_get(block, "input"));

        if (json_array_append_new(calls, tc) != 0) {
            goto failed;
        }
    }

    if (json_object_set_new(message, "role", json_string("assistant")) != 0
        || json_object_set_new(message, "content",
                               text.len ? ngx_http_llm_json_str(&text)
                                        : json_null())
           != 0)
    {
        goto failed;
    }

    return message;

failed:

    json_decref(message);
    return NULL;
}


/* records usage into call->usage, returns it in OpenAI shape */

static json_t *
ngx_http_llm_anthropic_usage(ngx_http_llm_call_t *call, json_t *usage)
{
    json_t      *res, *v, *details;
    json_int_t   prompt, completion, cached;

    prompt = json_integer_value(json_object_get(usage, "input_tokens"))
             + json_integer_value(json_object_get(usage,
                                           "cache_creation_input_tokens"));
    completion = json_integer_value(json_object_get(usage, "output_tokens"));

    v = json_object_get(usage, "cache_read_input_tokens");
    cached = json_integer_value(v);
    prompt += cached;

    call->usage.prompt = prompt;
    call->usage.completion = completion;
    call->usage.cached = cached;

    res = json_object();

    if (json_object_set_new(res, "prompt_tokens", json_integer(prompt)) != 0
        || json_object_set_new(res, "completion_tokens",
                               json_integer(completion))
           != 0
        || json_object_set_new(res, "total_tokens",
                               json_integer(prompt + completion))
           != 0)
    {
        json_decref(res);
        return NULL;
    }

    if (json_is_integer(v)) {
        details = json_object();

        if (json_object_set_new(res, "prompt_tokens_details", details) != 0
            || json_object_set_new(details, "cached_tokens",
                                   json_integer(cached))
               != 0)
        {
            json_decref(res);
            return NULL;
        }
    }

    return res;
}


static const char *
ngx_http_llm_anthropic_finish(ngx_str_t *reason)
{
    if (ngx_http_llm_anthropic_eq(reason, "max_tokens")) {
        return "length";
    }

    if (ngx_http_llm_anthropic_eq(reason, "tool_use")) {
        return "tool_calls";
    }

    if (ngx_http_llm_anthropic_eq(reason, "refusal")) {
        return "content_filter";
    }

    return "stop";
}


static ngx_int_t
ngx_http_llm_anthropic_parse_stream_event(ngx_http_llm_call_t *call,
    ngx_str_t *event, ngx_str_t *data)
{
    json_t                           *root;
    ngx_int_t                         rc;
    ngx_str_t                         type;
    ngx_http_llm_anthropic_stream_t  *st;

    if (data->len == 0) {
        return NGX_OK;
    }

    if (call->state == NULL) {
        st = ngx_palloc(call->pool, sizeof(ngx_http_llm_anthropic_stream_t));
        if (st == NULL) {
            return NGX_ERROR;
        }

        if (ngx_array_init(&st->tools, call->pool, 4, sizeof(ngx_int_t))
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        st->ntools = 0;
        call->state = st;
    }

    if (ngx_http_llm_anthropic_eq(event, "ping")
        || ngx_http_llm_anthropic_eq(event, "content_block_stop"))
    {
        return NGX_OK;
    }

    if (ngx_http_llm_anthropic_eq(event, "content_block_delta")) {
        rc = ngx_http_llm_anthropic_text_delta(call, data);

        if (rc != NGX_DECLINED) {
            return rc;
        }
    }

    root = json_loadb((char *) data->data, data->len, 0, NULL);

    if (!json_is_object(root)) {
        json_decref(root);
        return NGX_DECLINED;
    }

    ngx_http_llm_json_get_str(root, "type", &type);

    if (type.len == 0) {
        type = *event;
    }

    if (ngx_http_llm_anthropic_eq(&type, "message_start")) {
        rc = ngx_http_llm_anthropic_stream_start(call,
                                          json_object_get(root, "message"));

    } else if (ngx_http_llm_anthropic_eq(&type, "content_block_start")) {
        rc = ngx_http_llm_anthropic_stream_block(call, root);

    } else if (ngx_http_llm_anthropic_eq(&type, "content_block_delta")) {
        rc = ngx_http_llm_anthropic_stream_delta(call, root);

    } else if (ngx_http_llm_anthropic_eq(&type, "message_delta")) {
        rc = ngx_http_llm_anthropic_stream_stop(call, root);

    } else if (ngx_http_llm_anthropic_eq(&type, "message_stop")) {
        rc = NGX_DONE;

    } else if (ngx_http_llm_anthropic_eq(&type, "error")) {
        rc = ngx_http_llm_anthropic_stream_error(call, root);

    } else {
        /* ping, content_block_stop, and events added later */
        rc = NGX_OK;
    }

    json_decref(root);

    return rc;
}


/*
 * Most events of a stream are text deltas: their text, a JSON string,
 * goes into the OpenAI chunk as it is, with no tree built.  NGX_DECLINED:
 * another kind of delta, for the general path.
 */

static ngx_int_t
ngx_http_llm_anthropic_text_delta(ngx_http_llm_call_t *call, ngx_str_t *data)
{
    ngx_str_t  m[1], d[2];

    static const char  *event[] = { "delta", NULL };
    static const char  *delta[] = { "type", "text", NULL };

    if (ngx_http_llm_json_get(data->data, data->data + data->len, event,
                              m)
        != NGX_OK
        || m[0].len == 0 || m[0].data[0] != '{'
        || ngx_http_llm_json_get(m[0].data, m[0].data + m[0].len, delta,
                                 d)
           != NGX_OK
        || !ngx_http_llm_anthropic_eq(&d[0], "\"text_delta\"")
        || d[1].len == 0 || d[1].data[0] != '"')
    {
        return NGX_DECLINED;
    }

    if (d[1].len == 2) {
        return NGX_OK;
    }

    return ngx_http_llm_stream_text(call, &d[1]);
}


static ngx_int_t
ngx_http_llm_anthropic_stream_start(ngx_http_llm_call_t *call, json_t *msg)
{
    json_t     *usage;
    ngx_str_t   id, model;

    if (!json_is_object(msg)) {
        return NGX_DECLINED;
    }

    ngx_http_llm_json_get_str(msg, "id", &id);
    ngx_http_llm_json_get_str(msg, "model", &model);

    if (ngx_http_llm_str_keep(call->pool, &call->id, &id) != NGX_OK
        || ngx_http_llm_str_keep(call->pool, &call->resp_model, &model)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    usage = json_object_get(msg, "usage");

    if (json_is_object(usage)) {
        call->usage.prompt =
            json_integer_value(json_object_get(usage, "input_tokens"))
            + json_integer_value(json_object_get(usage,
                                           "cache_creation_input_tokens"))
            + json_integer_value(json_object_get(usage,
                                           "cache_read_input_tokens"));
        call->usage.cached =
            json_integer_value(json_object_get(usage,
                                           "cache_read_input_tokens"));
        call->usage.completion =
            json_integer_value(json_object_get(usage, "output_tokens"));
    }

    return ngx_http_llm_stream_role(call);
}


static ngx_int_t
ngx_http_llm_anthropic_stream_block(ngx_http_llm_call_t *call, json_t *data)
{
    json_t                           *block, *v;
    ngx_int_t                         index, *tool;
    ngx_str_t                         type, text, id, name, args;
    ngx_http_llm_anthropic_stream_t  *st;

    st = call->state;

    block = json_object_get(data, "content_block");
    v = json_object_get(data, "index");

    if (!json_is_object(block) || !json_is_integer(v)) {
        return NGX_DECLINED;
    }

    index = (ngx_int_t) json_integer_value(v);

    if (index < 0 || index >= NGX_HTTP_LLM_ANTHROPIC_MAX_BLOCKS) {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_stream_role(call) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_json_get_str(block, "type", &type);

    if (ngx_http_llm_anthropic_eq(&type, "text")) {
        ngx_http_llm_json_get_str(block, "text", &text);

        if (text.len == 0) {
            return NGX_OK;
        }

        return ngx_http_llm_anthropic_emit_text(call, &text);
    }

    if (!ngx_http_llm_anthropic_eq(&type, "tool_use")) {
        return NGX_OK;
    }

    while (st->tools.nelts <= (ngx_uint_t) index) {
        tool = ngx_array_push(&st->tools);
        if (tool == NULL) {
            return NGX_ERROR;
        }

        *tool = -1;
    }

    tool = st->tools.elts;
    tool[index] = st->ntools++;

    ngx_http_llm_json_get_str(block, "id", &id);
    ngx_http_llm_json_get_str(block, "name", &name);
    ngx_str_set(&args, "");

    return ngx_http_llm_anthropic_emit_tool(call, tool[index], &id, &name,
                                            &args);
}


static ngx_int_t
ngx_http_llm_anthropic_stream_delta(ngx_http_llm_call_t *call, json_t *data)
{
    json_t                           *delta, *v;
    ngx_int_t                         index, *tool;
    ngx_str_t                         type, s;
    ngx_http_llm_anthropic_stream_t  *st;

    st = call->state;

    delta = json_object_get(data, "delta");
    v = json_object_get(data, "index");

    if (!json_is_object(delta) || !json_is_integer(v)) {
        return NGX_DECLINED;
    }

    index = (ngx_int_t) json_integer_value(v);

    if (ngx_http_llm_stream_role(call) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_json_get_str(delta, "type", &type);

    if (ngx_http_llm_anthropic_eq(&type, "text_delta")) {
        ngx_http_llm_json_get_str(delta, "text", &s);

        if (s.len == 0) {
            return NGX_OK;
        }

        return ngx_http_llm_anthropic_emit_text(call, &s);
    }

    if (!ngx_http_llm_anthropic_eq(&type, "input_json_delta")) {
        /* thinking_delta, signature_delta: nothing in OpenAI format */
        return NGX_OK;
    }

    tool = st->tools.elts;

    if (index < 0 || (ngx_uint_t) index >= st->tools.nelts
        || tool[index] == -1)
    {
        return NGX_DECLINED;
    }

    ngx_http_llm_json_get_str(delta, "partial_json", &s);

    if (s.len == 0) {
        return NGX_OK;
    }

    return ngx_http_llm_anthropic_emit_tool(call, tool[index], NULL, NULL, &s);
}


static ngx_int_t
ngx_http_llm_anthropic_stream_stop(ngx_http_llm_call_t *call, json_t *data)
{
    json_t      *chunk, *delta, *choice, *usage, *v;
    ngx_str_t    reason;
    const char  *finish;

    usage = json_object_get(data, "usage");
    v = json_object_get(usage, "output_tokens");

    if (json_is_integer(v)) {
        call->usage.completion = json_integer_value(v);
    }

    /* newer API versions repeat the cumulative input counts here */

    v = json_object_get(usage, "input_tokens");

    if (json_is_integer(v)) {
        v = json_object_get(usage, "cache_read_input_tokens");

        call->usage.cached = json_integer_value(v);
        call->usage.prompt =
            json_integer_value(json_object_get(usage, "input_tokens"))
            + json_integer_value(json_object_get(usage,
                                           "cache_creation_input_tokens"))
            + call->usage.cached;
    }

    ngx_http_llm_json_get_str(json_object_get(data, "delta"), "stop_reason",
                              &reason);

    if (reason.len == 0) {
        return NGX_OK;
    }

    if (ngx_http_llm_stream_role(call) != NGX_OK) {
        return NGX_ERROR;
    }

    finish = ngx_http_llm_anthropic_finish(&reason);
    call->finish_reason.data = (u_char *) finish;
    call->finish_reason.len = ngx_strlen(finish);

    chunk = ngx_http_llm_chunk_new(call, &delta);
    if (chunk == NULL) {
        return NGX_ERROR;
    }

    choice = json_array_get(json_object_get(chunk, "choices"), 0);

    if (json_object_set_new(choice, "finish_reason", json_string(finish))
        != 0)
    {
        json_decref(chunk);
        return NGX_ERROR;
    }

    return ngx_http_llm_stream_emit(call, chunk);
}


static ngx_int_t
ngx_http_llm_anthropic_stream_error(ngx_http_llm_call_t *call, json_t *data)
{
    json_t     *res, *error, *e;
    ngx_str_t   type, message;

    e = json_object_get(data, "error");

    ngx_http_llm_json_get_str(e, "type", &type);
    ngx_http_llm_json_get_str(e, "message", &message);

    if (type.len == 0) {
        ngx_str_set(&type, "api_error");
    }

    if (message.len == 0) {
        ngx_str_set(&message, "anthropic stream error");
    }

    ngx_log_error(NGX_LOG_ERR, call->log, 0,
                  "llm provider \"%V\" model \"%V\" stream error: %V: %V",
                  &call->provider->name,
                  ngx_http_llm_escape(call->pool, &call->model, 1),
                  ngx_http_llm_escape(call->pool, &type, 1),
                  ngx_http_llm_escape(call->pool, &message, 1));

    res = json_object();
    error = json_object();

    if (json_object_set_new(res, "error", error) != 0
        || json_object_set_new(error, "message",
                               ngx_http_llm_json_str(&message))
           != 0
        || json_object_set_new(error, "type", ngx_http_llm_json_str(&type))
           != 0
        || json_object_set_new(error, "param", json_null()) != 0
        || json_object_set_new(error, "code", json_null()) != 0)
    {
        json_decref(res);
        return NGX_ERROR;
    }

    if (ngx_http_llm_stream_emit(call, res) != NGX_OK) {
        return NGX_ERROR;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_llm_anthropic_emit_text(ngx_http_llm_call_t *call, ngx_str_t *text)
{
    json_t  *chunk, *delta;

    chunk = ngx_http_llm_chunk_new(call, &delta);
    if (chunk == NULL) {
        return NGX_ERROR;
    }

    if (json_object_set_new(delta, "content", ngx_http_llm_json_str(text))
        != 0)
    {
        json_decref(chunk);
        return NGX_ERROR;
    }

    return ngx_http_llm_stream_emit(call, chunk);
}


/* a tool call delta; id and name only in the first one of a call */

static ngx_int_t
ngx_http_llm_anthropic_emit_tool(ngx_http_llm_call_t *call, ngx_int_t index,
    ngx_str_t *id, ngx_str_t *name, ngx_str_t *args)
{
    json_t  *chunk, *delta, *calls, *tc, *fn;

    chunk = ngx_http_llm_chunk_new(call, &delta);
    if (chunk == NULL) {
        return NGX_ERROR;
    }

    calls = json_array();
    if (json_object_set_new(delta, "tool_calls", calls) != 0) {
        goto failed;
    }

    tc = json_object();
    if (json_array_append_new(calls, tc) != 0
        || json_object_set_new(tc, "index", json_integer(index)) != 0)
    {
        goto failed;
    }

    if (id
        && (json_object_set_new(tc, "id", ngx_http_llm_json_str(id)) != 0
            || json_object_set_new(tc, "type", json_string("function"))
               != 0))
    {
        goto failed;
    }

    fn = json_object();
    if (json_object_set_new(tc, "function", fn) != 0) {
        goto failed;
    }

    if (name
        && json_object_set_new(fn, "name", ngx_http_llm_json_str(name))
           != 0)
    {
        goto failed;
    }

    if (json_object_set_new(fn, "arguments", ngx_http_llm_json_str(args))
        != 0)
    {
        goto failed;
    }

    return ngx_http_llm_stream_emit(call, chunk);

failed:

    json_decref(chunk);
    return NGX_ERROR;
}


static void
ngx_http_llm_anthropic_map_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err)
{
    u_char     *p;
    json_t     *root, *error;
    ngx_str_t   s;

    ngx_http_llm_error_defaults(status, err);

    if (status == NGX_HTTP_LLM_OVERLOADED) {
        err->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_str_set(&err->type, "overloaded_error");
    }

    root = NULL;

    if (body->len) {
        root = json_loadb((char *) body->data, body->len, 0, NULL);
    }

    error = json_object_get(root, "error");

    ngx_http_llm_json_get_str(error, "type", &s);

    if (s.len) {
        p = ngx_pstrdup(call->pool, &s);
        if (p != NULL) {
            err->type.data = p;
            err->type.len = s.len;
        }
    }

    ngx_http_llm_json_get_str(error, "message", &s);

    if (s.len) {
        p = ngx_pstrdup(call->pool, &s);
        if (p != NULL) {
            err->message.data = p;
            err->message.len = s.len;
        }

    } else {
        p = ngx_pnalloc(call->pool, sizeof("anthropic returned HTTP ") - 1
                                    + NGX_INT_T_LEN);
        if (p != NULL) {
            err->message.data = p;
            err->message.len = ngx_sprintf(p, "anthropic returned HTTP %ui",
                                           status)
                               - p;
        }
    }

    json_decref(root);
}
