// What a user sees (`kubectl apply`, `kubectl describe npum`, events) when an NPUModel cannot go the
// happy path, on the local cluster: a name a Service cannot hold, two long names sharing a prefix, a
// single-file source and a missing one, a prebuilt .npu of another precision than the spec's, a
// foreign Service of the model's name, a conversion pod that cannot start, replicas that do not all
// fit, a namespace the operator does not watch, and no error noise from ordinary 409 conflicts.
import { mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { convert } from '../../runtime/convert/convert.js';
import { makeTestModel } from '../../runtime/testmodel.js';
import { createNamespace, hostPathDir, servingNode } from '../cluster/helpers.js';
import type { KubeApi, KubeObject } from '../cluster/kube.js';
import { applyCrd, getModel, kubeClient, kubectl, modelNamespace, npuModel, startOperator, waitFor, waitForPhase, type Model, type OperatorProcess, apply, applyError } from './operator-harness.js';

const TINY = { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 };

let client: KubeApi;
let ns: string;
let unwatched: string;
let op: OperatorProcess;
let operatorStartedAt = 0;

const conditionOf = (m: Model, type: string) => m.status?.conditions?.find((c) => c.type === type);

/** Reasons and counts of the events of one model, as `kubectl get events` shows them. */
async function eventsOf(name: string): Promise<Array<{ reason: string; message: string; count: number }>> {
  const list = await client.list<KubeObject & { reason: string; message: string; count?: number; involvedObject: { name: string } }>(`/api/v1/namespaces/${ns}/events`);
  return list.items.filter((e) => e.involvedObject.name === name).map((e) => ({ reason: e.reason, message: e.message, count: e.count ?? 1 }));
}

async function deleteModels(): Promise<void> {
  await kubectl('delete', 'npum', '--all', '-n', ns, '--wait=false');
  await waitFor('serving and conversion pods gone', async () => {
    const pods = await client.list<KubeObject & { status: { phase: string } }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'app.kubernetes.io/name=npuserve' });
    return pods.items.every((p) => p.status.phase === 'Succeeded' || p.status.phase === 'Failed') ? true : undefined;
  }, 120_000, 500);
}

beforeAll(async () => {
  client = kubeClient();
  await applyCrd();
  ns = await modelNamespace(client, 'opfail');
  unwatched = await createNamespace(client, 'opfail-unwatched');
  // A single-file GGUF and a prebuilt INT8 .npu on the real node, beside the harness's /models/tiny.
  makeTestModel(hostPathDir(`/models/${ns}-gguf`), { ...TINY, gguf: 'F16' });
  const src = join(tmpdir(), `${ns}-src`);
  makeTestModel(src, TINY);
  const npu = hostPathDir(`/models/${ns}-prebuilt/tiny.int8.npu`);
  mkdirSync(dirname(npu), { recursive: true });
  await convert({ input: src, output: npu, precision: 'INT8', optimizeLevel: 2 });
  // With leader election on: it renews every second, a loop that once leaked a listener per turn.
  // A pod that has not started in 15 s is stuck (the default is 5 minutes).
  op = startOperator(ns, ['--pod-start-timeout-seconds', '15']);
  operatorStartedAt = Date.now();
}, 300_000);

afterAll(async () => {
  await op?.stop();
  await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
  await client.delete(`/api/v1/namespaces/${unwatched}`).catch(() => undefined);
});

describe('operator failures a user can see', () => {
  it.each([
    ['a name over 63 characters', 'm'.repeat(64)],
    ['a name with a dot', 'llama.3'],
  ])('kubectl apply rejects %s, naming the rule', async (_what, name) => {
    const err = await applyError(ns, npuModel(name));
    expect(err).toMatch(/metadata.name must be at most 63 characters of lowercase letters, digits and '-', starting with a letter and ending with a letter or digit: it names the model's Service/);
  }, 60_000);

  it('converts and serves two 50-character names that differ in their last character, each with its own Job', async () => {
    const a = `${'long-model-name-'.repeat(3)}ab`;
    const b = `${'long-model-name-'.repeat(3)}ac`;
    expect(a).toHaveLength(50);
    await apply(ns, npuModel(a));
    await apply(ns, npuModel(b));
    const [ma, mb] = await Promise.all([waitForPhase(client, ns, a, 'Ready', 240_000), waitForPhase(client, ns, b, 'Ready', 240_000)]);
    expect(conditionOf(ma, 'Converted')).toMatchObject({ status: 'True', reason: 'Converted' });
    expect(conditionOf(mb, 'Converted')).toMatchObject({ status: 'True', reason: 'Converted' });
    const jobs = await client.list<KubeObject>(`/apis/batch/v1/namespaces/${ns}/jobs`, { labelSelector: 'app.kubernetes.io/component=converter' });
    const owners = new Map(jobs.items.map((j) => [j.metadata.name, j.metadata.ownerReferences?.[0]?.name]));
    expect([...owners.values()].sort()).toEqual([a, b]);
    for (const name of owners.keys()) expect(name!.length).toBeLessThanOrEqual(63);
    for (const m of [a, b]) expect((await eventsOf(m)).map((e) => e.reason)).not.toContain('ConflictingObject');
  }, 300_000);

  it('serves a file:// source that is a single GGUF file', async () => {
    await apply(ns, npuModel('gguf', { source: { uri: `file:///models/${ns}-gguf/model.gguf` } }));
    const m = await waitForPhase(client, ns, 'gguf', 'Ready', 240_000);
    expect(m.status?.currentRevision?.precision).toBe('FP16');
  }, 300_000);

  it('reports a missing file:// path as missing, fails the model and frees the NPU', async () => {
    await apply(ns, npuModel('missing', { source: { uri: `file:///models/${ns}-nothing/model.gguf` } }));
    const m = await waitForPhase(client, ns, 'missing', 'Failed', 180_000);
    const converted = conditionOf(m, 'Converted')!;
    expect(converted).toMatchObject({ status: 'False', reason: 'ConversionFailed' });
    expect(converted.message).toMatch(/input \S*\/models\/opfail-[\w-]+-nothing\/model\.gguf does not exist/);
    // The event follows the status write that records the failure.
    const event = await waitFor('ConversionFailed event', async () => (await eventsOf('missing')).find((e) => e.reason === 'ConversionFailed'), 30_000, 250);
    expect(event.message).toMatch(/does not exist/);
    const pods = await client.list<KubeObject & { status: { phase: string } }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'app.kubernetes.io/instance=missing' });
    expect(pods.items.map((p) => p.status.phase).filter((p) => p === 'Pending' || p === 'Running')).toEqual([]);
  }, 240_000);

  it('reports the precision a prebuilt .npu holds, not the one the spec names', async () => {
    await apply(ns, npuModel('prebuilt', { source: { uri: `file:///models/${ns}-prebuilt/tiny.int8.npu`, format: 'npu' }, precision: 'FP16' }));
    const m = await waitForPhase(client, ns, 'prebuilt', 'Ready', 240_000);
    expect(m.status?.currentRevision?.precision).toBe('INT8');
    expect(conditionOf(m, 'Converted')).toMatchObject({ status: 'True', reason: 'Prebuilt' });
    expect(conditionOf(m, 'Converted')!.message).toMatch(/spec.precision FP16 does not apply to a prebuilt .npu, it serves as converted \(INT8\)/);
    expect((await eventsOf('prebuilt')).map((e) => e.reason)).toEqual(expect.arrayContaining(['Inspected', 'PrecisionMismatch']));
  }, 300_000);

  it('reports a foreign Service holding the model name, which its label-filtered cache cannot see', async () => {
    await client.create(`/api/v1/namespaces/${ns}/services`, { apiVersion: 'v1', kind: 'Service', metadata: { name: 'taken' }, spec: { ports: [{ port: 80 }], selector: { app: 'someone-else' } } });
    await apply(ns, npuModel('taken', { source: { uri: `file:///models/${ns}-prebuilt/tiny.int8.npu`, format: 'npu' }, precision: 'INT8' }));
    const m = await waitFor('ConflictingObject reported', async () => {
      const x = await getModel(client, ns, 'taken');
      return conditionOf(x, 'Degraded')?.reason === 'ConflictingObject' ? x : undefined;
    }, 180_000, 500);
    expect(m.status?.phase).toBe('Failed');
    expect(conditionOf(m, 'Degraded')!.message).toBe('Service taken exists and is not controlled by this NPUModel; leaving it alone');
    expect((await eventsOf('taken')).map((e) => e.reason)).toContain('ConflictingObject');
  }, 240_000);

  it('suspends a conversion whose pod cannot start, frees its NPU and says why (ConversionStuck)', async () => {
    const source = { uri: 'https://huggingface.co/org/repo/resolve/main/model.gguf', authSecretRef: { name: 'no-such-secret', key: 'token' } };
    await apply(ns, npuModel('stuck', { source }));
    const m = await waitForPhase(client, ns, 'stuck', 'Failed', 120_000);
    const converted = conditionOf(m, 'Converted')!;
    expect(converted).toMatchObject({ status: 'False', reason: 'ConversionStuck' });
    expect(converted.message).toMatch(/^revision r\w+: pod stuck-convert-r\w+-\w+ on node \S+ has not started in \d+ s \(CreateContainerConfigError: .*no-such-secret.*\); Job (stuck-convert-r\w+) is suspended to free its NPU: fix the cause, then delete the Job to retry$/);
    const jobName = /Job (stuck-convert-r\w+) is suspended/.exec(converted.message!)![1];
    expect((await client.get<KubeObject & { spec: { suspend?: boolean } }>(`/apis/batch/v1/namespaces/${ns}/jobs/${jobName}`)).spec.suspend).toBe(true);
    await waitFor('the stuck pod deleted', async () => {
      const pods = await client.list<KubeObject & { status: { phase: string } }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: `job-name=${jobName}` });
      return pods.items.every((p) => p.metadata.deletionTimestamp || p.status.phase === 'Failed' || p.status.phase === 'Succeeded') ? true : undefined;
    }, 60_000, 500);
    await waitFor('ConversionStuck event', async () => (await eventsOf('stuck')).find((e) => e.reason === 'ConversionStuck'), 30_000, 250);
  }, 180_000);

  it('says Unschedulable while the replicas that fit serve', async () => {
    await deleteModels();
    // The real node has 8 NPUs: 3 replicas of 3 NPUs each leave one replica unplaced.
    const placement = { nodeSelector: { [servingNode().label]: 'true' }, npusPerReplica: 3 };
    await apply(ns, npuModel('crowded', { source: { uri: `file:///models/${ns}-prebuilt/tiny.int8.npu`, format: 'npu' }, precision: 'INT8', replicas: 3, placement }));
    const m = await waitFor('2 of 3 ready and Unschedulable reported', async () => {
      const x = await getModel(client, ns, 'crowded');
      return x.status?.readyReplicas === 2 && conditionOf(x, 'Degraded')?.reason === 'Unschedulable' ? x : undefined;
    }, 240_000, 500);
    expect(m.status?.phase).toBe('Degraded');
    expect(conditionOf(m, 'Available')).toMatchObject({ status: 'True', message: '2 of 3 replicas ready' });
    expect(conditionOf(m, 'Degraded')!.message).toMatch(/^1 of 3 replicas cannot be scheduled: Unschedulable: 0\/\d+ nodes are available: .*Insufficient huawei\.com\/Ascend910/);
    await deleteModels();
  }, 300_000);

  it('names the watched namespaces in its log; a model elsewhere gets no status (documented in docs/operations.md)', async () => {
    await apply(unwatched, npuModel('elsewhere'));
    expect(op.logs()).toMatch(new RegExp(`"msg":"caches synced".*"watchedNamespaces":\\["${ns}"\\]`));
    await new Promise((r) => setTimeout(r, 3000));
    expect((await getModel(client, unwatched, 'elsewhere')).status).toBeUndefined();
  }, 60_000);

  it('logged no 409 as a failure, no listener leak warning, and recorded each Converted once', async () => {
    // 6 watches and over 100 seconds of renewals and autoscaler passes: past the 100 listeners a leak would show.
    await new Promise((r) => setTimeout(r, Math.max(0, operatorStartedAt + 110_000 - Date.now())));
    const logs = op.logs();
    expect(logs).not.toMatch(/reconcile failed; will retry.*409/);
    expect(logs).not.toMatch(/MaxListenersExceededWarning/);
    const converted = (await client.list<KubeObject & { reason: string; count?: number }>(`/api/v1/namespaces/${ns}/events`)).items.filter((e) => e.reason === 'Converted');
    expect(converted.length).toBeGreaterThanOrEqual(3);
    for (const e of converted) expect(e.count ?? 1).toBe(1);
  }, 180_000);
});
