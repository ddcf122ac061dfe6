
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_driver.h"


static ngx_int_t ngx_http_llm_openai_build(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_azure_build(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_azure_body(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_azure_param(ngx_conf_t *cf,
    ngx_http_llm_provider_t *p, ngx_str_t *name, ngx_str_t *value);
static ngx_uint_t ngx_http_llm_openai_finishing(ngx_str_t *span);
static ngx_int_t ngx_http_llm_openai_event(ngx_http_llm_call_t *call,
    ngx_str_t *event, ngx_str_t *data);
static void ngx_http_llm_openai_error(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_str_t *body, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_openai_splice(ngx_http_llm_call_t *call);
static const char *ngx_http_llm_openai_max_name(ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_openai_parse_raw(ngx_http_llm_call_t *call,
    ngx_str_t *body);
static void ngx_http_llm_openai_usage_raw(ngx_http_llm_call_t *call,
    ngx_str_t *usage);
static ngx_int_t ngx_http_llm_openai_copy(ngx_http_llm_call_t *call,
    ngx_str_t *v, ngx_str_t *to);
static ngx_msec_t ngx_http_llm_openai_pause(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_list_t *headers);
static ngx_int_t ngx_http_llm_openai_duration(ngx_str_t *s, ngx_msec_t *ms);


static ngx_str_t  ngx_http_llm_azure_version = ngx_string("2024-10-21");


ngx_http_llm_driver_t  ngx_http_llm_openai_driver = {
    .name = ngx_string("openai"),
    .auth_header = ngx_string("Authorization"),
    .auth_prefix = ngx_string("Bearer "),
    .framing = NGX_HTTP_LLM_FRAMING_SSE,
    .build_request = ngx_http_llm_openai_build,
    .parse_raw = ngx_http_llm_openai_parse_raw,
    .parse_stream_event = ngx_http_llm_openai_event,
    .map_error = ngx_http_llm_openai_error,
    .pause = ngx_http_llm_openai_pause
};


ngx_http_llm_driver_t  ngx_http_llm_azure_driver = {
    .name = ngx_string("azure"),
    .auth_header = ngx_string("api-key"),
    .framing = NGX_HTTP_LLM_FRAMING_SSE,
    .build_request = ngx_http_llm_azure_build,
    .parse_raw = ngx_http_llm_openai_parse_raw,
    .parse_stream_event = ngx_http_llm_openai_event,
    .map_error = ngx_http_llm_openai_error,
    .param = ngx_http_llm_azure_param,
    .pause = ngx_http_llm_openai_pause
};


static ngx_int_t
ngx_http_llm_openai_build(ngx_http_llm_call_t *call)
{
    if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        ngx_str_set(&call->uri, "v1/embeddings");

    } else {
        ngx_str_set(&call->uri, "v1/chat/completions");
    }

    return ngx_http_llm_openai_splice(call);
}


/*
 * The client's body goes out as it came, with the target's model put in,
 * for streams usage asked for, and a budget's max_tokens: splices, no
 * parse.
 */

typedef struct {
    u_char                     *from;          /* replaced: from..to */
    u_char                     *to;
    ngx_str_t                   with;
} ngx_http_llm_splice_t;


static ngx_int_t
ngx_http_llm_openai_splice(ngx_http_llm_call_t *call)
{
    u_char                 *p, *last, *brace, *num;
    size_t                  len;
    ngx_str_t              *model, *opts, *mt, *mc;
    ngx_uint_t              i, j, n;
    ngx_http_llm_out_t      o;
    ngx_http_llm_splice_t   e[4], t;

    static ngx_str_t  usage = ngx_string("{\"include_usage\":true}");
    static ngx_str_t  member =
        ngx_string("\"stream_options\":{\"include_usage\":true},");

    model = &call->members[NGX_HTTP_LLM_M_MODEL];
    opts = &call->members[NGX_HTTP_LLM_M_STREAM_OPTIONS];
    mt = &call->members[NGX_HTTP_LLM_M_MAX_TOKENS];
    mc = &call->members[NGX_HTTP_LLM_M_MAX_COMPLETION];

    n = 0;
    len = call->raw.len;
    brace = ngx_strlchr(call->raw.data, call->raw.data + call->raw.len, '{');

    if (call->model.data != call->public_model.data) {
        o.pos = NULL;
        o.len = 0;

        ngx_http_llm_out_string(&o, &call->model);

        e[n].with.data = ngx_http_llm_out_alloc(&o, call->pool);
        if (e[n].with.data == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_out_string(&o, &call->model);
        e[n].with.len = o.pos - e[n].with.data;

        e[n].from = model->data;
        e[n].to = model->data + model->len;
        n++;
    }

    if (call->stream) {
        if (opts->len) {
            e[n].from = opts->data;
            e[n].to = opts->data + opts->len;
            e[n].with = usage;

        } else {
            e[n].from = brace + 1;
            e[n].to = brace + 1;
            e[n].with = member;
        }

        n++;
    }

    if (call->max_tokens > 0) {
        num = ngx_pnalloc(call->pool,
                          sizeof("\"max_completion_tokens\":,") - 1
                          + NGX_INT_T_LEN);
        if (num == NULL) {
            return NGX_ERROR;
        }

        if (mt->len == 0 && mc->len == 0) {
            e[n].from = brace + 1;
            e[n].to = brace + 1;
            e[n].with.data = num;
            e[n].with.len = ngx_sprintf(num, "\"%s\":%i,",
                                        ngx_http_llm_openai_max_name(call),
                                        call->max_tokens)
                            - num;
            n++;

        } else {
            e[n].with.data = num;
            e[n].with.len = ngx_sprintf(num, "%i", call->max_tokens) - num;

            if (mt->len) {
                e[n].from = mt->data;
                e[n].to = mt->data + mt->len;
                n++;
            }

            if (mc->len) {
                e[n] = e[n - (mt->len ? 1 : 0)];
                e[n].from = mc->data;
                e[n].to = mc->data + mc->len;
                n++;
            }
        }
    }

    if (n == 0) {
        call->raw_body = call->raw;
        return NGX_OK;
    }

    /* in the order of the body; equal places keep theirs */

    for (i = 1; i < n; i++) {
        t = e[i];

        for (j = i; j > 0 && e[j - 1].from > t.from; j--) {
            e[j] = e[j - 1];
        }

        e[j] = t;
    }

    for (i = 0; i < n; i++) {
        len += e[i].with.len;
    }

    p = ngx_pnalloc(call->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->raw_body.data = p;
    last = call->raw.data;

    for (i = 0; i < n; i++) {
        p = ngx_cpymem(p, last, e[i].from - last);
        p = ngx_cpymem(p, e[i].with.data, e[i].with.len);
        last = e[i].to;
    }

    p = ngx_cpymem(p, last, call->raw.data + call->raw.len - last);

    call->raw_body.len = p - call->raw_body.data;

    return NGX_OK;
}


/*
 * The member a budget's limit goes into when the client named none:
 * OpenAI's reasoning models (o1, o3, o4, gpt-5) refuse "max_tokens",
 * which other OpenAI-compatible servers may be the only ones to know.
 */

static const char *
ngx_http_llm_openai_max_name(ngx_http_llm_call_t *call)
{
    u_char  *p;
    size_t   len;

    p = call->model.data;
    len = call->model.len;

    if ((len >= 2 && p[0] == 'o' && p[1] >= '1' && p[1] <= '9')
        || (len >= 5 && ngx_strncmp(p, "gpt-5", 5) == 0))
    {
        return "max_completion_tokens";
    }

    return "max_tokens";
}


static ngx_int_t
ngx_http_llm_openai_parse_raw(ngx_http_llm_call_t *call, ngx_str_t *body)
{
    ngx_str_t  v[2];

    static const char  *chat[] = { "choices", "usage", NULL };
    static const char  *embeddings[] = { "data", "usage", NULL };

    if (ngx_http_llm_json_members(body->data, body->data + body->len,
                                  call->endpoint == NGX_HTTP_LLM_EMBEDDINGS
                                  ? embeddings : chat, v)
        != NGX_OK
        || v[0].len == 0 || v[0].data[0] != '[')
    {
        return NGX_DECLINED;
    }

    ngx_http_llm_openai_usage_raw(call, &v[1]);

    return NGX_OK;
}


static void
ngx_http_llm_openai_usage_raw(ngx_http_llm_call_t *call, ngx_str_t *usage)
{
    ngx_int_t  n;
    ngx_str_t  v[3], d[1];

    static const char  *names[] = {
        "prompt_tokens", "completion_tokens", "prompt_tokens_details", NULL
    };

    static const char  *details[] = { "cached_tokens", NULL };

    if (usage->len == 0 || usage->data[0] != '{'
        || ngx_http_llm_json_get(usage->data, usage->data + usage->len,
                                 names, v)
           != NGX_OK)
    {
        return;
    }

    n = ngx_http_llm_json_int(&v[0]);
    if (n >= 0) {
        call->usage.prompt = n;
    }

    n = ngx_http_llm_json_int(&v[1]);
    if (n >= 0) {
        call->usage.completion = n;

    } else if (call->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        call->usage.completion = 0;
    }

    if (v[2].len && v[2].data[0] == '{'
        && ngx_http_llm_json_get(v[2].data, v[2].data + v[2].len,
                                 details, d)
           == NGX_OK)
    {
        n = ngx_http_llm_json_int(&d[0]);
        if (n >= 0) {
            call->usage.cached = n;
        }
    }
}


static ngx_int_t
ngx_http_llm_openai_copy(ngx_http_llm_call_t *call, ngx_str_t *v,
    ngx_str_t *to)
{
    ngx_str_t  s;

    /* a JSON string span, kept if *to is still empty */

    if (v->len == 0 || ngx_http_llm_json_string(call->pool, v, &s) != NGX_OK)
    {
        return NGX_OK;
    }

    return ngx_http_llm_str_keep(call->pool, to, &s);
}


static ngx_int_t
ngx_http_llm_azure_build(ngx_http_llm_call_t *call)
{
    u_char     *p;
    ngx_str_t  *ver;

    /* the deployment is named in the path; the body keeps no model */

    if (ngx_http_llm_path_name(&call->model) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, call->log, 0,
                      "llm provider \"%V\" (azure): invalid deployment "
                      "name \"%V\"", &call->provider->name,
                      ngx_http_llm_escape(call->pool, &call->model, 1));
        return NGX_DECLINED;
    }

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

    if (ver->len == 0) {
        ver = &ngx_http_llm_azure_version;
    }

    p = ngx_pnalloc(call->pool, sizeof("api-version=") - 1 + ver->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    call->args.data = p;
    p = ngx_sprintf(p, "api-version=%V", ver);
    call->args.len = p - call->args.data;

    return ngx_http_llm_azure_body(call);
}


static ngx_int_t
ngx_http_llm_azure_body(ngx_http_llm_call_t *call)
{
    json_t  *req, *body, *opts;

    req = ngx_http_llm_call_tree(call);
    if (req == NULL) {
        return NGX_ABORT;
    }

    /* a shallow copy: only top-level members are replaced */

    body = json_copy(req);
    if (body == NULL) {
        return NGX_ERROR;
    }

    json_object_del(body, "model");

    if (call->max_tokens > 0
        && json_object_set_new(body,
                               json_object_get(req, "max_completion_tokens")
                               ? "max_completion_tokens"
                               : ngx_http_llm_openai_max_name(call),
                               json_integer(call->max_tokens))
           != 0)
    {
        goto failed;
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


static ngx_int_t
ngx_http_llm_azure_param(ngx_conf_t *cf, ngx_http_llm_provider_t *p,
    ngx_str_t *name, ngx_str_t *value)
{
    if (name->len != sizeof("api_version") - 1
        || ngx_strncmp(name->data, "api_version", name->len) != 0)
    {
        return NGX_DECLINED;
    }

    /* empty: the default, set after the directive is read */

    p->api_version = *value;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_openai_event(ngx_http_llm_call_t *call, ngx_str_t *event,
    ngx_str_t *data)
{
    u_char      *pos;
    ngx_str_t    m[6], c[1], choice;
    ngx_uint_t   fin;

    static const char  *names[] = {
        "error", "usage", "choices", "id", "model", "created", NULL
    };

    static const char  *finish[] = { "finish_reason", NULL };

    if (data->len == 6 && ngx_strncmp(data->data, "[DONE]", 6) == 0) {
        return NGX_DONE;
    }

    /* chunks pass as they are: they are only looked at, not rebuilt */

    if (ngx_http_llm_json_get(data->data, data->data + data->len, names,
                              m)
        != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (m[0].len && m[0].data[0] == '{') {
        /* an error in the middle of a stream goes to the client as is */
        if (ngx_http_llm_stream_emit_raw(call, data) != NGX_OK) {
            return NGX_ERROR;
        }

        return NGX_DONE;
    }

    if (call->id.len == 0) {
        if (ngx_http_llm_openai_copy(call, &m[3], &call->id) != NGX_OK
            || ngx_http_llm_openai_copy(call, &m[4], &call->resp_model)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (m[5].len && ngx_http_llm_json_int(&m[5]) > 0) {
            call->created = ngx_http_llm_json_int(&m[5]);
        }
    }

    ngx_http_llm_openai_usage_raw(call, &m[1]);

    if (m[2].len == 0 || m[2].data[0] != '[') {
        return NGX_DECLINED;
    }

    for (pos = m[2].data + 1; *pos == ' ' || *pos == '\t' || *pos == '\n'
                              || *pos == '\r'; pos++)
    {
        /* void */
    }

    if (*pos == ']') {
        /* the usage chunk: the core sends its own if the client asked */
        return NGX_OK;
    }

    /*
     * The first choice's finish_reason.  Most chunks say "null" wherever
     * they name one: only a chunk that does not is read again.
     */

    fin = ngx_http_llm_openai_finishing(&m[2]);

    if (call->finish_reason.len == 0 && fin) {
        pos = NULL;

        if (ngx_http_llm_json_next(&m[2], &pos, &choice) == NGX_OK
            && ngx_http_llm_json_get(choice.data, choice.data + choice.len,
                                     finish, c)
               == NGX_OK
            && ngx_http_llm_openai_copy(call, &c[0], &call->finish_reason)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    /* output tokens: about one a chunk, after the role's */

    if (call->role_sent && !fin) {
        call->produced++;
    }

    call->role_sent = 1;

    return ngx_http_llm_stream_emit_raw(call, data);
}


/*
 * Whether a valid JSON span has a "finish_reason" member that is not
 * null.  A quote inside a string is escaped, so the key can only be a
 * key; a span that names none, or only null ones, needs no parse.
 */

static ngx_uint_t
ngx_http_llm_openai_finishing(ngx_str_t *span)
{
    u_char  *p, *last;

    static u_char  key[] = "\"finish_reason\"";

    p = span->data;
    last = span->data + span->len;

    for ( ;; ) {
        p = memmem(p, last - p, key, sizeof(key) - 1);

        if (p == NULL) {
            return 0;
        }

        p += sizeof(key) - 1;

        while (p < last && (*p == ' ' || *p == '\t' || *p == '\n'
                            || *p == '\r' || *p == ':'))
        {
            p++;
        }

        if (last - p < 4 || ngx_strncmp(p, "null", 4) != 0) {
            return 1;
        }
    }
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


/*
 * Retry-After, or else OpenAI's rate limit headers: the reset time of
 * whichever limit is used up.
 */

static ngx_msec_t
ngx_http_llm_openai_pause(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_list_t *headers)
{
    ngx_msec_t        ms, best;
    ngx_uint_t        i;
    ngx_table_elt_t  *h, *rem;

    static char  *resets[] = {
        "x-ratelimit-reset-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-tokens", "x-ratelimit-remaining-tokens"
    };

    if (status != NGX_HTTP_TOO_MANY_REQUESTS
        && status != NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        return 0;
    }

    if (ngx_http_llm_pause_retry_after(headers, &ms) == NGX_OK) {
        return ms;
    }

    best = 0;

    for (i = 0; i < 4; i += 2) {
        h = ngx_http_llm_header_find(headers, resets[i]);
        rem = ngx_http_llm_header_find(headers, resets[i + 1]);

        if (h == NULL || rem == NULL
            || rem->value.len != 1 || rem->value.data[0] != '0')
        {
            continue;
        }

        if (ngx_http_llm_openai_duration(&h->value, &ms) == NGX_OK
            && ms > best)
        {
            best = ms;
        }
    }

    return best;
}


/* "1s", "6m0s", "20ms", "1h2m3.5s" */

static ngx_int_t
ngx_http_llm_openai_duration(ngx_str_t *s, ngx_msec_t *ms)
{
    u_char      *p, *last;
    ngx_msec_t   total, whole, frac, scale, unit;

    p = s->data;
    last = p + s->len;
    total = 0;

    if (p == last) {
        return NGX_ERROR;
    }

    while (p < last) {
        whole = 0;
        frac = 0;
        scale = 1;

        if (*p < '0' || *p > '9') {
            return NGX_ERROR;
        }

        while (p < last && *p >= '0' && *p <= '9') {
            whole = whole * 10 + (*p++ - '0');
        }

        if (p < last && *p == '.') {
            p++;

            while (p < last && *p >= '0' && *p <= '9') {
                if (scale < 1000) {
                    frac = frac * 10 + (*p - '0');
                    scale *= 10;
                }

                p++;
            }
        }

        if (last - p >= 2 && p[0] == 'm' && p[1] == 's') {
            unit = 1;
            p += 2;

        } else if (p < last && *p == 's') {
            unit = 1000;
            p++;

        } else if (p < last && *p == 'm') {
            unit = 60000;
            p++;

        } else if (p < last && *p == 'h') {
            unit = 3600000;
            p++;

        } else {
            return NGX_ERROR;
        }

        total += whole * unit + frac * unit / scale;
    }

    *ms = total;

    return NGX_OK;
}
