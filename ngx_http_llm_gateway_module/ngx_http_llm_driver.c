
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"
#include "ngx_http_llm_formats.h"


/*
 * The driver hooks as the core calls them: a driver's own, or the
 * default when its table leaves the hook out.  And the JSON writer.
 */


static ngx_msec_t ngx_http_llm_pause_default(ngx_http_llm_call_t *call,
    ngx_uint_t status, ngx_list_t *headers);


/* the media type of each framing, for Accept */
static ngx_str_t  ngx_http_llm_framing_types[] = {
    ngx_string("text/event-stream")          /* NGX_HTTP_LLM_FRAMING_SSE */
};


/* the formats listed in config */
static ngx_http_llm_driver_t  *ngx_http_llm_drivers[] = {
    NGX_HTTP_LLM_FORMATS
};


ngx_http_llm_driver_t *
ngx_http_llm_driver_find(ngx_str_t *name)
{
    ngx_http_llm_driver_t  **d;

    for (d = ngx_http_llm_drivers; *d; d++) {
        if ((*d)->name.len == name->len
            && ngx_strncmp((*d)->name.data, name->data, name->len) == 0)
        {
            return *d;
        }
    }

    return NULL;
}


ngx_str_t *
ngx_http_llm_framing_type(ngx_http_llm_framing_e framing)
{
    return &ngx_http_llm_framing_types[framing];
}


ngx_int_t
ngx_http_llm_driver_auth(ngx_http_llm_call_t *call, ngx_list_t *headers,
    ngx_str_t *body)
{
    ngx_http_llm_driver_t    *drv;
    ngx_http_llm_provider_t  *p;

    p = call->provider;
    drv = p->driver;

    if (drv->auth) {
        return drv->auth(call, headers, body);
    }

    if (p->key.len == 0) {
        return NGX_OK;
    }

    return ngx_http_llm_header_push(call->pool, headers, &drv->auth_header,
                                    &drv->auth_prefix, &p->key, NULL);
}


void
ngx_http_llm_driver_error(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_str_t *body, ngx_http_llm_error_t *err)
{
    ngx_http_llm_driver_t  *drv;

    drv = call->provider->driver;

    if (drv->map_error) {
        drv->map_error(call, status, body, err);
        return;
    }

    ngx_http_llm_error_defaults(status, err);
}


ngx_int_t
ngx_http_llm_driver_param(ngx_conf_t *cf, ngx_http_llm_provider_t *p,
    ngx_str_t *name, ngx_str_t *value)
{
    if (p->driver->param == NULL) {
        return NGX_DECLINED;
    }

    return p->driver->param(cf, p, name, value);
}


ngx_msec_t
ngx_http_llm_driver_pause(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_list_t *headers)
{
    ngx_http_llm_driver_t  *drv;

    drv = call->provider->driver;

    if (drv->pause) {
        return drv->pause(call, status, headers);
    }

    return ngx_http_llm_pause_default(call, status, headers);
}


static ngx_msec_t
ngx_http_llm_pause_default(ngx_http_llm_call_t *call, ngx_uint_t status,
    ngx_list_t *headers)
{
    ngx_msec_t  ms;

    if (status != NGX_HTTP_TOO_MANY_REQUESTS
        && status != NGX_HTTP_SERVICE_UNAVAILABLE)
    {
        return 0;
    }

    if (ngx_http_llm_pause_retry_after(headers, &ms) != NGX_OK) {
        return 0;
    }

    return ms;
}


ngx_int_t
ngx_http_llm_pause_retry_after(ngx_list_t *headers, ngx_msec_t *ms)
{
    time_t            date;
    ngx_int_t         n;
    ngx_table_elt_t  *h;

    h = ngx_http_llm_header_find(headers, "retry-after-ms");

    if (h) {
        n = ngx_atoi(h->value.data, h->value.len);
        if (n > 0) {
            *ms = n;
            return NGX_OK;
        }
    }

    h = ngx_http_llm_header_find(headers, "retry-after");

    if (h == NULL) {
        return NGX_DECLINED;
    }

    n = ngx_atoi(h->value.data, h->value.len);
    if (n >= 0) {
        *ms = (ngx_msec_t) n * 1000;
        return NGX_OK;
    }

    date = ngx_parse_http_time(h->value.data, h->value.len);
    if (date != NGX_ERROR && date > ngx_time()) {
        *ms = (ngx_msec_t) (date - ngx_time()) * 1000;
        return NGX_OK;
    }

    return NGX_DECLINED;
}


ngx_table_elt_t *
ngx_http_llm_header_find(ngx_list_t *headers, char *name)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(name);
    part = &headers->part;
    h = part->elts;

    for (i = 0; /* void */; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                return NULL;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) name, len) == 0)
        {
            return &h[i];
        }
    }
}


ngx_int_t
ngx_http_llm_header_push(ngx_pool_t *pool, ngx_list_t *headers,
    ngx_str_t *key, ngx_str_t *prefix, ngx_str_t *value,
    ngx_table_elt_t **out)
{
    u_char           *p;
    ngx_table_elt_t  *h;

    h = ngx_list_push(headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->key = *key;

    h->lowcase_key = ngx_pnalloc(pool, key->len);
    if (h->lowcase_key == NULL) {
        return NGX_ERROR;
    }

    h->hash = ngx_hash_strlow(h->lowcase_key, key->data, key->len);

    if (prefix->len == 0) {
        h->value = *value;

    } else {
        h->value.len = prefix->len + value->len;

        p = ngx_pnalloc(pool, h->value.len);
        if (p == NULL) {
            return NGX_ERROR;
        }

        h->value.data = p;
        p = ngx_cpymem(p, prefix->data, prefix->len);
        ngx_memcpy(p, value->data, value->len);
    }

    if (out) {
        *out = h;
    }

    return NGX_OK;
}


void
ngx_http_llm_out_escaped(ngx_http_llm_out_t *o, ngx_str_t *s)
{
    if (o->pos) {
        o->pos = (u_char *) ngx_escape_json(o->pos, s->data, s->len);

    } else {
        o->len += s->len + ngx_escape_json(NULL, s->data, s->len);
    }
}


void
ngx_http_llm_out_string(ngx_http_llm_out_t *o, ngx_str_t *s)
{
    ngx_http_llm_out_lit(o, "\"");
    ngx_http_llm_out_escaped(o, s);
    ngx_http_llm_out_lit(o, "\"");
}


void
ngx_http_llm_out_int(ngx_http_llm_out_t *o, int64_t n)
{
    u_char  *p, buf[NGX_INT64_LEN];

    p = ngx_sprintf(o->pos ? o->pos : buf, "%L", n);

    if (o->pos) {
        o->pos = p;

    } else {
        o->len += p - buf;
    }
}


u_char *
ngx_http_llm_out_alloc(ngx_http_llm_out_t *o, ngx_pool_t *pool)
{
    o->pos = ngx_pnalloc(pool, o->len ? o->len : 1);

    return o->pos;
}
