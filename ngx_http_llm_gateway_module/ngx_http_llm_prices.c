
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"


/*
 * Prices: a built-in table and, with llm_prices, a file in the format of
 * LiteLLM's model_prices_and_context_window.json, whose entries win.
 * Both become one sorted array in the main conf, searched by name:
 * "<provider>/<model>" first (the llm_provider's name as a hint, as
 * LiteLLM writes "groq/llama-3.3-70b-versatile"), then "<model>", then
 * the same for the model's family: a dated id without its date
 * ("gpt-4o-2024-08-06" is priced as "gpt-4o").
 */


#define NGX_HTTP_LLM_PRICE_NAME_MAX  512

/* unknown models warned about, per worker */
#define NGX_HTTP_LLM_PRICE_WARN_MAX  64


typedef struct {
    char                       *name;
    double                      input;         /* USD per million tokens */
    double                      output;
    double                      cached;        /* < 0: as input */
} ngx_http_llm_price_row_t;


/*
 * List prices in USD per million tokens (input, output, cached input),
 * as the providers published them in October 2025, for requests of
 * ordinary size (long-context tiers are not modelled).  Prices change:
 * operators who need current ones keep LiteLLM's file and load it with
 * llm_prices.
 */

#define NGX_HTTP_LLM_PRICES_DATE  "2025-10-01"

static ngx_http_llm_price_row_t  ngx_http_llm_builtin_prices[] = {

    /* OpenAI */
    { "gpt-5", 1.25, 10.00, 0.125 },
    { "gpt-5-mini", 0.25, 2.00, 0.025 },
    { "gpt-5-nano", 0.05, 0.40, 0.005 },
    { "gpt-4.1", 2.00, 8.00, 0.50 },
    { "gpt-4.1-mini", 0.40, 1.60, 0.10 },
    { "gpt-4.1-nano", 0.10, 0.40, 0.025 },
    { "gpt-4o", 2.50, 10.00, 1.25 },
    { "gpt-4o-mini", 0.15, 0.60, 0.075 },
    { "gpt-4-turbo", 10.00, 30.00, -1 },
    { "gpt-4", 30.00, 60.00, -1 },
    { "gpt-3.5-turbo", 0.50, 1.50, -1 },
    { "o1", 15.00, 60.00, 7.50 },
    { "o1-mini", 1.10, 4.40, 0.55 },
    { "o3", 2.00, 8.00, 0.50 },
    { "o3-mini", 1.10, 4.40, 0.55 },
    { "o4-mini", 1.10, 4.40, 0.275 },
    { "text-embedding-3-small", 0.02, 0, -1 },
    { "text-embedding-3-large", 0.13, 0, -1 },
    { "text-embedding-ada-002", 0.10, 0, -1 },

    /* Anthropic: cache reads at a tenth of input */
    { "claude-opus-4-1", 15.00, 75.00, 1.50 },
    { "claude-opus-4", 15.00, 75.00, 1.50 },
    { "claude-sonnet-4-5", 3.00, 15.00, 0.30 },
    { "claude-sonnet-4", 3.00, 15.00, 0.30 },
    { "claude-3-7-sonnet", 3.00, 15.00, 0.30 },
    { "claude-3-5-sonnet", 3.00, 15.00, 0.30 },
    { "claude-haiku-4-5", 1.00, 5.00, 0.10 },
    { "claude-3-5-haiku", 0.80, 4.00, 0.08 },
    { "claude-3-opus", 15.00, 75.00, 1.50 },
    { "claude-3-haiku", 0.25, 1.25, 0.03 },

    /* Google Gemini (prompts up to 200k tokens) */
    { "gemini-2.5-pro", 1.25, 10.00, 0.31 },
    { "gemini-2.5-flash", 0.30, 2.50, 0.075 },
    { "gemini-2.5-flash-lite", 0.10, 0.40, 0.025 },
    { "gemini-2.0-flash", 0.10, 0.40, 0.025 },
    { "gemini-2.0-flash-lite", 0.075, 0.30, -1 },
    { "gemini-1.5-pro", 1.25, 5.00, 0.3125 },
    { "gemini-1.5-flash", 0.075, 0.30, 0.01875 },
    { "gemini-embedding-001", 0.15, 0, -1 },
    { "text-embedding-004", 0, 0, -1 },

    /* Mistral */
    { "mistral-large-latest", 2.00, 6.00, -1 },
    { "mistral-medium-latest", 0.40, 2.00, -1 },
    { "mistral-small-latest", 0.10, 0.30, -1 },
    { "codestral-latest", 0.30, 0.90, -1 },
    { "open-mistral-nemo", 0.15, 0.15, -1 },
    { "ministral-8b-latest", 0.10, 0.10, -1 },
    { "mistral-embed", 0.10, 0, -1 },

    /* Groq */
    { "llama-3.3-70b-versatile", 0.59, 0.79, -1 },
    { "llama-3.1-8b-instant", 0.05, 0.08, -1 },
    { "openai/gpt-oss-120b", 0.15, 0.75, -1 },
    { "openai/gpt-oss-20b", 0.10, 0.50, -1 },
    { "meta-llama/llama-4-scout-17b-16e-instruct", 0.11, 0.34, -1 },
    { "meta-llama/llama-4-maverick-17b-128e-instruct", 0.20, 0.60, -1 },

    /* DeepSeek */
    { "deepseek-chat", 0.28, 0.42, 0.028 },
    { "deepseek-reasoner", 0.28, 0.42, 0.028 },

    { NULL, 0, 0, 0 }
};


static ngx_int_t ngx_http_llm_prices_load(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf, ngx_str_t *file);
static ngx_int_t ngx_http_llm_prices_entry(ngx_conf_t *cf, ngx_array_t *a,
    ngx_str_t *file, ngx_str_t *text, const char *key, json_t *v);
static ngx_uint_t ngx_http_llm_prices_line(ngx_str_t *text, const char *key);
static ngx_int_t ngx_http_llm_price_add(ngx_array_t *a, u_char *prefix,
    size_t plen, u_char *name, size_t len, int64_t input, int64_t output,
    int64_t cached, ngx_pool_t *pool);
static int ngx_libc_cdecl ngx_http_llm_price_cmp(const void *one,
    const void *two);
static ngx_http_llm_price_t *ngx_http_llm_price_get(
    ngx_http_llm_price_t *p, ngx_uint_t n, u_char *name, size_t len);
static ngx_http_llm_price_t *ngx_http_llm_price_try(ngx_array_t *prices,
    ngx_str_t *provider, u_char *name, size_t len);
static size_t ngx_http_llm_price_family(u_char *name, size_t len);
static void ngx_http_llm_price_warn(ngx_log_t *log, ngx_str_t *provider,
    ngx_str_t *model);


/* llm_prices file; entries of the file win over the built-in ones */

char *
ngx_http_llm_prices(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ngx_str_t  *value, file;

    if (lmcf->prices_file.len) {
        return "is duplicate";
    }

    value = cf->args->elts;
    file = value[1];

    if (ngx_conf_full_name(cf->cycle, &file, 1) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    lmcf->prices_file = file;

    if (ngx_http_llm_prices_load(cf, lmcf, &file) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* the built-in rows under the file's, sorted; called by init_main_conf */

char *
ngx_http_llm_prices_init(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t                 i, j, n;
    ngx_http_llm_price_t      *p;
    ngx_http_llm_price_row_t  *row;

    if (lmcf->prices == NULL) {
        lmcf->prices = ngx_array_create(cf->pool, 64,
                                        sizeof(ngx_http_llm_price_t));
        if (lmcf->prices == NULL) {
            return NGX_CONF_ERROR;
        }
    }

    n = lmcf->prices->nelts;

    for (row = ngx_http_llm_builtin_prices; row->name; row++) {
        if (ngx_http_llm_price_add(lmcf->prices, NULL, 0,
                                   (u_char *) row->name,
                                   ngx_strlen(row->name),
                                   (int64_t) (row->input * 1e6 + 0.5),
                                   (int64_t) (row->output * 1e6 + 0.5),
                                   row->cached < 0
                                   ? (int64_t) (row->input * 1e6 + 0.5)
                                   : (int64_t) (row->cached * 1e6 + 0.5),
                                   cf->pool)
            != NGX_OK)
        {
            return NGX_CONF_ERROR;
        }
    }

    /* a built-in row the file also names gives way */

    p = lmcf->prices->elts;

    ngx_qsort(p, n, sizeof(ngx_http_llm_price_t), ngx_http_llm_price_cmp);

    for (i = n, j = n; i < lmcf->prices->nelts; i++) {

        if (ngx_http_llm_price_get(p, n, p[i].name.data, p[i].name.len)
            == NULL)
        {
            p[j++] = p[i];
        }
    }

    lmcf->prices->nelts = j;

    ngx_qsort(p, lmcf->prices->nelts, sizeof(ngx_http_llm_price_t),
              ngx_http_llm_price_cmp);

    /* equal names within the file (a key and another's provider alias,
     * which have the same model): one is kept */

    p = lmcf->prices->elts;

    for (i = 1, j = 1; i < lmcf->prices->nelts; i++) {
        if (p[i].name.len == p[j - 1].name.len
            && ngx_strncmp(p[i].name.data, p[j - 1].name.data,
                           p[i].name.len) == 0)
        {
            continue;
        }

        p[j++] = p[i];
    }

    if (lmcf->prices->nelts) {
        lmcf->prices->nelts = j;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_llm_prices_load(ngx_conf_t *cf, ngx_http_llm_main_conf_t *lmcf,
    ngx_str_t *file)
{
    ssize_t          n;
    json_t          *root, *v;
    ngx_fd_t         fd;
    ngx_str_t        text;
    ngx_file_t       f;
    const char      *key;
    ngx_file_info_t  fi;
    json_error_t     jerr;

    fd = ngx_open_file(file->data, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_open_file_n " \"%V\" failed", file);
        return NGX_ERROR;
    }

    ngx_memzero(&f, sizeof(ngx_file_t));
    f.fd = fd;
    f.name = *file;
    f.log = cf->log;

    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           ngx_fd_info_n " \"%V\" failed", file);
        goto failed;
    }

    text.len = ngx_file_size(&fi);
    text.data = ngx_pnalloc(cf->temp_pool, text.len + 1);
    if (text.data == NULL) {
        goto failed;
    }

    n = ngx_read_file(&f, text.data, text.len, 0);

    if (n == NGX_ERROR || (size_t) n != text.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_prices: cannot read \"%V\"", file);
        goto failed;
    }

    text.data[text.len] = '\0';

    ngx_close_file(fd);
    fd = NGX_INVALID_FILE;

    root = json_loadb((char *) text.data, text.len, 0, &jerr);

    if (root == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_prices: %V:%d: %s", file, jerr.line,
                           jerr.text);
        return NGX_ERROR;
    }

    if (!json_is_object(root)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_prices: %V:1: not a JSON object of models",
                           file);
        json_decref(root);
        return NGX_ERROR;
    }

    lmcf->prices = ngx_array_create(cf->pool, json_object_size(root) + 64,
                                    sizeof(ngx_http_llm_price_t));
    if (lmcf->prices == NULL) {
        json_decref(root);
        return NGX_ERROR;
    }

    json_object_foreach(root, key, v) {
        if (ngx_http_llm_prices_entry(cf, lmcf->prices, file, &text, key, v)
            != NGX_OK)
        {
            json_decref(root);
            return NGX_ERROR;
        }
    }

    json_decref(root);

    return NGX_OK;

failed:

    if (fd != NGX_INVALID_FILE) {
        ngx_close_file(fd);
    }

    return NGX_ERROR;
}


/*
 * A model of the file: its per-token costs in USD.  A model with
 * neither input nor output cost (an image or audio model) is skipped; a
 * cost that is not a non-negative number is an error.
 */

static ngx_int_t
ngx_http_llm_prices_entry(ngx_conf_t *cf, ngx_array_t *a, ngx_str_t *file,
    ngx_str_t *text, const char *key, json_t *v)
{
    double        cost[3];
    size_t        len;
    json_t       *c, *prov;
    ngx_uint_t    i;
    const char   *bad;

    static const char  *names[] = {
        "input_cost_per_token", "output_cost_per_token",
        "cache_read_input_token_cost"
    };

    if (ngx_strcmp(key, "sample_spec") == 0) {
        return NGX_OK;
    }

    if (!json_is_object(v)) {
        bad = "is not an object";
        goto invalid;
    }

    for (i = 0; i < 3; i++) {
        c = json_object_get(v, names[i]);
        cost[i] = -1;

        if (c == NULL || json_is_null(c)) {
            continue;
        }

        if (!json_is_number(c) || json_number_value(c) < 0
            || json_number_value(c) > 1)
        {
            bad = names[i];
            goto invalid_cost;
        }

        cost[i] = json_number_value(c);
    }

    if (cost[0] < 0 && cost[1] < 0) {
        return NGX_OK;
    }

    for (i = 0; i < 2; i++) {
        if (cost[i] < 0) {
            cost[i] = 0;
        }
    }

    if (cost[2] < 0) {
        cost[2] = cost[0];
    }

    len = ngx_strlen(key);

    if (len == 0 || len > NGX_HTTP_LLM_PRICE_NAME_MAX) {
        bad = "has a name of more than 512 bytes";
        goto invalid;
    }

    if (ngx_http_llm_price_add(a, NULL, 0, (u_char *) key, len,
                               (int64_t) (cost[0] * 1e12 + 0.5),
                               (int64_t) (cost[1] * 1e12 + 0.5),
                               (int64_t) (cost[2] * 1e12 + 0.5), cf->pool)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* "claude-3-haiku-20240307" of provider "anthropic" is also found as
     * "anthropic/claude-3-haiku-20240307" */

    prov = json_object_get(v, "litellm_provider");

    if (json_is_string(prov) && json_string_length(prov)
        && json_string_length(prov) < 64
        && ngx_strlchr((u_char *) key, (u_char *) key + len, '/') == NULL)
    {
        if (ngx_http_llm_price_add(a, (u_char *) json_string_value(prov),
                                   json_string_length(prov), (u_char *) key,
                                   len, (int64_t) (cost[0] * 1e12 + 0.5),
                                   (int64_t) (cost[1] * 1e12 + 0.5),
                                   (int64_t) (cost[2] * 1e12 + 0.5),
                                   cf->pool)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    return NGX_OK;

invalid_cost:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "llm_prices: %V:%ui: model \"%s\": %s is not a "
                       "number from 0 to 1 (USD per token)", file,
                       ngx_http_llm_prices_line(text, key), key, bad);
    return NGX_ERROR;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "llm_prices: %V:%ui: model \"%s\" %s", file,
                       ngx_http_llm_prices_line(text, key), key, bad);
    return NGX_ERROR;
}


/* the line of the file where "key": first appears (jansson keeps none) */

static ngx_uint_t
ngx_http_llm_prices_line(ngx_str_t *text, const char *key)
{
    u_char      *p, *last, *q;
    size_t       len;
    ngx_uint_t   line;

    len = ngx_strlen(key);
    last = text->data + text->len;
    line = 1;

    for (p = text->data; p < last; p++) {
        if (*p == '\n') {
            line++;
            continue;
        }

        if (*p != '"' || (size_t) (last - p) < len + 2
            || ngx_strncmp(p + 1, key, len) != 0 || p[len + 1] != '"')
        {
            continue;
        }

        for (q = p + len + 2; q < last && (*q == ' ' || *q == '\t'); q++) {
            /* void */
        }

        if (q < last && *q == ':') {
            return line;
        }
    }

    return 1;
}


static ngx_int_t
ngx_http_llm_price_add(ngx_array_t *a, u_char *prefix, size_t plen,
    u_char *name, size_t len, int64_t input, int64_t output, int64_t cached,
    ngx_pool_t *pool)
{
    u_char                *p;
    ngx_http_llm_price_t  *price;

    price = ngx_array_push(a);
    if (price == NULL) {
        return NGX_ERROR;
    }

    p = ngx_pnalloc(pool, plen + 1 + len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    price->name.data = p;

    if (plen) {
        ngx_strlow(p, prefix, plen);
        p += plen;
        *p++ = '/';
    }

    ngx_strlow(p, name, len);
    p += len;

    price->name.len = p - price->name.data;
    price->input = input;
    price->output = output;
    price->cached = cached;

    return NGX_OK;
}


static int ngx_libc_cdecl
ngx_http_llm_price_cmp(const void *one, const void *two)
{
    const ngx_http_llm_price_t *a = one;
    const ngx_http_llm_price_t *b = two;

    return (int) ngx_memn2cmp(a->name.data, b->name.data, a->name.len,
                              b->name.len);
}


/*
 * The price of a target's model, or NULL (cost 0, and one warning per
 * model per worker).
 */

ngx_http_llm_price_t *
ngx_http_llm_price_find(ngx_http_llm_main_conf_t *lmcf, ngx_str_t *provider,
    ngx_str_t *model, ngx_log_t *log)
{
    u_char                 name[NGX_HTTP_LLM_PRICE_NAME_MAX];
    size_t                 len, n;
    ngx_http_llm_price_t  *p;

    if (lmcf->prices == NULL || model->len == 0
        || model->len > NGX_HTTP_LLM_PRICE_NAME_MAX)
    {
        ngx_http_llm_price_warn(log, provider, model);
        return NULL;
    }

    ngx_strlow(name, model->data, model->len);
    len = model->len;

    for ( ;; ) {
        p = ngx_http_llm_price_try(lmcf->prices, provider, name, len);
        if (p) {
            return p;
        }

        /* Gemini's "models/gemini-2.5-flash" */

        if (len > 7 && ngx_strncmp(name, "models/", 7) == 0) {
            ngx_memmove(name, name + 7, len - 7);
            len -= 7;
            continue;
        }

        n = ngx_http_llm_price_family(name, len);

        if (n == len) {
            break;
        }

        len = n;
    }

    ngx_http_llm_price_warn(log, provider, model);

    return NULL;
}


static ngx_http_llm_price_t *
ngx_http_llm_price_try(ngx_array_t *prices, ngx_str_t *provider,
    u_char *name, size_t len)
{
    u_char                 buf[NGX_HTTP_LLM_PRICE_NAME_MAX + 64];
    ngx_http_llm_price_t  *p;

    if (provider->len && provider->len < 64) {
        ngx_strlow(buf, provider->data, provider->len);
        buf[provider->len] = '/';
        ngx_memcpy(buf + provider->len + 1, name, len);

        p = ngx_http_llm_price_get(prices->elts, prices->nelts, buf,
                                   provider->len + 1 + len);
        if (p) {
            return p;
        }
    }

    return ngx_http_llm_price_get(prices->elts, prices->nelts, name, len);
}


static ngx_http_llm_price_t *
ngx_http_llm_price_get(ngx_http_llm_price_t *p, ngx_uint_t n, u_char *name,
    size_t len)
{
    ngx_int_t   rc;
    ngx_uint_t  lo, hi, mid;

    lo = 0;
    hi = n;

    while (lo < hi) {
        mid = lo + (hi - lo) / 2;

        rc = ngx_memn2cmp(name, p[mid].name.data, len, p[mid].name.len);

        if (rc == 0) {
            return &p[mid];
        }

        if (rc < 0) {
            hi = mid;

        } else {
            lo = mid + 1;
        }
    }

    return NULL;
}


/*
 * The name without its last date-like part: "-2024-08-06" goes a part
 * at a time, "-20241022", "-0613", "-002", "@20240620", "-latest",
 * "-preview" and "-exp" at once; len if there is none.
 */

static size_t
ngx_http_llm_price_family(u_char *name, size_t len)
{
    u_char  *p, *last, *seg;
    size_t   n;

    last = name + len;

    for (p = last; p > name && p[-1] != '-' && p[-1] != '@'; p--) {
        /* void */
    }

    if (p == name || p == last) {
        return len;
    }

    seg = p;
    n = last - seg;

    if ((n == 6 && ngx_strncmp(seg, "latest", 6) == 0)
        || (n == 7 && ngx_strncmp(seg, "preview", 7) == 0)
        || (n == 3 && ngx_strncmp(seg, "exp", 3) == 0))
    {
        return seg - 1 - name;
    }

    if (n < 2 || n > 8) {
        return len;
    }

    for (p = seg; p < last; p++) {
        if (*p < '0' || *p > '9') {
            return len;
        }
    }

    return seg - 1 - name;
}


static void
ngx_http_llm_price_warn(ngx_log_t *log, ngx_str_t *provider,
    ngx_str_t *model)
{
    ngx_str_t   *s;
    ngx_uint_t   i;

    static ngx_array_t  *warned;
    static ngx_uint_t    full;

    if (full) {
        return;
    }

    if (warned == NULL) {
        warned = ngx_array_create(ngx_cycle->pool, 8, sizeof(ngx_str_t));
        if (warned == NULL) {
            return;
        }
    }

    s = warned->elts;

    for (i = 0; i < warned->nelts; i++) {
        if (s[i].len == model->len
            && ngx_strncmp(s[i].data, model->data, model->len) == 0)
        {
            return;
        }
    }

    if (warned->nelts == NGX_HTTP_LLM_PRICE_WARN_MAX) {
        full = 1;
        ngx_log_error(NGX_LOG_WARN, log, 0,
                      "llm: %d models without a price were met, more are "
                      "not logged", NGX_HTTP_LLM_PRICE_WARN_MAX);
        return;
    }

    s = ngx_array_push(warned);
    if (s == NULL) {
        return;
    }

    s->data = ngx_pstrdup(ngx_cycle->pool, model);
    if (s->data == NULL) {
        warned->nelts--;
        return;
    }

    s->len = model->len;

    ngx_log_error(NGX_LOG_WARN, log, 0,
                  "llm: no price for model \"%V\" of provider \"%V\" "
                  "(built-in table of " NGX_HTTP_LLM_PRICES_DATE
                  ", llm_prices): its cost counts as 0",
                  ngx_http_llm_escape(ngx_cycle->pool, model, 1), provider);
}


/* nano-USD, rounded up, of a call's usage; cached tokens are part of the
 * prompt tokens (OpenAI's count) */

int64_t
ngx_http_llm_cost(ngx_http_llm_price_t *price, ngx_int_t prompt,
    ngx_int_t completion, ngx_int_t cached)
{
    int64_t  pico;

    if (price == NULL) {
        return 0;
    }

    prompt = ngx_max(prompt, 0);
    completion = ngx_max(completion, 0);
    cached = ngx_min(ngx_max(cached, 0), prompt);

    pico = (int64_t) (prompt - cached) * price->input
           + (int64_t) cached * price->cached
           + (int64_t) completion * price->output;

    return (pico + 999) / 1000;
}
