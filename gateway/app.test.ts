// The gateway's HTTP behaviour against stand-in replicas (plain HTTP servers on loopback): model
// naming and the 404, a draining replica's 503 retried elsewhere, SSE passed through as it is
// written, a client that leaves aborting its upstream request, requests held at zero replicas, and
// static mode (--backend).
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterEach, describe, expect, it } from 'vitest';

import { parseFlags } from '../common/flags.js';
import { createLogger } from '../common/log.js';
import type { NPUModel } from '../operator/types.js';
import { createGatewayApp } from './app.js';
import { gatewayConfig, GATEWAY_COMMAND } from './config.js';
import { Holds } from './hold.js';
import type { EndpointSlice } from './kube.js';
import { GatewayMetrics } from './metrics.js';
import { Routing } from './routing.js';

const closers: Array<() => void> = [];
afterEach(() => {
  for (const c of closers.splice(0)) c();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  closers.push(() => server.closeAllConnections?.() ?? server.close());
  closers.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

interface Seen {
  path: string;
  body: string;
  auth?: string;
}

/** A stand-in replica: records what it gets and answers with `handler`. */
async function replica(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void, seen: Seen[] = []): Promise<string> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ path: req.url ?? '', body, auth: req.headers.authorization });
      handler(req, res, body);
    });
  });
  return `127.0.0.1:${await listen(server)}`;
}

const ok = (_req: IncomingMessage, res: ServerResponse, body: string) => {
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ object: 'chat.completion', model: JSON.parse(body).model, choices: [{ message: { role: 'assistant', content: 'hi' } }] }));
};

const model = (namespace: string, name: string): NPUModel => ({ apiVersion: 'npuserve.io/v1alpha1', kind: 'NPUModel', metadata: { namespace, name, creationTimestamp: '2026-12-01T00:00:00Z' }, spec: { source: { uri: 'file:///models/x' } } });

function slice(namespace: string, service: string, replicas: string[]): EndpointSlice {
  const port = Number(replicas[0]?.split(':')[1] ?? 8000);
  return {
    metadata: { namespace, name: `${service}-abc`, labels: { 'kubernetes.io/service-name': service } },
    addressType: 'IPv4',
    ports: [{ name: 'http', port }],
    endpoints: replicas.map((r) => ({ addresses: [r.split(':')[0]!], conditions: { ready: true } })),
  };
}

/** The gateway app on loopback, routing to replicas that all listen on 127.0.0.1 (one port per model here). */
async function gateway(models: NPUModel[], holdTimeoutSeconds = 5) {
  return gatewayWith((routing) => routing.setModels(models), holdTimeoutSeconds);
}

/** The gateway app in static mode, its models and replicas from `npuserve gateway` arguments (`--backend`). */
async function staticGateway(argv: string[], holdTimeoutSeconds = 5) {
  const { backends } = gatewayConfig(parseFlags(GATEWAY_COMMAND, argv, {}));
  return gatewayWith((routing) => routing.setStatic(backends, 1_780_000_000), holdTimeoutSeconds);
}

async function gatewayWith(setup: (routing: Routing) => void, holdTimeoutSeconds: number) {
  const routing = new Routing(1.25);
  const metrics = new GatewayMetrics();
  const holds = new Holds((m, n) => metrics.held.set({ model: m }, n));
  setup(routing);
  const app = createGatewayApp({ routing, holds, metrics, ready: () => true }, { prefixChars: 100, holdTimeoutSeconds, retryAfterSeconds: 7, bodyLimitBytes: 8 * 2 ** 20 }, createLogger({ format: 'json', level: 'error', write: () => {} }));
  const port = await listen(app.listen(0, '127.0.0.1'));
  const setSlices = (slices: EndpointSlice[]) => {
    for (const m of routing.setSlices(slices)) holds.release(m);
  };
  return { url: `http://127.0.0.1:${port}`, routing, metrics, holds, setSlices };
}

const chat = (url: string, model: string, extra: object = {}, headers: Record<string, string> = {}) =>
  fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify({ model, messages: [{ role: 'user', content: 'Hello' }], ...extra }) });

describe('gateway: models and naming', () => {
  it('lists every model, a name in two namespaces as namespace/name; an unknown model is a 404 naming them', async () => {
    const g = await gateway([model('team-a', 'tiny'), model('team-b', 'tiny'), model('team-a', 'mistral')]);
    const list = await (await fetch(`${g.url}/v1/models`)).json();
    expect(list.object).toBe('list');
    expect(list.data.map((m: { id: string }) => m.id)).toEqual(['mistral', 'team-a/tiny', 'team-b/tiny']);
    expect(list.data[0]).toMatchObject({ object: 'model', owned_by: 'team-a' });
    expect((await (await fetch(`${g.url}/v1/models/team-b/tiny`)).json()).id).toBe('team-b/tiny');

    const unknown = await chat(g.url, 'gpt-4');
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error).toEqual({ message: "The model 'gpt-4' does not exist; this gateway serves 'mistral', 'team-a/tiny', 'team-b/tiny'.", type: 'invalid_request_error', param: 'model', code: 'model_not_found' });
    const ambiguous = await (await chat(g.url, 'tiny')).json();
    expect(ambiguous.error.message).toBe("The model 'tiny' is in several namespaces; name one of 'team-a/tiny', 'team-b/tiny'.");
  });

  it('forwards the body and the Authorization header; a qualified name reaches the pods as their bare served name', async () => {
    const seen: Seen[] = [];
    const r = await replica(ok, seen);
    const g = await gateway([model('team-a', 'tiny'), model('team-b', 'tiny')]);
    g.setSlices([slice('team-b', 'tiny', [r])]);
    const res = await chat(g.url, 'team-b/tiny', { max_tokens: 3 }, { authorization: 'Bearer k-123' });
    expect(res.status).toBe(200);
    expect((await res.json()).model).toBe('tiny');
    expect(seen[0]).toMatchObject({ path: '/v1/chat/completions', auth: 'Bearer k-123' });
    expect(JSON.parse(seen[0]!.body)).toEqual({ model: 'tiny', messages: [{ role: 'user', content: 'Hello' }], max_tokens: 3 });
    const big = await fetch(`${g.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'team-b/tiny', prompt: 'x'.repeat(9 * 2 ** 20) }) });
    expect(big.status).toBe(413);
  });
});

describe('gateway: replicas', () => {
  it("retries a draining replica's 503 once on another replica; the client sees only the answer", async () => {
    const draining = await replica((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '5', connection: 'close' });
      res.end(JSON.stringify({ error: { message: 'The server is shutting down', type: 'service_unavailable', param: null, code: 'draining' } }));
    });
    const healthy = await replica(ok);
    // Both replicas on one "pod IP": the slices carry one port each, so two slices of the Service.
    const g = await gateway([model('ns', 'tiny')]);
    const twoSlices = [slice('ns', 'tiny', [draining]), { ...slice('ns', 'tiny', [healthy]), metadata: { namespace: 'ns', name: 'tiny-def', labels: { 'kubernetes.io/service-name': 'tiny' } } }];
    g.setSlices(twoSlices);
    for (let i = 0; i < 12; i++) expect((await chat(g.url, 'tiny', { messages: [{ role: 'user', content: `prompt ${i}` }] })).status).toBe(200);
    const metrics = await g.metrics.registry.getSingleMetricAsString('npuserve_gateway_upstream_retries_total');
    expect(metrics).toMatch(/reason="unavailable"} [1-9]/);
    expect(await g.metrics.registry.getSingleMetricAsString('npuserve_gateway_requests_total')).toMatch(/model="ns\/tiny",code="200"} 12/);
  });

  it('retries a replica that refuses the connection (a pod gone) on another one', async () => {
    const gone = createServer();
    const port = await listen(gone);
    gone.close();
    const healthy = await replica(ok);
    const g = await gateway([model('ns', 'tiny')]);
    g.setSlices([slice('ns', 'tiny', [`127.0.0.1:${port}`]), { ...slice('ns', 'tiny', [healthy]), metadata: { namespace: 'ns', name: 'tiny-def', labels: { 'kubernetes.io/service-name': 'tiny' } } }]);
    for (let i = 0; i < 8; i++) expect((await chat(g.url, 'tiny', { messages: [{ role: 'user', content: `prompt ${i}` }] })).status).toBe(200);
    expect(await g.metrics.registry.getSingleMetricAsString('npuserve_gateway_upstream_retries_total')).toMatch(/reason="connect"} [1-9]/);
  });

  it('streams server-sent events through as they are written, and a client that leaves aborts the upstream request', async () => {
    let upstreamClosed = false;
    const slow = await replica((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write('data: {"n":1}\n\n');
      const timer = setInterval(() => res.write('data: {"n":2}\n\n'), 50);
      req.socket.on('close', () => {
        clearInterval(timer);
        upstreamClosed = true;
      });
    });
    const g = await gateway([model('ns', 'tiny')]);
    g.setSlices([slice('ns', 'tiny', [slow])]);
    const res = await chat(g.url, 'tiny', { stream: true });
    expect(res.headers.get('content-type')).toBe('text/event-stream');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('data: {"n":1}');
    await reader.cancel();
    await expect.poll(() => upstreamClosed, { timeout: 3000 }).toBe(true);
  });

  it('holds a request for a model with no ready replica and forwards it once one is ready', async () => {
    const g = await gateway([model('ns', 'tiny')]);
    g.setSlices([]);
    const pending = chat(g.url, 'tiny');
    await expect.poll(() => g.holds.count('ns/tiny')).toBe(1);
    expect(await g.metrics.registry.getSingleMetricAsString('npuserve_gateway_held_requests')).toMatch(/model="ns\/tiny"} 1/);
    g.setSlices([slice('ns', 'tiny', [await replica(ok)])]);
    expect((await pending).status).toBe(200);
    expect(g.holds.count('ns/tiny')).toBe(0);
  });

  it('a request held past the deadline gets a 503 with Retry-After', async () => {
    const g = await gateway([model('ns', 'tiny')], 1);
    g.setSlices([]);
    const started = Date.now();
    const res = await chat(g.url, 'tiny');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('7');
    expect((await res.json()).error).toMatchObject({ type: 'service_unavailable', code: 'no_ready_replica', param: 'model' });
  });
});

describe('gateway: static backends (--backend)', () => {
  it('lists the models given and sends each prompt prefix to one replica of its model, the same one every time', async () => {
    const seenA: Seen[] = [];
    const seenB: Seen[] = [];
    const [a, b] = [await replica(ok, seenA), await replica(ok, seenB)];
    const g = await staticGateway(['--backend', `tiny=${a}`, '--backend', `tiny=${b}`, '--backend', `small=${b}`]);
    const list = await (await fetch(`${g.url}/v1/models`)).json();
    expect(list.data).toEqual([
      { id: 'small', object: 'model', created: 1_780_000_000, owned_by: 'npuserve' },
      { id: 'tiny', object: 'model', created: 1_780_000_000, owned_by: 'npuserve' },
    ]);

    const prompts = Array.from({ length: 24 }, (_, i) => `conversation ${i}`);
    for (const p of [...prompts, ...prompts]) expect((await chat(g.url, 'tiny', { messages: [{ role: 'user', content: p }] })).status).toBe(200);
    const promptsOf = (seen: Seen[]) => seen.map((s) => JSON.parse(s.body).messages[0].content as string);
    const [onA, onB] = [new Set(promptsOf(seenA)), new Set(promptsOf(seenB))];
    expect(onA.size).toBeGreaterThan(0);
    expect(onB.size).toBeGreaterThan(0);
    expect(onA.size + onB.size).toBe(prompts.length);
    expect([...onA].filter((p) => onB.has(p))).toEqual([]);

    expect((await chat(g.url, 'small', { messages: [{ role: 'user', content: 'just b' }] })).status).toBe(200);
    expect(promptsOf(seenB)).toContain('just b');
    expect((await (await chat(g.url, 'mistral')).json()).error.message).toBe("The model 'mistral' does not exist; this gateway serves 'small', 'tiny'.");
  });

  it("keeps a conversation on the replica that took its spilled first turn, not the system prompt's replica", async () => {
    // Replicas that answer when released, so requests stay in flight.
    const parked: Array<() => void> = [];
    const seen: Record<'a' | 'b', Seen[]> = { a: [], b: [] };
    const held = (_req: IncomingMessage, res: ServerResponse, body: string) => parked.push(() => ok(_req, res, body));
    const [a, b] = [await replica(held, seen.a), await replica(held, seen.b)];
    const g = await staticGateway(['--backend', `tiny=${a}`, '--backend', `tiny=${b}`]);
    const system = { role: 'system', content: 'You are a terse assistant for the npuserve test suite. '.repeat(3) };
    const send = (messages: object[]) => chat(g.url, 'tiny', { messages: [system, ...messages] });
    const lastUser = (s: Seen) => JSON.parse(s.body).messages.at(-1).content as string;
    const where = (content: string) => (seen.a.some((s) => lastUser(s) === content) ? 'a' : seen.b.some((s) => lastUser(s) === content) ? 'b' : undefined);
    const until = async (n: number) => {
      while (seen.a.length + seen.b.length < n) await new Promise((r) => setTimeout(r, 5));
    };

    // Two conversations in flight fill the system prompt's replica to its bound (ceil(1.25 x 3 / 2) = 2) ...
    const first = [send([{ role: 'user', content: 'one' }]), send([{ role: 'user', content: 'two' }])];
    await until(2);
    const owner = where('one')!;
    expect(where('two')).toBe(owner);
    // ... so the third conversation's first turn spills to the other replica.
    const third = send([{ role: 'user', content: 'three' }]);
    await until(3);
    const spilled = where('three')!;
    expect(spilled).not.toBe(owner);
    for (const release of parked.splice(0)) release();
    for (const r of await Promise.all([...first, third])) expect(r.status).toBe(200);

    // Idle now, the ring would pick the owner; the conversation's next turns go where its history is.
    for (const [i, turn] of ['three, again', 'three, once more'].entries()) {
      const next = send([{ role: 'user', content: 'three' }, { role: 'assistant', content: 'hi' }, ...(i ? [{ role: 'user', content: 'three, again' }, { role: 'assistant', content: 'hi' }] : []), { role: 'user', content: turn }]);
      await until(4 + i);
      expect(where(turn)).toBe(spilled);
      parked.splice(0).forEach((release) => release());
      expect((await next).status).toBe(200);
    }
    // A new conversation with the same system prompt still goes to the ring's replica.
    const fresh = send([{ role: 'user', content: 'four' }]);
    await until(6);
    expect(where('four')).toBe(owner);
    parked.splice(0).forEach((release) => release());
    expect((await fresh).status).toBe(200);
    const decisions = await g.metrics.registry.getSingleMetricAsString('npuserve_gateway_routing_decisions_total');
    expect(decisions).toMatch(/model="tiny",decision="affinity"} 2\b/);
    expect(decisions).toMatch(/model="tiny",decision="fallback"} 1\b/);
  });

  it('holds a request whose only server refuses connections until the hold deadline, then answers 503 naming the server', async () => {
    const gone = createServer();
    const port = await listen(gone);
    gone.close();
    const g = await staticGateway(['--backend', `tiny=127.0.0.1:${port}`], 1);
    const started = Date.now();
    const res = await chat(g.url, 'tiny');
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(res.status).toBe(503);
    expect((await res.json()).error).toMatchObject({ code: 'no_ready_replica', message: `The model 'tiny' has no ready replica after 1 s (its servers, 127.0.0.1:${port}, did not take it). Retry later.` });
  });
});
