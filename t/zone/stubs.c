
/*
 * The nginx functions ngx_http_llm_zone.c calls, for the zone's unit
 * test (Debian's nginx-dev ships headers, not sources).
 *
 * The slab allocator is a budget over malloc: an allocation costs its
 * size rounded up to a power of two (at least 8 bytes; whole pages above
 * half a page), as in nginx's slab, and fails once the pool's bytes are
 * spent.  The red-black tree is a plain binary search tree with the same
 * interface.  The mutex counts and refuses to be taken twice.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "stubs.h"


ngx_uint_t              ngx_pagesize = 4096;
ngx_module_t            ngx_http_llm_gateway_module;

static ngx_time_t       stub_time;
volatile ngx_time_t    *ngx_cached_time = &stub_time;

static uint32_t  stub_crc32_table16[] = {
    0x00000000, 0x1db71064, 0x3b6e20c8, 0x26d930ac,
    0x76dc4190, 0x6b6b51f4, 0x4db26158, 0x5005713c,
    0xedb88320, 0xf00f9344, 0xd6d6a3e8, 0xcb61b38c,
    0x9b64c2b0, 0x86d3d2d4, 0xa00ae278, 0xbdbdf21c
};

uint32_t               *ngx_crc32_table_short = stub_crc32_table16;

ngx_int_t               stub_locked;
ngx_int_t               stub_lock_errors;
ngx_uint_t              stub_allocs;
ngx_uint_t              stub_log_level;
char                    stub_log[1024];


void
stub_set_time(uint64_t ms)
{
    stub_time.sec = ms / 1000;
    stub_time.msec = ms % 1000;
}


/* slab */

typedef struct {
    size_t      cost;
    ngx_uint_t  pad;
} stub_chunk_t;


void
ngx_slab_init(ngx_slab_pool_t *pool)
{
    pool->pfree = pool->end - (u_char *) pool->addr - sizeof(ngx_slab_pool_t);
}


size_t
stub_slab_free(ngx_slab_pool_t *pool)
{
    return pool->pfree;
}


void *
ngx_slab_alloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    size_t         cost;
    stub_chunk_t  *c;

    if (size > ngx_pagesize / 2) {
        cost = ngx_align(size, ngx_pagesize);

    } else {
        for (cost = 8; cost < size; cost <<= 1) { /* void */ }
    }

    if (cost > pool->pfree) {
        return NULL;
    }

    c = malloc(sizeof(stub_chunk_t) + size);
    if (c == NULL) {
        return NULL;
    }

    c->cost = cost;
    pool->pfree -= cost;
    stub_allocs++;

    return c + 1;
}


void *
ngx_slab_calloc_locked(ngx_slab_pool_t *pool, size_t size)
{
    void  *p;

    p = ngx_slab_alloc_locked(pool, size);

    if (p) {
        ngx_memzero(p, size);
    }

    return p;
}


void
ngx_slab_free_locked(ngx_slab_pool_t *pool, void *p)
{
    stub_chunk_t  *c;

    c = (stub_chunk_t *) p - 1;
    pool->pfree += c->cost;
    stub_allocs--;

    free(c);
}


/* mutex */

void
ngx_shmtx_lock(ngx_shmtx_t *mtx)
{
    if (stub_locked++) {
        stub_lock_errors++;
    }
}


void
ngx_shmtx_unlock(ngx_shmtx_t *mtx)
{
    if (--stub_locked < 0) {
        stub_lock_errors++;
    }
}


/* tree */

void
ngx_rbtree_insert(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    if (tree->root == tree->sentinel) {
        node->parent = NULL;
        node->left = tree->sentinel;
        node->right = tree->sentinel;
        tree->root = node;
        return;
    }

    tree->insert(tree->root, node, tree->sentinel);
}


static void
stub_transplant(ngx_rbtree_t *tree, ngx_rbtree_node_t *u,
    ngx_rbtree_node_t *v)
{
    if (u->parent == NULL) {
        tree->root = v;

    } else if (u == u->parent->left) {
        u->parent->left = v;

    } else {
        u->parent->right = v;
    }

    if (v != tree->sentinel) {
        v->parent = u->parent;
    }
}


void
ngx_rbtree_delete(ngx_rbtree_t *tree, ngx_rbtree_node_t *node)
{
    ngx_rbtree_node_t  *y, *sentinel;

    sentinel = tree->sentinel;

    if (node->left == sentinel) {
        stub_transplant(tree, node, node->right);
        return;
    }

    if (node->right == sentinel) {
        stub_transplant(tree, node, node->left);
        return;
    }

    for (y = node->right; y->left != sentinel; y = y->left) { /* void */ }

    if (y->parent != node) {
        stub_transplant(tree, y, y->right);
        y->right = node->right;
        y->right->parent = y;
    }

    stub_transplant(tree, node, y);
    y->left = node->left;
    y->left->parent = y;
}


/* pools */

void *
ngx_pcalloc(ngx_pool_t *pool, size_t size)
{
    return calloc(1, size);
}


void *
ngx_pmemalign(ngx_pool_t *pool, size_t size, size_t alignment)
{
    void  *p;

    if (posix_memalign(&p, alignment, size) != 0) {
        return NULL;
    }

    return p;
}


/* configuration */

ngx_shm_zone_t *
ngx_shared_memory_add(ngx_conf_t *cf, ngx_str_t *name, size_t size,
    void *tag)
{
    ngx_shm_zone_t  *shm_zone;

    shm_zone = calloc(1, sizeof(ngx_shm_zone_t));
    if (shm_zone == NULL) {
        return NULL;
    }

    shm_zone->shm.name = *name;
    shm_zone->shm.size = size;
    shm_zone->tag = tag;

    return shm_zone;
}


/* logs: the level and the format of the last message */

void
ngx_log_error_core(ngx_uint_t level, ngx_log_t *log, ngx_err_t err,
    const char *fmt, ...)
{
    stub_log_level = level;
    ngx_cpystrn((u_char *) stub_log, (u_char *) fmt, sizeof(stub_log));
}


void ngx_cdecl
ngx_conf_log_error(ngx_uint_t level, ngx_conf_t *cf, ngx_err_t err,
    const char *fmt, ...)
{
    stub_log_level = level;
    ngx_cpystrn((u_char *) stub_log, (u_char *) fmt, sizeof(stub_log));
}


u_char *
ngx_cpystrn(u_char *dst, u_char *src, size_t n)
{
    if (n == 0) {
        return dst;
    }

    while (--n) {
        *dst = *src;

        if (*dst == '\0') {
            return dst;
        }

        dst++;
        src++;
    }

    *dst = '\0';

    return dst;
}


/* only what the zone writes: %V and %Z */

u_char * ngx_cdecl
ngx_sprintf(u_char *buf, const char *fmt, ...)
{
    va_list     args;
    ngx_str_t  *s;

    va_start(args, fmt);

    while (*fmt) {

        if (fmt[0] == '%' && fmt[1] == 'V') {
            s = va_arg(args, ngx_str_t *);
            buf = ngx_cpymem(buf, s->data, s->len);
            fmt += 2;
            continue;
        }

        if (fmt[0] == '%' && fmt[1] == 'Z') {
            *buf++ = '\0';
            fmt += 2;
            continue;
        }

        *buf++ = *fmt++;
    }

    va_end(args);

    return buf;
}
