
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * Counters and llm_status.
 *
 * With an llm_status location, every gateway request is counted once, in
 * the finish point, under its series: (route, provider, model).  A
 * series is a pinned entry (kind STATS) of the routing zone, found once
 * per worker under the zone's lock and remembered by the worker, then
 * counted with atomic adds: no lock on the request path after the first
 * request of a series.  Past
 * llm_status_max_series series, new ones are counted in the series
 * ("other", "other", "other").
 *
 * llm_status serves the counters and the state of budgets, limits, the
 * cache, provider health, the zones and Redis, as JSON, Prometheus text
 * or one HTML page.
 */


#define NGX_HTTP_LLM_STATUS_BUCKETS  12
#define NGX_HTTP_LLM_STATUS_CACHED   256       /* series a worker keeps */


typedef struct {
    ngx_atomic_t                requests[6];   /* by status class: none,
                                                  1xx .. 5xx */
    ngx_atomic_t                attempts;
    ngx_atomic_t                fallbacks;
    ngx_atomic_t                prompt;
    ngx_atomic_t                completion;
    ngx_atomic_t                cached;
    ngx_atomic_t                cost;          /* nano-USD */
    ngx_atomic_t                duration[NGX_HTTP_LLM_STATUS_BUCKETS];
    ngx_atomic_t                duration_sum;  /* ms */
    ngx_atomic_t                ttft[NGX_HTTP_LLM_STATUS_BUCKETS];
    ngx_atomic_t                ttft_sum;
    ngx_atomic_t                ttft_count;
} ngx_http_llm_series_t;


typedef struct {
    ngx_atomic_t                series;        /* how many exist */
} ngx_http_llm_series_count_t;


typedef struct {
    ngx_str_t                   key;
    ngx_http_llm_series_t      *series;
} ngx_http_llm_series_cache_t;


/* upper bounds of the histograms, ms; the last is +Inf */
static ngx_msec_t  ngx_http_llm_buckets[NGX_HTTP_LLM_STATUS_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 0
};


static ngx_http_llm_series_cache_t  ngx_http_llm_series_cache[
                                        NGX_HTTP_LLM_STATUS_CACHED];


static ngx_http_llm_series_t *ngx_http_llm_series(ngx_http_request_t *r,
    ngx_http_llm_main_conf_t *lmcf, ngx_str_t *route, ngx_str_t *provider,
    ngx_str_t *model);
static ngx_uint_t ngx_http_llm_bucket(ngx_msec_t ms);
static ngx_int_t ngx_http_llm_status_handler(ngx_http_request_t *r);


/* llm_status: the content handler of a location */

char *
ngx_http_llm_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_core_loc_conf_t  *clcf;
    ngx_http_llm_main_conf_t  *lmcf;

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_llm_status_handler;

    /* requests are counted where someone can read the counters */

    lmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_llm_gateway_module);
    lmcf->status = 1;

    return NGX_CONF_OK;
}


/* the finish point: the request in its series */

void
ngx_http_llm_status_count(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_str_t                  route, provider, model, none;
    ngx_uint_t                 cls;
    ngx_msec_t                 ms;
    ngx_http_llm_series_t     *s;
    ngx_http_llm_attempt_t    *a;
    ngx_http_llm_main_conf_t  *lmcf;

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    if (!lmcf->status || lmcf->route_zone == NULL || ctx->route == NULL) {
        return;
    }

    ngx_str_set(&none, "-");

    a = ctx->answer ? ctx->answer : ctx->cur;

    if (a && a->embed) {
        a = NULL;
    }

    route = ctx->route->name;
    provider = a ? a->target->provider->name
                 : (ctx->cache.provider.len ? ctx->cache.provider : none);
    model = a ? a->call.model
              : (ctx->cache.model.len ? ctx->cache.model : none);

    s = ngx_http_llm_series(r, lmcf, &route, &provider, &model);
    if (s == NULL) {
        return;
    }

    cls = r->headers_out.status / 100;
    cls = (cls >= 1 && cls <= 5) ? cls : 0;

    ngx_atomic_fetch_add(&s->requests[cls], 1);
    ngx_atomic_fetch_add(&s->attempts, ctx->nattempts);

    if (ctx->nattempts > 1) {
        ngx_atomic_fetch_add(&s->fallbacks, ctx->nattempts - 1);
    }

    if (a) {
        ngx_atomic_fetch_add(&s->prompt, ngx_max(a->call.usage.prompt, 0));
        ngx_atomic_fetch_add(&s->completion,
                             ngx_max(a->call.usage.completion, 0));
        ngx_atomic_fetch_add(&s->cached, ngx_max(a->call.usage.cached, 0));
    }

    if (ctx->spend.cost > 0) {
        ngx_atomic_fetch_add(&s->cost, ctx->spend.cost);
    }

    ms = ngx_current_msec - ctx->start;

    ngx_atomic_fetch_add(&s->duration[ngx_http_llm_bucket(ms)], 1);
    ngx_atomic_fetch_add(&s->duration_sum, ms);

    if (ctx->ttft != (ngx_msec_t) -1) {
        ngx_atomic_fetch_add(&s->ttft[ngx_http_llm_bucket(ctx->ttft)], 1);
        ngx_atomic_fetch_add(&s->ttft_sum, ctx->ttft);
        ngx_atomic_fetch_add(&s->ttft_count, 1);
    }
}


static ngx_uint_t
ngx_http_llm_bucket(ngx_msec_t ms)
{
    ngx_uint_t  i;

    for (i = 0; i < NGX_HTTP_LLM_STATUS_BUCKETS - 1; i++) {
        if (ms <= ngx_http_llm_buckets[i]) {
            return i;
        }
    }

    return NGX_HTTP_LLM_STATUS_BUCKETS - 1;
}


/*
 * The series of (route, provider, model): from the worker's memory, or
 * from the zone (made there if new, under the cap).
 */

static ngx_http_llm_series_t *
ngx_http_llm_series(ngx_http_request_t *r, ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *route, ngx_str_t *provider, ngx_str_t *model)
{
    u_char                       *p;
    uint32_t                      hash;
    ngx_str_t                     key, count, other;
    ngx_http_llm_zone_t          *zone;
    ngx_http_llm_series_t        *s;
    ngx_http_llm_series_cache_t  *sc;
    ngx_http_llm_series_count_t  *n;

    key.len = 2 + route->len + 1 + provider->len + 1 + model->len;

    if (key.len > 512) {
        route = provider = model = NULL;
    }

    p = ngx_pnalloc(r->pool, 2 + 512 + 2);
    if (p == NULL) {
        return NULL;
    }

    key.data = p;

    if (route) {
        p = ngx_sprintf(p, "m:%V\n%V\n%V", route, provider, model);

    } else {
        p = ngx_sprintf(p, "m:other\nother\nother");
    }

    key.len = p - key.data;

    hash = ngx_crc32_short(key.data, key.len);
    sc = &ngx_http_llm_series_cache[hash % NGX_HTTP_LLM_STATUS_CACHED];

    if (sc->series && sc->key.len == key.len
        && ngx_strncmp(sc->key.data, key.data, key.len) == 0)
    {
        return sc->series;
    }

    zone = lmcf->route_zone;
    ngx_str_set(&count, "m-count");
    ngx_str_set(&other, "m:other\nother\nother");

    ngx_http_llm_zone_lock(zone);

    s = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &key, 0);

    if (s == NULL) {
        n = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &count,
                                  sizeof(ngx_http_llm_series_count_t));

        if (n == NULL || n->series >= lmcf->status_max_series) {
            s = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &other,
                                      sizeof(ngx_http_llm_series_t));

        } else {
            s = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &key,
                                      sizeof(ngx_http_llm_series_t));
            if (s) {
                n->series++;
            }
        }
    }

    ngx_http_llm_zone_unlock(zone);

    if (s == NULL) {
        return NULL;
    }

    /* pinned: the pointer stays good for the worker's life */

    p = ngx_alloc(key.len, ngx_cycle->log);
    if (p) {
        ngx_free(sc->key.data);
        ngx_memcpy(p, key.data, key.len);
        sc->key.data = p;
        sc->key.len = key.len;
        sc->series = s;
    }

    return s;
}


/* ---- llm_status ------------------------------------------------------ */

/* what a walk of a zone's kinds gathers, for both formats */
typedef struct {
    ngx_pool_t                 *pool;
    ngx_str_t                  *zone;
    json_t                     *array;
    uint64_t                    now;           /* s, the budgets' clock */
} ngx_http_llm_status_walk_t;


static ngx_int_t
ngx_http_llm_status_series(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_status_walk_t *w = data;

    u_char                 *nl1, *nl2, *last;
    json_t                 *o, *req, *hd, *ht, *b1, *b2;
    ngx_uint_t              i;
    ngx_http_llm_series_t  *s;

    static char  *classes[] = { "none", "1xx", "2xx", "3xx", "4xx", "5xx" };

    if (e->size != sizeof(ngx_http_llm_series_t) || e->key.len < 2
        || e->key.data[0] != 'm' || e->key.data[1] != ':')
    {
        return NGX_OK;
    }

    s = e->value;
    last = e->key.data + e->key.len;

    nl1 = ngx_strlchr(e->key.data + 2, last, '\n');
    nl2 = nl1 ? ngx_strlchr(nl1 + 1, last, '\n') : NULL;

    if (nl2 == NULL) {
        return NGX_OK;
    }

    req = json_object();
    b1 = json_array();
    b2 = json_array();

    for (i = 0; i < 6; i++) {
        json_object_set_new(req, classes[i], json_integer(s->requests[i]));
    }

    for (i = 0; i < NGX_HTTP_LLM_STATUS_BUCKETS; i++) {
        json_array_append_new(b1, json_integer(s->duration[i]));
        json_array_append_new(b2, json_integer(s->ttft[i]));
    }

    hd = json_pack("{s:I,s:o}", "sum_ms", (json_int_t) s->duration_sum,
                   "buckets", b1);
    ht = json_pack("{s:I,s:I,s:o}", "count", (json_int_t) s->ttft_count,
                   "sum_ms", (json_int_t) s->ttft_sum, "buckets", b2);

    o = json_pack("{s:s%,s:s%,s:s%,s:o,s:I,s:I,s:{s:I,s:I,s:I},s:f,s:o,"
                  "s:o}",
                  "route", e->key.data + 2, (size_t) (nl1 - e->key.data - 2),
                  "provider", nl1 + 1, (size_t) (nl2 - nl1 - 1),
                  "model", nl2 + 1, (size_t) (last - nl2 - 1),
                  "requests", req,
                  "attempts", (json_int_t) s->attempts,
                  "fallbacks", (json_int_t) s->fallbacks,
                  "tokens", "prompt", (json_int_t) s->prompt,
                  "completion", (json_int_t) s->completion,
                  "cached", (json_int_t) s->cached,
                  "cost_usd", (double) s->cost / NGX_HTTP_LLM_NANO_USD,
                  "duration", hd, "ttft", ht);

    if (o) {
        json_array_append_new(w->array, o);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_status_health(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_status_walk_t *w = data;

    uint64_t   *v, now;
    json_t     *o;

    /* ngx_http_llm_health_t: cool until (ms), last failure (ms), fails */

    if (e->size != 2 * sizeof(uint64_t) + sizeof(ngx_uint_t)) {
        return NGX_OK;
    }

    v = e->value;
    now = ngx_http_llm_now();

    o = json_pack("{s:s%,s:I,s:I}", "target", e->key.data, e->key.len,
                  "failures", (json_int_t) *(ngx_uint_t *) (v + 2),
                  "cooling_ms", (json_int_t) (v[0] > now ? v[0] - now : 0));

    if (o) {
        json_array_append_new(w->array, o);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_status_budget(ngx_http_llm_budget_state_t *b, void *data)
{
    ngx_http_llm_status_walk_t *w = data;

    json_t  *o;

    o = json_pack("{s:s%,s:s%,s:s%,s:i,s:f,s:f,s:f}",
                  "zone", w->zone->data, w->zone->len,
                  "key", b->key.data, b->key.len,
                  "period", ngx_http_llm_periods[b->unit].data,
                  ngx_http_llm_periods[b->unit].len,
                  "period_index", (int) b->period,
                  "spent_usd", (double) b->spent / NGX_HTTP_LLM_NANO_USD,
                  "reserved_usd", (double) b->reserved / NGX_HTTP_LLM_NANO_USD,
                  "limit_usd", (double) b->limit / NGX_HTTP_LLM_NANO_USD);

    if (o) {
        json_array_append_new(w->array, o);
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_status_limit(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_status_walk_t *w = data;

    json_t                     *o;
    uint64_t                    s, r, t;
    ngx_http_llm_limit_node_t  *node;

    if (e->size != sizeof(ngx_http_llm_limit_node_t)) {
        return NGX_OK;
    }

    node = e->value;
    r = node->others_requests;
    t = node->others_tokens;

    for (s = w->now - (NGX_HTTP_LLM_LIMIT_WINDOW - 1); s <= w->now; s++) {
        if (s + NGX_HTTP_LLM_LIMIT_SLOTS > node->last && s <= node->last) {
            r += node->requests[s % NGX_HTTP_LLM_LIMIT_SLOTS];
            t += node->tokens[s % NGX_HTTP_LLM_LIMIT_SLOTS];
        }
    }

    o = json_pack("{s:s%,s:s%,s:I,s:I}",
                  "zone", w->zone->data, w->zone->len,
                  "key", e->key.data, e->key.len,
                  "requests", (json_int_t) r, "tokens", (json_int_t) t);

    if (o) {
        json_array_append_new(w->array, o);
    }

    return NGX_OK;
}


/* everything, as a JSON tree */

static json_t *
ngx_http_llm_status_tree(ngx_http_request_t *r,
    ngx_http_llm_main_conf_t *lmcf)
{
    json_t                      *root, *series, *health, *budgets, *limits,
                                *zones, *z;
    ngx_uint_t                   i;
    ngx_http_llm_zone_t        **zp;
    ngx_http_llm_status_walk_t   w;
    ngx_http_llm_cache_stats_t   cs;

    root = json_object();
    series = json_array();
    health = json_array();
    budgets = json_array();
    limits = json_array();
    zones = json_array();

    if (root == NULL || series == NULL || health == NULL || budgets == NULL
        || limits == NULL || zones == NULL)
    {
        goto failed;
    }

    json_object_set_new(root, "version", json_integer(1));
    json_object_set_new(root, "time", json_integer(ngx_time()));
    json_object_set_new(root, "series", series);
    json_object_set_new(root, "targets", health);
    json_object_set_new(root, "budgets", budgets);
    json_object_set_new(root, "limits", limits);
    json_object_set_new(root, "zones", zones);

    w.pool = r->pool;
    w.now = (uint64_t) ngx_http_llm_budget_time(r);

    if (lmcf->route_zone) {
        w.zone = &lmcf->route_zone->name;
        w.array = series;
        ngx_http_llm_zone_walk(lmcf->route_zone, NGX_HTTP_LLM_KIND_STATS,
                               ngx_http_llm_status_series, &w);

        w.array = health;
        ngx_http_llm_zone_walk(lmcf->route_zone, NGX_HTTP_LLM_KIND_HEALTH,
                               ngx_http_llm_status_health, &w);
    }

    zp = lmcf->zones.elts;

    for (i = 0; i < lmcf->zones.nelts; i++) {
        w.zone = &zp[i]->name;

        w.array = budgets;
        ngx_http_llm_budget_walk(zp[i], ngx_http_llm_status_budget, &w);

        w.array = limits;
        ngx_http_llm_zone_walk(zp[i], NGX_HTTP_LLM_KIND_LIMIT,
                               ngx_http_llm_status_limit, &w);

        ngx_http_llm_cache_stats(zp[i], &cs);

        z = json_pack("{s:s%,s:I,s:I,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}}",
                      "name", zp[i]->name.data, zp[i]->name.len,
                      "size", (json_int_t) zp[i]->size,
                      "free", (json_int_t) (zp[i]->shpool->pfree
                                            * ngx_pagesize),
                      "cache",
                      "entries", (json_int_t) cs.entries,
                      "bytes", (json_int_t) cs.bytes,
                      "evictions", (json_int_t) cs.evictions,
                      "hits", (json_int_t) cs.hits,
                      "semantic_hits", (json_int_t) cs.semantic_hits,
                      "misses", (json_int_t) cs.misses,
                      "bypasses", (json_int_t) cs.bypasses,
                      "stores", (json_int_t) cs.stores);

        if (z && zp[i]->synced) {
            json_object_set_new(z, "redis",
                                json_pack("{s:b,s:I}", "up",
                                          (int) zp[i]->sh->redis_up,
                                          "last_sync",
                                          (json_int_t)
                                              zp[i]->sh->redis_synced));
        }

        if (z) {
            json_array_append_new(zones, z);
        }
    }

    return root;

failed:

    json_decref(root);
    json_decref(series);
    json_decref(health);
    json_decref(budgets);
    json_decref(limits);
    json_decref(zones);

    return NULL;
}


/* ---- output ------------------------------------------------------------ */

typedef struct {
    u_char                     *start;
    u_char                     *pos;
    u_char                     *end;
    ngx_pool_t                 *pool;
} ngx_http_llm_text_t;


static ngx_int_t
ngx_http_llm_text(ngx_http_llm_text_t *t, const char *fmt, ...)
{
    u_char   *p, *nb;
    size_t    size;
    va_list   args;

    for ( ;; ) {
        va_start(args, fmt);
        p = ngx_vslprintf(t->pos, t->end, fmt, args);
        va_end(args);

        if (p < t->end) {
            t->pos = p;
            return NGX_OK;
        }

        /* full (or exactly full): a buffer twice the size, and again */

        size = (t->end - t->start) * 2 + 4096;

        nb = ngx_pnalloc(t->pool, size);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        t->pos = ngx_cpymem(nb, t->start, t->pos - t->start);
        t->start = nb;
        t->end = nb + size;
    }
}


/* a label value or an HTML text: escaped for where it goes */

static ngx_str_t *
ngx_http_llm_esc(ngx_pool_t *pool, const char *s, ngx_uint_t html)
{
    u_char     *p;
    size_t      len, n;
    ngx_str_t  *out;

    len = ngx_strlen(s);

    out = ngx_palloc(pool, sizeof(ngx_str_t));
    p = ngx_pnalloc(pool, len * 6 + 1);

    if (out == NULL || p == NULL) {
        return NULL;
    }

    out->data = p;

    for (n = 0; n < len; n++) {
        if (html) {
            switch (s[n]) {
            case '<': p = ngx_cpymem(p, "&lt;", 4); continue;
            case '>': p = ngx_cpymem(p, "&gt;", 4); continue;
            case '&': p = ngx_cpymem(p, "&amp;", 5); continue;
            case '"': p = ngx_cpymem(p, "&quot;", 6); continue;
            }

        } else {
            switch (s[n]) {
            case '\\': p = ngx_cpymem(p, "\\\\", 2); continue;
            case '"': p = ngx_cpymem(p, "\\\"", 2); continue;
            case '\n': p = ngx_cpymem(p, "\\n", 2); continue;
            }
        }

        *p++ = s[n];
    }

    out->len = p - out->data;

    return out;
}


#define ngx_http_llm_jint(o, k)                                               \
    ((int64_t) json_integer_value(json_object_get(o, k)))

#define ngx_http_llm_jstr(o, k)                                               \
    (json_string_value(json_object_get(o, k))                                 \
     ? json_string_value(json_object_get(o, k)) : "")


static ngx_int_t
ngx_http_llm_status_prometheus(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_text_t *t)
{
    size_t       i, j;
    json_t      *a, *o, *b;
    ngx_str_t   *rt, *pv, *md, *k;
    int64_t      cum;

    static char  *classes[] = { "1xx", "2xx", "3xx", "4xx", "5xx", "none" };
    static char  *types[] = { "prompt", "completion", "cached" };

#define L  "route=\"%V\",provider=\"%V\",model=\"%V\""

    a = json_object_get(root, "series");

    ngx_http_llm_text(t, "# HELP nginx_llm_requests_total Requests by "
                      "route, provider, model and status class.\n"
                      "# TYPE nginx_llm_requests_total counter\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        rt = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "route"), 0);
        pv = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "provider"), 0);
        md = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "model"), 0);

        if (rt == NULL || pv == NULL || md == NULL) {
            return NGX_ERROR;
        }

        for (j = 0; j < 6; j++) {
            ngx_http_llm_text(t, "nginx_llm_requests_total{" L
                              ",code=\"%s\"} %L\n", rt, pv, md, classes[j],
                              ngx_http_llm_jint(json_object_get(o,
                                                    "requests"),
                                                classes[j]));
        }
    }

#define SERIES(name, help, type, expr)                                        \
    ngx_http_llm_text(t, "# HELP " name " " help "\n# TYPE " name " " type   \
                      "\n");                                                  \
    for (i = 0; i < json_array_size(a); i++) {                                \
        o = json_array_get(a, i);                                             \
        rt = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "route"), 0);     \
        pv = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "provider"), 0);  \
        md = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "model"), 0);     \
        if (rt == NULL || pv == NULL || md == NULL) {                         \
            return NGX_ERROR;                                                 \
        }                                                                     \
        expr;                                                                 \
    }

    SERIES("nginx_llm_attempts_total", "Provider attempts.", "counter",
           ngx_http_llm_text(t, "nginx_llm_attempts_total{" L "} %L\n",
                             rt, pv, md, ngx_http_llm_jint(o, "attempts")))

    SERIES("nginx_llm_fallbacks_total", "Attempts after a first one.",
           "counter",
           ngx_http_llm_text(t, "nginx_llm_fallbacks_total{" L "} %L\n",
                             rt, pv, md, ngx_http_llm_jint(o, "fallbacks")))

    SERIES("nginx_llm_tokens_total", "Tokens the providers counted.",
           "counter",
           for (j = 0; j < 3; j++) {
               ngx_http_llm_text(t, "nginx_llm_tokens_total{" L
                                 ",type=\"%s\"} %L\n", rt, pv, md, types[j],
                                 ngx_http_llm_jint(json_object_get(o,
                                                       "tokens"),
                                                   types[j]));
           })

    SERIES("nginx_llm_cost_usd_total", "Cost in USD.", "counter",
           ngx_http_llm_text(t, "nginx_llm_cost_usd_total{" L "} %.9f\n",
                             rt, pv, md,
                             json_real_value(json_object_get(o, "cost_usd"))))

#define HISTO(name, help, member)                                             \
    SERIES(name, help, "histogram",                                           \
        b = json_object_get(json_object_get(o, member), "buckets");           \
        cum = 0;                                                              \
        for (j = 0; j < NGX_HTTP_LLM_STATUS_BUCKETS; j++) {                   \
            cum += json_integer_value(json_array_get(b, j));                  \
            if (j < NGX_HTTP_LLM_STATUS_BUCKETS - 1) {                        \
                ngx_http_llm_text(t, name "_bucket{" L ",le=\"%.3f\"} %L\n",  \
                                  rt, pv, md,                                 \
                                  ngx_http_llm_buckets[j] / 1000.0, cum);     \
            } else {                                                          \
                ngx_http_llm_text(t, name "_bucket{" L ",le=\"+Inf\"} %L\n",  \
                                  rt, pv, md, cum);                           \
            }                                                                 \
        }                                                                     \
        ngx_http_llm_text(t, name "_sum{" L "} %.3f\n", rt, pv, md,           \
                          ngx_http_llm_jint(json_object_get(o, member),       \
                                            "sum_ms") / 1000.0);              \
        ngx_http_llm_text(t, name "_count{" L "} %L\n", rt, pv, md, cum))

    HISTO("nginx_llm_request_duration_seconds",
          "Time from the request's body to its end.", "duration")
    HISTO("nginx_llm_time_to_first_byte_seconds",
          "Time to the provider's first answer header.", "ttft")

    a = json_object_get(root, "zones");

    ngx_http_llm_text(t, "# HELP nginx_llm_cache_requests_total Cache "
                      "lookups by result.\n"
                      "# TYPE nginx_llm_cache_requests_total counter\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        b = json_object_get(o, "cache");
        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "name"), 0);

        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "nginx_llm_cache_requests_total{zone=\"%V\","
                          "result=\"hit\"} %L\n"
                          "nginx_llm_cache_requests_total{zone=\"%V\","
                          "result=\"semantic\"} %L\n"
                          "nginx_llm_cache_requests_total{zone=\"%V\","
                          "result=\"miss\"} %L\n"
                          "nginx_llm_cache_requests_total{zone=\"%V\","
                          "result=\"bypass\"} %L\n",
                          k, ngx_http_llm_jint(b, "hits"),
                          k, ngx_http_llm_jint(b, "semantic_hits"),
                          k, ngx_http_llm_jint(b, "misses"),
                          k, ngx_http_llm_jint(b, "bypasses"));
    }

#define ZONE(name, help, type, fmt, ...)                                      \
    ngx_http_llm_text(t, "# HELP " name " " help "\n# TYPE " name " " type   \
                      "\n");                                                  \
    for (i = 0; i < json_array_size(a); i++) {                                \
        o = json_array_get(a, i);                                             \
        b = json_object_get(o, "cache");                                      \
        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "name"), 0);       \
        if (k == NULL) {                                                      \
            return NGX_ERROR;                                                 \
        }                                                                     \
        ngx_http_llm_text(t, name "{zone=\"%V\"} " fmt "\n", k, __VA_ARGS__); \
    }

    ZONE("nginx_llm_cache_entries", "Cached answers.", "gauge", "%L",
         ngx_http_llm_jint(b, "entries"))
    ZONE("nginx_llm_cache_bytes", "Bytes of cached answers.", "gauge", "%L",
         ngx_http_llm_jint(b, "bytes"))
    ZONE("nginx_llm_cache_evictions_total", "Cached answers evicted.",
         "counter", "%L", ngx_http_llm_jint(b, "evictions"))
    ZONE("nginx_llm_zone_size_bytes", "Size of the llm_zone.", "gauge", "%L",
         ngx_http_llm_jint(o, "size"))
    ZONE("nginx_llm_zone_free_bytes", "Free pages of the llm_zone.",
         "gauge", "%L", ngx_http_llm_jint(o, "free"))

    ngx_http_llm_text(t, "# HELP nginx_llm_redis_up Whether llm_redis is "
                      "connected.\n# TYPE nginx_llm_redis_up gauge\n"
                      "# HELP nginx_llm_redis_last_sync_timestamp_seconds "
                      "The end of the last sync cycle.\n"
                      "# TYPE nginx_llm_redis_last_sync_timestamp_seconds "
                      "gauge\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        b = json_object_get(o, "redis");

        if (b == NULL) {
            continue;
        }

        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "name"), 0);
        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "nginx_llm_redis_up{zone=\"%V\"} %d\n"
                          "nginx_llm_redis_last_sync_timestamp_seconds"
                          "{zone=\"%V\"} %L\n", k,
                          json_is_true(json_object_get(b, "up")) ? 1 : 0,
                          k, ngx_http_llm_jint(b, "last_sync"));
    }

    a = json_object_get(root, "budgets");

    ngx_http_llm_text(t, "# HELP nginx_llm_budget_spent_usd Spent in the "
                      "current period.\n"
                      "# TYPE nginx_llm_budget_spent_usd gauge\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "key"), 0);
        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "nginx_llm_budget_spent_usd{key=\"%V\","
                          "period=\"%s\"} %.9f\n", k,
                          ngx_http_llm_jstr(o, "period"),
                          json_real_value(json_object_get(o, "spent_usd")));
    }

    ngx_http_llm_text(t, "# HELP nginx_llm_budget_limit_usd The budget.\n"
                      "# TYPE nginx_llm_budget_limit_usd gauge\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "key"), 0);
        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "nginx_llm_budget_limit_usd{key=\"%V\","
                          "period=\"%s\"} %.9f\n", k,
                          ngx_http_llm_jstr(o, "period"),
                          json_real_value(json_object_get(o, "limit_usd")));
    }

    a = json_object_get(root, "targets");

    ngx_http_llm_text(t, "# HELP nginx_llm_target_failures Recent failures "
                      "of a target.\n"
                      "# TYPE nginx_llm_target_failures gauge\n");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        k = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "target"), 0);
        if (k == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "nginx_llm_target_failures{target=\"%V\"} %L\n",
                          k, ngx_http_llm_jint(o, "failures"));
    }

#undef L
#undef SERIES
#undef HISTO
#undef ZONE

    return NGX_OK;
}


static const char  ngx_http_llm_status_style[] =
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "td,th{padding:.25em .75em;border-bottom:1px solid #ddd;"
    "text-align:right}td:first-child,th:first-child{text-align:left}"
    ".bar{background:#eee;width:12em;height:.9em;display:inline-block}"
    ".bar span{display:block;height:100%;background:#4a7}"
    ".bar span.hot{background:#c54}h2{font-size:1.1em;margin-top:1.5em}";


/* the tables of the page, from the tree (the page's script makes the same
 * from a fresh ?format=json) */

static ngx_int_t
ngx_http_llm_status_tables(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_text_t *t)
{
    double       spent, limit, pct;
    size_t       i;
    json_t      *a, *o, *q, *c;
    ngx_str_t   *e1, *e2, *e3;
    int64_t      hits, all;

    ngx_http_llm_text(t, "<section id=\"budgets\"><h2>Spend per key</h2>"
                      "<table><tr><th>key</th><th>period</th><th>spent "
                      "USD</th><th>limit USD</th><th></th></tr>");

    a = json_object_get(root, "budgets");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        spent = json_real_value(json_object_get(o, "spent_usd"));
        limit = json_real_value(json_object_get(o, "limit_usd"));
        pct = limit > 0 ? spent * 100 / limit : 0;
        pct = pct > 100 ? 100 : pct;

        e1 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "key"), 1);
        if (e1 == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "<tr><td>%V</td><td>%s</td><td>%.6f</td>"
                          "<td>%.6f</td><td><span class=\"bar\"><span "
                          "class=\"%s\" style=\"width:%.1f%%\"></span>"
                          "</span></td></tr>", e1,
                          ngx_http_llm_jstr(o, "period"), spent, limit,
                          pct >= 90 ? "hot" : "", pct);
    }

    ngx_http_llm_text(t, "</table></section><section id=\"series\"><h2>"
                      "Requests, tokens and cost</h2><table><tr><th>route"
                      "</th><th>provider</th><th>model</th><th>2xx</th>"
                      "<th>4xx</th><th>5xx</th><th>fallbacks</th><th>prompt"
                      "</th><th>completion</th><th>cost USD</th></tr>");

    a = json_object_get(root, "series");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        q = json_object_get(o, "requests");
        c = json_object_get(o, "tokens");

        e1 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "route"), 1);
        e2 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "provider"), 1);
        e3 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "model"), 1);

        if (e1 == NULL || e2 == NULL || e3 == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "<tr><td>%V</td><td>%V</td><td>%V</td><td>%L"
                          "</td><td>%L</td><td>%L</td><td>%L</td><td>%L"
                          "</td><td>%L</td><td>%.6f</td></tr>", e1, e2, e3,
                          ngx_http_llm_jint(q, "2xx"),
                          ngx_http_llm_jint(q, "4xx"),
                          ngx_http_llm_jint(q, "5xx"),
                          ngx_http_llm_jint(o, "fallbacks"),
                          ngx_http_llm_jint(c, "prompt"),
                          ngx_http_llm_jint(c, "completion"),
                          json_real_value(json_object_get(o, "cost_usd")));
    }

    ngx_http_llm_text(t, "</table></section><section id=\"cache\"><h2>Cache"
                      "</h2><table><tr><th>zone</th><th>hit rate</th><th>"
                      "hits</th><th>semantic</th><th>misses</th><th>"
                      "bypasses</th><th>entries</th></tr>");

    a = json_object_get(root, "zones");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);
        c = json_object_get(o, "cache");

        hits = ngx_http_llm_jint(c, "hits")
               + ngx_http_llm_jint(c, "semantic_hits");
        all = hits + ngx_http_llm_jint(c, "misses");

        e1 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "name"), 1);
        if (e1 == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "<tr><td>%V</td><td>%.1f%%</td><td>%L</td>"
                          "<td>%L</td><td>%L</td><td>%L</td><td>%L</td>"
                          "</tr>", e1,
                          all ? hits * 100.0 / all : 0.0,
                          ngx_http_llm_jint(c, "hits"),
                          ngx_http_llm_jint(c, "semantic_hits"),
                          ngx_http_llm_jint(c, "misses"),
                          ngx_http_llm_jint(c, "bypasses"),
                          ngx_http_llm_jint(c, "entries"));
    }

    ngx_http_llm_text(t, "</table></section><section id=\"targets\"><h2>"
                      "Provider health</h2><table><tr><th>target</th><th>"
                      "failures</th><th>cooling s</th></tr>");

    a = json_object_get(root, "targets");

    for (i = 0; i < json_array_size(a); i++) {
        o = json_array_get(a, i);

        e1 = ngx_http_llm_esc(r->pool, ngx_http_llm_jstr(o, "target"), 1);
        if (e1 == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_text(t, "<tr><td>%V</td><td>%L</td><td>%.1f</td></tr>",
                          e1, ngx_http_llm_jint(o, "failures"),
                          ngx_http_llm_jint(o, "cooling_ms") / 1000.0);
    }

    return ngx_http_llm_text(t, "</table></section>");
}


/* the page's script: the same tables, from ?format=json every 5 s */

static const char  ngx_http_llm_status_script[] =
    "(function(){"
    "function e(s){return String(s).replace(/[&<>\"]/g,function(c){"
    "return{'&':'&amp;','<':'&lt;','>':'&gt;','\"':'&quot;'}[c];});}"
    "function row(cells){return '<tr>'+cells.map(function(c){"
    "return '<td>'+c+'</td>';}).join('')+'</tr>';}"
    "function table(id,title,head,rows){var s=document.getElementById(id);"
    "if(!s)return;s.innerHTML='<h2>'+title+'</h2><table><tr>'+"
    "head.map(function(h){return '<th>'+h+'</th>';}).join('')+'</tr>'+"
    "rows.join('')+'</table>';}"
    "function render(d){"
    "table('budgets','Spend per key',['key','period','spent USD',"
    "'limit USD',''],d.budgets.map(function(b){var p=b.limit_usd>0?"
    "Math.min(100,b.spent_usd*100/b.limit_usd):0;return row([e(b.key),"
    "e(b.period),b.spent_usd.toFixed(6),b.limit_usd.toFixed(6),"
    "'<span class=\"bar\"><span class=\"'+(p>=90?'hot':'')+'\" "
    "style=\"width:'+p.toFixed(1)+'%\"></span></span>']);}));"
    "table('series','Requests, tokens and cost',['route','provider',"
    "'model','2xx','4xx','5xx','fallbacks','prompt','completion',"
    "'cost USD'],d.series.map(function(s){return row([e(s.route),"
    "e(s.provider),e(s.model),s.requests['2xx'],s.requests['4xx'],"
    "s.requests['5xx'],s.fallbacks,s.tokens.prompt,s.tokens.completion,"
    "s.cost_usd.toFixed(6)]);}));"
    "table('cache','Cache',['zone','hit rate','hits','semantic','misses',"
    "'bypasses','entries'],d.zones.map(function(z){var c=z.cache,"
    "h=c.hits+c.semantic_hits,a=h+c.misses;return row([e(z.name),"
    "(a?h*100/a:0).toFixed(1)+'%',c.hits,c.semantic_hits,c.misses,"
    "c.bypasses,c.entries]);}));"
    "table('targets','Provider health',['target','failures','cooling s'],"
    "d.targets.map(function(t){return row([e(t.target),t.failures,"
    "(t.cooling_ms/1000).toFixed(1)]);}));"
    "var g=document.getElementById('time');"
    "if(g)g.textContent=new Date(d.time*1000).toISOString();}"
    "function refresh(){fetch('?format=json',{headers:{Accept:"
    "'application/json'}}).then(function(r){return r.json();})"
    ".then(render).catch(function(){});}"
    "setInterval(refresh,5000);"
    "})();";


static ngx_int_t
ngx_http_llm_status_page(ngx_http_request_t *r, json_t *root,
    ngx_http_llm_text_t *t)
{
    ngx_http_llm_text(t, "<!DOCTYPE html><html lang=\"en\"><head><meta "
                      "charset=\"utf-8\"><meta name=\"viewport\" content="
                      "\"width=device-width\"><title>nginx LLM gateway"
                      "</title><style>%s</style></head><body><h1>nginx LLM "
                      "gateway</h1><p>State at <span id=\"time\">%T</span> "
                      "(epoch seconds; refreshed every 5 s when scripts "
                      "run).</p>", ngx_http_llm_status_style, ngx_time());

    if (ngx_http_llm_status_tables(r, root, t) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_llm_text(t, "<script>%s</script></body></html>\n",
                             ngx_http_llm_status_script);
}


static ngx_int_t
ngx_http_llm_status_handler(ngx_http_request_t *r)
{
    char                      *type;
    json_t                    *root;
    ngx_int_t                  rc, fmt;
    ngx_str_t                  arg, out;
    ngx_buf_t                 *b;
    ngx_chain_t                cl;
    ngx_table_elt_t           *accept;
    ngx_http_llm_text_t        t;
    ngx_http_llm_main_conf_t  *lmcf;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    /* ?format=, else the Accept header: 0 JSON, 1 Prometheus, 2 HTML */

    fmt = 0;

    if (ngx_http_arg(r, (u_char *) "format", 6, &arg) == NGX_OK) {
        if (arg.len == 10 && ngx_strncmp(arg.data, "prometheus", 10) == 0) {
            fmt = 1;

        } else if (arg.len == 4 && ngx_strncmp(arg.data, "html", 4) == 0) {
            fmt = 2;
        }

    } else {
        accept = ngx_http_llm_header_find(&r->headers_in.headers, "accept");

        if (accept
            && ngx_strlcasestrn(accept->value.data,
                                accept->value.data + accept->value.len,
                                (u_char *) "text/html", 9 - 1))
        {
            fmt = 2;

        } else if (accept
                   && (ngx_strlcasestrn(accept->value.data,
                                        accept->value.data
                                        + accept->value.len,
                                        (u_char *) "text/plain", 10 - 1)
                       || ngx_strlcasestrn(accept->value.data,
                                           accept->value.data
                                           + accept->value.len,
                                           (u_char *) "openmetrics", 11 - 1)))
        {
            fmt = 1;
        }
    }

    lmcf = ngx_http_get_module_main_conf(r, ngx_http_llm_gateway_module);

    root = ngx_http_llm_status_tree(r, lmcf);
    if (root == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t.pool = r->pool;
    t.start = ngx_pnalloc(r->pool, 16384);
    if (t.start == NULL) {
        json_decref(root);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    t.pos = t.start;
    t.end = t.start + 16384;

    if (fmt == 0) {
        rc = ngx_http_llm_json_dump(r->pool, root, &out);
        type = "application/json";

    } else if (fmt == 1) {
        rc = ngx_http_llm_status_prometheus(r, root, &t);
        out.data = t.start;
        out.len = t.pos - t.start;
        type = "text/plain; version=0.0.4; charset=utf-8";

    } else {
        rc = ngx_http_llm_status_page(r, root, &t);
        out.data = t.start;
        out.len = t.pos - t.start;
        type = "text/html; charset=utf-8";
    }

    json_decref(root);

    if (rc != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_length_n = out.len;
    r->headers_out.content_type.data = (u_char *) type;
    r->headers_out.content_type.len = ngx_strlen(type);
    r->headers_out.content_type_len = r->headers_out.content_type.len;

    ngx_str_set(&arg, "no-store");
    if (ngx_http_llm_add_header(r, "Cache-Control", &arg) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    b = ngx_calloc_buf(r->pool);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->pos = out.data;
    b->last = out.data + out.len;
    b->memory = 1;
    b->last_buf = 1;

    cl.buf = b;
    cl.next = NULL;

    return ngx_http_output_filter(r, &cl);
}
