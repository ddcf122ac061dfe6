
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include "ngx_http_llm_zone.h"


#define NGX_HTTP_LLM_ZONE_MAGIC  0x5a4d4c4c         /* "LLMZ" */

/* expired entries freed from the tail of a kind on each insert, as
 * ngx_http_limit_req_expire() does */
#define NGX_HTTP_LLM_EXPIRE_N    2

/* live entries evicted at most for one insert */
#define NGX_HTTP_LLM_EVICT_N     16


typedef struct {
    ngx_uint_t                  pinned;        /* never evicted */
    uint64_t                    ttl;           /* ms, 0: none */
} ngx_http_llm_kind_t;


typedef struct {
    ngx_rbtree_node_t           node;          /* key: hash */
    ngx_queue_t                 queue;         /* in the kind's LRU */
    uint64_t                    expire;        /* ms, 0: never */
    uint64_t                    updated;       /* generation */
    uint32_t                    size;          /* of the value */
    u_short                     len;           /* of the key */
    u_char                      kind;
    u_char                      data[1];       /* the value, then the key */
} ngx_http_llm_zone_node_t;


static ngx_int_t ngx_http_llm_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_llm_zone_init_sh(ngx_http_llm_zone_t *zone);
static void ngx_http_llm_zone_resized(ngx_conf_t *cf,
    ngx_shm_zone_t *shm_zone);
static void ngx_http_llm_zone_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_llm_zone_cmp(ngx_http_llm_zone_node_t *n,
    ngx_uint_t kind, u_char *key, size_t len);
static ngx_http_llm_zone_node_t *ngx_http_llm_zone_lookup(
    ngx_http_llm_zone_t *zone, ngx_uint_t kind, ngx_str_t *key,
    uint32_t hash);
static ngx_http_llm_zone_node_t *ngx_http_llm_zone_alloc(
    ngx_http_llm_zone_t *zone, ngx_uint_t kind, size_t size);
static void ngx_http_llm_zone_expire(ngx_http_llm_zone_t *zone,
    ngx_uint_t kind, uint64_t now, ngx_uint_t n);
static ngx_int_t ngx_http_llm_zone_evict(ngx_http_llm_zone_t *zone,
    ngx_uint_t kind);
static void ngx_http_llm_zone_free(ngx_http_llm_zone_t *zone,
    ngx_http_llm_zone_node_t *zn);


extern ngx_module_t  ngx_http_llm_gateway_module;


/* indexed by NGX_HTTP_LLM_KIND_* */
static ngx_http_llm_kind_t  ngx_http_llm_kinds[] = {
    { 0, 0 },                                  /* health */
    { 0, 0 },                                  /* wrr */
    { 1, 0 },                                  /* budget */
    { 0, 3600 * 1000 },                        /* cache */
    { 0, 60 * 1000 },                          /* limit */
    { 1, 0 }                                   /* stats */
};


/* which evictable kinds give way to an insert, after the inserting
 * kind's own entries: the cheapest to lose first */
static ngx_uint_t  ngx_http_llm_evict_order[] = {
    NGX_HTTP_LLM_KIND_CACHE,
    NGX_HTTP_LLM_KIND_LIMIT,
    NGX_HTTP_LLM_KIND_WRR,
    NGX_HTTP_LLM_KIND_HEALTH
};


/* the value is at a fixed offset, so that an entry is found from it */
#define NGX_HTTP_LLM_ZONE_VALUE                                               \
    ngx_align(offsetof(ngx_http_llm_zone_node_t, data), NGX_ALIGNMENT)

#define NGX_HTTP_LLM_ZONE_LAYOUT                                              \
    ((uint32_t) (sizeof(ngx_http_llm_zone_sh_t) << 16                         \
                 | NGX_HTTP_LLM_ZONE_VALUE))

#define ngx_http_llm_zone_value(zn)                                           \
    ((void *) ((u_char *) (zn) + NGX_HTTP_LLM_ZONE_VALUE))

#define ngx_http_llm_zone_node(value)                                         \
    ((ngx_http_llm_zone_node_t *) ((u_char *) (value)                         \
                                   - NGX_HTTP_LLM_ZONE_VALUE))

#define ngx_http_llm_zone_key(zn)                                             \
    ((u_char *) ngx_http_llm_zone_value(zn) + (zn)->size)


ngx_http_llm_zone_t *
ngx_http_llm_zone_add(ngx_conf_t *cf, ngx_str_t *name, size_t size)
{
    ngx_shm_zone_t       *shm_zone;
    ngx_http_llm_zone_t  *zone;

    zone = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_zone_t));
    if (zone == NULL) {
        return NULL;
    }

    shm_zone = ngx_shared_memory_add(cf, name, size,
                                     &ngx_http_llm_gateway_module);
    if (shm_zone == NULL) {
        return NULL;
    }

    if (shm_zone->data) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "duplicate llm_zone \"%V\"", name);
        return NULL;
    }

    shm_zone->init = ngx_http_llm_zone_init;
    shm_zone->data = zone;

    zone->name = *name;
    zone->size = size;
    zone->shm_zone = shm_zone;

    ngx_http_llm_zone_resized(cf, shm_zone);

    return zone;
}


/*
 * nginx hands a zone over to the new configuration only if its size is
 * unchanged; otherwise the new workers get a new, empty zone and nginx
 * says nothing.  Say it.
 */

static void
ngx_http_llm_zone_resized(ngx_conf_t *cf, ngx_shm_zone_t *shm_zone)
{
    ngx_uint_t        i;
    ngx_cycle_t      *old;
    ngx_shm_zone_t   *oshm_zone;
    ngx_list_part_t  *part;

    old = cf->cycle->old_cycle;

    if (old == NULL || ngx_is_init_cycle(old)) {
        return;
    }

    part = &old->shared_memory.part;
    oshm_zone = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return;
            }

            part = part->next;
            oshm_zone = part->elts;
            i = 0;
        }

        if (oshm_zone[i].tag == shm_zone->tag
            && oshm_zone[i].shm.name.len == shm_zone->shm.name.len
            && ngx_strncmp(oshm_zone[i].shm.name.data, shm_zone->shm.name.data,
                           shm_zone->shm.name.len)
               == 0)
        {
            if (oshm_zone[i].shm.size != shm_zone->shm.size) {
                ngx_conf_log_error(NGX_LOG_NOTICE, cf, 0,
                                   "llm_zone \"%V\" changed its size from "
                                   "%uzk to %uzk, it starts empty",
                                   &shm_zone->shm.name,
                                   oshm_zone[i].shm.size / 1024,
                                   shm_zone->shm.size / 1024);
            }

            return;
        }
    }
}


static ngx_int_t
ngx_http_llm_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_zone_t  *ozone = data;

    size_t                   len;
    ngx_int_t                rc;
    ngx_http_llm_zone_t     *zone;
    ngx_http_llm_zone_sh_t  *sh;

    zone = shm_zone->data;
    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (ozone || shm_zone->shm.exists) {

        /* reload: keep what the running workers have gathered, if the
         * header says it is laid out the way this code expects */

        sh = zone->shpool->data;

        if (sh->magic == NGX_HTTP_LLM_ZONE_MAGIC
            && sh->version == NGX_HTTP_LLM_ZONE_VERSION
            && sh->layout == NGX_HTTP_LLM_ZONE_LAYOUT)
        {
            zone->sh = sh;
            return NGX_OK;
        }

        /*
         * Workers of the old configuration may still use the old header
         * and its entries: they are left alone (their memory is lost
         * until a restart) and the new workers get a header of their own.
         */

        ngx_log_error(NGX_LOG_NOTICE, shm_zone->shm.log, 0,
                      "llm_zone \"%V\" was laid out by another version of "
                      "the module, it starts empty", &shm_zone->shm.name);

        ngx_shmtx_lock(&zone->shpool->mutex);
        rc = ngx_http_llm_zone_init_sh(zone);
        ngx_shmtx_unlock(&zone->shpool->mutex);

        return rc;
    }

    if (ngx_http_llm_zone_init_sh(zone) != NGX_OK) {
        return NGX_ERROR;
    }

    len = sizeof(" in llm_zone \"\"") + shm_zone->shm.name.len;

    zone->shpool->log_ctx = ngx_slab_alloc_locked(zone->shpool, len);
    if (zone->shpool->log_ctx == NULL) {
        return NGX_ERROR;
    }

    ngx_sprintf(zone->shpool->log_ctx, " in llm_zone \"%V\"%Z",
                &shm_zone->shm.name);

    zone->shpool->log_nomem = 0;

    return NGX_OK;
}


static ngx_int_t
ngx_http_llm_zone_init_sh(ngx_http_llm_zone_t *zone)
{
    ngx_uint_t               i;
    ngx_http_llm_zone_sh_t  *sh;

    sh = ngx_slab_calloc_locked(zone->shpool, sizeof(ngx_http_llm_zone_sh_t));
    if (sh == NULL) {
        return NGX_ERROR;
    }

    ngx_rbtree_init(&sh->rbtree, &sh->sentinel, ngx_http_llm_zone_insert);

    for (i = 0; i < NGX_HTTP_LLM_KIND_N; i++) {
        ngx_queue_init(&sh->lru[i]);
    }

    sh->node_id = ((uint64_t) ngx_random() << 32 | (uint64_t) ngx_random())
                  ^ (uint64_t) ngx_time();
    sh->magic = NGX_HTTP_LLM_ZONE_MAGIC;
    sh->version = NGX_HTTP_LLM_ZONE_VERSION;
    sh->layout = NGX_HTTP_LLM_ZONE_LAYOUT;

    zone->sh = sh;
    zone->shpool->data = sh;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_zone_private(ngx_cycle_t *cycle, ngx_http_llm_zone_t *zone,
    size_t size)
{
    u_char           *p;
    ngx_slab_pool_t  *sp;

    /* without llm_zone each worker keeps its own state, as nginx keeps
     * upstream state without "zone" */

    p = ngx_pmemalign(cycle->pool, size, ngx_pagesize);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sp = (ngx_slab_pool_t *) p;

    ngx_memzero(sp, sizeof(ngx_slab_pool_t));

    sp->end = p + size;
    sp->min_shift = 3;
    sp->addr = p;

    ngx_slab_init(sp);

    sp->log_nomem = 0;

    zone->shpool = sp;
    zone->shm_zone = NULL;
    zone->size = size;
    ngx_str_set(&zone->name, "(private)");

    return ngx_http_llm_zone_init_sh(zone);
}


void
ngx_http_llm_zone_lock(ngx_http_llm_zone_t *zone)
{
    if (zone->shm_zone) {
        ngx_shmtx_lock(&zone->shpool->mutex);
    }
}


void
ngx_http_llm_zone_unlock(ngx_http_llm_zone_t *zone)
{
    if (zone->shm_zone) {
        ngx_shmtx_unlock(&zone->shpool->mutex);
    }
}


static ngx_int_t
ngx_http_llm_zone_cmp(ngx_http_llm_zone_node_t *n, ngx_uint_t kind,
    u_char *key, size_t len)
{
    if (n->kind != kind) {
        return (ngx_int_t) n->kind - (ngx_int_t) kind;
    }

    if (n->len != len) {
        return (ngx_int_t) n->len - (ngx_int_t) len;
    }

    return ngx_memcmp(ngx_http_llm_zone_key(n), key, len);
}


static void
ngx_http_llm_zone_insert(ngx_rbtree_node_t *temp, ngx_rbtree_node_t *node,
    ngx_rbtree_node_t *sentinel)
{
    ngx_rbtree_node_t         **p;
    ngx_http_llm_zone_node_t   *n, *t;

    for ( ;; ) {

        if (node->key < temp->key) {
            p = &temp->left;

        } else if (node->key > temp->key) {
            p = &temp->right;

        } else {
            n = (ngx_http_llm_zone_node_t *) node;
            t = (ngx_http_llm_zone_node_t *) temp;

            p = (ngx_http_llm_zone_cmp(n, t->kind, ngx_http_llm_zone_key(t),
                                       t->len)
                 < 0)
                ? &temp->left : &temp->right;
        }

        if (*p == sentinel) {
            break;
        }

        temp = *p;
    }

    *p = node;
    node->parent = temp;
    node->left = sentinel;
    node->right = sentinel;
    ngx_rbt_red(node);
}


static ngx_http_llm_zone_node_t *
ngx_http_llm_zone_lookup(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key, uint32_t hash)
{
    ngx_int_t                  rc;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_http_llm_zone_node_t  *zn;

    node = zone->sh->rbtree.root;
    sentinel = zone->sh->rbtree.sentinel;

    while (node != sentinel) {

        if (hash < node->key) {
            node = node->left;
            continue;
        }

        if (hash > node->key) {
            node = node->right;
            continue;
        }

        zn = (ngx_http_llm_zone_node_t *) node;

        rc = ngx_http_llm_zone_cmp(zn, kind, key->data, key->len);

        if (rc == 0) {
            return zn;
        }

        node = (rc > 0) ? node->left : node->right;
    }

    return NULL;
}


void *
ngx_http_llm_zone_get(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key, size_t size)
{
    uint32_t                   hash;
    uint64_t                   now;
    ngx_http_llm_zone_node_t  *zn;

    if (key->len > NGX_HTTP_LLM_ZONE_KEY_MAX
        || size > NGX_MAX_UINT32_VALUE)
    {
        return NULL;
    }

    hash = ngx_crc32_short(key->data, key->len) ^ (uint32_t) kind;

    zn = ngx_http_llm_zone_lookup(zone, kind, key, hash);

    if (zn) {
        if (zn->expire && zn->expire <= ngx_http_llm_now()) {
            ngx_http_llm_zone_free(zone, zn);

        } else if (size && zn->size != size) {
            /* the layout of this entry changed (a reload with other
             * targets): start it afresh */
            ngx_http_llm_zone_free(zone, zn);

        } else {
            ngx_queue_remove(&zn->queue);
            ngx_queue_insert_head(&zone->sh->lru[kind], &zn->queue);

            return ngx_http_llm_zone_value(zn);
        }
    }

    if (size == 0) {
        return NULL;
    }

    now = ngx_http_llm_now();

    ngx_http_llm_zone_expire(zone, kind, now, NGX_HTTP_LLM_EXPIRE_N);

    zn = ngx_http_llm_zone_alloc(zone, kind, NGX_HTTP_LLM_ZONE_VALUE + size
                                             + key->len);
    if (zn == NULL) {
        return NULL;
    }

    zn->node.key = hash;
    zn->expire = ngx_http_llm_kinds[kind].ttl
                 ? now + ngx_http_llm_kinds[kind].ttl : 0;
    zn->updated = 0;
    zn->size = (uint32_t) size;
    zn->len = (u_short) key->len;
    zn->kind = (u_char) kind;

    ngx_memzero(ngx_http_llm_zone_value(zn), size);
    ngx_memcpy(ngx_http_llm_zone_key(zn), key->data, key->len);

    ngx_rbtree_insert(&zone->sh->rbtree, &zn->node);
    ngx_queue_insert_head(&zone->sh->lru[kind], &zn->queue);

    zone->sh->entries[kind]++;
    zone->sh->bytes[kind] += NGX_HTTP_LLM_ZONE_VALUE + size + key->len;

    return ngx_http_llm_zone_value(zn);
}


/*
 * Memory for a new entry of kind: when the slab has none, expired
 * entries of every kind are freed first, then live ones are evicted
 * (ngx_http_llm_zone_evict()), never pinned ones.
 */

static ngx_http_llm_zone_node_t *
ngx_http_llm_zone_alloc(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    size_t size)
{
    uint64_t                   now;
    ngx_uint_t                 i;
    ngx_http_llm_zone_node_t  *zn;

    zn = ngx_slab_alloc_locked(zone->shpool, size);

    if (zn) {
        return zn;
    }

    now = ngx_http_llm_now();

    for (i = 0; i < NGX_HTTP_LLM_KIND_N; i++) {
        ngx_http_llm_zone_expire(zone, i, now, NGX_HTTP_LLM_EXPIRE_N);
    }

    zn = ngx_slab_alloc_locked(zone->shpool, size);

    for (i = 0; zn == NULL && i < NGX_HTTP_LLM_EVICT_N; i++) {

        if (ngx_http_llm_zone_evict(zone, kind) != NGX_OK) {
            break;
        }

        zn = ngx_slab_alloc_locked(zone->shpool, size);
    }

    return zn;
}


/* frees up to n expired entries from the tail of kind's LRU queue */

static void
ngx_http_llm_zone_expire(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    uint64_t now, ngx_uint_t n)
{
    ngx_queue_t               *q;
    ngx_http_llm_zone_node_t  *zn;

    while (n--) {

        if (ngx_queue_empty(&zone->sh->lru[kind])) {
            return;
        }

        q = ngx_queue_last(&zone->sh->lru[kind]);
        zn = ngx_queue_data(q, ngx_http_llm_zone_node_t, queue);

        if (zn->expire == 0 || zn->expire > now) {
            return;
        }

        ngx_http_llm_zone_free(zone, zn);
    }
}


/*
 * Evicts the least recently used entry of kind if kind is evictable,
 * else of the first evictable kind in ngx_http_llm_evict_order[] that has
 * one.  Same kind first: its entries are about the size wanted, so what
 * is freed is most likely to be usable by the slab allocator.
 */

static ngx_int_t
ngx_http_llm_zone_evict(ngx_http_llm_zone_t *zone, ngx_uint_t kind)
{
    ngx_uint_t    i, k;
    ngx_queue_t  *q;

    k = kind;

    for (i = 0; /* void */ ; i++) {

        if (!ngx_http_llm_kinds[k].pinned
            && !ngx_queue_empty(&zone->sh->lru[k]))
        {
            break;
        }

        if (i == sizeof(ngx_http_llm_evict_order) / sizeof(ngx_uint_t)) {
            return NGX_DECLINED;
        }

        k = ngx_http_llm_evict_order[i];
    }

    q = ngx_queue_last(&zone->sh->lru[k]);

    ngx_http_llm_zone_free(zone,
                           ngx_queue_data(q, ngx_http_llm_zone_node_t, queue));

    zone->sh->evicted[k]++;

    return NGX_OK;
}


static void
ngx_http_llm_zone_free(ngx_http_llm_zone_t *zone,
    ngx_http_llm_zone_node_t *zn)
{
    ngx_queue_remove(&zn->queue);
    ngx_rbtree_delete(&zone->sh->rbtree, &zn->node);

    zone->sh->entries[zn->kind]--;
    zone->sh->bytes[zn->kind] -= NGX_HTTP_LLM_ZONE_VALUE + zn->size + zn->len;

    ngx_slab_free_locked(zone->shpool, zn);
}


void
ngx_http_llm_zone_stats(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_http_llm_zone_stats_t *st)
{
    st->entries = zone->sh->entries[kind];
    st->bytes = zone->sh->bytes[kind];
    st->evicted = zone->sh->evicted[kind];
}


void *
ngx_http_llm_zone_peek(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key)
{
    uint32_t                   hash;
    ngx_http_llm_zone_node_t  *zn;

    if (key->len > NGX_HTTP_LLM_ZONE_KEY_MAX) {
        return NULL;
    }

    hash = ngx_crc32_short(key->data, key->len) ^ (uint32_t) kind;

    zn = ngx_http_llm_zone_lookup(zone, kind, key, hash);

    if (zn == NULL || (zn->expire && zn->expire <= ngx_http_llm_now())) {
        return NULL;
    }

    return ngx_http_llm_zone_value(zn);
}


size_t
ngx_http_llm_zone_value_size(void *value)
{
    return ngx_http_llm_zone_node(value)->size;
}


void
ngx_http_llm_zone_expires(void *value, uint64_t ms)
{
    ngx_http_llm_zone_node(value)->expire = ms;
}


void
ngx_http_llm_zone_touch(ngx_http_llm_zone_t *zone, void *value)
{
    ngx_http_llm_zone_node(value)->updated = ++zone->sh->generation;
}


uint64_t
ngx_http_llm_zone_generation(ngx_http_llm_zone_t *zone)
{
    uint64_t  generation;

    ngx_http_llm_zone_lock(zone);
    generation = zone->sh->generation;
    ngx_http_llm_zone_unlock(zone);

    return generation;
}


ngx_int_t
ngx_http_llm_zone_walk(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_http_llm_zone_walk_pt handler, void *data)
{
    uint64_t                    now;
    ngx_int_t                   rc;
    ngx_queue_t                *q, *next, *lru;
    ngx_http_llm_zone_node_t   *zn;
    ngx_http_llm_zone_entry_t   e;

    now = ngx_http_llm_now();
    rc = NGX_OK;

    ngx_http_llm_zone_lock(zone);

    lru = &zone->sh->lru[kind];

    for (q = ngx_queue_head(lru); q != ngx_queue_sentinel(lru); q = next) {

        next = ngx_queue_next(q);
        zn = ngx_queue_data(q, ngx_http_llm_zone_node_t, queue);

        if (zn->expire && zn->expire <= now) {
            ngx_http_llm_zone_free(zone, zn);
            continue;
        }

        e.kind = kind;
        e.key.data = ngx_http_llm_zone_key(zn);
        e.key.len = zn->len;
        e.value = ngx_http_llm_zone_value(zn);
        e.size = zn->size;
        e.expire = zn->expire;
        e.updated = zn->updated;

        rc = handler(&e, data);

        if (rc == NGX_DONE) {
            break;
        }
    }

    ngx_http_llm_zone_unlock(zone);

    return rc;
}


uint64_t
ngx_http_llm_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
