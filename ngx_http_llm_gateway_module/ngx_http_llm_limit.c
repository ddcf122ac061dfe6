
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * Rate limits: llm_limit zone $key rpm=N tpm=N.
 *
 * A key's requests and tokens are counted per second in the zone; a
 * request is let through when the current second and the 60 before it
 * leave room for it, so that no 60 seconds, wherever they start, see more
 * than N.  Tokens are counted when the request starts, from the prompt's
 * estimate and the output it may produce (as OpenAI counts them), and set
 * to the real count when it ends.  Refusals are OpenAI's: 429 with
 * Retry-After and x-ratelimit-* headers, which every answer under a limit
 * carries too.
 */


typedef struct {
    ngx_uint_t                  requests;      /* in the window */
    ngx_uint_t                  tokens;
    uint64_t                    oldest_request;  /* second, 0: none */
    uint64_t                    oldest_token;
} ngx_http_llm_window_t;


static void ngx_http_llm_limit_window(ngx_http_llm_limit_node_t *node,
    uint64_t now, ngx_http_llm_window_t *w);
static time_t ngx_http_llm_limit_wait(uint32_t *slots, uint64_t now,
    ngx_uint_t used, ngx_uint_t need, ngx_uint_t limit);
static void ngx_http_llm_limit_undo(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_uint_t n);
static u_char *ngx_http_llm_limit_duration(u_char *p, ngx_msec_t ms);


/* llm_limit zone $key rpm=N tpm=N */

char *
ngx_http_llm_limit(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_int_t                          n;
    ngx_str_t                         *value, v;
    ngx_uint_t                         i, *field;
    ngx_http_llm_limit_t              *l;
    ngx_http_compile_complex_value_t   ccv;

    value = cf->args->elts;

    if (llcf->limits == NGX_CONF_UNSET_PTR) {
        llcf->limits = ngx_array_create(cf->pool, 2,
                                        sizeof(ngx_http_llm_limit_t));
        if (llcf->limits == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    l = ngx_array_push(llcf->limits);
    if (l == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(l, sizeof(ngx_http_llm_limit_t));

    l->zone = ngx_http_llm_zone_named(cf, &value[1]);
    if (l->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

    ccv.cf = cf;
    ccv.value = &value[2];
    ccv.complex_value = &l->key;

    if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    for (i = 3; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "rpm=", 4) == 0) {
            field = &l->rpm;

        } else if (ngx_strncmp(value[i].data, "tpm=", 4) == 0) {
            field = &l->tpm;

        } else {
            goto invalid;
        }

        v.data = value[i].data + 4;
        v.len = value[i].len - 4;

        n = ngx_atoi(v.data, v.len);
        if (n <= 0 || n > 1000000000) {
            goto invalid;
        }

        *field = n;
    }

    if (l->rpm == 0 && l->tpm == 0) {
        return "needs rpm= or tpm=";
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\": rpm=N or tpm=N, N from 1 "
                       "to 1000000000", &value[i]);

    return NGX_CONF_ERROR;
}


/* the slots of seconds that passed since the newest are emptied */

void
ngx_http_llm_limit_advance(ngx_http_llm_limit_node_t *node, uint64_t now)
{
    uint64_t  s;

    if (now <= node->last) {
        return;
    }

    if (node->last == 0 || now - node->last >= NGX_HTTP_LLM_LIMIT_SLOTS) {
        ngx_memzero(node->requests, sizeof(node->requests));
        ngx_memzero(node->tokens, sizeof(node->tokens));
        ngx_memzero(node->pushed_requests, sizeof(node->pushed_requests));
        ngx_memzero(node->pushed_tokens, sizeof(node->pushed_tokens));

    } else {
        for (s = node->last + 1; s <= now; s++) {
            node->requests[s % NGX_HTTP_LLM_LIMIT_SLOTS] = 0;
            node->tokens[s % NGX_HTTP_LLM_LIMIT_SLOTS] = 0;
            node->pushed_requests[s % NGX_HTTP_LLM_LIMIT_SLOTS] = 0;
            node->pushed_tokens[s % NGX_HTTP_LLM_LIMIT_SLOTS] = 0;
        }
    }

    node->last = now;
}


static void
ngx_http_llm_limit_window(ngx_http_llm_limit_node_t *node, uint64_t now,
    ngx_http_llm_window_t *w)
{
    uint64_t    s;
    ngx_uint_t  i;

    ngx_memzero(w, sizeof(ngx_http_llm_window_t));

    for (s = now - (NGX_HTTP_LLM_LIMIT_WINDOW - 1); s <= now; s++) {
        i = s % NGX_HTTP_LLM_LIMIT_SLOTS;

        if (node->requests[i] && w->oldest_request == 0) {
            w->oldest_request = s;
        }

        if (node->tokens[i] && w->oldest_token == 0) {
            w->oldest_token = s;
        }

        w->requests += node->requests[i];
        w->tokens += node->tokens[i];
    }
}


/* ms until the oldest use counted (a second, 0: none) leaves the window */

static ngx_inline ngx_msec_t
ngx_http_llm_limit_reset(uint64_t oldest, uint64_t now)
{
    return (ngx_msec_t) ((oldest ? oldest : now) + NGX_HTTP_LLM_LIMIT_WINDOW
                         - now) * 1000;
}


/* seconds until enough of the window has passed for need more */

static time_t
ngx_http_llm_limit_wait(uint32_t *slots, uint64_t now, ngx_uint_t used,
    ngx_uint_t need, ngx_uint_t limit)
{
    uint64_t    s;
    ngx_uint_t  gone;

    gone = 0;

    for (s = now - (NGX_HTTP_LLM_LIMIT_WINDOW - 1); s <= now; s++) {
        gone += slots[s % NGX_HTTP_LLM_LIMIT_SLOTS];

        if (used - gone + need <= limit) {
            /* slot s leaves the window at s + 61 */
            return (time_t) (s + NGX_HTTP_LLM_LIMIT_WINDOW - now);
        }
    }

    return NGX_HTTP_LLM_LIMIT_WINDOW;
}


/*
 * The limits of the location, before any attempt: NGX_OK (counted),
 * NGX_DECLINED (refused: ngx_http_llm_send_limited() answers), NGX_BUSY
 * (the zone refused the key, logged), NGX_ERROR.
 */

ngx_int_t
ngx_http_llm_limit_check(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    uint64_t                    now;
    ngx_int_t                   left;
    ngx_uint_t                  i, n, need, slot;
    ngx_msec_t                  reset;
    ngx_http_llm_hold_t        *h;
    ngx_http_llm_spend_t       *s;
    ngx_http_llm_limit_t       *l;
    ngx_http_llm_window_t       w;
    ngx_http_llm_limit_node_t  *node;

    s = &ctx->spend;

    if (s->limits == NULL) {
        return NGX_OK;
    }

    l = ctx->conf->limits->elts;
    n = ctx->conf->limits->nelts;

    need = s->estimate;

    if (s->max_output) {
        need += s->max_output;

    } else if (ctx->endpoint != NGX_HTTP_LLM_EMBEDDINGS) {
        need += ctx->conf->max_tokens;
    }

    now = (uint64_t) ngx_http_llm_budget_time(r);
    slot = now % NGX_HTTP_LLM_LIMIT_SLOTS;

    for (i = 0; i < n; i++) {
        h = &s->limits[i];

        if (h->key.len == 0) {
            /* an empty key is not limited */
            continue;
        }

        ngx_http_llm_zone_lock(l[i].zone);

        node = ngx_http_llm_zone_get(l[i].zone, NGX_HTTP_LLM_KIND_LIMIT,
                                     &h->key,
                                     sizeof(ngx_http_llm_limit_node_t));
        if (node == NULL) {
            ngx_http_llm_zone_unlock(l[i].zone);

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "llm: llm_zone \"%V\" is full (or the key is "
                          "longer than %d bytes): limit key \"%V\" refused",
                          &l[i].zone->name, NGX_HTTP_LLM_ZONE_KEY_MAX,
                          ngx_http_llm_escape(r->pool, &h->key, 1));

            ngx_http_llm_limit_undo(r, ctx, i);
            return NGX_BUSY;
        }

        ngx_http_llm_limit_advance(node, now);
        ngx_http_llm_limit_window(node, now, &w);

        /* shared through Redis: the other nodes' use, as last synced */

        if (l[i].zone->synced) {
            w.requests += node->others_requests;
            w.tokens += node->others_tokens;
        }

        if (l[i].rpm && w.requests + 1 > l[i].rpm) {
            s->retry = ngx_http_llm_limit_wait(node->requests, now,
                                               w.requests, 1, l[i].rpm);
            s->limited = NGX_HTTP_LLM_LIMITED_REQUESTS;
            s->limited_limit = l[i].rpm;
            s->limited_used = w.requests;
            s->limited_need = 1;
            goto refused;
        }

        if (l[i].tpm && w.tokens + need > l[i].tpm) {
            s->retry = (need > l[i].tpm)
                       ? 0
                       : ngx_http_llm_limit_wait(node->tokens, now,
                                                 w.tokens, need, l[i].tpm);
            s->limited = NGX_HTTP_LLM_LIMITED_TOKENS;
            s->limited_limit = l[i].tpm;
            s->limited_used = w.tokens;
            s->limited_need = need;
            goto refused;
        }

        node->requests[slot]++;
        node->tokens[slot] = (uint32_t) ngx_min((uint64_t) node->tokens[slot]
                                                + need, 0xffffffff);

        ngx_http_llm_zone_expires(node, ngx_http_llm_now()
                                        + NGX_HTTP_LLM_LIMIT_WINDOW * 1000);

        h->held = need;
        h->second = now;

        /* the headers: the limit with the least room left */

        if (l[i].rpm) {
            left = l[i].rpm - w.requests - 1;
            reset = ngx_http_llm_limit_reset(w.oldest_request, now);

            if (s->rl_requests < 0 || left < s->rl_requests_left) {
                s->rl_requests = l[i].rpm;
                s->rl_requests_left = left;
                s->rl_requests_reset = reset;
            }
        }

        if (l[i].tpm) {
            left = l[i].tpm - w.tokens - need;
            reset = ngx_http_llm_limit_reset(w.oldest_token, now);

            if (s->rl_tokens < 0 || left < s->rl_tokens_left) {
                s->rl_tokens = l[i].tpm;
                s->rl_tokens_left = left;
                s->rl_tokens_reset = reset;
            }
        }

        ngx_http_llm_zone_unlock(l[i].zone);
    }

    return NGX_OK;

refused:

    /* the refused limit's own numbers go into the headers */

    if (l[i].rpm) {
        s->rl_requests = l[i].rpm;
        s->rl_requests_left = ngx_max((ngx_int_t) l[i].rpm
                                      - (ngx_int_t) w.requests, 0);
        s->rl_requests_reset = ngx_http_llm_limit_reset(w.oldest_request,
                                                        now);
    }

    if (l[i].tpm) {
        s->rl_tokens = l[i].tpm;
        s->rl_tokens_left = ngx_max((ngx_int_t) l[i].tpm
                                    - (ngx_int_t) w.tokens, 0);
        s->rl_tokens_reset = ngx_http_llm_limit_reset(w.oldest_token, now);
    }

    ngx_http_llm_zone_unlock(l[i].zone);

    ngx_log_error(NGX_LOG_INFO, r->connection->log, 0,
                  "llm: limit \"%V\" reached: %ui %s per minute",
                  ngx_http_llm_escape(r->pool, &s->limits[i].key, 1),
                  s->limited_limit,
                  s->limited == NGX_HTTP_LLM_LIMITED_REQUESTS
                  ? "requests" : "tokens");

    ngx_http_llm_limit_undo(r, ctx, i);

    return NGX_DECLINED;
}


/* the first n limits forget this request */

static void
ngx_http_llm_limit_undo(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_uint_t n)
{
    ngx_uint_t                  i, slot;
    ngx_http_llm_hold_t        *h;
    ngx_http_llm_limit_t       *l;
    ngx_http_llm_limit_node_t  *node;

    l = ctx->conf->limits->elts;

    for (i = 0; i < n; i++) {
        h = &ctx->spend.limits[i];

        if (h->second == 0) {
            continue;
        }

        ngx_http_llm_zone_lock(l[i].zone);

        node = ngx_http_llm_zone_get(l[i].zone, NGX_HTTP_LLM_KIND_LIMIT,
                                     &h->key, 0);

        if (node && h->second + NGX_HTTP_LLM_LIMIT_SLOTS > node->last) {
            slot = h->second % NGX_HTTP_LLM_LIMIT_SLOTS;

            if (node->requests[slot]) {
                node->requests[slot]--;
            }

            node->tokens[slot] -= ngx_min(node->tokens[slot],
                                          (uint32_t) h->held);
        }

        ngx_http_llm_zone_unlock(l[i].zone);

        h->held = 0;
    }
}


/* the request is over: its tokens are what the providers counted */

void
ngx_http_llm_limit_settle(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    int64_t                     t;
    ngx_uint_t                  i, n, slot;
    ngx_http_llm_hold_t        *h;
    ngx_http_llm_limit_t       *l;
    ngx_http_llm_limit_node_t  *node;

    l = ctx->conf->limits->elts;
    n = ctx->conf->limits->nelts;

    for (i = 0; i < n; i++) {
        h = &ctx->spend.limits[i];

        if (h->second == 0 || !l[i].tpm) {
            continue;
        }

        ngx_http_llm_zone_lock(l[i].zone);

        node = ngx_http_llm_zone_get(l[i].zone, NGX_HTTP_LLM_KIND_LIMIT,
                                     &h->key, 0);

        /* unless the slot has been reused for a later second */

        if (node && h->second + NGX_HTTP_LLM_LIMIT_SLOTS > node->last) {
            slot = h->second % NGX_HTTP_LLM_LIMIT_SLOTS;

            t = (int64_t) node->tokens[slot] - h->held + ctx->spend.tokens;
            node->tokens[slot] = (uint32_t) ngx_min(ngx_max(t, 0),
                                                    0xffffffff);
        }

        ngx_http_llm_zone_unlock(l[i].zone);

        h->held = ctx->spend.tokens;
    }
}


static u_char *
ngx_http_llm_limit_duration(u_char *p, ngx_msec_t ms)
{
    time_t  s;

    if (ms < 1000) {
        return ngx_sprintf(p, "%Mms", ms);
    }

    s = (time_t) ((ms + 999) / 1000);

    if (s < 60) {
        return ngx_sprintf(p, "%Ts", s);
    }

    return ngx_sprintf(p, "%Tm%Ts", s / 60, s % 60);
}


/* OpenAI's x-ratelimit-* of the tightest limits */

ngx_int_t
ngx_http_llm_limit_headers(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    ngx_int_t              left;
    ngx_str_t              v;
    ngx_uint_t             i;
    ngx_http_llm_spend_t  *s;

    static char  *names[] = {
        "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests", "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"
    };

    s = &ctx->spend;

    for (i = 0; i < 2; i++) {
        if ((i == 0 ? s->rl_requests : s->rl_tokens) < 0) {
            continue;
        }

        p = ngx_pnalloc(r->pool, 3 * (NGX_INT_T_LEN + 8));
        if (p == NULL) {
            return NGX_ERROR;
        }

        v.data = p;
        v.len = ngx_sprintf(p, "%i", i == 0 ? s->rl_requests : s->rl_tokens)
                - p;

        if (ngx_http_llm_add_header(r, names[3 * i], &v) != NGX_OK) {
            return NGX_ERROR;
        }

        v.data += v.len;
        left = (i == 0) ? s->rl_requests_left : s->rl_tokens_left;
        v.len = ngx_sprintf(v.data, "%i", ngx_max(left, 0)) - v.data;

        if (ngx_http_llm_add_header(r, names[3 * i + 1], &v) != NGX_OK) {
            return NGX_ERROR;
        }

        v.data += v.len;
        v.len = ngx_http_llm_limit_duration(v.data,
                                            i == 0 ? s->rl_requests_reset
                                                   : s->rl_tokens_reset)
                - v.data;

        if (ngx_http_llm_add_header(r, names[3 * i + 2], &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return NGX_OK;
}


/* 429, as OpenAI words it */

ngx_int_t
ngx_http_llm_send_limited(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                *p;
    char                  *what, *unit;
    ngx_str_t              v;
    ngx_http_llm_spend_t  *s;
    ngx_http_llm_error_t   err;

    s = &ctx->spend;

    if (s->limited == NGX_HTTP_LLM_LIMITED_REQUESTS) {
        what = "requests";
        unit = "RPM";

    } else {
        what = "tokens";
        unit = "TPM";
    }

    p = ngx_pnalloc(r->pool, 256 + 4 * NGX_INT_T_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_error_set(&err, NGX_HTTP_TOO_MANY_REQUESTS, what,
                           "rate_limit_exceeded", NULL, NULL);

    err.message.data = p;

    if (s->retry == 0) {
        p = ngx_sprintf(p, "Request too large for %s per min (%s): Limit "
                        "%ui, Requested %ui. The input or output tokens "
                        "must be reduced in order to run successfully.",
                        what, unit, s->limited_limit, s->limited_need);

    } else {
        p = ngx_sprintf(p, "Rate limit reached for %s per min (%s): Limit "
                        "%ui, Used %ui, Requested %ui. Please try again in "
                        "%Ts.", what, unit, s->limited_limit,
                        s->limited_used, s->limited_need, s->retry);
    }

    err.message.len = p - err.message.data;

    if (s->retry) {
        v.data = p;
        v.len = ngx_sprintf(p, "%T", s->retry) - p;

        if (ngx_http_llm_add_header(r, "Retry-After", &v) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    return ngx_http_llm_send_error(r, ctx, NULL, &err);
}
