// The reconcile loop against a recording API client: what it creates and writes for a model as the
// world moves (finalizer, conversion Job, then Deployment/Service/NetworkPolicy once converted), and
// what a user reads when something is wrong (a name too long, a stuck pod, a prebuilt file's real
// precision, a 409 on the status write: requeued without a second event).
import { describe, expect, it } from 'vitest';

import { createLogger } from '../common/log.js';
import { RecordingKube } from '../test/unit/recording-kube.js';
import { parseOperatorConfig } from './config.js';
import { Controller } from './controller.js';
import { EventRecorder } from './events.js';
import { ApiError } from './kube/client.js';
import { autoscalerDesiredReplicas, registry } from './metrics.js';
import { FINALIZER, Reconciler, type World } from './reconcile.js';
import type { KubeObject, NPUModel } from './types.js';

const NS = 'ml';
const MODELS = `/apis/npuserve.io/v1alpha1/namespaces/${NS}/npumodels`;
const JOBS = `/apis/batch/v1/namespaces/${NS}/jobs`;
const EVENTS = `/api/v1/namespaces/${NS}/events`;
const T0 = Date.parse('2026-03-01T12:00:00Z');

function model(name = 'tiny', spec: Partial<NPUModel['spec']> = {}, finalizers = [FINALIZER]): NPUModel {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name, namespace: NS, uid: `uid-${name}`, generation: 1, resourceVersion: '7', finalizers },
    spec: { source: { uri: 'file:///models/tiny' }, precision: 'INT8', replicas: 1, ...spec },
  };
}

/** Informer stand-ins over arrays the test changes between reconciles. */
function world() {
  const items: Record<keyof World, KubeObject[]> = { models: [], jobs: [], deployments: [], services: [], networkPolicies: [], pods: [] };
  const informer = (list: KubeObject[]) => ({
    get: (key: string) => list.find((o) => `${o.metadata.namespace}/${o.metadata.name}` === key),
    list: (filter?: (o: KubeObject) => boolean) => (filter ? list.filter(filter) : list),
  });
  const w = Object.fromEntries(Object.entries(items).map(([k, v]) => [k, informer(v)])) as unknown as World;
  return { items, w };
}

function setup(opts: { stuckAfterMs?: number } = {}) {
  const rec = new RecordingKube();
  const kube = rec.operatorApi();
  const { items, w } = world();
  const cfg = parseOperatorConfig(['--leader-elect', 'false'], {});
  const logs: string[] = [];
  const log = createLogger({ format: 'json', level: 'debug', write: (line) => void logs.push(line) });
  const reconciler = new Reconciler(kube, w, cfg, new EventRecorder(kube, 'test', log), log, { stuckAfterMs: opts.stuckAfterMs ?? 300_000, now: () => T0 + 600_000 });
  return { rec, items, reconciler, logs };
}

const events = (rec: RecordingKube) => rec.bodies('create', '/events').map((e) => `${e.type} ${e.reason}: ${e.message}`);
const lastStatus = (rec: RecordingKube) => rec.bodies('update', '/status').at(-1)?.status;

/** The Job the operator created, as the API server would show it once it has run. */
function finishedJob(rec: RecordingKube, terminationMessage: object) {
  const job = rec.bodies('create', '/jobs')[0];
  return {
    job: { ...job, status: { succeeded: 1, conditions: [{ type: 'Complete', status: 'True' }] } },
    pod: { metadata: { name: `${job.metadata.name}-x7k2p`, namespace: NS, labels: { 'job-name': job.metadata.name } }, status: { phase: 'Succeeded', containerStatuses: [{ state: { terminated: { exitCode: 0, message: JSON.stringify(terminationMessage) } } }] } },
  };
}

describe('Reconciler', () => {
  it('adds the finalizer first, then converts, then deploys the converted revision', async () => {
    const { rec, items, reconciler } = setup();
    items.models.push(model('tiny', {}, []));
    await reconciler.reconcile(`${NS}/tiny`);
    expect(rec.lines()).toEqual([`patch ${MODELS}/tiny`]);
    expect(rec.calls[0].body).toEqual({ metadata: { finalizers: [FINALIZER], resourceVersion: '7' } });

    items.models[0] = model();
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    expect(rec.lines()).toEqual([`create ${JOBS}`, `create ${EVENTS}`, `update ${MODELS}/tiny/status`]);
    expect(events(rec)).toEqual([expect.stringMatching(/^Normal ConversionStarted: converting file:\/\/\/models\/tiny to INT8 \(revision r[0-9a-f]{10}\) in Job tiny-convert-r[0-9a-f]{10}$/)]);
    expect(lastStatus(rec)).toMatchObject({ phase: 'Converting' });

    const { job, pod } = finishedJob(rec, { precision: 'INT8', accuracy: { cosineSimilarity: 0.9951, top1Agreement: 0.9 } });
    items.jobs.push(job);
    items.pods.push(pod);
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    expect(rec.lines()).toEqual([
      `create /apis/apps/v1/namespaces/${NS}/deployments`,
      `create /api/v1/namespaces/${NS}/services`,
      `create /apis/networking.k8s.io/v1/namespaces/${NS}/networkpolicies`,
      `update ${MODELS}/tiny/status`,
      `create ${EVENTS}`,
    ]);
    expect(events(rec)).toEqual([expect.stringMatching(/^Normal Converted: revision r[0-9a-f]{10} converted to INT8, cosine similarity vs FP32 0.99510$/)]);
    expect(lastStatus(rec)).toMatchObject({ phase: 'Deploying', revisions: [{ precision: 'INT8', accuracy: { cosineSimilarity: 0.9951 } }] });
  });

  it("sizes pods from the footprint the conversion reports; under too small a memory limit it leaves the running template alone (replicas still follow) and says why once", async () => {
    const { rec, items, reconciler } = setup();
    items.models.push(model());
    await reconciler.reconcile(`${NS}/tiny`);
    const footprint = { fileBytes: 50_000_000, layers: 2, kvHeads: 2, headDim: 16 };
    const { job, pod } = finishedJob(rec, { precision: 'INT8', model: footprint });
    items.jobs.push(job);
    items.pods.push(pod);
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    expect(lastStatus(rec).revisions[0].model).toEqual(footprint);
    // 50 000 000 B + 32768 tokens x 2 layers x 2 x 2 KV heads x 16 x 2 B (8 MiB) + 2 x 2048 x 8 x 4 B of RoPE tables + 384 MiB = 439.8 MiB.
    const created = rec.bodies('create', '/deployments')[0];
    expect(created.spec.template.spec.containers[0].resources).toEqual({ requests: { cpu: '4', memory: '440Mi', 'huawei.com/Ascend910': '1' }, limits: { cpu: '4', memory: '440Mi', 'huawei.com/Ascend910': '1' } });

    items.deployments.push({ ...created, status: { observedGeneration: 1, replicas: 1, updatedReplicas: 1, readyReplicas: 1, availableReplicas: 1 } });
    const tight = { ...model('tiny', { replicas: 3, runtime: { resources: { limits: { memory: '256Mi' } } } }), status: lastStatus(rec) };
    items.models[0] = tight;
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    const replaced = rec.bodies('update', '/deployments/tiny').at(-1);
    expect(replaced.spec.replicas).toBe(3);
    expect(replaced.spec.template).toEqual(created.spec.template);
    expect(lastStatus(rec)).toMatchObject({ phase: 'Degraded', conditions: expect.arrayContaining([expect.objectContaining({ type: 'Degraded', reason: 'InsufficientMemory' })]) });
    expect(events(rec)).toEqual([expect.stringMatching(/^Warning InsufficientMemory: spec\.runtime\.resources\.limits\.memory 256Mi \(256 MiB\) is below the 440 MiB revision r[0-9a-f]{10} needs per pod: .*; 1 of 3 replicas keep serving as they were$/), expect.stringMatching(/^Normal RolloutComplete: revision r[0-9a-f]{10} \(INT8\) serves 1 of 3 replicas$/)]);

    items.models[0] = { ...tight, status: lastStatus(rec) };
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    expect(events(rec)).toEqual([]);
  });

  it('records Converted once when the status write that records the revision first meets a 409', async () => {
    const { rec, items, reconciler } = setup();
    items.models.push(model());
    await reconciler.reconcile(`${NS}/tiny`);
    const { job, pod } = finishedJob(rec, { precision: 'INT8' });
    items.jobs.push(job);
    items.pods.push(pod);
    let conflicts = 1;
    rec.failWith = (c) => (c.verb === 'update' && c.path.endsWith('/status') && conflicts-- > 0 ? new ApiError(409, 'Conflict', 'PUT status: 409 the object has been modified') : undefined);
    rec.calls.splice(0);
    await expect(reconciler.reconcile(`${NS}/tiny`)).rejects.toThrow(/409/);
    expect(events(rec)).toEqual([]);
    // The Deployment created before the failed write is in the cache on the retry.
    items.deployments.push({ ...rec.bodies('create', '/deployments')[0], status: {} });
    await reconciler.reconcile(`${NS}/tiny`);
    expect(events(rec).filter((e) => e.includes('Converted'))).toHaveLength(1);
  });

  it('gives two 50-character names that differ in their last character their own Jobs', async () => {
    const { rec, items, reconciler } = setup();
    const a = `${'m'.repeat(49)}a`;
    const b = `${'m'.repeat(49)}b`;
    items.models.push(model(a), model(b));
    await reconciler.reconcile(`${NS}/${a}`);
    await reconciler.reconcile(`${NS}/${b}`);
    const names = rec.bodies('create', '/jobs').map((j) => j.metadata.name);
    expect(names).toHaveLength(2);
    expect(names[0]).not.toBe(names[1]);
    for (const n of names) expect(n.length).toBeLessThanOrEqual(63);
    expect(rec.bodies('update', '/status').map((s) => s.status.phase)).toEqual(['Converting', 'Converting']);
  });

  it('refuses a name over 63 characters with a condition and an event, creating nothing', async () => {
    const { rec, items, reconciler } = setup();
    const long = 'm'.repeat(250); // the API server takes names up to 253 characters
    items.models.push(model(long));
    await reconciler.reconcile(`${NS}/${long}`);
    expect(rec.lines()).toEqual([`update ${MODELS}/${long}/status`, `create ${EVENTS}`]);
    const status = lastStatus(rec);
    expect(status.phase).toBe('Failed');
    expect(status.conditions).toContainEqual(expect.objectContaining({ type: 'Converted', status: 'False', reason: 'InvalidName', message: expect.stringMatching(/\(250 characters\) cannot name the model's Service and labels: it must be at most 63 characters/) }));
    expect(events(rec)).toEqual([expect.stringMatching(/^Warning InvalidName: metadata.name 'm{250}'/)]);
    expect(rec.bodies('create', '/events')[0].metadata.name.length).toBeLessThanOrEqual(253);
  });

  it('suspends a conversion Job whose pod does not start and says why (ConversionStuck)', async () => {
    const { rec, items, reconciler } = setup({ stuckAfterMs: 300_000 });
    items.models.push(model());
    await reconciler.reconcile(`${NS}/tiny`);
    const job = rec.bodies('create', '/jobs')[0];
    items.jobs.push({ ...job, status: { active: 1 } });
    items.pods.push({
      metadata: { name: `${job.metadata.name}-x7k2p`, namespace: NS, labels: { 'job-name': job.metadata.name } },
      spec: { nodeName: 'local-npu-0' },
      status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: new Date(T0).toISOString() }], containerStatuses: [{ state: { waiting: { reason: 'ContainerCreating' } } }] },
    } as KubeObject);
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/tiny`);
    const patch = rec.bodies('patch', `/jobs/${job.metadata.name}`)[0];
    expect(patch.spec).toEqual({ suspend: true });
    const status = lastStatus(rec);
    expect(status.phase).toBe('Failed');
    const converted = status.conditions.find((c: { type: string }) => c.type === 'Converted');
    expect(converted).toMatchObject({ status: 'False', reason: 'ConversionStuck' });
    expect(converted.message).toMatch(/pod tiny-convert-r\w+-x7k2p on node local-npu-0 has not started in 600 s \(ContainerCreating\); Job tiny-convert-r\w+ is suspended to free its NPU: fix the cause, then delete the Job to retry/);
    expect(events(rec)).toEqual([`Warning ConversionStuck: ${converted.message}`]);
  });

  it('tells a foreign Service of the model name (invisible to its label-filtered cache) from its own Deployment not yet in the cache', async () => {
    const { rec, items, reconciler } = setup();
    const m = model();
    const r = { name: 'r0123456789', precision: 'INT8', artifact: '/artifacts/tiny/r0123456789.npu' };
    items.models.push({ ...m, status: { revisions: [r], currentRevision: r } });
    const ours = { metadata: { name: 'tiny', namespace: NS, ownerReferences: [{ apiVersion: 'npuserve.io/v1alpha1', kind: 'NPUModel', name: 'tiny', uid: 'uid-tiny', controller: true }] }, status: { readyReplicas: 1 } };
    rec.objects.set(`/apis/apps/v1/namespaces/${NS}/deployments/tiny`, ours);
    rec.objects.set(`/api/v1/namespaces/${NS}/services/tiny`, { metadata: { name: 'tiny', namespace: NS, labels: { app: 'someone-else' } } });
    // The revision in status is not the desired one's name: serve it, converting the desired one.
    await reconciler.reconcile(`${NS}/tiny`);
    expect(rec.lines(true).filter((l) => l.includes('/deployments') || l.includes('/services'))).toEqual([
      `create /apis/apps/v1/namespaces/${NS}/deployments`,
      `get /apis/apps/v1/namespaces/${NS}/deployments/tiny`,
      `create /api/v1/namespaces/${NS}/services`,
      `get /api/v1/namespaces/${NS}/services/tiny`,
    ]);
    expect(events(rec).filter((e) => e.includes('ConflictingObject'))).toEqual(['Warning ConflictingObject: Service tiny exists and is not controlled by this NPUModel; leaving it alone']);
    const status = lastStatus(rec);
    expect(status.phase).toBe('Failed');
    expect(status.conditions.find((c: { type: string }) => c.type === 'Degraded')).toMatchObject({ status: 'True', reason: 'ConflictingObject', message: 'Service tiny exists and is not controlled by this NPUModel; leaving it alone' });
    expect(status.readyReplicas).toBe(1);
  });

  it('inspects a prebuilt .npu without an NPU and reports the precision the file holds', async () => {
    const { rec, items, reconciler } = setup();
    items.models.push(model('pre', { source: { uri: 'file:///models/tiny.int8.npu', format: 'npu' }, precision: 'FP16' }, []));
    await reconciler.reconcile(`${NS}/pre`);
    const job = rec.bodies('create', '/jobs')[0];
    expect(job.metadata.name).toMatch(/^pre-inspect-r[0-9a-f]{10}$/);
    const c = job.spec.template.spec.containers[0];
    expect(c.args).toEqual(['inspect', '--model', '/source/models/tiny.int8.npu', '--json', '--termination-log', '/dev/termination-log']);
    expect(c.resources).toEqual({ requests: { cpu: '100m' }, limits: {} });

    const { job: done, pod } = finishedJob(rec, { input: '/source/models/tiny.int8.npu', precision: 'INT8' });
    items.jobs.push(done);
    items.pods.push(pod);
    rec.calls.splice(0);
    await reconciler.reconcile(`${NS}/pre`);
    const status = lastStatus(rec);
    expect(status.revisions).toEqual([expect.objectContaining({ precision: 'INT8', artifact: '/source/models/tiny.int8.npu' })]);
    expect(status.conditions.find((x: { type: string }) => x.type === 'Converted')).toMatchObject({ status: 'True', reason: 'Prebuilt', message: expect.stringMatching(/\(INT8\) .*spec.precision FP16 does not apply to a prebuilt .npu/) });
    expect(events(rec)).toEqual([
      expect.stringMatching(/^Normal Inspected: revision r\w+: prebuilt \/source\/models\/tiny.int8.npu is INT8$/),
      expect.stringMatching(/^Warning PrecisionMismatch: spec.precision is FP16 but the prebuilt \/source\/models\/tiny.int8.npu is INT8/),
    ]);
  });
});

describe('Controller', () => {
  it('requeues a 409 on the status write as a conflict, not a failure, and records ConversionStarted once', async () => {
    const rec = new RecordingKube();
    const m = model();
    rec.objects.set(`${MODELS}/tiny`, m);
    const cfg = parseOperatorConfig(['--leader-elect', 'false', '--namespaces', NS, '--workers', '1'], {});
    const logs: string[] = [];
    const controller = new Controller(rec.operatorApi(), cfg, createLogger({ format: 'json', level: 'debug', write: (line) => void logs.push(line) }));
    const stop = new AbortController();
    await controller.startInformers(stop.signal);
    expect(logs.find((l) => l.includes('"msg":"caches synced"'))).toMatch(/"watchedNamespaces":\["ml"\]/);

    let conflicts = 1;
    rec.failWith = (c) => (c.verb === 'update' && c.path.endsWith('/status') && conflicts-- > 0 ? new ApiError(409, 'Conflict', 'PUT status: 409 the object has been modified') : undefined);
    const run = controller.runWorkers(stop.signal);
    const deadline = Date.now() + 5000;
    while (rec.bodies('update', '/status').length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    await run;
    expect(logs.filter((l) => l.includes('"msg":"conflict; requeued"'))).toEqual([expect.stringMatching(/"level":"debug".*409 the object has been modified/)]);
    expect(logs.filter((l) => l.includes('reconcile failed'))).toEqual([]);
    expect(rec.bodies('update', '/status')).toHaveLength(2);
    expect(events(rec).filter((e) => e.includes('ConversionStarted'))).toHaveLength(1);
  });
});

/** One sample of the operator's registry, by its exposition line's name and labels. */
async function sample(series: string): Promise<number | undefined> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('the operator\'s model metrics', () => {
  it('exports replicas, targets, conditions, revisions, the gate cosine and the conversion\'s duration after a conversion, and drops them when the model goes', async () => {
    const { rec, items, reconciler } = setup();
    const spec = { replicas: 2, runtime: { maxWaitingRequests: 64 }, conversion: { accuracyGate: { minCosineSimilarity: 0.98 } }, autoscaling: { minReplicas: 1, maxReplicas: 5, ttftP95TargetMs: 800 } };
    items.models.push(model('observed', spec));
    await reconciler.reconcile(`${NS}/observed`);
    const l = `namespace="${NS}",model="observed"`;
    expect(await sample(`npuserve_model_replicas_desired{${l}}`)).toBe(2);
    expect(await sample(`npuserve_model_replicas_ready{${l}}`)).toBe(0);
    expect(await sample(`npuserve_model_max_replicas{${l}}`)).toBe(5);
    expect(await sample(`npuserve_model_ttft_p95_target_seconds{${l}}`)).toBe(0.8);
    expect(await sample(`npuserve_model_max_waiting_requests{${l}}`)).toBe(64);
    expect(await sample(`npuserve_accuracy_gate_min_cosine_similarity{${l}}`)).toBe(0.98);
    expect(await sample(`npuserve_model_status_condition{${l},condition="Converted",reason="Converting"}`)).toBe(0);
    expect(await sample(`npuserve_model_status_condition{${l},condition="Progressing",reason="Converting"}`)).toBe(1);

    const { job, pod } = finishedJob(rec, { precision: 'INT8', accuracy: { cosineSimilarity: 0.9951 } });
    job.status = { ...job.status, startTime: new Date(T0).toISOString(), completionTime: new Date(T0 + 42_000).toISOString() };
    items.jobs.push(job);
    items.pods.push(pod);
    await reconciler.reconcile(`${NS}/observed`);
    const rev = lastStatus(rec).revisions[0].name;
    expect(await sample(`npuserve_accuracy_gate_cosine_similarity{${l},revision="${rev}"}`)).toBe(0.9951);
    expect(await sample(`npuserve_model_status_condition{${l},condition="Converted",reason="Converted"}`)).toBe(1);
    expect(await sample(`npuserve_model_status_condition{${l},condition="Converted",reason="Converting"}`)).toBeUndefined();
    expect(await sample(`npuserve_conversion_duration_seconds_sum{${l},result="succeeded"}`)).toBe(42);
    expect(await sample(`npuserve_conversion_duration_seconds_count{${l},result="succeeded"}`)).toBe(1);
    expect(await sample(`npuserve_conversion_duration_seconds_bucket{le="30",${l},result="succeeded"}`)).toBe(0);
    expect(await sample(`npuserve_conversion_duration_seconds_bucket{le="60",${l},result="succeeded"}`)).toBe(1);

    // The same status again (no transition): the conversion is not counted twice, and the
    // autoscaler's decision (its own loop's series) stays.
    autoscalerDesiredReplicas.set({ namespace: NS, model: 'observed' }, 4);
    items.models[0] = { ...model('observed', spec), status: lastStatus(rec) };
    await reconciler.reconcile(`${NS}/observed`);
    expect(await sample(`npuserve_conversion_duration_seconds_count{${l},result="succeeded"}`)).toBe(1);
    expect(await sample(`npuserve_autoscaler_desired_replicas{${l}}`)).toBe(4);

    items.models.splice(0);
    await reconciler.reconcile(`${NS}/observed`);
    expect((await registry.metrics()).split('\n').filter((x) => !x.startsWith('#') && x.includes(l) && !x.startsWith('npuserve_conversion_duration'))).toEqual([]);
  });

  it('counts a failed accuracy gate under its reason, with the Job\'s duration', async () => {
    const { rec, items, reconciler } = setup();
    items.models.push(model('gated'));
    await reconciler.reconcile(`${NS}/gated`);
    const job = rec.bodies('create', '/jobs')[0];
    items.jobs.push({ ...job, status: { failed: 1, startTime: new Date(T0).toISOString(), conditions: [{ type: 'Failed', status: 'True', lastTransitionTime: new Date(T0 + 90_000).toISOString() }] } });
    items.pods.push({ metadata: { name: `${job.metadata.name}-x`, namespace: NS, labels: { 'job-name': job.metadata.name } }, status: { phase: 'Failed', containerStatuses: [{ state: { terminated: { exitCode: 3, message: JSON.stringify({ error: 'cosine 0.91 < 0.99' }) } } }] } } as KubeObject);
    await reconciler.reconcile(`${NS}/gated`);
    const l = `namespace="${NS}",model="gated"`;
    expect(await sample(`npuserve_conversion_duration_seconds_sum{${l},result="AccuracyGateFailed"}`)).toBe(90);
    expect(await sample(`npuserve_model_status_condition{${l},condition="Converted",reason="AccuracyGateFailed"}`)).toBe(0);
  });

  it('counts a reconcile that fails on the API server under the status reason', async () => {
    const rec = new RecordingKube();
    rec.objects.set(`${MODELS}/tiny`, model());
    const cfg = parseOperatorConfig(['--leader-elect', 'false', '--namespaces', NS, '--workers', '1'], {});
    const controller = new Controller(rec.operatorApi(), cfg, createLogger({ format: 'json', level: 'error', write: () => undefined }));
    const stop = new AbortController();
    await controller.startInformers(stop.signal);
    const before = (await sample('npuserve_operator_reconcile_errors_total{reason="Forbidden"}')) ?? 0;
    let failures = 1;
    rec.failWith = (c) => (c.verb === 'create' && c.path.endsWith('/jobs') && failures-- > 0 ? new ApiError(403, 'Forbidden', 'POST jobs: 403 forbidden') : undefined);
    const run = controller.runWorkers(stop.signal);
    const deadline = Date.now() + 5000;
    while (rec.bodies('create', '/jobs').length < 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    stop.abort();
    await run;
    expect(await sample('npuserve_operator_reconcile_errors_total{reason="Forbidden"}')).toBe(before + 1);
  });
});
