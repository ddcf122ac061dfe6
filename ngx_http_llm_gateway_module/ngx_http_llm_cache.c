
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * The cache: llm_cache zone [ttl=] [semantic=].
 *
 * A request's key is a 128-bit hash of what decides its answer: the
 * location's llm_cache_key values, the route (its name and targets), the
 * endpoint, and the body as JSON values rather than bytes (an object's
 * members in any order, any white space), without the members that do
 * not change the answer (stream, stream_options, user, metadata, store).
 * An entry (kind CACHE, evictable, with the TTL) holds the answer in
 * OpenAI terms: the content, the tool calls, the finish reason, the
 * usage, the model; for embeddings the whole answer.
 *
 * Semantic: the key space is the same hash without the last user
 * message, and that message is embedded (ngx_http_llm_embed.c).  Each
 * zone has an index (a pinned entry): a slot per semantic entry with its
 * space, a 64-bit signature of its words and its key; a lookup scans the
 * slots of its space whose signature shares a word with the question's,
 * reads their entries and keeps the most similar one, if it reaches the
 * threshold.  Slots are reused in turn; a slot whose entry has gone
 * (expired, evicted) is skipped.
 */


#define NGX_HTTP_LLM_CACHE_MAX_ANSWER  (1024 * 1024)

/* content of a cached answer per stream chunk when it is replayed */
#define NGX_HTTP_LLM_CACHE_PIECE       48

#define NGX_HTTP_LLM_FINISH_STOP       0
#define NGX_HTTP_LLM_FINISH_LENGTH     1
#define NGX_HTTP_LLM_FINISH_TOOLS      2


/* an entry's value; then its terms, model, content, tools and body */
typedef struct {
    uint64_t                    space[2];      /* semantic entries */
    uint64_t                    sig;
    uint32_t                    norm2;
    int32_t                     prompt;
    int32_t                     completion;
    int32_t                     cached;
    uint32_t                    content_len;
    uint32_t                    tools_len;
    uint32_t                    body_len;      /* embeddings */
    uint16_t                    ntools;
    uint8_t                     nterms;
    uint8_t                     model_len;
    uint8_t                     finish;
    uint8_t                     content_null;
    uint8_t                     provider_len;
    uint8_t                     reserved;
    uint32_t                    dims;          /* a provider's vector */
} ngx_http_llm_cache_node_t;


/* the vector: builtin terms, or a provider's int8 components */
#define ngx_http_llm_cache_vec(node)                                          \
    ((node)->nterms * sizeof(ngx_http_llm_term_t) + (node)->dims)


/* the model and the provider's name, one after the other */
#define ngx_http_llm_cache_names(node)                                        \
    ((node)->model_len + (node)->provider_len)


/* a tool call in an entry: its lengths, then id, name and arguments */
typedef struct {
    uint16_t                    id_len;
    uint16_t                    name_len;
    uint32_t                    args_len;
} ngx_http_llm_cache_tool_t;


/* the semantic index of a zone */
typedef struct {
    uint32_t                    nslots;
    uint32_t                    next;          /* the slot to fill next */
    uint32_t                    used;          /* slots ever filled */
    uint32_t                    reserved;
    ngx_http_llm_slot_t         slots[1];
} ngx_http_llm_cache_index_t;


/* what a stream's chunks said, gathered to be stored */
typedef struct {
    ngx_str_t                   id;
    ngx_str_t                   name;
    ngx_str_t                   args;
    size_t                      args_size;
} ngx_http_llm_acc_tool_t;

struct ngx_http_llm_acc_s {
    ngx_pool_t                 *pool;
    u_char                     *content;
    size_t                      len;
    size_t                      size;
    ngx_array_t                 tools;         /* ngx_http_llm_acc_tool_t */
    unsigned                    has_content:1;
    unsigned                    overflow:1;
};


typedef struct {
    uint64_t                    hits;
    uint64_t                    semantic_hits;
    uint64_t                    misses;
    uint64_t                    bypasses;
    uint64_t                    stores;
} ngx_http_llm_cache_counters_t;


static ngx_int_t ngx_http_llm_cache_keys(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
static u_char *ngx_http_llm_cache_hash_value(u_char *p, u_char *last,
    uint64_t *h, u_char *skip, ngx_uint_t top);
static void ngx_http_llm_hash_bytes(u_char *p, size_t len, uint64_t seed,
    uint64_t *h);
static ngx_int_t ngx_http_llm_cache_last_user(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, u_char **skip, ngx_str_t *text);
static ngx_uint_t ngx_http_llm_cache_control(ngx_http_request_t *r,
    ngx_uint_t *store);
static ngx_int_t ngx_http_llm_cache_found(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_zone_t *zone,
    ngx_http_llm_cache_node_t *node, ngx_uint_t sim);
static ngx_int_t ngx_http_llm_cache_vector(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_str_t *body);
static ngx_http_llm_cache_counters_t *ngx_http_llm_cache_counters(
    ngx_http_llm_zone_t *zone);
static ngx_http_llm_cache_node_t *ngx_http_llm_cache_semantic(
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_zone_t *zone, ngx_uint_t *sim);
static ngx_http_llm_cache_index_t *ngx_http_llm_cache_index(
    ngx_http_llm_zone_t *zone, ngx_uint_t create);
static void ngx_http_llm_cache_index_add(ngx_http_llm_cache_index_t *index,
    ngx_http_llm_cache_node_t *node, u_char *key);
static ngx_int_t ngx_http_llm_cache_serve(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_cache_node_t *node);
static ngx_int_t ngx_http_llm_cache_whole(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_cache_node_t *node,
    ngx_http_llm_call_t *call);
static void ngx_http_llm_cache_whole_write(ngx_http_llm_out_t *o,
    ngx_http_llm_cache_node_t *node, ngx_http_llm_call_t *call);
static ngx_int_t ngx_http_llm_cache_stream(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_cache_node_t *node,
    ngx_http_llm_call_t *call);
static void ngx_http_llm_cache_tools_write(ngx_http_llm_out_t *o,
    ngx_http_llm_cache_node_t *node, ngx_int_t one);
static ngx_int_t ngx_http_llm_cache_from_body(ngx_http_llm_ctx_t *ctx,
    ngx_str_t *body, ngx_http_llm_acc_t *acc, ngx_str_t *finish);
static ngx_int_t ngx_http_llm_acc_append(ngx_http_llm_acc_t *acc,
    u_char **buf, size_t *len, size_t *size, ngx_str_t *s);
static ngx_http_llm_acc_tool_t *ngx_http_llm_acc_tool(
    ngx_http_llm_acc_t *acc, ngx_uint_t index);


static const char  *ngx_http_llm_cache_finishes[] = {
    "stop", "length", "tool_calls"
};


/* llm_cache zone [ttl=time] [semantic=number] | off */

char *
ngx_http_llm_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    double      d;
    u_char     *end;
    time_t      ttl;
    ngx_str_t  *value, v;
    ngx_uint_t  i;

    if (llcf->cache_zone != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (cf->args->nelts == 2 && ngx_strcmp(value[1].data, "off") == 0) {
        llcf->cache_zone = NULL;
        return NGX_CONF_OK;
    }

    llcf->cache_zone = ngx_http_llm_zone_named(cf, &value[1]);
    if (llcf->cache_zone == NULL) {
        return NGX_CONF_ERROR;
    }

    llcf->cache_ttl = 3600;
    llcf->cache_semantic = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "ttl=", 4) == 0) {
            v.data = value[i].data + 4;
            v.len = value[i].len - 4;

            ttl = ngx_parse_time(&v, 1);
            if (ttl == (time_t) NGX_ERROR || ttl == 0) {
                goto invalid;
            }

            llcf->cache_ttl = ttl;
            continue;
        }

        if (ngx_strncmp(value[i].data, "semantic=", 9) == 0) {
            d = strtod((char *) value[i].data + 9, (char **) &end);

            if (end != value[i].data + value[i].len || value[i].len == 9
                || d <= 0 || d > 1)
            {
                goto invalid;
            }

            llcf->cache_semantic = (ngx_uint_t) (d * 1000 + 0.5);
            continue;
        }

        goto invalid;
    }

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "invalid parameter \"%V\": ttl=time (above 0) or "
                       "semantic=number (above 0, at most 1)", &value[i]);

    return NGX_CONF_ERROR;
}


/* llm_cache_key value ...: each a complex value */

char *
ngx_http_llm_cache_key(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_loc_conf_t *llcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (llcf->cache_keys != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    value = cf->args->elts;

    llcf->cache_keys = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                        sizeof(ngx_http_complex_value_t));
    if (llcf->cache_keys == NULL) {
        return NGX_CONF_ERROR;
    }

    for (i = 1; i < cf->args->nelts; i++) {
        cv = ngx_array_push(llcf->cache_keys);
        if (cv == NULL) {
            return NGX_CONF_ERROR;
        }

        ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

        ccv.cf = cf;
        ccv.value = &value[i];
        ccv.complex_value = cv;

        if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


/*
 * Before any attempt: NGX_OK (answered from the cache), NGX_DECLINED
 * (go on to the providers), NGX_ERROR.
 */

ngx_int_t
ngx_http_llm_cache_lookup(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    ngx_int_t                       rc;
    ngx_str_t                       key, v[2];
    ngx_uint_t                      read, store, sim;
    ngx_http_llm_zone_t            *zone;
    ngx_http_llm_cache_ctx_t       *c;
    ngx_http_llm_cache_node_t      *node;
    ngx_http_llm_cache_counters_t  *cnt;

    static const char  *names[] = { "n", "logprobs", NULL };

    zone = ctx->conf->cache_zone;

    if (zone == NULL) {
        return NGX_DECLINED;
    }

    c = &ctx->cache;
    read = ngx_http_llm_cache_control(r, &store);

    /* answers the cache cannot hold whole: several choices, logprobs */

    if (ngx_http_llm_json_get(ctx->raw.data, ctx->raw.data + ctx->raw.len,
                              names, v)
        != NGX_OK
        || (v[0].len && ngx_http_llm_json_int(&v[0]) != 1
            && !(v[0].len == 4 && ngx_strncmp(v[0].data, "null", 4) == 0))
        || (v[1].len == 4 && ngx_strncmp(v[1].data, "true", 4) == 0))
    {
        read = 0;
        store = 0;
    }

    if (!read && !store) {
        c->status = NGX_HTTP_LLM_CACHE_BYPASS;
        goto counted;
    }

    rc = ngx_http_llm_cache_keys(r, ctx);

    if (rc == NGX_ERROR) {
        return NGX_ERROR;
    }

    c->store = store;

    if (!read) {
        c->status = NGX_HTTP_LLM_CACHE_BYPASS;
        goto counted;
    }

    key.data = c->key;
    key.len = sizeof(c->key);

    ngx_http_llm_zone_lock(zone);

    node = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &key, 0);
    sim = 1000;

    if (node == NULL && c->semantic && ctx->conf->cache_embed) {
        ngx_http_llm_zone_unlock(zone);

        /* the question's embedding first, from the provider */

        rc = ngx_http_llm_attempt_embed(r, ctx, ctx->conf->cache_embed,
                                        &ctx->conf->cache_embed_model,
                                        &c->text);
        if (rc == NGX_OK) {
            return NGX_AGAIN;
        }

        if (rc == NGX_ERROR) {
            return NGX_ERROR;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm: llm_cache_embed: provider \"%V\" cannot make "
                      "embeddings, the request goes on as a cache miss",
                      &ctx->conf->cache_embed->name);

        c->semantic = 0;

        ngx_http_llm_zone_lock(zone);
    }

    return ngx_http_llm_cache_found(r, ctx, zone, node, sim);

counted:

    ngx_http_llm_zone_lock(zone);

    cnt = ngx_http_llm_cache_counters(zone);
    if (cnt) {
        cnt->bypasses++;
    }

    ngx_http_llm_zone_unlock(zone);

    return NGX_DECLINED;
}


/*
 * With the zone locked: a hit (node) is answered, NGX_OK; a miss is
 * counted, NGX_DECLINED.  The lock is released.
 */

static ngx_int_t
ngx_http_llm_cache_found(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_zone_t *zone, ngx_http_llm_cache_node_t *node,
    ngx_uint_t sim)
{
    size_t                          size;
    ngx_http_llm_cache_ctx_t       *c;
    ngx_http_llm_cache_node_t      *copy;
    ngx_http_llm_cache_counters_t  *cnt;

    c = &ctx->cache;

    if (node == NULL && c->semantic) {
        node = ngx_http_llm_cache_semantic(ctx, zone, &sim);
    }

    if (node == NULL) {
        cnt = ngx_http_llm_cache_counters(zone);
        if (cnt) {
            cnt->misses++;
        }

        ngx_http_llm_zone_unlock(zone);

        c->status = NGX_HTTP_LLM_CACHE_MISS;

        return NGX_DECLINED;
    }

    /* the entry is copied out: the lock is not held while answering */

    size = ngx_http_llm_zone_value_size(node);

    copy = ngx_palloc(r->pool, size);
    if (copy == NULL) {
        ngx_http_llm_zone_unlock(zone);
        return NGX_ERROR;
    }

    ngx_memcpy(copy, node, size);

    cnt = ngx_http_llm_cache_counters(zone);
    if (cnt) {
        if (c->semantic_hit) {
            cnt->semantic_hits++;

        } else {
            cnt->hits++;
        }
    }

    ngx_http_llm_zone_unlock(zone);

    c->store = 0;
    c->status = (c->semantic_hit) ? NGX_HTTP_LLM_CACHE_SEMANTIC
                                  : NGX_HTTP_LLM_CACHE_HIT;
    c->similarity = sim;

    return ngx_http_llm_cache_serve(r, ctx, copy);
}


/*
 * Cache-Control of the client: no-cache does not read the cache, no-store
 * does not write it.  Returns whether to read.
 */

static ngx_uint_t
ngx_http_llm_cache_control(ngx_http_request_t *r, ngx_uint_t *store)
{
    ngx_uint_t        i, read;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    read = 1;
    *store = 1;

    part = &r->headers_in.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].key.len != sizeof("Cache-Control") - 1
            || ngx_strncasecmp(h[i].key.data, (u_char *) "Cache-Control",
                               sizeof("Cache-Control") - 1)
               != 0)
        {
            continue;
        }

        if (ngx_strlcasestrn(h[i].value.data,
                             h[i].value.data + h[i].value.len,
                             (u_char *) "no-cache", sizeof("no-cache") - 2))
        {
            read = 0;
        }

        if (ngx_strlcasestrn(h[i].value.data,
                             h[i].value.data + h[i].value.len,
                             (u_char *) "no-store", sizeof("no-store") - 2))
        {
            *store = 0;
        }
    }

    return read;
}


/* the exact key, and for a semantic chat request its space and vector */

static ngx_int_t
ngx_http_llm_cache_keys(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                    *skip;
    uint64_t                   h[2], k[2], s[2];
    ngx_str_t                  v, text;
    ngx_uint_t                 i;
    ngx_http_llm_cache_ctx_t  *c;
    ngx_http_complex_value_t  *cv;

    c = &ctx->cache;

    /* what is not the body: the key values, the route, the endpoint */

    h[0] = 0x9e3779b97f4a7c15ULL ^ ctx->endpoint;
    h[1] = 0xc2b2ae3d27d4eb4fULL ^ ctx->endpoint;

    if (ctx->conf->cache_keys) {
        cv = ctx->conf->cache_keys->elts;

        for (i = 0; i < ctx->conf->cache_keys->nelts; i++) {
            if (ngx_http_complex_value(r, &cv[i], &v) != NGX_OK) {
                return NGX_ERROR;
            }

            ngx_http_llm_hash_bytes(v.data, v.len, h[0] ^ h[1], h);
        }
    }

    ngx_http_llm_hash_bytes(ctx->route->key.data, ctx->route->key.len,
                            h[0] ^ h[1], h);

    skip = NULL;
    c->semantic = 0;

    if (ctx->conf->cache_semantic && ctx->endpoint == NGX_HTTP_LLM_CHAT) {
        if (ngx_http_llm_cache_last_user(r, ctx, &skip, &text) != NGX_OK) {
            return NGX_ERROR;
        }

        if (skip && ctx->conf->cache_embed) {

            /* a provider embeds it, after the exact lookup missed */

            c->text = text;
            c->semantic = (text.len > 0);

        } else if (skip) {
            c->vec = ngx_palloc(r->pool, sizeof(ngx_http_llm_vec_t));
            if (c->vec == NULL) {
                return NGX_ERROR;
            }

            ngx_http_llm_embed(text.data, text.len, c->vec);

            c->semantic = (c->vec->n > 0);
        }
    }

    k[0] = h[0];
    k[1] = h[1];

    if (ngx_http_llm_cache_hash_value(ctx->raw.data,
                                      ctx->raw.data + ctx->raw.len, k, NULL,
                                      1)
        == NULL)
    {
        return NGX_ERROR;
    }

    ngx_memcpy(c->key, k, sizeof(c->key));

    if (c->semantic) {
        s[0] = h[0] ^ 0x5bd1e995;
        s[1] = h[1];

        /* vectors of different embedders are never compared */

        if (ctx->conf->cache_embed) {
            ngx_http_llm_hash_bytes(ctx->conf->cache_embed->name.data,
                                    ctx->conf->cache_embed->name.len, 0x65, s);
            ngx_http_llm_hash_bytes(ctx->conf->cache_embed_model.data,
                                    ctx->conf->cache_embed_model.len, 0x6d,
                                    s);
        }

        if (ngx_http_llm_cache_hash_value(ctx->raw.data,
                                          ctx->raw.data + ctx->raw.len, s,
                                          skip, 1)
            == NULL)
        {
            return NGX_ERROR;
        }

        c->space[0] = s[0];
        c->space[1] = s[1];
    }

    return NGX_OK;
}


/*
 * The last user message of the chat: where it starts (to be left out of
 * the key space) and its text, when it is text only; *skip NULL if there
 * is none to embed.
 */

static ngx_int_t
ngx_http_llm_cache_last_user(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    u_char **skip, ngx_str_t *text)
{
    u_char     *pos, *ppos;
    ngx_str_t   msg, last, m[2], part, pm[2], t;
    ngx_uint_t  found;

    static const char  *fields[] = { "role", "content", NULL };
    static const char  *parts[] = { "type", "text", NULL };

    *skip = NULL;
    found = 0;
    pos = NULL;
    last.data = NULL;
    last.len = 0;

    while (ngx_http_llm_json_next(&ctx->members[NGX_HTTP_LLM_M_MESSAGES],
                                  &pos, &msg)
           == NGX_OK)
    {
        if (msg.data[0] == '{'
            && ngx_http_llm_json_get(msg.data, msg.data + msg.len, fields, m)
               == NGX_OK
            && m[0].len == 6 && ngx_strncmp(m[0].data, "\"user\"", 6) == 0)
        {
            last = msg;
            found = 1;
        }
    }

    if (!found
        || ngx_http_llm_json_get(last.data, last.data + last.len, fields, m)
           != NGX_OK
        || m[1].len == 0)
    {
        return NGX_OK;
    }

    if (m[1].data[0] == '"') {
        if (ngx_http_llm_json_string(r->pool, &m[1], text) != NGX_OK) {
            return NGX_ERROR;
        }

        *skip = last.data;
        return NGX_OK;
    }

    if (m[1].data[0] != '[') {
        return NGX_OK;
    }

    /* text parts only, joined with a space; anything else is not
     * embedded (an image changes the question) */

    text->len = 0;
    text->data = ngx_pnalloc(r->pool, m[1].len);
    if (text->data == NULL) {
        return NGX_ERROR;
    }

    ppos = NULL;

    while (ngx_http_llm_json_next(&m[1], &ppos, &part) == NGX_OK) {
        if (part.data[0] != '{'
            || ngx_http_llm_json_get(part.data, part.data + part.len, parts,
                                     pm)
               != NGX_OK
            || pm[0].len != 6 || ngx_strncmp(pm[0].data, "\"text\"", 6) != 0
            || ngx_http_llm_json_string(r->pool, &pm[1], &t) != NGX_OK)
        {
            return NGX_OK;
        }

        if (text->len) {
            text->data[text->len++] = ' ';
        }

        text->len = ngx_cpymem(text->data + text->len, t.data, t.len)
                    - text->data;
    }

    *skip = last.data;

    return NGX_OK;
}


/*
 * Two 64-bit lanes of a hash over bytes, mixed into h: word at a time,
 * then the finalizer of SplitMix64.
 */

#define ngx_http_llm_rotl(x, r)  (((x) << (r)) | ((x) >> (64 - (r))))

static ngx_inline uint64_t
ngx_http_llm_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;

    return x;
}


static void
ngx_http_llm_hash_bytes(u_char *p, size_t len, uint64_t seed, uint64_t *h)
{
    uint64_t  a, b, w;

    a = h[0] ^ seed ^ (len * 0x9e3779b97f4a7c15ULL);
    b = h[1] ^ ngx_http_llm_rotl(seed, 32) ^ len;

    while (len >= 8) {
        ngx_memcpy(&w, p, 8);

        a = ngx_http_llm_rotl(a ^ w, 29) * 0x9fb21c651e98df25ULL;
        b = ngx_http_llm_rotl(b ^ w, 31) * 0xc6a4a7935bd1e995ULL;

        p += 8;
        len -= 8;
    }

    w = 0;
    ngx_memcpy(&w, p, len);

    a = ngx_http_llm_rotl(a ^ w, 29) * 0x9fb21c651e98df25ULL;
    b = ngx_http_llm_rotl(b ^ w, 31) * 0xc6a4a7935bd1e995ULL;

    h[0] = ngx_http_llm_mix64(a);
    h[1] = ngx_http_llm_mix64(b ^ h[0]);
}


/*
 * The hash of a JSON value (valid: the scanner has read the body) into
 * h, and the end of the value.  Objects hash their members as a sum, so
 * that their order does not matter; arrays in order; strings and numbers
 * by their bytes.  At the top level (top) the members that do not change
 * the answer are left out; the array element that starts at skip too.
 */

static u_char *
ngx_http_llm_cache_hash_value(u_char *p, u_char *last, uint64_t *h,
    u_char *skip, ngx_uint_t top)
{
    u_char      *start, *key;
    size_t       klen;
    uint64_t     sum[2], m[2], kh[2];
    ngx_uint_t   i, n;

    static ngx_str_t  ignored[] = {
        ngx_string("stream"), ngx_string("stream_options"),
        ngx_string("user"), ngx_string("metadata"), ngx_string("store"),
        ngx_null_string
    };

    while (p < last && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
    {
        p++;
    }

    if (p == last) {
        return NULL;
    }

    switch (*p) {

    case '{':
        sum[0] = 0;
        sum[1] = 0;
        n = 0;
        p++;

        for ( ;; ) {
            while (p < last && *p != '"' && *p != '}') {
                p++;
            }

            if (p == last) {
                return NULL;
            }

            if (*p == '}') {
                break;
            }

            key = ++p;

            while (p < last && *p != '"') {
                p += (*p == '\\') ? 2 : 1;
            }

            if (p >= last) {
                return NULL;
            }

            klen = p - key;
            p++;

            while (p < last && *p != ':') {
                p++;
            }

            if (p == last) {
                return NULL;
            }

            p++;

            if (top) {
                for (i = 0; ignored[i].len; i++) {
                    if (ignored[i].len == klen
                        && ngx_strncmp(ignored[i].data, key, klen) == 0)
                    {
                        break;
                    }
                }

                if (ignored[i].len) {
                    m[0] = 0;
                    m[1] = 0;

                    p = ngx_http_llm_cache_hash_value(p, last, m, NULL, 0);
                    if (p == NULL) {
                        return NULL;
                    }

                    continue;
                }
            }

            kh[0] = 0;
            kh[1] = 0;
            ngx_http_llm_hash_bytes(key, klen, 0x6b, kh);

            m[0] = kh[0];
            m[1] = kh[1];

            p = ngx_http_llm_cache_hash_value(p, last, m,
                                              (top && klen == 8
                                               && ngx_strncmp(key,
                                                              "messages", 8)
                                                  == 0)
                                              ? skip : NULL, 0);
            if (p == NULL) {
                return NULL;
            }

            sum[0] += ngx_http_llm_mix64(m[0] ^ ngx_http_llm_rotl(kh[1], 7));
            sum[1] += ngx_http_llm_mix64(m[1] ^ ngx_http_llm_rotl(kh[0], 13));
            n++;
        }

        p++;

        h[0] = ngx_http_llm_mix64(h[0] ^ sum[0] ^ (n << 1) ^ '{');
        h[1] = ngx_http_llm_mix64(h[1] ^ sum[1] ^ (n << 2) ^ '{');

        return p;

    case '[':
        h[0] = ngx_http_llm_mix64(h[0] ^ '[');
        h[1] = ngx_http_llm_mix64(h[1] ^ '[');
        p++;

        for ( ;; ) {
            while (p < last
                   && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'
                       || *p == ','))
            {
                p++;
            }

            if (p == last) {
                return NULL;
            }

            if (*p == ']') {
                return p + 1;
            }

            if (p == skip) {
                m[0] = 0;
                m[1] = 0;

                p = ngx_http_llm_cache_hash_value(p, last, m, NULL, 0);
                if (p == NULL) {
                    return NULL;
                }

                continue;
            }

            p = ngx_http_llm_cache_hash_value(p, last, h, NULL, 0);
            if (p == NULL) {
                return NULL;
            }

            h[0] = ngx_http_llm_mix64(h[0] + 0x9e3779b97f4a7c15ULL);
            h[1] = ngx_http_llm_mix64(h[1] + 0xc2b2ae3d27d4eb4fULL);
        }

    case '"':
        start = p++;

        while (p < last && *p != '"') {
            p += (*p == '\\') ? 2 : 1;
        }

        if (p >= last) {
            return NULL;
        }

        p++;

        ngx_http_llm_hash_bytes(start, p - start, 0x73, h);

        return p;

    default:
        start = p;

        while (p < last && *p != ',' && *p != '}' && *p != ']' && *p != ' '
               && *p != '\t' && *p != '\n' && *p != '\r')
        {
            p++;
        }

        ngx_http_llm_hash_bytes(start, p - start, 0x6e, h);

        return p;
    }
}


static ngx_http_llm_cache_counters_t *
ngx_http_llm_cache_counters(ngx_http_llm_zone_t *zone)
{
    static ngx_str_t  key = ngx_string("cache");

    return ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &key,
                                 sizeof(ngx_http_llm_cache_counters_t));
}


/* the counters of a zone's cache, for status; under the lock */

void
ngx_http_llm_cache_stats(ngx_http_llm_zone_t *zone,
    ngx_http_llm_cache_stats_t *st)
{
    ngx_http_llm_zone_stats_t       zs;
    ngx_http_llm_cache_counters_t  *cnt;

    ngx_memzero(st, sizeof(ngx_http_llm_cache_stats_t));

    ngx_http_llm_zone_lock(zone);

    ngx_http_llm_zone_stats(zone, NGX_HTTP_LLM_KIND_CACHE, &zs);

    st->entries = zs.entries;
    st->bytes = zs.bytes;
    st->evictions = zs.evicted;

    cnt = ngx_http_llm_cache_counters(zone);

    if (cnt) {
        st->hits = cnt->hits;
        st->semantic_hits = cnt->semantic_hits;
        st->misses = cnt->misses;
        st->bypasses = cnt->bypasses;
        st->stores = cnt->stores;
    }

    ngx_http_llm_zone_unlock(zone);
}


static ngx_http_llm_cache_index_t *
ngx_http_llm_cache_index(ngx_http_llm_zone_t *zone, ngx_uint_t create)
{
    size_t                       n;
    ngx_http_llm_cache_index_t  *index;

    static ngx_str_t  key = ngx_string("cache-index");

    /* a slot per 2 KB of zone: a semantic entry takes more than that */

    n = ngx_max(zone->size / 2048, 64);

    index = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_STATS, &key,
                                  create
                                  ? offsetof(ngx_http_llm_cache_index_t,
                                             slots)
                                    + n * sizeof(ngx_http_llm_slot_t)
                                  : 0);

    if (index && index->nslots == 0) {
        index->nslots = (uint32_t) n;
    }

    return index;
}


/* with the zone locked: the entry of key (16 bytes) takes the next slot */

static void
ngx_http_llm_cache_index_add(ngx_http_llm_cache_index_t *index,
    ngx_http_llm_cache_node_t *node, u_char *key)
{
    ngx_http_llm_slot_t  *slot;

    slot = &index->slots[index->next];
    index->next = (index->next + 1) % index->nslots;
    index->used = ngx_max(index->used,
                          (uint32_t) (slot - index->slots) + 1);

    slot->sig = node->sig;
    slot->space = node->space[0];
    ngx_memcpy(slot->key, key, 16);
}


/* with the zone locked: the most similar entry of the space, if any */

static ngx_http_llm_cache_node_t *
ngx_http_llm_cache_semantic(ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_zone_t *zone, ngx_uint_t *sim)
{
    u_char                      *best_key;
    ngx_str_t                    key;
    ngx_uint_t                   i, s, best_sim;
    ngx_http_llm_query_t         iq;
    ngx_http_llm_vec_t          *q;
    ngx_http_llm_cache_ctx_t    *c;
    ngx_http_llm_cache_node_t   *node, *best;
    ngx_http_llm_slot_t         *slot;
    ngx_http_llm_cache_index_t  *index;

    c = &ctx->cache;
    q = c->vec;

    index = ngx_http_llm_cache_index(zone, 0);
    if (index == NULL) {
        return NULL;
    }

    best = NULL;
    best_key = NULL;
    best_sim = 0;
    key.len = 16;

    if (c->dense) {
        ngx_memzero(&iq, offsetof(ngx_http_llm_query_t, w2));
        iq.space = c->space[0];
        iq.sig = c->sig;
        iq.dense = 1;

    } else {
        ngx_http_llm_index_query(q, ctx->conf->cache_semantic, c->space[0],
                                 &iq);
    }

    /* the slots filled so far: a new index is not scanned whole */

    for (i = ngx_http_llm_index_next(index->slots, index->used, 0, &iq);
         i < index->used;
         i = ngx_http_llm_index_next(index->slots, index->used, i + 1, &iq))
    {
        slot = &index->slots[i];
        key.data = slot->key;

        /* candidates are read without becoming recently used */

        node = ngx_http_llm_zone_peek(zone, NGX_HTTP_LLM_KIND_CACHE, &key);

        if (node == NULL) {
            /* gone: the slot is free */
            slot->space = 0;
            slot->sig = 0;
            continue;
        }

        if (node->space[0] != c->space[0] || node->space[1] != c->space[1]) {
            continue;
        }

        if (c->dense) {
            s = (node->dims == c->dims)
                ? ngx_http_llm_dense_similarity(c->dense,
                                                (int8_t *) (node + 1),
                                                c->dims, c->norm2,
                                                node->norm2)
                : 0;

        } else {
            s = ngx_http_llm_embed_similarity(q->terms, q->n, q->norm2,
                                              (ngx_http_llm_term_t *)
                                                  (node + 1),
                                              node->nterms, node->norm2);
        }

        if (s > best_sim) {
            best_sim = s;
            best = node;
            best_key = slot->key;
        }
    }

    if (best == NULL || best_sim < ctx->conf->cache_semantic) {
        return NULL;
    }

    /* the one served is */

    key.data = best_key;
    best = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &key, 0);

    if (best == NULL) {
        return NULL;
    }

    c->semantic_hit = 1;
    *sim = best_sim;

    return best;
}


/* an answer from an entry, whole or as a stream */

static ngx_int_t
ngx_http_llm_cache_serve(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_node_t *node)
{
    u_char                    *p;
    ngx_str_t                  body;
    ngx_http_llm_call_t       *call;
    ngx_http_llm_cache_ctx_t  *c;

    ctx->spend.cost = 0;

    c = &ctx->cache;
    c->model.data = (u_char *) (node + 1)
                    + ngx_http_llm_cache_vec(node);
    c->model.len = node->model_len;
    c->provider.data = c->model.data + node->model_len;
    c->provider.len = node->provider_len;

    if (node->body_len) {

        /* embeddings: the answer as it was */

        p = (u_char *) (node + 1)
            + ngx_http_llm_cache_vec(node)
            + ngx_http_llm_cache_names(node) + node->content_len
            + node->tools_len;

        body.data = p;
        body.len = node->body_len;

        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_ANSWERED,
                         ngx_http_llm_send_answer(r, ctx, NULL, &body));
        return NGX_OK;
    }

    call = ngx_pcalloc(r->pool, sizeof(ngx_http_llm_call_t));
    if (call == NULL) {
        return NGX_ERROR;
    }

    call->pool = r->pool;
    call->log = r->connection->log;
    call->out = &ctx->out;
    call->created = ngx_time();
    call->model.data = (u_char *) (node + 1)
                       + ngx_http_llm_cache_vec(node);
    call->model.len = node->model_len;

    if (ngx_http_llm_make_id(call, "chatcmpl-", &call->id) != NGX_OK) {
        return NGX_ERROR;
    }

    if (ctx->stream) {
        return ngx_http_llm_cache_stream(r, ctx, node, call);
    }

    return ngx_http_llm_cache_whole(r, ctx, node, call);
}


static ngx_int_t
ngx_http_llm_cache_whole(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_node_t *node, ngx_http_llm_call_t *call)
{
    ngx_str_t           body;
    ngx_http_llm_out_t  o;

    o.pos = NULL;
    o.len = 0;

    ngx_http_llm_cache_whole_write(&o, node, call);

    body.data = ngx_http_llm_out_alloc(&o, r->pool);
    if (body.data == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_cache_whole_write(&o, node, call);
    body.len = o.pos - body.data;

    ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_ANSWERED,
                     ngx_http_llm_send_answer(r, ctx, NULL, &body));

    return NGX_OK;
}


static void
ngx_http_llm_cache_whole_write(ngx_http_llm_out_t *o,
    ngx_http_llm_cache_node_t *node, ngx_http_llm_call_t *call)
{
    ngx_str_t  content;

    content.data = call->model.data + ngx_http_llm_cache_names(node);
    content.len = node->content_len;

    ngx_http_llm_out_lit(o, "{\"id\":");
    ngx_http_llm_out_string(o, &call->id);
    ngx_http_llm_out_lit(o, ",\"object\":\"chat.completion\",\"created\":");
    ngx_http_llm_out_int(o, call->created);
    ngx_http_llm_out_lit(o, ",\"model\":");
    ngx_http_llm_out_string(o, &call->model);
    ngx_http_llm_out_lit(o, ",\"choices\":[{\"index\":0,\"message\":"
                            "{\"role\":\"assistant\",\"content\":");

    if (node->content_null) {
        ngx_http_llm_out_lit(o, "null");

    } else {
        ngx_http_llm_out_string(o, &content);
    }

    if (node->ntools) {
        ngx_http_llm_out_lit(o, ",\"tool_calls\":[");
        ngx_http_llm_cache_tools_write(o, node, -1);
        ngx_http_llm_out_lit(o, "]");
    }

    ngx_http_llm_out_lit(o, "},\"logprobs\":null,\"finish_reason\":\"");
    ngx_http_llm_out_raw(o, ngx_http_llm_cache_finishes[node->finish],
                         ngx_strlen(ngx_http_llm_cache_finishes[node->finish]));
    ngx_http_llm_out_lit(o, "\"}],\"usage\":{\"prompt_tokens\":");
    ngx_http_llm_out_int(o, node->prompt);
    ngx_http_llm_out_lit(o, ",\"completion_tokens\":");
    ngx_http_llm_out_int(o, node->completion);
    ngx_http_llm_out_lit(o, ",\"total_tokens\":");
    ngx_http_llm_out_int(o, node->prompt + node->completion);

    if (node->cached >= 0) {
        ngx_http_llm_out_lit(o, ",\"prompt_tokens_details\":"
                                "{\"cached_tokens\":");
        ngx_http_llm_out_int(o, node->cached);
        ngx_http_llm_out_lit(o, "}");
    }

    ngx_http_llm_out_lit(o, "}}");
}


/* the tool calls of an entry: all (one < 0) as in a message, or the one
 * numbered one as in a stream's delta */

static void
ngx_http_llm_cache_tools_write(ngx_http_llm_out_t *o,
    ngx_http_llm_cache_node_t *node, ngx_int_t one)
{
    u_char                     *p;
    ngx_str_t                   s;
    ngx_uint_t                  i;
    ngx_http_llm_cache_tool_t   t;

    p = (u_char *) (node + 1) + ngx_http_llm_cache_vec(node)
        + ngx_http_llm_cache_names(node) + node->content_len;

    for (i = 0; i < node->ntools; i++) {
        ngx_memcpy(&t, p, sizeof(ngx_http_llm_cache_tool_t));
        p += sizeof(ngx_http_llm_cache_tool_t);

        if (one < 0 || (ngx_uint_t) one == i) {

            if (one < 0 && i) {
                ngx_http_llm_out_lit(o, ",");
            }

            ngx_http_llm_out_lit(o, "{");

            if (one >= 0) {
                ngx_http_llm_out_lit(o, "\"index\":");
                ngx_http_llm_out_int(o, i);
                ngx_http_llm_out_lit(o, ",");
            }

            s.data = p;
            s.len = t.id_len;

            ngx_http_llm_out_lit(o, "\"id\":");
            ngx_http_llm_out_string(o, &s);

            s.data += t.id_len;
            s.len = t.name_len;

            ngx_http_llm_out_lit(o, ",\"type\":\"function\",\"function\":"
                                    "{\"name\":");
            ngx_http_llm_out_string(o, &s);

            s.data += t.name_len;
            s.len = t.args_len;

            ngx_http_llm_out_lit(o, ",\"arguments\":");
            ngx_http_llm_out_string(o, &s);
            ngx_http_llm_out_lit(o, "}}");
        }

        p += t.id_len + t.name_len + t.args_len;
    }
}


static ngx_int_t
ngx_http_llm_cache_stream(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_cache_node_t *node, ngx_http_llm_call_t *call)
{
    u_char              *p, *last, *piece;
    ngx_int_t            rc;
    ngx_str_t            s, lit, delta;
    ngx_uint_t           i;
    ngx_http_llm_out_t   o;

    if (ngx_http_llm_stream_headers(r) != NGX_OK
        || ngx_http_llm_stream_role(call) != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the content in pieces, cut between UTF-8 characters */

    p = call->model.data + ngx_http_llm_cache_names(node);
    last = p + node->content_len;

    while (p < last) {
        piece = p;
        p += ngx_min((size_t) (last - p), NGX_HTTP_LLM_CACHE_PIECE);

        while (p < last && (*p & 0xc0) == 0x80) {
            p++;
        }

        s.data = piece;
        s.len = p - piece;

        o.pos = NULL;
        o.len = 0;
        ngx_http_llm_out_string(&o, &s);

        lit.data = ngx_http_llm_out_alloc(&o, r->pool);
        if (lit.data == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_out_string(&o, &s);
        lit.len = o.pos - lit.data;

        if (ngx_http_llm_stream_text(call, &lit) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    for (i = 0; i < node->ntools; i++) {
        o.pos = NULL;
        o.len = 0;

        ngx_http_llm_out_lit(&o, "{\"tool_calls\":[");
        ngx_http_llm_cache_tools_write(&o, node, i);
        ngx_http_llm_out_lit(&o, "]}");

        delta.data = ngx_http_llm_out_alloc(&o, r->pool);
        if (delta.data == NULL) {
            return NGX_ERROR;
        }

        ngx_http_llm_out_lit(&o, "{\"tool_calls\":[");
        ngx_http_llm_cache_tools_write(&o, node, i);
        ngx_http_llm_out_lit(&o, "]}");
        delta.len = o.pos - delta.data;

        if (ngx_http_llm_stream_delta(call, 0, &delta, NULL) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    if (ngx_http_llm_stream_finish(call, 0,
                                   ngx_http_llm_cache_finishes[node->finish])
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (ctx->include_usage) {
        o.pos = NULL;
        o.len = 0;

        for (i = 0; i < 2; i++) {
            ngx_http_llm_out_lit(&o, "{\"id\":");
            ngx_http_llm_out_string(&o, &call->id);
            ngx_http_llm_out_lit(&o, ",\"object\":\"chat.completion.chunk\","
                                     "\"created\":");
            ngx_http_llm_out_int(&o, call->created);
            ngx_http_llm_out_lit(&o, ",\"model\":");
            ngx_http_llm_out_string(&o, &call->model);
            ngx_http_llm_out_lit(&o, ",\"choices\":[],\"usage\":"
                                     "{\"prompt_tokens\":");
            ngx_http_llm_out_int(&o, node->prompt);
            ngx_http_llm_out_lit(&o, ",\"completion_tokens\":");
            ngx_http_llm_out_int(&o, node->completion);
            ngx_http_llm_out_lit(&o, ",\"total_tokens\":");
            ngx_http_llm_out_int(&o, node->prompt + node->completion);
            ngx_http_llm_out_lit(&o, "}}");

            if (i == 0) {
                s.data = ngx_http_llm_out_alloc(&o, r->pool);
                if (s.data == NULL) {
                    return NGX_ERROR;
                }
            }
        }

        s.len = o.pos - s.data;

        if (ngx_http_llm_stream_data(&ctx->out, &s) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    ngx_str_set(&s, "[DONE]");

    if (ngx_http_llm_stream_data(&ctx->out, &s) != NGX_OK) {
        return NGX_ERROR;
    }

    rc = ngx_http_llm_send_header(r, ctx, NULL);

    if (rc != NGX_ERROR && rc <= NGX_OK && !r->header_only) {
        rc = ngx_http_llm_stream_send(&ctx->out, r, ngx_http_output_filter,
                                      1);
    }

    ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_STREAMED, rc);

    return NGX_OK;
}


/*
 * The provider's embedding of the question is in (or it failed): the
 * semantic lookup, then the answer from the cache or the attempts.
 */

void
ngx_http_llm_cache_embedded(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_attempt_t *a)
{
    char                 *what;
    ngx_int_t             rc;
    ngx_str_t             body;
    ngx_http_llm_zone_t  *zone;

    zone = ctx->conf->cache_zone;

    /* the embedding call is no attempt of the request's */
    ctx->cur = NULL;

    rc = ngx_http_llm_attempt_result(r, a, &body, &what);

    if (rc == NGX_OK) {
        rc = ngx_http_llm_cache_vector(r, ctx, &body);
        what = "no embedding in the answer";
    }

    if (rc == NGX_ERROR) {
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED, NGX_ERROR);
        return;
    }

    if (rc != NGX_OK) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "llm: llm_cache_embed: provider \"%V\" model \"%V\" "
                      "failed: %s, the request goes on as a cache miss",
                      &a->target->provider->name,
                      ngx_http_llm_escape(r->pool, &a->call.model, 1),
                      what);

        ctx->cache.semantic = 0;
    }

    ngx_http_llm_zone_lock(zone);

    rc = ngx_http_llm_cache_found(r, ctx, zone, NULL, 1000);

    if (rc == NGX_DECLINED) {
        ngx_http_llm_proceed(r, ctx);
        return;
    }

    if (rc == NGX_ERROR) {
        ngx_http_llm_end(r, ctx, NGX_HTTP_LLM_FAILED, NGX_ERROR);
    }
}


/* the first embedding of an OpenAI embeddings answer, quantized */

static ngx_int_t
ngx_http_llm_cache_vector(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_str_t *body)
{
    u_char                    *pos;
    double                    *v;
    ngx_str_t                  m[1], item, e[1], x;
    ngx_uint_t                 n;
    ngx_http_llm_cache_ctx_t  *c;

    static const char  *answer[] = { "data", NULL };
    static const char  *fields[] = { "embedding", NULL };

    c = &ctx->cache;

    if (ngx_http_llm_json_get(body->data, body->data + body->len, answer, m)
        != NGX_OK
        || m[0].len == 0 || m[0].data[0] != '[')
    {
        return NGX_DECLINED;
    }

    pos = NULL;

    if (ngx_http_llm_json_next(&m[0], &pos, &item) != NGX_OK
        || item.data[0] != '{'
        || ngx_http_llm_json_get(item.data, item.data + item.len, fields, e)
           != NGX_OK
        || e[0].len == 0 || e[0].data[0] != '[')
    {
        return NGX_DECLINED;
    }

    /* at most one double per 2 bytes of the span */

    v = ngx_palloc(r->pool, (e[0].len / 2 + 1) * sizeof(double));
    if (v == NULL) {
        return NGX_ERROR;
    }

    n = 0;
    pos = NULL;

    while (ngx_http_llm_json_next(&e[0], &pos, &x) == NGX_OK) {
        if (x.data[0] != '-' && (x.data[0] < '0' || x.data[0] > '9')) {
            return NGX_DECLINED;
        }

        /* a valid JSON number, followed by ',', ']' or white space */
        v[n++] = strtod((char *) x.data, NULL);
    }

    if (n == 0 || n > 65536) {
        return NGX_DECLINED;
    }

    c->dense = ngx_palloc(r->pool, n);
    if (c->dense == NULL) {
        return NGX_ERROR;
    }

    c->dims = n;

    return ngx_http_llm_dense(v, n, c->dense, &c->norm2, &c->sig);
}


/* x-llm-cache and x-llm-cache-similarity */

ngx_int_t
ngx_http_llm_cache_headers(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char     *p;
    ngx_str_t   v;

    if (ctx->cache.status == NGX_HTTP_LLM_CACHE_NONE) {
        return NGX_OK;
    }

    if (ngx_http_llm_add_header(r, "x-llm-cache",
                                ngx_http_llm_cache_status(ctx))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* a hit says whose answer it was */

    if (ctx->cache.provider.len
        && (ngx_http_llm_add_header(r, "x-llm-provider", &ctx->cache.provider)
            != NGX_OK
            || ngx_http_llm_add_header(r, "x-llm-model",
                                       ngx_http_llm_escape(r->pool,
                                                           &ctx->cache.model,
                                                           0))
               != NGX_OK))
    {
        return NGX_ERROR;
    }

    if (ctx->cache.status != NGX_HTTP_LLM_CACHE_SEMANTIC) {
        return NGX_OK;
    }

    p = ngx_pnalloc(r->pool, sizeof("0.000") - 1);
    if (p == NULL) {
        return NGX_ERROR;
    }

    v.data = p;
    v.len = ngx_sprintf(p, "%ui.%03ui", ctx->cache.similarity / 1000,
                        ctx->cache.similarity % 1000)
            - p;

    return ngx_http_llm_add_header(r, "x-llm-cache-similarity", &v);
}


/* HIT, SEMANTIC, MISS, BYPASS: for $llm_cache_status; empty: none */

ngx_str_t *
ngx_http_llm_cache_status(ngx_http_llm_ctx_t *ctx)
{
    static ngx_str_t  names[] = {
        ngx_null_string, ngx_string("HIT"), ngx_string("SEMANTIC"),
        ngx_string("MISS"), ngx_string("BYPASS")
    };

    return &names[ctx->cache.status];
}


/*
 * Chunks of a stream under way, gathered for the cache: an OpenAI chunk
 * as it is (raw), a text delta (a JSON string), a chunk of jansson.
 */

ngx_http_llm_acc_t *
ngx_http_llm_acc_create(ngx_pool_t *pool)
{
    ngx_http_llm_acc_t  *acc;

    acc = ngx_pcalloc(pool, sizeof(ngx_http_llm_acc_t));
    if (acc == NULL) {
        return NULL;
    }

    acc->pool = pool;

    if (ngx_array_init(&acc->tools, pool, 1, sizeof(ngx_http_llm_acc_tool_t))
        != NGX_OK)
    {
        return NULL;
    }

    return acc;
}


static ngx_int_t
ngx_http_llm_acc_append(ngx_http_llm_acc_t *acc, u_char **buf, size_t *len,
    size_t *size, ngx_str_t *s)
{
    u_char  *nb;
    size_t   n;

    if (*len + s->len > NGX_HTTP_LLM_CACHE_MAX_ANSWER) {
        acc->overflow = 1;
        return NGX_OK;
    }

    if (*size - *len < s->len) {
        n = ngx_max(*size * 2, *len + s->len);
        n = ngx_max(n, 256);

        nb = ngx_pnalloc(acc->pool, n);
        if (nb == NULL) {
            return NGX_ERROR;
        }

        if (*len) {
            ngx_memcpy(nb, *buf, *len);
        }

        *buf = nb;
        *size = n;
    }

    ngx_memcpy(*buf + *len, s->data, s->len);
    *len += s->len;

    return NGX_OK;
}


static ngx_http_llm_acc_tool_t *
ngx_http_llm_acc_tool(ngx_http_llm_acc_t *acc, ngx_uint_t index)
{
    ngx_http_llm_acc_tool_t  *t;

    if (index > 64) {
        acc->overflow = 1;
        return NULL;
    }

    while (acc->tools.nelts <= index) {
        t = ngx_array_push(&acc->tools);
        if (t == NULL) {
            return NULL;
        }

        ngx_memzero(t, sizeof(ngx_http_llm_acc_tool_t));
    }

    return (ngx_http_llm_acc_tool_t *) acc->tools.elts + index;
}


ngx_int_t
ngx_http_llm_acc_text(ngx_http_llm_acc_t *acc, ngx_str_t *literal)
{
    ngx_str_t  s;

    if (ngx_http_llm_json_string(acc->pool, literal, &s) != NGX_OK) {
        acc->overflow = 1;
        return NGX_OK;
    }

    acc->has_content = 1;

    return ngx_http_llm_acc_append(acc, &acc->content, &acc->len,
                                   &acc->size, &s);
}


/* a delta's tool_calls array (a JSON span) */

static ngx_int_t
ngx_http_llm_acc_tools(ngx_http_llm_acc_t *acc, ngx_str_t *calls)
{
    u_char                   *pos;
    ngx_int_t                 index;
    ngx_str_t                 call, m[3], f[2], s;
    ngx_uint_t                n;
    ngx_http_llm_acc_tool_t  *t;

    static const char  *fields[] = { "index", "id", "function", NULL };
    static const char  *function[] = { "name", "arguments", NULL };

    pos = NULL;
    n = 0;

    while (ngx_http_llm_json_next(calls, &pos, &call) == NGX_OK) {
        if (call.data[0] != '{'
            || ngx_http_llm_json_get(call.data, call.data + call.len, fields,
                                     m)
               != NGX_OK)
        {
            acc->overflow = 1;
            return NGX_OK;
        }

        /* a stream's deltas say which call they add to; a message's
         * calls are in order */

        index = m[0].len ? ngx_http_llm_json_int(&m[0]) : (ngx_int_t) n;
        n++;

        if (index < 0) {
            acc->overflow = 1;
            return NGX_OK;
        }

        t = ngx_http_llm_acc_tool(acc, index);
        if (t == NULL) {
            return acc->overflow ? NGX_OK : NGX_ERROR;
        }

        if (m[1].len && m[1].data[0] == '"' && t->id.len == 0
            && ngx_http_llm_json_string(acc->pool, &m[1], &t->id) != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (m[2].len == 0 || m[2].data[0] != '{'
            || ngx_http_llm_json_get(m[2].data, m[2].data + m[2].len,
                                     function, f)
               != NGX_OK)
        {
            continue;
        }

        if (f[0].len && f[0].data[0] == '"' && t->name.len == 0
            && ngx_http_llm_json_string(acc->pool, &f[0], &t->name)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (f[1].len && f[1].data[0] == '"') {
            if (ngx_http_llm_json_string(acc->pool, &f[1], &s) != NGX_OK) {
                return NGX_ERROR;
            }

            if (ngx_http_llm_acc_append(acc, &t->args.data, &t->args.len,
                                        &t->args_size, &s)
                != NGX_OK)
            {
                return NGX_ERROR;
            }
        }
    }

    return NGX_OK;
}


/* an OpenAI chunk: its first choice's delta */

ngx_int_t
ngx_http_llm_acc_chunk(ngx_http_llm_acc_t *acc, ngx_str_t *data)
{
    ngx_str_t  c[1], choice, ch[2], d[2], s;

    static const char  *chunk[] = { "choices", NULL };
    static const char  *fields[] = { "index", "delta", NULL };
    static const char  *delta[] = { "content", "tool_calls", NULL };

    if (acc->overflow) {
        return NGX_OK;
    }

    if (ngx_http_llm_json_get(data->data, data->data + data->len, chunk, c)
        != NGX_OK
        || c[0].len == 0 || c[0].data[0] != '[')
    {
        return NGX_OK;
    }

    if (ngx_http_llm_json_only(&c[0], &choice) != NGX_OK) {
        /* no choice (usage), or several: several are not kept */

        s.data = c[0].data + 1;

        while (*s.data == ' ' || *s.data == '\n' || *s.data == '\t'
               || *s.data == '\r')
        {
            s.data++;
        }

        if (*s.data != ']') {
            acc->overflow = 1;
        }

        return NGX_OK;
    }

    if (choice.data[0] != '{'
        || ngx_http_llm_json_get(choice.data, choice.data + choice.len,
                                 fields, ch)
           != NGX_OK
        || (ch[0].len && ngx_http_llm_json_int(&ch[0]) != 0))
    {
        acc->overflow = 1;
        return NGX_OK;
    }

    if (ch[1].len == 0 || ch[1].data[0] != '{'
        || ngx_http_llm_json_get(ch[1].data, ch[1].data + ch[1].len, delta,
                                 d)
           != NGX_OK)
    {
        return NGX_OK;
    }

    if (d[0].len && d[0].data[0] == '"'
        && ngx_http_llm_acc_text(acc, &d[0]) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (d[1].len && d[1].data[0] == '[') {
        return ngx_http_llm_acc_tools(acc, &d[1]);
    }

    return NGX_OK;
}


/*
 * The log phase: a complete answer is stored (a whole answer or a stream
 * that reached its end, finished by stop, length or tool calls).
 */

void
ngx_http_llm_cache_store(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx)
{
    u_char                      *p;
    size_t                       size;
    ngx_str_t                    key, finish, *model;
    ngx_uint_t                   i, f, semantic;
    ngx_http_llm_acc_t          *acc, whole;
    ngx_http_llm_zone_t         *zone;
    ngx_http_llm_attempt_t      *a;
    ngx_http_llm_cache_ctx_t    *c;
    ngx_http_llm_acc_tool_t     *t;
    ngx_http_llm_cache_tool_t    ct;
    ngx_http_llm_cache_node_t    node, *v;
    ngx_http_llm_cache_index_t  *index;
    ngx_http_llm_cache_counters_t  *cnt;

    c = &ctx->cache;
    a = ctx->answer;
    zone = ctx->conf->cache_zone;

    /* an answer shortened by a budget is not what the key asks for */

    if (!c->store || zone == NULL || a == NULL || a->failed || a->lowered
        || (ctx->outcome != NGX_HTTP_LLM_ANSWERED
            && ctx->outcome != NGX_HTTP_LLM_STREAMED)
        || a->status != NGX_HTTP_OK)
    {
        return;
    }

    ngx_memzero(&node, sizeof(ngx_http_llm_cache_node_t));

    node.prompt = (int32_t) a->call.usage.prompt;
    node.completion = (int32_t) ngx_max(a->call.usage.completion, 0);
    node.cached = (int32_t) a->call.usage.cached;

    model = a->call.resp_model.len ? &a->call.resp_model : &a->call.model;

    if (model->len > 255 || a->target->provider->name.len > 255
        || node.prompt < 0)
    {
        return;
    }

    acc = NULL;
    finish = a->call.finish_reason;

    if (ctx->endpoint == NGX_HTTP_LLM_EMBEDDINGS) {
        if (ctx->answer_body.len == 0 || a->streaming) {
            return;
        }

        node.body_len = (uint32_t) ctx->answer_body.len;
        finish.len = 0;

    } else if (a->streaming) {
        /* STREAMED: the stream reached its end */

        acc = a->call.acc;

        if (acc == NULL) {
            return;
        }

    } else {
        ngx_memzero(&whole, sizeof(ngx_http_llm_acc_t));
        whole.pool = r->pool;

        if (ngx_array_init(&whole.tools, r->pool, 1,
                           sizeof(ngx_http_llm_acc_tool_t))
            != NGX_OK
            || ngx_http_llm_cache_from_body(ctx, &ctx->answer_body, &whole,
                                            &finish)
               != NGX_OK)
        {
            return;
        }

        acc = &whole;
    }

    if (acc) {
        if (acc->overflow) {
            return;
        }

        for (f = 0; f < 3; f++) {
            if (finish.len == ngx_strlen(ngx_http_llm_cache_finishes[f])
                && ngx_strncmp(finish.data, ngx_http_llm_cache_finishes[f],
                               finish.len)
                   == 0)
            {
                break;
            }
        }

        if (f == 3) {
            return;
        }

        node.finish = (uint8_t) f;
        node.content_len = (uint32_t) acc->len;
        node.content_null = !acc->has_content && acc->tools.nelts;

        t = acc->tools.elts;

        for (i = 0; i < acc->tools.nelts; i++) {
            if (t[i].id.len > 0xffff || t[i].name.len > 0xffff) {
                return;
            }

            node.tools_len += sizeof(ngx_http_llm_cache_tool_t)
                              + t[i].id.len + t[i].name.len + t[i].args.len;
        }

        node.ntools = (uint16_t) acc->tools.nelts;
    }

    /* with a vector: a provider's embedding is not asked for when the
     * cache was not read (no-cache) */

    semantic = c->semantic && (c->dense || c->vec);

    if (semantic) {
        node.space[0] = c->space[0];
        node.space[1] = c->space[1];
        if (c->dense) {
            node.sig = c->sig;
            node.norm2 = c->norm2;
            node.dims = (uint32_t) c->dims;

        } else {
            node.sig = c->vec->sig;
            node.norm2 = c->vec->norm2;
            node.nterms = (uint8_t) c->vec->n;
        }
    }

    node.model_len = (uint8_t) model->len;
    node.provider_len = (uint8_t) a->target->provider->name.len;

    size = sizeof(ngx_http_llm_cache_node_t)
           + ngx_http_llm_cache_vec(&node)
           + ngx_http_llm_cache_names(&node) + node.content_len
           + node.tools_len + node.body_len;

    if (size > NGX_HTTP_LLM_CACHE_MAX_ANSWER + 65536) {
        return;
    }

    /* the value is made in the pool, then copied under the lock */

    p = ngx_pnalloc(r->pool, size);
    if (p == NULL) {
        return;
    }

    v = (ngx_http_llm_cache_node_t *) p;
    *v = node;
    p += sizeof(ngx_http_llm_cache_node_t);

    if (node.nterms) {
        p = ngx_cpymem(p, c->vec->terms,
                       node.nterms * sizeof(ngx_http_llm_term_t));
    }

    if (node.dims) {
        p = ngx_cpymem(p, c->dense, node.dims);
    }

    p = ngx_cpymem(p, model->data, model->len);
    p = ngx_cpymem(p, a->target->provider->name.data, node.provider_len);

    if (acc) {
        p = ngx_cpymem(p, acc->content, acc->len);

        t = acc->tools.elts;

        for (i = 0; i < acc->tools.nelts; i++) {
            ct.id_len = (uint16_t) t[i].id.len;
            ct.name_len = (uint16_t) t[i].name.len;
            ct.args_len = (uint32_t) t[i].args.len;

            p = ngx_cpymem(p, &ct, sizeof(ngx_http_llm_cache_tool_t));
            p = ngx_cpymem(p, t[i].id.data, t[i].id.len);
            p = ngx_cpymem(p, t[i].name.data, t[i].name.len);
            p = ngx_cpymem(p, t[i].args.data, t[i].args.len);
        }

    } else {
        p = ngx_cpymem(p, ctx->answer_body.data, ctx->answer_body.len);
    }

    key.data = c->key;
    key.len = sizeof(c->key);

    ngx_http_llm_zone_lock(zone);

    index = semantic ? ngx_http_llm_cache_index(zone, 1) : NULL;

    p = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &key, size);

    if (p == NULL) {
        ngx_http_llm_zone_unlock(zone);
        return;
    }

    ngx_memcpy(p, v, size);

    ngx_http_llm_zone_expires(p, ngx_http_llm_now()
                                 + (uint64_t) ctx->conf->cache_ttl * 1000);
    ngx_http_llm_zone_touch(zone, p);

    if (index) {
        ngx_http_llm_cache_index_add(index, &node, c->key);
    }

    cnt = ngx_http_llm_cache_counters(zone);
    if (cnt) {
        cnt->stores++;
    }

    ngx_http_llm_zone_unlock(zone);
}


/*
 * An entry another node stored (Redis): into the zone as it is, without a
 * touch (it is not published again), and into the index if it has a
 * vector.
 */

void
ngx_http_llm_cache_insert(ngx_http_llm_zone_t *zone, ngx_str_t *key,
    u_char *value, size_t size, uint64_t expire)
{
    u_char                      *p;
    ngx_http_llm_cache_node_t    node;
    ngx_http_llm_cache_index_t  *index;

    if (size < sizeof(ngx_http_llm_cache_node_t) || key->len != 16) {
        return;
    }

    ngx_memcpy(&node, value, sizeof(ngx_http_llm_cache_node_t));

    if (sizeof(ngx_http_llm_cache_node_t) + ngx_http_llm_cache_vec(&node)
        + ngx_http_llm_cache_names(&node) + node.content_len
        + node.tools_len + node.body_len
        != size)
    {
        /* not laid out by this version */
        return;
    }

    ngx_http_llm_zone_lock(zone);

    index = (node.nterms || node.dims) ? ngx_http_llm_cache_index(zone, 1)
                                       : NULL;

    p = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, key, size);

    if (p) {
        ngx_memcpy(p, value, size);
        ngx_http_llm_zone_expires(p, expire);

        if (index) {
            ngx_http_llm_cache_index_add(index, &node, key->data);
        }
    }

    ngx_http_llm_zone_unlock(zone);
}


/* a whole OpenAI answer: its first choice's message and finish reason */

static ngx_int_t
ngx_http_llm_cache_from_body(ngx_http_llm_ctx_t *ctx, ngx_str_t *body,
    ngx_http_llm_acc_t *acc, ngx_str_t *finish)
{
    ngx_str_t  m[1], choice, ch[2], msg[2];

    static const char  *answer[] = { "choices", NULL };
    static const char  *fields[] = { "message", "finish_reason", NULL };
    static const char  *message[] = { "content", "tool_calls", NULL };

    if (ngx_http_llm_json_get(body->data, body->data + body->len, answer, m)
        != NGX_OK
        || m[0].len == 0 || m[0].data[0] != '['
        || ngx_http_llm_json_only(&m[0], &choice) != NGX_OK
        || choice.data[0] != '{'
        || ngx_http_llm_json_get(choice.data, choice.data + choice.len,
                                 fields, ch)
           != NGX_OK
        || ch[0].len == 0 || ch[0].data[0] != '{'
        || ngx_http_llm_json_string(acc->pool, &ch[1], finish) != NGX_OK
        || ngx_http_llm_json_get(ch[0].data, ch[0].data + ch[0].len, message,
                                 msg)
           != NGX_OK)
    {
        return NGX_DECLINED;
    }

    if (msg[0].len && msg[0].data[0] == '"'
        && ngx_http_llm_acc_text(acc, &msg[0]) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (msg[1].len && msg[1].data[0] == '['
        && ngx_http_llm_acc_tools(acc, &msg[1]) != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}
