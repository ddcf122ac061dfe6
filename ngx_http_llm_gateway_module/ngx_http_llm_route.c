
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include <ngx_md5.h>
#include "ngx_http_llm_module.h"


/*
 * Target selection across the targets of a route, the way nginx picks
 * upstream servers: smooth weighted round-robin over the primary targets,
 * passive health (max_fails within fail_timeout), and backups only when
 * no primary is left.  Unlike upstream servers, a target that asked for a
 * pause (429/503 with Retry-After) is cooling down and skipped until then.
 * The state lives in the zone named by llm_route_zone (or the only
 * llm_zone), so all workers share it; without llm_zone, in a private one.
 */


typedef struct {
    uint64_t                    cool_until;    /* ms, wall clock */
    uint64_t                    checked;       /* ms of the last failure */
    ngx_uint_t                  fails;
} ngx_http_llm_health_t;


#define NGX_HTTP_LLM_TARGET_OK       0
#define NGX_HTTP_LLM_TARGET_DOWN     1
#define NGX_HTTP_LLM_TARGET_COOLING  2


static ngx_int_t ngx_http_llm_route_key(ngx_conf_t *cf,
    ngx_http_llm_route_t *route);


char *
ngx_http_llm_route_init_main_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t                i, j, k;
    ngx_array_t             **lists;
    ngx_http_llm_zone_t     **zones;
    ngx_http_llm_route_t     *route, **rp;
    ngx_http_llm_target_t    *t;

    lists = lmcf->route_lists.elts;

    for (i = 0; i < lmcf->route_lists.nelts; i++) {
        route = lists[i]->elts;

        for (j = 0; j < lists[i]->nelts; j++) {
            rp = ngx_array_push(&lmcf->routes);
            if (rp == NULL) {
                return NGX_CONF_ERROR;
            }

            *rp = &route[j];

            if (ngx_http_llm_route_key(cf, &route[j]) != NGX_OK) {
                return NGX_CONF_ERROR;
            }

            t = route[j].targets.elts;

            for (k = 0; k < route[j].targets.nelts; k++) {
                if (t[k].fail_timeout > lmcf->fail_timeout) {
                    lmcf->fail_timeout = t[k].fail_timeout;
                }
            }
        }
    }

    zones = lmcf->zones.elts;

    if (lmcf->route_zone_name.data) {

        for (i = 0; i < lmcf->zones.nelts; i++) {
            if (zones[i]->name.len == lmcf->route_zone_name.len
                && ngx_strncmp(zones[i]->name.data,
                               lmcf->route_zone_name.data,
                               lmcf->route_zone_name.len)
                   == 0)
            {
                lmcf->route_zone = zones[i];
                return NGX_CONF_OK;
            }
        }

        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_route_zone \"%V\": no such llm_zone",
                           &lmcf->route_zone_name);
        return NGX_CONF_ERROR;
    }

    if (lmcf->zones.nelts == 1) {
        lmcf->route_zone = zones[0];
        return NGX_CONF_OK;
    }

    /* several zones: which one should hold the routing state is the
     * operator's choice, not an accident of order */

    if (lmcf->zones.nelts > 1 && lmcf->routes.nelts) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "several llm_zone are defined: llm_route_zone "
                           "must name the one for routing state");
        return NGX_CONF_ERROR;
    }

    /* no llm_zone: each worker makes a private one at its start */

    return NGX_CONF_OK;
}


/*
 * The round-robin position of a route is kept under the whole llm_route
 * line; a line longer than a zone key is kept under its MD5.
 */

static ngx_int_t
ngx_http_llm_route_key(ngx_conf_t *cf, ngx_http_llm_route_t *route)
{
    u_char     *p, digest[16];
    ngx_md5_t   md5;

    if (route->key.len <= NGX_HTTP_LLM_ZONE_KEY_MAX) {
        return NGX_OK;
    }

    ngx_md5_init(&md5);
    ngx_md5_update(&md5, route->key.data, route->key.len);
    ngx_md5_final(digest, &md5);

    p = ngx_pnalloc(cf->pool, sizeof("md5:") - 1 + 32);
    if (p == NULL) {
        return NGX_ERROR;
    }

    route->key.data = p;
    p = ngx_cpymem(p, "md5:", sizeof("md5:") - 1);
    p = ngx_hex_dump(p, digest, 16);
    route->key.len = p - route->key.data;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_route_prepare(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                 *p;
    ngx_str_t              *model;
    ngx_uint_t              i, n;
    ngx_http_llm_target_t  *t;

    n = ctx->route->targets.nelts;
    t = ctx->route->targets.elts;

    ctx->keys = ngx_palloc(r->pool, n * sizeof(ngx_str_t));
    if (ctx->keys == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        model = t[i].model.len ? &t[i].model : &ctx->model;

        p = ngx_pnalloc(r->pool, t[i].provider->name.len + 1 + model->len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        ctx->keys[i].data = p;
        p = ngx_cpymem(p, t[i].provider->name.data, t[i].provider->name.len);
        *p++ = ':';
        p = ngx_cpymem(p, model->data, model->len);
        ctx->keys[i].len = p - ctx->keys[i].data;
    }

    return NGX_OK;
}


/*
 * NGX_OK: *target is the next to try; NGX_DECLINED: none is left;
 * NGX_BUSY: those left are all cooling down, ctx->wait says how long.
 */

ngx_int_t
ngx_http_llm_route_pick(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_target_t **target)
{
    uint64_t                   now, wait;
    ngx_int_t                 *cw, total;
    ngx_uint_t                 i, n, best, down, cooling;
    u_char                     state[NGX_HTTP_LLM_MAX_TARGETS];
    ngx_http_llm_zone_t       *zone;
    ngx_http_llm_target_t     *t;
    ngx_http_llm_health_t     *h;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
    zone = lmcf->route_zone;

    n = ctx->route->targets.nelts;
    t = ctx->route->targets.elts;

    now = ngx_http_llm_now();
    wait = 0;
    best = n;
    down = n;
    cooling = 0;

    ngx_http_llm_zone_lock(zone);

    for (i = 0; i < n; i++) {
        state[i] = NGX_HTTP_LLM_TARGET_OK;

        if (ctx->tried & ((uint64_t) 1 << i)) {
            continue;
        }

        h = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_HEALTH,
                                  &ctx->keys[i], 0);
        if (h == NULL) {
            continue;
        }

        if (h->cool_until > now) {
            state[i] = NGX_HTTP_LLM_TARGET_COOLING;

            if (cooling++ == 0 || h->cool_until - now < wait) {
                wait = h->cool_until - now;
            }

            continue;
        }

        if (t[i].max_fails && h->fails >= t[i].max_fails
            && now - h->checked < (uint64_t) t[i].fail_timeout * 1000)
        {
            state[i] = NGX_HTTP_LLM_TARGET_DOWN;
        }
    }

    /* smooth weighted round-robin over the live primaries */

    total = 0;

    for (i = 0; i < n; i++) {
        if (!(ctx->tried & ((uint64_t) 1 << i)) && !t[i].backup
            && state[i] == NGX_HTTP_LLM_TARGET_OK)
        {
            total += t[i].weight;
            best = (best == n) ? i : best;
        }
    }

    if (total && best < n) {
        cw = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_WRR,
                                   &ctx->route->key, n * sizeof(ngx_int_t));

        if (cw) {
            best = n;

            for (i = 0; i < n; i++) {
                if ((ctx->tried & ((uint64_t) 1 << i)) || t[i].backup
                    || state[i] != NGX_HTTP_LLM_TARGET_OK)
                {
                    continue;
                }

                cw[i] += t[i].weight;

                if (best == n || cw[i] > cw[best]) {
                    best = i;
                }
            }

            cw[best] -= total;
        }
    }

    /* then the backups, in their order */

    for (i = 0; best == n && i < n; i++) {
        if (!(ctx->tried & ((uint64_t) 1 << i)) && t[i].backup
            && state[i] == NGX_HTTP_LLM_TARGET_OK)
        {
            best = i;
        }
    }

    /* all left are failing: try one anyway, as nginx does with a single
     * server, rather than refuse the request */

    for (i = 0; best == n && down == n && i < n; i++) {
        if (!(ctx->tried & ((uint64_t) 1 << i))
            && state[i] == NGX_HTTP_LLM_TARGET_DOWN)
        {
            down = i;
        }
    }

    ngx_http_llm_zone_unlock(zone);

    if (best == n) {
        best = down;
    }

    if (best == n) {
        ctx->wait = wait;
        return cooling ? NGX_BUSY : NGX_DECLINED;
    }

    ctx->tried |= (uint64_t) 1 << best;
    *target = &t[best];

    return NGX_OK;
}


void
ngx_http_llm_route_result(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a, ngx_uint_t failed)
{
    uint64_t                   now, pause, expire;
    ngx_uint_t                 i;
    ngx_str_t                 *key;
    ngx_http_llm_zone_t       *zone;
    ngx_http_llm_target_t     *t;
    ngx_http_llm_health_t     *h;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);
    zone = lmcf->route_zone;

    t = a->target;
    i = t - (ngx_http_llm_target_t *) ctx->route->targets.elts;
    key = &ctx->keys[i];

    pause = 0;

    if (a->sr) {
        /* what the provider's answer asks for: its driver reads it */
        pause = ngx_http_llm_driver_pause(&a->call, a->status,
                                          &a->sr->headers_out.headers);

        if (pause > ctx->conf->retry_after_max) {
            pause = ctx->conf->retry_after_max;
        }
    }

    now = ngx_http_llm_now();

    ngx_http_llm_zone_lock(zone);

    h = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_HEALTH, key,
                              (failed || pause)
                              ? sizeof(ngx_http_llm_health_t) : 0);

    if (h) {
        if (pause) {
            if (now + pause > h->cool_until) {
                h->cool_until = now + pause;
            }

        } else if (failed) {
            if (now - h->checked >= (uint64_t) t->fail_timeout * 1000) {
                h->fails = 0;
            }

            h->fails++;
            h->checked = now;

        } else {
            h->fails = 0;
        }

        /* past both the cool-down and the longest fail_timeout of any
         * target the entry says no more than a missing one: it expires */

        expire = h->checked + (uint64_t) lmcf->fail_timeout * 1000;

        ngx_http_llm_zone_expires(h, ngx_max(expire, h->cool_until));
        ngx_http_llm_zone_touch(zone, h);
    }

    ngx_http_llm_zone_unlock(zone);

    if (pause) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm: provider \"%V\" model \"%V\" asked for a pause, "
                      "cooling down for %uLms", &t->provider->name,
                      ngx_http_llm_escape(r->pool, &a->call.model, 1), pause);
    }
}
