
/*
 * The builtin embedder alone: pairs of questions that must be the same
 * question at the default threshold (0.90), and pairs that must not.
 * Built and run by t/llm_cache.t; prints "ok - ..." / "not ok - ...",
 * then "done".
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <stdio.h>

#include "ngx_http_llm_embed.h"


/* from ngx_string.c, which the test does not link */

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


static ngx_uint_t
sim(const char *a, const char *b)
{
    ngx_http_llm_vec_t  va, vb;

    ngx_http_llm_embed((u_char *) a, strlen(a), &va);
    ngx_http_llm_embed((u_char *) b, strlen(b), &vb);

    return ngx_http_llm_embed_similarity(va.terms, va.n, va.norm2, vb.terms,
                                         vb.n, vb.norm2);
}


static const char  *same[][2] = {
    { "What is your refund policy?", "Tell me about refunds" },
    { "How do I reset my password?", "How can I reset my password" },
    { "What are your opening hours?", "opening hours?" },
    { "Can I get a refund?", "I want a refund" },
    { "How do I cancel my subscription?",
      "How can I cancel my subscription" },
    { "Where is my order?", "where is my order" },
    { "What's the weather on Monday?", "Weather on Monday, please" },
    { "How much does the iPhone 15 cost?", "how much is the iPhone 15" },
    { "Do you ship to Canada?", "Can you ship to Canada" },
    { "Explain how refunds work", "How do refunds work?" },
    { "\xe6\x98\x9f\xe6\x9c\x9f\xe4\xb8\x80\xe5\xa4\xa9\xe6\xb0\x94 "
      "\xe6\x80\x8e\xe4\xb9\x88\xe6\xa0\xb7",
      "\xe6\x98\x9f\xe6\x9c\x9f\xe4\xb8\x80\xe5\xa4\xa9\xe6\xb0\x94 "
      "\xe6\x80\x8e\xe4\xb9\x88\xe6\xa0\xb7?" },
    { NULL, NULL }
};


static const char  *other[][2] = {
    { "What is your refund policy?", "What is your shipping policy?" },
    { "Tell me about refunds", "What is your shipping policy?" },
    { "What's the weather on Monday?", "What's the weather on Tuesday?" },
    { "How much does the iPhone 15 cost?",
      "How much does the iPhone 16 cost?" },
    { "Do you ship to Canada?", "Do you ship to Mexico?" },
    { "Is the store in Paris open?", "Is the store in London open?" },
    { "How much is a Pixel?", "How much is an iPhone?" },
    { "Book a table for 2 people", "Book a table for 4 people" },
    { "What happened in March?", "What happened in April?" },
    { "How do I reset my password?", "How do I reset my router?" },
    { "Can I get a refund?", "Can I get an invoice?" },
    { "How do I cancel my subscription?", "How do I renew my subscription?" },
    { "hi", "hello" },
    { "How do I upload my photo?", "When should I upload my photo?" },
    { "Where is my order?", "Why is my order late?" },
    { "\xe6\x98\x9f\xe6\x9c\x9f\xe4\xb8\x80\xe5\xa4\xa9\xe6\xb0\x94\xe6\x80\x8e\xe4\xb9\x88\xe6\xa0\xb7",
      "\xe6\x98\x9f\xe6\x9c\x9f\xe4\xba\x8c\xe5\xa4\xa9\xe6\xb0\x94\xe6\x80\x8e\xe4\xb9\x88\xe6\xa0\xb7" },
    { "Quel temps fera-t-il \xc3\xa0 Paris lundi ?",
      "Quel temps fera-t-il \xc3\xa0 Paris mardi ?" },
    { NULL, NULL }
};


int
main(void)
{
    int         bad;
    ngx_uint_t  i, s;

    bad = 0;

    for (i = 0; same[i][0]; i++) {
        s = sim(same[i][0], same[i][1]);
        printf("%sok - same: \"%s\" / \"%s\" (%u)\n", s >= 900 ? "" : "not ",
               same[i][0], same[i][1], (unsigned) s);
        bad += (s < 900);
    }

    for (i = 0; other[i][0]; i++) {
        s = sim(other[i][0], other[i][1]);
        printf("%sok - other: \"%s\" / \"%s\" (%u)\n", s < 900 ? "" : "not ",
               other[i][0], other[i][1], (unsigned) s);
        bad += (s >= 900);
    }

    printf("done\n");

    return bad ? 1 : 0;
}
