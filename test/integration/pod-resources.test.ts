// Serving pods sized for the model on the local cluster: the CPU and memory the operator derives
// (from the footprint the conversion recorded), a memory limit below the model's need refused with
// InsufficientMemory (no pod that would be killed at every start), and a memory request no node
// can hold refused by the scheduler, and a server's own reason for stopping (its termination log)
// in the ServerFailing condition.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { KubeApi, KubeObject } from '../cluster/kube.js';
import { apply, applyCrd, deleteModelNamespace, getModel, kubeClient, kubectl, modelNamespace, npuModel, startOperator, waitFor, waitForPhase, type Model, type OperatorProcess } from './operator-harness.js';

interface Container {
  args: string[];
  resources: { requests?: Record<string, string>; limits?: Record<string, string> };
}

let client: KubeApi;
let ns: string;
let op: OperatorProcess;

const conditionOf = (m: Model, type: string) => m.status?.conditions?.find((c) => c.type === type);

async function servingContainer(name: string): Promise<Container> {
  const d = await client.get<KubeObject & { spec: { template: { spec: { containers: Container[] } } } }>(`/apis/apps/v1/namespaces/${ns}/deployments/${name}`);
  return d.spec.template.spec.containers[0];
}

async function eventsOf(name: string): Promise<Array<{ reason: string; type: string; message: string }>> {
  const list = await client.list<KubeObject & { reason: string; type: string; message: string; involvedObject: { name: string } }>(`/api/v1/namespaces/${ns}/events`);
  return list.items.filter((e) => e.involvedObject.name === name).map((e) => ({ reason: e.reason, type: e.type, message: e.message }));
}

beforeAll(async () => {
  client = kubeClient();
  await applyCrd();
  ns = await modelNamespace(client, 'podres');
  op = startOperator(ns, ['--leader-elect', 'false']);
}, 300_000);

afterAll(async () => {
  await deleteModelNamespace(client, ns); // while the operator runs, so it removes its finalizer
  await op?.stop();
});

describe('serving pod resources', () => {
  it("sets memory to the converted model + its f16 KV cache + the runtime, and CPU from the model's CPU request", async () => {
    await apply(ns, npuModel('sized'));
    const m = await waitForPhase(client, ns, 'sized', 'Ready', 240_000);
    // The harness's tiny model: 1 layer, 1 KV head of 64 / 2 = 32 dims.
    const footprint = m.status!.revisions![0] as { model?: { fileBytes: number; layers: number; kvHeads: number; headDim: number } };
    expect(footprint.model).toMatchObject({ layers: 1, kvHeads: 1, headDim: 32 });
    // maxBatchSize 4 x maxSeqLen 256 tokens x 1 layer x 2 x 1 KV head x 32 dims x 2 bytes, RoPE tables 2 x 256 x 16 x 4 bytes, 384 MiB runtime.
    const bytes = footprint.model!.fileBytes + 1024 * 2 * 32 * 2 + 2 * 256 * 16 * 4 + 384 * 2 ** 20;
    const c = await servingContainer('sized');
    expect(c.resources.requests).toMatchObject({ cpu: '100m', memory: `${Math.ceil(bytes / 2 ** 20)}Mi` });
    expect(c.resources.limits).toMatchObject({ cpu: '1', memory: `${Math.ceil(bytes / 2 ** 20)}Mi` });
    expect(c.args.join(' ')).toContain('--kv-cache-dtype f16');
    expect(c.args).not.toContain('--threads');
  }, 300_000);

  it('refuses a memory limit below the need with InsufficientMemory (condition and event, no pod), and serves once it is raised', async () => {
    await apply(ns, npuModel('small', { runtime: { resources: { requests: { cpu: '100m' }, limits: { memory: '64Mi' } } } }));
    const m = await waitForPhase(client, ns, 'small', 'Failed', 240_000);
    const degraded = conditionOf(m, 'Degraded')!;
    expect(degraded).toMatchObject({ status: 'True', reason: 'InsufficientMemory' });
    expect(degraded.message).toMatch(/^spec\.runtime\.resources\.limits\.memory 64Mi \(64 MiB\) is below the (\d+) MiB revision r\w+ needs per pod: weights \d+ MiB \+ KV cache 1 MiB \(1024 tokens x 1 layers x 2 \(K, V\) x 1 KV heads x 32 head dim x 2 bytes \(f16\)\) \+ RoPE tables 1 MiB \+ runtime 384 MiB = \1 MiB; a pod would be killed for memory at every start, so none is started/);
    expect(conditionOf(m, 'Available')).toMatchObject({ status: 'False', reason: 'InsufficientMemory' });
    expect(await kubectl('get', 'deployments', '-n', ns, '-o', 'name')).not.toMatch(/deployment\.apps\/small\b/);
    const event = await waitFor('InsufficientMemory event', async () => (await eventsOf('small')).find((e) => e.reason === 'InsufficientMemory'), 30_000, 250);
    expect(event).toMatchObject({ type: 'Warning', message: degraded.message });

    await kubectl('patch', 'npum', 'small', '-n', ns, '--type', 'merge', '-p', JSON.stringify({ spec: { runtime: { resources: { limits: { memory: '1Gi' } } } } }));
    const ready = await waitForPhase(client, ns, 'small', 'Ready', 240_000);
    expect(conditionOf(ready, 'Degraded')).toMatchObject({ status: 'False' });
    expect((await servingContainer('small')).resources.limits).toMatchObject({ memory: '1Gi' });
  }, 360_000);

  it("a server that stops at start shows its own error (its termination log) in ServerFailing", async () => {
    // The tiny model has 32768 positions; serve refuses a longer --max-seq-len after loading it.
    await apply(ns, npuModel('too-long', { runtime: { maxBatchSize: 1, maxSeqLen: 65536 } }));
    const m = await waitFor('ServerFailing reported', async () => {
      const x = await getModel(client, ns, 'too-long');
      return conditionOf(x, 'Available')?.reason === 'ServerFailing' ? x : undefined;
    }, 240_000, 500);
    // The file's text, not the log tail (which starts with the server's log lines).
    expect(conditionOf(m, 'Available')!.message).toMatch(/^pod too-long-\S+: CrashLoopBackOff: .*; last exit code 1: --max-seq-len 65536 is longer than the model's 32768 positions$/);
  }, 300_000);

  it('a memory request no node holds is refused by the scheduler: Pending, Unschedulable, Insufficient memory', async () => {
    await apply(ns, npuModel('huge', { runtime: { resources: { requests: { cpu: '100m', memory: '64Ti' } } } }));
    const m = await waitFor('Unschedulable reported', async () => {
      const x = await getModel(client, ns, 'huge');
      return conditionOf(x, 'Available')?.reason === 'Unschedulable' ? x : undefined;
    }, 240_000, 500);
    expect(m.status?.phase).toBe('Pending');
    expect(conditionOf(m, 'Available')!.message).toMatch(/^1 of 1 replicas cannot be scheduled: Unschedulable: 0\/\d+ nodes are available: .*Insufficient memory/);
    expect((await servingContainer('huge')).resources.limits).toMatchObject({ memory: '64Ti' });
  }, 300_000);
});
