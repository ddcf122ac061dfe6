
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_SPEND_H_INCLUDED_
#define _NGX_HTTP_LLM_SPEND_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_llm_driver.h"
#include "ngx_http_llm_zone.h"


/*
 * Money, prices, budgets and rate limits.
 *
 * Money is counted in integers: amounts in nano-USD (1e-9 USD), prices in
 * pico-USD (1e-12 USD) per token, so that $0.01875 per million tokens is
 * exact and a cost is a sum of integer products, rounded up to the
 * nano-USD once.
 */


#define NGX_HTTP_LLM_NANO_USD       1000000000LL

#define NGX_HTTP_LLM_PAYMENT_REQUIRED  402

/* the fewest output tokens a budget reserves for an answer: below this
 * the request is refused (402) rather than given a useless answer */
#define NGX_HTTP_LLM_BUDGET_MIN_TOKENS  16

#define NGX_HTTP_LLM_PERIOD_DAY     0
#define NGX_HTTP_LLM_PERIOD_WEEK    1
#define NGX_HTTP_LLM_PERIOD_MONTH   2
#define NGX_HTTP_LLM_PERIOD_TOTAL   3

#define NGX_HTTP_LLM_LIMITED_REQUESTS  1
#define NGX_HTTP_LLM_LIMITED_TOKENS    2

/* the seconds of a rate limit window: 60 s and the second under way */
#define NGX_HTTP_LLM_LIMIT_SLOTS    64
#define NGX_HTTP_LLM_LIMIT_WINDOW   61


typedef struct {
    ngx_str_t                   name;          /* lowercase */
    int64_t                     input;         /* pico-USD per token */
    int64_t                     output;
    int64_t                     cached;        /* cached input tokens */
} ngx_http_llm_price_t;


/* llm_budget zone $key amount period */
typedef struct {
    ngx_http_llm_zone_t        *zone;
    ngx_http_complex_value_t    key;
    int64_t                     amount;        /* nano-USD */
    ngx_uint_t                  period;        /* NGX_HTTP_LLM_PERIOD_* */
} ngx_http_llm_budget_t;


/* llm_limit zone $key rpm=N tpm=N */
typedef struct {
    ngx_http_llm_zone_t        *zone;
    ngx_http_complex_value_t    key;
    ngx_uint_t                  rpm;           /* 0: not limited */
    ngx_uint_t                  tpm;
} ngx_http_llm_limit_t;


/*
 * A budget's state in the zone (kind BUDGET, pinned), keyed
 * "<period>:<key value>": what was spent in the current period and what
 * calls under way hold.  A new period starts with nothing spent; what is
 * held stays held until those calls settle.
 */

typedef struct {
    int64_t                     spent;         /* nano-USD, this period
                                                  (with Redis: of all
                                                  nodes, as last synced,
                                                  and pending) */
    int64_t                     reserved;      /* nano-USD held */
    int64_t                     limit;         /* as last configured */
    uint32_t                    period;        /* index of the period */
    uint32_t                    unit;          /* NGX_HTTP_LLM_PERIOD_* */

    /*
     * Redis sync: spend not pushed yet; a push awaiting its reply (its
     * delta, the lease it gives back and the lease it asks for); this
     * node's lease, what it may still commit (leased: Redis granted one);
     * the most a waiting request needs.
     */
    int64_t                     pending;
    int64_t                     inflight;
    int64_t                     inflight_ret;
    int64_t                     inflight_want;
    uint64_t                    inflight_seq;
    uint64_t                    seq;
    int64_t                     lease;
    int64_t                     demand;
    uint32_t                    inflight_period;
    uint16_t                    leased;
    uint16_t                    inflight_done; /* its reply came */
} ngx_http_llm_budget_node_t;


/*
 * A rate limit's state (kind LIMIT), keyed by the key value: requests and
 * tokens per second, a slot per second of the last 64; the window is the
 * current second and the 60 before it, so that no 60 seconds, wherever
 * they start, see more than the limit.
 */

typedef struct {
    uint64_t                    last;          /* the newest second */
    uint32_t                    requests[NGX_HTTP_LLM_LIMIT_SLOTS];
    uint32_t                    tokens[NGX_HTTP_LLM_LIMIT_SLOTS];

    /* Redis sync: what was pushed of each slot, and what the other
     * nodes used in the window, as last read */
    uint32_t                    pushed_requests[NGX_HTTP_LLM_LIMIT_SLOTS];
    uint32_t                    pushed_tokens[NGX_HTTP_LLM_LIMIT_SLOTS];
    uint32_t                    others_requests;
    uint32_t                    others_tokens;
} ngx_http_llm_limit_node_t;


/* what one request holds of one budget or limit */
typedef struct {
    ngx_str_t                   key;           /* zone key; empty: the key
                                                  value was empty */
    int64_t                     held;          /* nano-USD, or tokens */
    uint64_t                    second;        /* limits: of the tokens */
} ngx_http_llm_hold_t;


/* a request's spend and limits */
typedef struct {
    ngx_int_t                   estimate;      /* prompt tokens, at most */
    ngx_int_t                   max_output;    /* the client's, 0: none */

    ngx_http_llm_hold_t        *budgets;       /* one per llm_budget */
    ngx_http_llm_hold_t        *limits;        /* one per llm_limit */

    ngx_str_t                   key;           /* $llm_key */
    int64_t                     cost;          /* nano-USD settled, -1:
                                                  nothing yet */
    int64_t                     limit;         /* of the tightest budget, */
    int64_t                     remaining;     /* -1: no budget */

    /* the x-ratelimit-* of the tightest limit */
    ngx_int_t                   rl_requests;   /* -1: none */
    ngx_int_t                   rl_requests_left;
    ngx_msec_t                  rl_requests_reset;
    ngx_int_t                   rl_tokens;     /* -1: none */
    ngx_int_t                   rl_tokens_left;
    ngx_msec_t                  rl_tokens_reset;

    ngx_int_t                   tokens;        /* settled, for tpm */
    ngx_uint_t                  refused_period;

    /* a refusal of a limit: what for, and when to come back */
    ngx_uint_t                  limited;       /* NGX_HTTP_LLM_LIMITED_* */
    ngx_uint_t                  limited_limit;
    ngx_uint_t                  limited_used;
    ngx_uint_t                  limited_need;
    time_t                      retry;         /* s; 0: never (too large) */

    ngx_uint_t                  waits;         /* for a lease, 20 ms each */

    unsigned                    nowait:1;      /* no more waiting */
    unsigned                    budgeted:1;    /* a budget applies */
    unsigned                    refused:1;     /* a target it cannot pay */
    unsigned                    cut:1;         /* a stream reached what was
                                                  reserved for it */
} ngx_http_llm_spend_t;


/* the state of budgets, as ngx_http_llm_budget_walk() shows it */
typedef struct {
    ngx_uint_t                  unit;          /* NGX_HTTP_LLM_PERIOD_* */
    ngx_str_t                   key;           /* the key value */
    uint32_t                    period;
    int64_t                     spent;
    int64_t                     reserved;
    int64_t                     limit;
} ngx_http_llm_budget_state_t;


typedef ngx_int_t (*ngx_http_llm_budget_walk_pt)(
    ngx_http_llm_budget_state_t *b, void *data);


extern ngx_str_t  ngx_http_llm_periods[];


#endif /* _NGX_HTTP_LLM_SPEND_H_INCLUDED_ */
