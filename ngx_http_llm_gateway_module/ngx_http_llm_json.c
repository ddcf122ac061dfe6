
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_json.h"


typedef struct {
    const char   **names;
    ngx_str_t     *values;
    ngx_uint_t     count;
    ngx_int_t      dup;

    /*
     * by the low 6 bits of the first byte of a key, 1 + the index of the
     * first name that the key can be (names are tried in order from
     * there), 0 if it can be none
     */
    u_char         start[64];
} ngx_http_llm_json_members_t;


static ngx_int_t ngx_http_llm_json_scan(u_char *p, u_char *last,
    ngx_http_llm_json_members_t *m);
static u_char *ngx_http_llm_json_value(u_char *p, u_char *last,
    ngx_uint_t depth);
static u_char *ngx_http_llm_json_object(u_char *p, u_char *last,
    ngx_uint_t depth, ngx_http_llm_json_members_t *m);
static u_char *ngx_http_llm_json_array(u_char *p, u_char *last,
    ngx_uint_t depth);
static void ngx_http_llm_json_member(ngx_http_llm_json_members_t *m,
    u_char *key, u_char *end, ngx_uint_t plain, u_char *v, u_char *p);
static ngx_uint_t ngx_http_llm_json_key_is(u_char *key, u_char *end,
    const char *name);
static ngx_inline u_char *ngx_http_llm_json_str(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_str_rest(u_char *p, u_char *last);
static ngx_inline u_char *ngx_http_llm_json_plain(u_char *p, u_char *last);
static u_char *ngx_http_llm_json_char(u_char *p, u_char *last);
static ngx_int_t ngx_http_llm_json_hex(u_char *p);
static u_char *ngx_http_llm_json_unescape(u_char **src, u_char *dst);
static u_char *ngx_http_llm_json_number(u_char *p, u_char *last);
static ngx_uint_t ngx_http_llm_json_huge(u_char *p, u_char *last);
static ngx_inline size_t ngx_http_llm_utf8_seq(u_char *p, u_char *last,
    size_t *bad);
static u_char *ngx_http_llm_utf8_find(u_char *p, u_char *last, size_t *bad);
static size_t ngx_http_llm_utf8_fix(u_char *p, u_char *last, u_char *dst);


/*
 * The high bit set in each of the 8 bytes in w that is a control
 * character, a quote, a backslash or not ASCII: the high bit of each byte,
 * of each byte minus 0x20, and of each byte equal to '"' or '\\' minus 1.
 * A borrow may set it in a byte more significant than one that has it,
 * never in a less significant one: in memory order on a little-endian
 * machine, the lowest bit set is the first byte that needs a look.
 */

#define ngx_http_llm_json_special(w)                                         \
    (((w) | ((w) - 0x2020202020202020ULL)                                    \
      | (((w) ^ 0x2222222222222222ULL) - 0x0101010101010101ULL)              \
      | (((w) ^ 0x5c5c5c5c5c5c5c5cULL) - 0x0101010101010101ULL))             \
     & 0x8080808080808080ULL)


/* compact JSON has no white space: one test passes over any other byte */

#define ngx_http_llm_json_ws(p, last)                                        \
    while (p != last && *p <= ' '                                            \
           && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))         \
    {                                                                        \
        p++;                                                                 \
    }


ngx_int_t
ngx_http_llm_json_members(u_char *p, u_char *last, const char **names,
    ngx_str_t *values)
{
    ngx_http_llm_json_members_t  m;

    m.names = names;
    m.values = values;

    return ngx_http_llm_json_scan(p, last, &m);
}


ngx_int_t
ngx_http_llm_json_members_n(u_char *p, u_char *last, const char **names,
    ngx_str_t *values, ngx_uint_t *count)
{
    ngx_int_t                    rc;
    ngx_http_llm_json_members_t  m;

    m.names = names;
    m.values = values;

    rc = ngx_http_llm_json_scan(p, last, &m);

    if (count) {
        *count = m.count;
    }

    return rc;
}


ngx_int_t
ngx_http_llm_json_members_dup(u_char *p, u_char *last, const char **names,
    ngx_str_t *values, ngx_int_t *dup)
{
    ngx_int_t                    rc;
    ngx_http_llm_json_members_t  m;

    m.names = names;
    m.values = values;

    rc = ngx_http_llm_json_scan(p, last, &m);

    *dup = m.dup;

    return rc;
}


static ngx_int_t
ngx_http_llm_json_scan(u_char *p, u_char *last, ngx_http_llm_json_members_t *m)
{
    u_char      *s;
    ngx_uint_t   i, object;

    m->count = 0;
    m->dup = -1;

    ngx_memzero(m->start, sizeof(m->start));

    if (m->names) {

        /* a key that starts with an escape can be any name */

        m->start['\\' & 0x3f] = 1;

        for (i = 0; m->names[i]; i++) {
            ngx_str_null(&m->values[i]);

            s = &m->start[m->names[i][0] & 0x3f];

            if (*s == 0) {
                /* a name past the 255th is tried from the 255th on */
                *s = (u_char) ngx_min(i, 254) + 1;
            }
        }
    }

    ngx_http_llm_json_ws(p, last);

    object = (p < last && *p == '{');

    p = object ? ngx_http_llm_json_object(p + 1, last, 0, m)
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


/*
 * p follows the opening brace; returns the byte after the closing one.
 * m, NULL in nested objects, gets the named members, the number of
 * members, and the first name seen twice.
 *
 * Compact JSON has no white space between tokens: each step looks for
 * the byte it expects first, and skips white space only if that fails.
 */

static u_char *
ngx_http_llm_json_object(u_char *p, u_char *last, ngx_uint_t depth,
    ngx_http_llm_json_members_t *m)
{
    u_char      *key, *end, *v;
    ngx_uint_t   n, plain;

    ngx_http_llm_json_ws(p, last);

    n = 0;

    if (p != last && *p == '}') {
        goto done;
    }

    /* the members would be too deep */

    if (depth + 1 >= NGX_HTTP_LLM_JSON_MAX_DEPTH) {
        return NULL;
    }

    for ( ;; ) {

        if (p == last || *p != '"') {
            return NULL;
        }

        /* the key: plain ASCII as a rule, and then no escapes to read */

        key = p + 1;
        end = ngx_http_llm_json_plain(key, last);
        plain = (end != last && *end == '"');

        if (!plain) {
            end = ngx_http_llm_json_str_rest(end, last);
            if (end == NULL) {
                return NULL;
            }

            end--;
        }

        p = end + 1;

        if (p == last || *p != ':') {
            ngx_http_llm_json_ws(p, last);

            if (p == last || *p != ':') {
                return NULL;
            }
        }

        p++;
        ngx_http_llm_json_ws(p, last);

        v = p;

        /* strings and nulls, the most common values, skip the dispatch */

        if (p != last && *p == '"') {
            p = ngx_http_llm_json_str(p, last);

        } else if (last - p >= 4 && ngx_memcmp(p, "null", 4) == 0) {
            p += 4;

        } else {
            p = ngx_http_llm_json_value(p, last, depth + 1);
        }

        if (p == NULL) {
            return NULL;
        }

        n++;

        if (m && m->start[*key & 0x3f]) {
            ngx_http_llm_json_member(m, key, end, plain, v, p);
        }

        if (p == last || *p != ',') {
            ngx_http_llm_json_ws(p, last);

            if (p != last && *p == '}') {
                break;
            }

            if (p == last || *p != ',') {
                if (m) {
                    /* not valid: the count is of the members read */
                    m->count = n;
                }

                return NULL;
            }
        }

        p++;
        ngx_http_llm_json_ws(p, last);
    }

done:

    if (m) {
        m->count = n;
    }

    return p + 1;
}


/*
 * depth counts as jansson does, so that the same documents are too deep
 * for both: the top value is at depth 0, the values in it at depth 1, ...
 * A container checks that its values are not too deep.
 */

static u_char *
ngx_http_llm_json_value(u_char *p, u_char *last, ngx_uint_t depth)
{
    if (p == last) {
        return NULL;
    }

    switch (*p) {

    case '"':
        return ngx_http_llm_json_str(p, last);

    case '{':
        return ngx_http_llm_json_object(p + 1, last, depth, NULL);

    case '[':
        return ngx_http_llm_json_array(p + 1, last, depth);

    case 't':
        return (last - p >= 4 && ngx_memcmp(p, "true", 4) == 0)
               ? p + 4 : NULL;

    case 'f':
        return (last - p >= 5 && ngx_memcmp(p, "false", 5) == 0)
               ? p + 5 : NULL;

    case 'n':
        return (last - p >= 4 && ngx_memcmp(p, "null", 4) == 0)
               ? p + 4 : NULL;

    default:
        return ngx_http_llm_json_number(p, last);
    }
}


/* p follows the opening bracket; returns the byte after the closing one */

static u_char *
ngx_http_llm_json_array(u_char *p, u_char *last, ngx_uint_t depth)
{
    ngx_http_llm_json_ws(p, last);

    if (p != last && *p == ']') {
        return p + 1;
    }

    /* the elements would be too deep */

    if (depth + 1 >= NGX_HTTP_LLM_JSON_MAX_DEPTH) {
        return NULL;
    }

    for ( ;; ) {

        p = ngx_http_llm_json_value(p, last, depth + 1);
        if (p == NULL) {
            return NULL;
        }

        if (p == last || *p != ',') {
            ngx_http_llm_json_ws(p, last);

            if (p != last && *p == ']') {
                return p + 1;
            }

            if (p == last || *p != ',') {
                return NULL;
            }
        }

        p++;
        ngx_http_llm_json_ws(p, last);
    }
}


/* the value v..p of the key key..end goes to the name it is, if any */

static void
ngx_http_llm_json_member(ngx_http_llm_json_members_t *m, u_char *key,
    u_char *end, ngx_uint_t plain, u_char *v, u_char *p)
{
    size_t       len;
    ngx_uint_t   i, is;
    const char  *name;

    len = end - key;

    for (i = m->start[*key & 0x3f] - 1; m->names[i]; i++) {
        name = m->names[i];

        /* most keys differ from a name in their first byte */

        if (*key != '\\' && *key != (u_char) name[0]) {
            continue;
        }

        /* a plain key has no escapes: it is its text */

        is = plain ? (ngx_strncmp(key, name, len) == 0 && name[len] == '\0')
                   : ngx_http_llm_json_key_is(key, end, name);

        if (is) {

            if (m->values[i].data && m->dup == -1) {
                m->dup = i;
            }

            m->values[i].data = v;
            m->values[i].len = p - v;
            return;
        }
    }
}


/* whether a key, its escapes read, is the name: "mod\u0065l" is "model" */

static ngx_uint_t
ngx_http_llm_json_key_is(u_char *key, u_char *end, const char *name)
{
    u_char  *n, *e, buf[4];

    n = (u_char *) name;

    while (key < end) {

        if (*key != '\\') {
            if (*n++ != *key++) {
                return 0;
            }

            continue;
        }

        e = ngx_http_llm_json_unescape(&key, buf);

        if (ngx_strncmp(n, buf, e - buf) != 0) {
            return 0;
        }

        n += e - buf;
    }

    return *n == '\0';
}


/*
 * p points at the opening quote; returns the byte after the closing one.
 * As jansson: UTF-8 only, and no \u0000 or unpaired surrogate escapes.
 * Most strings are plain ASCII: they take no call.
 */

static ngx_inline u_char *
ngx_http_llm_json_str(u_char *p, u_char *last)
{
    p = ngx_http_llm_json_plain(p + 1, last);

    if (p != last && *p == '"') {
        return p + 1;
    }

    return ngx_http_llm_json_str_rest(p, last);
}


/* the rest of a string from the first byte that is not plain */

static u_char *
ngx_http_llm_json_str_rest(u_char *p, u_char *last)
{
    for ( ;; ) {

        if (p == last) {
            return NULL;
        }

        p = ngx_http_llm_json_char(p, last);

        if (p == NULL) {
            return NULL;
        }

        p = ngx_http_llm_json_plain(p, last);

        if (p != last && *p == '"') {
            return p + 1;
        }
    }
}


/*
 * Printable ASCII other than the quote and the backslash: the first byte
 * in p..last that is not, or last.  8 bytes at a time while there are 8.
 */

static ngx_inline u_char *
ngx_http_llm_json_plain(u_char *p, u_char *last)
{
    uint64_t  w;

    while (last - p >= 8) {
        ngx_memcpy(&w, p, 8);

        w = ngx_http_llm_json_special(w);

        if (w) {
#if (NGX_HAVE_LITTLE_ENDIAN && defined __GNUC__)
            return p + __builtin_ctzll(w) / 8;
#else
            break;
#endif
        }

        p += 8;
    }

    while (p < last && (u_char) (*p - 0x20) < 0x60
           && *p != '"' && *p != '\\')
    {
        p++;
    }

    return p;
}


/*
 * p points at a byte of a string that is neither plain nor the closing
 * quote: an escape, UTF-8 or a control character.  Returns the byte after
 * the escape or the run of UTF-8 sequences, NULL if they are not valid.
 */

static u_char *
ngx_http_llm_json_char(u_char *p, u_char *last)
{
    size_t     n, bad;
    ngx_int_t  c;

    if (*p >= 0x80) {

        /* text that is not ASCII rarely has ASCII in every 8 bytes */

        do {
            n = ngx_http_llm_utf8_seq(p, last, &bad);
            if (n == 0) {
                return NULL;
            }

            p += n;

        } while (p < last && *p >= 0x80);

        return p;
    }

    if (*p != '\\') {
        return NULL;
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

        c = ngx_http_llm_json_hex(p + 1);

        if (c <= 0 || (c >= 0xdc00 && c <= 0xdfff)) {
            return NULL;
        }

        p += 4;

        if (c >= 0xd800 && c <= 0xdbff) {

            /* a high surrogate, a low one must follow */

            if (last - p < 7 || p[1] != '\\' || p[2] != 'u') {
                return NULL;
            }

            c = ngx_http_llm_json_hex(p + 3);

            if (c < 0xdc00 || c > 0xdfff) {
                return NULL;
            }

            p += 6;
        }

        break;

    default:
        return NULL;
    }

    return p + 1;
}


/* four hex digits, -1 if they are not */

static ngx_int_t
ngx_http_llm_json_hex(u_char *p)
{
    u_char      c;
    ngx_int_t   v;
    ngx_uint_t  i;

    v = 0;

    for (i = 0; i < 4; i++) {
        c = p[i];

        if (c >= '0' && c <= '9') {
            v = v * 16 + c - '0';
            continue;
        }

        c |= 0x20;

        if (c >= 'a' && c <= 'f') {
            v = v * 16 + c - 'a' + 10;
            continue;
        }

        return -1;
    }

    return v;
}


/*
 * *src points at the backslash of an escape that the scanner accepted: its
 * text goes to dst in UTF-8 (a surrogate pair as one 4-byte sequence), *src
 * moves past it; returns the end of what was written
 */

static u_char *
ngx_http_llm_json_unescape(u_char **src, u_char *dst)
{
    u_char      *p;
    ngx_uint_t   c;

    p = *src + 1;

    switch (*p++) {
    case 'b': c = '\b'; break;
    case 'f': c = '\f'; break;
    case 'n': c = '\n'; break;
    case 'r': c = '\r'; break;
    case 't': c = '\t'; break;

    case 'u':
        c = ngx_http_llm_json_hex(p);
        p += 4;

        if (c >= 0xd800 && c <= 0xdbff) {
            c = 0x10000 + ((c - 0xd800) << 10)
                + (ngx_http_llm_json_hex(p + 2) - 0xdc00);
            p += 6;
        }

        break;

    default:                    /* '"', '\\', '/' */
        c = p[-1];
    }

    *src = p;

    if (c < 0x80) {
        *dst++ = (u_char) c;

    } else if (c < 0x800) {
        *dst++ = (u_char) (0xc0 | (c >> 6));
        *dst++ = (u_char) (0x80 | (c & 0x3f));

    } else if (c < 0x10000) {
        *dst++ = (u_char) (0xe0 | (c >> 12));
        *dst++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *dst++ = (u_char) (0x80 | (c & 0x3f));

    } else {
        *dst++ = (u_char) (0xf0 | (c >> 18));
        *dst++ = (u_char) (0x80 | ((c >> 12) & 0x3f));
        *dst++ = (u_char) (0x80 | ((c >> 6) & 0x3f));
        *dst++ = (u_char) (0x80 | (c & 0x3f));
    }

    return dst;
}


/*
 * As jansson: an integer (no fraction, no exponent) must fit in int64_t,
 * any other number must not overflow a double.  Only numbers that can
 * overflow take the slow check.
 */

static u_char *
ngx_http_llm_json_number(u_char *p, u_char *last)
{
    u_char      *digits, *end, *start;
    ngx_uint_t   neg;

    neg = (p < last && *p == '-');
    p += neg;

    if (p == last || *p < '0' || *p > '9') {
        return NULL;
    }

    digits = p;

    if (*p == '0') {
        p++;

    } else {
        while (p < last && *p >= '0' && *p <= '9') {
            p++;
        }
    }

    end = p;

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

        return ngx_http_llm_json_huge(digits, p) ? NULL : p;
    }

    if (end != p) {

        /* a fraction: less than 10^308 with 308 integer digits or less */

        return (end - digits > 308 && ngx_http_llm_json_huge(digits, p))
               ? NULL : p;
    }

    /*
     * An integer: 19 digits or more need a look, and with no leading
     * zeros, their text compares as their values do.
     */

    if (p - digits >= 19
        && (p - digits > 19
            || ngx_strncmp(digits, neg ? "9223372036854775808"
                                       : "9223372036854775807", 19) > 0))
    {
        return NULL;
    }

    return p;
}


/*
 * Whether a number (without its sign) overflows a double, as strtod()
 * reports it with ERANGE: its value is at least 2^1024 - 2^970, the least
 * one that rounds to infinity.  The decimal exponent of the first
 * significant digit decides, and when it is 308, the digits themselves.
 */

static ngx_uint_t
ngx_http_llm_json_huge(u_char *p, u_char *last)
{
    u_char      *d, *ie, *f, *fe, *q;
    int64_t      x, lim, mag;
    ngx_uint_t   i, neg;

    static u_char  bound[] =
        "179769313486231580793728971405303415079934132710037826936173"
        "778980444968292764750946649017977587207096330286416692887910"
        "946555547851940402630657488671505820681908902000708383676273"
        "854845817711531764475730270069855571366959622842914819860834"
        "936475292719074168444365510704342711559699508093042880177904"
        "174497792";

    /* the integer digits p..ie, the fraction digits f..fe */

    ie = p;

    while (ie < last && *ie >= '0' && *ie <= '9') {
        ie++;
    }

    f = (ie < last && *ie == '.') ? ie + 1 : ie;
    fe = f;

    while (fe < last && *fe >= '0' && *fe <= '9') {
        fe++;
    }

    /*
     * The exponent stops growing at the length of the number plus 400:
     * from there on it decides alone, whatever the digits.
     */

    lim = (last - p) + 400;
    x = 0;
    neg = 0;

    if (fe < last) {
        q = fe + 1;

        if (*q == '+' || *q == '-') {
            neg = (*q == '-');
            q++;
        }

        while (q < last) {
            if (x < lim) {
                x = x * 10 + (*q - '0');
            }

            q++;
        }
    }

    if (neg) {
        x = -x;
    }

    /* mag: the power of ten of the first significant digit */

    if (*p == '0') {

        /* no leading zeros: 0.000ddd */

        d = f;

        while (d < fe && *d == '0') {
            d++;
        }

        if (d == fe) {
            return 0;
        }

        mag = x - (d - f) - 1;
        p = d;
        ie = fe;
        f = fe;

    } else {
        mag = x + (ie - p) - 1;
    }

    if (mag != 308) {
        return mag > 308;
    }

    /* the significant digits against the bound's, zeros after the last */

    for (i = 0; i < sizeof(bound) - 1; i++) {

        if (p == ie) {
            p = f;
            ie = fe;
            f = fe;
        }

        d = (p < ie) ? p++ : (u_char *) "0";

        if (*d != bound[i]) {
            return *d > bound[i];
        }
    }

    return 1;
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
    u_char  *p, *last, *d;

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

        d = ngx_http_llm_json_unescape(&p, d);
    }

    s->len = d - s->data;

    return NGX_OK;
}


ngx_int_t
ngx_http_llm_utf8_repair(ngx_pool_t *pool, ngx_str_t *s)
{
    u_char  *p, *last, *bad, *d;
    size_t   n, len;

    p = s->data;
    last = p + s->len;

    bad = ngx_http_llm_utf8_find(p, last, &n);

    if (bad == last) {
        return NGX_OK;
    }

    len = (bad - p) + ngx_http_llm_utf8_fix(bad, last, NULL);

    d = ngx_pnalloc(pool, len);
    if (d == NULL) {
        return NGX_ERROR;
    }

    (void) ngx_http_llm_utf8_fix(bad, last, ngx_cpymem(d, p, bad - p));

    s->data = d;
    s->len = len;

    return NGX_OK;
}


/*
 * p points at a byte >= 0x80: the length of the well-formed UTF-8 sequence
 * it starts (Unicode, table 3-7: no overlong forms, no surrogates, nothing
 * above U+10FFFF), or 0 if there is none, and then *bad is the length of
 * its maximal subpart: the longest start of a well-formed sequence, or 1
 */

static ngx_inline size_t
ngx_http_llm_utf8_seq(u_char *p, u_char *last, size_t *bad)
{
    u_char  c, lo, hi;
    size_t  i, n;

    c = p[0];
    lo = 0x80;
    hi = 0xbf;

    if (c < 0xc2) {
        *bad = 1;
        return 0;
    }

    if (c < 0xe0) {
        n = 2;

    } else if (c < 0xf0) {
        n = 3;
        lo = (c == 0xe0) ? 0xa0 : 0x80;
        hi = (c == 0xed) ? 0x9f : 0xbf;

    } else if (c < 0xf5) {
        n = 4;
        lo = (c == 0xf0) ? 0x90 : 0x80;
        hi = (c == 0xf4) ? 0x8f : 0xbf;

    } else {
        *bad = 1;
        return 0;
    }

    if (last - p < 2 || p[1] < lo || p[1] > hi) {
        *bad = 1;
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p + i == last || (p[i] & 0xc0) != 0x80) {
            *bad = i;
            return 0;
        }
    }

    return n;
}


/*
 * The first ill-formed subpart in p..last, and its length in *bad; last if
 * there is none.  ASCII goes 16 bytes at a time, then 8.
 */

static u_char *
ngx_http_llm_utf8_find(u_char *p, u_char *last, size_t *bad)
{
    size_t    n;
    uint64_t  w, w2;

    for ( ;; ) {

        while (last - p >= 16) {
            ngx_memcpy(&w, p, 8);
            ngx_memcpy(&w2, p + 8, 8);

            if ((w | w2) & 0x8080808080808080ULL) {
                break;
            }

            p += 16;
        }

        while (last - p >= 8) {
            ngx_memcpy(&w, p, 8);

            if (w & 0x8080808080808080ULL) {
                break;
            }

            p += 8;
        }

        if (p == last) {
            return last;
        }

        if (*p < 0x80) {
            p++;
            continue;
        }

        n = ngx_http_llm_utf8_seq(p, last, bad);

        if (n == 0) {
            return p;
        }

        p += n;
    }
}


/*
 * p..last with each maximal ill-formed subpart replaced by U+FFFD, copied
 * to dst unless it is NULL; returns the length of the result
 */

static size_t
ngx_http_llm_utf8_fix(u_char *p, u_char *last, u_char *dst)
{
    u_char  *bad;
    size_t   n, len;

    len = 0;

    for ( ;; ) {
        bad = ngx_http_llm_utf8_find(p, last, &n);

        len += bad - p;

        if (dst) {
            dst = ngx_cpymem(dst, p, bad - p);
        }

        if (bad == last) {
            return len;
        }

        len += 3;

        if (dst) {
            dst = ngx_cpymem(dst, "\xef\xbf\xbd", 3);
        }

        p = bad + n;
    }
}
