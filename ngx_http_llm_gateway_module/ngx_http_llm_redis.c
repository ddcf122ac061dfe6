
/*
 * Copyright (C) ngx_http_llm_gateway_module authors
 */


#include "ngx_http_llm_module.h"
#include <hiredis/hiredis.h>


/*
 * llm_redis: a zone's state shared with other nginx nodes through Redis.
 *
 * One worker of each nginx (the first) owns a connection to Redis, made
 * with ngx_event_connect_peer() and driven by nginx's events: commands
 * are formatted by hiredis into a buffer, replies parsed by its
 * redisReader, and handled in order.  Nothing of it is on a request's
 * path: every sync interval the owner
 *
 *   - pushes the spend each budget entry recorded since the last push as
 *     a delta with a sequence number (a Lua script applies a sequence
 *     once, so a delta whose reply was lost is sent again and counted
 *     once), and reads back the total of all nodes;
 *   - publishes the cache entries stored since the last cycle (SET with
 *     their TTL, and a sorted set as a log by time), and inserts those
 *     other nodes published since its last look.
 *
 * While Redis is away the zone goes on alone: deltas add up in the
 * entries and are pushed when it returns.  The connection, its timers
 * and buffers belong to the worker and go with it on exit or reload.
 */


#define NGX_HTTP_LLM_REDIS_BACKOFF_MAX  10000
#define NGX_HTTP_LLM_REDIS_BUF          16384
#define NGX_HTTP_LLM_REDIS_LOG_AGE      (24 * 3600 * 1000)


typedef enum {
    NGX_HTTP_LLM_REDIS_IDLE = 0,       /* not connected */
    NGX_HTTP_LLM_REDIS_CONNECTING,
    NGX_HTTP_LLM_REDIS_READY
} ngx_http_llm_redis_state_e;


typedef struct ngx_http_llm_redis_s  ngx_http_llm_redis_t;

typedef void (*ngx_http_llm_redis_pt)(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);


typedef struct {
    ngx_http_llm_redis_pt       handler;
    void                       *data;
} ngx_http_llm_redis_cb_t;


struct ngx_http_llm_redis_s {
    ngx_http_llm_redis_conf_t  *conf;
    ngx_log_t                  *log;

    ngx_peer_connection_t       peer;
    redisReader                *reader;
    ngx_http_llm_redis_state_e  state;

    u_char                     *out;           /* commands not yet sent */
    size_t                      out_len;
    size_t                      out_size;

    ngx_http_llm_redis_cb_t    *cbs;           /* replies awaited, a ring */
    ngx_uint_t                  cb_head;
    ngx_uint_t                  cb_n;
    ngx_uint_t                  cb_size;

    ngx_event_t                 timer;         /* sync, or reconnect */
    ngx_msec_t                  last_sync;
    time_t                      time_offset;   /* llm_test_time_offset */
    ngx_msec_t                  backoff;
    ngx_pool_t                 *cycle_pool;    /* of a sync cycle */

    uint64_t                    published;     /* cache generation */
    uint64_t                    pulled;        /* ms of the log */
    uint64_t                    pull_next;

    unsigned                    down:1;        /* said it went away */
    unsigned                    auth_failed:1;
    unsigned                    syncing:1;
};


static void ngx_http_llm_redis_connect(ngx_http_llm_redis_t *rs);
static void ngx_http_llm_redis_close(ngx_http_llm_redis_t *rs,
    ngx_uint_t error);
static void ngx_http_llm_redis_timer(ngx_event_t *ev);
static void ngx_http_llm_redis_write(ngx_event_t *wev);
static void ngx_http_llm_redis_read(ngx_event_t *rev);
static ngx_int_t ngx_http_llm_redis_command(ngx_http_llm_redis_t *rs,
    ngx_http_llm_redis_pt handler, void *data, int argc, const char **argv,
    const size_t *argvlen);
static void ngx_http_llm_redis_ready(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_sync(ngx_http_llm_redis_t *rs);
static ngx_int_t ngx_http_llm_redis_budgets(ngx_http_llm_redis_t *rs);
static ngx_int_t ngx_http_llm_redis_limit_walk(ngx_http_llm_zone_entry_t *e,
    void *data);
static void ngx_http_llm_redis_limit_done(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_redis_budget_walk(ngx_http_llm_zone_entry_t *e,
    void *data);
static void ngx_http_llm_redis_budget_done(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_redis_publish(ngx_http_llm_redis_t *rs);
static ngx_int_t ngx_http_llm_redis_publish_walk(ngx_http_llm_zone_entry_t *e,
    void *data);
static void ngx_http_llm_redis_pulled(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_fetched(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static void ngx_http_llm_redis_cycle_done(ngx_http_llm_redis_t *rs,
    redisReply *reply, void *data);
static ngx_int_t ngx_http_llm_redis_unhex(u_char *dst, u_char *src,
    size_t len);


/*
 * A node's message about a budget, applied once per (node, sequence): its
 * spend (delta) moves from its lease to the total, it gives back ret of
 * its lease and asks for want more, granted from what neither the total
 * nor the other nodes' leases hold, so that the total and all the leases
 * never exceed the limit.  The leases of a node not heard of for a
 * minute go back.  Returns the total and this node's lease.
 *
 * KEYS[1] the budget's hash; ARGV: node, sequence, delta, ret, want,
 * limit, seconds to keep the hash (0: always).
 */

static char  ngx_http_llm_redis_budget_lua[] =
    "local node = ARGV[1] "
    "local now = tonumber(redis.call('TIME')[1]) "
    "local last = tonumber(redis.call('HGET', KEYS[1], 'seq:' .. node)"
    " or '0') "
    "local lease = tonumber(redis.call('HGET', KEYS[1], 'lease:' .. node)"
    " or '0') "
    "local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0') "
    "if tonumber(ARGV[2]) > last then "
    "  local limit = tonumber(ARGV[6]) "
    "  spent = spent + tonumber(ARGV[3]) "
    "  lease = lease - tonumber(ARGV[3]) - tonumber(ARGV[4]) "
    "  if lease < 0 then lease = 0 end "
    "  local others = 0 "
    "  local all = redis.call('HGETALL', KEYS[1]) "
    "  for i = 1, #all, 2 do "
    "    local f = all[i] "
    "    if string.sub(f, 1, 6) == 'lease:' and f ~= 'lease:' .. node then "
    "      local n = string.sub(f, 7) "
    "      local at = tonumber(redis.call('HGET', KEYS[1], 'at:' .. n)"
    " or '0') "
    "      if now - at > 60 then "
    "        redis.call('HDEL', KEYS[1], f, 'at:' .. n) "
    "      else "
    "        others = others + tonumber(all[i + 1]) "
    "      end "
    "    end "
    "  end "
    "  local free = limit - spent - others - lease "
    "  local grant = tonumber(ARGV[5]) "
    "  if grant > free then grant = free end "
    "  if grant < 0 then grant = 0 end "
    "  lease = lease + grant "
    "  redis.call('HSET', KEYS[1], 'spent', string.format('%.0f', spent), "
    "    'lease:' .. node, string.format('%.0f', lease), "
    "    'seq:' .. node, ARGV[2], 'limit', ARGV[6]) "
    "end "
    "redis.call('HSET', KEYS[1], 'at:' .. node, now) "
    "if tonumber(ARGV[7]) > 0 then "
    "  redis.call('EXPIRE', KEYS[1], ARGV[7]) "
    "end "
    "return {string.format('%.0f', spent), string.format('%.0f', lease)}";


/*
 * A node's requests and tokens per second added to a limit's hash, the
 * seconds older than the window dropped; returns the requests and tokens
 * of all nodes in the window.  KEYS[1] the hash; ARGV: the window's first
 * second, then second, requests, tokens, ... .
 */

static char  ngx_http_llm_redis_limit_lua[] =
    "local from = tonumber(ARGV[1]) "
    "for i = 2, #ARGV, 3 do "
    "  redis.call('HINCRBY', KEYS[1], ARGV[i] .. ':r', ARGV[i + 1]) "
    "  redis.call('HINCRBY', KEYS[1], ARGV[i] .. ':t', ARGV[i + 2]) "
    "end "
    "local r, t = 0, 0 "
    "local all = redis.call('HGETALL', KEYS[1]) "
    "for i = 1, #all, 2 do "
    "  local sec = tonumber(string.match(all[i], '^(%d+)')) "
    "  if sec == nil or sec < from then "
    "    redis.call('HDEL', KEYS[1], all[i]) "
    "  elseif string.sub(all[i], -2) == ':r' then "
    "    r = r + tonumber(all[i + 1]) "
    "  else "
    "    t = t + tonumber(all[i + 1]) "
    "  end "
    "end "
    "redis.call('EXPIRE', KEYS[1], 120) "
    "return {r, t}";


static ngx_http_llm_redis_t  *ngx_http_llm_redis_workers;
static ngx_uint_t             ngx_http_llm_redis_nworkers;


/*
 * llm_redis address zone=name [password=text | password_file=path]
 *     [db=n] [prefix=text] [sync=time] [connect_timeout=time]
 *     [timeout=time]
 */

char *
ngx_http_llm_redis(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_llm_main_conf_t *lmcf = conf;

    ssize_t                     n;
    ngx_int_t                   db;
    ngx_str_t                  *value, v, name, file;
    ngx_uint_t                  i;
    ngx_msec_t                  ms;
    ngx_http_llm_redis_conf_t  *rc, **rcp;

    value = cf->args->elts;

    rc = ngx_pcalloc(cf->pool, sizeof(ngx_http_llm_redis_conf_t));
    if (rc == NULL) {
        return NGX_CONF_ERROR;
    }

    rc->url.url = value[1];
    rc->url.default_port = 6379;
    rc->url.no_resolve = 0;

    if (ngx_parse_url(cf->pool, &rc->url) != NGX_OK) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "llm_redis: %s in \"%V\"",
                           rc->url.err ? rc->url.err : "invalid address",
                           &value[1]);
        return NGX_CONF_ERROR;
    }

    if (rc->url.naddrs == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "llm_redis: no address for \"%V\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    ngx_str_set(&rc->prefix, "llm:");
    rc->sync = 1000;
    rc->connect_timeout = 1000;
    rc->timeout = 1000;
    name.len = 0;

    for (i = 2; i < cf->args->nelts; i++) {

        if (ngx_strncmp(value[i].data, "zone=", 5) == 0) {
            name.data = value[i].data + 5;
            name.len = value[i].len - 5;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password=", 9) == 0) {
            rc->password.data = value[i].data + 9;
            rc->password.len = value[i].len - 9;
            continue;
        }

        if (ngx_strncmp(value[i].data, "password_file=", 14) == 0) {
            file.data = value[i].data + 14;
            file.len = value[i].len - 14;

            if (ngx_http_llm_read_secret(cf, &file, &rc->password)
                != NGX_OK)
            {
                return NGX_CONF_ERROR;
            }

            continue;
        }

        if (ngx_strncmp(value[i].data, "db=", 3) == 0) {
            db = ngx_atoi(value[i].data + 3, value[i].len - 3);
            if (db == NGX_ERROR) {
                goto invalid;
            }

            rc->db = db;
            continue;
        }

        if (ngx_strncmp(value[i].data, "prefix=", 7) == 0) {
            rc->prefix.data = value[i].data + 7;
            rc->prefix.len = value[i].len - 7;

            if (rc->prefix.len > 64) {
                goto invalid;
            }

            continue;
        }

        n = 0;

        if (ngx_strncmp(value[i].data, "sync=", 5) == 0) {
            n = 5;

        } else if (ngx_strncmp(value[i].data, "connect_timeout=", 16) == 0) {
            n = 16;

        } else if (ngx_strncmp(value[i].data, "timeout=", 8) == 0) {
            n = 8;
        }

        if (n == 0) {
            goto invalid;
        }

        v.data = value[i].data + n;
        v.len = value[i].len - n;

        ms = ngx_parse_time(&v, 0);
        if (ms == (ngx_msec_t) NGX_ERROR || ms == 0) {
            goto invalid;
        }

        if (n == 5) {
            rc->sync = ms;

        } else if (n == 16) {
            rc->connect_timeout = ms;

        } else {
            rc->timeout = ms;
        }
    }

    if (name.len == 0) {
        return "needs zone=";
    }

    rc->zone = ngx_http_llm_zone_named(cf, &name);
    if (rc->zone == NULL) {
        return NGX_CONF_ERROR;
    }

    rc->zone->synced = 1;

    rcp = lmcf->redis.elts;

    for (i = 0; i < lmcf->redis.nelts; i++) {
        if (rcp[i]->zone == rc->zone) {
            return "is duplicate for this zone";
        }
    }

    rcp = ngx_array_push(&lmcf->redis);
    if (rcp == NULL) {
        return NGX_CONF_ERROR;
    }

    *rcp = rc;

    return NGX_CONF_OK;

invalid:

    ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                       "llm_redis: invalid parameter \"%V\"", &value[i]);

    return NGX_CONF_ERROR;
}


/* the first worker owns the connections; others have nothing to do */

ngx_int_t
ngx_http_llm_redis_init_process(ngx_cycle_t *cycle,
    ngx_http_llm_main_conf_t *lmcf)
{
    ngx_uint_t                   i;
    ngx_http_llm_redis_t        *rs;
    ngx_http_llm_redis_conf_t  **rcp;

    if (lmcf->redis.nelts == 0
        || (ngx_process == NGX_PROCESS_WORKER && ngx_worker != 0))
    {
        return NGX_OK;
    }

    rs = ngx_pcalloc(cycle->pool,
                     lmcf->redis.nelts * sizeof(ngx_http_llm_redis_t));
    if (rs == NULL) {
        return NGX_ERROR;
    }

    ngx_http_llm_redis_workers = rs;
    ngx_http_llm_redis_nworkers = lmcf->redis.nelts;

    rcp = lmcf->redis.elts;

    for (i = 0; i < lmcf->redis.nelts; i++) {
        rs[i].conf = rcp[i];
        rs[i].log = cycle->log;
        rs[i].time_offset = lmcf->time_offset;

        rs[i].timer.handler = ngx_http_llm_redis_timer;
        rs[i].timer.data = &rs[i];
        rs[i].timer.log = cycle->log;
        rs[i].timer.cancelable = 1;

        /* a moment after start, when the zone is there */
        ngx_add_timer(&rs[i].timer, 10);
    }

    return NGX_OK;
}


void
ngx_http_llm_redis_exit_process(ngx_cycle_t *cycle)
{
    ngx_uint_t  i;

    for (i = 0; i < ngx_http_llm_redis_nworkers; i++) {
        ngx_http_llm_redis_close(&ngx_http_llm_redis_workers[i], 0);

        if (ngx_http_llm_redis_workers[i].reader) {
            redisReaderFree(ngx_http_llm_redis_workers[i].reader);
            ngx_http_llm_redis_workers[i].reader = NULL;
        }
    }

    ngx_http_llm_redis_nworkers = 0;
}


/*
 * Every sync interval a cycle; and every 20 ms a look at whether a
 * request waits for a budget lease, which starts one at once.
 */

static void
ngx_http_llm_redis_timer(ngx_event_t *ev)
{
    ngx_http_llm_redis_t *rs = ev->data;

    ngx_http_llm_zone_sh_t  *sh;

    if (ngx_exiting || ngx_quit || ngx_terminate) {
        return;
    }

    sh = rs->conf->zone->sh;

    if (rs->state == NGX_HTTP_LLM_REDIS_IDLE) {
        ngx_http_llm_redis_connect(rs);

    } else if (rs->state == NGX_HTTP_LLM_REDIS_READY && !rs->syncing
               && (ngx_current_msec - rs->last_sync >= rs->conf->sync
                   || sh->lease_wanted))
    {
        ngx_http_llm_redis_sync(rs);
    }

    if (!ev->timer_set) {
        ngx_add_timer(ev, rs->state == NGX_HTTP_LLM_REDIS_IDLE
                          ? rs->backoff : ngx_min(rs->conf->sync, 20));
    }
}


static void
ngx_http_llm_redis_connect(ngx_http_llm_redis_t *rs)
{
    ngx_int_t                   rc;
    const char                 *argv[2];
    size_t                      argvlen[2];
    u_char                      db[NGX_INT_T_LEN];
    ngx_http_llm_redis_conf_t  *conf;

    conf = rs->conf;

    ngx_memzero(&rs->peer, sizeof(ngx_peer_connection_t));

    rs->peer.sockaddr = conf->url.addrs[0].sockaddr;
    rs->peer.socklen = conf->url.addrs[0].socklen;
    rs->peer.name = &conf->url.addrs[0].name;
    rs->peer.get = ngx_event_get_peer;
    rs->peer.log = rs->log;
    rs->peer.log_error = NGX_ERROR_ERR;

    if (rs->reader == NULL) {
        rs->reader = redisReaderCreate();
        if (rs->reader == NULL) {
            return;
        }
    }

    rc = ngx_event_connect_peer(&rs->peer);

    if (rc == NGX_ERROR || rc == NGX_BUSY || rc == NGX_DECLINED) {
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    rs->state = NGX_HTTP_LLM_REDIS_CONNECTING;

    rs->peer.connection->data = rs;
    rs->peer.connection->read->handler = ngx_http_llm_redis_read;
    rs->peer.connection->write->handler = ngx_http_llm_redis_write;
    rs->peer.connection->log = rs->log;
    rs->peer.connection->read->log = rs->log;
    rs->peer.connection->write->log = rs->log;
    rs->peer.connection->pool = NULL;

    rs->out_len = 0;
    rs->cb_head = 0;
    rs->cb_n = 0;

    /* AUTH and SELECT first; the first reply after them says "ready" */

    if (conf->password.len) {
        argv[0] = "AUTH";
        argvlen[0] = 4;
        argv[1] = (const char *) conf->password.data;
        argvlen[1] = conf->password.len;

        if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_ready,
                                       (void *) "AUTH", 2, argv, argvlen)
            != NGX_OK)
        {
            ngx_http_llm_redis_close(rs, 1);
            return;
        }
    }

    argv[0] = "SELECT";
    argvlen[0] = 6;
    argv[1] = (const char *) db;
    argvlen[1] = ngx_sprintf(db, "%ui", conf->db) - db;

    if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_ready, NULL, 2,
                                   argv, argvlen)
        != NGX_OK)
    {
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    ngx_add_timer(rs->peer.connection->write, conf->connect_timeout);

    if (rc == NGX_OK) {
        ngx_http_llm_redis_write(rs->peer.connection->write);
    }
}


static void
ngx_http_llm_redis_ready(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    if (reply->type == REDIS_REPLY_ERROR) {
        if (!rs->auth_failed) {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "llm_redis %V: %s refused: %*s",
                          &rs->conf->url.url,
                          data ? (char *) data : "SELECT",
                          (size_t) ngx_min(reply->len, 200), reply->str);
        }

        rs->auth_failed = 1;
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    if (data) {
        /* AUTH went well; SELECT's reply is next */
        return;
    }

    rs->state = NGX_HTTP_LLM_REDIS_READY;
    rs->backoff = 0;
    rs->auth_failed = 0;
    rs->conf->zone->sh->redis_up = 1;

    if (rs->down) {
        ngx_log_error(NGX_LOG_NOTICE, rs->log, 0,
                      "llm_redis %V is back, syncing llm_zone \"%V\"",
                      &rs->conf->url.url, &rs->conf->zone->name);
        rs->down = 0;
    }

    ngx_http_llm_redis_sync(rs);
}


/* the connection is gone (error) or closed on purpose */

static void
ngx_http_llm_redis_close(ngx_http_llm_redis_t *rs, ngx_uint_t error)
{
    if (rs->peer.connection) {
        ngx_close_connection(rs->peer.connection);
        rs->peer.connection = NULL;
    }

    if (rs->cycle_pool) {
        ngx_destroy_pool(rs->cycle_pool);
        rs->cycle_pool = NULL;
    }

    if (rs->reader) {
        redisReaderFree(rs->reader);
        rs->reader = NULL;
    }

    rs->state = NGX_HTTP_LLM_REDIS_IDLE;
    rs->syncing = 0;
    rs->out_len = 0;
    rs->cb_n = 0;

    /* a worker that exits on reload leaves the flag to the new owner */

    if (error && rs->conf->zone->sh) {
        rs->conf->zone->sh->redis_up = 0;
    }

    if (!error) {
        if (rs->timer.timer_set) {
            ngx_del_timer(&rs->timer);
        }

        return;
    }

    if (!rs->down && !rs->auth_failed) {
        ngx_log_error(NGX_LOG_WARN, rs->log, 0,
                      "llm_redis %V is unreachable, llm_zone \"%V\" goes on "
                      "alone and syncs when it is back",
                      &rs->conf->url.url, &rs->conf->zone->name);
    }

    rs->down = 1;

    /* reconnect with a backoff: 100 ms, doubled up to 10 s */

    rs->backoff = rs->backoff ? ngx_min(rs->backoff * 2,
                                        NGX_HTTP_LLM_REDIS_BACKOFF_MAX)
                              : 100;

    if (rs->timer.timer_set) {
        ngx_del_timer(&rs->timer);
    }

    if (!ngx_exiting && !ngx_quit && !ngx_terminate) {
        ngx_add_timer(&rs->timer, rs->backoff);
    }
}


static ngx_int_t
ngx_http_llm_redis_command(ngx_http_llm_redis_t *rs,
    ngx_http_llm_redis_pt handler, void *data, int argc, const char **argv,
    const size_t *argvlen)
{
    int                       len;
    char                     *cmd;
    u_char                   *nb;
    size_t                    size;
    ngx_uint_t                n;
    ngx_http_llm_redis_cb_t  *cbs;

    len = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (len < 0) {
        return NGX_ERROR;
    }

    if (rs->out_size - rs->out_len < (size_t) len) {
        size = ngx_max(rs->out_size * 2, rs->out_len + len);
        size = ngx_max(size, NGX_HTTP_LLM_REDIS_BUF);

        nb = ngx_alloc(size, rs->log);
        if (nb == NULL) {
            redisFreeCommand(cmd);
            return NGX_ERROR;
        }

        if (rs->out_len) {
            ngx_memcpy(nb, rs->out, rs->out_len);
        }

        ngx_free(rs->out);
        rs->out = nb;
        rs->out_size = size;
    }

    ngx_memcpy(rs->out + rs->out_len, cmd, len);
    rs->out_len += len;

    redisFreeCommand(cmd);

    if (rs->cb_n == rs->cb_size) {
        n = rs->cb_size ? rs->cb_size * 2 : 64;

        cbs = ngx_alloc(n * sizeof(ngx_http_llm_redis_cb_t), rs->log);
        if (cbs == NULL) {
            return NGX_ERROR;
        }

        for (size = 0; size < rs->cb_n; size++) {
            cbs[size] = rs->cbs[(rs->cb_head + size) % rs->cb_size];
        }

        ngx_free(rs->cbs);
        rs->cbs = cbs;
        rs->cb_size = n;
        rs->cb_head = 0;
    }

    rs->cbs[(rs->cb_head + rs->cb_n) % rs->cb_size].handler = handler;
    rs->cbs[(rs->cb_head + rs->cb_n) % rs->cb_size].data = data;
    rs->cb_n++;

    if (rs->peer.connection && rs->state != NGX_HTTP_LLM_REDIS_IDLE) {
        ngx_post_event(rs->peer.connection->write, &ngx_posted_events);
    }

    return NGX_OK;
}


static void
ngx_http_llm_redis_write(ngx_event_t *wev)
{
    ssize_t                n;
    ngx_connection_t      *c;
    ngx_http_llm_redis_t  *rs;

    c = wev->data;
    rs = c->data;

    if (wev->timedout) {
        ngx_log_error(NGX_LOG_ERR, rs->log, NGX_ETIMEDOUT,
                      "llm_redis %V: %s timed out", &rs->conf->url.url,
                      rs->state == NGX_HTTP_LLM_REDIS_CONNECTING
                      ? "connect" : "write");
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    if (wev->timer_set) {
        ngx_del_timer(wev);
    }

    while (rs->out_len) {
        n = c->send(c, rs->out, rs->out_len);

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == NGX_ERROR) {
            ngx_http_llm_redis_close(rs, 1);
            return;
        }

        ngx_memmove(rs->out, rs->out + n, rs->out_len - n);
        rs->out_len -= n;
    }

    if (ngx_handle_write_event(wev, 0) != NGX_OK) {
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    if (rs->out_len) {
        ngx_add_timer(wev, rs->conf->timeout);
    }

    /* replies are awaited within timeout */

    if (rs->cb_n && !c->read->timer_set) {
        ngx_add_timer(c->read, rs->conf->timeout);
    }
}


static void
ngx_http_llm_redis_read(ngx_event_t *rev)
{
    u_char                    buf[NGX_HTTP_LLM_REDIS_BUF];
    void                     *reply;
    ssize_t                   n;
    ngx_connection_t         *c;
    ngx_http_llm_redis_t     *rs;
    ngx_http_llm_redis_cb_t   cb;

    c = rev->data;
    rs = c->data;

    if (rev->timedout) {
        ngx_log_error(NGX_LOG_ERR, rs->log, NGX_ETIMEDOUT,
                      "llm_redis %V: no reply in time", &rs->conf->url.url);
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    for ( ;; ) {
        n = c->recv(c, buf, sizeof(buf));

        if (n == NGX_AGAIN) {
            break;
        }

        if (n == 0 || n == NGX_ERROR) {
            ngx_http_llm_redis_close(rs, 1);
            return;
        }

        if (redisReaderFeed(rs->reader, (char *) buf, n) != REDIS_OK) {
            ngx_http_llm_redis_close(rs, 1);
            return;
        }

        for ( ;; ) {
            reply = NULL;

            if (redisReaderGetReply(rs->reader, &reply) != REDIS_OK) {
                ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                              "llm_redis %V: invalid reply",
                              &rs->conf->url.url);
                ngx_http_llm_redis_close(rs, 1);
                return;
            }

            if (reply == NULL) {
                break;
            }

            if (rs->cb_n == 0) {
                freeReplyObject(reply);
                ngx_http_llm_redis_close(rs, 1);
                return;
            }

            cb = rs->cbs[rs->cb_head];
            rs->cb_head = (rs->cb_head + 1) % rs->cb_size;
            rs->cb_n--;

            if (cb.handler) {
                cb.handler(rs, reply, cb.data);
            }

            freeReplyObject(reply);

            if (rs->peer.connection == NULL) {
                /* the handler closed it */
                return;
            }
        }
    }

    if (rev->timer_set) {
        ngx_del_timer(rev);
    }

    if (rs->cb_n) {
        ngx_add_timer(rev, rs->conf->timeout);
    }

    if (ngx_handle_read_event(rev, 0) != NGX_OK) {
        ngx_http_llm_redis_close(rs, 1);
    }
}


/* a sync cycle: budgets and cache; the last reply ends it */

static void
ngx_http_llm_redis_sync(ngx_http_llm_redis_t *rs)
{
    const char  *argv[1];
    size_t       argvlen[1];

    rs->cycle_pool = ngx_create_pool(4096, rs->log);
    if (rs->cycle_pool == NULL) {
        return;
    }

    rs->syncing = 1;
    rs->last_sync = ngx_current_msec;
    rs->conf->zone->sh->lease_wanted = 0;

    if (ngx_http_llm_redis_budgets(rs) != NGX_OK
        || ngx_http_llm_redis_publish(rs) != NGX_OK)
    {
        ngx_http_llm_redis_close(rs, 1);
        return;
    }

    argv[0] = "PING";
    argvlen[0] = 4;

    if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_cycle_done, NULL,
                                   1, argv, argvlen)
        != NGX_OK)
    {
        ngx_http_llm_redis_close(rs, 1);
    }
}


static void
ngx_http_llm_redis_cycle_done(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    if (rs->cb_n) {
        /* replies of the pull came after: the cycle ends with them */
        return;
    }

    if (rs->cycle_pool) {
        ngx_destroy_pool(rs->cycle_pool);
        rs->cycle_pool = NULL;
    }

    rs->syncing = 0;
    rs->conf->zone->sh->redis_synced = ngx_time();
}


/* ---- budgets ------------------------------------------------------ */

typedef struct {
    ngx_http_llm_redis_t       *rs;
    ngx_int_t                   rc;
} ngx_http_llm_redis_walk_t;


typedef struct {
    ngx_str_t                   key;           /* the zone's */
    uint64_t                    seq;
    uint32_t                    period;
} ngx_http_llm_redis_budget_t;


static ngx_int_t
ngx_http_llm_redis_budgets(ngx_http_llm_redis_t *rs)
{
    ngx_http_llm_redis_walk_t  w;

    w.rs = rs;
    w.rc = NGX_OK;

    ngx_http_llm_zone_walk(rs->conf->zone, NGX_HTTP_LLM_KIND_BUDGET,
                           ngx_http_llm_redis_budget_walk, &w);

    if (w.rc != NGX_OK) {
        return w.rc;
    }

    ngx_http_llm_zone_walk(rs->conf->zone, NGX_HTTP_LLM_KIND_LIMIT,
                           ngx_http_llm_redis_limit_walk, &w);

    return w.rc;
}


/* ---- limits -------------------------------------------------------- */

typedef struct {
    ngx_str_t                   key;           /* the zone's */
    uint64_t                    own_requests;  /* pushed, in the window */
    uint64_t                    own_tokens;
} ngx_http_llm_redis_limit_t;


/*
 * Under the zone's lock (a walk): what each second of the window counted
 * here since the last push; the reply says what all nodes counted.
 */

static ngx_int_t
ngx_http_llm_redis_limit_walk(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_redis_walk_t *w = data;

    u_char                      *p, *buf;
    int64_t                      dr, dt;
    uint64_t                     now, sec;
    ngx_uint_t                   i, n, argc;
    const char                 **argv;
    size_t                      *argvlen;
    ngx_http_llm_redis_t        *rs;
    ngx_http_llm_limit_node_t   *node;
    ngx_http_llm_redis_limit_t  *l;

    rs = w->rs;
    node = e->value;

    if (e->size != sizeof(ngx_http_llm_limit_node_t)) {
        return NGX_OK;
    }

    now = (uint64_t) ngx_time() + rs->time_offset;

    ngx_http_llm_limit_advance(node, now);

    l = ngx_pcalloc(rs->cycle_pool, sizeof(ngx_http_llm_redis_limit_t));
    argv = ngx_palloc(rs->cycle_pool, (5 + 3 * NGX_HTTP_LLM_LIMIT_WINDOW)
                                      * sizeof(char *));
    argvlen = ngx_palloc(rs->cycle_pool, (5 + 3 * NGX_HTTP_LLM_LIMIT_WINDOW)
                                         * sizeof(size_t));
    buf = ngx_pnalloc(rs->cycle_pool, rs->conf->prefix.len + 6 + e->key.len
                                      + (1 + 3 * NGX_HTTP_LLM_LIMIT_WINDOW)
                                        * NGX_INT64_LEN);
    if (l == NULL || argv == NULL || argvlen == NULL || buf == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    l->key.data = ngx_pstrdup(rs->cycle_pool, &e->key);
    if (l->key.data == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    l->key.len = e->key.len;

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_http_llm_redis_limit_lua;
    argvlen[1] = sizeof(ngx_http_llm_redis_limit_lua) - 1;
    argv[2] = "1";
    argvlen[2] = 1;

    p = buf;
    argv[3] = (const char *) p;
    p = ngx_cpymem(p, rs->conf->prefix.data, rs->conf->prefix.len);
    p = ngx_cpymem(p, "limit:", 6);
    p = ngx_cpymem(p, e->key.data, e->key.len);
    argvlen[3] = p - (u_char *) argv[3];

    argv[4] = (const char *) p;
    p = ngx_sprintf(p, "%uL", now - (NGX_HTTP_LLM_LIMIT_WINDOW - 1));
    argvlen[4] = p - (u_char *) argv[4];

    argc = 5;
    n = 0;

    for (sec = now - (NGX_HTTP_LLM_LIMIT_WINDOW - 1); sec <= now; sec++) {
        i = sec % NGX_HTTP_LLM_LIMIT_SLOTS;

        dr = (int64_t) node->requests[i] - node->pushed_requests[i];
        dt = (int64_t) node->tokens[i] - node->pushed_tokens[i];

        node->pushed_requests[i] = node->requests[i];
        node->pushed_tokens[i] = node->tokens[i];

        l->own_requests += node->requests[i];
        l->own_tokens += node->tokens[i];

        if (dr == 0 && dt == 0) {
            continue;
        }

        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%uL", sec);
        argvlen[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%L", dr);
        argvlen[argc] = p - (u_char *) argv[argc];
        argc++;

        argv[argc] = (const char *) p;
        p = ngx_sprintf(p, "%L", dt);
        argvlen[argc] = p - (u_char *) argv[argc];
        argc++;

        n++;
    }

    if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_limit_done, l,
                                   (int) argc, argv, argvlen)
        != NGX_OK)
    {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    return NGX_OK;
}


static void
ngx_http_llm_redis_limit_done(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    ngx_http_llm_redis_limit_t *l = data;

    int64_t                     r, t;
    ngx_http_llm_zone_t        *zone;
    ngx_http_llm_limit_node_t  *node;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_INTEGER
        || reply->element[1]->type != REDIS_REPLY_INTEGER)
    {
        return;
    }

    r = reply->element[0]->integer - (int64_t) l->own_requests;
    t = reply->element[1]->integer - (int64_t) l->own_tokens;

    zone = rs->conf->zone;

    ngx_http_llm_zone_lock(zone);

    node = ngx_http_llm_zone_peek(zone, NGX_HTTP_LLM_KIND_LIMIT, &l->key);

    if (node) {
        node->others_requests = (uint32_t) ngx_max(r, 0);
        node->others_tokens = (uint32_t) ngx_max(t, 0);
    }

    ngx_http_llm_zone_unlock(zone);
}


/*
 * Under the zone's lock (a walk): the entry's delta is taken for the
 * push: what was spent since the last push, or the delta sent before
 * whose reply did not come, sent again with its sequence number.
 */

static ngx_int_t
ngx_http_llm_redis_budget_walk(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_redis_walk_t *w = data;

    u_char                       *p, *colon, seq[NGX_INT64_LEN],
                                 delta[NGX_INT64_LEN], limit[NGX_INT64_LEN],
                                 ttl[NGX_INT64_LEN], node_id[NGX_INT64_LEN],
                                 ret[NGX_INT64_LEN], want[NGX_INT64_LEN];
    int64_t                       target, free;
    const char                   *argv[11];
    size_t                        argvlen[11];
    ngx_uint_t                    keep;
    ngx_str_t                     rkey;
    ngx_http_llm_redis_t         *rs;
    ngx_http_llm_budget_node_t   *node;
    ngx_http_llm_redis_budget_t  *b;

    rs = w->rs;
    node = e->value;

    if (e->size != sizeof(ngx_http_llm_budget_node_t)) {
        return NGX_OK;
    }

    colon = ngx_strlchr(e->key.data, e->key.data + e->key.len, ':');
    if (colon == NULL) {
        return NGX_OK;
    }

    if (node->inflight_seq == 0 || node->inflight_done) {

        /*
         * A new message: the spend since the last one, what this node
         * holds beyond twice its target given back (and not used from
         * now on), what it lacks of its target asked for.  The target:
         * an eighth of the budget, or what waiting requests need, or
         * twice what was spent since the last message.
         */

        target = ngx_max(node->limit / 8, node->demand + node->reserved);
        target = ngx_max(target, 2 * node->pending);

        free = (node->leased ? node->lease : 0) - node->pending
               - node->reserved;

        node->inflight = node->pending;
        node->inflight_ret = (node->leased && free > 2 * target)
                             ? free - target : 0;
        node->inflight_want = (free < target) ? target - ngx_max(free, 0)
                                              : 0;
        node->inflight_seq = ++node->seq;
        node->inflight_period = node->period;
        node->inflight_done = 0;

        node->lease -= node->inflight + node->inflight_ret;
        node->pending = 0;
        node->demand = 0;
    }

    b = ngx_palloc(rs->cycle_pool, sizeof(ngx_http_llm_redis_budget_t));
    if (b == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    b->key.data = ngx_pstrdup(rs->cycle_pool, &e->key);
    if (b->key.data == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    b->key.len = e->key.len;
    b->seq = node->inflight_seq;
    b->period = node->inflight_period;

    /* <prefix>budget:<unit>:<period>:<key value> */

    rkey.len = rs->conf->prefix.len + sizeof("budget::") - 1 + NGX_INT64_LEN
               + e->key.len;
    rkey.data = ngx_pnalloc(rs->cycle_pool, rkey.len);
    if (rkey.data == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    p = ngx_cpymem(rkey.data, rs->conf->prefix.data, rs->conf->prefix.len);
    p = ngx_cpymem(p, "budget:", 7);
    p = ngx_cpymem(p, e->key.data, colon - e->key.data);
    p = ngx_sprintf(p, ":%uD", node->inflight_period);
    p = ngx_cpymem(p, colon, e->key.data + e->key.len - colon);
    rkey.len = p - rkey.data;

    /* a day, week or month and a day more; a total is kept */

    keep = (node->unit == NGX_HTTP_LLM_PERIOD_DAY) ? 2 * 86400
           : (node->unit == NGX_HTTP_LLM_PERIOD_WEEK) ? 8 * 86400
           : (node->unit == NGX_HTTP_LLM_PERIOD_MONTH) ? 32 * 86400 : 0;

    argv[0] = "EVAL";
    argvlen[0] = 4;
    argv[1] = ngx_http_llm_redis_budget_lua;
    argvlen[1] = sizeof(ngx_http_llm_redis_budget_lua) - 1;
    argv[2] = "1";
    argvlen[2] = 1;
    argv[3] = (const char *) rkey.data;
    argvlen[3] = rkey.len;
    argv[4] = (const char *) node_id;
    argvlen[4] = ngx_sprintf(node_id, "%uL", rs->conf->zone->sh->node_id)
                 - node_id;
    argv[5] = (const char *) seq;
    argvlen[5] = ngx_sprintf(seq, "%uL", node->inflight_seq) - seq;
    argv[6] = (const char *) delta;
    argvlen[6] = ngx_sprintf(delta, "%L", node->inflight) - delta;
    argv[7] = (const char *) ret;
    argvlen[7] = ngx_sprintf(ret, "%L", node->inflight_ret) - ret;
    argv[8] = (const char *) want;
    argvlen[8] = ngx_sprintf(want, "%L", node->inflight_want) - want;
    argv[9] = (const char *) limit;
    argvlen[9] = ngx_sprintf(limit, "%L", node->limit) - limit;
    argv[10] = (const char *) ttl;
    argvlen[10] = ngx_sprintf(ttl, "%ui", keep) - ttl;

    if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_budget_done, b, 11,
                                   argv, argvlen)
        != NGX_OK)
    {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    return NGX_OK;
}


/*
 * The reply to a message: the total of all nodes, and this node's lease;
 * the entry's spent is that total and what was spent since the message
 * left, its lease what Redis holds for it less that.
 */

static void
ngx_http_llm_redis_budget_done(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    ngx_http_llm_redis_budget_t *b = data;

    int64_t                      total, lease;
    ngx_http_llm_zone_t         *zone;
    ngx_http_llm_budget_node_t  *node;

    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2
        || reply->element[0]->type != REDIS_REPLY_STRING
        || reply->element[1]->type != REDIS_REPLY_STRING)
    {
        if (reply->type == REDIS_REPLY_ERROR) {
            ngx_log_error(NGX_LOG_ERR, rs->log, 0,
                          "llm_redis %V: budget sync refused: %*s",
                          &rs->conf->url.url,
                          (size_t) ngx_min(reply->len, 200), reply->str);
        }

        return;
    }

    total = ngx_atoof((u_char *) reply->element[0]->str,
                      reply->element[0]->len);
    lease = ngx_atoof((u_char *) reply->element[1]->str,
                      reply->element[1]->len);

    if (total < 0 || lease < 0) {
        return;
    }

    zone = rs->conf->zone;

    ngx_http_llm_zone_lock(zone);

    node = ngx_http_llm_zone_peek(zone, NGX_HTTP_LLM_KIND_BUDGET, &b->key);

    if (node && node->inflight_seq == b->seq && !node->inflight_done) {

        if (b->period == node->period) {
            node->spent = total + node->pending;
            node->lease = lease;
            node->leased = 1;

        } else {
            /* the period turned meanwhile: the next message asks anew */
            node->lease = 0;
            node->leased = 0;
        }

        node->inflight = 0;
        node->inflight_ret = 0;
        node->inflight_want = 0;
        node->inflight_done = 1;
    }

    ngx_http_llm_zone_unlock(zone);
}


/* ---- cache ---------------------------------------------------------- */

typedef struct {
    ngx_http_llm_redis_t       *rs;
    ngx_int_t                   rc;
    uint64_t                    now;
    uint64_t                    generation;
} ngx_http_llm_redis_pub_t;


static ngx_int_t
ngx_http_llm_redis_publish(ngx_http_llm_redis_t *rs)
{
    u_char                    *p, *minv, *maxv;
    const char                *argv[4];
    size_t                     argvlen[4];
    ngx_http_llm_redis_pub_t   w;

    w.rs = rs;
    w.rc = NGX_OK;
    w.now = ngx_http_llm_now();
    w.generation = ngx_http_llm_zone_generation(rs->conf->zone);

    if (w.generation < rs->published) {
        /* the zone started clean */
        rs->published = 0;
    }

    ngx_http_llm_zone_walk(rs->conf->zone, NGX_HTTP_LLM_KIND_CACHE,
                           ngx_http_llm_redis_publish_walk, &w);

    if (w.rc != NGX_OK) {
        return w.rc;
    }

    rs->published = w.generation;

    /* what the others published since the last look (the log by time) */

    p = ngx_pnalloc(rs->cycle_pool, rs->conf->prefix.len + 16
                                    + 2 * NGX_INT64_LEN);
    if (p == NULL) {
        return NGX_ERROR;
    }

    argv[0] = "ZRANGEBYSCORE";
    argvlen[0] = sizeof("ZRANGEBYSCORE") - 1;
    argv[1] = (const char *) p;
    p = ngx_sprintf(p, "%Vcache:log", &rs->conf->prefix);
    argvlen[1] = p - (u_char *) argv[1];

    minv = p;
    /*
     * The log is scored by each publisher's clock: what came in late
     * with an earlier score is met by looking 5 s back (entries held
     * already are not fetched again).
     */

    p = ngx_sprintf(p, "(%uL", rs->pulled > 5000 ? rs->pulled - 5000 : 0);
    argv[2] = (const char *) minv;
    argvlen[2] = p - minv;

    maxv = p;
    p = ngx_sprintf(p, "+inf");
    argv[3] = (const char *) maxv;
    argvlen[3] = p - maxv;

    rs->pull_next = w.now;

    return ngx_http_llm_redis_command(rs, ngx_http_llm_redis_pulled, NULL,
                                      4, argv, argvlen);
}


/* under the zone's lock: an entry stored here since the last cycle */

static ngx_int_t
ngx_http_llm_redis_publish_walk(ngx_http_llm_zone_entry_t *e, void *data)
{
    ngx_http_llm_redis_pub_t *w = data;

    u_char                *p, *rkey, *value, ms[NGX_INT64_LEN];
    uint64_t               ttl;
    const char            *argv[5];
    size_t                 argvlen[5], klen;
    ngx_http_llm_redis_t  *rs;

    rs = w->rs;

    if (e->updated <= rs->published || e->expire <= w->now) {
        /* the walk is by recent use, not by change: go on */
        return NGX_OK;
    }

    ttl = e->expire - w->now;

    klen = rs->conf->prefix.len + sizeof("cache:") - 1 + 2 * e->key.len;

    rkey = ngx_pnalloc(rs->cycle_pool, klen);
    value = ngx_pnalloc(rs->cycle_pool, 8 + e->size);

    if (rkey == NULL || value == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    p = ngx_cpymem(rkey, rs->conf->prefix.data, rs->conf->prefix.len);
    p = ngx_cpymem(p, "cache:", 6);
    (void) ngx_hex_dump(p, e->key.data, e->key.len);

    /* the value: its expiry (ms, wall clock), then the entry's value */

    ngx_memcpy(value, &e->expire, 8);
    ngx_memcpy(value + 8, e->value, e->size);

    argv[0] = "SET";
    argvlen[0] = 3;
    argv[1] = (const char *) rkey;
    argvlen[1] = klen;
    argv[2] = (const char *) value;
    argvlen[2] = 8 + e->size;
    argv[3] = "PX";
    argvlen[3] = 2;
    argv[4] = (const char *) ms;
    argvlen[4] = ngx_sprintf(ms, "%uL", ttl) - ms;

    if (ngx_http_llm_redis_command(rs, NULL, NULL, 5, argv, argvlen)
        != NGX_OK)
    {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    p = ngx_pnalloc(rs->cycle_pool, rs->conf->prefix.len + 16);
    if (p == NULL) {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    argv[0] = "ZADD";
    argvlen[0] = 4;
    argv[1] = (const char *) p;
    argvlen[1] = ngx_sprintf(p, "%Vcache:log", &rs->conf->prefix) - p;
    argv[2] = (const char *) ms;
    argvlen[2] = ngx_sprintf(ms, "%uL", w->now) - ms;
    argv[3] = (const char *) rkey + rs->conf->prefix.len + 6;
    argvlen[3] = 2 * e->key.len;

    if (ngx_http_llm_redis_command(rs, NULL, NULL, 4, argv, argvlen)
        != NGX_OK)
    {
        w->rc = NGX_ERROR;
        return NGX_DONE;
    }

    return NGX_OK;
}


/* the keys the others published: each fetched unless known here */

static void
ngx_http_llm_redis_pulled(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    u_char               *p, *key;
    size_t                i, j, len;
    uint64_t              old;
    const char           *argv[4];
    size_t                argvlen[4];
    ngx_str_t             k, *kp;
    ngx_http_llm_zone_t  *zone;

    if (reply->type != REDIS_REPLY_ARRAY) {
        return;
    }

    zone = rs->conf->zone;
    rs->pulled = rs->pull_next ? rs->pull_next - 1 : rs->pulled;

    for (i = 0; i < reply->elements; i++) {
        if (reply->element[i]->type != REDIS_REPLY_STRING
            || reply->element[i]->len % 2
            || reply->element[i]->len > 2 * NGX_HTTP_LLM_ZONE_KEY_MAX)
        {
            continue;
        }

        len = reply->element[i]->len / 2;

        key = ngx_pnalloc(rs->cycle_pool, len + rs->conf->prefix.len + 6
                                          + reply->element[i]->len);
        if (key == NULL) {
            return;
        }

        if (ngx_http_llm_redis_unhex(key, (u_char *) reply->element[i]->str,
                                     reply->element[i]->len)
            != NGX_OK)
        {
            continue;
        }

        k.data = key;
        k.len = len;

        ngx_http_llm_zone_lock(zone);
        p = ngx_http_llm_zone_peek(zone, NGX_HTTP_LLM_KIND_CACHE, &k);
        ngx_http_llm_zone_unlock(zone);

        if (p) {
            /* known: stored here, or fetched before */
            continue;
        }

        p = key + len;
        argv[1] = (const char *) p;
        p = ngx_cpymem(p, rs->conf->prefix.data, rs->conf->prefix.len);
        p = ngx_cpymem(p, "cache:", 6);

        for (j = 0; j < reply->element[i]->len; j++) {
            *p++ = reply->element[i]->str[j];
        }

        argv[0] = "GET";
        argvlen[0] = 3;
        argvlen[1] = p - (u_char *) argv[1];

        kp = ngx_palloc(rs->cycle_pool, sizeof(ngx_str_t));
        if (kp == NULL) {
            return;
        }

        *kp = k;

        if (ngx_http_llm_redis_command(rs, ngx_http_llm_redis_fetched,
                                       kp, 2, argv, argvlen)
            != NGX_OK)
        {
            return;
        }
    }

    /* the log forgets what is a day old */

    p = ngx_pnalloc(rs->cycle_pool, rs->conf->prefix.len + 16
                                    + NGX_INT64_LEN);
    if (p == NULL) {
        return;
    }

    old = ngx_http_llm_now() - NGX_HTTP_LLM_REDIS_LOG_AGE;

    argv[0] = "ZREMRANGEBYSCORE";
    argvlen[0] = sizeof("ZREMRANGEBYSCORE") - 1;
    argv[1] = (const char *) p;
    p = ngx_sprintf(p, "%Vcache:log", &rs->conf->prefix);
    argvlen[1] = p - (u_char *) argv[1];
    argv[2] = "-inf";
    argvlen[2] = 4;
    argv[3] = (const char *) p;
    argvlen[3] = ngx_sprintf(p, "%uL", old) - p;

    (void) ngx_http_llm_redis_command(rs, ngx_http_llm_redis_cycle_done,
                                      NULL, 4, argv, argvlen);
}


/* an entry another node published: into the zone, and its index */

static void
ngx_http_llm_redis_fetched(ngx_http_llm_redis_t *rs, redisReply *reply,
    void *data)
{
    ngx_str_t *key = data;

    u_char               *v;
    size_t                size;
    uint64_t              expire;

    if (reply->type != REDIS_REPLY_STRING || reply->len <= 8) {
        return;
    }

    ngx_memcpy(&expire, reply->str, 8);

    if (expire <= ngx_http_llm_now()) {
        return;
    }

    size = reply->len - 8;
    v = (u_char *) reply->str + 8;

    ngx_http_llm_cache_insert(rs->conf->zone, key, v, size, expire);
}


static ngx_int_t
ngx_http_llm_redis_unhex(u_char *dst, u_char *src, size_t len)
{
    u_char      c;
    ngx_uint_t  i, n;

    for (i = 0; i < len; i++) {
        c = src[i];

        if (c >= '0' && c <= '9') {
            n = c - '0';

        } else if (c >= 'a' && c <= 'f') {
            n = c - 'a' + 10;

        } else {
            return NGX_ERROR;
        }

        if (i % 2) {
            dst[i / 2] |= (u_char) n;

        } else {
            dst[i / 2] = (u_char) (n << 4);
        }
    }

    return NGX_OK;
}
