
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_sse.h"


#define NGX_HTTP_LLM_MAX_ERROR_BODY  65536
#define NGX_HTTP_LLM_MAX_MODEL       256


static ngx_int_t ngx_http_llm_read_body(ngx_http_request_t *r,
    ngx_str_t *out);
static void ngx_http_llm_json_cleanup(void *data);
static void ngx_http_llm_bad_json(ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_validate(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_model_valid(ngx_str_t *name);
static ngx_int_t ngx_http_llm_parse_request(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static json_t *ngx_http_llm_parse_body(ngx_str_t *raw);
static ngx_int_t ngx_http_llm_plan(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_attempt_start(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_subrequest(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_str_t *body);
static ngx_int_t ngx_http_llm_header_push(ngx_pool_t *pool,
    ngx_list_t *headers, ngx_str_t *key, ngx_str_t *prefix,
    ngx_str_t *value, ngx_table_elt_t **out);
static ngx_int_t ngx_http_llm_body_length(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_post_subrequest(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_llm_wake(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_attempt_done(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
static ngx_uint_t ngx_http_llm_condition(ngx_http_llm_attempt_t *a);
static ngx_int_t ngx_http_llm_record(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, char *what);
static char *ngx_http_llm_broken(ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_provider_text(ngx_http_llm_attempt_t *a,
    ngx_str_t *text);
static ngx_int_t ngx_http_llm_send_cooling(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_stream_tail(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_send_header(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
static ngx_int_t ngx_http_llm_sse_event(void *data, ngx_str_t *event,
    ngx_str_t *payload);
static ngx_int_t ngx_http_llm_collect(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, u_char *p, u_char *last, size_t max);

static ngx_int_t ngx_http_llm_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);
static ngx_int_t ngx_http_llm_replace_header(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_replace_body(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;

static ngx_str_t  ngx_http_llm_post_method = ngx_string("POST");


ngx_http_llm_ctx_t *
ngx_http_llm_ctx_create(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    ctx = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_ctx_t));
    if (ctx == NULL) {
        return NULL;
    }

    ctx->request = r;
    ctx->start = ngx_current_msec;
    ctx->ttft = (ngx_msec_t) -1;

    ngx_http_set_ctx(r, ctx, ngx_http_llm_gateway_module);

    return ctx;
}


void
ngx_http_llm_body_handler(ngx_http_request_t *r)
{
    ngx_int_t              rc;
    ngx_str_t              raw;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_error_t   err;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    if (ngx_http_llm_read_body(r, &raw) != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->raw = raw;

    if (ngx_http_llm_validate(r, ctx, &err) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: bad request: %V", &err.message);
        ngx_http_finalize_request(r, ngx_http_llm_send_error(r, ctx, &err));
        return;
    }

    rc = ngx_http_llm_plan(r, ctx);

    if (rc == NGX_DECLINED) {
        ngx_http_llm_error_set(&err, NGX_HTTP_NOT_FOUND,
                               "invalid_request_error", "model_not_found",
                               "model", NULL);

        err.message.data = ngx_pnalloc(r->pool, ctx->model.len + 80);
        if (err.message.data == NULL) {
            ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
            return;
        }

        err.message.len = ngx_sprintf(err.message.data,
                                      "The model `%V` does not exist or you "
                                      "do not have access to it.",
                                      &ctx->model)
                          - err.message.data;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: no route for model \"%V\"",
                      ngx_http_llm_escape(r->pool, &ctx->model, 1));

        ngx_http_finalize_request(r, ngx_http_llm_send_error(r, ctx, &err));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    rc = ngx_http_llm_parse_request(r, ctx);

    if (rc == NGX_DECLINED) {
        ngx_http_llm_bad_json(&err);
        ngx_http_finalize_request(r, ngx_http_llm_send_error(r, ctx, &err));
        return;
    }

    if (rc != NGX_OK) {
        ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    r->write_event_handler = ngx_http_llm_wake;

    rc = ngx_http_llm_attempt_start(r, ctx);

    if (rc == NGX_OK) {
        return;
    }

    if (rc == NGX_BUSY) {
        ngx_http_finalize_request(r, ngx_http_llm_send_cooling(r, ctx));
        return;
    }

    if (rc == NGX_ABORT) {
        ngx_http_llm_bad_json(&err);
        ngx_http_finalize_request(r, ngx_http_llm_send_error(r, ctx, &err));
        return;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_llm_error_set(&err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "unsupported_endpoint", "model", NULL);
        ngx_str_set(&err.message, "No target of this model supports "
                                  "this endpoint.");

        ngx_http_finalize_request(r, ngx_http_llm_send_error(r, ctx, &err));
        return;
    }

    ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR);
}


static void
ngx_http_llm_bad_json(ngx_http_llm_error_t *err)
{
    ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST, "invalid_request_error",
                           "invalid_json", NULL, NULL);
    ngx_str_set(&err->message, "We could not parse the JSON body of your "
                               "request (invalid UTF-8?).");
}


static void
ngx_http_llm_json_cleanup(void *data)
{
    json_decref(data);
}


static ngx_int_t
ngx_http_llm_read_body(ngx_http_request_t *r, ngx_str_t *out)
{
    off_t         size;
    u_char       *p;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    ngx_str_set(out, "");

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        out->data = cl->buf->pos;
        out->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    size = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        size += ngx_buf_size(cl->buf);
    }

    p = ngx_pnalloc(r->pool, size + 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    out->data = p;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (b->in_file) {
            n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                              b->file_pos);

            if (n != b->file_last - b->file_pos) {
                ngx_log_error(NGX_LOG_CRIT, r->connection->log, 0,
                              "llm: cannot read the buffered request body");
                return NGX_ERROR;
            }

            p += n;
            continue;
        }

        p = ngx_cpymem(p, b->pos, b->last - b->pos);
    }

    out->len = p - out->data;

    return NGX_OK;
}


/*
 * Formats other than OpenAI's need the body as a tree: it is parsed once,
 * and only when a target of the route needs it.
 */

static ngx_int_t
ngx_http_llm_parse_request(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_uint_t              i;
    ngx_pool_cleanup_t     *cln;
    ngx_http_llm_target_t  *t;

    t = ctx->route->targets.elts;

    for (i = 0; i < ctx->route->targets.nelts; i++) {
        if (!t[i].provider->driver->raw_request) {
            break;
        }
    }

    if (i == ctx->route->targets.nelts) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_ERROR;
    }

    ctx->body = ngx_http_llm_parse_body(&ctx->raw);

    cln->handler = ngx_http_llm_json_cleanup;
    cln->data = ctx->body;

    return ctx->body ? NGX_OK : NGX_DECLINED;
}


static json_t *
ngx_http_llm_parse_body(ngx_str_t *raw)
{
    json_error_t  jerr;

    return json_loadb((char *) raw->data, raw->len, 0, &jerr);
}


json_t *
ngx_http_llm_call_tree(ngx_http_llm_call_t *call)
{
    ngx_pool_cleanup_t  *cln;

    if (*call->tree) {
        return *call->tree;
    }

    cln = ngx_pool_cleanup_add(call->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    *call->tree = ngx_http_llm_parse_body(&call->raw);

    cln->handler = ngx_http_llm_json_cleanup;
    cln->data = *call->tree;

    return *call->tree;
}


static ngx_int_t
ngx_http_llm_validate(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_error_t *err)
{
    u_char     *pos;
    ngx_int_t   rc, dup;
    ngx_str_t  *m, *v, opt[1], first;

    static const char  *names[] = {
        "model", "messages", "input", "stream", "stream_options", NULL
    };

    static const char  *options[] = { "include_usage", NULL };

    m = ctx->members;

    rc = ngx_http_llm_json_members_dup(ctx->raw.data,
                                       ctx->raw.data + ctx->raw.len, names, m,
                                       &dup);

    if (rc == NGX_ERROR) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_json", NULL,
                               NULL);
        ngx_str_set(&err->message, "We could not parse the JSON body of "
                                   "your request. The gateway expects a "
                                   "JSON payload.");
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type", NULL,
                               NULL);
        ngx_str_set(&err->message, "The request body must be a JSON "
                                   "object.");
        return NGX_ERROR;
    }

    if (dup >= 0) {

        /* the gateway and the provider could read different values */

        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "duplicate_parameter",
                               (char *) names[dup], NULL);
        ngx_str_set(&err->message, "A parameter appears more than once in "
                                   "the request body.");
        return NGX_ERROR;
    }

#define ngx_http_llm_is(v, s)                                                \
    ((v)->len == sizeof(s) - 1 && ngx_strncmp((v)->data, s, (v)->len) == 0)

    v = &m[NGX_HTTP_LLM_M_MODEL];

    if (v->len == 0 || ngx_http_llm_is(v, "null")) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "missing_required_parameter", "model", NULL);
        ngx_str_set(&err->message, "You must provide a model parameter.");
        return NGX_ERROR;
    }

    rc = ngx_http_llm_json_string(r->pool, v, &ctx->model);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    if (rc == NGX_DECLINED || ctx->model.len == 0) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type",
                               "model", NULL);
        ngx_str_set(&err->message, "Invalid type for 'model': expected a "
                                   "non-empty string.");
        return NGX_ERROR;
    }

    if (ngx_http_llm_model_valid(&ctx->model) != NGX_OK) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_value",
                               "model", NULL);
        ngx_str_set(&err->message, "Invalid 'model': a model name is 1 to "
                                   "256 printable ASCII characters without "
                                   "spaces, and has no \".\" or \"..\" "
                                   "path segment.");
        return NGX_ERROR;
    }

    if (ctx->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        v = &m[NGX_HTTP_LLM_M_INPUT];

        if (v->len == 0 || ngx_http_llm_is(v, "null")) {
            ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error",
                                   "missing_required_parameter", "input",
                                   NULL);
            ngx_str_set(&err->message, "Missing required parameter: "
                                       "'input'.");
            return NGX_ERROR;
        }

        if (v->data[0] != '"' && v->data[0] != '[') {
            ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                                   "invalid_request_error", "invalid_type",
                                   "input", NULL);
            ngx_str_set(&err->message, "Invalid type for 'input': expected "
                                       "a string or an array.");
            return NGX_ERROR;
        }

        return NGX_OK;
    }

    v = &m[NGX_HTTP_LLM_M_MESSAGES];

    if (v->len == 0 || ngx_http_llm_is(v, "null")) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "missing_required_parameter", "messages",
                               NULL);
        ngx_str_set(&err->message, "Missing required parameter: "
                                   "'messages'.");
        return NGX_ERROR;
    }

    if (v->data[0] != '[') {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type",
                               "messages", NULL);
        ngx_str_set(&err->message, "Invalid type for 'messages': expected "
                                   "an array.");
        return NGX_ERROR;
    }

    pos = NULL;

    if (ngx_http_llm_json_next(v, &pos, &first) == NGX_DONE) {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "empty_array",
                               "messages", NULL);
        ngx_str_set(&err->message, "Invalid 'messages': empty array. "
                                   "Expected an array with minimum length "
                                   "1.");
        return NGX_ERROR;
    }

    v = &m[NGX_HTTP_LLM_M_STREAM];

    if (v->len && !ngx_http_llm_is(v, "true") && !ngx_http_llm_is(v, "false")
        && !ngx_http_llm_is(v, "null"))
    {
        ngx_http_llm_error_set(err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error", "invalid_type",
                               "stream", NULL);
        ngx_str_set(&err->message, "Invalid type for 'stream': expected a "
                                   "boolean.");
        return NGX_ERROR;
    }

    ctx->stream = ngx_http_llm_is(v, "true");

    v = &m[NGX_HTTP_LLM_M_STREAM_OPTIONS];

    if (v->len && v->data[0] == '{'
        && ngx_http_llm_json_members(v->data, v->data + v->len, options, opt)
           == NGX_OK)
    {
        ctx->include_usage = ngx_http_llm_is(&opt[0], "true");
    }

#undef ngx_http_llm_is

    return NGX_OK;
}


/*
 * The one rule for the model names clients send, applied before routing:
 * the name goes into response headers, log lines, zone keys and, for
 * some formats, a provider's URI path.  Drivers that put it into a path
 * check their own, narrower, rule (ngx_http_llm_path_name()).
 */

static ngx_int_t
ngx_http_llm_model_valid(ngx_str_t *name)
{
    u_char  *p, *last, *seg;
    size_t   n;

    if (name->len == 0 || name->len > NGX_HTTP_LLM_MAX_MODEL) {
        return NGX_DECLINED;
    }

    last = name->data + name->len;
    seg = name->data;

    for (p = name->data; /* void */; p++) {

        if (p == last || *p == '/' || *p == '\\') {
            n = p - seg;

            if ((n == 1 && seg[0] == '.')
                || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            {
                return NGX_DECLINED;
            }

            if (p == last) {
                return NGX_OK;
            }

            seg = p + 1;
            continue;
        }

        if (*p <= ' ' || *p >= 0x7f) {
            return NGX_DECLINED;
        }
    }
}


static ngx_int_t
ngx_http_llm_plan(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_uint_t                i, n;
    ngx_http_llm_route_t     *route;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ctx->conf;
    ctx->route = NULL;

    if (llcf->routes) {
        route = llcf->routes->elts;

        for (i = 0; i < llcf->routes->nelts; i++) {
            if (route[i].name.len == ctx->model.len
                && ngx_strncmp(route[i].name.data, ctx->model.data,
                               ctx->model.len) == 0)
            {
                ctx->route = &route[i];
                break;
            }
        }
    }

    if (ctx->route == NULL) {
        ctx->route = llcf->catch_all;
    }

    if (ctx->route == NULL) {
        return NGX_DECLINED;
    }

    n = ctx->route->targets.nelts;

    if (ngx_http_llm_route_prepare(r, ctx) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->tries = n;

    if (!(llcf->fallback & NGX_HTTP_LLM_FB_OFF)
        && llcf->fallback_tries && llcf->fallback_tries < n)
    {
        ctx->tries = llcf->fallback_tries;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_attempt_start(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                rc;
    ngx_str_t                body;
    ngx_http_llm_call_t     *call;
    ngx_http_llm_target_t   *t;
    ngx_http_llm_attempt_t  *a;

    while (ctx->nattempts < ctx->tries) {

        if (ctx->nattempts && ctx->conf->fallback_timeout
            && ngx_current_msec - ctx->start >= ctx->conf->fallback_timeout)
        {
            return NGX_DECLINED;
        }

        rc = ngx_http_llm_route_pick(r, ctx, &t);

        if (rc != NGX_OK) {
            return rc;
        }

        a = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_attempt_t));
        if (a == NULL) {
            return NGX_ERROR;
        }

        a->target = t;

        call = &a->call;
        call->r = r;
        call->pool = r->pool;
        call->log = r->connection->log;
        call->endpoint = ctx->endpoint;
        call->request = ctx->body;
        call->tree = &ctx->body;
        call->raw = ctx->raw;
        call->members = ctx->members;
        call->provider = t->provider;
        call->model = t->model.len ? t->model : ctx->model;
        call->public_model = ctx->model;
        call->created = ngx_time();
        call->usage.prompt = -1;
        call->usage.completion = -1;
        call->usage.cached = -1;
        call->stream = ctx->stream;
        call->include_usage = ctx->include_usage;

        rc = t->provider->driver->build_request(call);

        if (rc == NGX_ABORT) {
            /* the body passed the scanner but not jansson (UTF-8) */
            return NGX_ABORT;
        }

        if (rc == NGX_DECLINED) {
            ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                          "llm: provider \"%V\" (format %V) cannot serve "
                          "this request, skipped",
                          &t->provider->name, &t->provider->driver->name);
            continue;
        }

        if (rc != NGX_OK) {
            json_decref(call->body);
            return NGX_ERROR;
        }

        if (call->body) {
            rc = ngx_http_llm_json_dump(r->pool, call->body, &body);

            json_decref(call->body);
            call->body = NULL;

            if (rc != NGX_OK) {
                return NGX_ERROR;
            }

        } else {
            body = call->raw_body;
        }

        if (ngx_http_llm_subrequest(r, ctx, a, &body) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->cur = a;
        ctx->nattempts++;

        return NGX_OK;
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_subrequest(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_str_t *body)
{
    u_char                      *p;
    ngx_buf_t                   *b;
    ngx_str_t                    uri, *args, accept, *extra;
    ngx_list_t                   headers;
    ngx_chain_t                 *cl;
    ngx_table_elt_t             *content_type;
    ngx_http_request_t          *sr;
    ngx_http_llm_driver_t       *drv;
    ngx_http_llm_provider_t     *prov;
    ngx_http_request_body_t     *rb;
    ngx_http_post_subrequest_t  *ps;

    static ngx_str_t  content_type_key = ngx_string("Content-Type");
    static ngx_str_t  accept_key = ngx_string("Accept");
    static ngx_str_t  json = ngx_string("application/json");
    static ngx_str_t  event_stream = ngx_string("text/event-stream");
    static ngx_str_t  empty = ngx_null_string;

    prov = a->target->provider;
    drv = prov->driver;

    uri.len = prov->pass.len + a->call.uri.len;
    uri.data = ngx_pnalloc(r->pool, uri.len);
    if (uri.data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(uri.data, prov->pass.data, prov->pass.len);
    ngx_memcpy(p, a->call.uri.data, a->call.uri.len);

    args = a->call.args.len ? &a->call.args : NULL;

    /*
     * The body and headers are the attempt's own, and made before the
     * subrequest is: nothing of the client's request (Authorization,
     * Cookie, ...) reaches the provider, and a failed allocation leaves
     * no subrequest behind.
     */

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_ERROR;
    }

    b->pos = body->data;
    b->last = body->data + body->len;
    b->start = b->pos;
    b->end = b->last;
    b->memory = 1;
    b->last_buf = 1;
    b->last_in_chain = 1;

    cl = ngx_alloc_chain_link(r->pool);
    if (cl == NULL) {
        return NGX_ERROR;
    }

    cl->buf = b;
    cl->next = NULL;

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NGX_ERROR;
    }

    rb->bufs = cl;
    rb->rest = 0;

    if (ngx_list_init(&headers, r->pool, 6, sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    accept = ctx->stream ? event_stream : json;

    if (ngx_http_llm_header_push(r->pool, &headers, &content_type_key,
                                 &empty, &json, &content_type)
        != NGX_OK
        || ngx_http_llm_header_push(r->pool, &headers, &accept_key, &empty,
                                    &accept, NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (prov->key.len
        && ngx_http_llm_header_push(r->pool, &headers, &drv->auth_header,
                                    &drv->auth_prefix, &prov->key, NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    for (extra = drv->extra_headers; extra && extra->len; extra += 2) {
        if (ngx_http_llm_header_push(r->pool, &headers, &extra[0], &empty,
                                     &extra[1], NULL)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NGX_ERROR;
    }

    ps->handler = ngx_http_llm_post_subrequest;
    ps->data = ctx;

    if (ngx_http_subrequest(r, &uri, args, &sr, ps, 0) != NGX_OK) {
        return NGX_ERROR;
    }

    a->sr = sr;
    a->start = ngx_current_msec;

    sr->method = NGX_HTTP_POST;
    sr->method_name = ngx_http_llm_post_method;
    sr->header_only = 0;

    sr->request_body = rb;
    sr->request_body_no_buffering = 0;

    ngx_memzero(&sr->headers_in, sizeof(ngx_http_headers_in_t));

    sr->headers_in.headers = headers;

    if (headers.last == &headers.part) {
        /* the list's first part moved with it */
        sr->headers_in.headers.last = &sr->headers_in.headers.part;
    }
    sr->headers_in.content_type = content_type;
    sr->headers_in.keep_alive_n = -1;
    sr->headers_in.server = r->headers_in.server;

    /*
     * No length yet: the pass location's client_max_body_size must not
     * apply to a body the gateway location accepted (and that translation
     * may have grown).  ngx_http_llm_body_length() sets it before the
     * proxy module reads it.
     */

    sr->headers_in.content_length_n = -1;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_header_push(ngx_pool_t *pool, ngx_list_t *headers,
    ngx_str_t *key, ngx_str_t *prefix, ngx_str_t *value,
    ngx_table_elt_t **out)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = *key;

    h->lowcase_key = ngx_pnalloc(pool, key->len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    h->hash = ngx_hash_strlow(h->lowcase_key, key->data, key->len);

    if (prefix->len == 0) {
        h->value = *value;

    } else {
        h->value.len = prefix->len + value->len;

        p = ngx_pnalloc(pool, h->value.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->value.data = p;
        p = ngx_cpymem(p, prefix->data, prefix->len);
        ngx_memcpy(p, value->data, value->len);
    }

    if (out) {
        *out = h;
    }

    return NGX_OK;
}


/*
 * A preaccess phase handler: the length of an attempt's body, set after
 * the location of the subrequest was found (see ngx_http_llm_subrequest).
 */

static ngx_int_t
ngx_http_llm_body_length(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    if (r == r->main) {
        return NGX_DECLINED;
    }

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_gateway_module);

    if (ctx && ctx->cur && ctx->cur->sr == r
        && r->headers_in.content_length_n == -1)
    {
        r->headers_in.content_length_n =
                                    ngx_buf_size(r->request_body->bufs->buf);
    }

    return NGX_DECLINED;
}


static ngx_int_t
ngx_http_llm_post_subrequest(ngx_http_request_t *sr, void *data,
    ngx_int_t rc)
{
    ngx_http_llm_ctx_t *ctx = data;

    ngx_http_upstream_t     *u;
    ngx_http_llm_attempt_t  *a;

    a = ctx->cur;

    if (a == NULL || a->sr != sr || a->finished) {
        return rc;
    }

    a->finished = 1;
    a->rc = rc;
    a->elapsed = ngx_current_msec - a->start;

    if (rc == NGX_HTTP_CLIENT_CLOSED_REQUEST || sr->connection->error) {
        return rc;
    }

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {

        /*
         * The provider could not be reached, timed out, or broke off its
         * answer.  The client's request stays: the parent decides whether
         * to try another target or how to end the response.
         */

        a->failed = 1;

        if (rc == NGX_HTTP_GATEWAY_TIME_OUT
            || (sr->upstream && sr->upstream->peer.connection == NULL
                && sr->connection->write->timedout))
        {
            a->timedout = 1;
        }

        return NGX_OK;
    }

    /*
     * With the provider's header already passed, nginx ends a broken
     * answer like a complete one; what is left to read tells them apart.
     */

    u = sr->upstream;

    if (u && a->header
        && ((u->buffering && u->pipe) ? u->pipe->length > 0 : u->length > 0))
    {
        a->failed = 1;
    }

    return rc;
}


static void
ngx_http_llm_wake(ngx_http_request_t *r)
{
    ngx_int_t                rc;
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_attempt_t  *a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    if (ctx == NULL || ctx->done) {
        return;
    }

    a = ctx->cur;

    if (a == NULL || !a->finished || !a->sr->done) {
        return;
    }

    r->connection->log->action = "answering an llm request";

    rc = ngx_http_llm_attempt_done(r, ctx, a);

    if (rc == NGX_AGAIN) {
        /* another attempt is under way */
        return;
    }

    ctx->done = 1;

    ngx_http_finalize_request(r, rc);
}


static ngx_uint_t
ngx_http_llm_condition(ngx_http_llm_attempt_t *a)
{
    switch (a->status) {
    case 429:
        return NGX_HTTP_LLM_FB_429;
    case 401:
        return NGX_HTTP_LLM_FB_401;
    case 403:
        return NGX_HTTP_LLM_FB_403;
    case 500:
        return NGX_HTTP_LLM_FB_500|NGX_HTTP_LLM_FB_5XX;
    case 502:
        return NGX_HTTP_LLM_FB_502|NGX_HTTP_LLM_FB_5XX;
    case 503:
    case 529:
        return NGX_HTTP_LLM_FB_503|NGX_HTTP_LLM_FB_5XX;
    case 504:
        return NGX_HTTP_LLM_FB_504|NGX_HTTP_LLM_FB_5XX;
    }

    if (a->status >= 500 && a->status < 600) {
        return NGX_HTTP_LLM_FB_5XX;
    }

    return 0;
}


static ngx_int_t
ngx_http_llm_attempt_done(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    char                     *what;
    json_t                   *in, *out;
    ngx_int_t                 rc;
    ngx_str_t                 body, *pname, *model;
    ngx_uint_t                cond, fallback, broken;
    json_error_t              jerr;
    ngx_http_llm_error_t      err;
    ngx_http_llm_driver_t    *drv;

    drv = a->target->provider->driver;
    pname = &a->target->provider->name;
    model = ngx_http_llm_escape(r->pool, &a->call.model, 1);

    body.data = a->body;
    body.len = a->body_len;

    if (ngx_http_llm_provider_text(a, &body) != NGX_OK) {
        return NGX_ERROR;
    }

    /* a stream is complete when the provider said so or gave a reason */

    broken = !a->stream_done
             && (a->failed || a->call.finish_reason.len == 0);

    if (r->header_sent) {

        /* a stream already under way: it can only be ended */

        ctx->answer = a;

        what = broken ? ngx_http_llm_broken(a, &err) : NULL;

        ngx_http_llm_route_result(r, ctx, a, broken);

        if (ngx_http_llm_record(r, ctx, a, what) != NGX_OK) {
            return NGX_ERROR;
        }

        if (broken) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "llm: provider \"%V\" model \"%V\" failed: %s "
                          "after %Mms, stream ended with an error",
                          pname, model, what, a->elapsed);
        }

        return ngx_http_llm_stream_tail(r, ctx, a, broken ? &err : NULL);
    }

    ngx_http_llm_error_defaults(NGX_HTTP_BAD_GATEWAY, &err);
    cond = 0;
    what = NULL;
    out = NULL;

    if (a->failed && !a->header) {
        cond = a->timedout ? NGX_HTTP_LLM_FB_TIMEOUT : NGX_HTTP_LLM_FB_ERROR;
        what = a->timedout ? "timeout" : "error";

        if (a->timedout) {
            err.status = NGX_HTTP_GATEWAY_TIME_OUT;
            ngx_str_set(&err.code, "provider_timeout");
            ngx_str_set(&err.message, "The provider did not answer in "
                                      "time.");

        } else {
            ngx_str_set(&err.code, "provider_error");
            ngx_str_set(&err.message, "The provider could not be reached.");
        }

    } else if (a->failed) {
        cond = NGX_HTTP_LLM_FB_ERROR;
        what = ngx_http_llm_broken(a, &err);

    } else if (a->status >= 200 && a->status < 300) {

        if (a->streaming) {

            /* nothing has reached the client yet: a stream that ended
             * unfinished is an invalid answer, and may fall back */

            if (!broken) {
                ctx->answer = a;

                ngx_http_llm_route_result(r, ctx, a, 0);

                if (ngx_http_llm_record(r, ctx, a, NULL) != NGX_OK) {
                    return NGX_ERROR;
                }

                rc = ngx_http_llm_send_header(r, ctx, a);

                if (rc == NGX_ERROR || rc > NGX_OK) {
                    return rc;
                }

                return ngx_http_llm_stream_tail(r, ctx, a, NULL);
            }

            rc = NGX_DECLINED;

        } else if (a->too_big) {
            rc = NGX_DECLINED;

        } else {
            rc = drv->parse_raw ? drv->parse_raw(&a->call, &body) : NGX_AGAIN;

            if (rc == NGX_OK && a->call.answer.len) {
                body = a->call.answer;

            } else if (rc == NGX_AGAIN && drv->parse_response) {
                in = json_loadb((char *) body.data, body.len, 0, &jerr);
                rc = in ? drv->parse_response(&a->call, in, &out)
                        : NGX_DECLINED;
                json_decref(in);

            } else if (rc == NGX_AGAIN) {
                rc = NGX_DECLINED;
            }
        }

        if (rc == NGX_OK) {
            ctx->answer = a;

            ngx_http_llm_route_result(r, ctx, a, 0);

            if (ngx_http_llm_record(r, ctx, a, NULL) != NGX_OK) {
                json_decref(out);
                return NGX_ERROR;
            }

            if (out) {
                rc = ngx_http_llm_json_dump(r->pool, out, &body);
                json_decref(out);

                if (rc != NGX_OK) {
                    return NGX_ERROR;
                }
            }

            return ngx_http_llm_send_answer(r, ctx, a, &body);
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        cond = NGX_HTTP_LLM_FB_INVALID;
        ngx_str_set(&err.code, "invalid_response");

        if (a->too_big) {
            what = "too large";
            ngx_str_set(&err.message, "The provider's answer is larger than "
                                      "llm_max_response_size.");

        } else {
            what = "invalid";
            ngx_str_set(&err.message, "The provider sent an answer the "
                                      "gateway could not read.");
        }

    } else {
        drv->map_error(&a->call, a->status, &body, &err);
        cond = ngx_http_llm_condition(a);

        if (err.message.len == 0) {
            err.message.data = ngx_pnalloc(r->pool, 64 + pname->len);
            if (err.message.data == NULL) {
                return NGX_ERROR;
            }

            err.message.len = ngx_sprintf(err.message.data,
                                          "The provider %V answered HTTP "
                                          "%ui.", pname, a->status)
                              - err.message.data;
        }
    }

    ngx_http_llm_route_result(r, ctx, a,
                              cond & (NGX_HTTP_LLM_FB_ERROR
                                      |NGX_HTTP_LLM_FB_TIMEOUT
                                      |NGX_HTTP_LLM_FB_INVALID
                                      |NGX_HTTP_LLM_FB_429
                                      |NGX_HTTP_LLM_FB_5XX));

    if (ngx_http_llm_record(r, ctx, a, what) != NGX_OK) {
        return NGX_ERROR;
    }

    if (what) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm: provider \"%V\" model \"%V\" failed: %s "
                      "after %Mms", pname, model, what, a->elapsed);

    } else {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm: provider \"%V\" model \"%V\" failed: HTTP %ui "
                      "after %Mms", pname, model, a->status, a->elapsed);
    }

    fallback = ctx->conf->fallback;

    if (!(fallback & NGX_HTTP_LLM_FB_OFF) && (fallback & cond)) {

        if (cond != NGX_HTTP_LLM_FB_429) {
            ctx->not_429 = 1;
        }

        rc = ngx_http_llm_attempt_start(r, ctx);

        if (rc == NGX_OK) {
            return NGX_AGAIN;
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        /* NGX_DECLINED or NGX_BUSY: no target is left to try */

        if (ctx->nattempts > 1 && ctx->not_429) {
            /* every target failed; when every one of them was rate
             * limited, the last 429 and its Retry-After go to the client */
            err.status = a->timedout ? NGX_HTTP_GATEWAY_TIME_OUT
                                     : NGX_HTTP_BAD_GATEWAY;
        }
    }

    ctx->answer = a;

    return ngx_http_llm_send_error(r, ctx, &err);
}


/*
 * Why an answer whose header came stopped short, as an error for the
 * client and a word for the log and $llm_attempts.
 */

static char *
ngx_http_llm_broken(ngx_http_llm_attempt_t *a, ngx_http_llm_error_t *err)
{
    ngx_http_llm_error_set(err, NGX_HTTP_BAD_GATEWAY, "api_error",
                           "provider_error", NULL, NULL);

    if (a->too_big) {
        ngx_str_set(&err->code, "response_too_large");
        ngx_str_set(&err->message, "The provider sent a stream event larger "
                                   "than llm_max_response_size.");
        return "too large";
    }

    if (a->untranslated) {
        ngx_str_set(&err->code, "internal_error");
        ngx_str_set(&err->message, "The gateway could not translate the "
                                   "provider's stream.");
        return "untranslated";
    }

    if (a->streaming) {
        ngx_str_set(&err->message, "The provider closed the stream before "
                                   "it was complete.");

    } else {
        ngx_str_set(&err->message, "The provider closed the connection "
                                   "before the answer was complete.");
    }

    return "broken";
}


/*
 * Provider text the gateway relays or reads (a whole body, a stream
 * event): invalid UTF-8 becomes U+FFFD, so that clients get valid JSON
 * strings, and the key the gateway sent is redacted, in case the
 * provider quotes it.
 */

static ngx_int_t
ngx_http_llm_provider_text(ngx_http_llm_attempt_t *a, ngx_str_t *text)
{
    if (text->len == 0) {
        return NGX_OK;
    }

    if (ngx_http_llm_utf8_repair(a->call.pool, text) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_redact(text, &a->target->provider->key);

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_record(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, char *what)
{
    u_char     *p;
    size_t      len;
    ngx_str_t  *name, *model;

    name = &a->target->provider->name;
    model = &a->call.model;

    len = ctx->attempts.len + 2 + name->len + 1 + model->len + 1
          + NGX_INT_T_LEN + 1 + NGX_TIME_T_LEN + 2 + 8;

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    if (ctx->attempts.len) {
        p = ngx_cpymem(p, ctx->attempts.data, ctx->attempts.len);
        *p++ = ',';
        *p++ = ' ';
    }

    ctx->attempts.data = p - (ctx->attempts.len ? ctx->attempts.len + 2 : 0);

    if (what) {
        p = ngx_sprintf(p, "%V:%V %s %Mms", name, model, what, a->elapsed);

    } else {
        p = ngx_sprintf(p, "%V:%V %ui %Mms", name, model, a->status,
                        a->elapsed);
    }

    ctx->attempts.len = p - ctx->attempts.data;

    return NGX_OK;
}


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


static ngx_int_t
ngx_http_llm_send_header(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    u_char     *p;
    ngx_str_t   s;

    ctx->own = 1;

    if (a) {
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

    if (a && a->streaming && r->headers_out.status == 0) {
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
    }

    return ngx_http_send_header(r);
}


static ngx_int_t
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

    ngx_http_llm_error_set(&err, 429, "rate_limit_error",
                           "rate_limit_exceeded", NULL, NULL);

    err.message.data = p;
    err.message.len = ngx_sprintf(p, "Every provider of model `%V` asked "
                                  "for a pause. Please try again in %Ts.",
                                  &ctx->model, secs)
                      - p;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "llm: every target of \"%V\" is cooling down, "
                  "answered 429", ngx_http_llm_escape(r->pool, &ctx->model, 1));

    return ngx_http_llm_send_error(r, ctx, &err);
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


static ngx_int_t
ngx_http_llm_stream_tail(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_http_llm_error_t *err)
{
    json_t               *chunk, *delta, *usage;
    ngx_buf_t            *b;
    ngx_str_t             s;
    ngx_chain_t          *cl;
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

    cl = call->pend;
    call->pend = NULL;
    cl->next = NULL;

    b = cl->buf;
    b->last_buf = 1;
    b->last_in_chain = 1;
    b->flush = 1;

    return ngx_http_output_filter(r, cl);
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
    ngx_http_llm_error_t *err)
{
    ngx_str_t                body;
    ngx_list_part_t         *part;
    ngx_table_elt_t         *h, *copy;
    ngx_uint_t               i;
    ngx_http_llm_attempt_t  *a;

    if (ngx_http_llm_error_json(r->pool, err, &body) != NGX_OK) {
        return NGX_ERROR;
    }

    a = ctx->answer;

    /* a provider's pause request is passed on to the client */

    if (a && a->sr && err->status == 429) {
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

    if (a->status >= 200 && a->status < 300) {
        ctx->ttft = ngx_current_msec - ctx->start;

        if (ctx->stream) {
            sse = ngx_palloc(r->pool, sizeof(ngx_http_llm_sse_t));
            if (sse == NULL) {
                return NGX_ERROR;
            }

            ngx_http_llm_sse_init(sse, r->pool, ctx->conf->max_response,
                                  ngx_http_llm_sse_event, a);

            a->sse = sse;
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
    ngx_chain_t             *cl, *out;
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

        if (ngx_buf_in_memory(b) && b->last > b->pos) {

            if (a->streaming) {
                if (!a->stream_done && !a->too_big) {
                    rc = ngx_http_llm_sse_feed(a->sse, b->pos, b->last);

                    /*
                     * On failure the rest of the stream is read and
                     * dropped: an error from a filter would close the
                     * client's connection with no answer at all.
                     */

                    if (rc == NGX_DECLINED) {
                        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                                      "llm: provider \"%V\" model \"%V\" "
                                      "sent a stream event longer than "
                                      "llm_max_response_size",
                                      &a->target->provider->name,
                                      ngx_http_llm_escape(r->pool,
                                                          &a->call.model, 1));
                        a->too_big = 1;
                        a->failed = 1;

                    } else if (rc == NGX_ERROR) {
                        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                                      "llm: the stream of provider \"%V\" "
                                      "model \"%V\" could not be translated",
                                      &a->target->provider->name,
                                      ngx_http_llm_escape(r->pool,
                                                          &a->call.model, 1));
                        a->untranslated = 1;
                        a->failed = 1;
                    }
                }

            } else if (ngx_http_llm_collect(r, a, b->pos, b->last, max)
                       != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        b->pos = b->last;

        if (b->in_file) {
            b->file_pos = b->file_last;
        }
    }

    if (!a->streaming || a->call.pend == NULL) {
        return NGX_OK;
    }

    out = a->call.pend;
    a->call.pend = NULL;
    out->next = NULL;

    if (!r->main->header_sent) {
        ctx->answer = a;

        rc = ngx_http_llm_send_header(r->main, ctx, a);

        if (rc == NGX_ERROR || rc > NGX_OK) {
            return NGX_ERROR;
        }
    }

    out->buf->flush = 1;

    rc = ngx_http_next_body_filter(r, out);

    ngx_chain_update_chains(r->pool, &a->call.free, &a->call.busy, &out,
                            (ngx_buf_tag_t) &ngx_http_llm_gateway_module);

    return rc;
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
        if (r->headers_out.status >= 500) {
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
ngx_http_llm_request_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_body_length;

    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_llm_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_llm_body_filter;

    return NGX_OK;
}
