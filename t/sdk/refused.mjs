// The OpenAI SDK for Node meets the gateway's refusals: a budget's 402,
// which it must not retry even with retries allowed.
//
//   node refused.mjs BASE_URL MODEL
//
// Prints "ok N - name" or "not ok N - name: reason" per check, then "1..N".

import OpenAI from 'openai';

const [base, model] = process.argv.slice(2);

if (!base || !model) {
    console.error('usage: node refused.mjs BASE_URL MODEL');
    process.exit(2);
}

const client = new OpenAI({
    baseURL: base,
    apiKey: 'sk-test',
    maxRetries: 2,
    timeout: 20000,
});

let n = 0;

function check(name, cond, why) {
    n++;
    console.log(cond ? `ok ${n} - ${name}` : `not ok ${n} - ${name}: ${why}`);
}

for (const stream of [false, true]) {
    const label = stream ? 'stream' : 'whole';
    let err = null;
    try {
        const r = await client.chat.completions.create({
            model,
            messages: [{ role: 'user', content: 'spend some money' }],
            stream,
        });
        if (stream) {
            for await (const c of r) {
                void c;
            }
        }
    } catch (e) {
        err = e;
    }
    check(`${label}: refused`, err !== null, 'no error');
    check(`${label}: status 402`, err && err.status === 402,
        `status ${err && err.status}`);
    check(`${label}: an APIError`,
        err instanceof OpenAI.APIError, String(err));
    check(`${label}: code budget_exceeded`,
        err && err.code === 'budget_exceeded', `code ${err && err.code}`);
    check(`${label}: type insufficient_quota`,
        err && err.type === 'insufficient_quota', `type ${err && err.type}`);
    check(`${label}: readable message`,
        err && /budget of [0-9.]+ USD/.test(err.message),
        `message ${err && err.message}`);
}

console.log(`1..${n}`);
