// `npuserve serve` against hostile clients and a hostile chat template (issue 12, items 1, 2, 7, 9):
// gzip bombs, deep nesting and huge message arrays, a template that loops or allocates without
// bound, prototype-named roles, Node's own protocol errors, the API key, and the drain deadline. In
// each case the request gets a clear OpenAI error and /healthz keeps answering within 100 ms.
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createLogger } from '../../common/log.js';
import { convert } from '../../runtime/convert/convert.js';
import { ServerMetrics } from '../../runtime/metrics.js';
import { createApp } from '../../runtime/server/app.js';
import { answerClientErrors } from '../../runtime/server/errors.js';
import { MISTRAL_CHAT_TEMPLATE } from '../../runtime/testmodel.js';
import { convertedModel, testModel } from './helpers.js';
import { eventually, metricValue, startServer, whileHealthy, whileHealthyBestOf, type ServerProcess } from './server-process.js';

const MODEL = 'tiny-chat';
const API_KEY = 'sk-npuserve-test-3f9a1c';

// Loops (10^10 steps) or allocates (a 30-million-element list) only for one message text: a probe
// conversation at convert time renders, a chat request that says the word does not.
const TRAP_TEMPLATE =
  "{% if messages[-1]['content'] == 'loop' %}{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}" +
  "{% if messages[-1]['content'] == 'oom' %}{% set xs = range(30000000) %}{{ xs | length }}{% endif %}" +
  MISTRAL_CHAT_TEMPLATE;

function withTemplate(name: string, template: string) {
  const model = testModel(name);
  const path = join(model.dir, 'tokenizer_config.json');
  writeFileSync(path, JSON.stringify({ ...JSON.parse(readFileSync(path, 'utf8')), chat_template: template }));
  return model;
}

type ErrorJson = { error: { message: string; type: string; param: string | null; code: string | null } };

async function post(server: ServerProcess, path: string, body: string | Buffer, headers: Record<string, string> = {}) {
  const t0 = performance.now();
  const res = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${API_KEY}`, ...headers }, body: body as BodyInit });
  return { status: res.status, body: (await res.json()) as ErrorJson, ms: performance.now() - t0 };
}

/** A raw HTTP exchange (for requests fetch would not send): the status and the JSON body. */
function raw(server: ServerProcess, request: string): Promise<{ status: number; contentType: string; body: ErrorJson }> {
  const { hostname, port } = new URL(server.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(request));
    let text = '';
    socket.on('data', (b) => (text += b));
    socket.on('error', reject);
    socket.on('close', () => {
      const [head, body] = text.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), contentType: /content-type: ([^\r]+)/i.exec(head)?.[1] ?? '', body: JSON.parse(body) as ErrorJson });
    });
  });
}

describe('npuserve serve, hardened', () => {
  let server: ServerProcess;
  let client: OpenAI;

  beforeAll(async () => {
    const model = await convertedModel(withTemplate('trap-template', TRAP_TEMPLATE), 'INT8', 2);
    server = await startServer(model, ['--served-model-name', MODEL, '--max-seq-len', '4096', '--threads', '1', '--chat-template-timeout-ms', '2000', '--api-key', API_KEY]);
    client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 30_000 });
  }, 120_000);
  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
  });

  it('requires the API key (Bearer) on the OpenAI routes, and leaves health, readiness and metrics open', async () => {
    const ok = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(ok.choices).toHaveLength(1);
    for (const apiKey of ['sk-wrong', `${API_KEY}x`, API_KEY.slice(0, -1)]) {
      const other = new OpenAI({ baseURL: `${server.url}/v1`, apiKey, maxRetries: 0 });
      await expect(other.models.list(), apiKey).rejects.toMatchObject({ status: 401, code: 'invalid_api_key', type: 'invalid_request_error' });
      await expect(other.completions.create({ model: MODEL, prompt: 'x', max_tokens: 1 })).rejects.toBeInstanceOf(OpenAI.AuthenticationError);
    }
    const none = await fetch(`${server.url}/v1/models`);
    expect([none.status, none.headers.get('www-authenticate'), ((await none.json()) as ErrorJson).error.code]).toEqual([401, 'Bearer', 'invalid_api_key']);
    const basic = await fetch(`${server.url}/v1/models`, { headers: { authorization: `Basic ${Buffer.from(`user:${API_KEY}`).toString('base64')}` } });
    expect(basic.status).toBe(401);
    for (const path of ['/healthz', '/readyz', '/metrics']) expect((await fetch(`${server.url}${path}`)).status, path).toBe(200);
  });

  it('stops a chat template that loops, with a 500 naming the deadline, while /healthz answers within 100 ms and the next chat works', async () => {
    const loop = () => post(server, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'loop' }], max_tokens: 2 }));
    const { result, healthMaxMs, polls, attempts } = await whileHealthyBestOf(server, 3, 100, loop);
    console.log(`looping template: ${result.status} in ${result.ms.toFixed(0)} ms; /healthz max ${healthMaxMs.toFixed(1)} ms over ${polls} polls (attempts: ${attempts.map((m) => m.toFixed(1)).join(', ')} ms)`);
    expect(result.status).toBe(500);
    expect(result.body.error).toMatchObject({ type: 'server_error', code: 'chat_template_timeout', param: 'messages' });
    expect(result.body.error.message).toMatch(/chat template did not finish rendering within 2000 ms/);
    expect(result.ms).toBeLessThan(5_000);
    expect(healthMaxMs).toBeLessThan(100);
    const next = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 });
    expect(next.choices[0].message.role).toBe('assistant');
  });

  it('ends a chat template that allocates past its heap with a 500 naming the limit; the server lives on', async () => {
    const oom = () => post(server, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'oom' }], max_tokens: 2 }));
    const { result, healthMaxMs, attempts } = await whileHealthyBestOf(server, 3, 100, oom);
    console.log(`allocating template: ${result.status} in ${result.ms.toFixed(0)} ms; /healthz max ${healthMaxMs.toFixed(1)} ms (attempts: ${attempts.map((m) => m.toFixed(1)).join(', ')} ms)`);
    expect(result.status).toBe(500);
    expect(result.body.error).toMatchObject({ type: 'server_error', code: 'chat_template_out_of_memory' });
    expect(result.body.error.message).toMatch(/more than the 64 MiB heap/);
    expect(healthMaxMs).toBeLessThan(100);
    expect(server.proc.exitCode).toBeNull();
    expect((await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2 })).choices).toHaveLength(1);
  });

  it('refuses a gzip body inflating to 1 MB with a context-length 400 at once, and one inflating past the body limit with a 413', async () => {
    const chat = (content: string) => gzipSync(JSON.stringify({ model: MODEL, messages: [{ role: 'user', content }], max_tokens: 4 }), { level: 9 });
    const mb = chat('a'.repeat(2 ** 20));
    const nine = chat('a'.repeat(9 * 2 ** 20));
    const { result, healthMaxMs } = await whileHealthy(server, async () => [await post(server, '/v1/chat/completions', mb, { 'content-encoding': 'gzip' }), await post(server, '/v1/chat/completions', nine, { 'content-encoding': 'gzip' })]);
    console.log(`gzip ${mb.length} B -> 1 MiB: ${result[0].status} in ${result[0].ms.toFixed(1)} ms; gzip ${nine.length} B -> 9 MiB: ${result[1].status} in ${result[1].ms.toFixed(1)} ms; /healthz max ${healthMaxMs.toFixed(1)} ms`);
    expect(mb.length).toBeLessThan(2048);
    expect([result[0].status, result[0].body.error.code]).toEqual([400, 'context_length_exceeded']);
    expect(result[0].ms).toBeLessThan(200);
    expect([result[1].status, result[1].body.error.code]).toEqual([413, 'request_too_large']);
    expect(result[1].body.error.message).toMatch(/larger than the limit of 8388608 bytes/);
    expect(healthMaxMs).toBeLessThan(100);
  });

  it('refuses deeply nested JSON and a huge array of messages with a 400 naming the bound, while /healthz answers within 100 ms', async () => {
    const depth = 200_000;
    const nested = `{"model":"${MODEL}","messages":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    const many = JSON.stringify({ model: MODEL, messages: Array.from({ length: 250_000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: 'x' })) });
    const fewer = JSON.stringify({ model: MODEL, messages: Array.from({ length: 15_000 }, (_, i) => ({ role: i % 2 ? 'assistant' : 'user', content: 'x' })) });
    const { result, healthMaxMs } = await whileHealthy(server, async () => [
      await post(server, '/v1/chat/completions', nested),
      await post(server, '/v1/chat/completions', many),
      await post(server, '/v1/chat/completions', fewer),
    ]);
    console.log(
      `nesting ${depth} deep: ${result[0].status} in ${result[0].ms.toFixed(0)} ms; 250 000 messages (${(many.length / 2 ** 20).toFixed(1)} MiB): ${result[1].status} in ${result[1].ms.toFixed(0)} ms; ` +
        `15 000 messages: ${result[2].status} ${result[2].body.error.code} in ${result[2].ms.toFixed(0)} ms; /healthz max ${healthMaxMs.toFixed(1)} ms`,
    );
    expect([result[0].status, result[0].body.error.code]).toEqual([400, 'request_too_complex']);
    expect(result[0].body.error.message).toMatch(/deeper than 32 levels/);
    expect([result[1].status, result[1].body.error.code]).toEqual([400, 'request_too_complex']);
    expect(result[1].body.error.message).toMatch(/more than 16384 JSON objects and arrays/);
    // Within the bounds, the conversation is rendered and refused for its length (or the template's deadline).
    expect(result[2].status).toBeGreaterThanOrEqual(400);
    expect(result[2].body.error.code).toMatch(/context_length_exceeded|chat_template_timeout/);
    expect(healthMaxMs).toBeLessThan(100);
  });

  it('refuses prototype-named roles as unknown, and an invalid max_tokens beside max_completion_tokens', async () => {
    for (const role of ['constructor', '__proto__', 'toString', 'hasOwnProperty']) {
      const r = await post(server, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role, content: 'x' }] }));
      expect({ role, status: r.status, param: r.body.error.param }).toEqual({ role, status: 400, param: 'messages[0].role' });
    }
    for (const maxTokens of [-1, 0, 1.5, 'ten']) {
      const r = await post(server, '/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x' }], max_completion_tokens: 2, max_tokens: maxTokens }));
      expect({ maxTokens, status: r.status, param: r.body.error.param }).toEqual({ maxTokens, status: 400, param: 'max_tokens' });
    }
  });

  it("answers OPTIONS, a wrong method, an oversized header section and a malformed request line with OpenAI's JSON error", async () => {
    const options = await fetch(`${server.url}/v1/chat/completions`, { method: 'OPTIONS' });
    expect([options.status, options.headers.get('allow'), ((await options.json()) as ErrorJson).error.code]).toEqual([405, 'POST', 'method_not_allowed']);
    const unknown = await fetch(`${server.url}/v1/nothing`, { method: 'OPTIONS' });
    expect([unknown.status, ((await unknown.json()) as ErrorJson).error.code]).toEqual([404, 'not_found']);
    const get = await fetch(`${server.url}/v1/completions`, { headers: { authorization: `Bearer ${API_KEY}` } });
    expect([get.status, ((await get.json()) as ErrorJson).error.code]).toEqual([405, 'method_not_allowed']);
    const big = await raw(server, `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    expect([big.status, big.contentType, big.body.error.code]).toEqual([431, 'application/json; charset=utf-8', 'request_header_fields_too_large']);
    const garbage = await raw(server, 'NOT AN HTTP REQUEST\r\n\r\n');
    expect([garbage.status, garbage.body.error.type, garbage.body.error.code]).toEqual([400, 'invalid_request_error', 'bad_request']);
    expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
  });
});

describe('npuserve serve at the drain deadline', () => {
  it('ends a stream still running with an OpenAI error event before closing it', async () => {
    const server = await startServer(await convertedModel(testModel('serve-drain'), 'INT8', 2), ['--served-model-name', MODEL, '--max-seq-len', '4096', '--threads', '1', '--drain-timeout-seconds', '1']);
    const res = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, prompt: 'Once upon a time', max_tokens: 4000, temperature: 1, seed: 3, stream: true }) });
    const reader = res.body!.getReader();
    let text = '';
    const decoder = new TextDecoder();
    const read = (async () => {
      for (let r = await reader.read(); !r.done; r = await reader.read()) text += decoder.decode(r.value);
    })();
    await eventually('the stream runs', async () => metricValue(await server.metrics(), 'npuserve_generation_tokens_total') > 3);
    server.proc.kill('SIGTERM');
    await read;
    const events = text.split('\n\n').filter((e) => e.startsWith('data: '));
    expect(events.at(-1)).toBe('data: [DONE]');
    const last = JSON.parse(events.at(-2)!.slice('data: '.length)) as ErrorJson;
    expect(last.error).toMatchObject({ type: 'service_unavailable', code: 'drain_timeout' });
    expect(last.error.message).toMatch(/shut down before this request finished \(it waited 1 s/);
    expect(await server.exited, server.output()).toBe(0);
    expect(server.output()).toMatch(/drain timeout: closing 1 unfinished requests with an error/);
  });
});

describe('npuserve convert and chat templates', () => {
  it('refuses a template that does not render a probe conversation within the limits, naming the problem', async () => {
    const model = withTemplate('looping-template', `{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}${MISTRAL_CHAT_TEMPLATE}`);
    const output = join(model.dir, 'out.npu');
    await expect(convert({ input: model.dir, output, precision: 'FP32', optimizeLevel: 0 })).rejects.toThrow(
      /the chat template fails a 1-message probe conversation: the model's chat template did not finish rendering within 1000 ms/,
    );
  });
});

describe('npuserve serve --protect-metrics', () => {
  it('puts /metrics behind the key too, never the probes', async () => {
    const app = createApp({ state: { servedModelName: MODEL, createdSeconds: 0, phase: 'loading', inFlight: new Set() }, metrics: new ServerMetrics(MODEL), bodyLimitBytes: 1024, apiKey: API_KEY, protectMetrics: true, log: createLogger({ format: 'json', level: 'error', write: () => {} }) });
    const listener = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => listener.once('listening', resolve));
    const url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`;
    const status = async (path: string, key?: string) => (await fetch(`${url}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} })).status;
    try {
      expect(await status('/metrics')).toBe(401);
      expect(await status('/metrics', 'sk-wrong')).toBe(401);
      expect(await status('/metrics', API_KEY)).toBe(200);
      expect(await status('/healthz')).toBe(200);
      expect(await status('/readyz')).toBe(503);
    } finally {
      listener.close();
    }
  });

  it.each([
    [['--api-key', '  '], {}, /--api-key \/ NPUSERVE_API_KEY is set but empty/],
    [[], { NPUSERVE_API_KEY: '' }, /--api-key \/ NPUSERVE_API_KEY is set but empty/],
    [['--protect-metrics'], {}, /--protect-metrics needs an API key/],
  ])('%j %j exits 2 naming the problem', (args, env, message) => {
    const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');
    const r = spawnSync(process.execPath, [bin, 'serve', '--model', 'x.npu', ...args], { encoding: 'utf8', timeout: 30_000, env: { ...process.env, NPUSERVE_API_KEY: undefined, ...env } });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
  });
});

describe("Node's request timeout", () => {
  it('answers a request whose headers never finish with a 408 OpenAI error', async () => {
    // The serving server keeps Node's timeouts (headers 60 s); shortened here to see the answer.
    const server = answerClientErrors(createServer({ headersTimeout: 300, requestTimeout: 600, connectionsCheckingInterval: 100 }, (_req, res) => res.end()));
    server.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const answer = await new Promise<string>((resolve, reject) => {
        const socket = connect(port, '127.0.0.1', () => socket.write('POST /v1/completions HTTP/1.1\r\nHost: x\r\n'));
        let text = '';
        socket.on('data', (b) => (text += b));
        socket.on('error', reject);
        socket.on('close', () => resolve(text));
      });
      const [head, body] = answer.split('\r\n\r\n');
      expect(head).toMatch(/^HTTP\/1\.1 408 Request Timeout/);
      expect(JSON.parse(body)).toEqual({ error: { message: 'The request did not arrive in time.', type: 'invalid_request_error', param: null, code: 'request_timeout' } });
    } finally {
      server.close();
    }
  });
});
