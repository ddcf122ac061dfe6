
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_JSON_H_INCLUDED_
#define _NGX_HTTP_LLM_JSON_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/*
 * A validating JSON scanner that builds nothing: it checks a document and
 * finds the values of named members of an object, as spans of the input.
 * It serves the hot paths (OpenAI to OpenAI) where a full parse with
 * jansson would cost more than the rest of the request.
 *
 * It accepts what json_loadb() accepts with JSON_DECODE_ANY (and, for
 * objects and arrays, with flags 0), so that a body is valid or not
 * whatever the provider's format: UTF-8 only (no overlong forms, no
 * surrogates, nothing above U+10FFFF), no \u0000 and no unpaired surrogate
 * escapes, integers within int64_t, reals within a double, values nested
 * at most NGX_HTTP_LLM_JSON_MAX_DEPTH deep (the top one included).  Raw NUL
 * bytes are refused even where jansson skips them.
 */

#define NGX_HTTP_LLM_JSON_MAX_DEPTH  2048   /* JSON_PARSER_MAX_DEPTH */


/*
 * p..last must hold exactly one JSON value (white space around it is
 * allowed).  If it is an object, the values of the members named in names
 * (NULL-terminated) go to values[] (len 0: absent); the last occurrence
 * wins.  A key matches a name after its escapes are read ("mod\u0065l" is
 * "model").  NGX_OK: an object; NGX_DECLINED: valid JSON, not an object;
 * NGX_ERROR: not valid JSON.
 */
ngx_int_t ngx_http_llm_json_members(u_char *p, u_char *last,
    const char **names, ngx_str_t *values);
/* the same, and *count is the number of members of the object */
ngx_int_t ngx_http_llm_json_members_n(u_char *p, u_char *last,
    const char **names, ngx_str_t *values, ngx_uint_t *count);
/*
 * the same, and *dup is the index in names of the first named member that
 * occurs twice at the top level of the object (the one whose second
 * occurrence comes first in the text), -1 if none does; values[] still
 * holds the last occurrences
 */
ngx_int_t ngx_http_llm_json_members_dup(u_char *p, u_char *last,
    const char **names, ngx_str_t *values, ngx_int_t *dup);

/*
 * ngx_http_llm_json_members() for a names array and a values array
 * declared in place: that values has room for every name is checked when
 * compiling.
 */
#define ngx_http_llm_json_get(p, last, names, values)                        \
    ngx_http_llm_json_get_n(p, last, names, values, NULL)

#define ngx_http_llm_json_get_n(p, last, names, values, count)               \
    (ngx_http_llm_json_members_n(p, last, names, values, count)              \
     + 0 * sizeof(char[(sizeof(values) / sizeof(values[0])                  \
                        >= sizeof(names) / sizeof(names[0]) - 1) ? 1 : -1]))

/* the end of the JSON value that starts at p, NULL if it is not valid */
u_char *ngx_http_llm_json_skip(u_char *p, u_char *last);

/*
 * The elements of an array span in turn: *pos starts NULL; NGX_OK with
 * the next one in *elem, NGX_DONE after the last, NGX_ERROR if the span is
 * not an array.
 */
ngx_int_t ngx_http_llm_json_next(ngx_str_t *array, u_char **pos,
    ngx_str_t *elem);

/* the element of an array span that has exactly one; NGX_DECLINED if it
 * has none or more */
ngx_int_t ngx_http_llm_json_only(ngx_str_t *array, ngx_str_t *elem);

/* a number span as an integer, -1 if it is none */
ngx_int_t ngx_http_llm_json_int(ngx_str_t *v);

/* the text of a string span without quotes, unescaped into pool memory
 * when needed (valid UTF-8, as the scanner accepted it); NGX_DECLINED: not
 * a string */
ngx_int_t ngx_http_llm_json_string(ngx_pool_t *pool, ngx_str_t *v,
    ngx_str_t *s);

/*
 * Any bytes (a provider's body, an SSE payload) made valid UTF-8 by the
 * scanner's rules: s is left alone if it is valid already, otherwise it
 * points to a pool copy in which each maximal ill-formed subpart (Unicode,
 * "U+FFFD substitution of maximal subparts": "\xe2\x82" is one, "\xc0\x80"
 * two) is replaced by U+FFFD.  NGX_ERROR: no memory.
 */
ngx_int_t ngx_http_llm_utf8_repair(ngx_pool_t *pool, ngx_str_t *s);


#endif /* _NGX_HTTP_LLM_JSON_H_INCLUDED_ */
