
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
 * (kind, key); least recently used ones are evicted when memory runs out.
 * Callers hold the lock while they touch an entry.
 */

#define NGX_HTTP_LLM_ZONE_VERSION  1

#define NGX_HTTP_LLM_KIND_HEALTH   1
#define NGX_HTTP_LLM_KIND_WRR      2


typedef struct {
    ngx_rbtree_t                rbtree;
    ngx_rbtree_node_t           sentinel;
    ngx_queue_t                 lru;
    ngx_uint_t                  version;
} ngx_http_llm_zone_sh_t;


typedef struct {
    ngx_str_t                   name;
    size_t                      size;
    ngx_shm_zone_t             *shm_zone;      /* NULL: private */
    ngx_http_llm_zone_sh_t     *sh;
    ngx_slab_pool_t            *shpool;
} ngx_http_llm_zone_t;


ngx_http_llm_zone_t *ngx_http_llm_zone_add(ngx_conf_t *cf, ngx_str_t *name,
    size_t size);
ngx_int_t ngx_http_llm_zone_private(ngx_cycle_t *cycle,
    ngx_http_llm_zone_t *zone);

void ngx_http_llm_zone_lock(ngx_http_llm_zone_t *zone);
void ngx_http_llm_zone_unlock(ngx_http_llm_zone_t *zone);

/* the entry's value, or NULL; with size, a missing entry is created
 * zeroed (NULL: no memory even after eviction) */
void *ngx_http_llm_zone_get(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key, size_t size);

/* wall clock in milliseconds */
uint64_t ngx_http_llm_now(void);


#endif /* _NGX_HTTP_LLM_ZONE_H_INCLUDED_ */
