
/*
 * libFuzzer target for the JSON scanner and the SSE parser: whatever the
 * bytes, no crash, no read out of bounds, and the scanner agrees with
 * jansson on what is valid JSON (jansson also checks UTF-8, so only
 * "jansson accepts, the scanner refuses" is a disagreement).
 *
 *   t/fuzz/run [seconds]
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_sse.h"


static ngx_pool_t  *pool;     /* unused by the stubs */

void fuzz_free_all(void);


static ngx_int_t
on_event(void *data, ngx_str_t *event, ngx_str_t *payload)
{
    ngx_str_t   m[3], e, s;
    u_char     *pos;
    ngx_uint_t  n, n2;

    static const char  *names[] = { "a", "choices", "usage", NULL };

    (void) ngx_http_llm_json_members(payload->data,
                                     payload->data + payload->len, names, m);

    pos = NULL;

    for (n = 0; n < 1000; n++) {
        if (ngx_http_llm_json_next(&m[1], &pos, &e) != NGX_OK) {
            break;
        }

        (void) ngx_http_llm_json_members_n(e.data, e.data + e.len, names,
                                           m, &n2);
        (void) ngx_http_llm_json_string(pool, &e, &s);
        (void) ngx_http_llm_json_int(&e);
    }

    return (payload->len && payload->data[0] == 'X') ? NGX_DONE : NGX_OK;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char              *copy;
    json_t              *j;
    ngx_int_t            rc;
    ngx_str_t            m[2];
    ngx_http_llm_sse_t   sse;

    static const char  *names[] = { "model", "messages", NULL };

    /* an exact-size heap copy, so that ASan sees reads past the end */

    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    rc = ngx_http_llm_json_members(copy, copy + size, names, m);

    j = json_loadb((const char *) copy, size, JSON_DECODE_ANY, NULL);

    /* jansson stops at a NUL byte, the scanner refuses it */

    if (j && rc == NGX_ERROR && memchr(copy, 0, size) == NULL) {
        __builtin_trap();
    }

    json_decref(j);

    ngx_http_llm_sse_init(&sse, pool, 4096, on_event, NULL);
    (void) ngx_http_llm_sse_feed(&sse, copy, copy + size / 2);
    (void) ngx_http_llm_sse_feed(&sse, copy + size / 2, copy + size);

    free(copy);

    fuzz_free_all();

    return 0;
}
