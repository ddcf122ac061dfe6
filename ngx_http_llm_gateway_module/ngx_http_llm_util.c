
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


typedef struct {
    ngx_pool_t  *pool;
    u_char      *start;
    u_char      *pos;
    u_char      *end;
} ngx_http_llm_dump_t;


static int ngx_http_llm_dump_cb(const char *buffer, size_t size, void *data);
static ngx_int_t ngx_http_llm_turn_user(ngx_http_llm_call_t *call,
    ngx_http_llm_turns_t *conv, json_t *msg, json_t *items);
static ngx_int_t ngx_http_llm_turn_assistant(ngx_http_llm_call_t *call,
    ngx_http_llm_turns_t *conv, json_t *msg, json_t *items);


static int
ngx_http_llm_dump_cb(const char *buffer, size_t size, void *data)
{
    ngx_http_llm_dump_t  *d = data;

    size_t   len, need;
    u_char  *p;

    if ((size_t) (d->end - d->pos) < size) {
        len = d->pos - d->start;
        need = ngx_max(2 * (size_t) (d->end - d->start), len + size);

        p = ngx_pnalloc(d->pool, need);
        if (p == NULL) {
            return -1;
        }

        p = ngx_cpymem(p, d->start, len);

        if (d->start) {
            ngx_pfree(d->pool, d->start);
        }

        d->start = p - len;
        d->pos = p;
        d->end = d->start + need;
    }

    d->pos = ngx_cpymem(d->pos, buffer, size);

    return 0;
}


ngx_int_t
ngx_http_llm_json_dump(ngx_pool_t *pool, json_t *json, ngx_str_t *out)
{
    ngx_http_llm_dump_t  d;

    d.pool = pool;
    d.start = ngx_pnalloc(pool, 1024);
    if (d.start == NULL) {
        return NGX_ERROR;
    }

    d.pos = d.start;
    d.end = d.start + 1024;

    if (json_dump_callback(json, ngx_http_llm_dump_cb, &d,
                           JSON_COMPACT | JSON_REAL_PRECISION(10))
        != 0)
    {
        return NGX_ERROR;
    }

    out->data = d.start;
    out->len = d.pos - d.start;

    return NGX_OK;
}


json_t *
ngx_http_llm_json_str(ngx_str_t *s)
{
    return json_stringn(s->data ? (const char *) s->data : "", s->len);
}


json_t *
ngx_http_llm_json_object(ngx_str_t *text)
{
    json_t  *root;

    root = json_loadb((char *) text->data, text->len, 0, NULL);

    if (!json_is_object(root)) {
        json_decref(root);
        return NULL;
    }

    return root;
}


void
ngx_http_llm_json_get_str(json_t *obj, const char *key, ngx_str_t *s)
{
    json_t  *v;

    v = json_is_object(obj) ? json_object_get(obj, key) : NULL;

    if (json_is_string(v)) {
        s->data = (u_char *) json_string_value(v);
        s->len = json_string_length(v);
        return;
    }

    ngx_str_null(s);
}


ngx_int_t
ngx_http_llm_make_id(ngx_http_llm_call_t *call, const char *prefix,
    ngx_str_t *id)
{
    size_t       len;
    u_char      *p;
    ngx_uint_t   i;

    len = ngx_strlen(prefix);

    p = ngx_pnalloc(call->pool, len + 24);
    if (p == NULL) {
        return NGX_ERROR;
    }

    id->data = p;
    p = ngx_cpymem(p, prefix, len);

    for (i = 0; i < 3; i++) {
        p = ngx_sprintf(p, "%08xD", (uint32_t) ngx_random());
    }

    id->len = p - id->data;

    return NGX_OK;
}


json_t *
ngx_http_llm_chunk_new(ngx_http_llm_call_t *call, json_t **delta)
{
    json_t     *chunk, *choice, *choices, *d;
    ngx_str_t  *model;

    model = call->resp_model.len ? &call->resp_model : &call->model;

    chunk = json_object();
    choices = json_array();
    choice = json_object();
    d = json_object();

    if (chunk == NULL || choices == NULL || choice == NULL || d == NULL) {
        goto failed;
    }

    if (json_object_set_new(chunk, "id", ngx_http_llm_json_str(&call->id))
        || json_object_set_new(chunk, "object",
                               json_string("chat.completion.chunk"))
        || json_object_set_new(chunk, "created",
                               json_integer(call->created))
        || json_object_set_new(chunk, "model", ngx_http_llm_json_str(model))
        || json_object_set_new(choice, "index", json_integer(0))
        || json_object_set(choice, "delta", d)
        || json_object_set_new(choice, "finish_reason", json_null())
        || json_array_append(choices, choice)
        || json_object_set(chunk, "choices", choices))
    {
        goto failed;
    }

    json_decref(choices);
    json_decref(choice);
    json_decref(d);

    *delta = d;

    return chunk;

failed:

    json_decref(chunk);
    json_decref(choices);
    json_decref(choice);
    json_decref(d);

    return NULL;
}


json_t *
ngx_http_llm_chunk_at(ngx_http_llm_call_t *call, json_int_t index,
    json_t **delta)
{
    json_t  *chunk, *choice;

    chunk = ngx_http_llm_chunk_new(call, delta);
    if (chunk == NULL || index == 0) {
        return chunk;
    }

    choice = json_array_get(json_object_get(chunk, "choices"), 0);

    if (json_object_set_new(choice, "index", json_integer(index)) != 0) {
        json_decref(chunk);
        return NULL;
    }

    return chunk;
}


ngx_int_t
ngx_http_llm_content_text(ngx_pool_t *pool, json_t *content, ngx_str_t *text)
{
    size_t       len;
    u_char      *p;
    json_t      *part, *t;
    ngx_uint_t   i, n;

    ngx_str_null(text);

    if (json_is_string(content)) {
        text->data = (u_char *) json_string_value(content);
        text->len = json_string_length(content);
        return NGX_OK;
    }

    if (!json_is_array(content)) {
        return NGX_OK;
    }

    len = 0;
    n = 0;

    json_array_foreach(content, i, part) {
        t = json_object_get(part, "text");
        if (json_is_string(t)) {
            len += json_string_length(t);
            n++;
        }
    }

    if (n == 0) {
        return NGX_OK;
    }

    p = ngx_pnalloc(pool, len + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    text->data = p;

    json_array_foreach(content, i, part) {
        t = json_object_get(part, "text");
        if (json_is_string(t)) {
            p = ngx_cpymem(p, json_string_value(t), json_string_length(t));
        }
    }

    *p = '\0';
    text->len = len;

    return NGX_OK;
}


void
ngx_http_llm_error_defaults(ngx_uint_t status, ngx_http_llm_error_t *err)
{
    err->status = status;
    ngx_str_null(&err->param);
    ngx_str_null(&err->code);

    switch (status) {

    case NGX_HTTP_BAD_REQUEST:
    case NGX_HTTP_NOT_FOUND:
    case NGX_HTTP_REQUEST_ENTITY_TOO_LARGE:
        ngx_str_set(&err->type, "invalid_request_error");
        break;

    case NGX_HTTP_UNAUTHORIZED:
        ngx_str_set(&err->type, "authentication_error");
        ngx_str_set(&err->code, "invalid_api_key");
        break;

    case NGX_HTTP_FORBIDDEN:
        ngx_str_set(&err->type, "permission_error");
        break;

    case NGX_HTTP_TOO_MANY_REQUESTS:
        ngx_str_set(&err->type, "rate_limit_error");
        ngx_str_set(&err->code, "rate_limit_exceeded");
        break;

    default:
        if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
            ngx_str_set(&err->type, "api_error");

        } else {
            ngx_str_set(&err->type, "invalid_request_error");
        }
    }

    ngx_str_null(&err->message);
}


ngx_int_t
ngx_http_llm_text_join(ngx_pool_t *pool, json_t *items, const char *type,
    ngx_str_t *text)
{
    u_char     *p;
    size_t      i, len;
    json_t     *item;
    ngx_uint_t  pass;
    ngx_str_t   s, t;

    len = 0;
    p = NULL;

    /* the first pass measures, the second copies */

    for (pass = 0; pass < 2; pass++) {

        json_array_foreach(items, i, item) {

            if (type) {
                ngx_http_llm_json_get_str(item, "type", &t);

                if (t.len != ngx_strlen(type)
                    || ngx_strncmp(t.data, type, t.len) != 0)
                {
                    continue;
                }
            }

            if (json_is_true(json_object_get(item, "thought"))) {
                continue;
            }

            ngx_http_llm_json_get_str(item, "text", &s);

            if (pass == 0) {
                len += s.len;

            } else if (s.len) {
                p = ngx_cpymem(p, s.data, s.len);
            }
        }

        if (len == 0) {
            ngx_str_null(text);
            return NGX_OK;
        }

        if (pass == 0) {
            p = ngx_pnalloc(pool, len + 1);
            if (p == NULL) {
                return NGX_ERROR;
            }

            text->data = p;
        }
    }

    *p = '\0';
    text->len = len;

    return NGX_OK;
}


void
ngx_http_llm_error_read(ngx_http_llm_call_t *call, ngx_uint_t status,
    json_t *error, const char *type_key, const char *code_key,
    ngx_http_llm_error_t *err)
{
    u_char     *p;
    ngx_str_t   s, *name;

    if (type_key) {
        ngx_http_llm_json_get_str(error, type_key, &s);

        if (s.len) {
            p = ngx_pstrdup(call->pool, &s);
            if (p != NULL) {
                err->type.data = p;
                err->type.len = s.len;
            }
        }
    }

    if (code_key) {
        ngx_http_llm_json_get_str(error, code_key, &s);

        if (s.len) {
            p = ngx_pstrdup(call->pool, &s);
            if (p != NULL) {
                err->code.data = p;
                err->code.len = s.len;
            }
        }
    }

    ngx_http_llm_json_get_str(error, "message", &s);

    if (s.len) {
        p = ngx_pstrdup(call->pool, &s);
        if (p != NULL) {
            err->message.data = p;
            err->message.len = s.len;
        }

        return;
    }

    name = &call->provider->driver->name;

    p = ngx_pnalloc(call->pool, name->len + sizeof(" returned HTTP ") - 1
                                + NGX_INT_T_LEN);
    if (p != NULL) {
        err->message.data = p;
        err->message.len = ngx_sprintf(p, "%V returned HTTP %ui", name,
                                       status)
                           - p;
    }
}


ngx_int_t
ngx_http_llm_str_keep(ngx_pool_t *pool, ngx_str_t *dst, ngx_str_t *src)
{
    if (dst->len || src->len == 0) {
        return NGX_OK;
    }

    dst->data = ngx_pstrdup(pool, src);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    dst->len = src->len;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_image_url(json_t *part, ngx_str_t *url, ngx_str_t *type,
    ngx_str_t *data)
{
    u_char  *p, *comma, *semi, *last;
    json_t  *image;

    image = json_object_get(part, "image_url");

    if (json_is_string(image)) {
        url->data = (u_char *) json_string_value(image);
        url->len = json_string_length(image);

    } else {
        ngx_http_llm_json_get_str(image, "url", url);
    }

    ngx_str_null(type);
    ngx_str_null(data);

    if ((url->len > 7
         && ngx_strncasecmp(url->data, (u_char *) "http://", 7) == 0)
        || (url->len > 8
            && ngx_strncasecmp(url->data, (u_char *) "https://", 8) == 0))
    {
        return NGX_OK;
    }

    if (url->len <= 5
        || ngx_strncasecmp(url->data, (u_char *) "data:", 5) != 0)
    {
        return NGX_DECLINED;
    }

    /* data:image/png;base64,... */

    p = url->data + 5;
    last = url->data + url->len;

    comma = ngx_strlchr(p, last, ',');
    semi = ngx_strlchr(p, last, ';');

    if (comma == NULL || semi == NULL || semi == p
        || comma - p < 7
        || ngx_strncasecmp(comma - 7, (u_char *) ";base64", 7) != 0)
    {
        return NGX_DECLINED;
    }

    type->data = p;
    type->len = semi - p;
    data->data = comma + 1;
    data->len = last - comma - 1;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_turn_add(json_t *turns, const char *key, const char *role,
    json_t *items)
{
    json_t     *turn;
    ngx_int_t   rc;
    ngx_str_t   last;

    if (json_array_size(items) == 0) {
        json_decref(items);
        return NGX_OK;
    }

    turn = json_array_get(turns, json_array_size(turns) - 1);
    ngx_http_llm_json_get_str(turn, "role", &last);

    if (last.len == ngx_strlen(role)
        && ngx_strncmp(last.data, role, last.len) == 0)
    {
        rc = json_array_extend(json_object_get(turn, key), items);
        json_decref(items);

        return (rc == 0) ? NGX_OK : NGX_ERROR;
    }

    turn = json_object();
    if (json_object_set_new(turn, key, items) != 0) {
        json_decref(turn);
        return NGX_ERROR;
    }

    if (json_array_append_new(turns, turn) != 0
        || json_object_set_new(turn, "role", json_string(role)) != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


json_t *
ngx_http_llm_tool_args(ngx_str_t *args)
{
    json_t  *input;

    input = NULL;

    if (args->len) {
        input = json_loadb((char *) args->data, args->len, 0, NULL);
    }

    if (!json_is_object(input)) {
        json_decref(input);
        input = json_object();
    }

    return input;
}


json_t *
ngx_http_llm_tool_call(ngx_pool_t *pool, ngx_str_t *id, ngx_str_t *name,
    json_t *input)
{
    json_t     *tc, *fn;
    ngx_str_t   args;

    if (!json_is_object(input)) {
        ngx_str_set(&args, "{}");

    } else if (ngx_http_llm_json_dump(pool, input, &args) != NGX_OK) {
        return NULL;
    }

    fn = json_object();
    if (json_object_set_new(fn, "name", ngx_http_llm_json_str(name)) != 0
        || json_object_set_new(fn, "arguments", ngx_http_llm_json_str(&args))
           != 0)
    {
        json_decref(fn);
        return NULL;
    }

    tc = json_object();
    if (json_object_set_new(tc, "function", fn) != 0
        || json_object_set_new(tc, "id", ngx_http_llm_json_str(id)) != 0
        || json_object_set_new(tc, "type", json_string("function")) != 0)
    {
        json_decref(tc);
        return NULL;
    }

    return tc;
}


json_t *
ngx_http_llm_completion_new(ngx_http_llm_call_t *call, ngx_str_t *id,
    ngx_str_t *model, json_t **choices)
{
    json_t  *res, *c;

    res = json_object();
    c = json_array();

    if (res == NULL || c == NULL
        || json_object_set(res, "choices", c) != 0
        || json_object_set_new(res, "id", ngx_http_llm_json_str(id)) != 0
        || json_object_set_new(res, "object", json_string("chat.completion"))
           != 0
        || json_object_set_new(res, "created", json_integer(call->created))
           != 0
        || json_object_set_new(res, "model", ngx_http_llm_json_str(model))
           != 0)
    {
        json_decref(res);
        json_decref(c);
        return NULL;
    }

    json_decref(c);

    *choices = c;

    return res;
}


ngx_int_t
ngx_http_llm_choice_add(json_t *choices, json_int_t index, json_t *message,
    const char *finish)
{
    json_t  *choice;

    choice = json_object();
    if (json_object_set_new(choice, "message", message) != 0) {
        json_decref(choice);
        return NGX_ERROR;
    }

    if (json_array_append_new(choices, choice) != 0
        || json_object_set_new(choice, "index", json_integer(index)) != 0
        || json_object_set_new(choice, "logprobs", json_null()) != 0
        || json_object_set_new(choice, "finish_reason", json_string(finish))
           != 0)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_turns(ngx_http_llm_call_t *call, json_t *req, json_t *body,
    json_t *turns, ngx_http_llm_turns_t *conv)
{
    size_t       i;
    json_t      *messages, *msg, *items;
    ngx_int_t    rc;
    ngx_str_t    role, text, *format;
    const char  *turn_role;

    format = &call->provider->driver->name;

    messages = json_object_get(req, "messages");

    if (!json_is_array(messages)) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (%V): no messages",
                      &call->provider->name, format);
        return NGX_DECLINED;
    }

    json_array_foreach(messages, i, msg) {

        ngx_http_llm_json_get_str(msg, "role", &role);

        if (ngx_http_llm_str_is(&role, "system")
            || ngx_http_llm_str_is(&role, "developer"))
        {
            if (ngx_http_llm_content_text(call->pool,
                                          json_object_get(msg, "content"),
                                          &text)
                != NGX_OK)
            {
                return NGX_ERROR;
            }

            if (text.len && conv->system(call, body, &text) != NGX_OK) {
                return NGX_ERROR;
            }

            continue;
        }

        items = json_array();
        if (items == NULL) {
            return NGX_ERROR;
        }

        if (ngx_http_llm_str_is(&role, "user")) {
            turn_role = "user";
            rc = ngx_http_llm_turn_user(call, conv, msg, items);

        } else if (ngx_http_llm_str_is(&role, "assistant")) {
            turn_role = conv->assistant;
            rc = ngx_http_llm_turn_assistant(call, conv, msg, items);

        } else if (ngx_http_llm_str_is(&role, "tool")) {
            turn_role = "user";
            rc = conv->tool_result(call, messages, i, items);

        } else {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (%V): message "
                          "with role \"%V\" ignored",
                          &call->provider->name, format,
                          ngx_http_llm_escape(call->pool, &role, 1));
            json_decref(items);
            continue;
        }

        if (rc != NGX_OK) {
            json_decref(items);
            return rc;
        }

        if (ngx_http_llm_turn_add(turns, conv->key, turn_role, items)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_turn_user(ngx_http_llm_call_t *call, ngx_http_llm_turns_t *conv,
    json_t *msg, json_t *items)
{
    size_t      i;
    json_t     *content, *part;
    ngx_str_t   type, text;

    content = json_object_get(msg, "content");

    if (json_is_string(content)) {
        return conv->text(items, (u_char *) json_string_value(content),
                          json_string_length(content));
    }

    json_array_foreach(content, i, part) {

        ngx_http_llm_json_get_str(part, "type", &type);

        if (ngx_http_llm_str_is(&type, "text")) {
            ngx_http_llm_json_get_str(part, "text", &text);

            if (conv->text(items, text.data, text.len) != NGX_OK) {
                return NGX_ERROR;
            }

        } else if (ngx_http_llm_str_is(&type, "image_url")) {

            if (conv->image(call, part, items) != NGX_OK) {
                return NGX_ERROR;
            }

        } else {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (%V): content part "
                          "\"%V\" ignored", &call->provider->name,
                          &call->provider->driver->name,
                          ngx_http_llm_escape(call->pool, &type, 1));
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_turn_assistant(ngx_http_llm_call_t *call,
    ngx_http_llm_turns_t *conv, json_t *msg, json_t *items)
{
    size_t      i;
    json_t     *calls, *tc, *fn;
    ngx_str_t   text, id, name, args;

    if (ngx_http_llm_content_text(call->pool, json_object_get(msg, "content"),
                                  &text)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (conv->text(items, text.data, text.len) != NGX_OK) {
        return NGX_ERROR;
    }

    calls = json_object_get(msg, "tool_calls");

    json_array_foreach(calls, i, tc) {

        fn = json_object_get(tc, "function");

        ngx_http_llm_json_get_str(tc, "id", &id);
        ngx_http_llm_json_get_str(fn, "name", &name);
        ngx_http_llm_json_get_str(fn, "arguments", &args);

        if (conv->tool_call(items, &id, &name, ngx_http_llm_tool_args(&args))
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


json_int_t
ngx_http_llm_max_tokens(json_t *req)
{
    json_t  *v;

    v = json_object_get(req, "max_completion_tokens");

    if (!json_is_integer(v) || json_integer_value(v) <= 0) {
        v = json_object_get(req, "max_tokens");
    }

    if (json_is_integer(v) && json_integer_value(v) > 0) {
        return json_integer_value(v);
    }

    return 0;
}


ngx_int_t
ngx_http_llm_stop(json_t *req, json_t **stop)
{
    size_t   i;
    json_t  *v, *s, *list;

    *stop = NULL;

    v = json_object_get(req, "stop");

    if (!json_is_string(v) && !json_is_array(v)) {
        return NGX_OK;
    }

    list = json_array();
    if (list == NULL) {
        return NGX_ERROR;
    }

    if (json_is_string(v)) {
        if (json_string_length(v) && json_array_append(list, v) != 0) {
            json_decref(list);
            return NGX_ERROR;
        }

    } else {
        json_array_foreach(v, i, s) {
            if (json_is_string(s) && json_string_length(s)
                && json_array_append(list, s) != 0)
            {
                json_decref(list);
                return NGX_ERROR;
            }
        }
    }

    if (json_array_size(list) == 0) {
        json_decref(list);
        return NGX_OK;
    }

    *stop = list;

    return NGX_OK;
}


json_t *
ngx_http_llm_tools(ngx_http_llm_call_t *call, json_t *req,
    const char *schema_key, ngx_uint_t dflt)
{
    size_t      i;
    json_t     *tools, *tool, *fn, *out, *t, *v;
    ngx_str_t   name;

    out = json_array();
    if (out == NULL) {
        return NULL;
    }

    tools = json_object_get(req, "tools");

    json_array_foreach(tools, i, tool) {

        fn = json_object_get(tool, "function");
        ngx_http_llm_json_get_str(fn, "name", &name);

        if (name.len == 0) {
            ngx_log_error(NGX_LOG_INFO, call->log, 0,
                          "llm provider \"%V\" (%V): tool without "
                          "function name ignored", &call->provider->name,
                          &call->provider->driver->name);
            continue;
        }

        t = json_object();
        if (json_array_append_new(out, t) != 0
            || json_object_set_new(t, "name", ngx_http_llm_json_str(&name))
               != 0)
        {
            goto failed;
        }

        v = json_object_get(fn, "description");

        if (json_is_string(v) && json_object_set(t, "description", v) != 0) {
            goto failed;
        }

        v = json_object_get(fn, "parameters");

        if (json_is_object(v)) {
            v = json_deep_copy(v);

        } else if (dflt) {
            v = json_pack("{s:s, s:{}}", "type", "object", "properties");

        } else {
            continue;
        }

        if (json_object_set_new(t, schema_key, v) != 0) {
            goto failed;
        }
    }

    return out;

failed:

    json_decref(out);
    return NULL;
}


ngx_uint_t
ngx_http_llm_tool_choice(json_t *req, ngx_str_t *name)
{
    json_t     *v;
    ngx_str_t   mode;

    v = json_object_get(req, "tool_choice");

    ngx_str_null(name);

    if (json_is_string(v)) {
        mode.data = (u_char *) json_string_value(v);
        mode.len = json_string_length(v);

        if (mode.len == 8 && ngx_strncmp(mode.data, "required", 8) == 0) {
            return NGX_HTTP_LLM_TOOLS_REQUIRED;
        }

        if (mode.len == 4 && ngx_strncmp(mode.data, "none", 4) == 0) {
            return NGX_HTTP_LLM_TOOLS_NONE;
        }

        return NGX_HTTP_LLM_TOOLS_AUTO;
    }

    if (json_is_object(v)) {
        ngx_http_llm_json_get_str(json_object_get(v, "function"), "name",
                                  name);

        return name->len ? NGX_HTTP_LLM_TOOLS_FUNCTION
                         : NGX_HTTP_LLM_TOOLS_AUTO;
    }

    return NGX_HTTP_LLM_TOOLS_UNSET;
}


json_t *
ngx_http_llm_usage_json(json_int_t prompt, json_int_t completion,
    json_int_t total, json_int_t cached, json_int_t reasoning)
{
    json_t  *res, *details;

    res = json_object();

    if (json_object_set_new(res, "prompt_tokens", json_integer(prompt)) != 0
        || json_object_set_new(res, "completion_tokens",
                               json_integer(completion))
           != 0
        || json_object_set_new(res, "total_tokens", json_integer(total))
           != 0)
    {
        goto failed;
    }

    if (cached >= 0) {
        details = json_object();

        if (json_object_set_new(res, "prompt_tokens_details", details) != 0
            || json_object_set_new(details, "cached_tokens",
                                   json_integer(cached))
               != 0)
        {
            goto failed;
        }
    }

    if (reasoning >= 0) {
        details = json_object();

        if (json_object_set_new(res, "completion_tokens_details", details)
            != 0
            || json_object_set_new(details, "reasoning_tokens",
                                   json_integer(reasoning))
               != 0)
        {
            goto failed;
        }
    }

    return res;

failed:

    json_decref(res);
    return NULL;
}


ngx_int_t
ngx_http_llm_path_name(ngx_str_t *name)
{
    u_char  *p, *last;

    if (name->len == 0
        || (name->len == 1 && name->data[0] == '.')
        || (name->len == 2 && name->data[0] == '.' && name->data[1] == '.'))
    {
        return NGX_DECLINED;
    }

    last = name->data + name->len;

    for (p = name->data; p < last; p++) {
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z')
            && !(*p >= '0' && *p <= '9') && *p != '-' && *p != '.'
            && *p != '_')
        {
            return NGX_DECLINED;
        }
    }

    return NGX_OK;
}


#define ngx_http_llm_unsafe(c, quotes)                                        \
    ((c) < 0x20 || (c) >= 0x7f || ((quotes) && ((c) == '"' || (c) == '\\')))


ngx_str_t *
ngx_http_llm_escape(ngx_pool_t *pool, ngx_str_t *s, ngx_uint_t quotes)
{
    u_char      *p, *last, *d;
    size_t       n;
    ngx_str_t   *out;

    static ngx_str_t  failed = ngx_string("-");
    static u_char     hex[] = "0123456789abcdef";

    last = s->data + s->len;
    n = 0;

    for (p = s->data; p < last; p++) {
        if (ngx_http_llm_unsafe(*p, quotes)) {
            n++;
        }
    }

    if (n == 0) {
        return s;
    }

    out = ngx_palloc(pool, sizeof(ngx_str_t));
    if (out == NULL) {
        return &failed;
    }

    out->data = ngx_pnalloc(pool, s->len + 3 * n);
    if (out->data == NULL) {
        return &failed;
    }

    d = out->data;

    for (p = s->data; p < last; p++) {
        if (ngx_http_llm_unsafe(*p, quotes)) {
            *d++ = '\\';
            *d++ = 'x';
            *d++ = hex[*p >> 4];
            *d++ = hex[*p & 0xf];

        } else {
            *d++ = *p;
        }
    }

    out->len = d - out->data;

    return out;
}


void
ngx_http_llm_redact(ngx_str_t *text, ngx_str_t *secret)
{
    u_char  *p, *last, *hit, *d;
    size_t   n;

    static u_char  mark[] = "[redacted]";

    if (secret->len == 0 || text->len < secret->len) {
        return;
    }

    last = text->data + text->len;

    hit = memmem(text->data, text->len, secret->data, secret->len);

    if (hit == NULL) {
        return;
    }

    /* in place: the text never grows */

    n = ngx_min(secret->len, sizeof(mark) - 1);
    d = hit;
    p = hit;

    while (hit) {
        if (d != p) {
            ngx_memmove(d, p, hit - p);
        }

        d += hit - p;

        if (n == sizeof(mark) - 1) {
            d = ngx_cpymem(d, mark, n);

        } else {
            ngx_memset(d, '*', n);
            d += n;
        }

        p = hit + secret->len;

        hit = memmem(p, last - p, secret->data, secret->len);
    }

    ngx_memmove(d, p, last - p);
    d += last - p;

    text->len = d - text->data;
}
