// The chart's dashboard and alert rules against a real Prometheus scraping a real `npuserve serve`
// (a tiny INT8 test model under a load of 200s, 429s and 400s) and the operator's /metrics (its
// registry served over HTTP after a reconciler and the autoscaler went through known events on a
// recording API client: a model converted and serving, one rolling out, one whose accuracy gate
// failed, one whose conversion failed, a reconcile refused by the API server), and a gateway routing
// to the server (its first request held until the replica is ready). Every dashboard query
// and every alert expression must answer with samples. The same against the operator on the local
// cluster is test/integration/prometheus.test.ts.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { createLogger } from '../../common/log.js';
import { createGatewayApp } from '../../gateway/app.js';
import { Holds } from '../../gateway/hold.js';
import { GatewayMetrics } from '../../gateway/metrics.js';
import { Routing } from '../../gateway/routing.js';
import { Autoscaler } from '../../operator/autoscaler/autoscaler.js';
import { parseOperatorConfig } from '../../operator/config.js';
import { Controller } from '../../operator/controller.js';
import { EventRecorder } from '../../operator/events.js';
import { ApiError } from '../../operator/kube/client.js';
import { registry } from '../../operator/metrics.js';
import { FINALIZER, Reconciler, type World } from '../../operator/reconcile.js';
import type { KubeObject, NPUModel } from '../../operator/types.js';
import { convertedModel, testModel } from './helpers.js';
import { dashboardQueries, ruleQueries, startPrometheus, type PrometheusProcess } from './prometheus-process.js';
import { RecordingKube } from './recording-kube.js';
import { startServer, type ServerProcess } from './server-process.js';

const NS = 'ml';
const MODEL = 'chat';
const silent = createLogger({ format: 'json', level: 'error', write: () => undefined });

function npuModel(name: string, spec: Partial<NPUModel['spec']> = {}): NPUModel {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name, namespace: NS, uid: `uid-${name}`, generation: 1, resourceVersion: '1', finalizers: [FINALIZER] },
    spec: { source: { uri: `file:///models/${name}` }, precision: 'INT8', replicas: 1, ...spec },
  };
}

/**
 * The operator's state after known events, on a recording API client: `chat` (served by the real
 * server on `port`) converted in 42 s with cosine 0.995, ready and autoscaled; `rolling` converted,
 * its pods not ready; `gated` refused by the accuracy gate; `broken` failed to convert. Returns the
 * revision `chat` serves.
 */
async function operatorEvents(port: number): Promise<string> {
  const rec = new RecordingKube();
  const kube = rec.operatorApi();
  const items: Record<keyof World, KubeObject[]> = { models: [], jobs: [], deployments: [], services: [], networkPolicies: [], pods: [] };
  const informer = (list: KubeObject[]) => ({
    get: (key: string) => list.find((o) => `${o.metadata.namespace}/${o.metadata.name}` === key),
    list: (filter?: (o: KubeObject) => boolean) => (filter ? list.filter(filter) : list),
  });
  const world = Object.fromEntries(Object.entries(items).map(([k, v]) => [k, informer(v)])) as unknown as World;
  const cfg = parseOperatorConfig(['--leader-elect', 'false', '--scrape-interval-seconds', '1'], {});
  const events = new EventRecorder(kube, 'test', silent);
  const reconciler = new Reconciler(kube, world, cfg, events, silent);
  const t0 = Date.now() - 60_000;
  const at = (s: number) => new Date(t0 + s * 1000).toISOString();
  const lastStatus = (name: string) => rec.bodies('update', `/npumodels/${name}/status`).at(-1)?.status;
  const reconcile = async (m: NPUModel) => {
    const i = items.models.findIndex((x) => x.metadata.name === m.metadata.name);
    items.models[i < 0 ? items.models.length : i] = { ...m, status: lastStatus(m.metadata.name) ?? m.status } as KubeObject;
    await reconciler.reconcile(`${NS}/${m.metadata.name}`);
  };
  const finishJob = (name: string, exitCode: number, message: object, seconds: number) => {
    const job = rec.bodies('create', '/jobs').find((j) => j.metadata.name.startsWith(`${name}-convert-`));
    const done = exitCode === 0 ? { succeeded: 1, completionTime: at(seconds), conditions: [{ type: 'Complete', status: 'True' }] } : { failed: 1, conditions: [{ type: 'Failed', status: 'True', lastTransitionTime: at(seconds) }] };
    items.jobs.push({ ...job, status: { startTime: at(0), ...done } });
    items.pods.push({ metadata: { name: `${job.metadata.name}-x`, namespace: NS, labels: { 'job-name': job.metadata.name } }, status: { phase: exitCode === 0 ? 'Succeeded' : 'Failed', containerStatuses: [{ state: { terminated: { exitCode, message: JSON.stringify(message) } } }] } } as KubeObject);
  };

  const chat = npuModel(MODEL, { service: { port }, runtime: { maxWaitingRequests: 4, maxBatchSize: 2 }, autoscaling: { minReplicas: 1, maxReplicas: 3, ttftP95TargetMs: 800 } });
  const models = [chat, npuModel('rolling'), npuModel('gated'), npuModel('broken')];
  for (const m of models) await reconcile(m);
  finishJob(MODEL, 0, { precision: 'INT8', accuracy: { cosineSimilarity: 0.995 } }, 42);
  finishJob('rolling', 0, { precision: 'INT8', accuracy: { cosineSimilarity: 0.993 } }, 30);
  finishJob('gated', 3, { error: 'cosine similarity 0.91 is below the gate 0.99' }, 50);
  finishJob('broken', 1, { error: "tensor 'lm_head.weight' is missing" }, 5);
  for (const m of models) await reconcile(m);
  // chat's Deployment rolled out: one ready pod, the real server.
  const revision = lastStatus(MODEL).revisions[0].name as string;
  const deployment = rec.bodies('create', '/deployments').find((d) => d.metadata.name === MODEL);
  items.deployments.push({ ...deployment, status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 } });
  items.pods.push({ metadata: { name: `${MODEL}-0`, namespace: NS, labels: { ...deployment.spec.template.metadata.labels } }, spec: { nodeName: 'n1' }, status: { phase: 'Running', podIP: '127.0.0.1', conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ ready: true, state: { running: {} } }] } } as KubeObject);
  await new Autoscaler(kube, world, cfg, events, silent).pass();
  await reconcile(chat); // a reconcile after the autoscaler's pass leaves its series alone
  expect(lastStatus(MODEL)).toMatchObject({ readyReplicas: 1, currentRevision: { name: revision } });
  expect(lastStatus('rolling').conditions).toContainEqual(expect.objectContaining({ type: 'Progressing', reason: 'RollingOut' }));

  // A reconcile the API server refuses (403) through the controller's worker.
  const refusing = new RecordingKube();
  refusing.objects.set(`/apis/npuserve.io/v1alpha1/namespaces/${NS}/npumodels/refused`, npuModel('refused'));
  refusing.failWith = (c) => (c.verb === 'create' && c.path.endsWith('/jobs') ? new ApiError(403, 'Forbidden', 'POST jobs: 403 forbidden') : undefined);
  const controller = new Controller(refusing.operatorApi(), parseOperatorConfig(['--leader-elect', 'false', '--namespaces', NS, '--workers', '1'], {}), silent);
  const stop = new AbortController();
  await controller.startInformers(stop.signal);
  const run = controller.runWorkers(stop.signal);
  const deadline = Date.now() + 5000;
  while (!(await registry.metrics()).includes('npuserve_operator_reconcile_errors_total{reason="Forbidden"}') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  stop.abort();
  await run;
  return revision;
}

/** Rounds of completions at once, a second apart (so rates span scrapes): more than the batch and queue hold (429s), a few refused as bad (400s). */
async function load(server: ServerProcess): Promise<Map<number, number>> {
  const statuses = new Map<number, number>();
  const request = async (i: number) => {
    const bad = i % 10 === 9;
    const body = { model: MODEL, prompt: `Once upon a time ${i}`, max_tokens: bad ? -1 : 8, temperature: 0 };
    const r = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    await r.arrayBuffer();
    statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
  };
  for (let round = 0; round < 4; round++) {
    await Promise.all([...Array.from({ length: 20 }, (_, i) => request(round * 20 + i)), new Promise((r) => setTimeout(r, 1000))]);
  }
  return statuses;
}

/**
 * `npuserve gateway`'s app in this process, serving the model `chat` of namespace NS from the real
 * server on `serverPort`, as it would from the model Service's EndpointSlice. Its first request is
 * held (no ready replica yet) until the slice arrives, then 4 more go through, so its requests,
 * routing and held-requests series all exist.
 */
async function gatewayTraffic(serverPort: number): Promise<{ gateway: Server; statuses: number[] }> {
  const routing = new Routing(1.25);
  const metrics = new GatewayMetrics();
  const holds = new Holds((m, n) => metrics.held.set({ model: m }, n));
  routing.setModels([npuModel(MODEL)]);
  const app = createGatewayApp({ routing, holds, metrics, ready: () => true }, { prefixChars: 100, holdTimeoutSeconds: 30, retryAfterSeconds: 5, bodyLimitBytes: 2 ** 20 }, silent);
  const gateway = app.listen(0, '127.0.0.1');
  await new Promise((r) => gateway.once('listening', r));
  const url = `http://127.0.0.1:${(gateway.address() as AddressInfo).port}`;
  const chat = (i: number) => fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: `${NS}/${MODEL}`, messages: [{ role: 'user', content: `Hello ${i}` }], max_tokens: 4 }) }).then(async (r) => (await r.arrayBuffer(), r.status));
  const held = chat(0);
  for (let i = 0; i < 100 && !(await metrics.registry.getSingleMetricAsString('npuserve_gateway_held_requests')).includes(' 1'); i++) await new Promise((r) => setTimeout(r, 20));
  const slice = { metadata: { namespace: NS, name: `${MODEL}-abc`, labels: { 'kubernetes.io/service-name': MODEL } }, addressType: 'IPv4', ports: [{ name: 'http', port: serverPort }], endpoints: [{ addresses: ['127.0.0.1'], conditions: { ready: true } }] };
  for (const m of routing.setSlices([slice])) holds.release(m);
  const statuses = [await held];
  for (let i = 1; i < 5; i++) statuses.push(await chat(i));
  return { gateway, statuses };
}

describe('the dashboard and the alert rules against a real Prometheus', () => {
  let server: ServerProcess;
  let operator: Server;
  let gateway: Server;
  let gatewayStatuses: number[];
  let prometheus: PrometheusProcess;
  let statuses: Map<number, number>;

  beforeAll(async () => {
    server = await startServer(await convertedModel(testModel('prometheus'), 'INT8', 2), ['--served-model-name', MODEL, '--max-batch-size', '2', '--max-waiting-requests', '4', '--max-seq-len', '256', '--kv-cache-tokens', '2048', '--threads', '1']);
    const serverPort = Number(new URL(server.url).port);
    const revision = await operatorEvents(serverPort);
    operator = createServer((_req, res) => void registry.metrics().then((text) => res.setHeader('content-type', registry.contentType).end(text)));
    await new Promise<void>((r) => operator.listen(0, '127.0.0.1', r));
    ({ gateway, statuses: gatewayStatuses } = await gatewayTraffic(serverPort));
    prometheus = await startPrometheus([
      // The labels the chart's PodMonitor gives a serving pod's series: namespace, pod, and the pod's revision.
      { job_name: 'npuserve-models', static_configs: [{ targets: [`127.0.0.1:${serverPort}`], labels: { namespace: NS, pod: `${MODEL}-0`, revision } }] },
      { job_name: 'npuserve-operator', honor_labels: true, static_configs: [{ targets: [`127.0.0.1:${(operator.address() as AddressInfo).port}`] }] },
      { job_name: 'npuserve-gateway', static_configs: [{ targets: [`127.0.0.1:${(gateway.address() as AddressInfo).port}`] }] },
    ]);
    await prometheus.scraped();
    statuses = await load(server);
    await prometheus.scraped(2);
  }, 180_000);

  afterAll(async () => {
    await prometheus?.stop();
    await new Promise((r) => operator?.close(r));
    gateway?.closeAllConnections();
    await new Promise((r) => gateway?.close(r));
    expect(await server?.stop()).toBe(0);
  });

  it('the load produced 200s, 429s and 400s; the gateway answered its held request and the rest', () => {
    expect([...statuses.keys()].sort()).toEqual([200, 400, 429]);
    expect(gatewayStatuses).toEqual([200, 200, 200, 200, 200]);
  });

  it('every dashboard query answers with samples', async () => {
    const empty: string[] = [];
    const queries = dashboardQueries({ namespace: NS, model: MODEL }, '1m');
    for (const q of queries) {
      const r = await prometheus.query(q.expr);
      expect(r.status, `${q.where}: ${q.expr}: ${r.error}`).toBe('success');
      const values = r.data!.result.map((s) => Number(s.value[1]));
      if (!values.some(Number.isFinite)) empty.push(`${q.where}: ${q.expr} -> ${JSON.stringify(r.data!.result)}`);
    }
    expect(empty).toEqual([]);
    expect(queries.length).toBeGreaterThan(30);
  });

  it('every alert expression answers with samples, and Prometheus evaluates every rule without error', async () => {
    const empty: string[] = [];
    for (const q of ruleQueries()) {
      const r = await prometheus.query(q.expr);
      expect(r.status, `${q.where}: ${q.expr}: ${r.error}`).toBe('success');
      if (r.data!.result.length === 0) empty.push(`${q.where}: ${q.expr}`);
    }
    expect(empty).toEqual([]);
    const rules = (await (await fetch(`${prometheus.url}/api/v1/rules`)).json()) as { data: { groups: Array<{ rules: Array<{ name: string; health: string; lastError?: string }> }> } };
    const all = rules.data.groups.flatMap((g) => g.rules);
    expect(all.length).toBe(ruleQueries().length);
    expect(all.filter((r) => r.health !== 'ok')).toEqual([]);
  });

  it('counts exactly the 429s and 400s the clients saw', async () => {
    const r = await prometheus.query(`sum by (status_code) (npuserve_request_errors_total{namespace="${NS}", model="${MODEL}"})`);
    const byCode = Object.fromEntries(r.data!.result.map((s) => [s.metric.status_code, Number(s.value[1])]));
    expect(byCode).toEqual({ '400': statuses.get(400), '429': statuses.get(429) });
  });
});
