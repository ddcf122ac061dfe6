
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * The attempt loop: a subrequest per target, until one answers or no
 * target is left.  ngx_http_llm_attempt_judge() says what an attempt
 * came to; ngx_http_llm_attempt_done() acts on it: answer, end the
 * stream, fall back, or send the error.
 */


/* what an attempt came to */
typedef struct {
    ngx_uint_t                  cond;          /* NGX_HTTP_LLM_FB_*: why it
                                                  failed, for llm_fallback */
    char                       *what;          /* for the log and
                                                  $llm_attempts, or NULL */
    ngx_http_llm_error_t        err;           /* for the client */
    ngx_str_t                   body;          /* the answer */
} ngx_http_llm_verdict_t;


/* failures that count against a target's health */
#define NGX_HTTP_LLM_FB_HEALTH                                                \
    (NGX_HTTP_LLM_FB_ERROR|NGX_HTTP_LLM_FB_TIMEOUT|NGX_HTTP_LLM_FB_INVALID   \
     |NGX_HTTP_LLM_FB_429|NGX_HTTP_LLM_FB_5XX)


static ngx_int_t ngx_http_llm_attempt_send(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
static ngx_int_t ngx_http_llm_subrequest(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_str_t *body);
static ngx_int_t ngx_http_llm_post_subrequest(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_llm_wake(ngx_http_request_t *r);
static void ngx_http_llm_attempt_done(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
static ngx_int_t ngx_http_llm_attempt_judge(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, ngx_http_llm_verdict_t *v);
static ngx_int_t ngx_http_llm_attempt_parse(ngx_http_llm_attempt_t *a,
    ngx_str_t *body);
static ngx_int_t ngx_http_llm_invalid(ngx_http_llm_attempt_t *a,
    ngx_http_llm_verdict_t *v);
static char *ngx_http_llm_broken(ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
static ngx_uint_t ngx_http_llm_condition(ngx_uint_t status);
static ngx_int_t ngx_http_llm_record(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, char *what);


static ngx_str_t  ngx_http_llm_post_method = ngx_string("POST");


ngx_int_t
ngx_http_llm_attempt_start(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                  rc;
    ngx_http_llm_call_t       *call;
    ngx_http_llm_target_t     *t;
    ngx_http_llm_attempt_t    *a;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    if (ctx->cur) {
        ngx_http_llm_spend_settle(r, ctx, ctx->cur);
    }

    while (ctx->nattempts < ctx->tries) {

        if (ctx->nattempts && ctx->conf->fallback_timeout
            && ngx_current_msec - ctx->start >= ctx->conf->fallback_timeout)
        {
            return NGX_DECLINED;
        }

        rc = ngx_http_llm_route_pick(r, ctx, &t);

        if (rc == NGX_DECLINED && ctx->spend.refused) {
            return NGX_HTTP_LLM_PAYMENT_REQUIRED;
        }

        if (rc != NGX_OK) {
            return rc;
        }

        a = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_attempt_t));
        if (a == NULL) {
            return NGX_ERROR;
        }

        a->target = t;

        call = &a->call;
        call->pool = r->pool;
        call->log = r->connection->log;
        call->endpoint = ctx->endpoint;
        call->raw = ctx->raw;
        call->members = ctx->members;
        call->tree = &ctx->body;
        call->provider = t->provider;
        call->model = t->model.len ? t->model : ctx->model;
        call->public_model = ctx->model;
        call->created = ngx_time();
        call->usage.prompt = -1;
        call->usage.completion = -1;
        call->usage.cached = -1;
        call->stream = ctx->stream;
        call->include_usage = ctx->include_usage;
        call->out = &ctx->out;

        if (ctx->cache.store && ctx->stream
            && ctx->endpoint == NGX_HTTP_LLM_CHAT)
        {
            call->acc = ngx_http_llm_acc_create(r->pool);
            if (call->acc == NULL) {
                return NGX_ERROR;
            }
        }

        a->price = ngx_http_llm_price_find(lmcf, &t->provider->name,
                                           &call->model, r->connection->log);

        rc = ngx_http_llm_budget_reserve(r, ctx, a);

        if (rc == NGX_AGAIN) {
            /* waiting for a budget lease: this target again, later */
            ctx->tried &= ~((uint64_t) 1
                            << (t - (ngx_http_llm_target_t *)
                                    ctx->route->targets.elts));
            return NGX_AGAIN;
        }

        if (rc == NGX_DECLINED) {
            /* a budget cannot pay for this target; maybe for another */
            continue;
        }

        if (rc == NGX_BUSY) {
            return NGX_HTTP_SERVICE_UNAVAILABLE;
        }

        if (rc != NGX_OK) {
            return NGX_ERROR;
        }

        rc = t->provider->driver->build_request(call);

        if (rc != NGX_OK) {
            /* what the budgets hold for it is released */
            ngx_http_llm_spend_settle(r, ctx, a);
        }

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

        if (ngx_http_llm_attempt_send(r, ctx, a) != NGX_OK) {
            return NGX_ERROR;
        }

        ctx->nattempts++;

        return NGX_OK;
    }

    return ctx->spend.refused ? NGX_HTTP_LLM_PAYMENT_REQUIRED : NGX_DECLINED;
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

    accept = (ctx->stream && !a->embed)
             ? *ngx_http_llm_framing_type(drv->framing) : json;

    if (ngx_http_llm_header_push(r->pool, &headers, &content_type_key,
                                 &empty, &json, &content_type)
        != NGX_OK
        || ngx_http_llm_header_push(r->pool, &headers, &accept_key, &empty,
                                    &accept, NULL)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ngx_http_llm_driver_auth(&a->call, &headers, body) != NGX_OK) {
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


/*
 * A preaccess phase handler: the length of an attempt's body, set after
 * the location of the subrequest was found (see ngx_http_llm_subrequest).
 */

ngx_int_t
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
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_attempt_t  *a;

    ctx = ngx_http_get_module_ctx(r, ngx_http_llm_gateway_module);

    if (ctx == NULL || ctx->outcome != NGX_HTTP_LLM_RUNNING) {
        return;
    }

    a = ctx->cur;

    if (a == NULL || !a->finished || !a->sr->done) {
        return;
    }

    r->connection->log->action = "answering an llm request";

    if (a->embed) {
        ngx_http_llm_cache_embedded(r, ctx, a);
        return;
    }

    ngx_http_llm_attempt_done(r, ctx, a);
}


/*
 * The cache's embedding of a text: an OpenAI embeddings request made by
 * the provider's driver and sent as an attempt would be, outside the
 * attempt loop (ctx->nattempts, health and fallback are not involved).
 */

ngx_int_t
ngx_http_llm_attempt_embed(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_provider_t *p, ngx_str_t *model, ngx_str_t *text)
{
    u_char                  *m;
    ngx_int_t                rc;
    ngx_str_t                body, *members;
    json_t                 **tree;
    ngx_http_llm_out_t       o;
    ngx_http_llm_call_t     *call;
    ngx_http_llm_target_t   *t;
    ngx_http_llm_attempt_t  *a;

    a = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_attempt_t));
    t = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_target_t));
    members = ngx_pcalloc(r->pool, NGX_HTTP_LLM_M_N * sizeof(ngx_str_t));
    tree = ngx_pcalloc(r->pool, sizeof(json_t *));

    if (a == NULL || t == NULL || members == NULL || tree == NULL) {
        return NGX_ERROR;
    }

    t->provider = p;
    t->model = *model;

    a->target = t;
    a->embed = 1;

    /* {"model":<model>,"input":<text>}, and where its members are */

    o.pos = NULL;
    o.len = 0;

    for ( ;; ) {
        ngx_http_llm_out_lit(&o, "{\"model\":");
        m = o.pos;
        ngx_http_llm_out_string(&o, model);

        if (o.pos) {
            members[NGX_HTTP_LLM_M_MODEL].data = m;
            members[NGX_HTTP_LLM_M_MODEL].len = o.pos - m;
        }

        ngx_http_llm_out_lit(&o, ",\"input\":");
        m = o.pos;
        ngx_http_llm_out_string(&o, text);

        if (o.pos) {
            members[NGX_HTTP_LLM_M_INPUT].data = m;
            members[NGX_HTTP_LLM_M_INPUT].len = o.pos - m;
        }

        ngx_http_llm_out_lit(&o, "}");

        if (o.pos) {
            break;
        }

        body.data = ngx_http_llm_out_alloc(&o, r->pool);
        if (body.data == NULL) {
            return NGX_ERROR;
        }
    }

    body.len = o.pos - body.data;

    call = &a->call;
    call->pool = r->pool;
    call->log = r->connection->log;
    call->endpoint = NGX_HTTP_LLM_EMBEDDINGS;
    call->raw = body;
    call->members = members;
    call->tree = tree;
    call->provider = p;
    call->model = *model;
    call->public_model = *model;
    call->created = ngx_time();
    call->usage.prompt = -1;
    call->usage.completion = -1;
    call->usage.cached = -1;
    call->out = &ctx->out;

    rc = p->driver->build_request(call);

    if (rc != NGX_OK) {
        json_decref(call->body);
        return (rc == NGX_ERROR) ? NGX_ERROR : NGX_DECLINED;
    }

    return ngx_http_llm_attempt_send(r, ctx, a);
}


/* the body the driver made (a tree, or bytes) goes out in a subrequest;
 * a becomes the current attempt */

static ngx_int_t
ngx_http_llm_attempt_send(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    ngx_int_t             rc;
    ngx_str_t             body;
    ngx_http_llm_call_t  *call;

    call = &a->call;

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
    r->write_event_handler = ngx_http_llm_wake;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_attempt_result(ngx_http_request_t *r, ngx_http_llm_attempt_t *a,
    ngx_str_t *body, char **what)
{
    ngx_int_t               rc;
    ngx_http_llm_verdict_t  v;

    rc = ngx_http_llm_attempt_judge(r, a, &v);

    if (rc == NGX_OK) {
        *body = v.body;
        return NGX_OK;
    }

    if (v.what) {
        *what = v.what;

    } else {
        *what = ngx_pnalloc(r->pool, sizeof("HTTP ") + NGX_INT_T_LEN);
        if (*what == NULL) {
            return NGX_ERROR;
        }

        ngx_sprintf((u_char *) *what, "HTTP %ui%Z", a->status);
    }

    return rc;
}


static void
ngx_http_llm_attempt_done(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    ngx_int_t               rc;
    ngx_uint_t              failed, fallback;
    ngx_str_t              *model;
    ngx_http_llm_verdict_t  v;

    rc = ngx_http_llm_attempt_judge(r, a, &v);

    if (rc == NGX_ERROR) {
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED, NGX_ERROR);
        return;
    }

    failed = (rc == NGX_DECLINED);

    ngx_http_llm_spend_settle(r, ctx, a);

    ngx_http_llm_route_result(r, ctx, a,
                              failed ? v.cond & NGX_HTTP_LLM_FB_HEALTH : 0);

    if (ngx_http_llm_record(r, ctx, a, failed ? v.what : NULL) != NGX_OK) {
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED, NGX_ERROR);
        return;
    }

    if (failed) {
        model = ngx_http_llm_escape(r->pool, &a->call.model, 1);

        if (v.what) {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "llm: provider \"%V\" model \"%V\" failed: %s "
                          "after %Mms%s", &a->target->provider->name, model,
                          v.what, a->elapsed,
                          r->header_sent ? ", stream ended with an error"
                                         : "");

        } else {
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "llm: provider \"%V\" model \"%V\" failed: "
                          "HTTP %ui after %Mms", &a->target->provider->name,
                          model, a->status, a->elapsed);
        }
    }

    if (r->header_sent) {

        /* a stream under way can only be ended */

        ngx_http_llm_end(r, ctx,
                         failed ? NGX_HTTP_LLM_FAILED : NGX_HTTP_LLM_STREAMED,
                         ngx_http_llm_stream_tail(r, ctx, a,
                                                  failed ? &v.err : NULL));
        return;
    }

    if (!failed && a->streaming) {

        /* a whole stream, of which nothing reached the client yet */

        rc = ngx_http_llm_send_header(r, ctx, a);

        if (rc != NGX_ERROR && rc <= NGX_OK) {
            rc = ngx_http_llm_stream_tail(r, ctx, a, NULL);
        }

        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_STREAMED, rc);
        return;
    }

    if (!failed) {
        ctx->answer_body = v.body;

        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_ANSWERED,
                         ngx_http_llm_send_answer(r, ctx, a, &v.body));
        return;
    }

    fallback = ctx->conf->fallback;

    if (!(fallback & NGX_HTTP_LLM_FB_OFF) && (fallback & v.cond)) {

        if (v.cond != NGX_HTTP_LLM_FB_429) {
            ctx->not_429 = 1;
        }

        /* a fallback does not wait for budget leases */
        ctx->spend.nowait = 1;

        rc = ngx_http_llm_attempt_start(r, ctx);

        if (rc == NGX_OK) {
            return;
        }

        if (rc == NGX_ERROR) {
            ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED, NGX_ERROR);
            return;
        }

        /* no target is left to try */

        if (ctx->nattempts > 1 && ctx->not_429) {
            /* every target failed; when every one of them was rate
             * limited, the last 429 and its Retry-After go to the client */
            v.err.status = a->timedout ? NGX_HTTP_GATEWAY_TIME_OUT
                                       : NGX_HTTP_BAD_GATEWAY;
        }
    }

    ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED,
                     ngx_http_llm_send_error(r, ctx, a, &v.err));
}


/*
 * NGX_OK: an answer (v->body) or a complete stream; NGX_DECLINED: the
 * attempt failed (v->cond, v->what, v->err); NGX_ERROR.
 */

static ngx_int_t
ngx_http_llm_attempt_judge(ngx_http_request_t *r, ngx_http_llm_attempt_t *a,
    ngx_http_llm_verdict_t *v)
{
    ngx_str_t  *pname;

    v->cond = 0;
    v->what = NULL;
    v->body.data = a->body;
    v->body.len = a->body_len;

    if (ngx_http_llm_provider_text(a, &v->body) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_http_llm_error_defaults(NGX_HTTP_BAD_GATEWAY, &v->err);

    if (a->failed && !a->header) {
        v->cond = a->timedout ? NGX_HTTP_LLM_FB_TIMEOUT
                              : NGX_HTTP_LLM_FB_ERROR;

        if (a->timedout) {
            v->what = "timeout";
            v->err.status = NGX_HTTP_GATEWAY_TIME_OUT;
            ngx_str_set(&v->err.code, "provider_timeout");
            ngx_str_set(&v->err.message, "The provider did not answer in "
                                         "time.");

        } else {
            v->what = "error";
            ngx_str_set(&v->err.code, "provider_error");
            ngx_str_set(&v->err.message, "The provider could not be "
                                         "reached.");
        }

        return NGX_DECLINED;
    }

    if (a->over_budget) {

        /* ended by the gateway: no other target is tried for it */

        v->what = ngx_http_llm_broken(a, &v->err);
        return NGX_DECLINED;
    }

    if (a->streaming) {

        /* complete when the provider said so or gave a reason */

        if (a->stream_done || (!a->failed && a->call.finish_reason.len)) {
            return NGX_OK;
        }

        if (a->failed || r->header_sent) {
            v->cond = NGX_HTTP_LLM_FB_ERROR;
            v->what = ngx_http_llm_broken(a, &v->err);
            return NGX_DECLINED;
        }

        /* it ended unfinished before anything reached the client */

        return ngx_http_llm_invalid(a, v);
    }

    if (a->failed) {
        v->cond = NGX_HTTP_LLM_FB_ERROR;
        v->what = ngx_http_llm_broken(a, &v->err);
        return NGX_DECLINED;
    }

    if (a->status < 200 || a->status >= 300) {
        ngx_http_llm_driver_error(&a->call, a->status, &v->body, &v->err);
        v->cond = ngx_http_llm_condition(v->err.status);

        if (v->err.message.len == 0) {
            pname = &a->target->provider->name;

            v->err.message.data = ngx_pnalloc(r->pool, 64 + pname->len);
            if (v->err.message.data == NULL) {
                return NGX_ERROR;
            }

            v->err.message.len = ngx_sprintf(v->err.message.data,
                                             "The provider %V answered HTTP "
                                             "%ui.", pname, a->status)
                                 - v->err.message.data;
        }

        return NGX_DECLINED;
    }

    if (a->too_big) {
        return ngx_http_llm_invalid(a, v);
    }

    switch (ngx_http_llm_attempt_parse(a, &v->body)) {

    case NGX_OK:
        return NGX_OK;

    case NGX_DECLINED:
        return ngx_http_llm_invalid(a, v);

    default:
        return NGX_ERROR;
    }
}


/* a whole 2xx body into the client's answer, by the driver */

static ngx_int_t
ngx_http_llm_attempt_parse(ngx_http_llm_attempt_t *a, ngx_str_t *body)
{
    json_t                 *in, *out;
    ngx_int_t               rc;
    json_error_t            jerr;
    ngx_http_llm_driver_t  *drv;

    drv = a->target->provider->driver;

    rc = drv->parse_raw ? drv->parse_raw(&a->call, body) : NGX_AGAIN;

    if (rc == NGX_OK && a->call.answer.len) {
        *body = a->call.answer;
    }

    if (rc != NGX_AGAIN) {
        return rc;
    }

    if (drv->parse_response == NULL) {
        return NGX_DECLINED;
    }

    in = json_loadb((char *) body->data, body->len, 0, &jerr);
    if (in == NULL) {
        return NGX_DECLINED;
    }

    out = NULL;

    rc = drv->parse_response(&a->call, in, &out);

    json_decref(in);

    if (rc == NGX_OK && out) {
        rc = ngx_http_llm_json_dump(a->call.pool, out, body);
    }

    json_decref(out);

    return rc;
}


/* a 2xx answer that cannot be read: not its format, or too large */

static ngx_int_t
ngx_http_llm_invalid(ngx_http_llm_attempt_t *a, ngx_http_llm_verdict_t *v)
{
    v->cond = NGX_HTTP_LLM_FB_INVALID;
    ngx_str_set(&v->err.code, "invalid_response");

    if (a->too_big) {
        v->what = "too large";
        ngx_str_set(&v->err.message, "The provider's answer is larger than "
                                     "llm_max_response_size.");

    } else {
        v->what = "invalid";
        ngx_str_set(&v->err.message, "The provider sent an answer the "
                                     "gateway could not read.");
    }

    return NGX_DECLINED;
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

    if (a->over_budget) {
        err->status = NGX_HTTP_LLM_PAYMENT_REQUIRED;
        ngx_str_set(&err->type, "insufficient_quota");
        ngx_str_set(&err->code, "budget_exceeded");
        ngx_str_set(&err->message, "The answer reached what your budget "
                                   "could pay for; the stream was ended.");
        return "over budget";
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

ngx_int_t
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


/* the status as the driver mapped it: 529 of Anthropic is a 503 */

static ngx_uint_t
ngx_http_llm_condition(ngx_uint_t status)
{
    switch (status) {
    case NGX_HTTP_TOO_MANY_REQUESTS:
        return NGX_HTTP_LLM_FB_429;
    case NGX_HTTP_UNAUTHORIZED:
        return NGX_HTTP_LLM_FB_401;
    case NGX_HTTP_FORBIDDEN:
        return NGX_HTTP_LLM_FB_403;
    case NGX_HTTP_INTERNAL_SERVER_ERROR:
        return NGX_HTTP_LLM_FB_500|NGX_HTTP_LLM_FB_5XX;
    case NGX_HTTP_BAD_GATEWAY:
        return NGX_HTTP_LLM_FB_502|NGX_HTTP_LLM_FB_5XX;
    case NGX_HTTP_SERVICE_UNAVAILABLE:
        return NGX_HTTP_LLM_FB_503|NGX_HTTP_LLM_FB_5XX;
    case NGX_HTTP_GATEWAY_TIME_OUT:
        return NGX_HTTP_LLM_FB_504|NGX_HTTP_LLM_FB_5XX;
    }

    if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR && status < 600) {
        return NGX_HTTP_LLM_FB_5XX;
    }

    return 0;
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
