// `npuserve gateway` on the local cluster, with one shared setup: an operator and two gateways run on
// this machine (which routes to pod IPs), serving pods on the real NPU node. The official openai
// client works through the gateway unchanged (models list, chat, streaming) for two models; an
// unknown model is a 404 naming the models; a model with minReplicas 0 goes to zero replicas when
// idle, a request through the gateway wakes it and is answered, and it goes back to zero, with no
// request lost; a precision rollout under load loses none either; a request held past the deadline
// gets a 503 with Retry-After.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { KubeApi } from '../cluster/kube.js';
import { apply, applyCrd, cluster, deleteModelNamespace, getModel, kubeClient, kubectl, modelNamespace, npuModel, repoRoot, startOperator, waitFor, waitForPhase, type OperatorProcess } from './operator-harness.js';

const IDLE_SECONDS = 15;

interface Gateway {
  child: ChildProcess;
  url: string;
  logs: () => string;
  stop: () => Promise<void>;
}

/** `npuserve gateway` as a process on this machine, on a free port; resolves once it listens and has synced. */
async function startGateway(namespace: string, extra: string[] = []): Promise<Gateway> {
  let out = '';
  const child = spawn(process.execPath, [join(repoRoot, 'bin', 'npuserve.js'), 'gateway', '--kubeconfig', cluster().kubeconfig, '--namespaces', namespace, '--port', '0', '--host', '127.0.0.1', '--log-format', 'text', '--scrape-interval-seconds', '1', ...extra], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  const port = await waitFor('the gateway listening', () => /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(out)?.[1], 30_000, 100);
  const url = `http://127.0.0.1:${port}`;
  await waitFor('the gateway ready', () => fetch(`${url}/readyz`).then((r) => (r.ok ? true : undefined), () => undefined), 30_000, 200);
  return {
    child,
    url,
    logs: () => out,
    stop: () =>
      new Promise((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/** The REPLICAS column of `kubectl get npum NAME`. */
async function replicasColumn(ns: string, name: string): Promise<string> {
  const [header, row] = (await kubectl('get', 'npum', name, '-n', ns)).trim().split('\n');
  const columns = header!.split(/\s{2,}/);
  return row!.split(/\s{2,}/)[columns.indexOf('REPLICAS')]!;
}

/** What a failure message needs: the models, pods and events of the namespace. */
async function diagnosis(ns: string): Promise<string> {
  const run = (...args: string[]) => kubectl(...args).catch((e: unknown) => String(e));
  return [await run('get', 'npum,pods', '-n', ns, '-o', 'wide'), await run('get', 'events', '-n', ns, '--sort-by=.lastTimestamp')].join('\n');
}

describe('npuserve gateway', () => {
  let client: KubeApi;
  let ns: string;
  let op: OperatorProcess;
  let gw: Gateway;
  let impatient: Gateway;
  let openai: OpenAI;

  beforeAll(async () => {
    client = kubeClient();
    await applyCrd();
    ns = await modelNamespace(client, 'gateway');
    op = startOperator(ns, ['--scrape-interval-seconds', '1']);
    await apply(ns, npuModel('tiny', { replicas: 1 }));
    await apply(ns, npuModel('sleepy', { autoscaling: { minReplicas: 0, maxReplicas: 1, scaleToZeroAfterSeconds: IDLE_SECONDS, scaleDownStabilizationSeconds: 5 } }));
    // At zero replicas by hand, without autoscaling: nothing wakes it.
    await apply(ns, npuModel('parked', { replicas: 0 }));
    gw = await startGateway(ns, ['--hold-timeout-seconds', '180']);
    impatient = await startGateway(ns, ['--hold-timeout-seconds', '3', '--retry-after-seconds', '7']);
    openai = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 200_000 });
    try {
      // sleepy may already be back at zero (idle since it started): the first request wakes it.
      for (const name of ['tiny', 'sleepy', 'parked']) await waitForPhase(client, ns, name, 'Ready', 240_000);
      await waitFor('tiny has a ready replica', async () => ((await getModel(client, ns, 'tiny')).status?.readyReplicas === 1 ? true : undefined), 120_000, 500);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${await diagnosis(ns)}`);
    }
  }, 420_000);

  afterAll(async () => {
    await gw?.stop();
    await impatient?.stop();
    if (ns) await deleteModelNamespace(client, ns);
    await op?.stop();
  }, 180_000);

  it('the openai client lists the models, chats with two of them and streams, through one endpoint', async () => {
    const models = await openai.models.list();
    expect(models.data.map((m) => m.id).sort()).toEqual(['parked', 'sleepy', 'tiny']);
    for (const model of ['tiny', 'sleepy']) {
      const chat = await openai.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hello' }], max_tokens: 4, temperature: 0 });
      expect(chat.model).toBe(model);
      expect(chat.choices[0]!.message.role).toBe('assistant');
      expect(chat.usage?.completion_tokens).toBeGreaterThan(0);
    }
    const stream = await openai.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 6, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    expect(chunks.length).toBeGreaterThan(2);
    expect(chunks.at(-1)!.usage?.completion_tokens).toBeGreaterThan(0);
    const completion = await openai.completions.create({ model: `${ns}/tiny`, prompt: 'Once upon a time', max_tokens: 3, temperature: 0 });
    expect(completion.choices[0]!.text.length).toBeGreaterThan(0);
  }, 120_000);

  it('an unknown model is a 404 in OpenAI error format naming the models', async () => {
    const err = await openai.chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Hi' }] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.NotFoundError);
    const e = err as InstanceType<typeof OpenAI.NotFoundError>;
    expect(e.status).toBe(404);
    expect(e.code).toBe('model_not_found');
    expect(e.message).toContain("The model 'gpt-4o' does not exist; this gateway serves 'parked', 'sleepy', 'tiny'.");
  });

  it('a model with minReplicas 0 goes to zero when idle, wakes for requests through the gateway, and goes back to zero; no request is lost', async () => {
    const atZero = async (what: string) => {
      const m = await waitFor(what, async () => {
        const m = await getModel(client, ns, 'sleepy');
        const available = m.status?.conditions?.find((c) => c.type === 'Available');
        return m.status?.replicas === 0 && m.status.readyReplicas === 0 && available?.reason === 'ScaledToZero' ? m : undefined;
      }, (IDLE_SECONDS + 60) * 1000, 1000);
      expect(m.status?.phase).toBe('Ready');
      expect(await replicasColumn(ns, 'sleepy')).toBe('0');
      const available = m.status!.conditions!.find((c) => c.type === 'Available')!;
      expect(available.message).toMatch(new RegExp(`^scaled to zero replicas: no requests for ${IDLE_SECONDS} s`));
    };
    await atZero('sleepy scaled to zero');
    const pods = async () => JSON.parse(await kubectl('get', 'pods', '-n', ns, '-l', 'app.kubernetes.io/instance=sleepy,app.kubernetes.io/component=server', '-o', 'json')).items.length;
    await waitFor('sleepy pods gone', async () => ((await pods()) === 0 ? true : undefined), 90_000, 1000);

    // Three requests at once while at zero: the gateway holds them, the operator starts a replica, all are answered.
    const started = Date.now();
    const results = await Promise.allSettled([0, 1, 2].map((i) => openai.chat.completions.create({ model: 'sleepy', messages: [{ role: 'user', content: `Wake up ${i}` }], max_tokens: 3, temperature: 0 })));
    const wakeSeconds = (Date.now() - started) / 1000;
    console.log(`woken from zero and answered in ${wakeSeconds.toFixed(1)} s`);
    expect(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
    const events = await kubectl('get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=sleepy', '-o', 'jsonpath={range .items[*]}{.reason}: {.message}{"\\n"}{end}');
    expect(events).toMatch(/ScaledToZero: 1 -> 0 replicas: no requests for \d+ s/);
    expect(events).toMatch(/ScaledFromZero: 0 -> 1 replicas: \d+ requests held by the gateway need 1 replicas/);
    const metrics = await (await fetch(`${gw.url}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`npuserve_gateway_requests_total\\{model="${ns}/sleepy",code="200"\\} [4-9]`));
    expect(metrics).toMatch(new RegExp(`npuserve_gateway_hold_seconds_count\\{model="${ns}/sleepy",outcome="ready"\\} [3-9]`));
    expect(metrics).toMatch(new RegExp(`npuserve_gateway_held_requests\\{model="${ns}/sleepy"\\} 0`));
    // The gateway removes its held-requests annotation once it holds nothing.
    await waitFor('the held-requests annotation removed', async () => {
      const m = await getModel(client, ns, 'sleepy');
      return Object.keys(m.metadata.annotations ?? {}).some((k) => k.startsWith('held-requests.npuserve.io/')) ? undefined : true;
    }, 20_000, 500);

    await atZero('sleepy back at zero');
  }, 300_000);

  it('a precision change rolls out under load through the gateway without a failed request', async () => {
    const before = (await getModel(client, ns, 'tiny')).status!.currentRevision!.name;
    let running = true;
    let ok = 0;
    const failures: string[] = [];
    const workers = [0, 1].map(async (w) => {
      for (let i = 0; running; i++) {
        try {
          const r = await openai.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: `worker ${w} request ${i}` }], max_tokens: 4, temperature: 0 });
          if (r.choices.length === 1) ok++;
        } catch (e) {
          failures.push(`${new Date().toISOString()} ${(e as Error).message}`);
        }
      }
    });
    await client.patch(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/tiny`, { spec: { precision: 'INT8' } }, 'merge');
    await waitFor('the INT8 revision rolled out', async () => {
      const m = await getModel(client, ns, 'tiny');
      return m.status?.currentRevision?.name !== before && m.status?.currentRevision?.precision === 'INT8' && !m.status.targetRevision && m.status.readyReplicas === 1 ? true : undefined;
    }, 240_000, 1000);
    // The old pod's drain (preStop, then SIGTERM) ends after the new revision is current.
    await new Promise((r) => setTimeout(r, 10_000));
    running = false;
    await Promise.all(workers);
    console.log(`rollout under load: ${ok} requests answered, ${failures.length} failed`);
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(10);
  }, 300_000);

  it('a request held past the deadline gets a 503 with Retry-After', async () => {
    const started = Date.now();
    const res = await fetch(`${impatient.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'parked', messages: [{ role: 'user', content: 'Hi' }] }) });
    expect(Date.now() - started).toBeGreaterThanOrEqual(2900);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('7');
    expect((await res.json()).error).toMatchObject({ type: 'service_unavailable', code: 'no_ready_replica', param: 'model' });
    expect((await getModel(client, ns, 'parked')).status?.replicas ?? 0).toBe(0);
  }, 30_000);
});
