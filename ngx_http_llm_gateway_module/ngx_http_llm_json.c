
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_json.h"


static u_char *ngx_http_llm_json_value(u_char *p, u_char *last,
    ngx_uint_t depth);
static u_char *ngx_http_llm_json_object(u_char *p, u_char *last,
    ngx_uint_t depth, const char **names, ngx_str_t *values,
    ngx_uint_t *count);
static u_char *ngx_http_llm_json_sep(u_char *p, u_char *last, u_char close,
    ngx_uint_t first, ngx_uint_t *end);
static u_char *ngx_http_llm_json_str(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_number(u_char *p, u_char *last);


#define ngx_http_llm_json_ws(p, last)                                        \
    while (p < last                                                          \
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))         \
    {                                                                        \
        p++;                                                                 \
    }


ngx_int_t
ngx_http_llm_json_members(u_char *p, u_char *last, const char **names,
    ngx_str_t *values)
{
    return ngx_http_llm_json_members_n(p, last, names, values, NULL);
}


ngx_int_t
ngx_http_llm_json_members_n(u_char *p, u_char *last, const char **names,
    ngx_str_t *values, ngx_uint_t *count)
{
    ngx_uint_t  i, object;

    for (i = 0; names && names[i]; i++) {
        ngx_str_null(&values[i]);
    }

    ngx_http_llm_json_ws(p, last);

    object = (p < last && *p == '{');

    p = object ? ngx_http_llm_json_object(p + 1, last, 0, names, values,
                                          count)
               : ngx_http_llm_json_value(p, last, 0);

    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_json_ws(p, last);

    if (p != last) {
        return NGX_ERROR;
    }

    return object ? NGX_OK : NGX_DECLINED;
}

/* p follows the opening brace; returns the byte after the closing one */

static u_char *
ngx_http_llm_json_object(u_char *p, u_char *last, ngx_uint_t depth,
    const char **names, ngx_str_t *values, ngx_uint_t *count)
{
    u_char      *key, *v;
    size_t       len;
    ngx_uint_t   i, n, end;

    for (n = 0; /* void */; n++) {

        p = ngx_http_llm_json_sep(p, last, '}', n == 0, &end);

        if (p == NULL || end) {
            if (count) {
                *count = n;
            }

            return p;
        }

        if (p == last || *p != '"') {
            return NULL;
        }

        key = p + 1;

        p = ngx_http_llm_json_str(p, last);
        if (p == NULL) {
            return NULL;
        }

        len = p - 1 - key;

        ngx_http_llm_json_ws(p, last);

        if (p == last || *p != ':') {
            return NULL;
        }

        p++;
        ngx_http_llm_json_ws(p, last);

        v = p;

        p = ngx_http_llm_json_value(p, last, depth + 1);
        if (p == NULL) {
            return NULL;
        }

        for (i = 0; names && names[i]; i++) {
            if (ngx_strlen(names[i]) == len
                && ngx_strncmp(names[i], key, len) == 0)
            {
                values[i].data = v;
                values[i].len = p - v;
                break;
            }
        }
    }
}


static u_char *
ngx_http_llm_json_value(u_char *p, u_char *last, ngx_uint_t depth)
{
    ngx_uint_t  first, end;

    if (p == last || depth > NGX_HTTP_LLM_JSON_MAX_DEPTH) {
        return NULL;
    }

    switch (*p) {

    case '"':
        return ngx_http_llm_json_str(p, last);

    case '{':
        return ngx_http_llm_json_object(p + 1, last, depth, NULL, NULL,
                                        NULL);

    case '[':
        break;

    case 't':
        return (last - p >= 4 && ngx_strncmp(p, "true", 4) == 0)
               ? p + 4 : NULL;

    case 'f':
        return (last - p >= 5 && ngx_strncmp(p, "false", 5) == 0)
               ? p + 5 : NULL;

    case 'n':
        return (last - p >= 4 && ngx_strncmp(p, "null", 4) == 0)
               ? p + 4 : NULL;

    default:
        return ngx_http_llm_json_number(p, last);
    }

    /* an array */

    p++;

    for (first = 1; /* void */; first = 0) {

        p = ngx_http_llm_json_sep(p, last, ']', first, &end);

        if (p == NULL || end) {
            return p;
        }

        p = ngx_http_llm_json_value(p, last, depth + 1);
        if (p == NULL) {
            return NULL;
        }
    }
}


/*
 * Before a member or an element: white space, and the comma after the
 * previous one.  *end is set at the closing bracket, and the byte after it
 * is returned; NULL: a syntax error.
 */

static u_char *
ngx_http_llm_json_sep(u_char *p, u_char *last, u_char close,
    ngx_uint_t first, ngx_uint_t *end)
{
    ngx_http_llm_json_ws(p, last);

    if (p == last) {
        return NULL;
    }

    if (*p == close) {
        *end = 1;
        return p + 1;
    }

    *end = 0;

    if (!first) {
        if (*p != ',') {
            return NULL;
        }

        p++;
        ngx_http_llm_json_ws(p, last);
    }

    return p;
}


/* p points at the opening quote; returns the byte after the closing one */

static u_char *
ngx_http_llm_json_str(u_char *p, u_char *last)
{
    ngx_uint_t  i;

    for (p++; p < last; p++) {

        if (*p == '"') {
            return p + 1;
        }

        if (*p < 0x20) {
            return NULL;
        }

        if (*p != '\\') {
            continue;
        }

        if (++p == last) {
            return NULL;
        }

        switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n':
        case 'r': case 't':
            break;

        case 'u':
            if (last - p < 5) {
                return NULL;
            }

            for (i = 1; i <= 4; i++) {
                if (!((p[i] >= '0' && p[i] <= '9')
                      || ((p[i] | 0x20) >= 'a' && (p[i] | 0x20) <= 'f')))
                {
                    return NULL;
                }
            }

            p += 4;
            break;

        default:
            return NULL;
        }
    }

    return NULL;
}


static u_char *
ngx_http_llm_json_number(u_char *p, u_char *last)
{
    u_char  *start;

    if (p < last && *p == '-') {
        p++;
    }

    if (p == last || *p < '0' || *p > '9') {
        return NULL;
    }

    if (*p == '0') {
        p++;

    } else {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    if (p < last && *p == '.') {
        start = ++p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == start) {
            return NULL;
        }
    }

    if (p < last && (*p == 'e' || *p == 'E')) {
        p++;

        if (p < last && (*p == '+' || *p == '-')) {
            p++;
        }

        start = p;

        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }

        if (p == start) {
            return NULL;
        }
    }

    return p;
}


u_char *
ngx_http_llm_json_skip(u_char *p, u_char *last)
{
    return ngx_http_llm_json_value(p, last, 1);
}


ngx_int_t
ngx_http_llm_json_next(ngx_str_t *array, u_char **pos, ngx_str_t *elem)
{
    u_char  *p, *last;

    if (array->len < 2 || array->data[0] != '[') {
        return NGX_ERROR;
    }

    p = *pos ? *pos : array->data + 1;
    last = array->data + array->len - 1;

    ngx_http_llm_json_ws(p, last);

    if (p < last && *p == ',' && *pos) {
        p++;
        ngx_http_llm_json_ws(p, last);
    }

    if (p == last) {
        return NGX_DONE;
    }

    elem->data = p;

    p = ngx_http_llm_json_skip(p, last);
    if (p == NULL) {
        return NGX_ERROR;
    }

    elem->len = p - elem->data;
    *pos = p;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_json_only(ngx_str_t *array, ngx_str_t *elem)
{
    u_char     *pos;
    ngx_str_t   next;

    pos = NULL;

    if (ngx_http_llm_json_next(array, &pos, elem) != NGX_OK) {
        return NGX_DECLINED;
    }

    return (ngx_http_llm_json_next(array, &pos, &next) == NGX_DONE)
           ? NGX_OK : NGX_DECLINED;
}


ngx_int_t
ngx_http_llm_json_int(ngx_str_t *v)
{
    if (v->len == 0 || v->data[0] == '-') {
        return -1;
    }

    return ngx_atoi(v->data, v->len);
}


ngx_int_t
ngx_http_llm_json_string(ngx_pool_t *pool, ngx_str_t *v, ngx_str_t *s)
{
    u_char      *p, *last, *d;
    ngx_uint_t   c, i;

    if (v->len < 2 || v->data[0] != '"') {
        return NGX_DECLINED;
    }

    p = v->data + 1;
    last = v->data + v->len - 1;

    if (ngx_strlchr(p, last, '\\') == NULL) {
        s->data = p;
        s->len = last - p;
        return NGX_OK;
    }

    /* an escaped string: at most as long as its source */

    d = ngx_pnalloc(pool, last - p);
    if (d == NULL) {
        return NGX_ERROR;
    }

    s->data = d;

    while (p < last) {

        if (*p != '\\') {
            *d++ = *p++;
            continue;
        }

        p++;

        switch (*p++) {
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;

        case 'u':
            c = 0;

            for (i = 0; i < 4; i++) {
                c = c * 16 + ((*p <= '9') ? *p - '0' : (*p | 0x20) - 'a' + 10);
                p++;
            }

            /* surrogate pairs are kept as two 3-byte sequences: model
             * names and the like never need them */

            if (c < 0x80) {
                *d++ = (u_char) c;

            } else if (c < 0x800) {
                *d++ = (u_char) (0xc0 | (c >> 6));
                *d++ = (u_char) (0x80 | (c & 0x3f));

            } else {
                *d++ = (u_char) (0xe0 | (c >> 12));
                *d++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
                *d++ = (u_char) (0x80 | (c & 0x3f));
            }

            break;

        default:                /* '"', '\\', '/' */
            *d++ = p[-1];
        }
    }

    s->len = d - s->data;

    return NGX_OK;
}
