
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


/*
 * llm_mock: a fake LLM provider that speaks the OpenAI, Azure OpenAI,
 * Anthropic and Gemini wire formats, for demos, tests and benchmarks.
 * It is a module of its own, ngx_http_llm_mock_module, so that a
 * production gateway does not carry it; it uses nothing of the gateway.
 *
 * The reply is "Hello from llm_mock. You said: " and the text of the last
 * user message that has text.  When the request offers tools and does not
 * carry a tool result last, the reply is instead a call of the first tool
 * with the arguments {"query": <that text>}.  Prompt tokens are the
 * characters of all message text / 4 + 1, completion tokens the words of
 * the reply (of the arguments for a tool call).  A stream sends a word
 * per event, all at once.
 *
 * Responses are printed straight into buffers of the request pool;
 * jansson is used only to read the request.
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>


#define NGX_HTTP_LLM_MOCK_OPENAI     0
#define NGX_HTTP_LLM_MOCK_ANTHROPIC  1
#define NGX_HTTP_LLM_MOCK_GEMINI     2

#define NGX_HTTP_LLM_MOCK_BUF_SIZE   4096
#define NGX_HTTP_LLM_MOCK_DIMS       8

#define NGX_HTTP_LLM_MOCK_PREFIX     "Hello from llm_mock. You said: "
#define NGX_HTTP_LLM_MOCK_ARGS       "{\"query\":\""


typedef struct ngx_http_llm_mock_ctx_s  ngx_http_llm_mock_ctx_t;

typedef void (*ngx_http_llm_mock_pt)(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);


struct ngx_http_llm_mock_ctx_s {
    ngx_http_request_t         *r;
    ngx_http_llm_mock_pt        handler;
    ngx_uint_t                  format;       /* of errors */
    ngx_uint_t                  status;

    ngx_str_t                   model;
    ngx_str_t                   id;
    u_char                      id_data[16];
    time_t                      created;

    ngx_str_t                   text;         /* of the last user message */
    ngx_str_t                   reply;
    ngx_str_t                   tool;         /* empty: a text reply */
    ngx_str_t                   args;         /* of the tool call, JSON */
    ngx_int_t                   prompt_tokens;
    ngx_int_t                   completion_tokens;

    ngx_chain_t                *out;
    ngx_chain_t               **last;
    ngx_buf_t                  *buf;
    off_t                       size;

    unsigned                    get:1;        /* a GET endpoint */
    unsigned                    stream:1;
    unsigned                    sse:1;        /* text/event-stream */
    unsigned                    include_usage:1;
    unsigned                    failed:1;     /* out of memory */
};


static char *ngx_http_llm_mock(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_mock_handler(ngx_http_request_t *r);
static void ngx_http_llm_mock_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_mock_process(ngx_http_request_t *r);
static void ngx_http_llm_mock_route(ngx_http_llm_mock_ctx_t *ctx);
static ngx_int_t ngx_http_llm_mock_read_body(ngx_http_request_t *r,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_mock_send(ngx_http_llm_mock_ctx_t *ctx);

static void ngx_http_llm_mock_openai_chat(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);
static void ngx_http_llm_mock_openai_chunk(ngx_http_llm_mock_ctx_t *ctx,
    const char *fmt, ngx_str_t *a, ngx_str_t *b, const char *finish);
static void ngx_http_llm_mock_openai_embeddings(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);
static void ngx_http_llm_mock_openai_models(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);
static void ngx_http_llm_mock_anthropic_messages(
    ngx_http_llm_mock_ctx_t *ctx, json_t *req);
static void ngx_http_llm_mock_anthropic_event(ngx_http_llm_mock_ctx_t *ctx,
    const char *type, const char *fmt, ngx_str_t *a);
static void ngx_http_llm_mock_gemini_generate(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);
static void ngx_http_llm_mock_gemini_chunk(ngx_http_llm_mock_ctx_t *ctx,
    const char *fmt, ngx_str_t *a, ngx_str_t *b, ngx_uint_t last);
static void ngx_http_llm_mock_gemini_embed(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req);
static void ngx_http_llm_mock_gemini_batch_embed(
    ngx_http_llm_mock_ctx_t *ctx, json_t *req);

static void ngx_http_llm_mock_answer(ngx_http_llm_mock_ctx_t *ctx,
    json_t *content, size_t chars);
static void ngx_http_llm_mock_vector(ngx_http_llm_mock_ctx_t *ctx,
    ngx_str_t *text, ngx_uint_t base64);
static void ngx_http_llm_mock_error(ngx_http_llm_mock_ctx_t *ctx,
    ngx_uint_t status, const char *message, ngx_str_t *detail);

static json_t *ngx_http_llm_mock_last_user(json_t *messages, size_t *chars);
static size_t ngx_http_llm_mock_text_len(json_t *content);
static void ngx_http_llm_mock_text(ngx_http_llm_mock_ctx_t *ctx,
    json_t *content, ngx_str_t *text);
static void ngx_http_llm_mock_str(json_t *obj, const char *key,
    ngx_str_t *s);
static ngx_uint_t ngx_http_llm_mock_is(json_t *obj, const char *key,
    const char *value);
static ngx_uint_t ngx_http_llm_mock_word(ngx_str_t *rest, ngx_str_t *word);
static ngx_int_t ngx_http_llm_mock_words(ngx_str_t *s);
static ngx_uint_t ngx_http_llm_mock_suffix(ngx_str_t *uri, const char *s);

static void ngx_http_llm_mock_print(ngx_http_llm_mock_ctx_t *ctx,
    const char *fmt, ...);
static size_t ngx_http_llm_mock_vformat(u_char *dst, const char *fmt,
    va_list args);


static ngx_command_t  ngx_http_llm_mock_commands[] = {

    { ngx_string("llm_mock"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_mock,
      0,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_mock_module_ctx = {
    NULL,                                  /* preconfiguration */
    NULL,                                  /* postconfiguration */

    NULL,                                  /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_llm_mock_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_mock_module_ctx,         /* module context */
    ngx_http_llm_mock_commands,            /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_str_t  ngx_http_llm_mock_empty = ngx_null_string;


static char *
ngx_http_llm_mock(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_mock_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_mock_handler(ngx_http_request_t *r)
{
    ngx_int_t  rc;

    rc = ngx_http_read_client_request_body(r, ngx_http_llm_mock_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static void
ngx_http_llm_mock_body_handler(ngx_http_request_t *r)
{
    ngx_http_finalize_request(r, ngx_http_llm_mock_process(r));
}


static ngx_int_t
ngx_http_llm_mock_process(ngx_http_request_t *r)
{
    json_t                   *req;
    ngx_str_t                 body;
    ngx_uint_t                methods;
    ngx_http_llm_mock_ctx_t   ctx;

    ngx_memzero(&ctx, sizeof(ngx_http_llm_mock_ctx_t));

    ctx.r = r;
    ctx.status = NGX_HTTP_OK;
    ctx.last = &ctx.out;
    ctx.created = ngx_time();

    ctx.id.data = ctx.id_data;
    ctx.id.len = ngx_sprintf(ctx.id_data, "%08xD%08xD",
                             (uint32_t) ngx_random(), (uint32_t) ngx_random())
                 - ctx.id_data;

    ngx_http_llm_mock_route(&ctx);

    if (ctx.handler == NULL) {
        ngx_http_llm_mock_error(&ctx, NGX_HTTP_NOT_FOUND,
                                "Unknown request URL: ", &r->uri);
        return ngx_http_llm_mock_send(&ctx);
    }

    methods = ctx.get ? (NGX_HTTP_GET|NGX_HTTP_HEAD) : NGX_HTTP_POST;

    if (!(r->method & methods)) {
        ngx_http_llm_mock_error(&ctx, NGX_HTTP_NOT_ALLOWED,
                                "Method not allowed: ", &r->method_name);
        return ngx_http_llm_mock_send(&ctx);
    }

    if (ctx.get) {
        ctx.handler(&ctx, NULL);
        return ngx_http_llm_mock_send(&ctx);
    }

    if (ngx_http_llm_mock_read_body(r, &body) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    req = json_loadb((char *) body.data, body.len, 0, NULL);

    if (json_is_object(req)) {
        ctx.handler(&ctx, req);

    } else {
        ngx_http_llm_mock_error(&ctx, NGX_HTTP_BAD_REQUEST,
                                "The request body is not a JSON object",
                                &ngx_http_llm_mock_empty);
    }

    if (req) {
        json_decref(req);
    }

    return ngx_http_llm_mock_send(&ctx);
}


/*
 * The wire format follows from the URI's tail, so that the mock answers
 * under any location prefix.
 */

static void
ngx_http_llm_mock_route(ngx_http_llm_mock_ctx_t *ctx)
{
    u_char     *p, *last, *colon;
    ngx_str_t  *uri, method;

    uri = &ctx->r->uri;
    last = uri->data + uri->len;

    /* .../v1beta/models/MODEL:METHOD */

    p = ngx_strnstr(uri->data, "/v1beta/", uri->len);

    if (p) {
        ctx->format = NGX_HTTP_LLM_MOCK_GEMINI;

        p += sizeof("/v1beta/") - 1;

        if ((size_t) (last - p) < sizeof("models/") - 1
            || ngx_strncmp(p, "models/", sizeof("models/") - 1) != 0)
        {
            return;
        }

        p += sizeof("models/") - 1;

        colon = ngx_strlchr(p, last, ':');
        if (colon == NULL) {
            return;
        }

        ctx->model.data = p;
        ctx->model.len = colon - p;

        method.data = colon + 1;
        method.len = last - method.data;

        if (method.len == sizeof("generateContent") - 1
            && ngx_strncmp(method.data, "generateContent", method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_gemini_generate;

        } else if (method.len == sizeof("streamGenerateContent") - 1
                   && ngx_strncmp(method.data, "streamGenerateContent",
                                  method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_gemini_generate;
            ctx->stream = 1;

        } else if (method.len == sizeof("embedContent") - 1
                   && ngx_strncmp(method.data, "embedContent",
                                  method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_gemini_embed;

        } else if (method.len == sizeof("batchEmbedContents") - 1
                   && ngx_strncmp(method.data, "batchEmbedContents",
                                  method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_gemini_batch_embed;
        }

        return;
    }

    /* .../openai/deployments/DEPLOYMENT/chat/completions */

    p = ngx_strnstr(uri->data, "/openai/deployments/", uri->len);

    if (p) {
        p += sizeof("/openai/deployments/") - 1;

        ctx->model.data = p;
        p = ngx_strlchr(p, last, '/');

        if (p == NULL) {
            return;
        }

        ctx->model.len = p - ctx->model.data;
        method.data = p;
        method.len = last - p;

        if (method.len == sizeof("/chat/completions") - 1
            && ngx_strncmp(p, "/chat/completions", method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_openai_chat;

        } else if (method.len == sizeof("/embeddings") - 1
                   && ngx_strncmp(p, "/embeddings", method.len) == 0)
        {
            ctx->handler = ngx_http_llm_mock_openai_embeddings;
        }

        return;
    }

    if (ngx_http_llm_mock_suffix(uri, "/v1/chat/completions")) {
        ctx->handler = ngx_http_llm_mock_openai_chat;

    } else if (ngx_http_llm_mock_suffix(uri, "/v1/messages")) {
        ctx->format = NGX_HTTP_LLM_MOCK_ANTHROPIC;
        ctx->handler = ngx_http_llm_mock_anthropic_messages;

    } else if (ngx_http_llm_mock_suffix(uri, "/v1/embeddings")) {
        ctx->handler = ngx_http_llm_mock_openai_embeddings;

    } else if (ngx_http_llm_mock_suffix(uri, "/v1/models")) {
        ctx->handler = ngx_http_llm_mock_openai_models;
        ctx->get = 1;

    } else if (ngx_strnstr(uri->data, "/v1/messages/", uri->len)) {
        ctx->format = NGX_HTTP_LLM_MOCK_ANTHROPIC;
    }
}


static ngx_int_t
ngx_http_llm_mock_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b, *single;
    ngx_chain_t  *cl;

    ngx_str_null(body);

    if (r->request_body == NULL) {
        return NGX_OK;
    }

    /* a chunked body ends with an empty special buffer */

    len = 0;
    single = NULL;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        if (ngx_buf_size(cl->buf)) {
            single = (len == 0) ? cl->buf : NULL;
            len += ngx_buf_size(cl->buf);
        }
    }

    if (len == 0) {
        return NGX_OK;
    }

    if (single && ngx_buf_in_memory(single)) {
        body->data = single->pos;
        body->len = len;
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (ngx_buf_in_memory(b)) {
            p = ngx_cpymem(p, b->pos, b->last - b->pos);
            continue;
        }

        if (!b->in_file) {
            continue;
        }

        len = b->file_last - b->file_pos;

        n = ngx_read_file(b->file, p, len, b->file_pos);

        if (n != (ssize_t) len) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "llm_mock: cannot read the request body from "
                          "\"%V\"", &b->file->name);
            return NGX_ERROR;
        }

        p += len;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_mock_send(ngx_http_llm_mock_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_http_request_t  *r;

    r = ctx->r;

    if (ctx->failed || ctx->out == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = ctx->status;

    if (ctx->sse) {
        ngx_str_set(&r->headers_out.content_type, "text/event-stream");
        r->headers_out.content_length_n = -1;

    } else {
        ngx_str_set(&r->headers_out.content_type, "application/json");
        r->headers_out.content_length_n = ctx->size;
    }

    r->headers_out.content_type_len = r->headers_out.content_type.len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    ctx->buf->last_buf = (r == r->main) ? 1 : 0;
    ctx->buf->last_in_chain = 1;

    return ngx_http_output_filter(r, ctx->out);
}


static void
ngx_http_llm_mock_openai_chat(ngx_http_llm_mock_ctx_t *ctx, json_t *req)
{
    size_t       chars;
    json_t      *messages, *msg, *content, *tools, *fn;
    ngx_str_t    rest, fragment;
    const char  *finish;

    messages = json_object_get(req, "messages");

    if (!json_is_array(messages)) {
        ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                                "Missing required parameter: 'messages'",
                                &ngx_http_llm_mock_empty);
        return;
    }

    if (ctx->model.len == 0) {
        ngx_http_llm_mock_str(req, "model", &ctx->model);
    }

    chars = 0;
    content = ngx_http_llm_mock_last_user(messages, &chars);
    msg = json_array_get(messages, json_array_size(messages) - 1);

    tools = json_object_get(req, "tools");

    if (json_array_size(tools)
        && !ngx_http_llm_mock_is(msg, "role", "tool")
        && !ngx_http_llm_mock_is(req, "tool_choice", "none"))
    {
        fn = json_object_get(json_array_get(tools, 0), "function");
        ngx_http_llm_mock_str(fn, "name", &ctx->tool);
    }

    ctx->stream = json_is_true(json_object_get(req, "stream"));
    ctx->include_usage = json_is_true(
        json_object_get(json_object_get(req, "stream_options"),
                        "include_usage"));

    ngx_http_llm_mock_answer(ctx, content, chars);

    if (!ctx->stream) {
        ngx_http_llm_mock_print(ctx,
            "{\"id\":\"chatcmpl-mock%V\",\"object\":\"chat.completion\","
            "\"created\":%i,\"model\":\"%J\",\"choices\":[{\"index\":0,"
            "\"message\":{\"role\":\"assistant\",",
            &ctx->id, (ngx_int_t) ctx->created, &ctx->model);

        if (ctx->tool.len) {
            ngx_http_llm_mock_print(ctx,
                "\"content\":null,\"tool_calls\":[{\"id\":\"call_mock1\","
                "\"type\":\"function\",\"function\":{\"name\":\"%J\","
                "\"arguments\":\"%J\"}}]},\"logprobs\":null,"
                "\"finish_reason\":\"tool_calls\"}],",
                &ctx->tool, &ctx->args);

        } else {
            ngx_http_llm_mock_print(ctx,
                "\"content\":\"%J\",\"refusal\":null},\"logprobs\":null,"
                "\"finish_reason\":\"stop\"}],",
                &ctx->reply);
        }

        ngx_http_llm_mock_print(ctx,
            "\"usage\":{\"prompt_tokens\":%i,\"completion_tokens\":%i,"
            "\"total_tokens\":%i}}",
            ctx->prompt_tokens, ctx->completion_tokens,
            ctx->prompt_tokens + ctx->completion_tokens);

        return;
    }

    ctx->sse = 1;

    ngx_http_llm_mock_openai_chunk(ctx,
        "\"role\":\"assistant\",\"content\":\"\"", NULL, NULL, "null");

    if (ctx->tool.len) {
        ngx_http_llm_mock_openai_chunk(ctx,
            "\"tool_calls\":[{\"index\":0,\"id\":\"call_mock1\","
            "\"type\":\"function\",\"function\":{\"name\":\"%J\","
            "\"arguments\":\"\"}}]",
            &ctx->tool, NULL, "null");

        /* the arguments in two fragments, split where no escape can be */

        fragment.data = ctx->args.data;
        fragment.len = sizeof(NGX_HTTP_LLM_MOCK_ARGS) - 1;

        ngx_http_llm_mock_openai_chunk(ctx,
            "\"tool_calls\":[{\"index\":0,\"function\":{"
            "\"arguments\":\"%J\"}}]",
            &fragment, NULL, "null");

        fragment.data += fragment.len;
        fragment.len = ctx->args.len - fragment.len;

        ngx_http_llm_mock_openai_chunk(ctx,
            "\"tool_calls\":[{\"index\":0,\"function\":{"
            "\"arguments\":\"%J\"}}]",
            &fragment, NULL, "null");

        finish = "\"tool_calls\"";

    } else {
        rest = ctx->reply;

        while (ngx_http_llm_mock_word(&rest, &fragment)) {
            ngx_http_llm_mock_openai_chunk(ctx, "\"content\":\"%J\"",
                                           &fragment, NULL, "null");
        }

        finish = "\"stop\"";
    }

    ngx_http_llm_mock_openai_chunk(ctx, "", NULL, NULL, finish);

    if (ctx->include_usage) {
        ngx_http_llm_mock_print(ctx,
            "data: {\"id\":\"chatcmpl-mock%V\","
            "\"object\":\"chat.completion.chunk\",\"created\":%i,"
            "\"model\":\"%J\",\"choices\":[],"
            "\"usage\":{\"prompt_tokens\":%i,\"completion_tokens\":%i,"
            "\"total_tokens\":%i}}\n\n",
            &ctx->id, (ngx_int_t) ctx->created, &ctx->model,
            ctx->prompt_tokens, ctx->completion_tokens,
            ctx->prompt_tokens + ctx->completion_tokens);
    }

    ngx_http_llm_mock_print(ctx, "data: [DONE]\n\n");
}


/* one chat.completion.chunk event; fmt prints the delta's members */

static void
ngx_http_llm_mock_openai_chunk(ngx_http_llm_mock_ctx_t *ctx,
    const char *fmt, ngx_str_t *a, ngx_str_t *b, const char *finish)
{
    ngx_http_llm_mock_print(ctx,
        "data: {\"id\":\"chatcmpl-mock%V\","
        "\"object\":\"chat.completion.chunk\",\"created\":%i,"
        "\"model\":\"%J\",\"choices\":[{\"index\":0,\"delta\":{",
        &ctx->id, (ngx_int_t) ctx->created, &ctx->model);

    ngx_http_llm_mock_print(ctx, fmt, a, b);

    ngx_http_llm_mock_print(ctx,
        "},\"logprobs\":null,\"finish_reason\":%s}]%s}\n\n",
        finish, ctx->include_usage ? ",\"usage\":null" : "");
}


static void
ngx_http_llm_mock_openai_embeddings(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req)
{
    size_t      i, chars;
    json_t     *input, *item;
    ngx_str_t   text;
    ngx_uint_t  base64;

    input = json_object_get(req, "input");

    if (json_is_string(input)) {
        chars = json_string_length(input);

    } else if (json_array_size(input)) {
        chars = 0;

        json_array_foreach(input, i, item) {
            if (!json_is_string(item)) {
                ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                    "'input' must be a string or an array of strings",
                    &ngx_http_llm_mock_empty);
                return;
            }

            chars += json_string_length(item);
        }

    } else {
        ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                                "Missing required parameter: 'input'",
                                &ngx_http_llm_mock_empty);
        return;
    }

    if (ctx->model.len == 0) {
        ngx_http_llm_mock_str(req, "model", &ctx->model);
    }

    base64 = ngx_http_llm_mock_is(req, "encoding_format", "base64");

    ngx_http_llm_mock_print(ctx, "{\"object\":\"list\",\"data\":[");

    if (json_is_string(input)) {
        text.data = (u_char *) json_string_value(input);
        text.len = json_string_length(input);

        ngx_http_llm_mock_print(ctx,
            "{\"object\":\"embedding\",\"index\":0,\"embedding\":");
        ngx_http_llm_mock_vector(ctx, &text, base64);
        ngx_http_llm_mock_print(ctx, "}");

    } else {
        json_array_foreach(input, i, item) {
            text.data = (u_char *) json_string_value(item);
            text.len = json_string_length(item);

            ngx_http_llm_mock_print(ctx,
                "%s{\"object\":\"embedding\",\"index\":%i,\"embedding\":",
                i ? "," : "", (ngx_int_t) i);
            ngx_http_llm_mock_vector(ctx, &text, base64);
            ngx_http_llm_mock_print(ctx, "}");
        }
    }

    ngx_http_llm_mock_print(ctx,
        "],\"model\":\"%J\",\"usage\":{\"prompt_tokens\":%i,"
        "\"total_tokens\":%i}}",
        &ctx->model, (ngx_int_t) (chars / 4 + 1), (ngx_int_t) (chars / 4 + 1));
}


static void
ngx_http_llm_mock_openai_models(ngx_http_llm_mock_ctx_t *ctx, json_t *req)
{
    ngx_http_llm_mock_print(ctx,
        "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\","
        "\"object\":\"model\",\"created\":1700000000,"
        "\"owned_by\":\"llm_mock\"}]}");
}


static void
ngx_http_llm_mock_anthropic_messages(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req)
{
    size_t       i, chars;
    json_t      *messages, *msg, *content, *block, *choice;
    ngx_str_t    rest, fragment;
    const char  *stop;

    messages = json_object_get(req, "messages");

    if (!json_is_array(messages)) {
        ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                                "messages: Field required",
                                &ngx_http_llm_mock_empty);
        return;
    }

    ngx_http_llm_mock_str(req, "model", &ctx->model);

    chars = ngx_http_llm_mock_text_len(json_object_get(req, "system"));
    content = ngx_http_llm_mock_last_user(messages, &chars);
    msg = json_array_get(messages, json_array_size(messages) - 1);

    choice = json_object_get(req, "tool_choice");

    if (json_array_size(json_object_get(req, "tools"))
        && !ngx_http_llm_mock_is(choice, "type", "none"))
    {
        ngx_http_llm_mock_str(json_array_get(json_object_get(req, "tools"), 0),
                              "name", &ctx->tool);

        /* a tool result last: answer it with text */

        if (ngx_http_llm_mock_is(msg, "role", "user")) {
            json_array_foreach(json_object_get(msg, "content"), i, block) {
                if (ngx_http_llm_mock_is(block, "type", "tool_result")) {
                    ngx_str_null(&ctx->tool);
                    break;
                }
            }
        }
    }

    ctx->stream = json_is_true(json_object_get(req, "stream"));

    ngx_http_llm_mock_answer(ctx, content, chars);

    stop = ctx->tool.len ? "tool_use" : "end_turn";

    if (!ctx->stream) {
        ngx_http_llm_mock_print(ctx,
            "{\"id\":\"msg_mock%V\",\"type\":\"message\","
            "\"role\":\"assistant\",\"model\":\"%J\",\"content\":[",
            &ctx->id, &ctx->model);

        if (ctx->tool.len) {
            ngx_http_llm_mock_print(ctx,
                "{\"type\":\"tool_use\",\"id\":\"toolu_mock1\","
                "\"name\":\"%J\",\"input\":%V}",
                &ctx->tool, &ctx->args);

        } else {
            ngx_http_llm_mock_print(ctx, "{\"type\":\"text\",\"text\":\"%J\"}",
                                    &ctx->reply);
        }

        ngx_http_llm_mock_print(ctx,
            "],\"stop_reason\":\"%s\",\"stop_sequence\":null,"
            "\"usage\":{\"input_tokens\":%i,\"output_tokens\":%i}}",
            stop, ctx->prompt_tokens, ctx->completion_tokens);

        return;
    }

    ctx->sse = 1;

    ngx_http_llm_mock_print(ctx,
        "event: message_start\n"
        "data: {\"type\":\"message_start\",\"message\":{"
        "\"id\":\"msg_mock%V\",\"type\":\"message\",\"role\":\"assistant\","
        "\"model\":\"%J\",\"content\":[],\"stop_reason\":null,"
        "\"stop_sequence\":null,\"usage\":{\"input_tokens\":%i,"
        "\"output_tokens\":1}}}\n\n",
        &ctx->id, &ctx->model, ctx->prompt_tokens);

    if (ctx->tool.len) {
        ngx_http_llm_mock_anthropic_event(ctx, "content_block_start",
            "\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_mock1\","
            "\"name\":\"%J\",\"input\":{}}",
            &ctx->tool);

    } else {
        ngx_http_llm_mock_anthropic_event(ctx, "content_block_start",
            "\"content_block\":{\"type\":\"text\",\"text\":\"\"}", NULL);
    }

    ngx_http_llm_mock_print(ctx,
        "event: ping\ndata: {\"type\":\"ping\"}\n\n");

    if (ctx->tool.len) {
        fragment.data = ctx->args.data;
        fragment.len = sizeof(NGX_HTTP_LLM_MOCK_ARGS) - 1;

        ngx_http_llm_mock_anthropic_event(ctx, "content_block_delta",
            "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"%J\"}",
            &fragment);

        fragment.data += fragment.len;
        fragment.len = ctx->args.len - fragment.len;

        ngx_http_llm_mock_anthropic_event(ctx, "content_block_delta",
            "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"%J\"}",
            &fragment);

    } else {
        rest = ctx->reply;

        while (ngx_http_llm_mock_word(&rest, &fragment)) {
            ngx_http_llm_mock_anthropic_event(ctx, "content_block_delta",
                "\"delta\":{\"type\":\"text_delta\",\"text\":\"%J\"}",
                &fragment);
        }
    }

    ngx_http_llm_mock_print(ctx,
        "event: content_block_stop\n"
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
        "event: message_delta\n"
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\","
        "\"stop_sequence\":null},\"usage\":{\"output_tokens\":%i}}\n\n"
        "event: message_stop\n"
        "data: {\"type\":\"message_stop\"}\n\n",
        stop, ctx->completion_tokens);
}


/* a content block event of block 0; fmt prints its other members */

static void
ngx_http_llm_mock_anthropic_event(ngx_http_llm_mock_ctx_t *ctx,
    const char *type, const char *fmt, ngx_str_t *a)
{
    ngx_http_llm_mock_print(ctx,
        "event: %s\ndata: {\"type\":\"%s\",\"index\":0,", type, type);
    ngx_http_llm_mock_print(ctx, fmt, a);
    ngx_http_llm_mock_print(ctx, "}\n\n");
}


static void
ngx_http_llm_mock_gemini_generate(ngx_http_llm_mock_ctx_t *ctx, json_t *req)
{
    size_t       i, n, chars;
    json_t      *contents, *msg, *parts, *part, *tools, *tool, *decls;
    ngx_str_t    alt, rest, fragment;

    contents = json_object_get(req, "contents");

    if (!json_is_array(contents)) {
        ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                                "* GenerateContentRequest.contents: "
                                "contents is not specified",
                                &ngx_http_llm_mock_empty);
        return;
    }

    chars = ngx_http_llm_mock_text_len(
                json_object_get(json_object_get(req, "systemInstruction"),
                                "parts"));
    parts = NULL;
    msg = NULL;

    json_array_foreach(contents, i, msg) {
        n = ngx_http_llm_mock_text_len(json_object_get(msg, "parts"));
        chars += n;

        if (n && !ngx_http_llm_mock_is(msg, "role", "model")) {
            parts = json_object_get(msg, "parts");
        }
    }

    tools = json_object_get(req, "tools");

    if (!ngx_http_llm_mock_is(
             json_object_get(json_object_get(req, "toolConfig"),
                             "functionCallingConfig"),
             "mode", "NONE"))
    {
        json_array_foreach(tools, i, tool) {
            decls = json_object_get(tool, "functionDeclarations");

            if (json_array_size(decls)) {
                ngx_http_llm_mock_str(json_array_get(decls, 0), "name",
                                      &ctx->tool);
                break;
            }
        }
    }

    /* a function response last: answer it with text */

    json_array_foreach(json_object_get(msg, "parts"), i, part) {
        if (json_object_get(part, "functionResponse")) {
            ngx_str_null(&ctx->tool);
            break;
        }
    }

    ngx_http_llm_mock_answer(ctx, parts, chars);

    if (!ctx->stream) {
        if (ctx->tool.len) {
            ngx_http_llm_mock_gemini_chunk(ctx,
                "{\"functionCall\":{\"name\":\"%J\",\"args\":%V}}",
                &ctx->tool, &ctx->args, 1);

        } else {
            ngx_http_llm_mock_gemini_chunk(ctx, "{\"text\":\"%J\"}",
                                           &ctx->reply, NULL, 1);
        }

        return;
    }

    /* without alt=sse, a stream is a JSON array of responses */

    if (ngx_http_arg(ctx->r, (u_char *) "alt", 3, &alt) == NGX_OK
        && alt.len == 3 && ngx_strncmp(alt.data, "sse", 3) == 0)
    {
        ctx->sse = 1;

    } else {
        ngx_http_llm_mock_print(ctx, "[");
    }

    if (ctx->tool.len) {
        ngx_http_llm_mock_gemini_chunk(ctx,
            "{\"functionCall\":{\"name\":\"%J\",\"args\":%V}}",
            &ctx->tool, &ctx->args, 1);

    } else {
        rest = ctx->reply;

        while (ngx_http_llm_mock_word(&rest, &fragment)) {
            ngx_http_llm_mock_gemini_chunk(ctx, "{\"text\":\"%J\"}",
                                           &fragment, NULL, rest.len == 0);

            if (!ctx->sse && rest.len) {
                ngx_http_llm_mock_print(ctx, ",");
            }
        }
    }

    if (!ctx->sse) {
        ngx_http_llm_mock_print(ctx, "]");
    }
}


/*
 * One GenerateContentResponse (an SSE event when streaming) with one
 * part printed by fmt; the last one has finishReason and usageMetadata.
 */

static void
ngx_http_llm_mock_gemini_chunk(ngx_http_llm_mock_ctx_t *ctx,
    const char *fmt, ngx_str_t *a, ngx_str_t *b, ngx_uint_t last)
{
    ngx_http_llm_mock_print(ctx,
        "%s{\"candidates\":[{\"content\":{\"parts\":[",
        ctx->sse ? "data: " : "");

    ngx_http_llm_mock_print(ctx, fmt, a, b);

    ngx_http_llm_mock_print(ctx, "],\"role\":\"model\"}");

    if (last) {
        ngx_http_llm_mock_print(ctx,
            ",\"finishReason\":\"STOP\",\"index\":0}],"
            "\"usageMetadata\":{\"promptTokenCount\":%i,"
            "\"candidatesTokenCount\":%i,\"totalTokenCount\":%i}",
            ctx->prompt_tokens, ctx->completion_tokens,
            ctx->prompt_tokens + ctx->completion_tokens);

    } else {
        ngx_http_llm_mock_print(ctx, ",\"index\":0}]");
    }

    ngx_http_llm_mock_print(ctx,
        ",\"modelVersion\":\"%J\",\"responseId\":\"mock%V\"}%s",
        &ctx->model, &ctx->id, ctx->sse ? "\r\n\r\n" : "");
}


static void
ngx_http_llm_mock_gemini_embed(ngx_http_llm_mock_ctx_t *ctx, json_t *req)
{
    ngx_str_t  text;

    ngx_http_llm_mock_text(ctx,
        json_object_get(json_object_get(req, "content"), "parts"), &text);

    ngx_http_llm_mock_print(ctx, "{\"embedding\":{\"values\":");
    ngx_http_llm_mock_vector(ctx, &text, 0);
    ngx_http_llm_mock_print(ctx, "}}");
}


static void
ngx_http_llm_mock_gemini_batch_embed(ngx_http_llm_mock_ctx_t *ctx,
    json_t *req)
{
    size_t      i;
    json_t     *requests, *item;
    ngx_str_t   text;

    requests = json_object_get(req, "requests");

    if (!json_is_array(requests)) {
        ngx_http_llm_mock_error(ctx, NGX_HTTP_BAD_REQUEST,
                                "* BatchEmbedContentsRequest.requests: "
                                "requests is not specified",
                                &ngx_http_llm_mock_empty);
        return;
    }

    ngx_http_llm_mock_print(ctx, "{\"embeddings\":[");

    json_array_foreach(requests, i, item) {
        ngx_http_llm_mock_text(ctx,
            json_object_get(json_object_get(item, "content"), "parts"),
            &text);

        ngx_http_llm_mock_print(ctx, "%s{\"values\":", i ? "," : "");
        ngx_http_llm_mock_vector(ctx, &text, 0);
        ngx_http_llm_mock_print(ctx, "}");
    }

    ngx_http_llm_mock_print(ctx, "]}");
}


/*
 * Decides the reply to the user text in content: ctx->reply, or, with
 * ctx->tool set, the call's ctx->args; and the token counts.
 */

static void
ngx_http_llm_mock_answer(ngx_http_llm_mock_ctx_t *ctx, json_t *content,
    size_t chars)
{
    u_char  *p;
    size_t   len;

    ngx_http_llm_mock_text(ctx, content, &ctx->text);

    ctx->prompt_tokens = chars / 4 + 1;

    if (ctx->tool.len) {
        len = sizeof(NGX_HTTP_LLM_MOCK_ARGS "\"}") - 1 + ctx->text.len
              + ngx_escape_json(NULL, ctx->text.data, ctx->text.len);

        p = ngx_pnalloc(ctx->r->pool, len);
        if (p == NULL) {
            ctx->failed = 1;
            return;
        }

        ctx->args.data = p;
        ctx->args.len = len;

        p = ngx_cpymem(p, NGX_HTTP_LLM_MOCK_ARGS,
                       sizeof(NGX_HTTP_LLM_MOCK_ARGS) - 1);
        p = (u_char *) ngx_escape_json(p, ctx->text.data, ctx->text.len);
        *p++ = '"';
        *p = '}';

        ctx->completion_tokens = ngx_http_llm_mock_words(&ctx->args);

        return;
    }

    len = sizeof(NGX_HTTP_LLM_MOCK_PREFIX) - 1 + ctx->text.len;

    p = ngx_pnalloc(ctx->r->pool, len);
    if (p == NULL) {
        ctx->failed = 1;
        return;
    }

    ctx->reply.data = p;
    ctx->reply.len = len;

    p = ngx_cpymem(p, NGX_HTTP_LLM_MOCK_PREFIX,
                   sizeof(NGX_HTTP_LLM_MOCK_PREFIX) - 1);
    ngx_memcpy(p, ctx->text.data, ctx->text.len);

    ctx->completion_tokens = ngx_http_llm_mock_words(&ctx->reply);
}


/*
 * A deterministic vector for a text: floats in [-1, 1) drawn from a
 * generator seeded with the text's hash; or their float32 bytes in base64.
 */

static void
ngx_http_llm_mock_vector(ngx_http_llm_mock_ctx_t *ctx, ngx_str_t *text,
    ngx_uint_t base64)
{
    float       v[NGX_HTTP_LLM_MOCK_DIMS];
    u_char      b64[ngx_base64_encoded_length(sizeof(v))];
    uint32_t    h;
    ngx_str_t   src, dst;
    ngx_uint_t  i;

    h = ngx_murmur_hash2(text->data, text->len);

    for (i = 0; i < NGX_HTTP_LLM_MOCK_DIMS; i++) {
        h = h * 1664525 + 1013904223;
        v[i] = (float) ((double) (int32_t) h / 2147483648.0);
    }

    if (base64) {
        src.data = (u_char *) v;
        src.len = sizeof(v);
        dst.data = b64;

        ngx_encode_base64(&dst, &src);

        ngx_http_llm_mock_print(ctx, "\"%V\"", &dst);
        return;
    }

    ngx_http_llm_mock_print(ctx, "[%f", (double) v[0]);

    for (i = 1; i < NGX_HTTP_LLM_MOCK_DIMS; i++) {
        ngx_http_llm_mock_print(ctx, ",%f", (double) v[i]);
    }

    ngx_http_llm_mock_print(ctx, "]");
}


/* an error in the shape of the request's wire format */

static void
ngx_http_llm_mock_error(ngx_http_llm_mock_ctx_t *ctx, ngx_uint_t status,
    const char *message, ngx_str_t *detail)
{
    const char  *type, *code;

    ctx->status = status;
    ctx->stream = 0;
    ctx->sse = 0;

    /* a message in the middle of a response: start afresh */
    ctx->out = NULL;
    ctx->last = &ctx->out;
    ctx->buf = NULL;
    ctx->size = 0;

    switch (ctx->format) {

    case NGX_HTTP_LLM_MOCK_ANTHROPIC:
        type = (status == NGX_HTTP_NOT_FOUND) ? "not_found_error"
                                              : "invalid_request_error";

        ngx_http_llm_mock_print(ctx,
            "{\"type\":\"error\",\"error\":{\"type\":\"%s\","
            "\"message\":\"%s%J\"}}",
            type, message, detail);
        break;

    case NGX_HTTP_LLM_MOCK_GEMINI:
        type = (status == NGX_HTTP_NOT_FOUND) ? "NOT_FOUND"
                                              : "INVALID_ARGUMENT";

        ngx_http_llm_mock_print(ctx,
            "{\"error\":{\"code\":%i,\"message\":\"%s%J\",\"status\":\"%s\"}}",
            (ngx_int_t) status, message, detail, type);
        break;

    default: /* NGX_HTTP_LLM_MOCK_OPENAI */
        code = (status == NGX_HTTP_NOT_FOUND) ? "\"unknown_url\""
               : (status == NGX_HTTP_NOT_ALLOWED) ? "\"method_not_allowed\""
               : "null";

        ngx_http_llm_mock_print(ctx,
            "{\"error\":{\"message\":\"%s%J\","
            "\"type\":\"invalid_request_error\",\"param\":null,"
            "\"code\":%s}}",
            message, detail, code);
    }
}


/*
 * The content of the last user message that has text; the length of all
 * messages' text is added to *chars.
 */

static json_t *
ngx_http_llm_mock_last_user(json_t *messages, size_t *chars)
{
    size_t   i, n;
    json_t  *msg, *content;

    content = NULL;

    json_array_foreach(messages, i, msg) {
        n = ngx_http_llm_mock_text_len(json_object_get(msg, "content"));
        *chars += n;

        if (n && ngx_http_llm_mock_is(msg, "role", "user")) {
            content = json_object_get(msg, "content");
        }
    }

    return content;
}


/* the length of the text of a string or of an array of parts */

static size_t
ngx_http_llm_mock_text_len(json_t *content)
{
    size_t   i, len;
    json_t  *part, *text;

    if (json_is_string(content)) {
        return json_string_length(content);
    }

    len = 0;

    json_array_foreach(content, i, part) {
        text = json_object_get(part, "text");

        if (json_is_string(text)) {
            len += json_string_length(text);
        }
    }

    return len;
}


/*
 * The text of a string (borrowed) or of an array of parts with "text"
 * (OpenAI and Anthropic content blocks, Gemini parts), joined.
 */

static void
ngx_http_llm_mock_text(ngx_http_llm_mock_ctx_t *ctx, json_t *content,
    ngx_str_t *text)
{
    u_char  *p;
    size_t   i, len;
    json_t  *part, *s, *single;

    if (json_is_string(content)) {
        text->data = (u_char *) json_string_value(content);
        text->len = json_string_length(content);
        return;
    }

    len = 0;
    single = NULL;

    json_array_foreach(content, i, part) {
        s = json_object_get(part, "text");

        if (json_is_string(s) && json_string_length(s)) {
            single = (len == 0) ? s : NULL;
            len += json_string_length(s);
        }
    }

    if (single) {
        text->data = (u_char *) json_string_value(single);
        text->len = len;
        return;
    }

    if (len == 0) {
        ngx_str_null(text);
        return;
    }

    p = ngx_pnalloc(ctx->r->pool, len);
    if (p == NULL) {
        ctx->failed = 1;
        ngx_str_null(text);
        return;
    }

    text->data = p;
    text->len = len;

    json_array_foreach(content, i, part) {
        s = json_object_get(part, "text");

        if (json_is_string(s)) {
            p = ngx_cpymem(p, json_string_value(s), json_string_length(s));
        }
    }
}


/* borrow a string member; empty if missing or not a string */

static void
ngx_http_llm_mock_str(json_t *obj, const char *key, ngx_str_t *s)
{
    json_t  *v;

    v = json_object_get(obj, key);

    if (json_is_string(v)) {
        s->data = (u_char *) json_string_value(v);
        s->len = json_string_length(v);

    } else {
        ngx_str_null(s);
    }
}


static ngx_uint_t
ngx_http_llm_mock_is(json_t *obj, const char *key, const char *value)
{
    json_t  *v;

    v = json_object_get(obj, key);

    return json_is_string(v) && ngx_strcmp(json_string_value(v), value) == 0;
}


/* the word at the start of rest and the blanks after it; 0: rest empty */

static ngx_uint_t
ngx_http_llm_mock_word(ngx_str_t *rest, ngx_str_t *word)
{
    u_char  *p, *last;

    if (rest->len == 0) {
        return 0;
    }

    p = rest->data;
    last = p + rest->len;

    while (p < last && *p != ' ' && *p != '\n' && *p != '\t') {
        p++;
    }

    while (p < last && (*p == ' ' || *p == '\n' || *p == '\t')) {
        p++;
    }

    word->data = rest->data;
    word->len = p - rest->data;

    rest->data = p;
    rest->len = last - p;

    return 1;
}


static ngx_int_t
ngx_http_llm_mock_words(ngx_str_t *s)
{
    ngx_int_t  n;
    ngx_str_t  rest, word;

    n = 0;
    rest = *s;

    while (ngx_http_llm_mock_word(&rest, &word)) {
        n++;
    }

    return n;
}


static ngx_uint_t
ngx_http_llm_mock_suffix(ngx_str_t *uri, const char *s)
{
    size_t  n;

    n = ngx_strlen(s);

    return uri->len >= n
           && ngx_strncmp(uri->data + uri->len - n, s, n) == 0;
}


/*
 * Appends to ctx->out.  The format knows %s (char *), %V (ngx_str_t *),
 * %J (ngx_str_t *, JSON-escaped), %i (ngx_int_t) and %f (double, six
 * decimals).  A failed allocation marks ctx failed; later calls do nothing.
 */

static void
ngx_http_llm_mock_print(ngx_http_llm_mock_ctx_t *ctx, const char *fmt, ...)
{
    size_t        len;
    va_list       args;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    if (ctx->failed) {
        return;
    }

    va_start(args, fmt);
    len = ngx_http_llm_mock_vformat(NULL, fmt, args);
    va_end(args);

    b = ctx->buf;

    if (b == NULL || (size_t) (b->end - b->last) < len) {
        b = ngx_create_temp_buf(ctx->r->pool,
                                ngx_max(len, NGX_HTTP_LLM_MOCK_BUF_SIZE));
        if (b == NULL) {
            ctx->failed = 1;
            return;
        }

        cl = ngx_alloc_chain_link(ctx->r->pool);
        if (cl == NULL) {
            ctx->failed = 1;
            return;
        }

        cl->buf = b;
        cl->next = NULL;

        *ctx->last = cl;
        ctx->last = &cl->next;
        ctx->buf = b;
    }

    va_start(args, fmt);
    b->last += ngx_http_llm_mock_vformat(b->last, fmt, args);
    va_end(args);

    ctx->size += len;
}


/* prints into dst, or only measures if dst is NULL; returns the length */

static size_t
ngx_http_llm_mock_vformat(u_char *dst, const char *fmt, va_list args)
{
    u_char     *s, num[NGX_INT64_LEN + 8];
    size_t      len, n;
    ngx_str_t  *v;

    len = 0;

    while (*fmt) {

        if (*fmt != '%') {
            s = (u_char *) fmt;

            while (*fmt && *fmt != '%') {
                fmt++;
            }

            n = (u_char *) fmt - s;

        } else {

            switch (fmt[1]) {

            case 's':
                s = (u_char *) va_arg(args, char *);
                n = ngx_strlen(s);
                break;

            case 'V':
                v = va_arg(args, ngx_str_t *);
                s = v->data;
                n = v->len;
                break;

            case 'J':
                v = va_arg(args, ngx_str_t *);

                if (dst) {
                    len = (u_char *) ngx_escape_json(dst + len, v->data,
                                                     v->len)
                          - dst;

                } else {
                    len += v->len + ngx_escape_json(NULL, v->data, v->len);
                }

                fmt += 2;
                continue;

            case 'i':
                s = num;
                n = ngx_snprintf(num, sizeof(num), "%i",
                                 va_arg(args, ngx_int_t))
                    - num;
                break;

            case 'f':
                s = num;
                n = ngx_snprintf(num, sizeof(num), "%.6f",
                                 va_arg(args, double))
                    - num;
                break;

            default:
                s = (u_char *) fmt;
                n = 1;
                fmt--;
            }

            fmt += 2;
        }

        if (dst) {
            ngx_memcpy(dst + len, s, n);
        }

        len += n;
    }

    return len;
}
