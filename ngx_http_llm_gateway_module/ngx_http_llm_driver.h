
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#ifndef _NGX_HTTP_LLM_DRIVER_H_INCLUDED_
#define _NGX_HTTP_LLM_DRIVER_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <jansson.h>

#include "ngx_http_llm_json.h"


/*
 * What a wire format's driver sees of the gateway: its table, the call
 * (one attempt against one target), and the helpers that read the
 * client's request and write the client's answer.  A driver file
 * includes this header only.
 */


#define NGX_HTTP_LLM_CHAT            1
#define NGX_HTTP_LLM_EMBEDDINGS      2

#define NGX_HTTP_LLM_DEFAULT_MAX_TOKENS  4096

/* top-level members of the client's body, found by the core */
#define NGX_HTTP_LLM_M_MODEL           0
#define NGX_HTTP_LLM_M_MESSAGES        1
#define NGX_HTTP_LLM_M_INPUT           2
#define NGX_HTTP_LLM_M_STREAM          3
#define NGX_HTTP_LLM_M_STREAM_OPTIONS  4
#define NGX_HTTP_LLM_M_MAX_TOKENS      5
#define NGX_HTTP_LLM_M_MAX_COMPLETION  6
#define NGX_HTTP_LLM_M_N               7

/* the client's "tool_choice", see ngx_http_llm_tool_choice() */
#define NGX_HTTP_LLM_TOOLS_UNSET     0
#define NGX_HTTP_LLM_TOOLS_AUTO      1
#define NGX_HTTP_LLM_TOOLS_REQUIRED  2
#define NGX_HTTP_LLM_TOOLS_NONE      3
#define NGX_HTTP_LLM_TOOLS_FUNCTION  4


typedef struct ngx_http_llm_driver_s  ngx_http_llm_driver_t;
typedef struct ngx_http_llm_call_s    ngx_http_llm_call_t;
typedef struct ngx_http_llm_stream_s  ngx_http_llm_stream_t;
typedef struct ngx_http_llm_acc_s     ngx_http_llm_acc_t;


/* how a 2xx stream of a format is framed */
typedef enum {
    NGX_HTTP_LLM_FRAMING_SSE = 0     /* text/event-stream */
} ngx_http_llm_framing_e;


typedef struct {
    ngx_str_t                   name;
    ngx_http_llm_driver_t      *driver;
    ngx_str_t                   pass;          /* "/_llm/openai/" */
    ngx_str_t                   key;           /* of key_file, may be empty */
    ngx_str_t                   api_version;   /* azure */
    void                       *conf;          /* the driver's parameters,
                                                  made by its param hook */
} ngx_http_llm_provider_t;


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
 * the client's request (OpenAI format: the bytes, the members the core
 * found, and a tree if it asks for one with ngx_http_llm_call_tree()),
 * fills uri, args and body, and on the way back translates the
 * provider's answer into OpenAI format.
 */

struct ngx_http_llm_call_s {
    ngx_pool_t                 *pool;
    ngx_log_t                  *log;

    ngx_uint_t                  endpoint;      /* NGX_HTTP_LLM_CHAT, ... */
    ngx_str_t                   raw;           /* client body as sent */
    ngx_str_t                  *members;       /* NGX_HTTP_LLM_M_* spans */
    json_t                    **tree;          /* the core's: the parsed body,
                                                  ngx_http_llm_call_tree() */
    ngx_http_llm_provider_t    *provider;
    ngx_str_t                   model;         /* provider's model name */
    ngx_str_t                   public_model;  /* model the client asked */
    ngx_int_t                   max_tokens;    /* > 0: the most output
                                                  tokens to ask for, lower
                                                  than the client asked (a
                                                  budget's) or where it
                                                  named none */

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
    ngx_int_t                   produced;      /* output tokens counted by
                                                  the stream writers */

    ngx_http_llm_stream_t      *out;           /* the client's stream */
    ngx_http_llm_acc_t         *acc;           /* what the stream says,
                                                  gathered for the cache;
                                                  the core's */

    unsigned                    stream:1;      /* client asked stream */
    unsigned                    include_usage:1;  /* client asked usage */
    unsigned                    role_sent:1;
};


/*
 * A wire format, written with designated initializers; what is left out
 * is 0 or NULL, and a NULL hook has the default said.  Functions return
 * NGX_OK, NGX_ERROR (out of memory), or, where said, NGX_DECLINED.
 */

struct ngx_http_llm_driver_s {
    ngx_str_t                   name;          /* "openai" */

    /* for the default auth: "Authorization" + "Bearer ", "x-api-key" */
    ngx_str_t                   auth_header;
    ngx_str_t                   auth_prefix;

    /* extra request headers, NULL-terminated pairs, or NULL */
    ngx_str_t                  *extra_headers;

    /* how 2xx streams are framed: events go to parse_stream_event */
    ngx_http_llm_framing_e      framing;

    /*
     * Fill call->uri, call->args and call->body or call->raw_body.
     * NGX_DECLINED: this format cannot serve call->endpoint; the message
     * goes to call->log at info level.  NGX_ABORT: the tree was asked
     * for and jansson refused the body.
     */
    ngx_int_t                 (*build_request)(ngx_http_llm_call_t *call);

    /*
     * Optional: a whole 2xx body as bytes, read without a JSON tree.
     * NGX_OK: the answer is the body unchanged, or call->answer when the
     * driver wrote one; NGX_DECLINED: invalid response; NGX_AGAIN: not a
     * case the driver reads this way, parse_response gets the tree.
     */
    ngx_int_t                 (*parse_raw)(ngx_http_llm_call_t *call,
                                  ngx_str_t *body);

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
     * One event of a 2xx stream.  For SSE, event is the "event:" field
     * (may be empty), data the joined "data:" lines.  Translated chunks
     * go out with the ngx_http_llm_stream_*() writers; usage into
     * call->usage (the core sends the usage chunk and "data: [DONE]"
     * itself).  NGX_DECLINED: malformed event.  NGX_DONE: the provider
     * said the stream is over.
     */
    ngx_int_t                 (*parse_stream_event)(ngx_http_llm_call_t *call,
                                  ngx_str_t *event, ngx_str_t *data);

    /*
     * A non-2xx answer (body may be empty or not JSON) into an OpenAI
     * error; err->status is what the client gets and what llm_fallback
     * judges.  NULL: ngx_http_llm_error_defaults() of the status.
     */
    void                      (*map_error)(ngx_http_llm_call_t *call,
                                  ngx_uint_t status, ngx_str_t *body,
                                  ngx_http_llm_error_t *err);

    /*
     * Add the attempt's auth header(s) to headers (ngx_table_elt_t),
     * once the body is made: room for request signing.  NULL:
     * auth_header: auth_prefix + the provider's key, if it has one.
     */
    ngx_int_t                 (*auth)(ngx_http_llm_call_t *call,
                                  ngx_list_t *headers, ngx_str_t *body);

    /*
     * A parameter of llm_provider the gateway does not know (name=value),
     * at configuration: NGX_OK (kept, in p->conf or p), NGX_DECLINED
     * (unknown to this driver too), NGX_ERROR (bad value, logged with
     * ngx_conf_log_error).  NULL: the driver takes none.
     */
    ngx_int_t                 (*param)(ngx_conf_t *cf,
                                  ngx_http_llm_provider_t *p,
                                  ngx_str_t *name, ngx_str_t *value);

    /*
     * How long to leave the target alone after a failed answer with
     * this status, from the provider's response headers, in ms; 0: no
     * pause.  NULL: Retry-After (or retry-after-ms) of a 429 or 503.
     */
    ngx_msec_t                (*pause)(ngx_http_llm_call_t *call,
                                  ngx_uint_t status, ngx_list_t *headers);
};


/*
 * How a format writes the client's messages as turns of items (content
 * blocks, parts), for ngx_http_llm_turns().  Every function adds to
 * items, or to body for system text, and returns NGX_OK or NGX_ERROR.
 */

typedef struct {
    const char                 *key;           /* of a turn's items */
    const char                 *assistant;     /* the assistant's role */

    /* the text of a system or developer message, never empty */
    ngx_int_t                 (*system)(ngx_http_llm_call_t *call,
                                  json_t *body, ngx_str_t *text);
    /* a text item; len may be 0 */
    ngx_int_t                 (*text)(json_t *items, u_char *text,
                                  size_t len);
    /* an "image_url" content part */
    ngx_int_t                 (*image)(ngx_http_llm_call_t *call,
                                  json_t *part, json_t *items);
    /* a tool call of an assistant message; steals args */
    ngx_int_t                 (*tool_call)(json_t *items, ngx_str_t *id,
                                  ngx_str_t *name, json_t *args);
    /* the tool message messages[n] */
    ngx_int_t                 (*tool_result)(ngx_http_llm_call_t *call,
                                  json_t *messages, size_t n, json_t *items);
} ngx_http_llm_turns_t;


/*
 * The measure-then-write JSON writer: the same code runs twice, first
 * with pos NULL to count (len), then over an exact allocation, so a
 * field added to what is written cannot overflow the buffer.
 */

typedef struct {
    u_char                     *pos;           /* NULL: measuring */
    size_t                      len;           /* what was measured */
} ngx_http_llm_out_t;


static ngx_inline void
ngx_http_llm_out_raw(ngx_http_llm_out_t *o, const void *data, size_t len)
{
    if (o->pos) {
        o->pos = ngx_cpymem(o->pos, data, len);

    } else {
        o->len += len;
    }
}


/* an ngx_str_t is the literal lit */
#define ngx_http_llm_str_is(s, lit)                                           \
    ((s)->len == sizeof(lit) - 1                                              \
     && ngx_strncmp((s)->data, lit, sizeof(lit) - 1) == 0)

#define ngx_http_llm_out_lit(o, s)                                            \
    ngx_http_llm_out_raw(o, s, sizeof(s) - 1)

#define ngx_http_llm_out_str(o, s)                                            \
    ngx_http_llm_out_raw(o, (s)->data, (s)->len)

/* the text of a JSON string, escaped, without the quotes */
void ngx_http_llm_out_escaped(ngx_http_llm_out_t *o, ngx_str_t *s);
/* a JSON string: quoted and escaped */
void ngx_http_llm_out_string(ngx_http_llm_out_t *o, ngx_str_t *s);
void ngx_http_llm_out_int(ngx_http_llm_out_t *o, int64_t n);
/* the pool memory for what o measured, and o set to write into it */
u_char *ngx_http_llm_out_alloc(ngx_http_llm_out_t *o, ngx_pool_t *pool);


/* ngx_http_llm_request.c: the client's body as a tree, parsed on first
 * use, released with the request; NULL if jansson cannot parse it:
 * build_request then returns NGX_ABORT */
json_t *ngx_http_llm_call_tree(ngx_http_llm_call_t *call);


/* ngx_http_llm_driver.c: for drivers' own auth and pause hooks */
/* the pause retry-after-ms or Retry-After (seconds or a date) asks for;
 * NGX_DECLINED: neither says */
ngx_int_t ngx_http_llm_pause_retry_after(ngx_list_t *headers,
    ngx_msec_t *ms);
/* a header of a list by its lowercase name, or NULL */
ngx_table_elt_t *ngx_http_llm_header_find(ngx_list_t *headers, char *name);
/* a header key: prefix + value onto a list of ngx_table_elt_t; *out (if
 * not NULL) is the new one */
ngx_int_t ngx_http_llm_header_push(ngx_pool_t *pool, ngx_list_t *headers,
    ngx_str_t *key, ngx_str_t *prefix, ngx_str_t *value,
    ngx_table_elt_t **out);


/* ngx_http_llm_stream.c: the chunks drivers write into call->out */

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
/* a chunk with delta (a JSON object) and finish_reason finish (NULL:
 * null) for choice index */
ngx_int_t ngx_http_llm_stream_delta(ngx_http_llm_call_t *call,
    json_int_t index, ngx_str_t *delta, const char *finish);
/* a chunk with an empty delta and finish_reason finish for choice index */
ngx_int_t ngx_http_llm_stream_finish(ngx_http_llm_call_t *call,
    json_int_t index, const char *finish);
/* the provider's error inside a stream, logged and sent as an OpenAI
 * error event; code may be empty (null); returns NGX_DONE */
ngx_int_t ngx_http_llm_stream_error(ngx_http_llm_call_t *call,
    ngx_str_t *type, ngx_str_t *code, ngx_str_t *message);


/* ngx_http_llm_util.c: helpers for drivers */

/* a chunk skeleton {id, object, created, model, choices:[{index:0,
 * delta:{}, finish_reason:null}]}; *delta points into it */
json_t *ngx_http_llm_chunk_new(ngx_http_llm_call_t *call, json_t **delta);
/* the same for choice index */
json_t *ngx_http_llm_chunk_at(ngx_http_llm_call_t *call, json_int_t index,
    json_t **delta);
/* serialize into pool memory */
ngx_int_t ngx_http_llm_json_dump(ngx_pool_t *pool, json_t *json,
    ngx_str_t *out);
/* jansson string of an ngx_str_t */
json_t *ngx_http_llm_json_str(ngx_str_t *s);
/* a provider's text parsed, if it is a JSON object; NULL otherwise */
json_t *ngx_http_llm_json_object(ngx_str_t *text);
/* borrow a string member; empty if missing or not a string */
void ngx_http_llm_json_get_str(json_t *obj, const char *key, ngx_str_t *s);
/* prefix + 24 random hex digits, into *id */
ngx_int_t ngx_http_llm_make_id(ngx_http_llm_call_t *call, const char *prefix,
    ngx_str_t *id);
/* text of an OpenAI message "content": string or array of text parts,
 * joined; images ignored */
ngx_int_t ngx_http_llm_content_text(ngx_pool_t *pool, json_t *content,
    ngx_str_t *text);
/* the "text" members of the items of an array joined, of the items whose
 * "type" is type (NULL: any) and that are not "thought": true; an empty
 * text has data NULL */
ngx_int_t ngx_http_llm_text_join(ngx_pool_t *pool, json_t *items,
    const char *type, ngx_str_t *text);
/* the status a provider error maps to for the client and a default
 * OpenAI error type for it */
void ngx_http_llm_error_defaults(ngx_uint_t status, ngx_http_llm_error_t *err);
/* a provider's error object (may be NULL) into err: its "message", its
 * member type_key into err->type and code_key into err->code (NULL:
 * none); without a message, "<format> returned HTTP <status>" */
void ngx_http_llm_error_read(ngx_http_llm_call_t *call, ngx_uint_t status,
    json_t *error, const char *type_key, const char *code_key,
    ngx_http_llm_error_t *err);
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
/* the client's messages onto turns (an array in body) the way conv
 * says: user and tool messages as "user" turns, consecutive turns of one
 * role merged; NGX_DECLINED: no messages */
ngx_int_t ngx_http_llm_turns(ngx_http_llm_call_t *call, json_t *req,
    json_t *body, json_t *turns, ngx_http_llm_turns_t *conv);
/* the client's max_completion_tokens, else max_tokens, if positive; 0:
 * neither */
json_int_t ngx_http_llm_max_tokens(json_t *req);
/* the client's "stop" (a string or an array) as a new array of its
 * non-empty strings in *stop, or NULL when there are none */
ngx_int_t ngx_http_llm_stop(json_t *req, json_t **stop);
/* the client's function tools as a new array of {name, description,
 * <schema_key>: a copy of parameters}, tools without a name left out;
 * with dflt, a tool without parameters gets an empty object schema;
 * NULL: out of memory */
json_t *ngx_http_llm_tools(ngx_http_llm_call_t *call, json_t *req,
    const char *schema_key, ngx_uint_t dflt);
/* the client's tool_choice: NGX_HTTP_LLM_TOOLS_*, *name set for
 * NGX_HTTP_LLM_TOOLS_FUNCTION */
ngx_uint_t ngx_http_llm_tool_choice(json_t *req, ngx_str_t *name);
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
/* an OpenAI "usage" object; cached and reasoning < 0: left out */
json_t *ngx_http_llm_usage_json(json_int_t prompt, json_int_t completion,
    json_int_t total, json_int_t cached, json_int_t reasoning);
/* NGX_OK if a model name can be a segment of a provider's URI path as
 * it is: letters, digits, "-", "." and "_", and neither "." nor "..";
 * NGX_DECLINED otherwise */
ngx_int_t ngx_http_llm_path_name(ngx_str_t *name);
/* s itself, or a pool copy with control characters and non-ASCII bytes
 * (and with quotes, '"' and '\\' too) written as \xHH: for a response
 * header (quotes 0) or a log line (quotes 1); never NULL */
ngx_str_t *ngx_http_llm_escape(ngx_pool_t *pool, ngx_str_t *s,
    ngx_uint_t quotes);


#endif /* _NGX_HTTP_LLM_DRIVER_H_INCLUDED_ */
