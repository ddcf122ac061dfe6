
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_EMBED_H_INCLUDED_
#define _NGX_HTTP_LLM_EMBED_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * The builtin embedder: a question as a sparse vector of its content
 * words, stemmed, each with a small integer weight (generic words count
 * little, names and numbers a lot), and the set of its entities (numbers,
 * weekdays, months, capitalized names) that another question must share
 * to be the same question.  Lexical, deterministic, no model to load.
 * It needs nothing of nginx but its types, so that bench/ can build it
 * alone.
 */

#define NGX_HTTP_LLM_EMBED_TERMS    24

#define NGX_HTTP_LLM_TERM_ENTITY    0x01


typedef struct {
    uint32_t                    hash;          /* of the stemmed word */
    uint8_t                     weight;
    uint8_t                     flags;         /* NGX_HTTP_LLM_TERM_* */
    uint16_t                    reserved;
} ngx_http_llm_term_t;


typedef struct {
    uint64_t                    sig;           /* a bit per term */
    uint32_t                    norm2;         /* sum of squared weights */
    uint32_t                    n;
    ngx_http_llm_term_t         terms[NGX_HTTP_LLM_EMBED_TERMS];
} ngx_http_llm_vec_t;                          /* terms sorted by hash */


/*
 * A slot of a semantic index: an entry's key space, the signature of its
 * words and its key.  The index is scanned whole: 32 bytes a slot.
 */

typedef struct {
    uint64_t                    sig;
    uint64_t                    space;
    u_char                      key[16];
} ngx_http_llm_slot_t;


/* the vector of a text (UTF-8); v->n == 0: no content word */
void ngx_http_llm_embed(u_char *text, size_t len, ngx_http_llm_vec_t *v);

/*
 * The cosine similarity of two vectors, 0 to 1000; 0 also when their
 * entities differ: "on Monday" is not "on Tuesday".
 */
ngx_uint_t ngx_http_llm_embed_similarity(ngx_http_llm_term_t *a,
    ngx_uint_t na, uint32_t norm2a, ngx_http_llm_term_t *b, ngx_uint_t nb,
    uint32_t norm2b);


/*
 * What a scan of the index looks for: the space, and what a slot's
 * signature must have to hold a question similar enough.  A builtin
 * vector reaches the threshold T only if the words it shares with the
 * question carry T^2 of the question's squared weight: a slot whose
 * signature lacks the bits of more than the rest (allow) cannot, nor one
 * that lacks an entity's bit (must).  A provider's vector (dense) must
 * have most of the question's signs.
 */

typedef struct {
    uint64_t                    space;
    uint64_t                    sig;
    uint64_t                    must;          /* bits a slot must have */
    uint64_t                    allow;         /* squared weight that may
                                                  be missing */
    uint32_t                    w2[64];        /* squared weight per bit */
    ngx_uint_t                  dense;
} ngx_http_llm_query_t;


/* the query of a builtin vector at threshold (0 to 1000) */
void ngx_http_llm_index_query(ngx_http_llm_vec_t *v, ngx_uint_t threshold,
    uint64_t space, ngx_http_llm_query_t *q);

/* the first slot from i on that may hold a similar question: a candidate
 * to compare; n if there is none */
ngx_uint_t ngx_http_llm_index_next(ngx_http_llm_slot_t *slots, ngx_uint_t n,
    ngx_uint_t i, ngx_http_llm_query_t *q);


/*
 * A provider's embedding (dims doubles) quantized to int8 at the scale of
 * its unit vector (x 127) into q; *norm2 is the sum of the squares, *sig
 * the signs of its first 64 components, which two vectors of cosine 0.9
 * share but for about 9 (the index lets 24 differ).  NGX_DECLINED: a zero
 * vector.
 */
ngx_int_t ngx_http_llm_dense(double *v, ngx_uint_t dims, int8_t *q,
    uint32_t *norm2, uint64_t *sig);

/* the cosine similarity of two quantized vectors, 0 to 1000 */
ngx_uint_t ngx_http_llm_dense_similarity(int8_t *a, int8_t *b,
    ngx_uint_t dims, uint32_t norm2a, uint32_t norm2b);


#endif /* _NGX_HTTP_LLM_EMBED_H_INCLUDED_ */
