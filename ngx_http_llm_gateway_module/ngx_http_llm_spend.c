
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * Budgets: llm_budget zone $key amount period.
 *
 * Before each attempt, its worst case is reserved in every budget of the
 * location, under the zone's lock: the prompt tokens estimated from the
 * body (never fewer than the provider will count for ordinary text) and
 * the output tokens allowed, at the target's prices.  When a budget
 * cannot pay for the whole of it, the output allowed is lowered to what
 * it can pay for, and the provider is asked for no more (max_tokens);
 * when it cannot pay for NGX_HTTP_LLM_BUDGET_MIN_TOKENS, the target is
 * refused.  After the attempt, what it held is released and its real
 * cost spent.  As every reservation is made against what is left, and
 * nothing is spent beyond what was reserved, concurrent requests cannot
 * together spend more than the budget.
 */


static uint32_t ngx_http_llm_period_of(ngx_uint_t unit, time_t now);
static ngx_http_llm_budget_node_t *ngx_http_llm_budget_node(
    ngx_http_llm_budget_t *b, ngx_str_t *key, uint32_t period);
static void ngx_http_llm_budget_release(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, int64_t cost);
static int64_t ngx_http_llm_attempt_cost(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_int_t *tokens);
static ngx_int_t ngx_http_llm_budget_refuse(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_budget_t *b, ngx_str_t *key,
    int64_t left, int64_t need);
static ngx_int_t ngx_http_llm_budget_walk_node(ngx_http_llm_zone_entry_t *e,
    void *data);


ngx_str_t  ngx_http_llm_periods[] = {
    ngx_string("day"),
    ngx_string("week"),
    ngx_string("month"),
    ngx_string("total"),
    ngx_null_string
};


/* llm_budget zone $key amount day|week|month|total */

char *
ngx_http_llm_budget(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_llm_budget_t             *b;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (llcf->budgets == NGX_CONF_UNSET_PTR) {
        llcf->budgets = ngx_array_create(cf->pool, 2,
                                         sizeof(ngx_http_llm_budget_t));
        if (llcf->budgets == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    b = ngx_array_push(llcf->budgets);
    if (b == NULL) {
        return NGX_CONF_ERROR;
    }

    b->zone = ngx_http_llm_zone_named(cf, &value[1]);
    if (b->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &b->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    b->amount = ngx_http_llm_usd_parse(&value[3]);

    if (b->amount <= 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid amount \"%V\": USD with at most 9 "
                           "decimals, above 0 and below 1000000000",
                           &value[3]);
        return NGX_CONF_ERROR;
    }

    for (i = 0; ngx_http_llm_periods[i].len; i++) {
        if (ngx_http_llm_periods[i].len == value[4].len
            && ngx_strncmp(ngx_http_llm_periods[i].data, value[4].data,
                           value[4].len) == 0)
        {
            b->period = i;
            return NGX_CONF_OK;
        }
    }

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid period \"%V\": day, week, month or total",
                       &value[4]);

    return NGX_CONF_ERROR;
}


/* "50", "0.01", "12.5": nano-USD; -1 if invalid */

int64_t
ngx_http_llm_usd_parse(ngx_str_t *s)
{
    u_char      *p, *last;
    int64_t      n, frac;
    ngx_uint_t   digits, decimals;

    n = 0;
    frac = 0;
    digits = 0;
    decimals = 0;
    last = s->data + s->len;

    for (p = s->data; p < last && *p >= '0' && *p <= '9'; p++) {
        if (++digits > 9) {
            return -1;
        }

        n = n * 10 + (*p - '0');
    }

    if (p < last && *p == '.') {
        for (p++; p < last && *p >= '0' && *p <= '9'; p++) {
            if (++decimals > 9) {
                return -1;
            }

            frac = frac * 10 + (*p - '0');
        }
    }

    if (p != last || digits + decimals == 0) {
        return -1;
    }

    for ( /* void */ ; decimals < 9; decimals++) {
        frac *= 10;
    }

    return n * NGX_HTTP_LLM_NANO_USD + frac;
}


/* nano-USD as USD with up to 6 decimals, rounded down: "0.00015" */

u_char *
ngx_http_llm_usd_print(u_char *p, int64_t nano)
{
    int64_t  micro, frac;
    u_char   digits[6];
    size_t   n;

    if (nano <= 0) {
        *p++ = '0';
        return p;
    }

    micro = nano / 1000;
    p = ngx_sprintf(p, "%L", micro / 1000000);

    frac = micro % 1000000;

    if (frac == 0) {
        return p;
    }

    for (n = 6; n; n--) {
        digits[n - 1] = (u_char) ('0' + frac % 10);
        frac /= 10;
    }

    for (n = 6; digits[n - 1] == '0'; n--) {
        /* void */
    }

    *p++ = '.';

    return ngx_cpymem(p, digits, n);
}


/*
 * At the start of a request under budgets or limits: the key values, the
 * prompt's estimate and the output the client allows.
 */

ngx_int_t
ngx_http_llm_spend_init(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                   *p;
    ngx_str_t                 v;
    ngx_uint_t                i, n;
    ngx_http_llm_hold_t      *h;
    ngx_http_llm_limit_t     *l;
    ngx_http_llm_spend_t     *s;
    ngx_http_llm_budget_t    *b;
    ngx_http_llm_loc_conf_t  *llcf;

    llcf = ctx->conf;
    s = &ctx->spend;

    s->cost = -1;
    s->limit = -1;
    s->remaining = -1;
    s->rl_requests = -1;
    s->rl_tokens = -1;

    if (llcf->budgets == NULL && llcf->limits == NULL) {
        return NGX_OK;
    }

    s->estimate = ngx_http_llm_estimate(&ctx->raw);

    n = ngx_http_llm_json_int(&ctx->members[NGX_HTTP_LLM_M_MAX_COMPLETION]);

    if ((ngx_int_t) n <= 0) {
        n = ngx_http_llm_json_int(&ctx->members[NGX_HTTP_LLM_M_MAX_TOKENS]);
    }

    s->max_output = ((ngx_int_t) n > 0) ? (ngx_int_t) n : 0;

    if (ctx->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        s->max_output = 0;
    }

    if (llcf->budgets) {
        b = llcf->budgets->elts;
        n = llcf->budgets->nelts;

        s->budgets = ngx_pcalloc(r->pool, n * sizeof(ngx_http_llm_hold_t));
        if (s->budgets == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            if (ngx_http_complex_value(r, &b[i].key, &v) != NGX_OK) {
                return NGX_ERROR;
            }

            if (v.len == 0) {
                continue;
            }

            if (s->key.len == 0) {
                s->key = v;
            }

            h = &s->budgets[i];

            p = ngx_pnalloc(r->pool, 6 + v.len);
            if (p == NULL) {
                return NGX_ERROR;
            }

            h->key.data = p;
            p = ngx_cpymem(p, ngx_http_llm_periods[b[i].period].data,
                           ngx_http_llm_periods[b[i].period].len);
            *p++ = ':';
            p = ngx_cpymem(p, v.data, v.len);
            h->key.len = p - h->key.data;
        }
    }

    if (llcf->limits) {
        l = llcf->limits->elts;
        n = llcf->limits->nelts;

        s->limits = ngx_pcalloc(r->pool, n * sizeof(ngx_http_llm_hold_t));
        if (s->limits == NULL) {
            return NGX_ERROR;
        }

        for (i = 0; i < n; i++) {
            if (ngx_http_complex_value(r, &l[i].key, &v) != NGX_OK) {
                return NGX_ERROR;
            }

            if (s->key.len == 0) {
                s->key = v;
            }

            s->limits[i].key = v;
        }
    }

    return NGX_OK;
}


/*
 * The most tokens a provider may count for a body: half its bytes (a
 * token of ordinary text, English or not, code or JSON syntax, is longer
 * than 2 bytes on average; escapes only lengthen the body), and 800 per
 * "image_url" (an image part names it twice).
 */

ngx_int_t
ngx_http_llm_estimate(ngx_str_t *raw)
{
    u_char     *p, *last;
    ngx_int_t   n;

    static u_char  image[] = "\"image_url\"";

    n = raw->len / 2 + 8;
    last = raw->data + raw->len;

    for (p = raw->data;
         (p = ngx_strlcasestrn(p, last, image, sizeof(image) - 2)) != NULL;
         p += sizeof(image) - 1)
    {
        n += 800;
    }

    return n;
}


static uint32_t
ngx_http_llm_period_of(ngx_uint_t unit, time_t now)
{
    ngx_tm_t  tm;

    switch (unit) {

    case NGX_HTTP_LLM_PERIOD_DAY:
        return (uint32_t) (now / 86400);

    case NGX_HTTP_LLM_PERIOD_WEEK:
        /* weeks start on Monday; 1970-01-01 was a Thursday */
        return (uint32_t) ((now / 86400 + 3) / 7);

    case NGX_HTTP_LLM_PERIOD_MONTH:
        ngx_gmtime(now, &tm);
        return (uint32_t) (tm.ngx_tm_year * 12 + tm.ngx_tm_mon - 1);

    default:
        return 0;
    }
}


/* the wall clock of budgets, moved by llm_test_time_offset */

time_t
ngx_http_llm_budget_time(ngx_http_request_t *r)
{
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    return ngx_time() + lmcf->time_offset;
}


/* with the zone locked: the budget's node, in the current period */

static ngx_http_llm_budget_node_t *
ngx_http_llm_budget_node(ngx_http_llm_budget_t *b, ngx_str_t *key,
    uint32_t period)
{
    ngx_http_llm_budget_node_t  *node;

    node = ngx_http_llm_zone_get(b->zone, NGX_HTTP_LLM_KIND_BUDGET, key,
                                 sizeof(ngx_http_llm_budget_node_t));
    if (node == NULL) {
        return NULL;
    }

    if (node->period != period || node->limit == 0) {

        /* a new key, or a new period: nothing spent in it yet; what calls
         * under way hold stays held until they settle */

        node->spent = 0;
        node->period = period;
        node->unit = (uint32_t) b->period;
    }

    node->limit = b->amount;

    return node;
}


/*
 * Reserve attempt a's worst case in every budget.  NGX_OK (a->call's
 * max_tokens set to the output reserved), NGX_DECLINED (a budget cannot
 * pay for this target: answered 402 if no target can), NGX_BUSY (a zone
 * refused a new key: logged), NGX_ERROR.
 */

ngx_int_t
ngx_http_llm_budget_reserve(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    time_t                       now;
    int64_t                      in, out, prompt, need, left, k, want, min,
                                 lease;
    ngx_uint_t                   i, n;
    ngx_http_llm_hold_t         *h;
    ngx_http_llm_spend_t        *s;
    ngx_http_llm_budget_t       *b;
    ngx_http_llm_price_t        *price;
    ngx_http_llm_budget_node_t  *node;

    s = &ctx->spend;

    if (s->budgets == NULL) {
        return NGX_OK;
    }

    b = ctx->conf->budgets->elts;
    n = ctx->conf->budgets->nelts;

    price = a->price;
    in = price ? price->input : 0;
    out = price ? price->output : 0;

    want = s->max_output ? s->max_output : (int64_t) ctx->conf->max_tokens;

    if (ctx->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        want = 0;
    }

    min = ngx_min(want, NGX_HTTP_LLM_BUDGET_MIN_TOKENS);
    k = want;

    prompt = ((int64_t) s->estimate * in + 999) / 1000;
    now = ngx_http_llm_budget_time(r);

    /* budgets whose key is empty do not account this request */

    for (i = 0; i < n && s->budgets[i].key.len == 0; i++) {
        /* void */
    }

    if (i == n) {
        return NGX_OK;
    }

    for (i = 0; i < n; i++) {
        h = &s->budgets[i];

        if (h->key.len == 0) {
            continue;
        }

        ngx_http_llm_zone_lock(b[i].zone);

        node = ngx_http_llm_budget_node(&b[i], &h->key,
                                        ngx_http_llm_period_of(b[i].period,
                                                               now));
        if (node == NULL) {
            ngx_http_llm_zone_unlock(b[i].zone);

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "llm: llm_zone \"%V\" is full (or the key is "
                          "longer than %d bytes): budget key \"%V\" "
                          "refused", &b[i].zone->name,
                          NGX_HTTP_LLM_ZONE_KEY_MAX,
                          ngx_http_llm_escape(r->pool, &h->key, 1));

            ngx_http_llm_budget_release(r, ctx, 0);
            return NGX_BUSY;
        }

        left = b[i].amount - node->spent - node->reserved;
        need = prompt + (k * out + 999) / 1000;

        if (b[i].zone->synced) {

            /*
             * Shared with other nodes: this node commits only what its
             * lease covers (what Redis set aside for it); without a lease
             * yet, a sixteenth of the budget.  When the lease is short
             * and Redis is there, the request waits for the next sync to
             * grow it.
             */

            lease = (node->leased ? 0 : b[i].amount / 16) + node->lease
                    - node->pending - node->reserved;

            if (need > lease && need <= left && !s->nowait
                && b[i].zone->sh->redis_up)
            {
                node->demand += need;
                b[i].zone->sh->lease_wanted = 1;

                ngx_http_llm_zone_unlock(b[i].zone);
                ngx_http_llm_budget_release(r, ctx, 0);

                return NGX_AGAIN;
            }

            left = ngx_min(left, lease);
        }

        if (need > left) {

            /* the output this budget can pay for, after the prompt */

            k = (left > prompt && out) ? (left - prompt) * 1000 / out : 0;

            if (left < prompt || k < min) {
                ngx_http_llm_zone_unlock(b[i].zone);
                ngx_http_llm_budget_release(r, ctx, 0);

                return ngx_http_llm_budget_refuse(r, ctx, &b[i], &h->key,
                                                  left, need);
            }

            need = prompt + (k * out + 999) / 1000;
        }

        node->reserved += need;
        h->held = need;

        ngx_http_llm_zone_unlock(b[i].zone);
    }

    /* a later budget may have lowered the output: the earlier ones hold
     * only what the attempt may now cost */

    need = prompt + (k * out + 999) / 1000;

    s->limit = -1;
    s->remaining = -1;

    for (i = 0; i < n; i++) {
        h = &s->budgets[i];

        if (h->key.len == 0) {
            continue;
        }

        ngx_http_llm_zone_lock(b[i].zone);

        node = ngx_http_llm_zone_get(b[i].zone, NGX_HTTP_LLM_KIND_BUDGET,
                                     &h->key,
                                     sizeof(ngx_http_llm_budget_node_t));
        if (node) {
            node->reserved -= h->held - need;
            left = node->limit - node->spent - node->reserved;

            if (s->remaining < 0 || left < s->remaining) {
                s->remaining = ngx_max(left, 0);
                s->limit = node->limit;
            }
        }

        h->held = need;

        ngx_http_llm_zone_unlock(b[i].zone);
    }

    s->budgeted = 1;

    a->max_output = (ngx_int_t) k;

    if (k != s->max_output && ctx->endpoint != NGX_HTTP_LLM_EMBEDDINGS) {
        a->call.max_tokens = (ngx_int_t) k;
    }

    if (k < want) {
        a->lowered = 1;

        ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                      "llm: budget lowers max_tokens from %L to %L for "
                      "model \"%V\"", want, k,
                      ngx_http_llm_escape(r->pool, &a->call.model, 1));
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_budget_refuse(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_budget_t *b, ngx_str_t *key, int64_t left, int64_t need)
{
    u_char  l[32], w[32];

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm: budget \"%V\" cannot pay for model \"%V\": "
                  "%*s USD left, %*s USD needed",
                  ngx_http_llm_escape(r->pool, key, 1),
                  ngx_http_llm_escape(r->pool, &ctx->model, 1),
                  ngx_http_llm_usd_print(l, left) - l, l,
                  ngx_http_llm_usd_print(w, need) - w, w);

    ctx->spend.refused = 1;
    ctx->spend.limit = b->amount;
    ctx->spend.remaining = ngx_max(left, 0);
    ctx->spend.refused_period = b->period;

    return NGX_DECLINED;
}


/* what the budgets hold for the current attempt is released, and cost
 * spent */

static void
ngx_http_llm_budget_release(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    int64_t cost)
{
    time_t                       now;
    int64_t                      left;
    ngx_uint_t                   i, n;
    ngx_http_llm_hold_t         *h;
    ngx_http_llm_spend_t        *s;
    ngx_http_llm_budget_t       *b;
    ngx_http_llm_budget_node_t  *node;

    s = &ctx->spend;
    b = ctx->conf->budgets->elts;
    n = ctx->conf->budgets->nelts;
    now = ngx_http_llm_budget_time(r);

    for (i = 0; i < n; i++) {
        h = &s->budgets[i];

        if (h->key.len == 0 || (h->held == 0 && cost == 0)) {
            continue;
        }

        ngx_http_llm_zone_lock(b[i].zone);

        node = ngx_http_llm_budget_node(&b[i], &h->key,
                                        ngx_http_llm_period_of(b[i].period,
                                                               now));
        if (node) {
            node->reserved = ngx_max(node->reserved - h->held, 0);
            node->spent += cost;
            node->pending += cost;

            if (cost) {
                ngx_http_llm_zone_touch(b[i].zone, node);
            }

            left = node->limit - node->spent - node->reserved;

            if (s->budgeted && (s->remaining < 0 || left < s->remaining)) {
                s->remaining = ngx_max(left, 0);
                s->limit = node->limit;
            }
        }

        ngx_http_llm_zone_unlock(b[i].zone);

        h->held = 0;
    }
}


/*
 * Attempt a is over: its cost is spent, what it held released, and its
 * tokens counted for the rate limits.  Once per attempt.
 */

void
ngx_http_llm_spend_settle(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    int64_t                cost;
    ngx_int_t              tokens;
    ngx_http_llm_spend_t  *s;

    if (a->settled) {
        return;
    }

    a->settled = 1;
    s = &ctx->spend;

    cost = ngx_http_llm_attempt_cost(ctx, a, &tokens);

    s->cost = (s->cost < 0 ? 0 : s->cost) + cost;
    s->tokens += tokens;

    if (s->budgets) {
        if (s->budgeted) {
            s->remaining = -1;
        }

        ngx_http_llm_budget_release(r, ctx, cost);
    }
}


/*
 * The cost of an attempt, and its tokens, from the usage the provider
 * reported; for what it did not report (a stream cut off), the prompt's
 * estimate and the output counted from the stream.
 */

static int64_t
ngx_http_llm_attempt_cost(ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_int_t *tokens)
{
    int64_t               cost, held;
    ngx_int_t             prompt, completion;
    ngx_uint_t            i, n;
    ngx_http_llm_call_t  *call;

    call = &a->call;

    prompt = call->usage.prompt;
    completion = call->usage.completion;

    if (!a->finished && prompt < 0) {

        /* the client went away during the attempt: the provider has
         * read the prompt, at least */

        prompt = ctx->spend.estimate;
    }

    if (a->streaming && !a->stream_done && call->finish_reason.len == 0) {

        /* cut off: at least what was seen */

        if (completion < call->produced) {
            completion = call->produced;
        }

        if (prompt < 0 && completion > 0) {
            prompt = ctx->spend.estimate;
        }
    }

    prompt = ngx_max(prompt, 0);
    completion = ngx_max(completion, 0);

    *tokens = prompt + completion;

    cost = ngx_http_llm_cost(a->price, prompt, completion,
                             call->usage.cached);

    if (ctx->spend.cut && ctx->spend.budgets) {

        /* the gateway ended the stream at what was reserved for it: the
         * chunk that crossed the line is not charged beyond that */

        held = 0;
        n = ctx->conf->budgets->nelts;

        for (i = 0; i < n; i++) {
            held = ngx_max(held, ctx->spend.budgets[i].held);
        }

        cost = ngx_min(cost, held);
    }

    return cost;
}


/* the log phase: the last attempt is settled, and the request's tokens
 * in the rate limits */

void
ngx_http_llm_spend_finish(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    if (ctx->cur) {
        ngx_http_llm_spend_settle(r, ctx, ctx->cur);
    }

    if (ctx->spend.limits) {
        ngx_http_llm_limit_settle(r, ctx);
    }
}


/*
 * Whether a stream has produced more than its budget reserved for it: it
 * is then ended.  Output is counted from the stream's events (an
 * estimate), with a margin for that.
 */

ngx_uint_t
ngx_http_llm_spend_over(ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a)
{
    ngx_int_t  max;

    max = a->max_output;

    if (!ctx->spend.budgeted || max <= 0 || a->price == NULL) {
        return 0;
    }

    if (a->call.produced <= max + max / 16 + 4) {
        return 0;
    }

    ctx->spend.cut = 1;

    return 1;
}


/* x-llm-budget-*, x-ratelimit-* and, for a whole answer, x-llm-cost */

ngx_int_t
ngx_http_llm_spend_headers(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    u_char                *p;
    ngx_str_t              v;
    ngx_http_llm_spend_t  *s;

    s = &ctx->spend;

    if (s->limit >= 0) {
        p = ngx_pnalloc(r->pool, 2 * NGX_INT64_LEN + 8);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_http_llm_usd_print(p, s->limit) - p;

        if (ngx_http_llm_add_header(r, "x-llm-budget-limit", &v) != NGX_OK) {
            return NGX_ERROR;
        }

        v.data += v.len;
        v.len = ngx_http_llm_usd_print(v.data, s->remaining) - v.data;

        if (ngx_http_llm_add_header(r, "x-llm-budget-remaining", &v)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    if (a && !a->streaming && a->settled && s->cost >= 0) {
        p = ngx_pnalloc(r->pool, NGX_INT64_LEN + 8);
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_http_llm_usd_print(p, s->cost) - p;

        if (ngx_http_llm_add_header(r, "x-llm-cost", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_llm_limit_headers(r, ctx);
}


/* 402: no target the budgets can pay for */

ngx_int_t
ngx_http_llm_send_budget(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    ngx_uint_t             total;
    ngx_str_t             *period;
    ngx_http_llm_error_t   err;

    ngx_http_llm_error_set(&err, NGX_HTTP_LLM_PAYMENT_REQUIRED,
                           "insufficient_quota", "budget_exceeded", NULL,
                           NULL);

    p = ngx_pnalloc(r->pool, 160 + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    period = &ngx_http_llm_periods[ctx->spend.refused_period];
    total = (ctx->spend.refused_period == NGX_HTTP_LLM_PERIOD_TOTAL);

    err.message.data = p;
    p = ngx_sprintf(p, "This request would exceed your budget of ");
    p = ngx_http_llm_usd_print(p, ctx->spend.limit);
    p = total ? ngx_sprintf(p, " USD; ")
              : ngx_sprintf(p, " USD per %V; ", period);
    p = ngx_http_llm_usd_print(p, ctx->spend.remaining);
    p = total ? ngx_sprintf(p, " USD remain.")
              : ngx_sprintf(p, " USD remain until the %V ends (UTC).",
                            period);

    err.message.len = p - err.message.data;

    return ngx_http_llm_send_error(r, ctx, NULL, &err);
}


/* 503: a zone full of budget keys refused this one (or a limit's) */

ngx_int_t
ngx_http_llm_send_budget_full(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_http_llm_error_t  err;

    ngx_http_llm_error_set(&err, NGX_HTTP_SERVICE_UNAVAILABLE, "server_error",
                           "budget_unavailable", NULL, NULL);
    ngx_str_set(&err.message, "The gateway cannot account for this key: "
                              "its store of budgets and limits is full. "
                              "Please contact the operator.");

    return ngx_http_llm_send_error(r, ctx, NULL, &err);
}


/*
 * The budgets of a zone, for status: calls handler with each budget's
 * state under the zone's lock (see ngx_http_llm_zone_walk()).
 */

typedef struct {
    ngx_http_llm_budget_walk_pt   handler;
    void                         *data;
} ngx_http_llm_budget_walk_t;


ngx_int_t
ngx_http_llm_budget_walk(ngx_http_llm_zone_t *zone,
    ngx_http_llm_budget_walk_pt handler, void *data)
{
    ngx_http_llm_budget_walk_t  w;

    w.handler = handler;
    w.data = data;

    return ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_BUDGET,
                                  ngx_http_llm_budget_walk_node, &w);
}


static ngx_int_t
ngx_http_llm_budget_walk_node(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_budget_walk_t *w = data;

    u_char                       *colon;
    ngx_http_llm_budget_node_t   *node;
    ngx_http_llm_budget_state_t   st;

    node = e->value;
    colon = ngx_strlchr(e->key.data, e->key.data + e->key.len, ':');

    if (e->size != sizeof(ngx_http_llm_budget_node_t) || colon == NULL) {
        return NGX_OK;
    }

    st.unit = node->unit;
    st.key.data = colon + 1;
    st.key.len = e->key.data + e->key.len - st.key.data;
    st.period = node->period;
    st.spent = node->spent;
    st.reserved = node->reserved;
    st.limit = node->limit;

    return w->handler(&st, w->data);
}
