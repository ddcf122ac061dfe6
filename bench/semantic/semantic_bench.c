
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


/*
 * The semantic cache lookup alone, as ngx_http_llm_cache_semantic() does
 * it, on a synthetic corpus of N stored questions in one key space (the
 * worst case: one system prompt for every entry): embed the question,
 * scan the index (ngx_http_llm_index_next()), look every candidate up in
 * the zone and compare it (ngx_http_llm_embed_similarity()), keep the
 * best.  Built and run by bench/semantic/run; prints a Markdown table.
 *
 *   semantic_bench [N ...]        default: 1000 10000 100000
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ngx_http_llm_embed.h"


#define BENCH_SEED          0x5eed5eed5eed5eedULL
#define BENCH_QUERIES       2000       /* half paraphrases, half new */
#define BENCH_WARMUP        100        /* queries run once, untimed */
#define BENCH_THRESHOLD     900        /* llm_cache semantic=0.90 */
#define BENCH_NOUNS         5000       /* the real ones, then made-up */
#define BENCH_ANSWER        512        /* content bytes of an entry */
#define BENCH_TEXT          256
#define BENCH_VARIANTS      4
#define BENCH_EXAMPLES      3

#define BENCH_KIND_CACHE    3          /* NGX_HTTP_LLM_KIND_CACHE */
#define BENCH_W_WORD        100        /* a content word's weight */

#define BENCH_MODEL         "gpt-4o-mini"
#define BENCH_PROVIDER      "openai"


/* a copy of ngx_http_llm_zone_node_t (ngx_http_llm_zone.c) */
typedef struct {
    ngx_rbtree_node_t           node;          /* key: hash */
    ngx_queue_t                 queue;         /* in the kind's LRU */
    uint64_t                    expire;        /* ms, 0: never */
    uint64_t                    updated;       /* generation */
    uint32_t                    size;          /* of the value */
    u_short                     len;           /* of the key */
    u_char                      kind;
    u_char                      data[1];       /* the value, then the key */
} bench_zone_node_t;

#define BENCH_ZONE_VALUE                                                      \
    ngx_align(offsetof(bench_zone_node_t, data), NGX_ALIGNMENT)


/* a copy of ngx_http_llm_cache_node_t (ngx_http_llm_cache.c) */
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
} bench_cache_node_t;


/* the zone emulated: its keys sorted, for a binary search */
typedef struct {
    u_char                      key[16];
    bench_zone_node_t          *zn;
} bench_key_t;


/*
 * A question: a family of phrasings and the words that fill it, a word
 * per placeholder: %v verb, %a adjective, %n and %m nouns, %p place,
 * %d weekday, %k number.
 */

#define BENCH_SLOTS         7
#define BENCH_NONE          0xffff

static const char  bench_placeholders[] = "vanmpdk";

typedef struct {
    uint16_t                    family;
    uint16_t                    variant;
    uint16_t                    w[BENCH_SLOTS];
} bench_question_t;


typedef struct {
    u_char                      text[BENCH_TEXT];
    size_t                      len;
    ngx_int_t                   src;           /* paraphrased; -1: new */
} bench_query_t;


typedef struct {
    uint64_t                   *keys;
    ngx_uint_t                  mask;
} bench_set_t;


typedef struct {
    ngx_uint_t                  n;
    double                      mean;          /* us */
    double                      p50;
    double                      p99;
    double                      max;
    double                      candidates;    /* per query */
    double                      terms;         /* per entry */
    ngx_uint_t                  paraphrases;
    ngx_uint_t                  hits;
    ngx_uint_t                  other;         /* on another question */
    ngx_uint_t                  fresh;
    ngx_uint_t                  false_hits;
    ngx_uint_t                  nex;
    char                        ex[BENCH_EXAMPLES][2 * BENCH_TEXT + 32];
} bench_result_t;


typedef struct {
    double                     *cdf;
    ngx_uint_t                  n;
} bench_zipf_t;


typedef struct {
    ngx_uint_t                  n;
    bench_question_t           *questions;
    ngx_http_llm_slot_t        *slots;
    bench_key_t                *keys;
    u_char                     *arena;
    ngx_queue_t                 lru;
    uint64_t                    space[2];
    uint64_t                    now;
    double                      terms;         /* per entry, on average */
} bench_zone_t;


/*
 * Phrasings of a question: the first as asked, then with a stop word
 * changed, with its words reordered, with a generic word added.  All
 * have the same content words.  Families 0 and 11 differ only by stop
 * words ("how", "when"), as real questions do: a bag of words cannot
 * tell them apart.
 */

static const char  *bench_families[][BENCH_VARIANTS] = {
    { "How do I %v my %n?",
      "How can I %v the %n?",
      "My %n: how do I %v it?",
      "What is the process to %v my %n?" },
    { "What is the %a %n for %m?",
      "Which is the %a %n for a %m?",
      "For %m, what is the %a %n?",
      "What is the %a %n for %m? Any details?" },
    { "Can you %v the %n in %p on %d?",
      "Could you %v my %n in %p on %d?",
      "On %d in %p, can you %v the %n?",
      "Can you %v the %n in %p on %d? What are the steps?" },
    { "Why does my %n not %v anymore?",
      "Why doesn't my %n %v anymore?",
      "My %n does not %v anymore, why?",
      "Why does my %n not %v anymore? Is this an issue?" },
    { "Where is the %a %n stored on my %m?",
      "Where's the %a %n stored on the %m?",
      "On my %m, where is the %a %n stored?",
      "Where is the %a %n stored on my %m? I need information." },
    { "Is there a way to %v %n with %a %m?",
      "Is there any way to %v %n with %a %m?",
      "With %a %m, is there a way to %v %n?",
      "Is there a way to %v %n with %a %m? Please explain the procedure." },
    { "How much does the %a %n cost in %p?",
      "How much will the %a %n cost in %p?",
      "In %p, how much does the %a %n cost?",
      "How much does the %a %n cost in %p? Tell me the details." },
    { "What happens if I %v my %n after %k days?",
      "What happens when I %v the %n after %k days?",
      "After %k days, what happens if I %v my %n?",
      "What happens if I %v my %n after %k days? What is the rule?" },
    { "Which %n should I use to %v a %a %m?",
      "Which %n would you use to %v the %a %m?",
      "To %v a %a %m, which %n should I use?",
      "Which %n should I use to %v a %a %m? Any options?" },
    { "How do I %v the %n on my %m?",
      "How should I %v the %n on the %m?",
      "On my %m, how do I %v the %n?",
      "How do I %v the %n on my %m? Step by step please." },
    { "Is the %a %n available in %p?",
      "Is a %a %n available in %p?",
      "In %p, is the %a %n available?",
      "Is the %a %n available in %p? What is the policy?" },
    { "When should I %v my %n?",
      "When would I %v the %n?",
      "My %n: when should I %v it?",
      "When should I %v my %n? Is there a rule?" },
    { "Can I %v a %n on %d?",
      "Could I %v the %n on %d?",
      "On %d, can I %v a %n?",
      "Can I %v a %n on %d? Any information?" }
};


/* word lists, the most frequent first */

static const char  *bench_verbs[] = {
    "reset", "cancel", "change", "update", "delete", "remove", "add",
    "create", "open", "close", "check", "track", "return", "exchange",
    "upgrade", "downgrade", "renew", "transfer", "move", "copy", "export",
    "import", "download", "upload", "install", "uninstall", "configure",
    "connect", "disconnect", "enable", "disable", "activate", "deactivate",
    "verify", "confirm", "book", "reserve", "buy", "sell", "pay", "refund",
    "ship", "deliver", "send", "receive", "share", "sync", "backup",
    "restore", "recover", "unlock", "lock", "block", "unblock", "report",
    "print", "scan", "sign", "register", "subscribe", "unsubscribe", "join",
    "invite", "merge", "split", "sort", "filter", "search", "rename", "edit",
    "format", "convert", "compress", "extract", "encrypt", "decrypt",
    "schedule", "reschedule", "pause", "resume", "start", "stop", "restart",
    "launch", "deploy", "build", "test", "debug", "fix", "repair",
    "replace", "clean", "wash", "cook", "bake", "boil", "grill", "freeze",
    "heat", "cool", "charge", "measure", "calculate", "estimate", "compare",
    "translate", "summarize", "review", "approve", "reject", "apply",
    "submit", "withdraw", "deposit", "borrow", "lend", "invest", "save",
    "spend", "plan", "organize", "prepare", "pack", "unpack", "rent",
    "lease", "insure", "claim", "file", "appeal", "dispute", "negotiate",
    "contact", "call", "email", "message", "notify", "remind", "alert",
    "monitor", "manage", "assign", "delegate", "hire", "train", "teach",
    "learn", "study", "practice", "grow", "plant", "water", "prune",
    "paint", "draw", "design", "sketch", "write", "read", "record", "mix",
    "stream", "watch", "play", "pair", "mount", "unmount", "wire",
    "insulate", "drain", "flush", "seal", "polish", "sharpen", "trim",
    "cut", "fold", "iron", "sew", "knit", "feed", "walk", "groom",
    "vaccinate", "adopt", "park", "drive", "fuel", "tow", "rotate", "align",
    "balance", "inspect", "clear", "reboot", "flash", "patch", "migrate",
    "scale", "cache", "index", "query", "parse", "validate", "sanitize",
    "hash"
};


static const char  *bench_real_nouns[] = {
    "password", "account", "order", "invoice", "subscription", "refund",
    "package", "delivery", "address", "card", "payment", "balance",
    "receipt", "phone", "laptop", "printer", "router", "modem", "wifi",
    "network", "server", "database", "folder", "document", "photo",
    "video", "playlist", "calendar", "meeting", "appointment",
    "reservation", "ticket", "flight", "hotel", "car", "bike", "battery",
    "charger", "screen", "keyboard", "mouse", "camera", "speaker",
    "headset", "tablet", "watch", "app", "profile", "username", "browser",
    "extension", "plugin", "theme", "font", "license", "key", "token",
    "certificate", "domain", "website", "page", "form", "chart",
    "spreadsheet", "column", "cell", "formula", "loan", "mortgage", "tax",
    "salary", "pension", "insurance", "contract", "garden", "lawn", "tree",
    "soil", "fertilizer", "compost", "kitchen", "oven", "fridge", "freezer",
    "dishwasher", "microwave", "sink", "faucet", "toilet", "shower",
    "heater", "boiler", "thermostat", "window", "door", "roof", "gutter",
    "fence", "deck", "floor", "wall", "ceiling", "recipe", "bread", "pasta",
    "rice", "chicken", "salad", "soup", "cake", "cookie", "coffee", "tea",
    "wine", "beer", "diet", "workout", "marathon", "yoga", "muscle",
    "injury", "doctor", "prescription", "vaccine", "allergy", "dentist",
    "child", "baby", "school", "homework", "exam", "course", "degree",
    "resume", "interview", "job", "manager", "team", "project", "deadline",
    "sprint", "bug", "feature", "release", "version", "branch",
    "repository", "container", "cluster", "pod", "volume", "disk",
    "memory", "cpu", "kernel", "driver", "firmware", "dog", "cat", "puppy",
    "kitten", "aquarium", "fish", "bird", "horse", "saddle", "tent",
    "backpack", "boot", "jacket", "shoe", "shirt", "dress", "suit", "ring",
    "necklace", "gift", "party", "wedding", "birthday", "holiday", "trip",
    "passport", "visa", "luggage", "bus", "taxi", "parking", "tire",
    "brake", "engine", "oil", "bill", "discount", "coupon", "warranty",
    "cart", "checkout", "login", "session", "notification", "alarm",
    "timer", "podcast", "album", "song", "guitar", "piano", "drum",
    "lesson", "tutor", "library", "book", "magazine", "newspaper",
    "article", "blog", "comment", "rating", "budget", "credit", "debit",
    "wallet", "bank", "stock", "bond", "fund", "crypto"
};


static const char  *bench_adjectives[] = {
    "best", "cheapest", "fastest", "safest", "easiest", "new", "old",
    "default", "free", "premium", "basic", "annual", "monthly", "weekly",
    "daily", "local", "remote", "mobile", "wireless", "digital", "organic",
    "vegan", "healthy", "quick", "simple", "cheap", "secure", "private",
    "public", "shared", "personal", "business", "family", "small", "large",
    "big", "tiny", "long", "short", "hot", "cold", "warm", "dry", "wet",
    "heavy", "light", "dark", "bright", "quiet", "loud", "soft", "hard",
    "fresh", "frozen", "raw", "spicy", "sweet", "sour", "salty",
    "electric", "manual", "automatic", "portable", "reliable", "official",
    "legal", "medical", "financial", "technical", "international",
    "domestic", "express", "standard", "recommended", "popular", "modern",
    "classic", "vintage", "refurbished", "affordable", "expensive",
    "durable", "waterproof", "compact", "minimal", "advanced", "beginner",
    "professional", "seasonal", "temporary", "permanent", "main",
    "primary", "secondary", "external", "internal", "correct", "original",
    "extra", "spare", "current", "previous", "upcoming", "latest", "green",
    "red", "blue", "black", "white"
};


/* names: entities, as weekdays and numbers are */
static const char  *bench_places[] = {
    "Paris", "London", "Berlin", "Madrid", "Rome", "Tokyo", "Toronto",
    "Chicago", "Boston", "Denver", "Seattle", "Austin", "Dallas", "Miami",
    "Sydney", "Melbourne", "Dublin", "Lisbon", "Vienna", "Prague", "Oslo",
    "Stockholm", "Helsinki", "Warsaw", "Athens", "Cairo", "Nairobi",
    "Lagos", "Mumbai", "Delhi", "Bangkok", "Singapore", "Seoul", "Manila",
    "Jakarta", "Lima", "Bogota", "Santiago", "Quito", "Havana", "Montreal",
    "Vancouver", "Calgary", "Phoenix", "Atlanta", "Houston", "Portland",
    "Detroit", "Nashville", "Orlando", "Canada", "Mexico", "Spain",
    "Italy", "Japan", "Brazil"
};


static const char  *bench_days[] = {
    "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
    "Sunday"
};


#define bench_nelts(a)  (sizeof(a) / sizeof(a[0]))

#define BENCH_FAMILIES  bench_nelts(bench_families)


static uint64_t            bench_state;
static const char         *bench_nouns[BENCH_NOUNS];
static u_char              bench_made_up[BENCH_NOUNS][8];
static ngx_uint_t          bench_masks[BENCH_FAMILIES];
static bench_zipf_t        bench_zipf_verbs, bench_zipf_adjectives,
                           bench_zipf_nouns, bench_zipf_places;


static uint64_t bench_rand(void);
static ngx_int_t bench_init(void);
static ngx_uint_t bench_word_kind(const char *word, ngx_uint_t *entity);
static ngx_uint_t bench_check(const char **words, ngx_uint_t n);
static ngx_int_t bench_zipf_init(bench_zipf_t *z, ngx_uint_t n);
static ngx_uint_t bench_zipf(bench_zipf_t *z);
static void bench_question(bench_question_t *q);
static uint64_t bench_question_key(bench_question_t *q);
static size_t bench_render(bench_question_t *q, ngx_uint_t variant,
    u_char *buf);
static ngx_int_t bench_set_init(bench_set_t *s, ngx_uint_t n);
static ngx_uint_t bench_set_add(bench_set_t *s, uint64_t key);
static ngx_uint_t bench_set_has(bench_set_t *s, uint64_t key);
static size_t bench_slab_size(size_t size);
static ngx_int_t bench_zone_build(bench_zone_t *z, ngx_uint_t n,
    bench_set_t *set);
static void bench_zone_free(bench_zone_t *z);
static int bench_key_cmp(const void *a, const void *b);
static int bench_ns_cmp(const void *a, const void *b);
static bench_cache_node_t *bench_zone_get(bench_zone_t *z, u_char *key);
static bench_cache_node_t *bench_lookup(bench_zone_t *z, u_char *text,
    size_t len, ngx_uint_t *sim, ngx_uint_t *ncand);
static ngx_uint_t bench_entry_question(bench_cache_node_t *node);
static ngx_int_t bench_run(ngx_uint_t n, bench_result_t *r);


/* from ngx_string.c, which the benchmark does not link */

ngx_int_t
ngx_memn2cmp(u_char *s1, u_char *s2, size_t n1, size_t n2)
{
    size_t     n;
    ngx_int_t  m, z;

    if (n1 <= n2) {
        n = n1;
        z = -1;

    } else {
        n = n2;
        z = 1;
    }

    m = ngx_memcmp(s1, s2, n);

    if (m || n1 == n2) {
        return m;
    }

    return z;
}


/* splitmix64: the same corpus on every machine */

static uint64_t
bench_rand(void)
{
    uint64_t  z;

    bench_state += 0x9e3779b97f4a7c15ULL;

    z = bench_state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;

    return z ^ (z >> 31);
}


/*
 * The nouns (the real ones, then made-up CVCVC words, letters only, that
 * the embedder keeps as they are), the placeholders of each family, and
 * a check that the word lists hold only content words.
 */

static ngx_int_t
bench_init(void)
{
    const char   *p;
    ngx_uint_t    i, j, k, n, v, mask, entity, bad;

    static const char  c[] = "bdfgklmnprtvz", vw[] = "aeiou",
                       last[] = "bklmnprtvz";

    n = bench_nelts(bench_real_nouns);

    for (i = 0; i < n; i++) {
        bench_nouns[i] = bench_real_nouns[i];
    }

    for (j = 0; n < BENCH_NOUNS; j++) {

        /* a permutation of the 13 * 5 * 13 * 5 * 10 words */
        k = (j * 7919 + 17) % 42250;

        bench_made_up[n][0] = c[k % 13];
        bench_made_up[n][1] = vw[k / 13 % 5];
        bench_made_up[n][2] = c[k / 65 % 13];
        bench_made_up[n][3] = vw[k / 845 % 5];
        bench_made_up[n][4] = last[k / 4225 % 10];
        bench_made_up[n][5] = '\0';

        p = (const char *) bench_made_up[n];

        if (bench_word_kind(p, &entity) != BENCH_W_WORD || entity) {
            continue;
        }

        for (i = 0; i < bench_nelts(bench_real_nouns); i++) {
            if (ngx_strcmp(p, bench_real_nouns[i]) == 0) {
                break;
            }
        }

        if (i < bench_nelts(bench_real_nouns)) {
            continue;
        }

        bench_nouns[n++] = p;
    }

    bad = bench_check(bench_verbs, bench_nelts(bench_verbs))
          + bench_check(bench_adjectives, bench_nelts(bench_adjectives))
          + bench_check(bench_real_nouns, bench_nelts(bench_real_nouns));

    if (bad) {
        return NGX_ERROR;
    }

    for (i = 0; i < BENCH_FAMILIES; i++) {
        for (v = 0; v < BENCH_VARIANTS; v++) {
            mask = 0;

            for (p = bench_families[i][v]; *p; p++) {
                if (*p == '%') {
                    p++;
                    mask |= 1 << (strchr(bench_placeholders, *p)
                                  - bench_placeholders);
                }
            }

            if (v == 0) {
                bench_masks[i] = mask;

            } else if (mask != bench_masks[i]) {
                fprintf(stderr, "semantic_bench: \"%s\" has other "
                        "placeholders than \"%s\"\n", bench_families[i][v],
                        bench_families[i][0]);
                return NGX_ERROR;
            }
        }
    }

    if (bench_zipf_init(&bench_zipf_verbs, bench_nelts(bench_verbs))
        != NGX_OK
        || bench_zipf_init(&bench_zipf_adjectives,
                           bench_nelts(bench_adjectives))
           != NGX_OK
        || bench_zipf_init(&bench_zipf_nouns, BENCH_NOUNS) != NGX_OK
        || bench_zipf_init(&bench_zipf_places, bench_nelts(bench_places))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return NGX_OK;
}


/* the weight of a word alone (0: a stop word), and if it is an entity */

static ngx_uint_t
bench_word_kind(const char *word, ngx_uint_t *entity)
{
    ngx_http_llm_vec_t  v;

    ngx_http_llm_embed((u_char *) word, ngx_strlen(word), &v);

    if (v.n != 1) {
        *entity = 0;
        return 0;
    }

    *entity = v.terms[0].flags & NGX_HTTP_LLM_TERM_ENTITY;

    return v.terms[0].weight;
}


/* the words of a list that are not plain content words */

static ngx_uint_t
bench_check(const char **words, ngx_uint_t n)
{
    ngx_uint_t  i, bad, entity;

    bad = 0;

    for (i = 0; i < n; i++) {
        if (bench_word_kind(words[i], &entity) != BENCH_W_WORD || entity) {
            fprintf(stderr, "semantic_bench: \"%s\" is not a content "
                    "word\n", words[i]);
            bad++;
        }
    }

    return bad;
}


/* Zipf's law with s = 1: the word of rank r is drawn as often as 1/r */

static ngx_int_t
bench_zipf_init(bench_zipf_t *z, ngx_uint_t n)
{
    double      sum;
    ngx_uint_t  i;

    z->cdf = malloc(n * sizeof(double));
    if (z->cdf == NULL) {
        return NGX_ERROR;
    }

    z->n = n;
    sum = 0;

    for (i = 0; i < n; i++) {
        sum += 1.0 / (i + 1);
        z->cdf[i] = sum;
    }

    for (i = 0; i < n; i++) {
        z->cdf[i] /= sum;
    }

    return NGX_OK;
}


static ngx_uint_t
bench_zipf(bench_zipf_t *z)
{
    double      u;
    ngx_uint_t  lo, hi, mid;

    u = (bench_rand() >> 11) * (1.0 / 9007199254740992.0);

    lo = 0;
    hi = z->n - 1;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        if (z->cdf[mid] > u) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return lo;
}


static void
bench_question(bench_question_t *q)
{
    ngx_uint_t  i, mask;

    q->family = (uint16_t) (bench_rand() % BENCH_FAMILIES);
    q->variant = (uint16_t) (bench_rand() % BENCH_VARIANTS);

    mask = bench_masks[q->family];

    for (i = 0; i < BENCH_SLOTS; i++) {
        q->w[i] = BENCH_NONE;
    }

    if (mask & 0x01) {
        q->w[0] = (uint16_t) bench_zipf(&bench_zipf_verbs);
    }

    if (mask & 0x02) {
        q->w[1] = (uint16_t) bench_zipf(&bench_zipf_adjectives);
    }

    if (mask & 0x04) {
        q->w[2] = (uint16_t) bench_zipf(&bench_zipf_nouns);
    }

    if (mask & 0x08) {
        do {
            q->w[3] = (uint16_t) bench_zipf(&bench_zipf_nouns);
        } while (q->w[3] == q->w[2]);
    }

    if (mask & 0x10) {
        q->w[4] = (uint16_t) bench_zipf(&bench_zipf_places);
    }

    if (mask & 0x20) {
        q->w[5] = (uint16_t) (bench_rand() % bench_nelts(bench_days));
    }

    if (mask & 0x40) {
        q->w[6] = (uint16_t) (2 + bench_rand() % 29);
    }
}


/* what makes a question: its family and its words, not the phrasing */

static uint64_t
bench_question_key(bench_question_t *q)
{
    uint64_t    h;
    ngx_uint_t  i;

    h = 0x9e3779b97f4a7c15ULL * (q->family + 1);

    for (i = 0; i < BENCH_SLOTS; i++) {
        h = (h ^ q->w[i]) * 0x100000001b3ULL;
        h ^= h >> 29;
    }

    return h | 1;
}


static size_t
bench_render(bench_question_t *q, ngx_uint_t variant, u_char *buf)
{
    u_char      *b, *last;
    size_t       len;
    ngx_uint_t   w;
    const char  *p, *word;
    char         num[8];

    b = buf;
    last = buf + BENCH_TEXT - 1;

    for (p = bench_families[q->family][variant]; *p && b < last; p++) {

        if (*p != '%') {
            *b++ = (u_char) *p;
            continue;
        }

        p++;
        w = q->w[strchr(bench_placeholders, *p) - bench_placeholders];

        switch (*p) {
        case 'v':
            word = bench_verbs[w];
            break;
        case 'a':
            word = bench_adjectives[w];
            break;
        case 'p':
            word = bench_places[w];
            break;
        case 'd':
            word = bench_days[w];
            break;
        case 'k':
            snprintf(num, sizeof(num), "%u", (unsigned) w);
            word = num;
            break;
        default:
            word = bench_nouns[w];
        }

        len = ngx_min(ngx_strlen(word), (size_t) (last - b));
        b = ngx_cpymem(b, word, len);
    }

    *b = '\0';

    return b - buf;
}


/* a set of question keys: open addressing, never full */

static ngx_int_t
bench_set_init(bench_set_t *s, ngx_uint_t n)
{
    ngx_uint_t  size;

    for (size = 1024; size < 4 * n; size <<= 1) { /* void */ }

    s->keys = calloc(size, sizeof(uint64_t));
    if (s->keys == NULL) {
        return NGX_ERROR;
    }

    s->mask = size - 1;

    return NGX_OK;
}


static ngx_uint_t
bench_set_add(bench_set_t *s, uint64_t key)
{
    ngx_uint_t  i;

    for (i = key & s->mask; s->keys[i]; i = (i + 1) & s->mask) {
        if (s->keys[i] == key) {
            return 0;
        }
    }

    s->keys[i] = key;

    return 1;
}


static ngx_uint_t
bench_set_has(bench_set_t *s, uint64_t key)
{
    ngx_uint_t  i;

    for (i = key & s->mask; s->keys[i]; i = (i + 1) & s->mask) {
        if (s->keys[i] == key) {
            return 1;
        }
    }

    return 0;
}


/* what ngx_slab_alloc_locked() takes for size: a power of two up to half
 * a page, whole pages above */

static size_t
bench_slab_size(size_t size)
{
    size_t  s;

    if (size > 2048) {
        return ngx_align(size, 4096);
    }

    for (s = 8; s < size; s <<= 1) { /* void */ }

    return s;
}


/*
 * What the zone holds after n distinct questions were stored: the index,
 * a slot each, in the order they came, and the entries, each at its slab
 * size in one arena, in shuffled order (a zone that has seen evictions
 * and expiries does not keep them in order), with the question's number
 * at the start of its answer.
 */

static ngx_int_t
bench_zone_build(bench_zone_t *z, ngx_uint_t n, bench_set_t *set)
{
    u_char               *p, text[BENCH_TEXT];
    size_t                len, size, *offset, *total, sum;
    uint32_t              qn;
    uint64_t              r;
    ngx_uint_t            i, j, t, *perm, terms;
    bench_key_t          *k;
    bench_question_t     *q;
    bench_zone_node_t    *zn;
    bench_cache_node_t   *node;
    ngx_http_llm_vec_t   *vec;
    ngx_http_llm_slot_t  *slot;

    ngx_memzero(z, sizeof(bench_zone_t));

    z->n = n;
    z->now = 1;
    z->space[0] = bench_rand();
    z->space[1] = bench_rand();

    ngx_queue_init(&z->lru);

    z->questions = malloc(n * sizeof(bench_question_t));
    z->slots = malloc(n * sizeof(ngx_http_llm_slot_t));
    z->keys = malloc(n * sizeof(bench_key_t));
    vec = malloc(n * sizeof(ngx_http_llm_vec_t));
    perm = malloc(n * sizeof(ngx_uint_t));
    offset = malloc(n * sizeof(size_t));
    total = malloc(n * sizeof(size_t));

    if (z->questions == NULL || z->slots == NULL || z->keys == NULL
        || vec == NULL || perm == NULL || offset == NULL || total == NULL)
    {
        return NGX_ERROR;
    }

    terms = 0;

    for (i = 0; i < n; i++) {
        q = &z->questions[i];

        do {
            bench_question(q);
        } while (!bench_set_add(set, bench_question_key(q)));

        len = bench_render(q, q->variant, text);
        ngx_http_llm_embed(text, len, &vec[i]);

        terms += vec[i].n;

        size = sizeof(bench_cache_node_t)
               + vec[i].n * sizeof(ngx_http_llm_term_t)
               + sizeof(BENCH_MODEL) - 1 + sizeof(BENCH_PROVIDER) - 1
               + BENCH_ANSWER;

        total[i] = size;
        perm[i] = i;
    }

    z->terms = (double) terms / n;

    for (i = n - 1; i > 0; i--) {
        j = bench_rand() % (i + 1);
        t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }

    sum = 0;

    for (i = 0; i < n; i++) {
        j = perm[i];
        offset[j] = sum;
        sum += bench_slab_size(BENCH_ZONE_VALUE + total[j] + 16);
    }

    z->arena = calloc(1, sum);
    if (z->arena == NULL) {
        return NGX_ERROR;
    }

    for (i = 0; i < n; i++) {
        zn = (bench_zone_node_t *) (z->arena + offset[i]);

        zn->expire = z->now + 3600 * 1000;
        zn->size = (uint32_t) total[i];
        zn->len = 16;
        zn->kind = BENCH_KIND_CACHE;

        node = (bench_cache_node_t *) ((u_char *) zn + BENCH_ZONE_VALUE);

        node->space[0] = z->space[0];
        node->space[1] = z->space[1];
        node->sig = vec[i].sig;
        node->norm2 = vec[i].norm2;
        node->nterms = (uint8_t) vec[i].n;
        node->model_len = sizeof(BENCH_MODEL) - 1;
        node->provider_len = sizeof(BENCH_PROVIDER) - 1;
        node->content_len = BENCH_ANSWER;

        p = (u_char *) (node + 1);
        p = ngx_cpymem(p, vec[i].terms,
                       vec[i].n * sizeof(ngx_http_llm_term_t));
        p = ngx_cpymem(p, BENCH_MODEL, sizeof(BENCH_MODEL) - 1);
        p = ngx_cpymem(p, BENCH_PROVIDER, sizeof(BENCH_PROVIDER) - 1);

        qn = (uint32_t) i;
        ngx_memcpy(p, &qn, sizeof(uint32_t));

        /* the key: 128 bits of a hash */

        p = (u_char *) node + zn->size;

        for (j = 0; j < 16; j += 8) {
            r = bench_rand();
            ngx_memcpy(p + j, &r, 8);
        }

        ngx_queue_insert_head(&z->lru, &zn->queue);

        slot = &z->slots[i];
        slot->sig = vec[i].sig;
        slot->space = z->space[0];
        ngx_memcpy(slot->key, p, 16);

        k = &z->keys[i];
        ngx_memcpy(k->key, p, 16);
        k->zn = zn;
    }

    qsort(z->keys, n, sizeof(bench_key_t), bench_key_cmp);

    free(vec);
    free(perm);
    free(offset);
    free(total);

    return NGX_OK;
}


static void
bench_zone_free(bench_zone_t *z)
{
    free(z->questions);
    free(z->slots);
    free(z->keys);
    free(z->arena);
}


static int
bench_key_cmp(const void *a, const void *b)
{
    return ngx_memcmp(((bench_key_t *) a)->key, ((bench_key_t *) b)->key, 16);
}


static int
bench_ns_cmp(const void *a, const void *b)
{
    uint64_t  x, y;

    x = *(uint64_t *) a;
    y = *(uint64_t *) b;

    return (x > y) - (x < y);
}


/*
 * ngx_http_llm_zone_get(zone, NGX_HTTP_LLM_KIND_CACHE, key, 0) emulated:
 * a binary search instead of the rbtree walk, then as there the expiry
 * check and the move to the head of the LRU queue.
 */

static bench_cache_node_t *
bench_zone_get(bench_zone_t *z, u_char *key)
{
    ngx_int_t           rc;
    ngx_uint_t          lo, hi, mid;
    bench_zone_node_t  *zn;

    lo = 0;
    hi = z->n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memcmp(key, z->keys[mid].key, 16);

        if (rc == 0) {
            zn = z->keys[mid].zn;

            if (zn->expire && zn->expire <= z->now) {
                return NULL;
            }

            ngx_queue_remove(&zn->queue);
            ngx_queue_insert_head(&z->lru, &zn->queue);

            return (bench_cache_node_t *) ((u_char *) zn + BENCH_ZONE_VALUE);
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/* ngx_http_llm_cache_semantic(), with the embedding before it */

static bench_cache_node_t *
bench_lookup(bench_zone_t *z, u_char *text, size_t len, ngx_uint_t *sim,
    ngx_uint_t *ncand)
{
    ngx_uint_t             i, s, best_sim, n;
    bench_cache_node_t    *node, *best;
    ngx_http_llm_vec_t     q;
    ngx_http_llm_slot_t   *slot;
    ngx_http_llm_query_t   iq;

    ngx_http_llm_embed(text, len, &q);

    best = NULL;
    best_sim = 0;
    n = 0;

    if (q.n == 0) {
        *sim = 0;
        *ncand = 0;
        return NULL;
    }

    /* the builtin embedder's vectors, at the default threshold */

    ngx_http_llm_index_query(&q, 900, z->space[0], &iq);

    for (i = ngx_http_llm_index_next(z->slots, z->n, 0, &iq);
         i < z->n;
         i = ngx_http_llm_index_next(z->slots, z->n, i + 1, &iq))
    {
        slot = &z->slots[i];
        n++;

        node = bench_zone_get(z, slot->key);

        if (node == NULL) {
            slot->space = 0;
            slot->sig = 0;
            continue;
        }

        if (node->space[0] != z->space[0] || node->space[1] != z->space[1]) {
            continue;
        }

        s = ngx_http_llm_embed_similarity(q.terms, q.n, q.norm2,
                                          (ngx_http_llm_term_t *) (node + 1),
                                          node->nterms, node->norm2);

        if (s > best_sim) {
            best_sim = s;
            best = node;
        }
    }

    *sim = best_sim;
    *ncand = n;

    if (best == NULL || best_sim < BENCH_THRESHOLD) {
        return NULL;
    }

    return best;
}


/* the stored question an entry answers: the start of its answer */

static ngx_uint_t
bench_entry_question(bench_cache_node_t *node)
{
    u_char    *p;
    uint32_t   qn;

    p = (u_char *) (node + 1) + node->nterms * sizeof(ngx_http_llm_term_t)
        + node->dims + node->model_len + node->provider_len;

    ngx_memcpy(&qn, p, sizeof(uint32_t));

    return qn;
}


static ngx_int_t
bench_run(ngx_uint_t n, bench_result_t *r)
{
    u_char               text[BENCH_TEXT];
    uint64_t            *ns, sum, cand;
    ngx_uint_t           i, sim, ncand, src;
    bench_set_t          set;
    bench_zone_t         z;
    bench_query_t       *qs;
    struct timespec      t0, t1;
    bench_question_t     q, *sq;
    bench_cache_node_t  *node;

    ngx_memzero(r, sizeof(bench_result_t));

    bench_state = BENCH_SEED;

    qs = malloc(BENCH_QUERIES * sizeof(bench_query_t));
    ns = malloc(BENCH_QUERIES * sizeof(uint64_t));

    if (qs == NULL || ns == NULL
        || bench_set_init(&set, n) != NGX_OK
        || bench_zone_build(&z, n, &set) != NGX_OK)
    {
        fprintf(stderr, "semantic_bench: out of memory for %u entries\n",
                (unsigned) n);
        return NGX_ERROR;
    }

    /* paraphrases of stored questions and new questions, in turn */

    for (i = 0; i < BENCH_QUERIES; i++) {

        if (i % 2 == 0) {
            src = bench_rand() % n;
            sq = &z.questions[src];

            qs[i].src = src;
            qs[i].len = bench_render(sq, (sq->variant + 1
                                          + bench_rand() % (BENCH_VARIANTS
                                                            - 1))
                                         % BENCH_VARIANTS,
                                     qs[i].text);
            continue;
        }

        do {
            bench_question(&q);
        } while (bench_set_has(&set, bench_question_key(&q)));

        qs[i].src = -1;
        qs[i].len = bench_render(&q, q.variant, qs[i].text);
    }

    for (i = 0; i < BENCH_WARMUP; i++) {
        (void) bench_lookup(&z, qs[i].text, qs[i].len, &sim, &ncand);
    }

    sum = 0;
    cand = 0;

    for (i = 0; i < BENCH_QUERIES; i++) {
        clock_gettime(CLOCK_MONOTONIC, &t0);

        node = bench_lookup(&z, qs[i].text, qs[i].len, &sim, &ncand);

        clock_gettime(CLOCK_MONOTONIC, &t1);

        ns[i] = (uint64_t) (t1.tv_sec - t0.tv_sec) * 1000000000
                + t1.tv_nsec - t0.tv_nsec;
        sum += ns[i];
        cand += ncand;

        if (qs[i].src >= 0) {
            r->paraphrases++;

            if (node) {
                r->hits++;
                r->other += (bench_entry_question(node)
                             != (ngx_uint_t) qs[i].src);
            }

            continue;
        }

        r->fresh++;

        if (node == NULL) {
            continue;
        }

        r->false_hits++;

        if (r->nex < BENCH_EXAMPLES) {
            sq = &z.questions[bench_entry_question(node)];
            (void) bench_render(sq, sq->variant, text);

            snprintf(r->ex[r->nex++], sizeof(r->ex[0]),
                     "\"%s\" found \"%s\" (%u)", qs[i].text, text,
                     (unsigned) sim);
        }
    }

    qsort(ns, BENCH_QUERIES, sizeof(uint64_t), bench_ns_cmp);

    /* percentiles by nearest rank */

    r->n = n;
    r->mean = (double) sum / BENCH_QUERIES / 1000;
    r->p50 = (double) ns[(BENCH_QUERIES * 50 + 99) / 100 - 1] / 1000;
    r->p99 = (double) ns[(BENCH_QUERIES * 99 + 99) / 100 - 1] / 1000;
    r->max = (double) ns[BENCH_QUERIES - 1] / 1000;
    r->candidates = (double) cand / BENCH_QUERIES;
    r->terms = z.terms;

    bench_zone_free(&z);
    free(set.keys);
    free(qs);
    free(ns);

    return NGX_OK;
}


int
main(int argc, char **argv)
{
    char            *end;
    size_t           entry;
    ngx_uint_t       i, j, nsizes, sizes[16];
    bench_result_t   r[16];

    static ngx_uint_t  defaults[] = { 1000, 10000, 100000 };

    nsizes = 0;

    for (i = 1; i < (ngx_uint_t) argc && nsizes < 16; i++) {
        sizes[nsizes] = strtoul(argv[i], &end, 10);

        if (*end != '\0' || sizes[nsizes] == 0 || sizes[nsizes] > 10000000) {
            fprintf(stderr, "usage: semantic_bench [entries ...]\n");
            return 2;
        }

        nsizes++;
    }

    if (nsizes == 0) {
        for (i = 0; i < bench_nelts(defaults); i++) {
            sizes[nsizes++] = defaults[i];
        }
    }

    if (bench_init() != NGX_OK) {
        return 1;
    }

    for (i = 0; i < nsizes; i++) {
        fprintf(stderr, "semantic_bench: %u entries\n", (unsigned) sizes[i]);

        if (bench_run(sizes[i], &r[i]) != NGX_OK) {
            return 1;
        }
    }

    printf("%u queries a size: %u paraphrases of stored questions, %u new "
           "questions; every entry in one key space (one system prompt for "
           "all: the worst case); threshold %u.\n\n",
           BENCH_QUERIES, BENCH_QUERIES / 2, BENCH_QUERIES / 2,
           BENCH_THRESHOLD);

    printf("| entries | mean us | p50 us | p99 us | max us "
           "| candidates per query | paraphrase hits | false hits (new) "
           "| bytes per entry | index bytes |\n"
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");

    for (i = 0; i < nsizes; i++) {
        entry = sizeof(ngx_http_llm_slot_t) + BENCH_ZONE_VALUE
                + sizeof(bench_cache_node_t) + 16;

        printf("| %u | %.1f | %.1f | %.1f | %.1f | %.0f (%.1f%%) "
               "| %.1f%% | %u (%.1f%%) | %.0f | %u |\n",
               (unsigned) r[i].n, r[i].mean, r[i].p50, r[i].p99, r[i].max,
               r[i].candidates, 100 * r[i].candidates / r[i].n,
               100.0 * r[i].hits / r[i].paraphrases,
               (unsigned) r[i].false_hits,
               100.0 * r[i].false_hits / r[i].fresh,
               entry + r[i].terms * sizeof(ngx_http_llm_term_t),
               (unsigned) (r[i].n * sizeof(ngx_http_llm_slot_t)));
    }

    printf("\n"
           "- A query, timed end to end (clock_gettime(CLOCK_MONOTONIC), "
           "one thread, after %u untimed ones): ngx_http_llm_embed() of "
           "the question, ngx_http_llm_index_next() over the N slots, and "
           "for every candidate (a slot whose 64-bit signature shares a "
           "bit with the question's) a zone lookup and "
           "ngx_http_llm_embed_similarity(); the best is kept.  All but "
           "the embedding runs under the zone's lock.\n",
           BENCH_WARMUP);

    printf("- The zone lookup is emulated: a binary search over the "
           "entries' 16-byte keys in a sorted array, then the expiry "
           "check and the LRU move of ngx_http_llm_zone_get().  The real "
           "zone walks an rbtree (about 105 ns a lookup in the zone's "
           "unit test), so a candidate costs more there.  The entries lie "
           "at their slab sizes (with a %u-byte answer) in shuffled "
           "order, as in a zone that has seen evictions.\n",
           BENCH_ANSWER);

    printf("- Bytes per entry: index slot %u + zone node header %u + "
           "cache node %u + %u per term (%.2f terms on average at the "
           "largest size) + key 16; the answer itself (model, provider, "
           "content, tool calls) comes on top, and the slab rounds the "
           "whole entry up to a power of two.\n",
           (unsigned) sizeof(ngx_http_llm_slot_t),
           (unsigned) BENCH_ZONE_VALUE,
           (unsigned) sizeof(bench_cache_node_t),
           (unsigned) sizeof(ngx_http_llm_term_t), r[nsizes - 1].terms);

    printf("- Corpus (seed %#llx): %u question families, %u phrasings "
           "each; %u verbs, %u adjectives, %u nouns (%u real, the rest "
           "made up), %u places, 7 weekdays, numbers; words drawn by "
           "Zipf's law (s = 1).  Stored questions are distinct (family "
           "and words).  A paraphrase is another phrasing of one (a stop "
           "word changed, words reordered, a generic word added); a new "
           "question is none of them, so a hit on it is a false hit.\n",
           (unsigned long long) BENCH_SEED, (unsigned) BENCH_FAMILIES,
           BENCH_VARIANTS, (unsigned) bench_nelts(bench_verbs),
           (unsigned) bench_nelts(bench_adjectives), BENCH_NOUNS,
           (unsigned) bench_nelts(bench_real_nouns),
           (unsigned) bench_nelts(bench_places));

    for (i = 0; i < nsizes; i++) {
        printf("- %u entries: %u paraphrase hits on another question",
               (unsigned) r[i].n, (unsigned) r[i].other);

        for (j = 0; j < r[i].nex; j++) {
            printf("%s %s", j ? ";" : "; false hits, e.g.", r[i].ex[j]);
        }

        printf(".\n");
    }

    return 0;
}
