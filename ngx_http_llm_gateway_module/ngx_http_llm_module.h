
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_MODULE_H_INCLUDED_
#define _NGX_HTTP_LLM_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_llm_zone.h"
#include "ngx_http_llm_json.h"


#define NGX_HTTP_LLM_CHAT            1
#define NGX_HTTP_LLM_EMBEDDINGS      2

#define NGX_HTTP_LLM_DEFAULT_MAX_TOKENS  4096

/* Anthropic's "overloaded": no nginx name */
#define NGX_HTTP_LLM_OVERLOADED          529

/* top-level members of the client's body, found by the core */
#define NGX_HTTP_LLM_M_MODEL           0
#define NGX_HTTP_LLM_M_MESSAGES        1
#define NGX_HTTP_LLM_M_INPUT           2
#define NGX_HTTP_LLM_M_STREAM          3
#define NGX_HTTP_LLM_M_STREAM_OPTIONS  4
#define NGX_HTTP_LLM_M_N               5


typedef struct ngx_http_llm_driver_s  ngx_http_llm_driver_t;
typedef struct ngx_http_llm_call_s    ngx_http_llm_call_t;


/*
 * The client's event stream: events are queued in a buffer and sent
 * through a filter chain; what the client has not taken yet stays busy,
 * and the caller stops reading the provider until it is gone.
 */

typedef struct {
    ngx_pool_t                 *pool;
    ngx_chain_t                *pend;          /* queued, not yet sent */
    ngx_chain_t                *free;
    ngx_chain_t                *busy;          /* sent, not yet written */
} ngx_http_llm_stream_t;


typedef struct {
    ngx_str_t                   name;
    ngx_http_llm_driver_t      *driver;
    ngx_str_t                   pass;          /* "/_llm/openai/" */
    ngx_str_t                   key;           /* from key_file, may be empty */
    ngx_str_t                   api_version;   /* azure */
} ngx_http_llm_provider_t;


typedef struct {
    ngx_http_llm_provider_t    *provider;
    ngx_str_t                   model;         /* empty: client's model */
    ngx_uint_t                  weight;
    ngx_uint_t                  max_fails;
    time_t                      fail_timeout;
    unsigned                    backup:1;
} ngx_http_llm_target_t;


typedef struct {
    ngx_str_t                   name;          /* public name or "*" */
    ngx_str_t                   key;           /* name and targets: the
                                                  round-robin state's key */
    ngx_array_t                 targets;       /* ngx_http_llm_target_t */
} ngx_http_llm_route_t;


typedef struct {
    ngx_int_t                   prompt;        /* -1: unknown */
    ngx_int_t                   completion;
    ngx_int_t                   cached;
} ngx_http_llm_usage_t;


typedef struct {
    ngx_uint_t                  status;        /* HTTP status for the client */
    ngx_str_t                   type;          /* "invalid_request_error" */
    ngx_str_t                   code;          /* may be empty: null */
    ngx_str_t                   param;         /* may be empty: null */
    ngx_str_t                   message;
} ngx_http_llm_error_t;


/*
 * One attempt against one target, as a driver sees it.  The driver reads
 * the client's request (OpenAI format), fills uri, args and body, and on
 * the way back translates the provider's answer into OpenAI format.
 */

struct ngx_http_llm_call_s {
    ngx_http_request_t         *r;             /* the client's request */
    ngx_pool_t                 *pool;
    ngx_log_t                  *log;

    ngx_uint_t                  endpoint;      /* NGX_HTTP_LLM_CHAT, ... */
    json_t                     *request;       /* client body, read only;
                                                  NULL for raw drivers */
    ngx_str_t                   raw;           /* client body as sent */
    json_t                    **tree;          /* the request's parsed body,
                                                  see ngx_http_llm_call_tree */
    ngx_str_t                  *members;       /* NGX_HTTP_LLM_M_* spans */
    ngx_http_llm_provider_t    *provider;
    ngx_str_t                   model;         /* provider's model name */
    ngx_str_t                   public_model;  /* model the client asked */

    /* set by build_request */
    ngx_str_t                   uri;           /* relative to pass: "v1/..." */
    ngx_str_t                   args;          /* without "?" */
    json_t                     *body;          /* owned by the call */
    ngx_str_t                   raw_body;      /* or the body as bytes */
    ngx_str_t                   answer;        /* set by parse_raw */

    /* response side */
    void                       *state;         /* driver's stream state */
    ngx_str_t                   id;            /* "chatcmpl-..." */
    time_t                      created;
    ngx_http_llm_usage_t        usage;
    ngx_str_t                   finish_reason;
    ngx_str_t                   resp_model;    /* model the provider named */
    ngx_str_t                   chunk_prefix;  /* of text chunks, cached */

    ngx_http_llm_stream_t      *out;           /* the client's stream */

    unsigned                    stream:1;      /* client asked stream */
    unsigned                    include_usage:1;  /* client asked usage */
    unsigned                    role_sent:1;
};


/*
 * A wire format.  Every function returns NGX_OK, NGX_ERROR (out of
 * memory), or, where said, NGX_DECLINED.
 */

struct ngx_http_llm_driver_s {
    ngx_str_t                   name;          /* "openai" */

    /* provider's auth header: "Authorization" + "Bearer ", "x-api-key" */
    ngx_str_t                   auth_header;
    ngx_str_t                   auth_prefix;

    /* extra request headers, NULL-terminated pairs, or NULL */
    ngx_str_t                  *extra_headers;

    /*
     * Fill call->uri, call->args and call->body from call->request.
     * NGX_DECLINED: this format cannot serve call->endpoint; the
     * message goes to call->log at info level.
     */
    ngx_int_t                 (*build_request)(ngx_http_llm_call_t *call);

    /*
     * A whole 2xx body, parsed, into an OpenAI body (*out, a new
     * reference; NULL: the body is sent unchanged).  Records usage in
     * call->usage.  NGX_DECLINED: the body is not what the format
     * promises (invalid response).  May be NULL for a driver whose
     * parse_raw never returns NGX_AGAIN.
     */
    ngx_int_t                 (*parse_response)(ngx_http_llm_call_t *call,
                                  json_t *in, json_t **out);

    /*
     * One SSE event of a 2xx stream.  event is the "event:" field (may
     * be empty), data the joined "data:" lines.  Translated chunks go
     * out with ngx_http_llm_stream_emit(); usage into call->usage (the
     * core sends the usage chunk and "data: [DONE]" itself).
     * NGX_DECLINED: malformed event.  NGX_DONE: the provider said the
     * stream is over.
     */
    ngx_int_t                 (*parse_stream_event)(ngx_http_llm_call_t *call,
                                  ngx_str_t *event, ngx_str_t *data);

    /*
     * A non-2xx answer (body may be empty or not JSON) into an OpenAI
     * error.  err->status is preset to the provider's status.
     */
    void                      (*map_error)(ngx_http_llm_call_t *call,
                                  ngx_uint_t status, ngx_str_t *body,
                                  ngx_http_llm_error_t *err);

    /*
     * Optional: a whole 2xx body as bytes, read without a JSON tree.
     * NGX_OK: the answer is the body unchanged, or call->answer when the
     * driver wrote one; NGX_DECLINED: invalid response; NGX_AGAIN: not a
     * case the driver reads this way, parse_response gets the tree.
     */
    ngx_int_t                 (*parse_raw)(ngx_http_llm_call_t *call,
                                  ngx_str_t *body);

    /* 1: build_request reads call->raw and call->members and sets
     * call->raw_body; call->request may be NULL */
    ngx_uint_t                  raw_request;
};


extern ngx_http_llm_driver_t  ngx_http_llm_openai_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_azure_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_anthropic_driver;
extern ngx_http_llm_driver_t  ngx_http_llm_gemini_driver;


/* ngx_http_llm_request.c: the client's body as a tree, parsed on first
 * use (by drivers with raw_request that fall back to a tree); NULL if
 * jansson cannot parse it: build_request then returns NGX_ABORT */
json_t *ngx_http_llm_call_tree(ngx_http_llm_call_t *call);


/* ngx_http_llm_util.c: helpers for drivers */

/* a chunk skeleton {id, object, created, model, choices:[{index:0,
 * delta:{}, finish_reason:null}]}; *delta points into it */
json_t *ngx_http_llm_chunk_new(ngx_http_llm_call_t *call, json_t **delta);
/* ngx_http_llm_stream.c: the chunks of call->out */

/* queue "data: <json>\n\n"; steals the reference to chunk */
ngx_int_t ngx_http_llm_stream_emit(ngx_http_llm_call_t *call, json_t *chunk);
/* queue a text chunk whose delta.content is text, a JSON string literal
 * (quotes included) taken from the provider's event as it is */
ngx_int_t ngx_http_llm_stream_text(ngx_http_llm_call_t *call,
    ngx_str_t *text);
/* queue "data: <data>\n\n" as it is */
ngx_int_t ngx_http_llm_stream_emit_raw(ngx_http_llm_call_t *call,
    ngx_str_t *data);
/* the first chunk of a stream, once: {role:"assistant", content:""} */
ngx_int_t ngx_http_llm_stream_role(ngx_http_llm_call_t *call);

void ngx_http_llm_stream_init(ngx_http_llm_stream_t *s, ngx_pool_t *pool);
/* queue "data: <data>\n\n" */
ngx_int_t ngx_http_llm_stream_data(ngx_http_llm_stream_t *s, ngx_str_t *data);
/*
 * What is queued goes to output(r, ...): the next body filter when r is
 * an attempt's subrequest (from inside the gateway's filter), else
 * ngx_http_output_filter.  last: the final bytes of the response.
 * NGX_OK: the client took everything so far; NGX_AGAIN: some of it waits
 * for the client; NGX_ERROR.
 */
ngx_int_t ngx_http_llm_stream_send(ngx_http_llm_stream_t *s,
    ngx_http_request_t *r, ngx_http_output_body_filter_pt output,
    ngx_uint_t last);
/* serialize into pool memory */
ngx_int_t ngx_http_llm_json_dump(ngx_pool_t *pool, json_t *json,
    ngx_str_t *out);
/* jansson string of an ngx_str_t */
json_t *ngx_http_llm_json_str(ngx_str_t *s);
/* borrow a string member; empty if missing or not a string */
void ngx_http_llm_json_get_str(json_t *obj, const char *key, ngx_str_t *s);
/* prefix + 24 random hex digits, into *id */
ngx_int_t ngx_http_llm_make_id(ngx_http_llm_call_t *call, const char *prefix,
    ngx_str_t *id);
/* text of an OpenAI message "content": string or array of text parts,
 * joined; images ignored */
ngx_int_t ngx_http_llm_content_text(ngx_pool_t *pool, json_t *content,
    ngx_str_t *text);
/* the status a provider error maps to for the client and a default
 * OpenAI error type for it */
void ngx_http_llm_error_defaults(ngx_uint_t status, ngx_http_llm_error_t *err);
/* a pool copy of src into dst unless dst is set or src empty: the first
 * id or model a provider names stays */
ngx_int_t ngx_http_llm_str_keep(ngx_pool_t *pool, ngx_str_t *dst,
    ngx_str_t *src);
/* the URL of an OpenAI "image_url" content part; for a base64 data: URL
 * *type is its media type and *data the base64 text, for an http(s) URL
 * both are empty; NGX_DECLINED: neither */
ngx_int_t ngx_http_llm_image_url(json_t *part, ngx_str_t *url,
    ngx_str_t *type, ngx_str_t *data);
/* a message's items (content blocks, parts) onto the last turn of turns
 * if it has this role (providers want roles to alternate), else onto a
 * new turn {key: items, role}; steals items, drops them if empty */
ngx_int_t ngx_http_llm_turn_add(json_t *turns, const char *key,
    const char *role, json_t *items);
/* the "arguments" of an OpenAI tool call as an object, {} if they are
 * not one */
json_t *ngx_http_llm_tool_args(ngx_str_t *args);
/* an OpenAI tool call {function:{name, arguments}, id, type} of a
 * provider's call; input: its arguments object ({} if not an object) */
json_t *ngx_http_llm_tool_call(ngx_pool_t *pool, ngx_str_t *id,
    ngx_str_t *name, json_t *input);
/* a completion skeleton {choices:[], id, object, created, model};
 * *choices points into it */
json_t *ngx_http_llm_completion_new(ngx_http_llm_call_t *call, ngx_str_t *id,
    ngx_str_t *model, json_t **choices);
/* a choice {message, index, logprobs:null, finish_reason} onto choices;
 * steals message */
ngx_int_t ngx_http_llm_choice_add(json_t *choices, json_int_t index,
    json_t *message, const char *finish);
/* NGX_OK if a model name can be a segment of a provider's URI path as
 * it is: letters, digits, "-", "." and "_", and neither "." nor "..";
 * NGX_DECLINED otherwise */
ngx_int_t ngx_http_llm_path_name(ngx_str_t *name);
/* s itself, or a pool copy with control characters and non-ASCII bytes
 * (and with quotes, '"' and '\\' too) written as \xHH: for a response
 * header (quotes 0) or a log line (quotes 1); never NULL */
ngx_str_t *ngx_http_llm_escape(ngx_pool_t *pool, ngx_str_t *s,
    ngx_uint_t quotes);
/* every occurrence of secret in text replaced in place by "[redacted]"
 * (by as many "*" when the secret is shorter); text->len may shrink */
void ngx_http_llm_redact(ngx_str_t *text, ngx_str_t *secret);


/* the core: configuration and per-request state */

#define NGX_HTTP_LLM_FB_OFF       0x0002
#define NGX_HTTP_LLM_FB_ERROR     0x0004
#define NGX_HTTP_LLM_FB_TIMEOUT   0x0008
#define NGX_HTTP_LLM_FB_INVALID   0x0010
#define NGX_HTTP_LLM_FB_429       0x0020
#define NGX_HTTP_LLM_FB_500       0x0040
#define NGX_HTTP_LLM_FB_502       0x0080
#define NGX_HTTP_LLM_FB_503       0x0100
#define NGX_HTTP_LLM_FB_504       0x0200
#define NGX_HTTP_LLM_FB_5XX       0x0400
#define NGX_HTTP_LLM_FB_401       0x0800
#define NGX_HTTP_LLM_FB_403       0x1000


#define NGX_HTTP_LLM_MAX_TARGETS  64


typedef struct {
    ngx_array_t                 providers;     /* ngx_http_llm_provider_t */
    ngx_array_t                 zones;         /* ngx_http_llm_zone_t * */

    /* every llm_route line of every level, as upstream blocks are kept
     * in ngx_http_upstream_main_conf_t */
    ngx_array_t                 routes;        /* ngx_http_llm_route_t * */
    ngx_array_t                 route_lists;   /* ngx_array_t *: the
                                                  levels' lists, until
                                                  routes is made */
    time_t                      fail_timeout;  /* the longest of them */

    ngx_str_t                   route_zone_name;  /* llm_route_zone */
    ngx_http_llm_zone_t        *route_zone;    /* routing state */
} ngx_http_llm_main_conf_t;


typedef struct {
    ngx_array_t                *routes;        /* ngx_http_llm_route_t */
    ngx_http_llm_route_t       *catch_all;
    ngx_uint_t                  fallback;
    ngx_uint_t                  fallback_tries;
    ngx_msec_t                  fallback_timeout;
    ngx_msec_t                  retry_after_max;
    size_t                      max_response;
    ngx_flag_t                  gateway;
} ngx_http_llm_loc_conf_t;


typedef struct ngx_http_llm_ctx_s  ngx_http_llm_ctx_t;


/* how a request ended, for ngx_http_llm_finish() */
typedef enum {
    NGX_HTTP_LLM_RUNNING = 0,   /* not yet: the client went away */
    NGX_HTTP_LLM_ANSWERED,      /* a whole answer was sent */
    NGX_HTTP_LLM_STREAMED,      /* a stream was sent to its end */
    NGX_HTTP_LLM_FAILED,        /* attempts were made, none answered */
    NGX_HTTP_LLM_REFUSED        /* answered by the gateway, no attempt */
} ngx_http_llm_outcome_e;


typedef struct {
    ngx_http_llm_target_t      *target;
    ngx_http_request_t         *sr;
    ngx_http_llm_call_t         call;

    ngx_uint_t                  status;        /* provider's; 0: none */
    ngx_msec_t                  start;
    ngx_msec_t                  elapsed;

    u_char                     *body;          /* collected answer */
    size_t                      body_len;
    size_t                      body_size;

    void                       *sse;           /* ngx_http_llm_sse_t */
    ngx_chain_t                *held;          /* provider buffers kept
                                                  busy while the client
                                                  has not taken what they
                                                  were translated into */

    unsigned                    header:1;      /* provider header seen */
    unsigned                    finished:1;
    unsigned                    failed:1;      /* no complete answer */
    unsigned                    timedout:1;
    unsigned                    streaming:1;
    unsigned                    stream_done:1;
    unsigned                    too_big:1;
    unsigned                    untranslated:1;  /* driver failed */
} ngx_http_llm_attempt_t;


struct ngx_http_llm_ctx_s {
    ngx_http_request_t         *request;
    ngx_http_llm_loc_conf_t    *conf;

    json_t                     *body;          /* parsed when needed */
    ngx_str_t                   raw;
    ngx_str_t                   members[NGX_HTTP_LLM_M_N];
    ngx_uint_t                  endpoint;
    ngx_str_t                   model;

    ngx_http_llm_route_t       *route;
    ngx_str_t                  *keys;          /* health keys of targets */
    uint64_t                    tried;         /* bit per target */
    ngx_uint_t                  tries;
    uint64_t                    wait;          /* ms until one cools down */

    ngx_http_llm_attempt_t     *cur;
    ngx_http_llm_attempt_t     *answer;        /* the one whose answer or
                                                  error the client got */
    ngx_http_llm_stream_t       out;           /* the client's stream */
    ngx_http_llm_outcome_e      outcome;
    ngx_str_t                   attempts;      /* for $llm_attempts */
    ngx_uint_t                  nattempts;
    ngx_msec_t                  start;
    ngx_msec_t                  ttft;          /* -1 unknown */

    ngx_str_t                   replace;       /* error body replacing
                                                  nginx's own page */
    unsigned                    stream:1;
    unsigned                    include_usage:1;
    unsigned                    not_429:1;     /* a failure other than 429 */
    unsigned                    own:1;         /* our response headers */
    unsigned                    replacing:1;
    unsigned                    replaced:1;
};


extern ngx_module_t  ngx_http_llm_gateway_module;


/* ngx_http_llm_request.c: from the client's body to the first attempt,
 * and the end of every request */
ngx_http_llm_ctx_t *ngx_http_llm_ctx_create(ngx_http_request_t *r);
void ngx_http_llm_body_handler(ngx_http_request_t *r);
/* the request ends with this outcome: ngx_http_finalize_request(r, rc) */
void ngx_http_llm_end(ngx_http_request_t *r, ngx_http_llm_ctx_t *ctx,
    ngx_http_llm_outcome_e outcome, ngx_int_t rc);
/* the log phase handler: every gateway request passes here once */
ngx_int_t ngx_http_llm_finish(ngx_http_request_t *r);

/* ngx_http_llm_attempt.c: the attempt loop */
/* the next target: NGX_OK (a subrequest is under way), NGX_DECLINED (no
 * target left), NGX_BUSY (every target left is cooling down), NGX_ABORT
 * (the body is not valid JSON for a tree), NGX_ERROR */
ngx_int_t ngx_http_llm_attempt_start(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
/* the preaccess handler of attempts' subrequests */
ngx_int_t ngx_http_llm_body_length(ngx_http_request_t *r);
/* provider text (a body, an event): UTF-8 repaired, the key redacted */
ngx_int_t ngx_http_llm_provider_text(ngx_http_llm_attempt_t *a,
    ngx_str_t *text);

/* ngx_http_llm_filter.c: what comes back from the provider */
ngx_int_t ngx_http_llm_filter_init(ngx_conf_t *cf);

/* ngx_http_llm_answer.c: what the gateway sends to the client */
ngx_int_t ngx_http_llm_add_header(ngx_http_request_t *r, char *key,
    ngx_str_t *value);
/* the response header, with the x-llm-* headers of attempt a (if any),
 * whose answer or error the client gets from now on (ctx->answer) */
ngx_int_t ngx_http_llm_send_header(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a);
/* headers and a whole body with last_buf; status 200 unless
 * r->headers_out.status is set */
ngx_int_t ngx_http_llm_send_answer(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_str_t *body);
/* an OpenAI-shaped error; a 429 of attempt a passes its pause headers */
ngx_int_t ngx_http_llm_send_error(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
/* 429: every target is cooling down */
ngx_int_t ngx_http_llm_send_cooling(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
/* the end of a stream: an error event (err) or the usage chunk the
 * client asked for, then [DONE] */
ngx_int_t ngx_http_llm_stream_tail(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a,
    ngx_http_llm_error_t *err);
ngx_int_t ngx_http_llm_error_json(ngx_pool_t *pool,
    ngx_http_llm_error_t *err, ngx_str_t *out);
void ngx_http_llm_error_set(ngx_http_llm_error_t *err, ngx_uint_t status,
    char *type, char *code, char *param, ngx_str_t *message);

/* ngx_http_llm_route.c */
/* lmcf->routes from lmcf->route_lists, lmcf->route_zone named */
char *ngx_http_llm_route_init_main_conf(ngx_conf_t *cf,
    ngx_http_llm_main_conf_t *lmcf);
ngx_int_t ngx_http_llm_route_prepare(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx);
ngx_int_t ngx_http_llm_route_pick(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_target_t **target);
void ngx_http_llm_route_result(ngx_http_request_t *r,
    ngx_http_llm_ctx_t *ctx, ngx_http_llm_attempt_t *a, ngx_uint_t failed);


#endif /* _NGX_HTTP_LLM_MODULE_H_INCLUDED_ */
