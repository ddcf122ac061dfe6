
/*
 * libFuzzer target for the JSON scanner, the UTF-8 repair and the SSE
 * parser: whatever the bytes, no crash, no read out of bounds, and
 *
 *   - the scanner accepts a document exactly when jansson does;
 *   - a string it accepts unescapes to jansson's text, and a "model"
 *     member is found where jansson finds it (escaped keys, last wins);
 *   - ngx_http_llm_utf8_repair() leaves valid UTF-8 alone, makes anything
 *     else valid UTF-8 (as jansson checks it), and a second repair changes
 *     nothing.
 *
 *   t/fuzz/run [seconds]
 */

#include <ngx_config.h>
#include <ngx_core.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"
#include "ngx_http_llm_sse.h"


static ngx_pool_t  *pool;     /* unused by the stubs */

/* the events of one parse, as "event NUL payload NUL ..." */
static u_char      *rec;
static size_t       rec_len, rec_size;

void fuzz_free_all(void);


static ngx_int_t
on_event(void *data, ngx_str_t *event, ngx_str_t *payload)
{
    ngx_str_t   m[3], e, s;
    u_char     *pos;
    ngx_int_t   dup;
    ngx_uint_t  n, n2;

    static const char  *names[] = { "a", "choices", "usage", NULL };

    if (rec_len + event->len + payload->len + 2 > rec_size) {
        rec_size = 2 * (rec_len + event->len + payload->len + 2);
        rec = realloc(rec, rec_size);
    }

    memcpy(rec + rec_len, event->data, event->len);
    rec_len += event->len;
    rec[rec_len++] = '\0';
    memcpy(rec + rec_len, payload->data, payload->len);
    rec_len += payload->len;
    rec[rec_len++] = '\0';

    (void) ngx_http_llm_json_members(payload->data,
                                     payload->data + payload->len, names, m);

    pos = NULL;

    for (n = 0; n < 1000; n++) {
        if (ngx_http_llm_json_next(&m[1], &pos, &e) != NGX_OK) {
            break;
        }

        (void) ngx_http_llm_json_members_n(e.data, e.data + e.len, names,
                                           m, &n2);
        (void) ngx_http_llm_json_members_dup(e.data, e.data + e.len, names,
                                             m, &dup);
        (void) ngx_http_llm_json_string(pool, &e, &s);
        (void) ngx_http_llm_json_int(&e);
    }

    s = *payload;

    if (ngx_http_llm_utf8_repair(pool, &s) != NGX_OK) {
        __builtin_trap();
    }

    return (payload->len && payload->data[0] == 'X') ? NGX_DONE : NGX_OK;
}


static void
check_repair(u_char *data, size_t size)
{
    json_t     *j;
    ngx_str_t   s, s2;

    s.data = data;
    s.len = size;

    if (ngx_http_llm_utf8_repair(pool, &s) != NGX_OK) {
        __builtin_trap();
    }

    /* json_stringn() checks UTF-8 */

    j = json_stringn((const char *) data, size);

    if ((j != NULL) != (s.data == data)) {
        __builtin_trap();
    }

    json_decref(j);

    j = json_stringn((const char *) s.data, s.len);

    if (j == NULL) {
        __builtin_trap();
    }

    json_decref(j);

    s2 = s;

    if (ngx_http_llm_utf8_repair(pool, &s2) != NGX_OK
        || s2.data != s.data || s2.len != s.len)
    {
        __builtin_trap();
    }
}


static void
check_json(u_char *data, size_t size)
{
    json_t      *j, *model;
    ngx_int_t    rc, dup;
    ngx_str_t    m[2], m2[2], v, s;
    const char  *text;

    static const char  *names[] = { "model", "messages", NULL };

    rc = ngx_http_llm_json_members(data, data + size, names, m);

    if (ngx_http_llm_json_members_dup(data, data + size, names, m2, &dup)
        != rc
        || m2[0].data != m[0].data || m2[1].data != m[1].data
        || dup < -1 || dup > 1)
    {
        __builtin_trap();
    }

    /*
     * jansson skips a NUL byte that follows a number or a literal ("1\0"
     * is 1), the scanner refuses all of them
     */

    if (memchr(data, 0, size)) {
        return;
    }

    j = json_loadb((const char *) data, size, JSON_DECODE_ANY, NULL);

    if ((j != NULL) != (rc != NGX_ERROR)) {
        __builtin_trap();
    }

    if (j == NULL) {
        return;
    }

    if (json_is_string(j)) {

        /* the string without the white space around it */

        v.data = data;
        v.len = size;

        while (v.data[0] != '"') {
            v.data++;
            v.len--;
        }

        while (v.data[v.len - 1] != '"') {
            v.len--;
        }

        if (ngx_http_llm_json_string(pool, &v, &s) != NGX_OK
            || s.len != json_string_length(j)
            || ngx_memcmp(s.data, json_string_value(j), s.len) != 0)
        {
            __builtin_trap();
        }
    }

    if (json_is_object(j)) {
        model = json_object_get(j, "model");

        if ((model != NULL) != (m[0].len != 0)) {
            __builtin_trap();
        }

        if (json_is_string(model)) {
            text = json_string_value(model);

            if (ngx_http_llm_json_string(pool, &m[0], &s) != NGX_OK
                || s.len != json_string_length(model)
                || ngx_memcmp(s.data, text, s.len) != 0)
            {
                __builtin_trap();
            }
        }
    }

    json_decref(j);
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    u_char              *copy, *whole;
    size_t               i, whole_len;
    ngx_int_t            rc, rc2;
    ngx_http_llm_sse_t   sse;

    /* an exact-size heap copy, so that ASan sees reads past the end */

    copy = malloc(size ? size : 1);
    memcpy(copy, data, size);

    check_json(copy, size);
    check_repair(copy, size);

    /* the same events whether the stream comes whole, in two parts or a
     * byte at a time */

    ngx_http_llm_sse_init(&sse, pool, 4096, on_event, NULL);
    rec_len = 0;
    rc = ngx_http_llm_sse_feed(&sse, copy, copy + size);
    whole = malloc(rec_len + 1);
    memcpy(whole, rec, rec_len);
    whole_len = rec_len;

    ngx_http_llm_sse_init(&sse, pool, 4096, on_event, NULL);
    rec_len = 0;
    rc2 = ngx_http_llm_sse_feed(&sse, copy, copy + size / 2);
    if (rc2 == NGX_OK) {
        rc2 = ngx_http_llm_sse_feed(&sse, copy + size / 2, copy + size);
    }

    if (rc == NGX_OK && rc2 == NGX_OK
        && (rec_len != whole_len || memcmp(rec, whole, rec_len) != 0))
    {
        __builtin_trap();
    }

    if (size <= 512) {
        ngx_http_llm_sse_init(&sse, pool, 4096, on_event, NULL);
        rec_len = 0;
        rc2 = NGX_OK;

        for (i = 0; i < size && rc2 == NGX_OK; i++) {
            rc2 = ngx_http_llm_sse_feed(&sse, copy + i, copy + i + 1);
        }

        if (rc == NGX_OK && rc2 == NGX_OK
            && (rec_len != whole_len || memcmp(rec, whole, rec_len) != 0))
        {
            __builtin_trap();
        }
    }

    free(whole);

    free(copy);

    fuzz_free_all();

    return 0;
}
