
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include "ngx_http_llm_zone.h"


#define NGX_HTTP_LLM_PRIVATE_SIZE  (1024 * 1024)


typedef struct {
    ngx_rbtree_node_t           node;          /* key: hash */
    ngx_queue_t                 queue;
    size_t                      size;
    u_short                     len;
    u_char                      kind;
    u_char                      data[1];       /* key, then the value */
} ngx_http_llm_zone_node_t;


static ngx_int_t ngx_http_llm_zone_init(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_llm_zone_init_sh(ngx_http_llm_zone_t *zone);
static void ngx_http_llm_zone_insert(ngx_rbtree_node_t *temp,
    ngx_rbtree_node_t *node, ngx_rbtree_node_t *sentinel);
static ngx_int_t ngx_http_llm_zone_cmp(ngx_http_llm_zone_node_t *n,
    ngx_uint_t kind, u_char *key, size_t len);


extern ngx_module_t  ngx_http_llm_gateway_module;


#define ngx_http_llm_zone_value(n)                                            \
    ngx_align_ptr((n)->data + (n)->len, NGX_ALIGNMENT)


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

    return zone;
}


static ngx_int_t
ngx_http_llm_zone_init(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_llm_zone_t  *ozone = data;

    size_t                len;
    ngx_http_llm_zone_t  *zone;

    zone = shm_zone->data;

    if (ozone) {
        /* reload: keep what the running workers have gathered */
        zone->sh = ozone->sh;
        zone->shpool = ozone->shpool;
        return NGX_OK;
    }

    zone->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        zone->sh = zone->shpool->data;
        return NGX_OK;
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
    zone->sh = ngx_slab_alloc_locked(zone->shpool,
                                     sizeof(ngx_http_llm_zone_sh_t));
    if (zone->sh == NULL) {
        return NGX_ERROR;
    }

    zone->shpool->data = zone->sh;

    ngx_rbtree_init(&zone->sh->rbtree, &zone->sh->sentinel,
                    ngx_http_llm_zone_insert);
    ngx_queue_init(&zone->sh->lru);
    zone->sh->version = NGX_HTTP_LLM_ZONE_VERSION;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_zone_private(ngx_cycle_t *cycle, ngx_http_llm_zone_t *zone)
{
    u_char           *p;
    ngx_slab_pool_t  *sp;

    /* without llm_zone each worker keeps its own state, as nginx keeps
     * upstream state without "zone" */

    p = ngx_pmemalign(cycle->pool, NGX_HTTP_LLM_PRIVATE_SIZE, ngx_pagesize);
    if (p == NULL) {
        return NGX_ERROR;
    }

    sp = (ngx_slab_pool_t *) p;

    ngx_memzero(sp, sizeof(ngx_slab_pool_t));

    sp->end = p + NGX_HTTP_LLM_PRIVATE_SIZE;
    sp->min_shift = 3;
    sp->addr = p;

    ngx_slab_init(sp);

    sp->log_nomem = 0;

    zone->shpool = sp;
    zone->shm_zone = NULL;
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

    return ngx_memcmp(n->data, key, len);
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

            p = (ngx_http_llm_zone_cmp(n, t->kind, t->data, t->len) < 0)
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


void *
ngx_http_llm_zone_get(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    ngx_str_t *key, size_t size)
{
    size_t                     n;
    uint32_t                   hash;
    ngx_int_t                  rc;
    ngx_uint_t                 i;
    ngx_queue_t               *q;
    ngx_rbtree_node_t         *node, *sentinel;
    ngx_http_llm_zone_node_t  *zn;

    hash = ngx_crc32_short(key->data, key->len) ^ (uint32_t) kind;

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
            ngx_queue_remove(&zn->queue);
            ngx_queue_insert_head(&zone->sh->lru, &zn->queue);

            if (size && zn->size != size) {
                /* the layout of this entry changed (a reload with other
                 * targets): start it afresh */
                break;
            }

            return ngx_http_llm_zone_value(zn);
        }

        node = (rc > 0) ? node->left : node->right;
    }

    if (size == 0) {
        return NULL;
    }

    if (node != sentinel) {
        zn = (ngx_http_llm_zone_node_t *) node;
        ngx_queue_remove(&zn->queue);
        ngx_rbtree_delete(&zone->sh->rbtree, node);
        ngx_slab_free_locked(zone->shpool, zn);
    }

    n = offsetof(ngx_http_llm_zone_node_t, data) + key->len + NGX_ALIGNMENT
        + size;

    zn = ngx_slab_alloc_locked(zone->shpool, n);

    for (i = 0; zn == NULL && i < 16; i++) {

        if (ngx_queue_empty(&zone->sh->lru)) {
            break;
        }

        q = ngx_queue_last(&zone->sh->lru);
        ngx_queue_remove(q);

        node = (ngx_rbtree_node_t *)
                   ngx_queue_data(q, ngx_http_llm_zone_node_t, queue);

        ngx_rbtree_delete(&zone->sh->rbtree, node);
        ngx_slab_free_locked(zone->shpool, node);

        zn = ngx_slab_alloc_locked(zone->shpool, n);
    }

    if (zn == NULL) {
        return NULL;
    }

    zn->node.key = hash;
    zn->size = size;
    zn->len = (u_short) key->len;
    zn->kind = (u_char) kind;
    ngx_memcpy(zn->data, key->data, key->len);
    ngx_memzero(ngx_http_llm_zone_value(zn), size);

    ngx_rbtree_insert(&zone->sh->rbtree, &zn->node);
    ngx_queue_insert_head(&zone->sh->lru, &zn->queue);

    return ngx_http_llm_zone_value(zn);
}


uint64_t
ngx_http_llm_now(void)
{
    ngx_time_t  *tp;

    tp = ngx_timeofday();

    return (uint64_t) tp->sec * 1000 + tp->msec;
}
