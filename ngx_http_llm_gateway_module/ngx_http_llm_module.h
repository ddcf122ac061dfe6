
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_MODULE_H_INCLUDED_
#define _NGX_HTTP_LLM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_llm_driver.h"
#include "ngx_http_llm_zone.h"
#include "ngx_http_llm_spend.h"
#include "ngx_http_llm_embed.h"


/*
 * The client's event stream: events are queued in a buffer and sent
 * through a filter chain; what the client has not taken yet stays busy,
 * and the caller stops reading the provider until it is gone.
 */

struct ngx_http_llm_stream_s {
    ngx_pool_t                 *pool;
    ngx_chain_t                *pend;          /* queued, not yet sent */
    ngx_chain_t                *free;
    ngx_chain_t                *busy;          /* sent, not yet written */
};


typedef struct {
    ngx_http_llm_provider_t    *provider;
    ngx_str_t                   model;         /* empty: client's model */
    ngx_uint_t                  weight;
    ngx_uint_t                  max_fails;
    time_t                      fail_timeout;
    unsigned                    backup:1;
} ngx_http_llm_target_t;


typedef struct {
    ngx_str_t                   name;          /* public name or "*" */
    ngx_str_t                   key;           /* name and targets: the
                                                  round-robin state's key */
    ngx_array_t                 targets;       /* ngx_http_llm_target_t */
} ngx_http_llm_route_t;


extern ngx_http_llm_driver_t  ngx_http_llm_openai_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_azure_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_anthropic_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_gemini_driver;


/* ngx_http_llm_driver.c: the driver hooks, a NULL one's default in its
 * place (see ngx_http_llm_driver_t) */
/* the driver of a format= listed in config, or NULL */
ngx_http_llm_driver_t *ngx_http_llm_driver_find(ngx_str_t *name);
/* the media type of a stream framing: "text/event-stream" */
ngx_str_t *ngx_http_llm_framing_type(ngx_http_llm_framing_e framing);
ngx_int_t ngx_http_llm_driver_auth(ngx_http_llm_call_t *call,
    ngx_list_t *headers, ngx_str_t *body);
void ngx_http_llm_driver_error(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_str_t *body, ngx_http_llm_error_t *err);
/* a parameter of llm_provider p: NGX_OK, NGX_DECLINED (unknown),
 * NGX_ERROR (logged) */
ngx_int_t ngx_http_llm_driver_param(ngx_conf_t *cf,
    ngx_http_llm_provider_t *p, ngx_str_t *name, ngx_str_t *value);
/* the pause in ms a failed answer of the provider asks for, 0: none */
ngx_msec_t ngx_http_llm_driver_pause(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_list_t *headers);


/* ngx_http_llm_stream.c: the client's stream, for the core */

void ngx_http_llm_stream_init(ngx_http_llm_stream_t *s, ngx_pool_t *pool);
/* queue "data: <data>\n\n" */
ngx_int_t ngx_http_llm_stream_data(ngx_http_llm_stream_t *s, ngx_str_t *data);
/*
 * What is queued goes to output(r, ...): the next body filter when r is
 * an attempt's subrequest (from inside the gateway's filter), else
 * ngx_http_output_filter.  last: the final bytes of the response.
 * NGX_OK: the client took everything so far; NGX_AGAIN: some of it waits
 * for the client; NGX_ERROR.
 */
ngx_int_t ngx_http_llm_stream_send(ngx_http_llm_stream_t *s,
    ngx_http_request_t *r, ngx_http_output_body_filter_pt output,
    ngx_uint_t last);

/* ngx_http_llm_util.c: every occurrence of secret in text replaced in
 * place by "[redacted]" (by as many "*" when the secret is shorter);
 * text->len may shrink */
void ngx_http_llm_redact(ngx_str_t *text, ngx_str_t *secret);


/* the core: configuration and per-request state */

#define NGX_HTTP_LLM_FB_OFF       0x0002
#define NGX_HTTP_LLM_FB_ERROR     0x0004
#define NGX_HTTP_LLM_FB_TIMEOUT   0x0008
#define NGX_HTTP_LLM_FB_INVALID   0x0010
#define NGX_HTTP_LLM_FB_429       0x0020
#define NGX_HTTP_LLM_FB_500       0x0040
#define NGX_HTTP_LLM_FB_502       0x0080
#define NGX_HTTP_LLM_FB_503       0x0100
#define NGX_HTTP_LLM_FB_504       0x0200
#define NGX_HTTP_LLM_FB_5XX       0x0400
#define NGX_HTTP_LLM_FB_401       0x0800
#define NGX_HTTP_LLM_FB_403       0x1000


#define NGX_HTTP_LLM_MAX_TARGETS  64


/* llm_redis */
typedef struct {
    ngx_url_t                   url;
    ngx_http_llm_zone_t        *zone;
    ngx_str_t                   password;
    ngx_uint_t                  db;
    ngx_str_t                   prefix;
    ngx_msec_t                  sync;
    ngx_msec_t                  connect_timeout;
    ngx_msec_t                  timeout;
} ngx_http_llm_redis_conf_t;


typedef struct {
    ngx_array_t                 providers;     /* ngx_http_llm_provider_t */
    ngx_array_t                 zones;         /* ngx_http_llm_zone_t * */

    /* every llm_route line of every level, as upstream blocks are kept
     * in ngx_http_upstream_main_conf_t */
    ngx_array_t                 routes;        /* ngx_http_llm_route_t * */
    ngx_array_t                 route_lists;   /* ngx_array_t *: the
                                                  levels' lists, until
                                                  routes is made */
    time_t                      fail_timeout;  /* the longest of them */

    ngx_str_t                   route_zone_name;  /* llm_route_zone */
    ngx_http_llm_zone_t        *route_zone;    /* routing state */

    ngx_array_t                *prices;        /* ngx_http_llm_price_t,
                                                  sorted by name */
    ngx_str_t                   prices_file;
    time_t                      time_offset;   /* llm_test_time_offset */

    ngx_array_t                 redis;         /* ngx_http_llm_redis_conf_t *,
                                                  a zone each */
    ngx_uint_t                  status_max_series;
    ngx_flag_t                  status;        /* an llm_status exists */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_array_t                *routes;        /* ngx_http_llm_route_t */
    ngx_http_llm_route_t       *catch_all;
    ngx_uint_t                  fallback;
    ngx_uint_t                  fallback_tries;
    ngx_msec_t                  fallback_timeout;
    ngx_msec_t                  retry_after_max;
    size_t                      max_response;
    ngx_flag_t                  gateway;

    ngx_http_llm_zone_t        *cache_zone;    /* llm_cache; NULL: off */
    time_t                      cache_ttl;
    ngx_uint_t                  cache_semantic;  /* threshold x 1000,
                                                    0: exact only */
    ngx_array_t                *cache_keys;    /* llm_cache_key, complex
                                                  values */
    ngx_http_llm_provider_t    *cache_embed;   /* llm_cache_embed; NULL:
                                                  builtin */
    ngx_str_t                   cache_embed_model;

    ngx_array_t                *budgets;       /* ngx_http_llm_budget_t */
    ngx_array_t                *limits;        /* ngx_http_llm_limit_t */
    ngx_uint_t                  max_tokens;    /* llm_budget_max_tokens */
} ngx_http_llm_loc_conf_t;


typedef struct ngx_http_llm_ctx_s  ngx_http_llm_ctx_t;


/* $llm_cache_status, x-llm-cache */
typedef enum {
    NGX_HTTP_LLM_CACHE_NONE = 0,   /* no llm_cache */
    NGX_HTTP_LLM_CACHE_HIT,
    NGX_HTTP_LLM_CACHE_SEMANTIC,
    NGX_HTTP_LLM_CACHE_MISS,
    NGX_HTTP_LLM_CACHE_BYPASS
} ngx_http_llm_cache_status_e;


/* a request's cache state */
typedef struct {
    ngx_http_llm_cache_status_e  status;
    u_char                      key[16];       /* the exact key */
    uint64_t                    space[2];      /* the semantic key space */
    ngx_http_llm_vec_t         *vec;           /* the last user message */
    ngx_str_t                   text;          /* its text, for a
                                                  provider's embedding */
    int8_t                     *dense;         /* the provider's */
    ngx_uint_t                  dims;
    uint32_t                    norm2;
    uint64_t                    sig;
    ngx_uint_t                  similarity;    /* x 1000 */
    ngx_str_t                   provider;      /* of a hit's answer */
    ngx_str_t                   model;
    unsigned                    store:1;       /* an answer may be stored */
    unsigned                    semantic:1;    /* space and vec are set */
    unsigned                    semantic_hit:1;
} ngx_http_llm_cache_ctx_t;


/* a zone's cache, for status */
typedef struct {
    uint64_t                    entries;
    uint64_t                    bytes;
    uint64_t                    evictions;
    uint64_t                    hits;
    uint64_t                    semantic_hits;
    uint64_t                    misses;
    uint64_t                    bypasses;
    uint64_t                    stores;
} ngx_http_llm_cache_stats_t;


/* how a request ended, for ngx_http_llm_finish() */
typedef enum {
    NGX_HTTP_LLM_RUNNING = 0,   /* not yet: the client went away */
    NGX_HTTP_LLM_ANSWERED,      /* a whole answer was sent */
    NGX_HTTP_LLM_STREAMED,      /* a stream was sent to its end */
    NGX_HTTP_LLM_FAILED,        /* attempts were made, none answered */
    NGX_HTTP_LLM_REFUSED        /* answered by the gateway, no attempt */
} ngx_http_llm_outcome_e;


typedef struct {
    ngx_http_llm_target_t      *target;
    ngx_http_request_t         *sr;
    ngx_http_llm_call_t         call;

    ngx_uint_t                  status;        /* provider's; 0: none */
    ngx_msec_t                  start;
    ngx_msec_t                  elapsed;

    u_char                     *body;          /* collected answer */
    size_t                      body_len;
    size_t                      body_size;

    ngx_http_llm_price_t       *price;         /* NULL: unknown, cost 0 */
    ngx_int_t                   max_output;    /* tokens reserved */

    void                       *sse;           /* ngx_http_llm_sse_t */
    ngx_chain_t                *held;          /* provider buffers kept
                                                  busy while the client
                                                  has not taken what they
                                                  were translated into */

    unsigned                    header:1;      /* provider header seen */
    unsigned                    finished:1;
    unsigned                    failed:1;      /* no complete answer */
    unsigned                    timedout:1;
    unsigned                    streaming:1;
    unsigned                    stream_done:1;
    unsigned                    too_big:1;
    unsigned                    untranslated:1;  /* driver failed */
    unsigned                    embed:1;       /* the cache's embedding */
    unsigned                    lowered:1;     /* max_tokens lowered by a
                                                  budget */
    unsigned                    over_budget:1;  /* stream cut by the gateway */
    unsigned                    settled:1;
} ngx_http_llm_attempt_t;


struct ngx_http_llm_ctx_s {
    ngx_http_request_t         *request;
    ngx_http_llm_loc_conf_t    *conf;

    json_t                     *body;          /* parsed when needed */
    ngx_str_t                   raw;
    ngx_str_t                   members[NGX_HTTP_LLM_M_N];
    ngx_uint_t                  endpoint;
    ngx_str_t                   model;

    ngx_http_llm_route_t       *route;
    ngx_str_t                  *keys;          /* health keys of targets */
    uint64_t                    tried;         /* bit per target */
    ngx_uint_t                  tries;
    uint64_t                    wait;          /* ms until one cools down */

    ngx_http_llm_attempt_t     *cur;
    ngx_http_llm_attempt_t     *answer;        /* the one whose answer or
                                                  error the client got */
    ngx_http_llm_stream_t       out;           /* the client's stream */
    ngx_http_llm_outcome_e      outcome;
    ngx_str_t                   attempts;      /* for $llm_attempts */
    ngx_uint_t                  nattempts;
    ngx_msec_t                  start;
    ngx_msec_t                  ttft;          /* -1 unknown */

    ngx_http_llm_spend_t        spend;
    ngx_event_t                 lease_wait;    /* for a budget lease */
    ngx_http_llm_cache_ctx_t    cache;
    ngx_str_t                   answer_body;   /* a whole answer sent */

    ngx_str_t                   replace;       /* error body replacing
                                                  nginx's own page */
    unsigned                    stream:1;
    unsigned                    include_usage:1;
    unsigned                    not_429:1;     /* a failure other than 429 */
    unsigned                    own:1;         /* our response headers */
    unsigned                    replacing:1;
    unsigned                    replaced:1;
};


extern ngx_module_t  ngx_http_llm_gateway_module;


/* ngx_http_llm_request.c: from the client's body to the first attempt,
 * and the end of every request */
ngx_http_llm_ctx_t *ngx_http_llm_ctx_create(ngx_http_request_t *r);
void ngx_http_llm_body_handler(ngx_http_request_t *r);
/* the attempts, after the cache missed; the request ends if none can
 * start */
void ngx_http_llm_proceed(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx);
/* the request ends with this outcome: ngx_http_finalize_request(r, rc) */
void ngx_http_llm_end(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_outcome_e outcome, ngx_int_t rc);
/* the log phase handler: every gateway request passes here once */
ngx_int_t ngx_http_llm_finish(ngx_http_request_t *r);

/* ngx_http_llm_attempt.c: the attempt loop */
/* the next target: NGX_OK (a subrequest is under way), NGX_DECLINED (no
 * target left), NGX_BUSY (every target left is cooling down), NGX_ABORT
 * (the body is not valid JSON for a tree), NGX_ERROR */
ngx_int_t ngx_http_llm_attempt_start(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
/* a subrequest for the embedding of text by provider p, model: NGX_OK
 * (ctx->cur is it), NGX_DECLINED (the format cannot), NGX_ERROR */
ngx_int_t ngx_http_llm_attempt_embed(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_provider_t *p, ngx_str_t *model,
    ngx_str_t *text);
/* the OpenAI body of a finished attempt's whole 2xx answer: NGX_OK,
 * NGX_DECLINED (failed: the reason in *what), NGX_ERROR */
ngx_int_t ngx_http_llm_attempt_result(ngx_http_request_t *r,
    ngx_http_llm_attempt_t *a, ngx_str_t *body, char **what);
/* the preaccess handler of attempts' subrequests */
ngx_int_t ngx_http_llm_body_length(ngx_http_request_t *r);
/* provider text (a body, an event): UTF-8 repaired, the key redacted */
ngx_int_t ngx_http_llm_provider_text(ngx_http_llm_attempt_t *a,
    ngx_str_t *text);

/* ngx_http_llm_filter.c: what comes back from the provider */
ngx_int_t ngx_http_llm_filter_init(ngx_conf_t *cf);

/* ngx_http_llm_answer.c: what the gateway sends to the client */
ngx_int_t ngx_http_llm_add_header(ngx_http_request_t *r, char *key,
    ngx_str_t *value);
/* the response header, with the x-llm-* headers of attempt a (if any),
 * whose answer or error the client gets from now on (ctx->answer) */
ngx_int_t ngx_http_llm_send_header(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
/* headers and a whole body with last_buf; status 200 unless
 * r->headers_out.status is set */
ngx_int_t ngx_http_llm_send_answer(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_str_t *body);
/* an OpenAI-shaped error; a 429 of attempt a passes its pause headers */
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
/* the header fields of an event stream: 200, text/event-stream, no-cache,
 * no gzip */
ngx_int_t ngx_http_llm_stream_headers(ngx_http_request_t *r);
/* 429: every target is cooling down */
ngx_int_t ngx_http_llm_send_cooling(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
/* the end of a stream: an error event (err) or the usage chunk the
 * client asked for, then [DONE] */
ngx_int_t ngx_http_llm_stream_tail(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_error_json(ngx_pool_t *pool,
    ngx_http_llm_error_t *err, ngx_str_t *out);
void ngx_http_llm_error_set(ngx_http_llm_error_t *err, ngx_uint_t status,
    char *type, char *code, char *param, ngx_str_t *message);

/* ngx_http_llm_prices.c */
char *ngx_http_llm_prices(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_prices_init(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_http_llm_price_t *ngx_http_llm_price_find(ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *provider, ngx_str_t *model, ngx_log_t *log);
int64_t ngx_http_llm_cost(ngx_http_llm_price_t *price, ngx_int_t prompt,
    ngx_int_t completion, ngx_int_t cached);

/* ngx_http_llm_spend.c: budgets, and what a request holds */
char *ngx_http_llm_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
int64_t ngx_http_llm_usd_parse(ngx_str_t *s);
u_char *ngx_http_llm_usd_print(u_char *p, int64_t nano);
ngx_int_t ngx_http_llm_estimate(ngx_str_t *raw);
time_t ngx_http_llm_budget_time(ngx_http_request_t *r);
ngx_int_t ngx_http_llm_spend_init(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_budget_reserve(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
void ngx_http_llm_spend_settle(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a);
void ngx_http_llm_spend_finish(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_uint_t ngx_http_llm_spend_over(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a);
ngx_int_t ngx_http_llm_spend_headers(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
ngx_int_t ngx_http_llm_send_budget(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_send_budget_full(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
/* the budgets of a zone, for status */
ngx_int_t ngx_http_llm_budget_walk(ngx_http_llm_zone_t *zone,
    ngx_http_llm_budget_walk_pt handler, void *data);

/* ngx_http_llm_limit.c */
/* the slots of seconds that passed are emptied; under the lock */
void ngx_http_llm_limit_advance(ngx_http_llm_limit_node_t *node,
    uint64_t now);
char *ngx_http_llm_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_llm_limit_check(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_limit_settle(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_limit_headers(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_send_limited(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_cache.c */
char *ngx_http_llm_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
char *ngx_http_llm_cache_key(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
/* NGX_OK: answered from the cache; NGX_DECLINED: go on; NGX_AGAIN: an
 * embedding is asked for; NGX_ERROR */
ngx_int_t ngx_http_llm_cache_lookup(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_store(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_cache_headers(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_str_t *ngx_http_llm_cache_status(ngx_http_llm_ctx_t *ctx);
void ngx_http_llm_cache_stats(ngx_http_llm_zone_t *zone,
    ngx_http_llm_cache_stats_t *st);
/* the embedding attempt a is over: answer from the cache, or go on */
void ngx_http_llm_cache_embedded(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
ngx_http_llm_acc_t *ngx_http_llm_acc_create(ngx_pool_t *pool);
/* a text delta, a JSON string literal */
ngx_int_t ngx_http_llm_acc_text(ngx_http_llm_acc_t *acc,
    ngx_str_t *literal);
/* an OpenAI chunk, as JSON text */
ngx_int_t ngx_http_llm_acc_chunk(ngx_http_llm_acc_t *acc, ngx_str_t *data);

/* ngx_http_llm_status.c */
char *ngx_http_llm_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
void ngx_http_llm_status_count(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);

/* ngx_http_llm_redis.c */
char *ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);
ngx_int_t ngx_http_llm_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_llm_main_conf_t *lmcf);
void ngx_http_llm_redis_exit_process(ngx_cycle_t *cycle);

/* ngx_http_llm_cache.c: an entry of another node, into the zone */
void ngx_http_llm_cache_insert(ngx_http_llm_zone_t *zone, ngx_str_t *key,
    u_char *value, size_t size, uint64_t expire);

/* ngx_http_llm_module.c: a secret from a file (first line), at
 * configuration; logs */
ngx_int_t ngx_http_llm_read_secret(ngx_conf_t *cf, ngx_str_t *file,
    ngx_str_t *secret);

/* ngx_http_llm_module.c: an llm_zone declared before, by name; logs */
ngx_http_llm_zone_t *ngx_http_llm_zone_named(ngx_conf_t *cf,
    ngx_str_t *name);

/* ngx_http_llm_route.c */
/* lmcf->routes from lmcf->route_lists, lmcf->route_zone named */
char *ngx_http_llm_route_init_main_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_route_prepare(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_route_pick(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_target_t **target);
void ngx_http_llm_route_result(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_uint_t failed);


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
