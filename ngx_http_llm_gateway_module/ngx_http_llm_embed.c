
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include <ngx_config.h>
#include <ngx_core.h>

#include "ngx_http_llm_embed.h"


/*
 * Words are split on anything that is not an ASCII letter or digit (bytes
 * of other scripts are letters), lowercased, and stemmed with a few
 * English suffix rules: "refunds", "refunded" and "refunding" are all
 * "refund".  Stop words (the question's grammar: "what", "how", "can",
 * "you", "tell", "me", "about"...) are dropped.  What remains is
 * weighted: a generic word ("policy", "information") little, a content
 * word more, an entity most, so that "What is your refund policy?" and
 * "Tell me about refunds" are close (cosine 0.97) while "What is your
 * shipping policy?" is far from both.
 */

#define NGX_HTTP_LLM_WORD_MAX      48

#define NGX_HTTP_LLM_W_GENERIC     25
#define NGX_HTTP_LLM_W_WORD        100
#define NGX_HTTP_LLM_W_ENTITY      150


static ngx_uint_t ngx_http_llm_embed_in(const char **list, ngx_uint_t n,
    u_char *w, size_t len);
static size_t ngx_http_llm_embed_stem(u_char *w, size_t len);
static void ngx_http_llm_embed_add(ngx_http_llm_vec_t *v, uint32_t hash,
    ngx_uint_t weight, ngx_uint_t flags);
static uint64_t ngx_http_llm_isqrt(uint64_t n);
static ngx_uint_t ngx_http_llm_embed_foreign(u_char *p, u_char *last);


/* sorted, for a binary search */
static const char  *ngx_http_llm_stop[] = {
    "a", "about", "above", "after", "again", "all", "also", "am", "an",
    "and", "any", "are", "aren", "as", "at", "be", "because", "been",
    "before", "being", "below", "between", "both", "but", "by", "can",
    "cannot", "could", "couldn", "d", "describe", "did", "didn", "do",
    "does", "doesn", "doing", "don", "down", "during", "each", "explain",
    "few", "find", "for", "from", "further", "get", "give", "had", "has",
    "have", "having", "he", "hello", "her", "here", "hers", "herself", "hey",
    "hi", "him", "himself", "his", "how", "i", "if", "in", "into", "is",
    "isn", "it", "its", "itself", "just", "know", "let", "like", "ll", "m",
    "may", "me", "might", "more", "most", "must", "my", "myself", "need",
    "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or",
    "other", "our", "ours", "ourselves", "out", "over", "own", "please",
    "re", "s", "same", "shall", "she", "should", "show", "so", "some",
    "such", "t", "tell", "than", "thank", "thanks", "that", "the", "their",
    "theirs", "them", "themselves", "then", "there", "these", "they",
    "this", "those", "through", "to", "too", "under", "until", "up", "us",
    "ve", "very", "want", "was", "we", "were", "what", "while", "will",
    "with", "would", "you", "your", "yours", "yourself", "yourselves"
};


/* words that say little about what is asked, stemmed */
static const char  *ngx_http_llm_generic[] = {
    "detail", "info", "information", "issue", "option", "policy",
    "procedure", "process", "question", "rule", "step", "thing", "way"
};


/*
 * Entities by name: another weekday or month is another question, and so
 * is one asking when rather than how ("what" and "how" are stop words:
 * "What is your refund policy?" asks what "Tell me about refunds" does).
 */
static const char  *ngx_http_llm_named[] = {
    "april", "august", "december", "february", "friday", "january", "july",
    "june", "march", "monday", "november", "october", "saturday",
    "september", "sunday", "thursday", "today", "tomorrow", "tuesday",
    "wednesday", "when", "where", "which", "who", "whom", "why", "yesterday"
};


#define ngx_http_llm_nelts(a)  (sizeof(a) / sizeof(a[0]))

#define ngx_http_llm_is_word(c)                                              \
    (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z')                \
     || ((c) >= '0' && (c) <= '9') || (c) >= 0x80)


void
ngx_http_llm_embed(u_char *text, size_t len, ngx_http_llm_vec_t *v)
{
    u_char      *p, *last, *start, w[NGX_HTTP_LLM_WORD_MAX];
    size_t       n;
    uint32_t     hash;
    ngx_uint_t   i, upper, digit, first, entity, weight;

    ngx_memzero(v, sizeof(ngx_http_llm_vec_t));

    last = text + len;
    first = 1;

    for (p = text; p < last; /* void */) {

        if (!ngx_http_llm_is_word(*p)) {
            if (*p == '.' || *p == '?' || *p == '!' || *p == '\n') {
                first = 1;
            }

            p++;
            continue;
        }

        start = p;

        while (p < last && ngx_http_llm_is_word(*p)) {
            p++;
        }

        /*
         * A word of another script, or too long to be an English one, is
         * kept whole as an entity: without the language's rules, only
         * the same text is the same question (scripts without spaces make
         * a sentence one word).
         */

        if ((size_t) (p - start) > NGX_HTTP_LLM_WORD_MAX
            || ngx_http_llm_embed_foreign(start, p))
        {
            hash = 2166136261u;

            for ( /* void */ ; start < p; start++) {
                hash = (hash ^ (*start >= 'A' && *start <= 'Z'
                                ? (*start | 0x20) : *start))
                       * 16777619u;
            }

            ngx_http_llm_embed_add(v, hash, NGX_HTTP_LLM_W_ENTITY,
                                   NGX_HTTP_LLM_TERM_ENTITY);
            first = 0;
            continue;
        }

        n = p - start;
        upper = 0;
        digit = 0;

        for (i = 0; i < n; i++) {
            if (start[i] >= 'A' && start[i] <= 'Z') {
                upper |= (i == 0) ? 1 : 2;
                w[i] = (u_char) (start[i] | 0x20);

            } else {
                digit |= (start[i] >= '0' && start[i] <= '9');
                w[i] = start[i];
            }
        }

        if ((n == 1 && !digit)
            || ngx_http_llm_embed_in(ngx_http_llm_stop,
                                     ngx_http_llm_nelts(ngx_http_llm_stop),
                                     w, n))
        {
            first = 0;
            continue;
        }

        /* a name: capitalized inside a sentence, or "iPhone" anywhere */

        entity = digit || (upper & 2) || ((upper & 1) && !first)
                 || ngx_http_llm_embed_in(ngx_http_llm_named,
                                          ngx_http_llm_nelts(
                                              ngx_http_llm_named),
                                          w, n);
        first = 0;

        if (!digit) {
            n = ngx_http_llm_embed_stem(w, n);
        }

        if (entity) {
            weight = NGX_HTTP_LLM_W_ENTITY;

        } else if (ngx_http_llm_embed_in(ngx_http_llm_generic,
                                         ngx_http_llm_nelts(
                                             ngx_http_llm_generic),
                                         w, n))
        {
            weight = NGX_HTTP_LLM_W_GENERIC;

        } else {
            weight = NGX_HTTP_LLM_W_WORD;
        }

        /* FNV-1a */

        hash = 2166136261u;

        for (i = 0; i < n; i++) {
            hash = (hash ^ w[i]) * 16777619u;
        }

        ngx_http_llm_embed_add(v, hash, weight,
                               entity ? NGX_HTTP_LLM_TERM_ENTITY : 0);
    }

    for (i = 0; i < v->n; i++) {
        v->norm2 += (uint32_t) v->terms[i].weight * v->terms[i].weight;
        v->sig |= (uint64_t) 1 << (v->terms[i].hash & 63);
    }
}


static ngx_uint_t
ngx_http_llm_embed_foreign(u_char *p, u_char *last)
{
    for ( /* void */ ; p < last; p++) {
        if (*p >= 0x80) {
            return 1;
        }
    }

    return 0;
}


static ngx_uint_t
ngx_http_llm_embed_in(const char **list, ngx_uint_t n, u_char *w, size_t len)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memn2cmp(w, (u_char *) list[mid], len,
                          ngx_strlen(list[mid]));

        if (rc == 0) {
            return 1;
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return 0;
}


/* a few suffixes of English, enough for plurals and verb forms */

static size_t
ngx_http_llm_embed_stem(u_char *w, size_t len)
{
    if (len > 4 && ngx_strncmp(w + len - 3, "ies", 3) == 0) {
        w[len - 3] = 'y';
        return len - 2;
    }

    if (len > 4 && ngx_strncmp(w + len - 4, "sses", 4) == 0) {
        return len - 2;
    }

    if (len > 3 && w[len - 1] == 's' && w[len - 2] != 's'
        && w[len - 2] != 'u' && w[len - 2] != 'i')
    {
        return len - 1;
    }

    if (len > 5 && ngx_strncmp(w + len - 3, "ing", 3) == 0) {
        len -= 3;

    } else if (len > 4 && ngx_strncmp(w + len - 2, "ed", 2) == 0) {
        len -= 2;

    } else {
        return len;
    }

    /* "shipping", "shipped": "ship" */

    if (w[len - 1] == w[len - 2] && w[len - 1] != 'l' && w[len - 1] != 's'
        && w[len - 1] != 'z')
    {
        len--;
    }

    return len;
}


static void
ngx_http_llm_embed_add(ngx_http_llm_vec_t *v, uint32_t hash,
    ngx_uint_t weight, ngx_uint_t flags)
{
    ngx_uint_t            i, j;
    ngx_http_llm_term_t  *t;

    t = v->terms;

    for (i = 0; i < v->n && t[i].hash < hash; i++) {
        /* void */
    }

    if (i < v->n && t[i].hash == hash) {
        t[i].weight = (uint8_t) ngx_min(t[i].weight + weight, 255);
        t[i].flags |= (uint8_t) flags;
        return;
    }

    if (v->n == NGX_HTTP_LLM_EMBED_TERMS) {
        return;
    }

    for (j = v->n; j > i; j--) {
        t[j] = t[j - 1];
    }

    t[i].hash = hash;
    t[i].weight = (uint8_t) weight;
    t[i].flags = (uint8_t) flags;
    t[i].reserved = 0;

    v->n++;
}


ngx_uint_t
ngx_http_llm_embed_similarity(ngx_http_llm_term_t *a, ngx_uint_t na,
    uint32_t norm2a, ngx_http_llm_term_t *b, ngx_uint_t nb, uint32_t norm2b)
{
    uint64_t    dot;
    ngx_uint_t  i, j;

    if (na == 0 || nb == 0) {
        return 0;
    }

    dot = 0;
    i = 0;
    j = 0;

    while (i < na || j < nb) {

        if (j == nb || (i < na && a[i].hash < b[j].hash)) {
            if (a[i].flags & NGX_HTTP_LLM_TERM_ENTITY) {
                return 0;
            }

            i++;
            continue;
        }

        if (i == na || b[j].hash < a[i].hash) {
            if (b[j].flags & NGX_HTTP_LLM_TERM_ENTITY) {
                return 0;
            }

            j++;
            continue;
        }

        if ((a[i].flags ^ b[j].flags) & NGX_HTTP_LLM_TERM_ENTITY) {
            return 0;
        }

        dot += (uint64_t) a[i].weight * b[j].weight;
        i++;
        j++;
    }

    return (ngx_uint_t) (dot * 1000
                         / ngx_http_llm_isqrt((uint64_t) norm2a * norm2b));
}


/* the integer square root, rounded up (no libm in the module) */

static uint64_t
ngx_http_llm_isqrt(uint64_t n)
{
    uint64_t  x, y;

    if (n < 2) {
        return n ? n : 1;
    }

    x = n;
    y = (x + 1) / 2;

    while (y < x) {
        x = y;
        y = (x + n / x) / 2;
    }

    return (x * x < n) ? x + 1 : x;
}


#define NGX_HTTP_LLM_DENSE_SIGNS  24


void
ngx_http_llm_index_query(ngx_http_llm_vec_t *v, ngx_uint_t threshold,
    uint64_t space, ngx_http_llm_query_t *q)
{
    ngx_uint_t  i, b;

    ngx_memzero(q, sizeof(ngx_http_llm_query_t));

    q->space = space;
    q->sig = v->sig;

    for (i = 0; i < v->n; i++) {
        b = v->terms[i].hash & 63;
        q->w2[b] += (uint32_t) v->terms[i].weight * v->terms[i].weight;

        if (v->terms[i].flags & NGX_HTTP_LLM_TERM_ENTITY) {
            q->must |= (uint64_t) 1 << b;
        }
    }

    /* (1 - T^2) of the squared norm may be missing */

    q->allow = (uint64_t) v->norm2 * (1000000 - threshold * threshold)
               / 1000000;

    for (b = 0; b < 64; b++) {
        if (q->w2[b] > q->allow) {
            q->must |= (uint64_t) 1 << b;
        }
    }
}


ngx_uint_t
ngx_http_llm_index_next(ngx_http_llm_slot_t *slots, ngx_uint_t n,
    ngx_uint_t i, ngx_http_llm_query_t *q)
{
    uint64_t  missing, lack;

    if (q->dense) {
        for ( /* void */ ; i < n; i++) {
            if (slots[i].space == q->space
                && __builtin_popcountll(slots[i].sig ^ q->sig)
                   <= NGX_HTTP_LLM_DENSE_SIGNS)
            {
                return i;
            }
        }

        return n;
    }

    for ( /* void */ ; i < n; i++) {

        if (slots[i].space != q->space
            || (slots[i].sig & q->must) != q->must
            || !(slots[i].sig & q->sig))
        {
            continue;
        }

        missing = 0;

        for (lack = q->sig & ~slots[i].sig; lack; lack &= lack - 1) {
            missing += q->w2[__builtin_ctzll(lack)];
        }

        if (missing <= q->allow) {
            return i;
        }
    }

    return n;
}


ngx_int_t
ngx_http_llm_dense(double *v, ngx_uint_t dims, int8_t *q, uint32_t *norm2,
    uint64_t *sig)
{
    double      norm, x, y;
    ngx_int_t   k;
    ngx_uint_t  i;

    norm = 0;

    for (i = 0; i < dims; i++) {
        norm += v[i] * v[i];
    }

    if (norm <= 0) {
        return NGX_DECLINED;
    }

    /*
     * 1 / sqrt(norm) by Newton's method (no libm in the module), from
     * below, where it cannot overshoot
     */

    x = (norm >= 1) ? 1 / norm : 1;

    for (i = 0; i < 200; i++) {
        y = x * (1.5 - 0.5 * norm * x * x);

        if (y - x < 1e-12 * y) {
            break;
        }

        x = y;
    }

    *norm2 = 0;
    *sig = 0;

    for (i = 0; i < dims; i++) {
        k = (ngx_int_t) (v[i] * x * 127 + (v[i] < 0 ? -0.5 : 0.5));
        k = ngx_max(ngx_min(k, 127), -127);

        q[i] = (int8_t) k;
        *norm2 += (uint32_t) (k * k);

        if (i < 64 && v[i] > 0) {
            *sig |= (uint64_t) 1 << i;
        }
    }

    return *norm2 ? NGX_OK : NGX_DECLINED;
}


ngx_uint_t
ngx_http_llm_dense_similarity(int8_t *a, int8_t *b, ngx_uint_t dims,
    uint32_t norm2a, uint32_t norm2b)
{
    int64_t     dot;
    ngx_uint_t  i;

    dot = 0;

    for (i = 0; i < dims; i++) {
        dot += (int32_t) a[i] * b[i];
    }

    if (dot <= 0) {
        return 0;
    }

    return (ngx_uint_t) ((uint64_t) dot * 1000
                         / ngx_http_llm_isqrt((uint64_t) norm2a * norm2b));
}
