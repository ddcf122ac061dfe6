
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_ZONE_H_INCLUDED_
#define _NGX_HTTP_LLM_ZONE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A keyed store in slab memory: an llm_zone shared by all workers, or,
 * with no llm_zone, a private one per worker.  Entries are found by
 * (kind, key).  Each kind has its own LRU queue and a policy:
 *
 *   evictable  when memory runs out, the least recently used entry of
 *              the same kind goes first, then those of the other
 *              evictable kinds (cache, limit, wrr, health, in this order);
 *   pinned     never evicted: when memory runs out even after eviction,
 *              a new key is refused and the existing ones keep working.
 *
 * An entry may carry an expiry time (ms, wall clock, ngx_http_llm_now());
 * an expired entry is missing to every function here and is freed when
 * it is met.  Times are wall clock rather than ngx_current_msec because
 * they are compared with provider dates (Retry-After), calendar periods
 * (budgets) and, through Redis, with other nodes.
 *
 * ngx_http_llm_zone_get(), _expires() and _touch() are called with the
 * lock held; ngx_http_llm_zone_walk() and _generation() take it
 * themselves.  Nothing here logs or blocks.
 */

#define NGX_HTTP_LLM_ZONE_VERSION  4

/* the longest key: a longer one is refused */
#define NGX_HTTP_LLM_ZONE_KEY_MAX  1024

/* without llm_zone, each worker's own */
#define NGX_HTTP_LLM_ZONE_PRIVATE_SIZE  (1024 * 1024)

/* the kinds, see ngx_http_llm_kinds[] in ngx_http_llm_zone.c */
#define NGX_HTTP_LLM_KIND_HEALTH   0       /* evictable */
#define NGX_HTTP_LLM_KIND_WRR      1       /* evictable */
#define NGX_HTTP_LLM_KIND_BUDGET   2       /* pinned */
#define NGX_HTTP_LLM_KIND_CACHE    3       /* evictable, 1h by default */
#define NGX_HTTP_LLM_KIND_LIMIT    4       /* evictable, 1m by default */
#define NGX_HTTP_LLM_KIND_STATS    5       /* pinned */
#define NGX_HTTP_LLM_KIND_N        6


typedef struct {
    uint32_t                    magic;         /* these three first, at */
    uint32_t                    version;       /* the same place in every */
    uint32_t                    layout;        /* version of the module */

    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru[NGX_HTTP_LLM_KIND_N];
    uint64_t                    generation;    /* of the last touch */
    uint64_t                    node_id;       /* random, this nginx's
                                                  name to Redis */
    ngx_uint_t                  redis_up;      /* llm_redis is synced */
    time_t                      redis_synced;  /* the last cycle's end */
    ngx_uint_t                  lease_wanted;  /* a request waits for a
                                                  budget lease */

    /* per kind: live entries, their bytes, and how many were evicted */
    uint64_t                    entries[NGX_HTTP_LLM_KIND_N];
    uint64_t                    bytes[NGX_HTTP_LLM_KIND_N];
    uint64_t                    evicted[NGX_HTTP_LLM_KIND_N];
} ngx_http_llm_zone_sh_t;


typedef struct {
    ngx_str_t                   name;
    size_t                      size;
    ngx_shm_zone_t             *shm_zone;      /* NULL: private */
    ngx_http_llm_zone_sh_t     *sh;
    ngx_slab_pool_t            *shpool;
    unsigned                    synced:1;      /* named by llm_redis */
} ngx_http_llm_zone_t;


/* an entry as the walk shows it */
typedef struct {
    ngx_uint_t                  kind;
    ngx_str_t                   key;
    void                       *value;
    size_t                      size;
    uint64_t                    expire;        /* ms, 0: never */
    uint64_t                    updated;       /* generation, 0: never */
} ngx_http_llm_zone_entry_t;


/* NGX_OK: go on; NGX_DONE: stop the walk */
typedef ngx_int_t (*ngx_http_llm_zone_walk_pt)(ngx_http_llm_zone_entry_t *e,
    void *data);


ngx_http_llm_zone_t *ngx_http_llm_zone_add(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
/* a private zone of size bytes for this worker (cycle pool) */
ngx_int_t ngx_http_llm_zone_private(ngx_cycle_t *cycle,
    ngx_http_llm_zone_t *zone, size_t size);

void ngx_http_llm_zone_lock(ngx_http_llm_zone_t *zone);
void ngx_http_llm_zone_unlock(ngx_http_llm_zone_t *zone);

/*
 * The value of (kind, key), or NULL.  With size, a missing entry (or one
 * of another size) is created zeroed, expiring after the kind's default
 * TTL if it has one; NULL then means the key is longer than
 * NGX_HTTP_LLM_ZONE_KEY_MAX or there is no memory, even after expired
 * entries were freed and evictable ones evicted.  Either way the entry
 * becomes the most recently used of its kind.  Every call may free
 * entries (expired ones; evicted ones when it creates): a value is used
 * until the next call, and not after.
 */
void *ngx_http_llm_zone_get(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key, size_t size);

/* the value of (kind, key), or NULL, as _get() without size, but the
 * entry does not become the most recently used */
void *ngx_http_llm_zone_peek(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key);

/* the size of the value of an entry (from _get) */
size_t ngx_http_llm_zone_value_size(void *value);

/* the entry of value (from _get) expires at ms (wall clock); 0: never */
void ngx_http_llm_zone_expires(void *value, uint64_t ms);

/*
 * The entry of value (from _get) has changed: its "updated" becomes the
 * zone's next generation.  Generations grow by one per touch of any
 * entry, so a reader that remembers the highest one it has seen (Redis
 * sync) finds what changed since by walking for updated above it.  A zone
 * that starts clean starts again from 0: a generation lower than the one
 * remembered means "everything".
 */
void ngx_http_llm_zone_touch(ngx_http_llm_zone_t *zone, void *value);
uint64_t ngx_http_llm_zone_generation(ngx_http_llm_zone_t *zone);

/*
 * Calls handler for every live entry of kind, most recently used first,
 * under the zone's lock (expired ones met are freed).  The handler may
 * read and change e->value, but must be short, must not call the zone's
 * functions and must not block: every worker waits while it runs.
 * NGX_OK, or NGX_DONE when the handler stopped the walk.
 */
ngx_int_t ngx_http_llm_zone_walk(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_http_llm_zone_walk_pt handler, void *data);

/* the counters of a kind, read under the lock */
typedef struct {
    uint64_t                    entries;
    uint64_t                    bytes;
    uint64_t                    evicted;
} ngx_http_llm_zone_stats_t;

void ngx_http_llm_zone_stats(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_http_llm_zone_stats_t *st);

/* wall clock in milliseconds */
uint64_t ngx_http_llm_now(void);


#endif /* _NGX_HTTP_LLM_ZONE_H_INCLUDED_ */
