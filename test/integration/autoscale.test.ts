// Autoscaling end to end on the local cluster: real serving containers on the real NPU node, a load
// generator (the openai client through the Service proxy) at more than twice the capacity of one replica,
// the operator scaling up within the panic window and back to minReplicas after the stabilization time.
import { request } from 'node:http';
import { Readable } from 'node:stream';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { scrapePod } from '../../operator/autoscaler/scrape.js';
import { serviceAccess, servingNode, type ServiceAccess } from '../cluster/helpers.js';
import type { KubeApi, KubeObject } from '../cluster/kube.js';
import { applyCrd, deleteModelNamespace, getModel, kubeClient, kubectl, modelNamespace, npuModel, startOperator, waitFor, waitForPhase, type OperatorProcess } from './operator-harness.js';

// The real node has 2 CPUs and each serving pod requests one: 2 replicas at most.
const autoscaling = { minReplicas: 1, maxReplicas: 2, targetTokensPerSecondPerReplica: 5, ttftP95TargetMs: 1000, scaleDownStabilizationSeconds: 20 };
const PANIC_WINDOW_SECONDS = 6;
const SCRAPE_INTERVAL_SECONDS = 1;

/**
 * fetch over a new TCP connection per request: the proxy balances connections, not requests, so a
 * kept-alive connection would pin a client to the pod it first reached, as with kube-proxy.
 */
const fetchPerConnection: typeof fetch = (input, init) =>
  new Promise((resolve, reject) => {
    const url = new URL(input instanceof Request ? input.url : String(input));
    const headers = Object.fromEntries(new Headers(init?.headers).entries());
    const req = request(url, { method: init?.method ?? 'GET', headers, agent: false, signal: init?.signal ?? undefined }, (res) => {
      const out = new Headers();
      for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) out.set(k, Array.isArray(v) ? v.join(', ') : v);
      resolve(new Response(Readable.toWeb(res) as ReadableStream, { status: res.statusCode, headers: out }));
    });
    req.on('error', reject);
    req.end(typeof init?.body === 'string' ? init.body : undefined);
  });

interface Load {
  stop: () => Promise<void>;
  ok: () => number;
  failures: string[];
}

/** `workers` loops sending completions back to back (pausing `pauseMs` between), until stopped. */
function startLoad(openai: OpenAI, workers: number, maxTokens: number, pauseMs: number, failures: string[]): Load {
  let running = true;
  let ok = 0;
  const loops = Array.from({ length: workers }, async (_, w) => {
    for (let i = 0; running; i++) {
      try {
        const r = await openai.completions.create({ model: 'tiny', prompt: `Request ${w}-${i}: once upon a time`, max_tokens: maxTokens, temperature: 0 });
        if (r.choices.length === 1) ok++;
      } catch (e) {
        failures.push(`${new Date().toISOString()} ${(e as Error).message}`);
      }
      if (pauseMs) await new Promise((r) => setTimeout(r, pauseMs));
    }
  });
  return {
    ok: () => ok,
    failures,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

interface Pod extends KubeObject {
  status?: { podIP?: string; conditions?: Array<{ type: string; status: string }> };
}

async function readyServerPods(client: KubeApi, ns: string): Promise<Pod[]> {
  const pods = await client.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'app.kubernetes.io/instance=tiny,app.kubernetes.io/component=server' });
  return pods.items.filter((p) => !p.metadata.deletionTimestamp && p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
}

/**
 * Waits until the real node has room for two serving pods (each requests one CPU, the node has two);
 * pods of other tests or demos on it would keep the second replica Pending. Names them if not.
 */
async function nodeRoomForTwo(client: KubeApi): Promise<void> {
  const node = servingNode().name;
  const holders = async () => {
    const pods = await client.list<KubeObject & { spec: { containers: Array<{ resources?: { requests?: { cpu?: string } } }> }; status?: { phase?: string } }>('/api/v1/pods', { fieldSelector: `spec.nodeName=${node}` });
    return pods.items
      .filter((p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed')
      .map((p) => ({ pod: `${p.metadata.namespace}/${p.metadata.name}`, millicpu: p.spec.containers.reduce((s, c) => s + millicpu(c.resources?.requests?.cpu), 0) }))
      .filter((p) => p.millicpu > 0);
  };
  try {
    await waitFor(`2 free CPUs on node ${node}`, async () => ((await holders()).length === 0 ? true : undefined), 120_000, 2000);
  } catch {
    const busy = (await holders()).map((h) => `${h.pod} (${h.millicpu}m)`).join(', ');
    throw new Error(`the node ${node} must be free for 2 serving pods of 1 CPU each; these pods request CPU on it: ${busy}`);
  }
}

const millicpu = (q: string | undefined) => (!q ? 0 : q.endsWith('m') ? Number(q.slice(0, -1)) : Number(q) * 1000);

async function events(ns: string, reason: string): Promise<string[]> {
  const out = JSON.parse(await kubectl('get', 'events', '-n', ns, '--field-selector', `reason=${reason}`, '-o', 'json')) as { items: Array<{ message: string }> };
  return out.items.map((e) => e.message);
}

describe('autoscaling on the local cluster', () => {
  let client: KubeApi;
  let ns: string;
  let op: OperatorProcess;
  let proxy: ServiceAccess;

  beforeAll(async () => {
    client = kubeClient();
    await applyCrd();
    ns = await modelNamespace(client, 'autoscale');
    op = startOperator(ns, ['--leader-elect', 'false', '--scrape-interval-seconds', String(SCRAPE_INTERVAL_SECONDS)]);
  });

  afterAll(async () => {
    await proxy?.close();
    await deleteModelNamespace(client, ns); // while the operator runs, so it removes its finalizer
    const code = await op?.stop();
    if (code !== 0) console.log(op.logs().slice(-4000));
  });

  it('scales 1 -> 2 within the panic window under twice the capacity, spreads the load, and returns to 1 after the stabilization time with no failed request', async () => {
    const file = join(tmpdir(), `npum-autoscale-${process.pid}.json`);
    writeFileSync(file, JSON.stringify(npuModel('tiny', { autoscaling, runtime: { maxBatchSize: 4, maxSeqLen: 256, maxWaitingRequests: 64 } })));
    await nodeRoomForTwo(client);
    await kubectl('apply', '-n', ns, '-f', file);
    await waitForPhase(client, ns, 'tiny', 'Ready');
    proxy = await serviceAccess(client, { namespace: ns, service: 'tiny', port: 8000 });
    const openai = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000, fetch: fetchPerConnection });
    const failures: string[] = [];

    // Load: 4 clients back to back, each completion 16 tokens: tens of tokens/s even on a busy
    // 2-core machine, far above 2 x 5.
    const loadStart = Date.now();
    const load = startLoad(openai, 4, 16, 0, failures);
    const scaledUp = await waitFor('spec.replicas 2', async () => ((await getModel(client, ns, 'tiny')).spec.replicas === 2 ? Date.now() : undefined), 60_000, 200);
    const upSeconds = (scaledUp - loadStart) / 1000;
    console.log(`scaled 1 -> 2 ${upSeconds.toFixed(1)} s after the load started`);
    // At most one panic window plus a scrape interval (and an API round trip) after the load began.
    expect(upSeconds).toBeLessThan(PANIC_WINDOW_SECONDS + 2 * SCRAPE_INTERVAL_SECONDS + 2);
    const up = await events(ns, 'ScaledUp');
    expect(up[0]).toMatch(/^1 -> 2 replicas: panic: .*tokens\/s [\d.]+ > 1 x 5 target/);

    await waitFor('2 ready serving pods', async () => ((await readyServerPods(client, ns)).length === 2 ? true : undefined), 180_000, 500);
    const pods = await readyServerPods(client, ns);
    const before = await Promise.all(pods.map((p) => scrapePod(p.status!.podIP!, 8000, 5000)));
    await new Promise((r) => setTimeout(r, 15_000));
    const after = await Promise.all(pods.map((p) => scrapePod(p.status!.podIP!, 8000, 5000)));
    const served = after.map((m, i) => m.generationTokens - before[i]!.generationTokens);
    console.log(`tokens served per pod in 15 s at 2 replicas: ${served.join(', ')}`);
    for (const s of served) expect(s).toBeGreaterThan(0);
    const loaded = await getModel(client, ns, 'tiny') as Awaited<ReturnType<typeof getModel>> & { status?: { autoscaler?: { ttftP95Ms?: number; tokensPerSecond?: number } } };
    console.log(`status.autoscaler at 2 replicas: ${JSON.stringify(loaded.status?.autoscaler)}`);
    expect(loaded.status?.autoscaler?.ttftP95Ms).toBeLessThan(autoscaling.ttftP95TargetMs);
    expect(loaded.status?.autoscaler?.tokensPerSecond).toBeGreaterThan(2 * autoscaling.targetTokensPerSecondPerReplica);
    await load.stop();

    // A trickle (a 4-token completion every 2 s, well under one replica's 5 tokens/s) while pods drain.
    const stopped = Date.now();
    const trickle = startLoad(openai, 1, 4, 2000, failures);
    const down = await waitFor('back to 1 ready replica', async () => {
      const m = await getModel(client, ns, 'tiny');
      return m.spec.replicas === 1 && m.status?.readyReplicas === 1 && (await readyServerPods(client, ns)).length === 1 ? Date.now() : undefined;
    }, 240_000, 1000);
    await new Promise((r) => setTimeout(r, 5_000)); // requests in flight while the last pod went away finish
    await trickle.stop();
    const downSeconds = (down - stopped) / 1000;
    console.log(`back to 1 replica ${downSeconds.toFixed(1)} s after the load stopped; ${load.ok()} + ${trickle.ok()} requests succeeded`);
    expect(downSeconds).toBeGreaterThanOrEqual(autoscaling.scaleDownStabilizationSeconds);
    expect((await events(ns, 'ScaledDown')).join('\n')).toMatch(/-> 1 replicas: /);
    expect(trickle.ok()).toBeGreaterThan(5);
    expect(failures).toEqual([]);
  }, 600_000);
});
