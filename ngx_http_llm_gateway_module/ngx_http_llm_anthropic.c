
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_driver.h"


/* content block indexes beyond this are taken for a broken stream */
#define NGX_HTTP_LLM_ANTHROPIC_MAX_BLOCKS  4096

/* Anthropic's "overloaded": no nginx name */
#define NGX_HTTP_LLM_ANTHROPIC_OVERLOADED  529


typedef struct {
    ngx_array_t                 tools;     /* ngx_int_t per block, -1: none */
    ngx_int_t                   ntools;
} ngx_http_llm_anthropic_stream_t;


static ngx_int_t ngx_http_llm_anthropic_build_request(
    ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_anthropic_system(ngx_http_llm_call_t *call,
    json_t *body, ngx_str_t *text);
static ngx_int_t ngx_http_llm_anthropic_tool_use(json_t *blocks,
    ngx_str_t *id, ngx_str_t *name, json_t *input);
static ngx_int_t ngx_http_llm_anthropic_tool_result(
    ngx_http_llm_call_t *call, json_t *messages, size_t n, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_text_block(json_t *blocks,
    u_char *text, size_t len);
static ngx_int_t ngx_http_llm_anthropic_image_block(ngx_http_llm_call_t *call,
    json_t *part, json_t *blocks);
static ngx_int_t ngx_http_llm_anthropic_params(ngx_http_llm_call_t *call,
    json_t *req, json_t *body);
static ngx_int_t ngx_http_llm_anthropic_tools(ngx_http_llm_call_t *call,
    json_t *req, json_t *body);
static ngx_int_t ngx_http_llm_anthropic_tool_choice(json_t *req,
    json_t *body);

static ngx_int_t ngx_http_llm_anthropic_parse_response(
    ngx_http_llm_call_t *call, json_t *in, json_t **out);
static json_t *ngx_http_llm_anthropic_message(ngx_http_llm_call_t *call,
    json_t *content);
static json_t *ngx_http_llm_anthropic_usage(ngx_http_llm_call_t *call,
    json_t *usage);
static void ngx_http_llm_anthropic_tokens(ngx_http_llm_call_t *call,
    json_t *usage, ngx_uint_t all);
static const char *ngx_http_llm_anthropic_finish(ngx_str_t *reason);

static ngx_int_t ngx_http_llm_anthropic_parse_stream_event(
    ngx_http_llm_call_t *call, ngx_str_t *event, ngx_str_t *data);
static ngx_int_t ngx_http_llm_anthropic_build_raw(ngx_http_llm_call_t *call);
static void ngx_http_llm_anthropic_write_raw(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, ngx_int_t max, ngx_str_t *system,
    ngx_array_t *turns, ngx_str_t *temperature, ngx_str_t *top_p);
static void ngx_http_llm_anthropic_write_answer(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, ngx_str_t *id, ngx_str_t *model, ngx_str_t *text,
    const char *finish, ngx_uint_t cached);
static ngx_int_t ngx_http_llm_anthropic_meta(ngx_http_llm_call_t *call,
    ngx_str_t *id, ngx_str_t *model, ngx_str_t *reason, const char **finish);
static ngx_int_t ngx_http_llm_anthropic_parse_raw(ngx_http_llm_call_t *call,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_anthropic_stream_raw(ngx_http_llm_call_t *call,
    ngx_str_t *data);
static void ngx_http_llm_anthropic_tokens_raw(ngx_http_llm_call_t *call,
    ngx_str_t *usage, ngx_uint_t all);
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
static ngx_int_t ngx_http_llm_anthropic_emit_text(ngx_http_llm_call_t *call,
    ngx_str_t *text);
static ngx_int_t ngx_http_llm_anthropic_emit_tool(ngx_http_llm_call_t *call,
    ngx_int_t index, ngx_str_t *id, ngx_str_t *name, ngx_str_t *args);

static void ngx_http_llm_anthropic_map_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err);
static ngx_msec_t ngx_http_llm_anthropic_pause(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_list_t *headers);


static ngx_http_llm_turns_t  ngx_http_llm_anthropic_turns = {
    .key = "content",
    .assistant = "assistant",
    .system = ngx_http_llm_anthropic_system,
    .text = ngx_http_llm_anthropic_text_block,
    .image = ngx_http_llm_anthropic_image_block,
    .tool_call = ngx_http_llm_anthropic_tool_use,
    .tool_result = ngx_http_llm_anthropic_tool_result
};


static ngx_str_t  ngx_http_llm_anthropic_headers[] = {
    ngx_string("anthropic-version"), ngx_string("2023-06-01"),
    ngx_null_string, ngx_null_string
};


ngx_http_llm_driver_t  ngx_http_llm_anthropic_driver = {
    .name = ngx_string("anthropic"),
    .auth_header = ngx_string("x-api-key"),
    .extra_headers = ngx_http_llm_anthropic_headers,
    .framing = NGX_HTTP_LLM_FRAMING_SSE,
    .build_request = ngx_http_llm_anthropic_build_request,
    .parse_raw = ngx_http_llm_anthropic_parse_raw,
    .parse_response = ngx_http_llm_anthropic_parse_response,
    .parse_stream_event = ngx_http_llm_anthropic_parse_stream_event,
    .map_error = ngx_http_llm_anthropic_map_error,
    .pause = ngx_http_llm_anthropic_pause
};


static ngx_int_t
ngx_http_llm_anthropic_build_request(ngx_http_llm_call_t *call)
{
    json_t     *req, *body, *turns;
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

    req = ngx_http_llm_call_tree(call);
    if (req == NULL) {
        return NGX_ABORT;
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

    turns = json_array();
    if (json_object_set_new(body, "messages", turns) != 0) {
        json_decref(body);
        return NGX_ERROR;
    }

    rc = ngx_http_llm_turns(call, req, body, turns,
                            &ngx_http_llm_anthropic_turns);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_anthropic_params(call, req, body);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_anthropic_tools(call, req, body);
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
    u_char              *pos, num[32];
    double               temp;
    ngx_str_t            m[8], msg, f[2], *turn, system, temperature;
    ngx_int_t            max;
    ngx_uint_t           i, found, prev, count, n;
    ngx_array_t          turns;
    ngx_http_llm_out_t   o;

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

    if (call->max_tokens > 0) {
        max = call->max_tokens;
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

    /* the turns: role and content of each, as JSON strings */

    if (m[1].len < 2 || m[1].data[0] != '[') {
        return NGX_DECLINED;
    }

    if (ngx_array_init(&turns, call->pool, 8, 2 * sizeof(ngx_str_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    ngx_str_null(&system);

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

        if (ngx_http_llm_str_is(&f[0], "\"system\"")
            || ngx_http_llm_str_is(&f[0], "\"developer\""))
        {
            if (system.len) {
                return NGX_DECLINED;
            }

            system = f[1];
            continue;
        }

        if (ngx_http_llm_str_is(&f[0], "\"user\"")) {
            n = 1;

        } else if (ngx_http_llm_str_is(&f[0], "\"assistant\"")) {
            n = 2;

        } else {
            return NGX_DECLINED;
        }

        if (n == prev) {
            return NGX_DECLINED;
        }

        prev = n;

        turn = ngx_array_push(&turns);
        if (turn == NULL) {
            return NGX_ERROR;
        }

        turn[0] = f[0];
        turn[1] = f[1];
    }

    if (prev == 0) {
        return NGX_DECLINED;
    }

    o.pos = NULL;
    o.len = 0;

    ngx_http_llm_anthropic_write_raw(call, &o, max, &system, &turns,
                                     &temperature, &m[5]);

    call->raw_body.data = ngx_http_llm_out_alloc(&o, call->pool);
    if (call->raw_body.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_anthropic_write_raw(call, &o, max, &system, &turns,
                                     &temperature, &m[5]);

    call->raw_body.len = o.pos - call->raw_body.data;

    return NGX_OK;
}


/* texts and the role are copied as the JSON strings they are */

static void
ngx_http_llm_anthropic_write_raw(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, ngx_int_t max, ngx_str_t *system,
    ngx_array_t *turns, ngx_str_t *temperature, ngx_str_t *top_p)
{
    ngx_str_t   *turn;
    ngx_uint_t   i;

    ngx_http_llm_out_lit(o, "{\"model\":");
    ngx_http_llm_out_string(o, &call->model);
    ngx_http_llm_out_lit(o, ",\"max_tokens\":");
    ngx_http_llm_out_int(o, max);

    if (system->len) {
        ngx_http_llm_out_lit(o, ",\"system\":");
        ngx_http_llm_out_str(o, system);
    }

    ngx_http_llm_out_lit(o, ",\"messages\":[");

    turn = turns->elts;

    for (i = 0; i < turns->nelts; i++) {
        if (i) {
            ngx_http_llm_out_lit(o, ",");
        }

        ngx_http_llm_out_lit(o, "{\"role\":");
        ngx_http_llm_out_str(o, &turn[2 * i]);
        ngx_http_llm_out_lit(o, ",\"content\":[{\"type\":\"text\",\"text\":");
        ngx_http_llm_out_str(o, &turn[2 * i + 1]);
        ngx_http_llm_out_lit(o, "}]}");
    }

    ngx_http_llm_out_lit(o, "]");

    if (temperature->len) {
        ngx_http_llm_out_lit(o, ",\"temperature\":");
        ngx_http_llm_out_str(o, temperature);
    }

    if (top_p->len) {
        ngx_http_llm_out_lit(o, ",\"top_p\":");
        ngx_http_llm_out_str(o, top_p);
    }

    if (call->stream) {
        ngx_http_llm_out_lit(o, ",\"stream\":true");
    }

    ngx_http_llm_out_lit(o, "}");
}


/*
 * System and developer messages go to the top level "system", joined;
 * the rest become turns of content blocks, consecutive turns of one role
 * merged, as Anthropic wants user and assistant to alternate.
 */

static ngx_int_t
ngx_http_llm_anthropic_system(ngx_http_llm_call_t *call, json_t *body,
    ngx_str_t *text)
{
    u_char     *p;
    ngx_str_t   system;

    ngx_http_llm_json_get_str(body, "system", &system);

    if (system.len == 0) {
        return json_object_set_new(body, "system",
                                   ngx_http_llm_json_str(text))
               ? NGX_ERROR : NGX_OK;
    }

    p = ngx_pnalloc(call->pool, system.len + 2 + text->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    system.data = ngx_cpymem(p, system.data, system.len);
    *system.data++ = '\n';
    *system.data++ = '\n';
    ngx_memcpy(system.data, text->data, text->len);

    system.len += 2 + text->len;
    system.data = p;

    return json_object_set_new(body, "system", ngx_http_llm_json_str(&system))
           ? NGX_ERROR : NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_tool_use(json_t *blocks, ngx_str_t *id,
    ngx_str_t *name, json_t *input)
{
    json_t  *block;

    block = json_object();
    if (json_object_set_new(block, "input", input) != 0) {
        json_decref(block);
        return NGX_ERROR;
    }

    if (json_array_append_new(blocks, block) != 0) {
        return NGX_ERROR;
    }

    if (json_object_set_new(block, "type", json_string("tool_use")) != 0
        || json_object_set_new(block, "id", ngx_http_llm_json_str(id)) != 0
        || json_object_set_new(block, "name", ngx_http_llm_json_str(name))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_anthropic_tool_result(ngx_http_llm_call_t *call,
    json_t *messages, size_t n, json_t *blocks)
{
    json_t     *msg, *block;
    ngx_str_t   id, text;

    msg = json_array_get(messages, n);

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
ngx_http_llm_anthropic_params(ngx_http_llm_call_t *call, json_t *req,
    json_t *body)
{
    double      temp;
    json_t     *v, *stop, *meta;
    ngx_str_t   user;
    json_int_t  max;

    max = ngx_http_llm_max_tokens(req);

    if (call->max_tokens > 0) {
        max = call->max_tokens;
    }

    if (json_object_set_new(body, "max_tokens",
                            json_integer(max ? max
                                         : NGX_HTTP_LLM_DEFAULT_MAX_TOKENS))
        != 0)
    {
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

    if (ngx_http_llm_stop(req, &stop) != NGX_OK
        || (stop && json_object_set_new(body, "stop_sequences", stop) != 0))
    {
        return NGX_ERROR;
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
ngx_http_llm_anthropic_tools(ngx_http_llm_call_t *call, json_t *req,
    json_t *body)
{
    json_t  *tools;

    tools = ngx_http_llm_tools(call, req, "input_schema", 1);
    if (tools == NULL) {
        return NGX_ERROR;
    }

    if (json_array_size(tools) == 0) {
        json_decref(tools);
        return NGX_OK;
    }

    if (json_object_set_new(body, "tools", tools) != 0) {
        return NGX_ERROR;
    }

    return ngx_http_llm_anthropic_tool_choice(req, body);
}


static ngx_int_t
ngx_http_llm_anthropic_tool_choice(json_t *req, json_t *body)
{
    json_t      *choice, *parallel;
    ngx_str_t    name;
    ngx_uint_t   tc;
    const char  *mode;

    tc = ngx_http_llm_tool_choice(req, &name);
    parallel = json_object_get(req, "parallel_tool_calls");

    switch (tc) {

    case NGX_HTTP_LLM_TOOLS_REQUIRED:
        mode = "any";
        break;

    case NGX_HTTP_LLM_TOOLS_NONE:
        mode = "none";
        break;

    case NGX_HTTP_LLM_TOOLS_FUNCTION:
        mode = "tool";
        break;

    case NGX_HTTP_LLM_TOOLS_AUTO:
        mode = "auto";
        break;

    default:
        if (!json_is_false(parallel)) {
            return NGX_OK;
        }

        mode = "auto";
    }

    choice = json_object();
    if (json_object_set_new(body, "tool_choice", choice) != 0
        || json_object_set_new(choice, "type", json_string(mode)) != 0)
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
        && tc != NGX_HTTP_LLM_TOOLS_NONE
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

    if (!ngx_http_llm_str_is(&type, "message")
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
    ngx_int_t            n[4];
    ngx_str_t            m[6], block, b[2], u[4], id, model, reason;
    ngx_uint_t           i;
    const char          *finish;
    ngx_http_llm_out_t   o;

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
        || !ngx_http_llm_str_is(&m[0], "\"message\"")
        || ngx_http_llm_json_only(&m[3], &block) != NGX_OK
        || ngx_http_llm_json_get(block.data, block.data + block.len,
                                 text, b)
           != NGX_OK
        || !ngx_http_llm_str_is(&b[0], "\"text\"")
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

    o.pos = NULL;
    o.len = 0;

    ngx_http_llm_anthropic_write_answer(call, &o, &id, &model, &b[1], finish,
                                        ngx_http_llm_json_int(&u[3]) >= 0);

    call->answer.data = ngx_http_llm_out_alloc(&o, call->pool);
    if (call->answer.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_anthropic_write_answer(call, &o, &id, &model, &b[1], finish,
                                        ngx_http_llm_json_int(&u[3]) >= 0);

    call->answer.len = o.pos - call->answer.data;

    return NGX_OK;
}


/* text is the block's text, the JSON string it is */

static void
ngx_http_llm_anthropic_write_answer(ngx_http_llm_call_t *call,
    ngx_http_llm_out_t *o, ngx_str_t *id, ngx_str_t *model, ngx_str_t *text,
    const char *finish, ngx_uint_t cached)
{
    ngx_http_llm_out_lit(o, "{\"id\":");
    ngx_http_llm_out_string(o, id);
    ngx_http_llm_out_lit(o, ",\"object\":\"chat.completion\",\"created\":");
    ngx_http_llm_out_int(o, call->created);
    ngx_http_llm_out_lit(o, ",\"model\":");
    ngx_http_llm_out_string(o, model);
    ngx_http_llm_out_lit(o, ",\"choices\":[{\"index\":0,\"message\":"
                            "{\"role\":\"assistant\",\"content\":");
    ngx_http_llm_out_str(o, text);
    ngx_http_llm_out_lit(o, "},\"logprobs\":null,\"finish_reason\":\"");
    ngx_http_llm_out_raw(o, finish, ngx_strlen(finish));
    ngx_http_llm_out_lit(o, "\"}],\"usage\":{\"prompt_tokens\":");
    ngx_http_llm_out_int(o, call->usage.prompt);
    ngx_http_llm_out_lit(o, ",\"completion_tokens\":");
    ngx_http_llm_out_int(o, call->usage.completion);
    ngx_http_llm_out_lit(o, ",\"total_tokens\":");
    ngx_http_llm_out_int(o, call->usage.prompt + call->usage.completion);

    if (cached) {
        ngx_http_llm_out_lit(o, ",\"prompt_tokens_details\":"
                                "{\"cached_tokens\":");
        ngx_http_llm_out_int(o, call->usage.cached);
        ngx_http_llm_out_lit(o, "}");
    }

    ngx_http_llm_out_lit(o, "}}");
}


static json_t *
ngx_http_llm_anthropic_message(ngx_http_llm_call_t *call, json_t *content)
{
    size_t      i;
    json_t     *block, *message, *calls, *tc;
    ngx_str_t   type, text, id, name;

    if (ngx_http_llm_text_join(call->pool, content, "text", &text) != NGX_OK)
    {
        return NULL;
    }

    message = json_object();
    if (message == NULL) {
        return NULL;
    }

    calls = NULL;

    json_array_foreach(content, i, block) {
        ngx_http_llm_json_get_str(block, "type", &type);

        if (!ngx_http_llm_str_is(&type, "tool_use")) {
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
    json_t  *v;

    ngx_http_llm_anthropic_tokens(call, usage, 1);

    v = json_object_get(usage, "cache_read_input_tokens");

    return ngx_http_llm_usage_json(call->usage.prompt, call->usage.completion,
                                   call->usage.prompt
                                   + call->usage.completion,
                                   json_is_integer(v) ? call->usage.cached
                                                      : -1,
                                   -1);
}


/*
 * Anthropic's counts into call->usage: the prompt is the input with the
 * cache writes and reads.  all: every count, a missing one 0; else only
 * those given (message_delta repeats some).
 */

static void
ngx_http_llm_anthropic_tokens(ngx_http_llm_call_t *call, json_t *usage,
    ngx_uint_t all)
{
    json_t  *v;

    v = json_object_get(usage, "output_tokens");

    if (all || json_is_integer(v)) {
        call->usage.completion = json_integer_value(v);
    }

    if (!all && !json_is_integer(json_object_get(usage, "input_tokens"))) {
        return;
    }

    call->usage.cached =
        json_integer_value(json_object_get(usage, "cache_read_input_tokens"));
    call->usage.prompt =
        json_integer_value(json_object_get(usage, "input_tokens"))
        + json_integer_value(json_object_get(usage,
                                             "cache_creation_input_tokens"))
        + call->usage.cached;
}


static const char *
ngx_http_llm_anthropic_finish(ngx_str_t *reason)
{
    if (ngx_http_llm_str_is(reason, "max_tokens")) {
        return "length";
    }

    if (ngx_http_llm_str_is(reason, "tool_use")) {
        return "tool_calls";
    }

    if (ngx_http_llm_str_is(reason, "refusal")) {
        return "content_filter";
    }

    return "stop";
}


static ngx_int_t
ngx_http_llm_anthropic_parse_stream_event(ngx_http_llm_call_t *call,
    ngx_str_t *event, ngx_str_t *data)
{
    json_t                           *root, *e;
    ngx_int_t                         rc;
    ngx_str_t                         type, code, message;
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

    if (ngx_http_llm_str_is(event, "ping")
        || ngx_http_llm_str_is(event, "content_block_stop"))
    {
        return NGX_OK;
    }

    if (ngx_http_llm_str_is(event, "content_block_delta")) {
        rc = ngx_http_llm_anthropic_text_delta(call, data);

    } else {
        rc = ngx_http_llm_anthropic_stream_raw(call, data);
    }

    if (rc != NGX_DECLINED) {
        return rc;
    }

    root = ngx_http_llm_json_object(data);
    if (root == NULL) {
        return NGX_DECLINED;
    }

    ngx_http_llm_json_get_str(root, "type", &type);

    if (type.len == 0) {
        type = *event;
    }

    if (ngx_http_llm_str_is(&type, "message_start")) {
        rc = ngx_http_llm_anthropic_stream_start(call,
                                          json_object_get(root, "message"));

    } else if (ngx_http_llm_str_is(&type, "content_block_start")) {
        rc = ngx_http_llm_anthropic_stream_block(call, root);

    } else if (ngx_http_llm_str_is(&type, "content_block_delta")) {
        rc = ngx_http_llm_anthropic_stream_delta(call, root);

    } else if (ngx_http_llm_str_is(&type, "message_delta")) {
        rc = ngx_http_llm_anthropic_stream_stop(call, root);

    } else if (ngx_http_llm_str_is(&type, "message_stop")) {
        rc = NGX_DONE;

    } else if (ngx_http_llm_str_is(&type, "error")) {
        e = json_object_get(root, "error");

        ngx_http_llm_json_get_str(e, "type", &type);
        ngx_http_llm_json_get_str(e, "message", &message);

        if (type.len == 0) {
            ngx_str_set(&type, "api_error");
        }

        if (message.len == 0) {
            ngx_str_set(&message, "anthropic stream error");
        }

        ngx_str_null(&code);

        rc = ngx_http_llm_stream_error(call, &type, &code, &message);

    } else {
        /* ping, content_block_stop, and events added later */
        rc = NGX_OK;
    }

    json_decref(root);

    return rc;
}


/*
 * The other events of a text stream (message_start, the start of a text
 * block, message_delta) read without a tree, as the general path reads
 * them; NGX_DECLINED: another event, or one written otherwise, for the
 * general path.
 */

static ngx_int_t
ngx_http_llm_anthropic_stream_raw(ngx_http_llm_call_t *call, ngx_str_t *data)
{
    ngx_int_t    index;
    ngx_str_t    m[6], v[3], text, *reason;
    const char  *finish;

    static const char  *names[] = {
        "type", "message", "content_block", "index", "delta", "usage", NULL
    };

    static const char  *message[] = { "id", "model", "usage", NULL };
    static const char  *block[] = { "type", "text", NULL };
    static const char  *delta[] = { "stop_reason", NULL };

    if (ngx_http_llm_json_get(data->data, data->data + data->len, names, m)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (ngx_http_llm_str_is(&m[0], "\"message_start\"")) {

        if (m[1].len == 0 || m[1].data[0] != '{'
            || ngx_http_llm_json_get(m[1].data, m[1].data + m[1].len,
                                     message, v)
               != NGX_OK)
        {
            return NGX_DECLINED;
        }

        if (ngx_http_llm_json_string(call->pool, &v[0], &text) == NGX_OK
            && ngx_http_llm_str_keep(call->pool, &call->id, &text) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_llm_json_string(call->pool, &v[1], &text) == NGX_OK
            && ngx_http_llm_str_keep(call->pool, &call->resp_model, &text)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (v[2].len && v[2].data[0] == '{') {
            ngx_http_llm_anthropic_tokens_raw(call, &v[2], 1);
        }

        return ngx_http_llm_stream_role(call);
    }

    if (ngx_http_llm_str_is(&m[0], "\"content_block_start\"")) {

        index = ngx_http_llm_json_int(&m[3]);

        if (index < 0 || index >= NGX_HTTP_LLM_ANTHROPIC_MAX_BLOCKS
            || m[2].len == 0 || m[2].data[0] != '{'
            || ngx_http_llm_json_get(m[2].data, m[2].data + m[2].len,
                                     block, v)
               != NGX_OK
            || !ngx_http_llm_str_is(&v[0], "\"text\""))
        {
            return NGX_DECLINED;
        }

        if (ngx_http_llm_stream_role(call) != NGX_OK) {
            return NGX_ERROR;
        }

        if (ngx_http_llm_json_string(call->pool, &v[1], &text) != NGX_OK
            || text.len == 0)
        {
            return NGX_OK;
        }

        return ngx_http_llm_anthropic_emit_text(call, &text);
    }

    if (ngx_http_llm_str_is(&m[0], "\"message_delta\"")) {

        if (m[5].len && m[5].data[0] == '{') {
            ngx_http_llm_anthropic_tokens_raw(call, &m[5], 0);
        }

        reason = &v[0];
        ngx_str_null(reason);

        if (m[4].len && m[4].data[0] == '{'
            && ngx_http_llm_json_get(m[4].data, m[4].data + m[4].len, delta,
                                     v)
               == NGX_OK
            && ngx_http_llm_json_string(call->pool, &v[0], &text) == NGX_OK)
        {
            reason = &text;
        }

        if (reason->len == 0) {
            return NGX_OK;
        }

        if (ngx_http_llm_stream_role(call) != NGX_OK) {
            return NGX_ERROR;
        }

        finish = ngx_http_llm_anthropic_finish(reason);
        call->finish_reason.data = (u_char *) finish;
        call->finish_reason.len = ngx_strlen(finish);

        return ngx_http_llm_stream_finish(call, 0, finish);
    }

    return NGX_DECLINED;
}


/* ngx_http_llm_anthropic_tokens() of a usage object's span */

static void
ngx_http_llm_anthropic_tokens_raw(ngx_http_llm_call_t *call,
    ngx_str_t *usage, ngx_uint_t all)
{
    ngx_int_t  n[4];
    ngx_str_t  v[4];

    static const char  *names[] = {
        "output_tokens", "input_tokens", "cache_read_input_tokens",
        "cache_creation_input_tokens", NULL
    };

    if (ngx_http_llm_json_get(usage->data, usage->data + usage->len, names,
                              v)
        != NGX_OK)
    {
        return;
    }

    n[0] = ngx_http_llm_json_int(&v[0]);
    n[1] = ngx_http_llm_json_int(&v[1]);
    n[2] = ngx_http_llm_json_int(&v[2]);
    n[3] = ngx_http_llm_json_int(&v[3]);

    if (all || n[0] >= 0) {
        call->usage.completion = ngx_max(n[0], 0);
    }

    if (!all && n[1] < 0) {
        return;
    }

    call->usage.cached = ngx_max(n[2], 0);
    call->usage.prompt = ngx_max(n[1], 0) + ngx_max(n[3], 0)
                         + call->usage.cached;
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
        || !ngx_http_llm_str_is(&d[0], "\"text_delta\"")
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
        ngx_http_llm_anthropic_tokens(call, usage, 1);
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

    if (ngx_http_llm_str_is(&type, "text")) {
        ngx_http_llm_json_get_str(block, "text", &text);

        if (text.len == 0) {
            return NGX_OK;
        }

        return ngx_http_llm_anthropic_emit_text(call, &text);
    }

    if (!ngx_http_llm_str_is(&type, "tool_use")) {
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

    if (ngx_http_llm_str_is(&type, "text_delta")) {
        ngx_http_llm_json_get_str(delta, "text", &s);

        if (s.len == 0) {
            return NGX_OK;
        }

        return ngx_http_llm_anthropic_emit_text(call, &s);
    }

    if (!ngx_http_llm_str_is(&type, "input_json_delta")) {
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
    ngx_str_t    reason;
    const char  *finish;

    /* newer API versions repeat the cumulative input counts here */

    ngx_http_llm_anthropic_tokens(call, json_object_get(data, "usage"), 0);

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

    return ngx_http_llm_stream_finish(call, 0, finish);
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
    json_t  *root;

    ngx_http_llm_error_defaults(status, err);

    if (status == NGX_HTTP_LLM_ANTHROPIC_OVERLOADED) {
        err->status = NGX_HTTP_SERVICE_UNAVAILABLE;
        ngx_str_set(&err->type, "overloaded_error");
    }

    root = NULL;

    if (body->len) {
        root = json_loadb((char *) body->data, body->len, 0, NULL);
    }

    ngx_http_llm_error_read(call, status, json_object_get(root, "error"),
                            "type", NULL, err);

    json_decref(root);
}


/* "overloaded" asks for a pause as a 503 does */

static ngx_msec_t
ngx_http_llm_anthropic_pause(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_list_t *headers)
{
    ngx_msec_t  ms;

    if (status != NGX_HTTP_TOO_MANY_REQUESTS
        && status != NGX_HTTP_SERVICE_UNAVAILABLE
        && status != NGX_HTTP_LLM_ANTHROPIC_OVERLOADED)
    {
        return 0;
    }

    if (ngx_http_llm_pause_retry_after(headers, &ms) != NGX_OK) {
        return 0;
    }

    return ms;
}
