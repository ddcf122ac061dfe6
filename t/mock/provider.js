#!/usr/bin/env node
/*
 * Mock LLM provider for the test suite.  No dependencies (Node >= 18).
 *
 *   node t/mock/provider.js PORT        (PORT 0: pick one)
 *
 * Prints "listening PORT" on stdout when ready.
 *
 * Speaks the wire formats of:
 *   OpenAI     POST /v1/chat/completions, POST /v1/embeddings, GET /v1/models
 *   Azure      POST /openai/deployments/D/chat/completions?api-version=V
 *              POST /openai/deployments/D/embeddings?api-version=V
 *   Anthropic  POST /v1/messages (SSE with "event:" names)
 *   Gemini     POST /v1beta/models/M:generateContent,
 *              :streamGenerateContent?alt=sse, :embedContent,
 *              :batchEmbedContents
 *
 * Answers: "echo: <last user text>".  With tools, when the last turn is not
 * a tool result: a call of the first tool with arguments {"q": <last user
 * text>}.  Streams send one word per content event.  Usage counts words:
 * completion / output tokens = the words of the answer text.
 *
 * Output limit: OpenAI / Azure max_completion_tokens (else max_tokens),
 * Anthropic max_tokens, Gemini generationConfig.maxOutputTokens (an
 * integer >= 1).  A text answer with more words than the limit is cut to
 * its first `limit` words (streamed and whole alike), reports `limit`
 * completion / output tokens and finishes with "length" (OpenAI
 * finish_reason), "max_tokens" (Anthropic stop_reason) or "MAX_TOKENS"
 * (Gemini finishReason).  Tool-call answers are not limited.
 *
 * Faults, chosen by the model name (body "model", Azure deployment, Gemini
 * model in the path) containing one of:
 *   fault-500 fault-503 fault-429 fault-529 fault-401 fault-garbage
 *   fault-html fault-truncated fault-hang fault-reset fault-drop fault-drip
 *   fault-slow
 * and, for pause requests and timing:
 *   fault-waitms     503 with retry-after-ms: 1500 only
 *   fault-ratelimit  429 with x-ratelimit-remaining-requests: 0 and
 *                    x-ratelimit-reset-requests: 2s, no retry-after
 *   fault-longpause  429 with retry-after: 30
 *   fault-pausedate  503 with retry-after as an HTTP date 5s ahead
 *   fault-slowfail   503 (no pause request) after 1.2 seconds
 *   fault-echokey    401 whose message quotes the credential it was sent
 *   fault-huge       (OpenAI, stream) 50 MB of content events, written as
 *                    fast as the reader takes them
 *   fault-cut        (streams, all formats) the start events (OpenAI: Azure's
 *                    prompt filter results and the role chunk; Anthropic:
 *                    message_start, content_block_start, ping; Gemini:
 *                    none) and the first 5 content events (text or tool
 *                    argument deltas), then the connection is destroyed:
 *                    no finish reason, no usage, no [DONE] / message_stop
 *                    (Gemini's chunks then carry neither finishReason nor
 *                    usageMetadata).  Unlike fault-drop (2 events, whatever
 *                    they are), the answer is cut in the middle of its
 *                    content.  Whole (non-stream) answers are not affected.
 *   fault-ignoremax  the output limit is ignored (a provider that does not
 *                    honour max_tokens); it combines with another fault in
 *                    the same name: "m-fault-ignoremax-fault-cut"
 * (anything may follow: "fault-500-b" is fault-500 too)
 *
 * Markers in the request body, replaced in every answer and event:
 *   __echo_key__     by the credential the request carried
 *   __bad_utf8__     by the bytes ff fe (invalid UTF-8)
 * and, in the last user text:
 *   __words_N__      (N decimal, at most 100000; more counts as 100000) the
 *                    answer text is "echo:" and N words " w1 w2 ... wN"
 *                    instead of the echo: N+1 words, N+1 completion tokens
 *                    (before the output limit)
 *
 * Control:
 *   GET  /__requests   recorded requests [{method,url,headers,body,json}]
 *   POST /__reset      forget them
 */

'use strict';

const http = require('http');
const crypto = require('crypto');

const port = parseInt(process.argv[2] || '0', 10);

let requests = [];
const hanging = new Set();
let counter = 0;

function now() {
    return Math.floor(Date.now() / 1000);
}

function rid(prefix, n) {
    counter++;
    return prefix + crypto.createHash('sha1').update(String(counter) + ':'
        + Date.now()).digest('hex').slice(0, n || 24);
}

function words(s) {
    s = String(s || '').trim();
    return s === '' ? 0 : s.split(/\s+/).length;
}

/* a deterministic unit vector for a text */
/* a vector of the text's words: case and punctuation do not count, so
 * that "Tell me about refunds!" and "tell me about refunds" are the same */
function embed(text, dims) {
    const v = [];
    let norm = 0;
    dims = dims || 16;
    text = String(text).toLowerCase().replace(/[^a-z0-9\s]/g, '')
        .replace(/\s+/g, ' ').trim();
    for (let i = 0; i < dims; i++) {
        const h = crypto.createHash('md5').update(i + ':' + text).digest();
        const x = (h.readUInt32LE(0) / 0xffffffff) * 2 - 1;
        v.push(x);
        norm += x * x;
    }
    norm = Math.sqrt(norm) || 1;
    return v.map((x) => Math.round((x / norm) * 1e6) / 1e6);
}

function b64floats(v) {
    const buf = Buffer.alloc(v.length * 4);
    v.forEach((x, i) => buf.writeFloatLE(x, i * 4));
    return buf.toString('base64');
}

/* split a text into stream pieces: "echo: hi there" -> "echo:", " hi", ... */
function pieces(text) {
    const out = text.match(/\s*\S+/g) || [''];
    return out;
}

/* at most this many words for __words_N__ */
const WORDS_MAX = 100000;

/*
 * The answer text for the last user text: "echo: <user>", or with the
 * __words_N__ marker "echo: w1 w2 ... wN".
 */
function answerText(user) {
    const m = /__words_(\d+)__/.exec(user);
    if (!m) {
        return 'echo: ' + user;
    }
    const n = Math.min(parseInt(m[1], 10), WORDS_MAX);
    const out = ['echo:'];
    for (let i = 1; i <= n; i++) {
        out.push(' w' + i);
    }
    return out.join('');
}

/*
 * A text answer under the output limit (ignored unless an integer >= 1):
 * { text, tokens, cut }.  A cut text is its first `limit` pieces, so that
 * the whole answer and the stream carry the same words.
 */
function limitText(text, limit) {
    const ps = pieces(text);
    if (!Number.isInteger(limit) || limit < 1 || ps.length <= limit) {
        return { text, tokens: words(text), cut: false };
    }
    return { text: ps.slice(0, limit).join(''), tokens: limit, cut: true };
}

/* the output limit the request asks for, or null */
function outputLimit(model, limit) {
    if (/fault-ignoremax/.test(String(model || ''))) {
        return null;
    }
    return limit === undefined ? null : limit;
}

/*
 * The cut fault: the events before the first content event (head of them)
 * and the first 5 of the content events that follow (content of them).
 */
function cutEvents(events, head, content) {
    return events.slice(0, head + Math.min(5, content));
}

function split3(s) {
    if (s.length < 3) {
        return [s];
    }
    const a = Math.floor(s.length / 3);
    return [s.slice(0, a), s.slice(a, 2 * a), s.slice(2 * a)];
}


/* ---------------------------------------------------------------- output */

/*
 * An output sink honouring the drip fault: everything written is queued
 * and, when dripping, sent one byte every 2 ms.
 */
function sink(res, drip) {
    const q = [];
    let busy = false;
    let ending = false;
    let ended = false;

    function pump() {
        if (busy || ended) {
            return;
        }
        if (q.length === 0) {
            if (ending) {
                ended = true;
                res.end();
            }
            return;
        }
        busy = true;
        const buf = q[0];
        const b = buf.subarray(0, 1);
        if (buf.length > 1) {
            q[0] = buf.subarray(1);
        } else {
            q.shift();
        }
        if (!res.destroyed) {
            res.write(b);
        }
        setTimeout(() => { busy = false; pump(); }, 2);
    }

    return {
        write(s) {
            if (drip) {
                q.push(Buffer.from(s));
                pump();
            } else if (!res.destroyed) {
                res.write(s);
            }
        },
        end() {
            if (drip) {
                ending = true;
                pump();
            } else {
                res.end();
            }
        },
    };
}

/*
 * The markers of the request being answered (set by handle(), which
 * answers synchronously except for the slow fault).
 */
let markers = null;

function credential(req) {
    const h = req.headers;
    return h.authorization || h['x-api-key'] || h['api-key']
        || h['x-goog-api-key'] || '';
}

function setMarkers(req, text) {
    markers = null;
    if (text.includes('__echo_key__') || text.includes('__bad_utf8__')) {
        markers = { key: credential(req) };
    }
}

/* a serialized answer or event with the markers replaced: a Buffer */
function marked(s) {
    if (!markers) {
        return s;
    }
    const parts = s.split('__echo_key__').join(markers.key)
        .split('__bad_utf8__').map((x) => Buffer.from(x));
    const out = [];
    parts.forEach((b, i) => {
        if (i) {
            out.push(Buffer.from([0xff, 0xfe]));
        }
        out.push(b);
    });
    return Buffer.concat(out);
}

function sendJSON(res, status, obj, headers, fault) {
    const body = marked(JSON.stringify(obj));
    const h = Object.assign({
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(body),
    }, headers || {});
    res.writeHead(status, h);
    if (fault === 'drip') {
        const s = sink(res, true);
        s.write(body);
        s.end();
    } else {
        res.end(body);
    }
}

/*
 * A stream: events is a list of strings already framed ("data: ...\n\n").
 * The drop fault sends two of them and destroys the connection.
 */
function sendStream(res, events, fault) {
    res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
    });
    if (fault === 'drop') {
        res.write(events[0] || '');
        res.write(events[1] || '');
        setTimeout(() => res.socket && res.socket.destroy(), 50);
        return;
    }
    if (fault === 'cut') {
        /* the events were already cut (cutEvents): all of them, then the
         * connection is destroyed without finishing the stream */
        for (const e of events) {
            res.write(e);
        }
        setTimeout(() => res.socket && res.socket.destroy(), 50);
        return;
    }
    const s = sink(res, fault === 'drip');
    for (const e of events) {
        s.write(e);
    }
    s.end();
}

function sse(data, event) {
    return marked((event ? 'event: ' + event + '\n' : '') + 'data: '
        + (typeof data === 'string' ? data : JSON.stringify(data)) + '\n\n');
}


/* ----------------------------------------------------------- error shapes */

const openaiErrors = {
    400: ['invalid_request_error', null],
    401: ['invalid_request_error', 'invalid_api_key'],
    404: ['invalid_request_error', 'model_not_found'],
    429: ['requests', 'rate_limit_exceeded'],
    500: ['server_error', null],
    503: ['service_unavailable', null],
    529: ['server_error', null],
};

function errorBody(format, status, message, type, code) {
    if (format === 'anthropic') {
        const atype = type || {
            400: 'invalid_request_error', 401: 'authentication_error',
            403: 'permission_error', 404: 'not_found_error',
            413: 'request_too_large', 429: 'rate_limit_error',
            500: 'api_error', 503: 'api_error', 529: 'overloaded_error',
        }[status] || 'api_error';
        return { type: 'error', error: { type: atype, message } };
    }
    if (format === 'gemini') {
        const gstatus = type || {
            400: 'INVALID_ARGUMENT', 401: 'UNAUTHENTICATED',
            403: 'PERMISSION_DENIED', 404: 'NOT_FOUND',
            429: 'RESOURCE_EXHAUSTED', 500: 'INTERNAL', 503: 'UNAVAILABLE',
            529: 'UNAVAILABLE',
        }[status] || 'UNKNOWN';
        return { error: { code: status, message, status: gstatus } };
    }
    const d = openaiErrors[status] || ['api_error', null];
    return {
        error: {
            message, type: type || d[0], param: null,
            code: code === undefined ? d[1] : code,
        },
    };
}

/*
 * Faults decided before any answer is built.  Returns true if the request
 * was handled.
 */
function earlyFault(format, fault, res, req) {
    switch (fault) {
    case '500':
        sendJSON(res, 500, errorBody(format, 500,
            'The server had an error while processing your request.'));
        return true;
    case '503':
        sendJSON(res, 503, errorBody(format, 503,
            'The engine is currently overloaded, please try again later.'),
            { 'retry-after': '2' });
        return true;
    case '429':
        sendJSON(res, 429, errorBody(format, 429,
            'Rate limit reached for requests. Please try again in 1s.'), {
            'retry-after': '1',
            'x-ratelimit-limit-requests': '60',
            'x-ratelimit-remaining-requests': '0',
            'x-ratelimit-reset-requests': '1s',
            'x-ratelimit-limit-tokens': '150000',
            'x-ratelimit-remaining-tokens': '149000',
            'x-ratelimit-reset-tokens': '6m0s',
        });
        return true;
    case '529':
        sendJSON(res, 529, errorBody(format, 529, 'Overloaded',
            format === 'anthropic' ? 'overloaded_error' : undefined));
        return true;
    case '401':
        sendJSON(res, 401, errorBody(format, 401,
            'Incorrect API key provided: sk-mock. You can find your API key'
            + ' at https://platform.openai.com/account/api-keys.'));
        return true;
    case 'echokey':
        sendJSON(res, 401, errorBody(format, 401,
            'Incorrect API key provided: ' + credential(req) + '.'));
        return true;
    case 'garbage':
        res.writeHead(200, {
            'content-type': 'application/json', 'content-length': 10,
        });
        res.end('not json{{');
        return true;
    case 'html': {
        const page = '<!DOCTYPE html>\n<html><head><title>502 Bad Gateway'
            + '</title></head><body><h1>Bad Gateway</h1><p>The proxy'
            + ' encountered an error.</p></body></html>\n';
        res.writeHead(200, {
            'content-type': 'text/html; charset=utf-8',
            'content-length': Buffer.byteLength(page),
        });
        res.end(page);
        return true;
    }
    case 'waitms':
        /* a pause in milliseconds only */
        sendJSON(res, 503, errorBody(format, 503,
            'The engine is currently overloaded, please try again later.'),
            { 'retry-after-ms': '1500' });
        return true;
    case 'ratelimit':
        /* OpenAI's rate-limit headers without retry-after: the request
         * limit is used up (resets in 2s), the token limit is not */
        sendJSON(res, 429, errorBody(format, 429,
            'Rate limit reached for requests.'), {
            'x-ratelimit-limit-requests': '60',
            'x-ratelimit-remaining-requests': '0',
            'x-ratelimit-reset-requests': '2s',
            'x-ratelimit-limit-tokens': '150000',
            'x-ratelimit-remaining-tokens': '149000',
            'x-ratelimit-reset-tokens': '6m0s',
        });
        return true;
    case 'longpause':
        sendJSON(res, 429, errorBody(format, 429,
            'Rate limit reached for requests. Please try again in 30s.'), {
            'retry-after': '30',
            'x-ratelimit-remaining-requests': '0',
            'x-ratelimit-reset-requests': '30s',
        });
        return true;
    case 'pausedate':
        /* Retry-After as an HTTP date, 5 seconds ahead */
        sendJSON(res, 503, errorBody(format, 503,
            'The engine is currently overloaded, please try again later.'),
            { 'retry-after': new Date(Date.now() + 5000).toUTCString() });
        return true;
    case 'slowfail':
        /* 503 without a pause request, after 1.2 seconds */
        setTimeout(() => sendJSON(res, 503, errorBody(format, 503,
            'The engine is currently overloaded, please try again later.')),
        1200);
        return true;
    case 'hang':
        hanging.add(req.socket);
        req.socket.on('close', () => hanging.delete(req.socket));
        return true;
    case 'reset':
        if (typeof req.socket.resetAndDestroy === 'function') {
            req.socket.resetAndDestroy();
        } else {
            req.socket.destroy();
        }
        return true;
    default:
        return false;
    }
}

/* non-stream answer with the truncated / drop / drip / slow faults */
function answerJSON(res, obj, fault, headers) {
    if (fault === 'truncated') {
        const body = JSON.stringify(obj);
        const half = body.slice(0, Math.floor(body.length / 2));
        res.writeHead(200, {
            'content-type': 'application/json',
            'content-length': Buffer.byteLength(half),
        });
        res.end(half);
        return;
    }
    if (fault === 'drop') {
        const body = JSON.stringify(obj);
        res.writeHead(200, {
            'content-type': 'application/json', 'content-length': 1000,
        });
        res.write(body.slice(0, 20));
        setTimeout(() => res.socket && res.socket.destroy(), 50);
        return;
    }
    sendJSON(res, 200, obj, headers, fault);
}

function answerStream(res, events, fault) {
    if (fault === 'truncated') {
        /* half of the stream, then a clean end */
        const all = events.join('');
        events = [all.slice(0, Math.floor(all.length / 2))];
    }
    if (fault === 'garbage') {
        events = [sse('not json{{')];
    }
    sendStream(res, events, fault);
}


/* --------------------------------------------------------------- OpenAI */

function openaiText(content) {
    if (typeof content === 'string') {
        return content;
    }
    if (Array.isArray(content)) {
        return content.filter((p) => p && p.type === 'text')
            .map((p) => p.text).join('');
    }
    return '';
}

const openaiChatKeys = new Set(['model', 'messages', 'max_tokens',
    'max_completion_tokens', 'temperature', 'top_p', 'n', 'stop', 'stream',
    'stream_options', 'tools', 'tool_choice', 'parallel_tool_calls',
    'response_format', 'seed', 'user', 'frequency_penalty',
    'presence_penalty', 'logit_bias', 'logprobs', 'top_logprobs',
    'metadata', 'store', 'service_tier', 'reasoning_effort', 'modalities',
    'prediction', 'audio', 'functions', 'function_call', 'verbosity',
    'web_search_options', 'prompt_cache_key', 'safety_identifier']);

function validateOpenAIChat(b, azure) {
    if (!b || typeof b !== 'object' || Array.isArray(b)) {
        return 'We could not parse the JSON body of your request.';
    }
    for (const k of Object.keys(b)) {
        if (!openaiChatKeys.has(k)) {
            return 'Unrecognized request argument supplied: ' + k;
        }
    }
    if (!azure && typeof b.model !== 'string') {
        return 'you must provide a model parameter';
    }
    if (!Array.isArray(b.messages) || b.messages.length === 0) {
        return "Missing required parameter: 'messages'.";
    }
    for (let i = 0; i < b.messages.length; i++) {
        const m = b.messages[i];
        if (!m || !['system', 'developer', 'user', 'assistant', 'tool',
            'function'].includes(m.role)) {
            return "Invalid value for 'messages[" + i + "].role'.";
        }
        if (m.role === 'tool' && typeof m.tool_call_id !== 'string') {
            return "Missing parameter 'tool_call_id': messages with role"
                + " 'tool' must have a 'tool_call_id'.";
        }
    }
    if (b.stream_options !== undefined && b.stream !== true) {
        return 'The \'stream_options\' parameter is only allowed when'
            + ' \'stream\' is enabled.';
    }
    return null;
}

function openaiConversation(b) {
    const msgs = b.messages || [];
    let user = '';
    for (let i = msgs.length - 1; i >= 0; i--) {
        if (msgs[i].role === 'user') {
            user = openaiText(msgs[i].content);
            break;
        }
    }
    const last = msgs[msgs.length - 1] || {};
    const prompt = msgs.reduce((n, m) => n + words(openaiText(m.content)), 0)
        || 1;
    let tool = null;
    if (Array.isArray(b.tools) && b.tools.length > 0 && last.role !== 'tool'
        && b.tool_choice !== 'none')
    {
        const f = b.tools[0].function || {};
        tool = { name: f.name, args: JSON.stringify({ q: user }) };
    }
    return { user, text: answerText(user), prompt, tool };
}

/* 50 MB of 2 KB content events, each written when the socket takes it */
function hugeStream(res, model) {
    const id = rid('chatcmpl-', 29);
    const text = 'x'.repeat(2000);
    let left = 25000;
    res.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache',
    });
    const chunk = (delta, finish) => sse({ id, object: 'chat.completion.chunk',
        created: now(), model, choices: [{ index: 0, delta,
            finish_reason: finish }] });
    res.write(chunk({ role: 'assistant', content: '' }, null));
    function pump() {
        while (left > 0) {
            left--;
            if (!res.write(chunk({ content: text }, null))) {
                res.once('drain', pump);
                return;
            }
        }
        res.write(chunk({}, 'stop'));
        res.end('data: [DONE]\n\n');
    }
    pump();
}

function openaiChat(req, res, b, model, fault, azure) {
    if (fault === 'huge' && b.stream) {
        hugeStream(res, model);
        return;
    }
    const conv = openaiConversation(b);
    const lim = limitText(conv.text, outputLimit(model,
        b.max_completion_tokens != null ? b.max_completion_tokens
            : b.max_tokens));
    const text = lim.text;
    const id = rid('chatcmpl-', 29);
    const created = now();
    const completion = conv.tool ? 12 : lim.tokens;
    const stop = lim.cut ? 'length' : 'stop';
    const usage = {
        prompt_tokens: conv.prompt,
        completion_tokens: completion,
        total_tokens: conv.prompt + completion,
        prompt_tokens_details: { cached_tokens: 0, audio_tokens: 0 },
        completion_tokens_details: {
            reasoning_tokens: 0, audio_tokens: 0,
            accepted_prediction_tokens: 0, rejected_prediction_tokens: 0,
        },
    };
    const callId = 'call_' + rid('', 24);
    const azureFilter = {
        hate: { filtered: false, severity: 'safe' },
        self_harm: { filtered: false, severity: 'safe' },
        sexual: { filtered: false, severity: 'safe' },
        violence: { filtered: false, severity: 'safe' },
    };

    if (!b.stream) {
        const message = { role: 'assistant', content: text,
            refusal: null, annotations: [] };
        let finish = stop;
        if (conv.tool) {
            message.content = null;
            message.tool_calls = [{
                id: callId, type: 'function',
                function: { name: conv.tool.name,
                    arguments: conv.tool.args },
            }];
            finish = 'tool_calls';
        }
        const out = {
            id, object: 'chat.completion', created, model,
            choices: [{ index: 0, message, logprobs: null,
                finish_reason: finish }],
            usage, system_fingerprint: 'fp_mock',
        };
        if (azure) {
            out.prompt_filter_results = [{ prompt_index: 0,
                content_filter_results: azureFilter }];
            out.choices[0].content_filter_results = azureFilter;
        }
        answerJSON(res, out, fault);
        return;
    }

    const withUsage = !!(b.stream_options && b.stream_options.include_usage);
    const events = [];
    const chunk = (delta, finish) => {
        const c = { id, object: 'chat.completion.chunk', created, model,
            system_fingerprint: 'fp_mock',
            choices: [{ index: 0, delta, logprobs: null,
                finish_reason: finish }] };
        if (withUsage) {
            c.usage = null;
        }
        events.push(sse(c));
    };

    if (azure) {
        /* Azure first sends the prompt filter results, with no choices */
        events.push(sse({ id: '', object: '', created: 0, model: '',
            choices: [], prompt_filter_results: [{ prompt_index: 0,
                content_filter_results: azureFilter }] }));
    }

    let content;
    if (conv.tool) {
        chunk({ role: 'assistant', content: null, tool_calls: [{
            index: 0, id: callId, type: 'function',
            function: { name: conv.tool.name, arguments: '' } }],
        refusal: null }, null);
        const parts = split3(conv.tool.args);
        for (const part of parts) {
            chunk({ tool_calls: [{ index: 0,
                function: { arguments: part } }] }, null);
        }
        content = parts.length;
        chunk({}, 'tool_calls');
    } else {
        chunk({ role: 'assistant', content: '', refusal: null }, null);
        const ps = pieces(text);
        for (const p of ps) {
            chunk({ content: p }, null);
        }
        content = ps.length;
        chunk({}, stop);
    }

    if (fault === 'cut') {
        /* Azure's prompt filter results and the role chunk, 5 content
         * chunks */
        answerStream(res, cutEvents(events, azure ? 2 : 1, content), fault);
        return;
    }

    if (withUsage) {
        events.push(sse({ id, object: 'chat.completion.chunk', created,
            model, system_fingerprint: 'fp_mock', choices: [], usage }));
    }
    events.push('data: [DONE]\n\n');
    answerStream(res, events, fault);
}

function openaiEmbeddings(req, res, b, model, fault) {
    if (!b || b.input === undefined) {
        sendJSON(res, 400, errorBody('openai', 400,
            "'input' is a required property"));
        return;
    }
    const inputs = Array.isArray(b.input) ? b.input : [b.input];
    if (inputs.length === 0) {
        sendJSON(res, 400, errorBody('openai', 400,
            "'$.input' is invalid."));
        return;
    }
    let tokens = 0;
    const data = inputs.map((x, i) => {
        const text = typeof x === 'string' ? x : JSON.stringify(x);
        tokens += words(text) || 1;
        const v = embed(text, b.dimensions || 16);
        return { object: 'embedding', index: i,
            embedding: b.encoding_format === 'base64' ? b64floats(v) : v };
    });
    answerJSON(res, { object: 'list', data, model,
        usage: { prompt_tokens: tokens, total_tokens: tokens } }, fault);
}

function openaiModels(req, res) {
    sendJSON(res, 200, { object: 'list', data: [
        { id: 'gpt-4o', object: 'model', created: 1715367049,
            owned_by: 'system' },
        { id: 'gpt-4o-mini', object: 'model', created: 1721172741,
            owned_by: 'system' },
        { id: 'text-embedding-3-small', object: 'model',
            created: 1705948997, owned_by: 'system' },
    ] });
}


/* ------------------------------------------------------------ Anthropic */

function anthropicValidate(req, b) {
    if (!req.headers['anthropic-version']) {
        return 'anthropic-version: header is required';
    }
    if (!b || typeof b !== 'object' || Array.isArray(b)) {
        return 'invalid JSON body';
    }
    const known = new Set(['model', 'messages', 'max_tokens', 'system',
        'temperature', 'top_p', 'top_k', 'stop_sequences', 'stream', 'tools',
        'tool_choice', 'metadata', 'thinking', 'service_tier',
        'container', 'mcp_servers']);
    for (const k of Object.keys(b)) {
        if (!known.has(k)) {
            return k + ': Extra inputs are not permitted';
        }
    }
    if (typeof b.model !== 'string') {
        return 'model: Field required';
    }
    if (!Number.isInteger(b.max_tokens) || b.max_tokens < 1) {
        return 'max_tokens: Field required';
    }
    if (b.temperature !== undefined
        && (typeof b.temperature !== 'number' || b.temperature < 0
            || b.temperature > 1))
    {
        return 'temperature: Input should be less than or equal to 1';
    }
    if (b.system !== undefined && typeof b.system !== 'string'
        && !Array.isArray(b.system))
    {
        return 'system: Input should be a valid string';
    }
    if (b.stop_sequences !== undefined && !Array.isArray(b.stop_sequences)) {
        return 'stop_sequences: Input should be a valid list';
    }
    if (!Array.isArray(b.messages) || b.messages.length === 0) {
        return 'messages: Field required';
    }
    let prevToolIds = new Set();
    for (let i = 0; i < b.messages.length; i++) {
        const m = b.messages[i];
        if (!m || (m.role !== 'user' && m.role !== 'assistant')) {
            return 'messages.' + i + '.role: Input should be \'user\' or'
                + ' \'assistant\'';
        }
        if (typeof m.content !== 'string' && !Array.isArray(m.content)) {
            return 'messages.' + i + '.content: Input should be a valid list';
        }
        if (typeof m.content === 'string' && m.content === ''
            && i !== b.messages.length - 1)
        {
            return 'messages: text content blocks must be non-empty';
        }
        const ids = new Set();
        if (Array.isArray(m.content)) {
            for (const blk of m.content) {
                if (!blk || typeof blk.type !== 'string') {
                    return 'messages.' + i + '.content: invalid block';
                }
                if (blk.type === 'tool_use') {
                    if (m.role !== 'assistant' || typeof blk.id !== 'string'
                        || typeof blk.name !== 'string'
                        || !blk.input || typeof blk.input !== 'object'
                        || Array.isArray(blk.input))
                    {
                        return 'messages.' + i + ': invalid tool_use block';
                    }
                    ids.add(blk.id);
                }
                if (blk.type === 'tool_result') {
                    if (m.role !== 'user'
                        || !prevToolIds.has(blk.tool_use_id))
                    {
                        return 'messages.' + i + ': unexpected `tool_use_id`'
                            + ' found in `tool_result` blocks: '
                            + blk.tool_use_id + '. Each `tool_result` block'
                            + ' must have a corresponding `tool_use` block in'
                            + ' the previous message.';
                    }
                }
                if (blk.type === 'text' && typeof blk.text !== 'string') {
                    return 'messages.' + i + ': text block without text';
                }
            }
        }
        prevToolIds = ids;
    }
    if (b.tools !== undefined) {
        if (!Array.isArray(b.tools)) {
            return 'tools: Input should be a valid list';
        }
        for (const t of b.tools) {
            if (!t || typeof t.name !== 'string' || !t.input_schema
                || typeof t.input_schema !== 'object')
            {
                return 'tools.0.input_schema: Field required';
            }
        }
    }
    if (b.tool_choice !== undefined
        && (typeof b.tool_choice !== 'object'
            || !['auto', 'any', 'tool', 'none'].includes(b.tool_choice.type)))
    {
        return 'tool_choice: Input tag does not match any of the expected'
            + ' tags';
    }
    return null;
}

function anthropicText(content) {
    if (typeof content === 'string') {
        return content;
    }
    return (content || []).filter((x) => x && x.type === 'text')
        .map((x) => x.text).join('');
}

function anthropicMessages(req, res, b, fault) {
    const err = anthropicValidate(req, b);
    if (err) {
        sendJSON(res, 400, errorBody('anthropic', 400, err));
        return;
    }
    const model = b.model;
    const msgs = b.messages;
    let user = '';
    for (let i = msgs.length - 1; i >= 0; i--) {
        if (msgs[i].role === 'user') {
            const t = anthropicText(msgs[i].content);
            if (t !== '') {
                user = t;
                break;
            }
        }
    }
    const last = msgs[msgs.length - 1];
    const lastIsResult = Array.isArray(last.content)
        && last.content.some((x) => x.type === 'tool_result');
    let tool = null;
    if (Array.isArray(b.tools) && b.tools.length > 0 && !lastIsResult
        && !(b.tool_choice && b.tool_choice.type === 'none'))
    {
        tool = { name: b.tools[0].name, input: { q: user } };
    }
    const lim = limitText(answerText(user), outputLimit(model,
        b.max_tokens));
    const text = lim.text;
    const input = msgs.reduce((n, m) => n + words(anthropicText(m.content)),
        words(typeof b.system === 'string' ? b.system
            : anthropicText(b.system))) || 1;
    const output = tool ? 20 : lim.tokens;
    const stop = tool ? 'tool_use' : lim.cut ? 'max_tokens' : 'end_turn';
    const id = rid('msg_01', 22);
    const toolId = 'toolu_01' + rid('', 22);
    const lead = tool ? 'I will use ' + tool.name + '.' : null;

    if (!b.stream) {
        const content = [];
        if (tool) {
            content.push({ type: 'text', text: lead });
            content.push({ type: 'tool_use', id: toolId, name: tool.name,
                input: tool.input });
        } else {
            content.push({ type: 'text', text });
        }
        answerJSON(res, {
            id, type: 'message', role: 'assistant', model, content,
            stop_reason: stop,
            stop_sequence: null,
            usage: { input_tokens: input, cache_creation_input_tokens: 0,
                cache_read_input_tokens: 0, output_tokens: output,
                service_tier: 'standard' },
        }, fault);
        return;
    }

    const ev = [];
    ev.push(sse({ type: 'message_start', message: { id, type: 'message',
        role: 'assistant', model, content: [], stop_reason: null,
        stop_sequence: null, usage: { input_tokens: input,
            cache_creation_input_tokens: 0, cache_read_input_tokens: 0,
            output_tokens: 1, service_tier: 'standard' } } },
    'message_start'));
    ev.push(sse({ type: 'content_block_start', index: 0,
        content_block: { type: 'text', text: '' } }, 'content_block_start'));
    ev.push(sse({ type: 'ping' }, 'ping'));
    const ps = pieces(tool ? lead : text);
    for (const p of ps) {
        ev.push(sse({ type: 'content_block_delta', index: 0,
            delta: { type: 'text_delta', text: p } }, 'content_block_delta'));
    }
    if (fault === 'cut') {
        /* message_start, content_block_start, ping, 5 text deltas */
        answerStream(res, cutEvents(ev, 3, ps.length), fault);
        return;
    }
    ev.push(sse({ type: 'content_block_stop', index: 0 },
        'content_block_stop'));
    if (tool) {
        ev.push(sse({ type: 'content_block_start', index: 1,
            content_block: { type: 'tool_use', id: toolId, name: tool.name,
                input: {} } }, 'content_block_start'));
        ev.push(sse({ type: 'content_block_delta', index: 1,
            delta: { type: 'input_json_delta', partial_json: '' } },
        'content_block_delta'));
        for (const part of split3(JSON.stringify(tool.input))) {
            ev.push(sse({ type: 'content_block_delta', index: 1,
                delta: { type: 'input_json_delta', partial_json: part } },
            'content_block_delta'));
        }
        ev.push(sse({ type: 'content_block_stop', index: 1 },
            'content_block_stop'));
    }
    ev.push(sse({ type: 'message_delta', delta: {
        stop_reason: stop, stop_sequence: null },
    usage: { output_tokens: output } }, 'message_delta'));
    ev.push(sse({ type: 'message_stop' }, 'message_stop'));
    answerStream(res, ev, fault);
}


/* --------------------------------------------------------------- Gemini */

function geminiValidate(b) {
    if (!b || typeof b !== 'object' || Array.isArray(b)) {
        return 'Invalid JSON payload received.';
    }
    const known = new Set(['contents', 'systemInstruction',
        'system_instruction', 'generationConfig', 'generation_config',
        'tools', 'toolConfig', 'tool_config', 'safetySettings',
        'safety_settings', 'cachedContent', 'cached_content', 'labels']);
    for (const k of Object.keys(b)) {
        if (!known.has(k)) {
            return 'Invalid JSON payload received. Unknown name "' + k
                + '": Cannot find field.';
        }
    }
    if (!Array.isArray(b.contents) || b.contents.length === 0) {
        return '* GenerateContentRequest.contents: contents is not'
            + ' specified';
    }
    for (let i = 0; i < b.contents.length; i++) {
        const c = b.contents[i];
        if (!c || (c.role !== undefined && c.role !== 'user'
            && c.role !== 'model' && c.role !== 'function'))
        {
            return 'Please use a valid role: user, model.';
        }
        if (!Array.isArray(c.parts) || c.parts.length === 0) {
            return '* GenerateContentRequest.contents[' + i + '].parts:'
                + ' contents.parts must not be empty.';
        }
        for (const p of c.parts) {
            if (!p || typeof p !== 'object') {
                return 'Invalid JSON payload received.';
            }
            if (p.functionResponse && typeof p.functionResponse.name
                !== 'string')
            {
                return '* GenerateContentRequest.contents[' + i + ']'
                    + '.parts[0].function_response.name: Name cannot be'
                    + ' empty.';
            }
            if (p.functionCall && typeof p.functionCall.name !== 'string') {
                return '* function_call.name: Name cannot be empty.';
            }
        }
    }
    const gc = b.generationConfig || b.generation_config;
    if (gc !== undefined) {
        const gk = new Set(['temperature', 'topP', 'topK', 'maxOutputTokens',
            'stopSequences', 'candidateCount', 'responseMimeType',
            'responseSchema', 'presencePenalty', 'frequencyPenalty', 'seed',
            'responseLogprobs', 'logprobs', 'thinkingConfig',
            'responseModalities', 'top_p', 'top_k', 'max_output_tokens',
            'stop_sequences', 'candidate_count', 'response_mime_type']);
        for (const k of Object.keys(gc)) {
            if (!gk.has(k)) {
                return 'Invalid JSON payload received. Unknown name "' + k
                    + '" at \'generation_config\': Cannot find field.';
            }
        }
    }
    const si = b.systemInstruction || b.system_instruction;
    if (si !== undefined && (!si || !Array.isArray(si.parts))) {
        return 'Invalid JSON payload received. Invalid systemInstruction.';
    }
    return null;
}

function geminiGenerate(req, res, b, model, fault, stream) {
    const err = geminiValidate(b);
    if (err) {
        sendJSON(res, 400, errorBody('gemini', 400, err));
        return;
    }
    const contents = b.contents;
    const ptext = (c) => (c.parts || []).filter((p) => typeof p.text
        === 'string').map((p) => p.text).join('');
    let user = '';
    for (let i = contents.length - 1; i >= 0; i--) {
        if ((contents[i].role || 'user') === 'user' && ptext(contents[i])) {
            user = ptext(contents[i]);
            break;
        }
    }
    const last = contents[contents.length - 1];
    const lastIsResult = (last.parts || []).some((p) => p.functionResponse);
    let tool = null;
    const decls = (b.tools || []).flatMap((t) =>
        t.functionDeclarations || t.function_declarations || []);
    const tc = b.toolConfig || b.tool_config;
    const mode = tc && tc.functionCallingConfig
        && tc.functionCallingConfig.mode;
    if (decls.length > 0 && !lastIsResult && mode !== 'NONE') {
        tool = { name: decls[0].name, args: { q: user } };
    }
    const gc = b.generationConfig || b.generation_config || {};
    const lim = limitText(answerText(user), outputLimit(model,
        gc.maxOutputTokens !== undefined ? gc.maxOutputTokens
            : gc.max_output_tokens));
    const text = lim.text;
    const finish = lim.cut ? 'MAX_TOKENS' : 'STOP';
    const si = b.systemInstruction || b.system_instruction;
    const prompt = contents.reduce((n, c) => n + words(ptext(c)),
        si ? words(ptext(si)) : 0) || 1;
    const out = tool ? 6 : lim.tokens;
    const version = model + '-001';
    const responseId = rid('', 22);

    if (!stream) {
        const parts = tool ? [{ functionCall: { name: tool.name,
            args: tool.args } }] : [{ text }];
        answerJSON(res, {
            candidates: [{ content: { parts, role: 'model' },
                finishReason: tool ? 'STOP' : finish, avgLogprobs: -0.05,
                index: 0 }],
            usageMetadata: { promptTokenCount: prompt,
                candidatesTokenCount: out, totalTokenCount: prompt + out,
                promptTokensDetails: [{ modality: 'TEXT',
                    tokenCount: prompt }] },
            modelVersion: version, responseId,
        }, fault);
        return;
    }

    /* Gemini frames its SSE events with CRLF */
    const ev = [];
    const gsse = (o) => marked('data: ' + JSON.stringify(o) + '\r\n\r\n');
    if (fault === 'cut') {
        /* the first 5 content chunks, none with finishReason or
         * usageMetadata */
        const ps = tool ? [null] : pieces(text).slice(0, 5);
        for (const p of ps) {
            ev.push(gsse({ candidates: [{ content: { parts: [tool
                ? { functionCall: { name: tool.name, args: tool.args } }
                : { text: p }], role: 'model' }, index: 0 }],
            modelVersion: version, responseId }));
        }
        answerStream(res, ev, fault);
        return;
    }
    if (tool) {
        ev.push(gsse({ candidates: [{ content: { parts: [{ functionCall:
            { name: tool.name, args: tool.args } }], role: 'model' },
        finishReason: 'STOP', index: 0 }],
        usageMetadata: { promptTokenCount: prompt, candidatesTokenCount: out,
            totalTokenCount: prompt + out }, modelVersion: version,
        responseId }));
    } else {
        const ps = pieces(text);
        let sent = 0;
        ps.forEach((p, i) => {
            sent += 1;
            const c = { content: { parts: [{ text: p }], role: 'model' },
                index: 0 };
            const lastOne = i === ps.length - 1;
            if (lastOne) {
                c.finishReason = finish;
            }
            const o = { candidates: [c], usageMetadata: lastOne
                ? { promptTokenCount: prompt, candidatesTokenCount: out,
                    totalTokenCount: prompt + out }
                : { promptTokenCount: prompt, candidatesTokenCount: sent,
                    totalTokenCount: prompt + sent },
            modelVersion: version, responseId };
            ev.push(gsse(o));
        });
    }
    answerStream(res, ev, fault);
}

function geminiEmbed(req, res, b, model, fault, batch) {
    const textOf = (c) => ((c && c.parts) || []).map((p) => p.text || '')
        .join('');
    if (!batch) {
        if (!b || !b.content || !Array.isArray(b.content.parts)) {
            sendJSON(res, 400, errorBody('gemini', 400,
                '* EmbedContentRequest.content: content is not specified'));
            return;
        }
        answerJSON(res, { embedding: { values: embed(textOf(b.content),
            b.outputDimensionality || 16) } }, fault);
        return;
    }
    if (!b || !Array.isArray(b.requests) || b.requests.length === 0) {
        sendJSON(res, 400, errorBody('gemini', 400,
            '* BatchEmbedContentsRequest.requests: requests is not'
            + ' specified'));
        return;
    }
    for (const r of b.requests) {
        if (!r || r.model !== 'models/' + model || !r.content) {
            sendJSON(res, 400, errorBody('gemini', 400,
                '* BatchEmbedContentsRequest.requests[0].model: model must'
                + ' be "models/' + model + '"'));
            return;
        }
    }
    answerJSON(res, { embeddings: b.requests.map((r) => ({
        values: embed(textOf(r.content), r.outputDimensionality || 16) })) },
    fault);
}


/* --------------------------------------------------------------- server */

/* the fault of a model name; fault-ignoremax is not one (outputLimit()) */
function faultOf(model) {
    const re = /fault-(\d{3}|[a-z]+)/g;
    let m;
    while ((m = re.exec(String(model || ''))) !== null) {
        if (m[1] !== 'ignoremax') {
            return m[1];
        }
    }
    return null;
}

function handle(req, res, raw) {
    const u = new URL(req.url, 'http://mock');
    const path = u.pathname;
    let body = null;
    const text = raw.toString('utf8');

    markers = null;

    if (path === '/__requests' && req.method === 'GET') {
        sendJSON(res, 200, requests);
        return;
    }
    if (path === '/__reset' && req.method === 'POST') {
        requests = [];
        sendJSON(res, 200, { ok: true });
        return;
    }

    try {
        body = text === '' ? null : JSON.parse(text);
    } catch (e) {
        body = undefined;
    }
    requests.push({ method: req.method, url: req.url, path,
        query: Object.fromEntries(u.searchParams), headers: req.headers,
        body: text, json: body === undefined ? null : body });

    setMarkers(req, text);

    const bad = (fmt) => sendJSON(res, 400, errorBody(fmt, 400,
        fmt === 'gemini' ? 'Invalid JSON payload received.'
            : 'We could not parse the JSON body of your request.'));

    let m;

    if (path === '/v1/models' && req.method === 'GET') {
        openaiModels(req, res);
        return;
    }

    if (path === '/v1/chat/completions' && req.method === 'POST') {
        if (body === undefined) { bad('openai'); return; }
        const fault = faultOf(body && body.model);
        if (earlyFault('openai', fault, res, req)) { return; }
        const err = validateOpenAIChat(body, false);
        if (err) {
            sendJSON(res, 400, errorBody('openai', 400, err));
            return;
        }
        later(fault, () => openaiChat(req, res, body, body.model, fault,
            false));
        return;
    }

    if (path === '/v1/embeddings' && req.method === 'POST') {
        if (body === undefined) { bad('openai'); return; }
        const fault = faultOf(body && body.model);
        if (earlyFault('openai', fault, res, req)) { return; }
        later(fault, () => openaiEmbeddings(req, res, body,
            body && body.model, fault));
        return;
    }

    m = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|embeddings)$/
        .exec(path);
    if (m && req.method === 'POST') {
        const dep = decodeURIComponent(m[1]);
        if (!u.searchParams.get('api-version')) {
            sendJSON(res, 404, { error: { code: '404',
                message: 'Resource not found' } });
            return;
        }
        if (body === undefined) { bad('openai'); return; }
        const fault = faultOf(dep);
        if (earlyFault('openai', fault, res, req)) { return; }
        if (m[2] === 'embeddings') {
            later(fault, () => openaiEmbeddings(req, res, body, dep, fault));
            return;
        }
        const err = validateOpenAIChat(body, true);
        if (err) {
            sendJSON(res, 400, errorBody('openai', 400, err));
            return;
        }
        later(fault, () => openaiChat(req, res, body, dep, fault, true));
        return;
    }

    if (path === '/v1/messages' && req.method === 'POST') {
        if (body === undefined) { bad('anthropic'); return; }
        const fault = faultOf(body && body.model);
        if (earlyFault('anthropic', fault, res, req)) { return; }
        later(fault, () => anthropicMessages(req, res, body, fault));
        return;
    }

    m = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent|embedContent|batchEmbedContents)$/
        .exec(path);
    if (m && req.method === 'POST') {
        const model = decodeURIComponent(m[1]);
        const op = m[2];
        if (body === undefined) { bad('gemini'); return; }
        const fault = faultOf(model);
        if (earlyFault('gemini', fault, res, req)) { return; }
        if (op === 'streamGenerateContent'
            && u.searchParams.get('alt') !== 'sse')
        {
            /* without alt=sse Gemini streams a JSON array: not supported
             * here, make it obvious */
            sendJSON(res, 400, errorBody('gemini', 400,
                'mock: streamGenerateContent needs alt=sse'));
            return;
        }
        later(fault, () => {
            if (op === 'embedContent' || op === 'batchEmbedContents') {
                geminiEmbed(req, res, body, model, fault,
                    op === 'batchEmbedContents');
            } else {
                geminiGenerate(req, res, body, model, fault,
                    op === 'streamGenerateContent');
            }
        });
        return;
    }

    const fmt = path.startsWith('/v1beta/') ? 'gemini' : 'openai';
    sendJSON(res, 404, errorBody(fmt, 404, 'mock: no route for '
        + req.method + ' ' + path, fmt === 'gemini' ? 'NOT_FOUND'
        : 'invalid_request_error', 'unknown_url'));
}

function later(fault, fn) {
    if (fault === 'slow') {
        setTimeout(fn, 3000);
    } else {
        fn();
    }
}

const server = http.createServer((req, res) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => {
        try {
            handle(req, res, Buffer.concat(parts));
        } catch (e) {
            process.stderr.write('mock: ' + (e.stack || e) + '\n');
            if (!res.headersSent) {
                sendJSON(res, 500, { error: { message: 'mock crashed: '
                    + e.message, type: 'mock_error' } });
            } else {
                res.destroy();
            }
        }
    });
});

server.keepAliveTimeout = 60000;
server.headersTimeout = 65000;
server.requestTimeout = 0;

server.listen(port, '127.0.0.1', () => {
    process.stdout.write('listening ' + server.address().port + '\n');
});

function shutdown() {
    for (const s of hanging) {
        s.destroy();
    }
    server.close();
    process.exit(0);
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
