// `npm run bench:gateway`: SmolLM2-135M-Instruct on the local cluster's real node, under the
// multi-turn chat workload of runtime/bench/chat-workload.ts (8 system prompts of ~400 tokens shared
// by the conversations). (1) 4 replicas reached round-robin per request, through the model's Service
// (kube-proxy picks a pod per connection, and the client keeps its connections), and through
// `npuserve gateway` (prefix-aware routing): TTFT per turn, the
// replicas' prefix-cache hit ratio, and the most requests each replica held at once against the
// gateway's bound. (2) One replica with and without prefix caching (a local serve of the same model).
// (3) Scale from zero: a model at 0 replicas, requests through the gateway: time from the first
// request to its first token, requests lost (all must be answered), and the model back at 0.
// Runs against the local cluster (started if none runs; stopped again if started here).
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import { homedir, loadavg } from 'node:os';
import { join } from 'node:path';

import OpenAI from 'openai';

import { UsageError } from '../../common/errors.js';
import { choiceFlag, type CommandSpec, type FlagValues, intFlag, numberFlag, runScript, stringFlag } from '../../common/flags.js';
import type { EndpointSlice } from '../../gateway/kube.js';
import { loadBound } from '../../gateway/ring.js';
import { readyReplicas } from '../../gateway/table.js';
import { parsePrometheusText } from '../../operator/autoscaler/scrape.js';
import { CHAT_ORDERS, chatConversations, DEFAULT_CHAT_WORKLOAD, runChatWorkload, summarizeTurns, type ChatWorkloadOptions, type TurnSummary } from '../../runtime/bench/chat-workload.js';
import { measurePrefixCaching, prefixReport } from '../../runtime/bench/prefix-modes.js';
import { percentile } from '../../runtime/bench/workload.js';
import { convert } from '../../runtime/convert/convert.js';
import { SMOLLM2_GGUF, smolLM2Gguf } from '../../scripts/smollm2.js';
import { defaultUpOptions, down, isRunning, readState, up, type ClusterState } from '../cluster/cluster.js';
import { KubeApi, waitFor, type KubeObject } from '../cluster/kube.js';
import { nodeRootDir, realNodeLabel } from '../cluster/real-nodes.js';

const repo = join(import.meta.dirname, '..', '..');
const BIN = join(repo, 'bin', 'npuserve.js');
const MODELS = '/apis/npuserve.io/v1alpha1';
const REPLICAS = 4;
const IDLE_SECONDS = 20;

const COMMAND: CommandSpec = {
  name: 'npm run bench:gateway --',
  summary: 'Prefix-aware routing through npuserve gateway against round-robin and the Service on 4 replicas of SmolLM2 on the local cluster, one replica with and without prefix caching, and a scale from zero.',
  flags: [
    { name: 'conversations', value: 'N', default: '32', description: 'conversations per routing mode (system prompt i % 8 each)' },
    { name: 'turns', value: 'N', default: '6', description: 'turns per conversation' },
    { name: 'concurrency', value: 'N', default: '4', description: 'turns in flight at once' },
    { name: 'order', value: CHAT_ORDERS.join('|'), default: 'interleaved', description: 'interleaved: every conversation open from the start, each next turn drawn at random (seeded) from the conversations waiting, as users who read and type between turns; sequential: each of --concurrency users runs one conversation to its end, then the next' },
    { name: 'load-factor', value: 'X', default: '1.25', description: "the gateway's --load-factor (the chart's default): a replica takes at most ceil(X × the average in flight)" },
    { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of gateway.json' },
  ],
};

interface Model extends KubeObject {
  status?: { phase?: string; replicas?: number; readyReplicas?: number; conditions?: Array<{ type: string; status: string; reason?: string; message?: string }> };
}

interface Proc {
  child: ChildProcess;
  logs: () => string;
  stop: () => Promise<void>;
}

function startProcess(args: string[]): Proc {
  let out = '';
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  return {
    child,
    logs: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** A counter or gauge summed over its series in an exposition (0 when absent). */
function metric(text: string, name: string): number {
  return parsePrometheusText(text).filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
}

/** `ip:port` of the model's ready serving endpoints, read from its Service's EndpointSlices as the gateway reads them. */
async function endpoints(client: KubeApi, ns: string, service: string): Promise<string[]> {
  const list = await client.list<EndpointSlice>(`/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, { labelSelector: `kubernetes.io/service-name=${service}` });
  return readyReplicas(list.items).get(`${ns}/${service}`) ?? [];
}

async function scrapeAll(replicas: string[]): Promise<Map<string, string>> {
  return new Map(await Promise.all(replicas.map(async (r) => [r, await (await fetch(`http://${r}/metrics`)).text()] as [string, string])));
}

interface RoutingResult {
  mode: string;
  turns: TurnSummary[];
  hitTokens: number;
  queriedTokens: number;
  /** Per replica: requests it answered, and the most it held at once (running + waiting, sampled every 100 ms). */
  replicas: Array<{ replica: string; requests: number; maxInFlight: number }>;
  seconds: number;
  /** TTFT p50 and p95 of every request, all turns together. */
  ttftP50Ms: number;
  ttftP95Ms: number;
  /** Through the gateway: its routing decisions during the run (affinity, preferred, fallback). */
  decisions?: Record<string, number>;
}

/** npuserve_gateway_routing_decisions_total by decision, of the gateway at `url`. */
async function routingDecisions(url: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const s of parsePrometheusText(await (await fetch(`${url}/metrics`)).text())) {
    if (s.name === 'npuserve_gateway_routing_decisions_total') out[s.labels.decision!] = (out[s.labels.decision!] ?? 0) + s.value;
  }
  return out;
}

/**
 * A fetch that sends each request to the next replica in turn (a round-robin balancer in front of
 * the Service's endpoints, one request at a time): the baseline a prefix-blind balancer gives.
 */
function roundRobinFetch(replicas: string[]): typeof fetch {
  let next = 0;
  return (input, init) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    url.host = replicas[next++ % replicas.length]!;
    return fetch(url, init);
  };
}

/** The workload through `baseUrl`, with the replicas' counters read before and after and their queues sampled meanwhile. */
async function measureRouting(mode: string, baseUrl: string, replicas: string[], workload: ChatWorkloadOptions, concurrency: number, fetcher?: typeof fetch): Promise<RoutingResult> {
  const before = await scrapeAll(replicas);
  const maxInFlight = new Map(replicas.map((r) => [r, 0]));
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      await Promise.all(replicas.map(async (r) => {
        const text = await (await fetch(`http://${r}/metrics`)).text().catch(() => '');
        const held = metric(text, 'npuserve_requests_running') + metric(text, 'npuserve_requests_waiting');
        maxInFlight.set(r, Math.max(maxInFlight.get(r)!, held));
      }));
      await new Promise((res) => setTimeout(res, 100));
    }
  })();
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600_000, ...(fetcher ? { fetch: fetcher } : {}) });
  const t0 = performance.now();
  const timings = await runChatWorkload(client, 'chat', chatConversations(workload), { maxTokensPerTurn: workload.maxTokensPerTurn, order: workload.order, concurrency }).finally(() => (sampling = false));
  const seconds = (performance.now() - t0) / 1000;
  await sampler;
  const after = await scrapeAll(replicas);
  const delta = (r: string, name: string) => metric(after.get(r)!, name) - metric(before.get(r)!, name);
  return {
    mode,
    turns: summarizeTurns(timings),
    ttftP50Ms: percentile(timings.map((t) => t.ttftMs), 50),
    ttftP95Ms: percentile(timings.map((t) => t.ttftMs), 95),
    hitTokens: replicas.reduce((n, r) => n + delta(r, 'npuserve_prefix_cache_hits_total'), 0),
    queriedTokens: replicas.reduce((n, r) => n + delta(r, 'npuserve_prefix_cache_queries_total'), 0),
    replicas: replicas.map((r) => ({ replica: r, requests: delta(r, 'npuserve_requests_total'), maxInFlight: maxInFlight.get(r)! })),
    seconds,
  };
}

interface ZeroResult {
  firstTokenSeconds: number;
  requests: number;
  failed: number;
  errors: string[];
  backToZeroSeconds: number;
}

/** Each replica's --max-batch-size: the gateway keeps a conversation on its replica above the ring's bound while fewer are in flight there. */
const MAX_BATCH = 4;

function npuModel(name: string, spec: Record<string, unknown>): Model & { spec: Record<string, unknown> } {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name },
    spec: {
      source: { uri: 'file:///models/smollm2' },
      precision: 'FP16',
      placement: { nodeSelector: { [realNodeLabel]: 'true' } },
      // The real node has this machine's 2 CPUs: a small request lets 4 replicas share them (1 engine thread each).
      runtime: { maxBatchSize: MAX_BATCH, maxSeqLen: 2048, maxWaitingRequests: 64, resources: { requests: { cpu: '100m' } } },
      ...spec,
    },
  };
}

async function waitModel(client: KubeApi, ns: string, name: string, what: string, ok: (m: Model) => boolean, timeoutMs = 600_000): Promise<Model> {
  return waitFor(`${name}: ${what}`, async () => {
    const m = await client.get<Model>(`${MODELS}/namespaces/${ns}/npumodels/${name}`).catch(() => undefined);
    if (m?.status?.phase === 'Failed') throw new Error(`${name} failed: ${JSON.stringify(m.status.conditions)}`);
    return m && ok(m) ? m : undefined;
  }, timeoutMs, 1000);
}

/** Requests at a model at zero replicas, through the gateway: the first token's delay, and every request answered. */
async function measureScaleFromZero(client: KubeApi, ns: string, gatewayUrl: string): Promise<ZeroResult> {
  await waitModel(client, ns, 'sleepy', 'at 0 replicas', (m) => m.status?.replicas === 0 && (m.status.readyReplicas ?? 0) === 0, 300_000);
  const openai = new OpenAI({ baseURL: `${gatewayUrl}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 300_000 });
  const t0 = performance.now();
  let firstTokenSeconds = Number.NaN;
  const errors: string[] = [];
  const one = async (i: number) => {
    try {
      const stream = await openai.chat.completions.create({ model: 'sleepy', messages: [{ role: 'user', content: `Say hello number ${i}.` }], max_tokens: 8, stream: true });
      for await (const chunk of stream) if (chunk.choices[0]?.delta?.content && Number.isNaN(firstTokenSeconds)) firstTokenSeconds = (performance.now() - t0) / 1000;
    } catch (e) {
      errors.push((e as Error).message);
    }
  };
  // A burst at zero, then a trickle while the replica is up: every one must be answered.
  const burst = Array.from({ length: 4 }, (_, i) => one(i));
  await Promise.all(burst);
  for (let i = 4; i < 12; i++) {
    await one(i);
    await new Promise((r) => setTimeout(r, 250));
  }
  const idleFrom = performance.now();
  await waitModel(client, ns, 'sleepy', 'back at 0 replicas', (m) => m.status?.replicas === 0, 300_000);
  return { firstTokenSeconds, requests: 12, failed: errors.length, errors, backToZeroSeconds: (performance.now() - idleFrom) / 1000 };
}

/** SmolLM2 converted once to FP16 in the user's cache, for the local one-replica comparison. */
async function localSmolLM2(): Promise<string> {
  const dir = join(homedir(), '.cache', 'npuserve', 'bench');
  const output = join(dir, 'smollm2.fp16.npu');
  if (!existsSync(output)) {
    mkdirSync(dir, { recursive: true });
    await convert({ input: smolLM2Gguf(), output, precision: 'FP16', optimizeLevel: 2 });
  }
  return output;
}

function report(routing: RoutingResult[], oneReplica: string, zero: ZeroResult, o: { workload: ChatWorkloadOptions; concurrency: number; loadFactor: number }, loadAverages: number[]): string {
  const pct = (a: number, b: number) => `${((100 * a) / Math.max(1, b)).toFixed(1)}%`;
  // What the gateway bounds a replica to with `concurrency` requests in flight (the new one included).
  const bound = loadBound(o.concurrency - 1, REPLICAS, o.loadFactor);
  const [roundRobin] = routing;
  const gateway = routing.at(-1)!;
  const lines = [
    `SmolLM2-135M-Instruct FP16, ${REPLICAS} replicas on the local cluster's real node (2 cores, 1 engine thread each); ${o.workload.conversations} conversations of ${o.workload.turns} turns, ${o.workload.systemPrompts} system prompts of ${o.workload.systemWords} words, ${o.concurrency} turns at once, ${o.workload.order} order; load average ${loadAverages.map((l) => l.toFixed(1)).join(' at the start, ')} at the end.`,
    '',
    '| Route | Turn | Requests | Prompt tokens (mean) | TTFT p50 (ms) | TTFT p95 (ms) |',
    '|---|---:|---:|---:|---:|---:|',
    ...routing.flatMap((r) => r.turns.map((t) => `| ${r.mode} | ${t.turn + 1} | ${t.requests} | ${t.promptTokensMean.toFixed(0)} | ${t.ttftP50Ms.toFixed(0)} | ${t.ttftP95Ms.toFixed(0)} |`)),
    '',
    `| Route | Prefix-cache hit ratio | TTFT p50 / p95, all requests (ms) | Requests per replica | Most in flight per replica (bound ${bound}; a conversation's replica up to its batch of ${MAX_BATCH}) | Wall time (s) |`,
    '|---|---:|---:|---|---|---:|',
    ...routing.map((r) => `| ${r.mode} | ${pct(r.hitTokens, r.queriedTokens)} (${r.hitTokens} of ${r.queriedTokens}) | ${r.ttftP50Ms.toFixed(0)} / ${r.ttftP95Ms.toFixed(0)} | ${r.replicas.map((x) => x.requests).join(', ')} | ${r.replicas.map((x) => x.maxInFlight).join(', ')} | ${r.seconds.toFixed(1)} |`),
    '',
    `all requests: TTFT p50 ${(roundRobin.ttftP50Ms / gateway.ttftP50Ms).toFixed(1)}x lower through the gateway than round-robin, p95 ${(roundRobin.ttftP95Ms / gateway.ttftP95Ms).toFixed(1)}x`,
    ...roundRobin.turns.map((t, i) => `turn ${t.turn + 1}: TTFT p50 ${(t.ttftP50Ms / gateway.turns[i].ttftP50Ms).toFixed(1)}x lower through the gateway than round-robin, p95 ${(t.ttftP95Ms / gateway.turns[i].ttftP95Ms).toFixed(1)}x`),
    `the gateway's routing decisions: ${Object.entries(gateway.decisions ?? {}).map(([d, n]) => `${d} ${n}`).join(', ')} (affinity: a conversation's earlier replica, under the bound or with room in its batch and no queue; preferred: the system prompt's replica on the ring; fallback: it was at its bound)`,
    '',
    '### One replica, with and without prefix caching (a local `npuserve serve` of the same model, the same conversations in sequential order)',
    '',
    oneReplica.trimEnd(),
    '',
    '### Scale from zero through the gateway',
    '',
    `first request to its first token: ${zero.firstTokenSeconds.toFixed(1)} s (a burst of 4 at zero replicas, then 8 more one by one); requests lost: ${zero.failed} of ${zero.requests}${zero.errors.length ? ` (${[...new Set(zero.errors)].join('; ')})` : ''}; back at 0 replicas ${zero.backToZeroSeconds.toFixed(0)} s after the last request (idle window ${IDLE_SECONDS} s, then the scale-down).`,
  ];
  return `${lines.join('\n')}\n`;
}

async function main(f: FlagValues): Promise<void> {
  const workload: ChatWorkloadOptions = { ...DEFAULT_CHAT_WORKLOAD, conversations: intFlag(f, 'conversations', 1)!, turns: intFlag(f, 'turns', 1)!, order: choiceFlag(f, 'order', CHAT_ORDERS)! };
  const concurrency = intFlag(f, 'concurrency', 1)!;
  const loadFactor = numberFlag(f, 'load-factor')!;
  if (!(loadFactor >= 1)) throw new UsageError(`--load-factor must be at least 1, got ${loadFactor}`);
  const loadAverages = [loadavg()[0]];
  // First, before the cluster takes the machine's cores: one local replica with and without the cache.
  console.error('bench:gateway: one local replica of SmolLM2 with and without prefix caching');
  const model = await localSmolLM2();
  const modes = [];
  // Sequential order whatever --order says: this part measures the engine's cache on one conversation's turns, not routing.
  for (const prefixCaching of [true, false]) modes.push(await measurePrefixCaching(model, prefixCaching, { ...workload, order: 'sequential', tag: `local-${prefixCaching}` }, concurrency, ['--threads', '2']));
  console.error(prefixReport(modes, []));
  let state: ClusterState | undefined = readState();
  let started = false;
  if (!state || !isRunning(state)) {
    console.error('bench:gateway: starting the local cluster ...');
    state = await up({ ...defaultUpOptions, realNodes: 1, log: (l) => console.error(`  ${l}`) });
    started = true;
  }
  if (!state.nodes.real[0]) throw new Error('the local cluster has no real node: bench:gateway needs one (npm run cluster:up -- --real-nodes 1, as root with podman)');
  const client = KubeApi.fromFile(state.kubeconfig);
  const ns = `bench-gateway-${Date.now().toString(36)}`;
  const procs: Proc[] = [];
  try {
    const kubectl = (...args: string[]) => new Promise<string>((resolve, reject) => {
      const p = spawn(join(state!.binDir, 'kubectl'), ['--kubeconfig', state!.kubeconfig, ...args]);
      let out = '';
      p.stdout.on('data', (c) => (out += c));
      p.stderr.on('data', (c) => (out += c));
      p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`kubectl ${args.join(' ')}: ${out}`))));
    });
    await kubectl('apply', '-f', join(repo, 'crds', 'npuserve.io_npumodels.yaml'));
    await kubectl('wait', '--for=condition=Established', '--timeout=60s', 'crd/npumodels.npuserve.io');
    await client.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
    await client.create(`/api/v1/namespaces/${ns}/persistentvolumeclaims`, { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: 'npuserve-artifacts' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '2Gi' } } } });
    // The GGUF at hostPath /models/smollm2 of the real node.
    const dir = join(nodeRootDir(state.dir, state.nodes.real[0]), 'models', 'smollm2');
    const gguf = smolLM2Gguf();
    if (!existsSync(join(dir, SMOLLM2_GGUF)) || statSync(join(dir, SMOLLM2_GGUF)).size !== statSync(gguf).size) {
      mkdirSync(dir, { recursive: true });
      copyFileSync(gguf, join(dir, SMOLLM2_GGUF));
    }
    const operator = startProcess(['operator', '--kubeconfig', state.kubeconfig, '--namespaces', ns, '--image', state.image!, '--image-pull-policy', 'Never', '--npu-node-selector', `${realNodeLabel}=true`, '--metrics-port', '0', '--leader-election-namespace', ns, '--scrape-interval-seconds', '2']);
    procs.push(operator);
    const gateway = startProcess(['gateway', '--kubeconfig', state.kubeconfig, '--namespaces', ns, '--port', '0', '--host', '127.0.0.1', '--log-format', 'text', '--scrape-interval-seconds', '1', '--load-factor', String(loadFactor)]);
    procs.push(gateway);
    const gatewayUrl = `http://127.0.0.1:${await waitFor('the gateway listening', () => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(gateway.logs())?.[1], 30_000, 100)}`;

    const chat = npuModel('chat', { replicas: REPLICAS });
    const sleepy = npuModel('sleepy', { autoscaling: { minReplicas: 0, maxReplicas: 1, scaleToZeroAfterSeconds: IDLE_SECONDS, scaleDownStabilizationSeconds: 5 } });
    for (const m of [chat, sleepy]) await client.create(`${MODELS}/namespaces/${ns}/npumodels`, m);
    console.error(`bench:gateway: converting SmolLM2 and starting ${REPLICAS} replicas in ${ns} ...`);
    await waitModel(client, ns, 'chat', `${REPLICAS} ready replicas`, (m) => m.status?.phase === 'Ready' && m.status.readyReplicas === REPLICAS);
    const svc = await client.get<KubeObject & { spec: { clusterIP: string; ports: Array<{ port: number }> } }>(`/api/v1/namespaces/${ns}/services/chat`);
    const serviceUrl = `http://${svc.spec.clusterIP}:${svc.spec.ports[0].port}`;
    const replicas = await waitFor('4 ready endpoints', async () => {
      const r = await endpoints(client, ns, 'chat');
      return r.length === REPLICAS ? r : undefined;
    }, 60_000, 500);
    await waitFor('the Service through kube-proxy', () => fetch(`${serviceUrl}/readyz`, { signal: AbortSignal.timeout(2000) }).then((r) => (r.ok ? true : undefined), () => undefined), 60_000, 500);
    await waitFor('the gateway routing to chat', () => fetch(`${gatewayUrl}/v1/models`).then(async (r) => ((await r.text()).includes('"chat"') ? true : undefined), () => undefined), 60_000, 500);

    // Each mode's system prompts carry their own tag: neither run finds the other's prefixes cached.
    const routing: RoutingResult[] = [];
    // The Service through kube-proxy picks a pod per connection, and the openai client keeps its
    // connections: each lands on one pod for good (load and prefixes as chance has it). Round-robin
    // per request is the prefix-blind balancer the issue compares with.
    const routes = [
      { mode: 'round-robin per request', tag: 'rr', url: serviceUrl, fetcher: roundRobinFetch(replicas) },
      { mode: 'Service (kube-proxy, keep-alive connections)', tag: 'svc', url: serviceUrl },
      { mode: 'gateway (prefix-aware)', tag: 'gw', url: gatewayUrl },
    ];
    for (const { mode, tag, url, fetcher } of routes) {
      console.error(`bench:gateway: ${workload.conversations} conversations, ${mode}`);
      const decided = url === gatewayUrl ? await routingDecisions(gatewayUrl) : undefined;
      const result = await measureRouting(mode, url, replicas, { ...workload, tag }, concurrency, fetcher);
      if (decided) {
        const now = await routingDecisions(gatewayUrl);
        result.decisions = Object.fromEntries(Object.entries(now).map(([d, n]) => [d, n - (decided[d] ?? 0)]));
      }
      routing.push(result);
      console.error(JSON.stringify(result));
    }
    console.error('bench:gateway: scale from zero');
    const zero = await measureScaleFromZero(client, ns, gatewayUrl);
    console.error(JSON.stringify(zero));

    loadAverages.push(loadavg()[0]);
    process.stdout.write(report(routing, prefixReport(modes, []), zero, { workload, concurrency, loadFactor }, loadAverages));
    const outDir = stringFlag(f, 'out')!;
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'gateway.json'), `${JSON.stringify({ createdAt: new Date().toISOString(), workload, concurrency, loadFactor, loadAverages, routing, oneReplica: modes, zero }, null, 2)}\n`);
    console.error(`wrote ${join(outDir, 'gateway.json')}`);
  } finally {
    await client.delete(`${MODELS}/namespaces/${ns}/npumodels/chat`).catch(() => undefined);
    await client.delete(`${MODELS}/namespaces/${ns}/npumodels/sleepy`).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 5000));
    for (const p of procs) await p.stop();
    for (const name of ['chat', 'sleepy']) await client.patch(`${MODELS}/namespaces/${ns}/npumodels/${name}`, [{ op: 'remove', path: '/metadata/finalizers' }], 'json').catch(() => undefined);
    await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
    if (started) await down({ quiet: true });
  }
}

void runScript(COMMAND, main);
