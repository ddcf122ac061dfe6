
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * A gateway request, from its body to its end:
 *
 *   content handler (ngx_http_llm_module.c), body read
 *     -> ngx_http_llm_body_handler: validate, route (drivers parse the
 *        body into a tree themselves, when they need one)
 *        -> refused (bad request, no route, a rate limit, no target a
 *           budget can pay for, every target cooling down)  REFUSED
 *        -> the cache (ngx_http_llm_cache.c): a hit      ANSWERED/STREAMED
 *           (with a provider's embedder, its embedding first: a
 *           subrequest, then ngx_http_llm_cache_embedded())
 *        -> ngx_http_llm_attempt_start (ngx_http_llm_attempt.c):
 *           a subrequest to the target's pass location; the filters
 *           (ngx_http_llm_filter.c) collect its answer or translate its
 *           stream to the client; when it is done, attempt_done:
 *             a whole answer                               ANSWERED
 *             a stream that reached its end                STREAMED
 *             a failure, and a target left to fall back to
 *                                          -> the next attempt
 *             a failure, nothing left (or a stream cut
 *             after it started)                            FAILED
 *
 * Each outcome goes through ngx_http_llm_end(), which records it and
 * finalizes the request.  ngx_http_llm_finish(), a log phase handler,
 * then runs once for every gateway request, also for one whose client
 * went away before its end (outcome RUNNING): it is where a request's
 * spend is settled, its answer cached and its counters counted.
 */


#define NGX_HTTP_LLM_MAX_MODEL       256


#define ngx_http_llm_is(v, s)                                                \
    ((v)->len == sizeof(s) - 1 && ngx_strncmp((v)->data, s, (v)->len) == 0)


static ngx_int_t ngx_http_llm_read_body(ngx_http_request_t *r,
    ngx_str_t *out);
static void ngx_http_llm_json_cleanup(void *data);
static void ngx_http_llm_bad_json(ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_validate(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_error_t *err);
static ngx_int_t ngx_http_llm_model_valid(ngx_str_t *name);
static json_t *ngx_http_llm_parse_body(ngx_str_t *raw);
static ngx_int_t ngx_http_llm_plan(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static ngx_int_t ngx_http_llm_refuse(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_int_t rc);
static void ngx_http_llm_wait_done(ngx_event_t *ev);
static void ngx_http_llm_wait_cleanup(void *data);


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

    ctx->spend.cost = -1;
    ctx->spend.limit = -1;
    ctx->spend.remaining = -1;
    ctx->spend.rl_requests = -1;
    ctx->spend.rl_tokens = -1;

    ngx_http_llm_stream_init(&ctx->out, r->pool);

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
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                         NGX_HTTP_INTERNAL_SERVER_ERROR);
        return;
    }

    ctx->raw = raw;

    if (ngx_http_llm_validate(r, ctx, &err) != NGX_OK) {
        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: bad request: %V", &err.message);
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                         ngx_http_llm_send_error(r, ctx, NULL, &err));
        return;
    }

    rc = ngx_http_llm_plan(r, ctx);

    if (rc == NGX_DECLINED) {
        ngx_http_llm_error_set(&err, NGX_HTTP_NOT_FOUND,
                               "invalid_request_error", "model_not_found",
                               "model", NULL);

        err.message.data = ngx_pnalloc(r->pool, ctx->model.len + 80);
        if (err.message.data == NULL) {
            ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED, NGX_ERROR);
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

        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                         ngx_http_llm_send_error(r, ctx, NULL, &err));
        return;
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_spend_init(r, ctx);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_limit_check(r, ctx);
    }

    if (rc == NGX_OK) {
        rc = ngx_http_llm_cache_lookup(r, ctx);

        if (rc == NGX_OK || rc == NGX_AGAIN) {
            /* answered from the cache, or an embedding is asked for */
            return;
        }

        if (rc == NGX_DECLINED) {
            ngx_http_llm_proceed(r, ctx);
            return;
        }

        rc = NGX_ERROR;

    } else if (rc == NGX_DECLINED) {
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                         ngx_http_llm_send_limited(r, ctx));
        return;

    } else if (rc == NGX_BUSY) {
        rc = NGX_HTTP_SERVICE_UNAVAILABLE;
    }

    ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                     ngx_http_llm_refuse(r, ctx, rc));
}


void
ngx_http_llm_proceed(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t            rc;
    ngx_pool_cleanup_t  *cln;

    rc = ngx_http_llm_attempt_start(r, ctx);

    if (rc == NGX_OK) {
        return;
    }

    if (rc == NGX_AGAIN) {

        /*
         * A budget shared through Redis waits for its lease: tried again
         * every 20 ms, for a second at most, then decided with what the
         * node has.
         */

        if (++ctx->spend.waits >= 50) {
            ctx->spend.nowait = 1;
        }

        if (ctx->lease_wait.handler == NULL) {
            cln = ngx_pool_cleanup_add(r->pool, 0);
            if (cln == NULL) {
                ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED, NGX_ERROR);
                return;
            }

            cln->handler = ngx_http_llm_wait_cleanup;
            cln->data = &ctx->lease_wait;

            ctx->lease_wait.handler = ngx_http_llm_wait_done;
            ctx->lease_wait.data = r;
            ctx->lease_wait.log = r->connection->log;
        }

        ngx_add_timer(&ctx->lease_wait, 20);
        return;
    }

    ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_REFUSED,
                     ngx_http_llm_refuse(r, ctx, rc));
}


static void
ngx_http_llm_wait_done(ngx_event_t *ev)
{
    ngx_connection_t    *c;
    ngx_http_request_t  *r;
    ngx_http_llm_ctx_t  *ctx;

    r = ev->data;
    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    ngx_http_llm_proceed(r, ctx);

    ngx_http_run_posted_requests(c);
}


static void
ngx_http_llm_wait_cleanup(void *data)
{
    ngx_event_t *ev = data;

    if (ev->timer_set) {
        ngx_del_timer(ev);
    }
}


/* the answer when no attempt could start */

static ngx_int_t
ngx_http_llm_refuse(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_http_llm_error_t  err;

    switch (rc) {

    case NGX_BUSY:
        return ngx_http_llm_send_cooling(r, ctx);

    case NGX_HTTP_LLM_PAYMENT_REQUIRED:
        return ngx_http_llm_send_budget(r, ctx);

    case NGX_HTTP_SERVICE_UNAVAILABLE:
        /* a zone refused a budget or limit key */
        return ngx_http_llm_send_budget_full(r, ctx);

    case NGX_ABORT:
        /* the body passed the scanner but not jansson */
        ngx_http_llm_bad_json(&err);
        return ngx_http_llm_send_error(r, ctx, NULL, &err);

    case NGX_DECLINED:
        ngx_http_llm_error_set(&err, NGX_HTTP_BAD_REQUEST,
                               "invalid_request_error",
                               "unsupported_endpoint", "model", NULL);
        ngx_str_set(&err.message, "No target of this model supports "
                                  "this endpoint.");
        return ngx_http_llm_send_error(r, ctx, NULL, &err);

    default:
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
}


void
ngx_http_llm_end(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_outcome_e outcome, ngx_int_t rc)
{
    ctx->outcome = outcome;

    ngx_http_finalize_request(r, rc);
}


ngx_int_t
ngx_http_llm_finish(ngx_http_request_t *r)
{
    ngx_http_llm_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    if (ctx == NULL || ctx->endpoint == 0) {
        return NGX_OK;
    }

    /* ctx->answer is NULL when the client went away during an attempt
     * (ctx->cur) or none was made */

    ngx_log_debug4(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "llm finish: outcome %d, %ui attempts, answer %p, last %p",
                   ctx->outcome, ctx->nattempts, ctx->answer, ctx->cur);

    ngx_http_llm_spend_finish(r, ctx);
    ngx_http_llm_cache_store(r, ctx);
    ngx_http_llm_status_count(r, ctx);

    return NGX_OK;
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

    /* in the order of NGX_HTTP_LLM_M_* */
    static const char  *names[] = {
        "model", "messages", "input", "stream", "stream_options",
        "max_tokens", "max_completion_tokens", NULL
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
