
/*
 * Unit test of ngx_http_llm_zone.c, with the stubs of stubs.c: kinds and
 * their policies under memory pressure, expiry, the walk, generations,
 * reuse on reload, the layout check, the key length bound.
 *
 * Prints "ok - name" or "not ok - name" per check, then "done";
 * t/llm_zone_kinds.t compiles and runs it.
 */

#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_zone.h"
#include "stubs.h"


#define T0  1700000000000ULL


typedef struct {
    ngx_uint_t                  n;
    ngx_uint_t                  stop;          /* NGX_DONE after this many */
    ngx_int_t                   locked;        /* the lock was held */
    uint64_t                    expire[16];
    uint64_t                    updated[16];
    u_char                      keys[16][32];
} walk_t;


static void check(ngx_uint_t ok, const char *name, ...)
    __attribute__ ((format (printf, 2, 3)));
static ngx_str_t *key(const char *fmt, ngx_uint_t n);
static ngx_http_llm_zone_t *private_zone(size_t size);
static ngx_http_llm_zone_t *shared_zone(ngx_conf_t *cf, u_char *addr,
    size_t size, ngx_http_llm_zone_t *old);
static ngx_uint_t *put(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    const char *fmt, ngx_uint_t n, size_t size);
static ngx_uint_t *get(ngx_http_llm_zone_t *zone, ngx_uint_t kind,
    const char *fmt, ngx_uint_t n);
static ngx_int_t walk_handler(ngx_http_llm_zone_entry_t *e, void *data);
static ngx_uint_t count(ngx_http_llm_zone_t *zone, ngx_uint_t kind);

static void test_basics(void);
static void test_keys(void);
static void test_pinned(void);
static void test_same_kind_first(void);
static void test_expiry(void);
static void test_walk(void);
static void test_reload(void);
static void test_resized(void);


static ngx_cycle_t  cycle;
static ngx_log_t    log_;


int
main(void)
{
    /* what was printed is kept if a check crashes */
    setvbuf(stdout, NULL, _IOLBF, 0);

    log_.log_level = NGX_LOG_DEBUG;
    stub_set_time(T0);

    test_basics();
    test_keys();
    test_pinned();
    test_same_kind_first();
    test_expiry();
    test_walk();
    test_reload();
    test_resized();

    check(stub_locked == 0 && stub_lock_errors == 0,
          "the lock was taken and released in pairs");

    printf("done\n");

    return 0;
}


static void
check(ngx_uint_t ok, const char *name, ...)
{
    va_list  args;

    printf("%s - ", ok ? "ok" : "not ok");

    va_start(args, name);
    vprintf(name, args);
    va_end(args);

    printf("\n");
}


static ngx_str_t *
key(const char *fmt, ngx_uint_t n)
{
    static u_char     buf[2048];
    static ngx_str_t  s;

    s.len = snprintf((char *) buf, sizeof(buf), fmt, (unsigned) n);
    s.data = buf;

    return &s;
}


static ngx_http_llm_zone_t *
private_zone(size_t size)
{
    ngx_http_llm_zone_t  *zone;

    zone = calloc(1, sizeof(ngx_http_llm_zone_t));

    if (zone == NULL
        || ngx_http_llm_zone_private(&cycle, zone, size) != NGX_OK)
    {
        printf("Bail out! private zone\n");
        exit(1);
    }

    return zone;
}


/* what nginx does for an llm_zone: ngx_shared_memory_add() at "llm_zone",
 * then ngx_init_zone_pool() and the zone's init with the old zone's data
 * when it reuses the memory on reload */

static ngx_http_llm_zone_t *
shared_zone(ngx_conf_t *cf, u_char *addr, size_t size,
    ngx_http_llm_zone_t *old)
{
    ngx_str_t             name = ngx_string("llm");
    ngx_slab_pool_t      *sp;
    ngx_http_llm_zone_t  *zone;

    zone = ngx_http_llm_zone_add(cf, &name, size);
    if (zone == NULL) {
        printf("Bail out! zone_add\n");
        exit(1);
    }

    zone->shm_zone->shm.addr = addr;
    zone->shm_zone->shm.log = &log_;

    if (old == NULL) {
        sp = (ngx_slab_pool_t *) addr;
        sp->end = addr + size;
        sp->min_shift = 3;
        sp->addr = addr;
        ngx_slab_init(sp);
    }

    if (zone->shm_zone->init(zone->shm_zone, old) != NGX_OK) {
        printf("Bail out! zone init\n");
        exit(1);
    }

    return zone;
}


static ngx_uint_t *
put(ngx_http_llm_zone_t *zone, ngx_uint_t kind, const char *fmt,
    ngx_uint_t n, size_t size)
{
    ngx_uint_t  *v;

    ngx_http_llm_zone_lock(zone);

    v = ngx_http_llm_zone_get(zone, kind, key(fmt, n), size);

    if (v && *v == 0) {
        *v = n + 1;
    }

    ngx_http_llm_zone_unlock(zone);

    return v;
}


static ngx_uint_t *
get(ngx_http_llm_zone_t *zone, ngx_uint_t kind, const char *fmt,
    ngx_uint_t n)
{
    ngx_uint_t  *v;

    ngx_http_llm_zone_lock(zone);
    v = ngx_http_llm_zone_get(zone, kind, key(fmt, n), 0);
    ngx_http_llm_zone_unlock(zone);

    return v;
}


static ngx_int_t
walk_handler(ngx_http_llm_zone_entry_t *e, void *data)
{
    walk_t  *w = data;

    if (w->n < 16) {
        w->expire[w->n] = e->expire;
        w->updated[w->n] = e->updated;
        ngx_cpystrn(w->keys[w->n], e->key.data,
                    ngx_min(e->key.len + 1, sizeof(w->keys[0])));
    }

    w->locked = stub_locked;
    w->n++;

    if (w->stop && w->n == w->stop) {
        return NGX_DONE;
    }

    return NGX_OK;
}


static ngx_uint_t
count(ngx_http_llm_zone_t *zone, ngx_uint_t kind)
{
    walk_t  w;

    ngx_memzero(&w, sizeof(walk_t));
    ngx_http_llm_zone_walk(zone, kind, walk_handler, &w);

    return w.n;
}


static void
test_basics(void)
{
    ngx_uint_t           *a, *b, allocs;
    ngx_http_llm_zone_t  *zone;

    zone = private_zone(1024 * 1024);

    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0) == NULL,
          "a missing entry is NULL");

    a = put(zone, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0, 3 * sizeof(uint64_t));
    check(a && *a == 1 && a[1] == 0 && a[2] == 0,
          "an entry is created zeroed");
    check(((uintptr_t) a & (NGX_ALIGNMENT - 1)) == 0,
          "its value is aligned");
    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0) == a,
          "and found again");

    b = put(zone, NGX_HTTP_LLM_KIND_WRR, "p:m", 7, 3 * sizeof(uint64_t));
    check(b && b != a && *b == 8 && *a == 1,
          "the same key of another kind is another entry");

    allocs = stub_allocs;
    a = put(zone, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 4, 5 * sizeof(uint64_t));
    check(a && *a == 5 && stub_allocs == allocs,
          "an entry asked with another size starts afresh");

    check(zone->shm_zone == NULL && stub_locked == 0,
          "a private zone takes no lock");
}


static void
test_keys(void)
{
    u_char                buf[NGX_HTTP_LLM_ZONE_KEY_MAX + 1];
    ngx_str_t             k;
    ngx_uint_t            allocs;
    ngx_http_llm_zone_t  *zone;

    zone = private_zone(1024 * 1024);

    ngx_memset(buf, 'k', sizeof(buf));
    buf[0] = '\0';
    buf[1] = 0xff;

    k.data = buf;
    k.len = NGX_HTTP_LLM_ZONE_KEY_MAX;

    check(ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &k, 8) != NULL,
          "a key of %d bytes (binary) is taken", NGX_HTTP_LLM_ZONE_KEY_MAX);
    check(ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &k, 0) != NULL,
          "and found");

    allocs = stub_allocs;
    k.len++;

    check(ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &k, 8) == NULL
          && ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &k, 0)
             == NULL
          && stub_allocs == allocs,
          "a key of %d bytes is refused", NGX_HTTP_LLM_ZONE_KEY_MAX + 1);

    k.len = 70000;

    check(ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, &k, 8) == NULL,
          "a key longer than a u_short is refused, not truncated");
}


/*
 * Budgets (pinned) are never evicted by cache pressure (evictable); a
 * new budget evicts cache entries; when only pinned entries are left a
 * new key is refused and the existing ones keep working.
 */

static void
test_pinned(void)
{
    ngx_uint_t           *v, i, ok, last, cache;
    ngx_http_llm_zone_t  *zone;

    zone = private_zone(64 * 1024);

    for (i = 0; i < 20; i++) {
        put(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i, 2 * sizeof(uint64_t));
    }

    ok = 0;

    for (i = 0; i < 2000; i++) {
        if (put(zone, NGX_HTTP_LLM_KIND_CACHE, "answer%u", i, 400)) {
            ok++;
        }
    }

    check(ok == 2000, "2000 cache entries of 400 bytes stored in 64k (%u)",
          (unsigned) ok);

    cache = count(zone, NGX_HTTP_LLM_KIND_CACHE);

    check(cache > 50 && cache < 150, "of which the zone holds %u",
          (unsigned) cache);
    check(get(zone, NGX_HTTP_LLM_KIND_CACHE, "answer%u", 1999) != NULL
          && get(zone, NGX_HTTP_LLM_KIND_CACHE, "answer%u", 0) == NULL,
          "the least recently used were evicted");

    ok = 0;

    for (i = 0; i < 20; i++) {
        v = get(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i);
        ok += (v && *v == i + 1);
    }

    check(ok == 20, "every budget survived the cache's pressure");

    /* budgets until the zone refuses one */

    for (i = 20; i < 100000; i++) {
        if (put(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i,
                2 * sizeof(uint64_t))
            == NULL)
        {
            break;
        }
    }

    last = i;

    check(last < 100000, "a full zone refuses a new budget (after %u)",
          (unsigned) last);
    check(count(zone, NGX_HTTP_LLM_KIND_CACHE) == 0,
          "new budgets evicted every cache entry first");

    ok = 0;

    for (i = 0; i < last; i++) {
        v = put(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i,
                2 * sizeof(uint64_t));
        ok += (v && *v == i + 1);
    }

    check(ok == last, "the %u existing budgets keep working",
          (unsigned) last);
    check(count(zone, NGX_HTTP_LLM_KIND_BUDGET) == last, "none was lost");
    check(put(zone, NGX_HTTP_LLM_KIND_CACHE, "late", 0, 400) == NULL,
          "a cache entry finds no room either: nothing to evict");

    /* expired entries of any kind are freed before anything is refused */

    stub_set_time(T0);

    for (i = 0; i < 2; i++) {
        v = get(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i);

        if (v) {
            ngx_http_llm_zone_expires(v, T0 - 1);
        }
    }

    for (i = 2; i < last; i++) {
        get(zone, NGX_HTTP_LLM_KIND_BUDGET, "team%u", i);
    }

    check(put(zone, NGX_HTTP_LLM_KIND_STATS, "new%u", 0,
              2 * sizeof(uint64_t))
          != NULL,
          "expired budgets give way, even to an entry of another kind");
}


/*
 * An evictable kind evicts its own least recently used entry first, and
 * then other evictable kinds, cache first.
 */

static void
test_same_kind_first(void)
{
    ngx_uint_t           *v, i, n, health, cache;
    ngx_http_llm_zone_t  *zone;

    zone = private_zone(64 * 1024);

    for (i = 0; i < 40; i++) {
        put(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", i, 400);
    }

    for (n = 0; n < 10000; n++) {
        put(zone, NGX_HTTP_LLM_KIND_HEALTH, "h%u", n, 24);

        if (count(zone, NGX_HTTP_LLM_KIND_HEALTH) <= n) {
            break;
        }
    }

    health = count(zone, NGX_HTTP_LLM_KIND_HEALTH);
    cache = count(zone, NGX_HTTP_LLM_KIND_CACHE);

    check(n < 10000 && cache == 40,
          "health under pressure: cache untouched (%u health, %u cache)",
          (unsigned) health, (unsigned) cache);
    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h%u", 0) == NULL
          && get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h%u", 1) != NULL,
          "the least recently used health entry went");

    v = get(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 0);

    put(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 40, 400);

    check(v && get(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 0) != NULL
          && get(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 1) == NULL
          && get(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 40) != NULL,
          "cache under pressure: its least recently used entry went");
    check(count(zone, NGX_HTTP_LLM_KIND_HEALTH) == health,
          "and no health entry");

    v = put(zone, NGX_HTTP_LLM_KIND_LIMIT, "l%u", 0, 400);

    check(v && get(zone, NGX_HTTP_LLM_KIND_CACHE, "c%u", 2) == NULL
          && count(zone, NGX_HTTP_LLM_KIND_CACHE) == 39
          && count(zone, NGX_HTTP_LLM_KIND_HEALTH) == health,
          "a kind with nothing to evict takes from the cache first");
}


static void
test_expiry(void)
{
    ngx_uint_t           *v, allocs, i;
    walk_t                w;
    ngx_http_llm_zone_t  *zone;

    zone = private_zone(1024 * 1024);
    stub_set_time(T0);

    put(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 0, 8);
    put(zone, NGX_HTTP_LLM_KIND_CACHE, "c", 0, 8);
    put(zone, NGX_HTTP_LLM_KIND_LIMIT, "l", 0, 8);

    ngx_memzero(&w, sizeof(walk_t));
    ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_HEALTH, walk_handler, &w);
    ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_CACHE, walk_handler, &w);
    ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_LIMIT, walk_handler, &w);

    check(w.n == 3 && w.expire[0] == 0 && w.expire[1] == T0 + 3600000
          && w.expire[2] == T0 + 60000,
          "default TTLs: health none, cache 1h, limit 1m");

    v = get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 0);
    ngx_http_llm_zone_expires(v, T0 + 1000);

    stub_set_time(T0 + 999);
    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 0) == v,
          "an entry lives until its expiry");

    allocs = stub_allocs;
    stub_set_time(T0 + 1000);

    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 0) == NULL
          && stub_allocs == allocs - 1,
          "then it is missing, and freed on access");

    v = put(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 41, 8);
    check(v && *v == 42, "asked with a size, it is made again, zeroed");

    ngx_http_llm_zone_expires(v, 0);
    stub_set_time(T0 + 1000ULL * 86400 * 365);
    check(get(zone, NGX_HTTP_LLM_KIND_HEALTH, "h", 0) == v,
          "expiry 0: never");

    /* background expiry: an insert frees up to two expired entries from
     * the tail of its kind */

    zone = private_zone(1024 * 1024);
    stub_set_time(T0);

    for (i = 0; i < 5; i++) {
        put(zone, NGX_HTTP_LLM_KIND_LIMIT, "w%u", i, 8);
    }

    stub_set_time(T0 + 60000);
    allocs = stub_allocs;

    put(zone, NGX_HTTP_LLM_KIND_LIMIT, "w%u", 5, 8);

    check(stub_allocs == allocs - 2 + 1,
          "an insert freed two expired entries of its kind");

    ngx_memzero(&w, sizeof(walk_t));
    ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_LIMIT, walk_handler, &w);

    check(w.n == 1 && ngx_strcmp(w.keys[0], "w5") == 0
          && stub_allocs == allocs - 5 + 1,
          "a walk sees only the live one and frees the others");
}


static void
test_walk(void)
{
    u_char                mem[64 * 1024];
    walk_t                w;
    ngx_uint_t           *v, i;
    ngx_conf_t            cf;
    ngx_http_llm_zone_t  *zone;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.cycle = &cycle;

    zone = shared_zone(&cf, (u_char *) ngx_align_ptr(mem, 4096),
                       32 * 1024, NULL);
    stub_set_time(T0);

    for (i = 0; i < 5; i++) {
        put(zone, NGX_HTTP_LLM_KIND_WRR, "w%u", i, 16);
    }

    put(zone, NGX_HTTP_LLM_KIND_HEALTH, "other", 0, 16);
    get(zone, NGX_HTTP_LLM_KIND_WRR, "w%u", 2);

    ngx_memzero(&w, sizeof(walk_t));

    check(ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_WRR, walk_handler, &w)
          == NGX_OK
          && w.n == 5
          && ngx_strcmp(w.keys[0], "w2") == 0
          && ngx_strcmp(w.keys[1], "w4") == 0
          && ngx_strcmp(w.keys[4], "w0") == 0,
          "a walk visits the entries of its kind, most recent first");
    check(w.locked == 1, "under the zone's lock");

    ngx_memzero(&w, sizeof(walk_t));
    w.stop = 2;

    check(ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_WRR, walk_handler, &w)
          == NGX_DONE && w.n == 2,
          "NGX_DONE stops it");

    check(ngx_http_llm_zone_generation(zone) == 0, "generation 0 at first");

    ngx_http_llm_zone_lock(zone);

    v = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_WRR, key("w%u", 0), 0);
    ngx_http_llm_zone_touch(zone, v);
    v = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_WRR, key("w%u", 3), 0);
    ngx_http_llm_zone_touch(zone, v);
    v = ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_WRR, key("w%u", 1), 0);
    ngx_http_llm_zone_expires(v, T0);

    ngx_http_llm_zone_unlock(zone);

    ngx_memzero(&w, sizeof(walk_t));
    ngx_http_llm_zone_walk(zone, NGX_HTTP_LLM_KIND_WRR, walk_handler, &w);

    check(w.n == 4
          && ngx_strcmp(w.keys[0], "w3") == 0 && w.updated[0] == 2
          && ngx_strcmp(w.keys[1], "w0") == 0 && w.updated[1] == 1
          && w.updated[2] == 0 && w.updated[3] == 0,
          "touches number the entries: w0 1, w3 2, the others 0; the "
          "expired one is not visited");
    check(ngx_http_llm_zone_generation(zone) == 2, "generation 2");
}


static void
test_reload(void)
{
    u_char               *mem, *addr;
    ngx_uint_t           *v;
    ngx_conf_t            cf;
    ngx_http_llm_zone_t  *z1, *z2, *z3, *z4;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    cf.cycle = &cycle;

    mem = malloc(256 * 1024 + 4096);
    addr = ngx_align_ptr(mem, 4096);

    z1 = shared_zone(&cf, addr, 256 * 1024, NULL);

    put(z1, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 41, 24);
    put(z1, NGX_HTTP_LLM_KIND_BUDGET, "team", 6, 16);

    stub_log_level = 0;
    z2 = shared_zone(&cf, addr, 256 * 1024, z1);

    v = get(z2, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0);

    check(z2->sh == z1->sh && v && *v == 42 && stub_log_level == 0,
          "reload: the zone is kept, with its entries, silently");

    /* a header of another version, as an upgrade that changed the
     * entries' layout would leave (nginx gives a zone to the same module
     * only, so this is what the check guards against) */

    z2->sh->version = 1;

    z3 = shared_zone(&cf, addr, 256 * 1024, z2);

    check(stub_log_level == NGX_LOG_NOTICE
          && ngx_strstr(stub_log, "laid out by another version") != NULL,
          "another version: a notice");
    check(z3->sh != z2->sh
          && get(z3, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0) == NULL
          && get(z3, NGX_HTTP_LLM_KIND_BUDGET, "team", 0) == NULL,
          "and the new workers start clean");
    check(put(z3, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0, 24) != NULL,
          "and can store");

    v = get(z2, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0);

    check(v && *v == 42, "while the old workers keep their entries");

    /* a header that is not ours at all (the first fields of version 1
     * were a tree) */

    stub_log_level = 0;
    z3->sh->magic = 0;

    z4 = shared_zone(&cf, addr, 256 * 1024, z3);

    check(stub_log_level == NGX_LOG_NOTICE && z4->sh != z3->sh
          && get(z4, NGX_HTTP_LLM_KIND_HEALTH, "p:m", 0) == NULL,
          "an unknown header: a notice, and a clean start");
}


static void
test_resized(void)
{
    ngx_str_t             name = ngx_string("llm");
    ngx_conf_t            cf;
    ngx_cycle_t           old;
    ngx_shm_zone_t        oshm[2];
    ngx_http_llm_zone_t  *zone;

    ngx_memzero(&cf, sizeof(ngx_conf_t));
    ngx_memzero(&old, sizeof(ngx_cycle_t));
    ngx_memzero(oshm, sizeof(oshm));

    cf.cycle = &cycle;
    cycle.old_cycle = &old;
    old.conf_ctx = (void ****) &old;
    old.shared_memory.part.elts = oshm;
    old.shared_memory.part.nelts = 2;

    ngx_str_set(&oshm[0].shm.name, "cache");
    oshm[0].shm.size = 128 * 1024;
    oshm[0].tag = &ngx_http_llm_gateway_module;

    oshm[1].shm.name = name;
    oshm[1].shm.size = 128 * 1024;
    oshm[1].tag = &ngx_http_llm_gateway_module;

    stub_log_level = 0;
    zone = ngx_http_llm_zone_add(&cf, &name, 128 * 1024);

    check(zone && stub_log_level == 0, "reload, same size: no notice");

    zone = ngx_http_llm_zone_add(&cf, &name, 256 * 1024);

    check(zone && stub_log_level == NGX_LOG_NOTICE
          && ngx_strstr(stub_log, "changed its size") != NULL,
          "reload with another size: a notice that it starts empty");

    stub_log_level = 0;
    oshm[1].tag = &old;

    zone = ngx_http_llm_zone_add(&cf, &name, 256 * 1024);

    check(zone && stub_log_level == 0,
          "a zone of that name for another module: not ours to mention");

    cycle.old_cycle = NULL;
}
