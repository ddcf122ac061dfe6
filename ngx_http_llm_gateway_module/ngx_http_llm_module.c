
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


static ngx_int_t ngx_http_llm_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_llm_models(ngx_http_request_t *r,
    ngx_http_llm_loc_conf_t *llcf);
static ngx_int_t ngx_http_llm_reject(ngx_http_request_t *r,
    ngx_uint_t status, char *code, char *message, char *allow);

static ngx_int_t ngx_http_llm_variable(ngx_http_request_t *r,
    ngx_http_variable_value_t *v, uintptr_t data);
static ngx_int_t ngx_http_llm_add_variables(ngx_conf_t *cf);
static ngx_int_t ngx_http_llm_init(ngx_conf_t *cf);

static void *ngx_http_llm_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_llm_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_llm_provider(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_http_llm_provider_t *ngx_http_llm_provider_find(
    ngx_http_llm_main_conf_t *lmcf, ngx_str_t *name);
static ngx_int_t ngx_http_llm_read_key(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *key);
static char *ngx_http_llm_route(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_gateway(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_llm_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_llm_init_process(ngx_cycle_t *cycle);
static char *ngx_http_llm_cache_embed(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);


static ngx_conf_bitmask_t  ngx_http_llm_fallback_masks[] = {
    { ngx_string("off"), NGX_HTTP_LLM_FB_OFF },
    { ngx_string("error"), NGX_HTTP_LLM_FB_ERROR },
    { ngx_string("timeout"), NGX_HTTP_LLM_FB_TIMEOUT },
    { ngx_string("invalid_response"), NGX_HTTP_LLM_FB_INVALID },
    { ngx_string("http_429"), NGX_HTTP_LLM_FB_429 },
    { ngx_string("http_500"), NGX_HTTP_LLM_FB_500 },
    { ngx_string("http_502"), NGX_HTTP_LLM_FB_502 },
    { ngx_string("http_503"), NGX_HTTP_LLM_FB_503 },
    { ngx_string("http_504"), NGX_HTTP_LLM_FB_504 },
    { ngx_string("http_5xx"), NGX_HTTP_LLM_FB_5XX },
    { ngx_string("http_401"), NGX_HTTP_LLM_FB_401 },
    { ngx_string("http_403"), NGX_HTTP_LLM_FB_403 },
    { ngx_null_string, 0 }
};


static ngx_command_t  ngx_http_llm_commands[] = {

    { ngx_string("llm_provider"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_provider,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE2,
      ngx_http_llm_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_route_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_str_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, route_zone_name),
      NULL },

    { ngx_string("llm_gateway"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_gateway,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_route"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_llm_route,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_fallback"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_conf_set_bitmask_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, fallback),
      &ngx_http_llm_fallback_masks },

    { ngx_string("llm_fallback_tries"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, fallback_tries),
      NULL },

    { ngx_string("llm_fallback_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, fallback_timeout),
      NULL },

    { ngx_string("llm_retry_after_max"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, retry_after_max),
      NULL },

    { ngx_string("llm_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_llm_status,
      0,
      0,
      NULL },

    { ngx_string("llm_status_max_series"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, status_max_series),
      NULL },

    { ngx_string("llm_redis"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_2MORE,
      ngx_http_llm_redis,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_prices"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_prices,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_cache"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_cache,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_cache_key"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_llm_cache_key,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_cache_embed"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_llm_cache_embed,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_budget"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE4,
      ngx_http_llm_budget,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_budget_max_tokens"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_tokens),
      NULL },

    { ngx_string("llm_limit"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_2MORE,
      ngx_http_llm_limit,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("llm_test_time_offset"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_sec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_llm_main_conf_t, time_offset),
      NULL },

    { ngx_string("llm_max_response_size"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_size_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_llm_loc_conf_t, max_response),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_llm_module_ctx = {
    ngx_http_llm_add_variables,            /* preconfiguration */
    ngx_http_llm_init,                     /* postconfiguration */

    ngx_http_llm_create_main_conf,         /* create main configuration */
    ngx_http_llm_init_main_conf,           /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_llm_create_loc_conf,          /* create location configuration */
    ngx_http_llm_merge_loc_conf            /* merge location configuration */
};


ngx_module_t  ngx_http_llm_gateway_module = {
    NGX_MODULE_V1,
    &ngx_http_llm_module_ctx,              /* module context */
    ngx_http_llm_commands,                 /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    ngx_http_llm_init_process,             /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_llm_redis_exit_process,       /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* the request URI ends with the literal s */
#define ngx_http_llm_uri_ends(r, s)                                          \
    ((r)->uri.len >= sizeof(s) - 1                                           \
     && ngx_strncmp((r)->uri.data + (r)->uri.len - (sizeof(s) - 1), s,       \
                    sizeof(s) - 1) == 0)


#define NGX_HTTP_LLM_VAR_PROVIDER    0
#define NGX_HTTP_LLM_VAR_MODEL       1
#define NGX_HTTP_LLM_VAR_PROMPT      2
#define NGX_HTTP_LLM_VAR_COMPLETION  3
#define NGX_HTTP_LLM_VAR_TTFT        4
#define NGX_HTTP_LLM_VAR_ATTEMPTS    5
#define NGX_HTTP_LLM_VAR_COST        6
#define NGX_HTTP_LLM_VAR_KEY         7
#define NGX_HTTP_LLM_VAR_REMAINING   8
#define NGX_HTTP_LLM_VAR_CACHE       9
#define NGX_HTTP_LLM_VAR_ROUTE       10


static ngx_http_variable_t  ngx_http_llm_vars[] = {

    { ngx_string("llm_provider"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_PROVIDER, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_model"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_MODEL, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_prompt_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_PROMPT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_completion_tokens"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_COMPLETION, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_ttft"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_TTFT, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_attempts"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_ATTEMPTS, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cost"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_COST, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_key"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_KEY, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_budget_remaining"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_REMAINING, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_cache_status"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_CACHE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

    { ngx_string("llm_route"), NULL, ngx_http_llm_variable,
      NGX_HTTP_LLM_VAR_ROUTE, NGX_HTTP_VAR_NOCACHEABLE, 0 },

      ngx_http_null_variable
};


static ngx_int_t
ngx_http_llm_handler(ngx_http_request_t *r)
{
    ngx_int_t                 rc;
    ngx_uint_t                endpoint;
    ngx_http_llm_ctx_t       *ctx;
    ngx_http_llm_loc_conf_t  *llcf;

    if (r != r->main) {
        return NGX_DECLINED;
    }

    llcf = ngx_http_get_module_loc_conf(r, ngx_http_llm_gateway_module);

    if (ngx_http_llm_uri_ends(r, "/models")) {

        if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
            return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED,
                                       "method_not_allowed",
                                       "Only GET is allowed here.",
                                       "GET, HEAD");
        }

        return ngx_http_llm_models(r, llcf);
    }

    if (ngx_http_llm_uri_ends(r, "/chat/completions")) {
        endpoint = NGX_HTTP_LLM_CHAT;

    } else if (ngx_http_llm_uri_ends(r, "/embeddings")) {
        endpoint = NGX_HTTP_LLM_EMBEDDINGS;

    } else {
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_FOUND, "unknown_url",
                                   "Unknown request URL. Please check the "
                                   "URL for typos.", NULL);
    }

    if (r->method != NGX_HTTP_POST) {
        return ngx_http_llm_reject(r, NGX_HTTP_NOT_ALLOWED,
                                   "method_not_allowed",
                                   "Only POST is allowed here.", "POST");
    }

    ctx = ngx_http_llm_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ctx->conf = llcf;
    ctx->endpoint = endpoint;

    rc = ngx_http_read_client_request_body(r, ngx_http_llm_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


static ngx_int_t
ngx_http_llm_reject(ngx_http_request_t *r, ngx_uint_t status, char *code,
    char *message, char *allow)
{
    ngx_int_t             rc;
    ngx_str_t             msg, value;
    ngx_http_llm_ctx_t   *ctx;
    ngx_http_llm_error_t  err;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    ctx = ngx_http_llm_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (allow) {
        value.data = (u_char *) allow;
        value.len = ngx_strlen(allow);

        if (ngx_http_llm_add_header(r, "Allow", &value) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    msg.data = (u_char *) message;
    msg.len = ngx_strlen(message);

    ngx_http_llm_error_set(&err, status, "invalid_request_error", code, NULL,
                           &msg);

    return ngx_http_llm_send_error(r, ctx, NULL, &err);
}


static ngx_int_t
ngx_http_llm_models(ngx_http_request_t *r, ngx_http_llm_loc_conf_t *llcf)
{
    json_t                *root, *data, *m;
    ngx_int_t              rc;
    ngx_str_t              out;
    ngx_uint_t             i;
    ngx_http_llm_ctx_t    *ctx;
    ngx_http_llm_route_t  *route;

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    root = json_object();
    data = json_array();

    if (root == NULL || data == NULL
        || json_object_set_new(root, "object", json_string("list"))
        || json_object_set(root, "data", data))
    {
        goto failed;
    }

    if (llcf->routes) {
        route = llcf->routes->elts;

        for (i = 0; i < llcf->routes->nelts; i++) {
            if (&route[i] == llcf->catch_all) {
                continue;
            }

            m = json_pack("{s:s%,s:s,s:I,s:s}",
                          "id", route[i].name.data, route[i].name.len,
                          "object", "model",
                          "created", (json_int_t) ngx_cached_time->sec,
                          "owned_by", "llm-gateway");

            if (m == NULL || json_array_append_new(data, m) != 0) {
                goto failed;
            }
        }
    }

    if (ngx_http_llm_json_dump(r->pool, root, &out) != NGX_OK) {
        goto failed;
    }

    json_decref(data);
    json_decref(root);

    ctx = ngx_http_llm_ctx_create(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_llm_send_answer(r, ctx, NULL, &out);

failed:

    json_decref(data);
    json_decref(root);

    return NGX_HTTP_INTERNAL_SERVER_ERROR;
}


static ngx_int_t
ngx_http_llm_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
    uintptr_t data)
{
    u_char                  *p;
    int64_t                  usd;
    ngx_int_t                n;
    ngx_str_t               *s;
    ngx_http_llm_ctx_t      *ctx;
    ngx_http_llm_attempt_t  *a;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_llm_gateway_module);

    if (ctx == NULL) {
        v->not_found = 1;
        return NGX_OK;
    }

    a = ctx->answer ? ctx->answer : ctx->cur;
    s = NULL;
    n = -1;
    usd = -1;

    switch (data) {

    case NGX_HTTP_LLM_VAR_PROVIDER:
        s = a ? &a->target->provider->name
              : (ctx->cache.provider.len ? &ctx->cache.provider : NULL);
        break;

    case NGX_HTTP_LLM_VAR_MODEL:
        s = a ? &a->call.model
              : (ctx->cache.model.len ? &ctx->cache.model : NULL);
        break;

    case NGX_HTTP_LLM_VAR_PROMPT:
        n = a ? a->call.usage.prompt : -1;
        break;

    case NGX_HTTP_LLM_VAR_COMPLETION:
        n = a ? a->call.usage.completion : -1;
        break;

    case NGX_HTTP_LLM_VAR_TTFT:
        n = (ctx->ttft == (ngx_msec_t) -1) ? -1 : (ngx_int_t) ctx->ttft;
        break;

    case NGX_HTTP_LLM_VAR_COST:
        usd = ctx->spend.cost;
        break;

    case NGX_HTTP_LLM_VAR_KEY:
        s = ctx->spend.key.len ? &ctx->spend.key : NULL;
        break;

    case NGX_HTTP_LLM_VAR_REMAINING:
        usd = ctx->spend.remaining;
        break;

    case NGX_HTTP_LLM_VAR_ROUTE:
        s = ctx->route ? &ctx->route->name : NULL;
        break;

    case NGX_HTTP_LLM_VAR_CACHE:
        s = ngx_http_llm_cache_status(ctx);
        s = s->len ? s : NULL;
        break;

    default: /* NGX_HTTP_LLM_VAR_ATTEMPTS */
        s = ctx->attempts.len ? &ctx->attempts : NULL;
        break;
    }

    if (s == NULL && n < 0 && usd < 0) {
        v->not_found = 1;
        return NGX_OK;
    }

    if (usd >= 0) {
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_http_llm_usd_print(p, usd) - p;
        v->data = p;

    } else if (s == NULL) {
        p = ngx_pnalloc(r->pool, NGX_INT_T_LEN);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v->len = ngx_sprintf(p, "%i", n) - p;
        v->data = p;

    } else {
        v->len = s->len;
        v->data = s->data;
    }

    v->valid = 1;
    v->no_cacheable = 1;
    v->not_found = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_add_variables(ngx_conf_t *cf)
{
    ngx_http_variable_t  *var, *v;

    for (v = ngx_http_llm_vars; v->name.len; v++) {
        var = ngx_http_add_variable(cf, &v->name, v->flags);
        if (var == NULL) {
            return NGX_ERROR;
        }

        var->get_handler = v->get_handler;
        var->data = v->data;
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_init(ngx_conf_t *cf)
{
    ngx_array_t                *a;
    ngx_http_handler_pt        *h;
    ngx_http_core_main_conf_t  *cmcf;

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    /* attempts get their body length once their location is found */

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_PREACCESS_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_llm_body_length;

    /*
     * Every gateway request ends in ngx_http_llm_finish(): first of the
     * log phase handlers, which nginx calls in the order they were
     * added, so that the access log sees what it settled.
     */

    a = &cmcf->phases[NGX_HTTP_LOG_PHASE].handlers;

    h = ngx_array_push(a);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h = a->elts;
    ngx_memmove(&h[1], &h[0], (a->nelts - 1) * sizeof(ngx_http_handler_pt));
    h[0] = ngx_http_llm_finish;

    return ngx_http_llm_filter_init(cf);
}


static void *
ngx_http_llm_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_main_conf_t));
    if (lmcf == NULL) {
        return NULL;
    }

    lmcf->time_offset = NGX_CONF_UNSET;
    lmcf->status_max_series = NGX_CONF_UNSET_UINT;

    if (ngx_array_init(&lmcf->providers, cf->pool, 4,
                       sizeof(ngx_http_llm_provider_t))
        != NGX_OK
        || ngx_array_init(&lmcf->zones, cf->pool, 1,
                          sizeof(ngx_http_llm_zone_t *))
           != NGX_OK
        || ngx_array_init(&lmcf->routes, cf->pool, 8,
                          sizeof(ngx_http_llm_route_t *))
           != NGX_OK
        || ngx_array_init(&lmcf->route_lists, cf->pool, 4,
                          sizeof(ngx_array_t *))
           != NGX_OK
        || ngx_array_init(&lmcf->redis, cf->pool, 1,
                          sizeof(ngx_http_llm_redis_conf_t *))
           != NGX_OK)
    {
        return NULL;
    }

    return lmcf;
}


static char *
ngx_http_llm_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_conf_init_value(lmcf->time_offset, 0);
    ngx_conf_init_uint_value(lmcf->status_max_series, 1000);

    if (ngx_http_llm_prices_init(cf, lmcf) != NGX_CONF_OK) {
        return NGX_CONF_ERROR;
    }

    return ngx_http_llm_route_init_main_conf(cf, lmcf);
}


static void *
ngx_http_llm_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_loc_conf_t));
    if (llcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     llcf->fallback = 0;
     *     llcf->catch_all = NULL;
     */

    llcf->routes = NGX_CONF_UNSET_PTR;
    llcf->fallback_tries = NGX_CONF_UNSET_UINT;
    llcf->fallback_timeout = NGX_CONF_UNSET_MSEC;
    llcf->retry_after_max = NGX_CONF_UNSET_MSEC;
    llcf->max_response = NGX_CONF_UNSET_SIZE;
    llcf->gateway = NGX_CONF_UNSET;
    llcf->cache_zone = NGX_CONF_UNSET_PTR;
    llcf->cache_ttl = NGX_CONF_UNSET;
    llcf->cache_semantic = NGX_CONF_UNSET_UINT;
    llcf->cache_keys = NGX_CONF_UNSET_PTR;
    llcf->cache_embed = NGX_CONF_UNSET_PTR;
    llcf->budgets = NGX_CONF_UNSET_PTR;
    llcf->limits = NGX_CONF_UNSET_PTR;
    llcf->max_tokens = NGX_CONF_UNSET_UINT;

    return llcf;
}


static char *
ngx_http_llm_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_llm_loc_conf_t *prev = parent;
    ngx_http_llm_loc_conf_t *conf = child;

    ngx_uint_t             i;
    ngx_http_llm_route_t  *route;

    ngx_conf_merge_ptr_value(conf->routes, prev->routes, NULL);

    ngx_conf_merge_bitmask_value(conf->fallback, prev->fallback,
                                 (NGX_CONF_BITMASK_SET
                                  |NGX_HTTP_LLM_FB_ERROR
                                  |NGX_HTTP_LLM_FB_TIMEOUT
                                  |NGX_HTTP_LLM_FB_429
                                  |NGX_HTTP_LLM_FB_5XX));

    if (conf->fallback & NGX_HTTP_LLM_FB_OFF) {
        conf->fallback = NGX_CONF_BITMASK_SET|NGX_HTTP_LLM_FB_OFF;
    }

    ngx_conf_merge_uint_value(conf->fallback_tries, prev->fallback_tries, 0);
    ngx_conf_merge_msec_value(conf->fallback_timeout, prev->fallback_timeout,
                              0);
    ngx_conf_merge_msec_value(conf->retry_after_max, prev->retry_after_max,
                              60000);
    ngx_conf_merge_size_value(conf->max_response, prev->max_response,
                              8 * 1024 * 1024);
    ngx_conf_merge_value(conf->gateway, prev->gateway, 0);

    /* llm_cache as proxy_cache: with its parameters */

    if (conf->cache_zone == NGX_CONF_UNSET_PTR) {
        conf->cache_zone = prev->cache_zone;
        conf->cache_ttl = prev->cache_ttl;
        conf->cache_semantic = prev->cache_semantic;
    }

    ngx_conf_merge_ptr_value(conf->cache_zone, prev->cache_zone, NULL);
    ngx_conf_merge_value(conf->cache_ttl, prev->cache_ttl, 3600);
    ngx_conf_merge_uint_value(conf->cache_semantic, prev->cache_semantic, 0);
    ngx_conf_merge_ptr_value(conf->cache_keys, prev->cache_keys, NULL);

    if (conf->cache_embed == NGX_CONF_UNSET_PTR) {
        conf->cache_embed = prev->cache_embed;
        conf->cache_embed_model = prev->cache_embed_model;
    }

    ngx_conf_merge_ptr_value(conf->cache_embed, prev->cache_embed, NULL);

    /* budgets and limits are inherited as a whole, as limit_req's are */
    ngx_conf_merge_ptr_value(conf->budgets, prev->budgets, NULL);
    ngx_conf_merge_ptr_value(conf->limits, prev->limits, NULL);
    ngx_conf_merge_uint_value(conf->max_tokens, prev->max_tokens,
                              NGX_HTTP_LLM_DEFAULT_MAX_TOKENS);

    if (conf->max_tokens == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_budget_max_tokens must be above 0");
        return NGX_CONF_ERROR;
    }

    conf->catch_all = NULL;

    if (conf->routes) {
        route = conf->routes->elts;

        for (i = 0; i < conf->routes->nelts; i++) {
            if (route[i].name.len == 1 && route[i].name.data[0] == '*') {
                conf->catch_all = &route[i];
            }
        }
    }

    return NGX_CONF_OK;
}


static ngx_http_llm_provider_t *
ngx_http_llm_provider_find(ngx_http_llm_main_conf_t *lmcf, ngx_str_t *name)
{
    ngx_uint_t                i;
    ngx_http_llm_provider_t  *p;

    p = lmcf->providers.elts;

    for (i = 0; i < lmcf->providers.nelts; i++) {
        if (p[i].name.len == name->len
            && ngx_strncmp(p[i].name.data, name->data, name->len) == 0)
        {
            return &p[i];
        }
    }

    return NULL;
}


static char *
ngx_http_llm_provider(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    u_char                   *eq;
    ngx_str_t                *value, s, key_file, name, *params;
    ngx_uint_t                i, n;
    ngx_http_llm_provider_t  *p;

    value = cf->args->elts;

    if (ngx_http_llm_provider_find(lmcf, &value[1])) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_provider \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < value[1].len; i++) {
        if (value[1].data[i] == ':' || value[1].data[i] == '=') {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "invalid llm_provider name \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    p = ngx_array_push(&lmcf->providers);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(p, sizeof(ngx_http_llm_provider_t));
    p->name = value[1];
    ngx_str_null(&key_file);

    params = ngx_palloc(cf->temp_pool, cf->args->nelts * sizeof(ngx_str_t));
    if (params == NULL) {
        return NGX_CONF_ERROR;
    }

    n = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "format=", 7) == 0) {
            s.data = value[i].data + 7;
            s.len = value[i].len - 7;

            p->driver = ngx_http_llm_driver_find(&s);

            if (p->driver == NULL) {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "llm_provider \"%V\": unknown format "
                                   "\"%V\" (openai, azure, anthropic or "
                                   "gemini)", &value[1], &s);
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "pass=", 5) == 0) {
            s.data = value[i].data + 5;
            s.len = value[i].len - 5;

            if (s.len == 0 || s.data[0] != '/') {
                ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                                   "llm_provider \"%V\": invalid pass "
                                   "\"%V\", a location URI such as "
                                   "/_llm/%V/ is expected",
                                   &value[1], &s, &value[1]);
                return NGX_CONF_ERROR;
            }

            if (s.data[s.len - 1] == '/') {
                p->pass = s;
                continue;
            }

            p->pass.len = s.len + 1;
            p->pass.data = ngx_pnalloc(cf->pool, p->pass.len);
            if (p->pass.data == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memcpy(p->pass.data, s.data, s.len);
            p->pass.data[s.len] = '/';

            continue;
        }

        if (ngx_strncmp(value[i].data, "key_file=", 9) == 0) {
            key_file.data = value[i].data + 9;
            key_file.len = value[i].len - 9;
            continue;
        }

        /* the format's own, once the format is known */
        params[n++] = value[i];
    }

    if (p->driver == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_provider \"%V\": format= is required",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (p->pass.len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_provider \"%V\": pass= is required",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; i < n; i++) {
        eq = ngx_strlchr(params[i].data, params[i].data + params[i].len, '=');

        if (eq) {
            name.data = params[i].data;
            name.len = eq - params[i].data;
            s.data = eq + 1;
            s.len = params[i].data + params[i].len - s.data;

            switch (ngx_http_llm_driver_param(cf, p, &name, &s)) {

            case NGX_OK:
                continue;

            case NGX_ERROR:
                return NGX_CONF_ERROR;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_provider \"%V\": invalid parameter \"%V\"",
                           &value[1], &params[i]);
        return NGX_CONF_ERROR;
    }

    if (key_file.len) {
        if (ngx_http_llm_read_key(cf, &key_file, &p->key) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_read_key(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *key)
{
    u_char           *p, *last;
    ssize_t           n;
    ngx_str_t         name;
    ngx_file_t        f;
    ngx_file_info_t   fi;

    name = *file;

    if (ngx_conf_full_name(cf->cycle, &name, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.name = name;
    f.log = cf->log;

    f.fd = ngx_open_file(name.data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);

    if (f.fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "llm_provider: cannot open key_file \"%V\"",
                           &name);
        return NGX_ERROR;
    }

    if (ngx_fd_info(f.fd, &fi) == NGX_FILE_ERROR
        || ngx_file_size(&fi) > 16384)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_provider: key_file \"%V\" is not a small "
                           "regular file", &name);
        ngx_close_file(f.fd);
        return NGX_ERROR;
    }

    p = ngx_pnalloc(cf->pool, ngx_file_size(&fi) + 1);
    if (p == NULL) {
        ngx_close_file(f.fd);
        return NGX_ERROR;
    }

    n = ngx_read_file(&f, p, ngx_file_size(&fi), 0);

    ngx_close_file(f.fd);

    if (n == NGX_ERROR) {
        return NGX_ERROR;
    }

    last = p + n;

    while (p < last && (*p == ' ' || *p == '\t' || *p == CR || *p == LF)) {
        p++;
    }

    while (last > p
           && (last[-1] == ' ' || last[-1] == '\t' || last[-1] == CR
               || last[-1] == LF))
    {
        last--;
    }

    if (p == last) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_provider: key_file \"%V\" is empty", &name);
        return NGX_ERROR;
    }

    key->data = p;
    key->len = last - p;

    return NGX_OK;
}


static char *
ngx_http_llm_route(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    u_char                    *colon, *p;
    ngx_int_t                  n;
    ngx_str_t                 *value, name;
    ngx_uint_t                 i, j;
    ngx_array_t              **list;
    ngx_http_llm_route_t      *route;
    ngx_http_llm_target_t     *t;
    ngx_http_llm_main_conf_t  *lmcf;

    value = cf->args->elts;
    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_gateway_module);

    if (llcf->routes == NGX_CONF_UNSET_PTR) {
        llcf->routes = ngx_array_create(cf->pool, 4,
                                        sizeof(ngx_http_llm_route_t));
        if (llcf->routes == NULL) {
            return NGX_CONF_ERROR;
        }

        /* for lmcf->routes, made when the lists are complete */

        list = ngx_array_push(&lmcf->route_lists);
        if (list == NULL) {
            return NGX_CONF_ERROR;
        }

        *list = llcf->routes;
    }

    route = llcf->routes->elts;

    for (i = 0; i < llcf->routes->nelts; i++) {
        if (route[i].name.len == value[1].len
            && ngx_strncmp(route[i].name.data, value[1].data, value[1].len)
               == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "duplicate llm_route \"%V\"", &value[1]);
            return NGX_CONF_ERROR;
        }
    }

    route = ngx_array_push(llcf->routes);
    if (route == NULL) {
        return NGX_CONF_ERROR;
    }

    route->name = value[1];

    if (ngx_array_init(&route->targets, cf->pool, cf->args->nelts - 2,
                       sizeof(ngx_http_llm_target_t))
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    t = NULL;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "weight=", 7) == 0) {
            n = ngx_atoi(value[i].data + 7, value[i].len - 7);

            if (t == NULL || n == NGX_ERROR || n == 0) {
                goto invalid;
            }

            t->weight = n;
            continue;
        }

        if (value[i].len == 6 && ngx_strncmp(value[i].data, "backup", 6) == 0)
        {
            if (t == NULL) {
                goto invalid;
            }

            t->backup = 1;
            continue;
        }

        if (ngx_strncmp(value[i].data, "max_fails=", 10) == 0) {
            n = ngx_atoi(value[i].data + 10, value[i].len - 10);

            if (t == NULL || n == NGX_ERROR) {
                goto invalid;
            }

            t->max_fails = n;
            continue;
        }

        if (ngx_strncmp(value[i].data, "fail_timeout=", 13) == 0) {
            name.data = value[i].data + 13;
            name.len = value[i].len - 13;

            n = ngx_parse_time(&name, 1);

            if (t == NULL || n == NGX_ERROR) {
                goto invalid;
            }

            t->fail_timeout = n;
            continue;
        }

        if (ngx_strlchr(value[i].data, value[i].data + value[i].len, '=')) {
            goto invalid;
        }

        if (route->targets.nelts == NGX_HTTP_LLM_MAX_TARGETS) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "llm_route \"%V\": more than %d targets",
                               &value[1], NGX_HTTP_LLM_MAX_TARGETS);
            return NGX_CONF_ERROR;
        }

        t = ngx_array_push(&route->targets);
        if (t == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(t, sizeof(ngx_http_llm_target_t));
        t->weight = 1;
        t->max_fails = 1;
        t->fail_timeout = 10;

        colon = ngx_strlchr(value[i].data, value[i].data + value[i].len, ':');

        name.data = value[i].data;
        name.len = colon ? (size_t) (colon - value[i].data) : value[i].len;

        if (colon) {
            t->model.data = colon + 1;
            t->model.len = value[i].data + value[i].len - (colon + 1);

            if (t->model.len == 0) {
                goto invalid;
            }
        }

        t->provider = ngx_http_llm_provider_find(lmcf, &name);

        if (t->provider == NULL) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "llm_route \"%V\": unknown provider \"%V\" "
                               "(llm_provider must come first)",
                               &value[1], &name);
            return NGX_CONF_ERROR;
        }
    }

    if (route->targets.nelts == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_route \"%V\": no targets", &value[1]);
        return NGX_CONF_ERROR;
    }

    /* the whole line, so that routes of one name in other locations keep
     * their own round-robin position */

    n = 0;

    for (i = 1; i < cf->args->nelts; i++) {
        n += value[i].len + 1;
    }

    p = ngx_pnalloc(cf->pool, n);
    if (p == NULL) {
        return NGX_CONF_ERROR;
    }

    route->key.data = p;

    for (i = 1; i < cf->args->nelts; i++) {
        p = ngx_cpymem(p, value[i].data, value[i].len);
        *p++ = ' ';
    }

    route->key.len = n - 1;

    t = route->targets.elts;

    for (j = 0; j < route->targets.nelts; j++) {
        if (!t[j].backup) {
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "llm_route \"%V\": every target is a backup",
                       &value[1]);
    return NGX_CONF_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "llm_route \"%V\": invalid parameter \"%V\"",
                       &value[1], &value[i]);
    return NGX_CONF_ERROR;
}


static char *
ngx_http_llm_gateway(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    if (llcf->gateway != NGX_CONF_UNSET) {
        return "is duplicate";
    }

    llcf->gateway = 1;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_handler;

    return NGX_CONF_OK;
}


static char *
ngx_http_llm_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ssize_t               size;
    ngx_str_t            *value;
    ngx_http_llm_zone_t  *zone, **zp;

    value = cf->args->elts;

    size = ngx_parse_size(&value[2]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_zone \"%V\": invalid size \"%V\" "
                           "(%uzk at least: 8 memory pages)",
                           &value[1], &value[2], 8 * ngx_pagesize / 1024);
        return NGX_CONF_ERROR;
    }

    zone = ngx_http_llm_zone_add(cf, &value[1], size);
    if (zone == NULL) {
        return NGX_CONF_ERROR;
    }

    zp = ngx_array_push(&lmcf->zones);
    if (zp == NULL) {
        return NGX_CONF_ERROR;
    }

    *zp = zone;

    return NGX_CONF_OK;
}


/* llm_cache_embed builtin | provider:model */

static char *
ngx_http_llm_cache_embed(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    u_char                    *colon;
    ngx_str_t                 *value, name;
    ngx_http_llm_main_conf_t  *lmcf;

    if (llcf->cache_embed != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "builtin") == 0) {
        llcf->cache_embed = NULL;
        return NGX_CONF_OK;
    }

    colon = ngx_strlchr(value[1].data, value[1].data + value[1].len, ':');

    if (colon == NULL || colon == value[1].data
        || colon == value[1].data + value[1].len - 1)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid embedder \"%V\": builtin or "
                           "provider:model", &value[1]);
        return NGX_CONF_ERROR;
    }

    name.data = value[1].data;
    name.len = colon - value[1].data;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_gateway_module);

    llcf->cache_embed = ngx_http_llm_provider_find(lmcf, &name);

    if (llcf->cache_embed == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_cache_embed: unknown llm_provider \"%V\" "
                           "(declared in http{} before it is used)", &name);
        return NGX_CONF_ERROR;
    }

    llcf->cache_embed_model.data = colon + 1;
    llcf->cache_embed_model.len = value[1].data + value[1].len - colon - 1;

    return NGX_CONF_OK;
}


ngx_int_t
ngx_http_llm_read_secret(ngx_conf_t *cf, ngx_str_t *file, ngx_str_t *secret)
{
    return ngx_http_llm_read_key(cf, file, secret);
}


ngx_http_llm_zone_t *
ngx_http_llm_zone_named(ngx_conf_t *cf, ngx_str_t *name)
{
    ngx_uint_t                 i;
    ngx_http_llm_zone_t      **zones;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_gateway_module);

    zones = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        if (zones[i]->name.len == name->len
            && ngx_strncmp(zones[i]->name.data, name->data, name->len) == 0)
        {
            return zones[i];
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "unknown llm_zone \"%V\" (an llm_zone is declared "
                       "in http{} before it is used)", name);

    return NULL;
}


static ngx_int_t
ngx_http_llm_init_process(ngx_cycle_t *cycle)
{
    ngx_http_llm_zone_t       *zone;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_cycle_get_module_main_conf(cycle,
                                               ngx_http_llm_gateway_module);

    if (lmcf == NULL) {
        return NGX_OK;
    }

    if (ngx_http_llm_redis_init_process(cycle, lmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    if (lmcf->route_zone) {
        return NGX_OK;
    }

    zone = ngx_pcalloc(cycle->pool, sizeof(ngx_http_llm_zone_t));
    if (zone == NULL) {
        return NGX_ERROR;
    }

    if (ngx_http_llm_zone_private(cycle, zone, NGX_HTTP_LLM_ZONE_PRIVATE_SIZE)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    lmcf->route_zone = zone;

    return NGX_OK;
}
