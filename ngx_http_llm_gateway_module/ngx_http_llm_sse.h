
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_SSE_H_INCLUDED_
#define _NGX_HTTP_LLM_SSE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


typedef ngx_int_t (*ngx_http_llm_sse_handler_pt)(void *data,
    ngx_str_t *event, ngx_str_t *payload);


/*
 * An incremental text/event-stream parser: fields may be split anywhere.
 * A payload passed to the handler may point into the fed buffer (valid
 * during the call); the handler may change its bytes in place.
 */

typedef struct {
    ngx_pool_t                  *pool;
    ngx_http_llm_sse_handler_pt  handler;
    void                        *data;
    size_t                       max;          /* longest line or event */

    u_char                      *line;         /* current line */
    size_t                       line_len;
    size_t                       line_size;

    u_char                      *payload;      /* joined data: lines */
    size_t                       payload_len;
    size_t                       payload_size;
    ngx_str_t                    ext;          /* or the one data: line,
                                                  in the input buffer */

    u_char                       event[64];
    size_t                       event_len;

    unsigned                     skip_lf:1;
    unsigned                     has_data:1;
    unsigned                     stopped:1;
} ngx_http_llm_sse_t;


void ngx_http_llm_sse_init(ngx_http_llm_sse_t *sse, ngx_pool_t *pool,
    size_t max, ngx_http_llm_sse_handler_pt handler, void *data);
/* NGX_OK, NGX_DONE (the handler said the stream is over), NGX_DECLINED
 * (a line or an event longer than max), NGX_ERROR (out of memory, or the
 * handler failed; the handler never returns NGX_DECLINED) */
ngx_int_t ngx_http_llm_sse_feed(ngx_http_llm_sse_t *sse, u_char *p,
    u_char *last);


#endif /* _NGX_HTTP_LLM_SSE_H_INCLUDED_ */
