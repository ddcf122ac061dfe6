// Drives the gateway with the official OpenAI SDK for Node.
//
//   node run.mjs BASE_URL MODEL [EMBED_MODEL|-]
//
// BASE_URL is the gateway's ".../v1".  Prints one TAP-like line per check,
// "ok N - name" or "not ok N - name: reason", then "1..N".  Exits 0 when
// everything ran (failures are in the lines), 2 on usage errors.

import OpenAI from 'openai';

const [base, model, embedModel] = process.argv.slice(2);

if (!base || !model) {
    console.error('usage: node run.mjs BASE_URL MODEL [EMBED_MODEL|-]');
    process.exit(2);
}

const client = new OpenAI({
    baseURL: base,
    apiKey: 'sk-test',
    maxRetries: 0,
    timeout: 20000,
});

let n = 0;

function assert(cond, msg) {
    if (!cond) {
        throw new Error(msg);
    }
}

function show(v) {
    const s = JSON.stringify(v);
    return s && s.length > 300 ? s.slice(0, 300) + '...' : s;
}

async function check(name, fn) {
    n++;
    try {
        const skip = await fn();
        if (typeof skip === 'string') {
            console.log(`ok ${n} - ${name} # SKIP ${skip}`);
        } else {
            console.log(`ok ${n} - ${name}`);
        }
    } catch (e) {
        let why = e && e.message ? e.message : String(e);
        if (e && e.status) {
            why = `HTTP ${e.status}: ${why}`;
        }
        console.log(`not ok ${n} - ${name}: ${why.replace(/\s+/g, ' ')}`);
    }
}

const tools = [{
    type: 'function',
    function: {
        name: 'lookup',
        description: 'Look something up',
        parameters: {
            type: 'object',
            properties: { q: { type: 'string' } },
            required: ['q'],
        },
    },
}];

await check('chat', async () => {
    const r = await client.chat.completions.create({
        model,
        messages: [
            { role: 'system', content: 'You are a test.' },
            { role: 'user', content: 'hello sdk' },
        ],
    });
    assert(r.object === 'chat.completion', `object ${show(r.object)}`);
    const c = r.choices && r.choices[0];
    assert(c, `no choices: ${show(r)}`);
    assert(c.message.role === 'assistant', `role ${show(c.message.role)}`);
    assert(c.message.content === 'echo: hello sdk',
        `content ${show(c.message.content)}`);
    assert(c.finish_reason === 'stop', `finish_reason ${c.finish_reason}`);
    assert(r.usage && r.usage.prompt_tokens > 0
        && r.usage.completion_tokens > 0
        && r.usage.total_tokens === r.usage.prompt_tokens
            + r.usage.completion_tokens, `usage ${show(r.usage)}`);
});

await check('chat response headers', async () => {
    const { response } = await client.chat.completions.create({
        model,
        messages: [{ role: 'user', content: 'headers' }],
    }).withResponse();
    assert(response.headers.get('x-llm-provider'), 'no x-llm-provider');
    assert(response.headers.get('x-llm-model'), 'no x-llm-model');
});

await check('stream', async () => {
    const stream = await client.chat.completions.create({
        model,
        stream: true,
        stream_options: { include_usage: true },
        messages: [{ role: 'user', content: 'hello stream' }],
    });
    let text = '';
    let finish = null;
    let usage = null;
    let chunks = 0;
    for await (const chunk of stream) {
        chunks++;
        assert(chunk.object === 'chat.completion.chunk',
            `chunk object ${show(chunk.object)}`);
        for (const ch of chunk.choices) {
            if (ch.delta && ch.delta.content) {
                text += ch.delta.content;
            }
            if (ch.finish_reason) {
                finish = ch.finish_reason;
            }
        }
        if (chunk.usage) {
            usage = chunk.usage;
        }
    }
    assert(text === 'echo: hello stream', `text ${show(text)}`);
    assert(finish === 'stop', `finish_reason ${finish}`);
    assert(usage && usage.total_tokens > 0, `usage ${show(usage)}`);
    assert(chunks >= 2, `chunks ${chunks}`);
});

await check('tools', async () => {
    const messages = [{ role: 'user', content: 'weather in Paris' }];
    const r = await client.chat.completions.create({
        model, messages, tools,
    });
    const c = r.choices[0];
    assert(c.finish_reason === 'tool_calls',
        `finish_reason ${c.finish_reason}`);
    const calls = c.message.tool_calls || [];
    assert(calls.length === 1, `tool_calls ${show(c.message)}`);
    const call = calls[0];
    assert(call.type === 'function' && call.id, `call ${show(call)}`);
    assert(call.function.name === 'lookup', `name ${call.function.name}`);
    const args = JSON.parse(call.function.arguments);
    assert(args.q === 'weather in Paris', `arguments ${show(args)}`);

    messages.push(c.message);
    messages.push({ role: 'tool', tool_call_id: call.id, content: 'sunny' });
    const r2 = await client.chat.completions.create({
        model, messages, tools,
    });
    const c2 = r2.choices[0];
    assert(c2.finish_reason === 'stop', `second finish_reason`
        + ` ${c2.finish_reason}: ${show(c2.message)}`);
    assert(c2.message.content === 'echo: weather in Paris',
        `second content ${show(c2.message.content)}`);
});

await check('stream tools', async () => {
    /* the 4.x SDK (Node 18) has the stream helper under beta */
    const api = client.chat.completions.stream
        ? client.chat.completions : client.beta.chat.completions;
    const runner = api.stream({
        model,
        messages: [{ role: 'user', content: 'stream a call' }],
        tools,
    });
    const r = await runner.finalChatCompletion();
    const c = r.choices[0];
    const calls = c.message.tool_calls || [];
    assert(calls.length === 1, `tool_calls ${show(c.message)}`);
    assert(calls[0].id, `call id ${show(calls[0])}`);
    assert(calls[0].function.name === 'lookup',
        `name ${calls[0].function.name}`);
    const args = JSON.parse(calls[0].function.arguments);
    assert(args.q === 'stream a call', `arguments ${show(args)}`);
    assert(c.finish_reason === 'tool_calls',
        `finish_reason ${c.finish_reason}`);
});

await check('embeddings', async () => {
    if (!embedModel || embedModel === '-') {
        return 'no embeddings for this format';
    }
    const r = await client.embeddings.create({
        model: embedModel,
        input: ['alpha', 'beta'],
    });
    assert(r.object === 'list', `object ${show(r.object)}`);
    assert(r.data.length === 2, `data ${show(r.data)}`);
    r.data.forEach((d, i) => {
        assert(d.index === i, `index ${d.index}`);
        const v = d.embedding;
        assert(Array.isArray(v) && v.length === 16,
            `embedding ${i}: length ${v && v.length} ${show(v)}`);
        let norm = 0;
        for (const x of v) {
            assert(Number.isFinite(x), `embedding ${i}: ${show(v)}`);
            norm += x * x;
        }
        assert(Math.abs(norm - 1) < 1e-3, `embedding ${i}: norm ${norm}`);
    });
    assert(r.data[0].embedding.some((x, i) => x !== r.data[1].embedding[i]),
        'the two embeddings are equal');
});

await check('models.list', async () => {
    const ids = [];
    for await (const m of client.models.list()) {
        assert(m.object === 'model', `object ${show(m)}`);
        ids.push(m.id);
    }
    assert(ids.includes(model), `${model} not in ${show(ids)}`);
    assert(!ids.includes('*'), `"*" listed: ${show(ids)}`);
});

await check('unknown model error', async () => {
    try {
        await client.chat.completions.create({
            model: 'no-such-model-anywhere',
            messages: [{ role: 'user', content: 'x' }],
        });
    } catch (e) {
        assert(e instanceof OpenAI.NotFoundError,
            `${e.constructor.name} ${e.status} ${e.message}`);
        assert(e.code === 'model_not_found', `code ${show(e.code)}`);
        return undefined;
    }
    throw new Error('no error');
});

console.log(`1..${n}`);
