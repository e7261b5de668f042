// The operator against the real control plane of the local cluster: CRD validation by the API
// server, a model converted by a real Job and served by real pods on the real NPU node, precision
// rollouts under load, a failed accuracy gate, NPU exhaustion, the API key from a Secret, the
// serving pods' NetworkPolicy, and deletion.
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { KubeApi, KubeObject } from '../cluster/kube.js';
import { claimDir, serviceAccess, servingNode } from '../cluster/helpers.js';
import { applyCrd, deleteModelNamespace, getModel, kubeClient, kubectl, modelNamespace, npuModel, restartApiServer, startOperator, waitFor, waitForPhase, type Model, type OperatorProcess, apply, applyError } from './operator-harness.js';

let client: KubeApi;

const patchSpec = (ns: string, name: string, spec: object) =>
  client.patch(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/${name}`, { spec }, 'merge');

async function complete(url: string, model = 'tiny', prompt = 'Hello'): Promise<{ status: number; body: { choices?: Array<{ text: string }> } }> {
  const res = await fetch(`${url}/v1/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model, prompt, max_tokens: 4, temperature: 0 }),
    signal: AbortSignal.timeout(20_000),
  });
  return { status: res.status, body: await res.json().catch(() => ({})) };
}

beforeAll(async () => {
  client = kubeClient();
  await applyCrd();
});



describe('NPUModel CRD on the API server', () => {
  it.each([
    ['a bad precision', { precision: 'INT4' }, /spec\.precision: Unsupported value: "INT4"/],
    ['minReplicas > maxReplicas', { autoscaling: { minReplicas: 5, maxReplicas: 2 } }, /autoscaling\.minReplicas must not exceed autoscaling\.maxReplicas/],
    ['a negative batch size', { runtime: { maxBatchSize: -1 } }, /spec\.runtime\.maxBatchSize: Invalid value: -1: spec\.runtime\.maxBatchSize in body should be greater than or equal to 1/],
    ['an unknown URI scheme', { source: { uri: 's3://bucket/model' } }, /source\.uri must be pvc:\/\/CLAIM\/PATH, file:\/\/\/PATH \(a path on the node\) or http\(s\):\/\/URL/],
    ['replicas outside the autoscaling range', { replicas: 9, autoscaling: { minReplicas: 1, maxReplicas: 4 } }, /replicas is set by the autoscaler and must lie within/],
  ])('kubectl apply rejects %s with the API server message', async (_what, spec, message) => {
    const err = await applyError('default', npuModel('invalid', spec));
    expect(err).toMatch(message);
  });

  it('kubectl explain describes the fields', async () => {
    const out = await kubectl('explain', 'npum.spec.autoscaling');
    expect(out).toMatch(/ttftP95TargetMs/);
    expect(out).toMatch(/Latency objective/);
  }, 300_000);
});

describe('operator', () => {
  let ns: string;
  let op: OperatorProcess;
  let proxyUrl: string;
  let closeProxy: () => Promise<void>;

  beforeAll(async () => {
    ns = await modelNamespace(client, 'op');
    op = startOperator(ns, ['--leader-elect', 'false']);
  });

  afterAll(async () => {
    await closeProxy?.();
    await deleteModelNamespace(client, ns); // while the operator runs, so it removes its finalizer
    await op?.stop();
  });

  it('converts the model in a Job, serves it, and answers through the Service', async () => {
    await apply(ns, npuModel('tiny'));
    const m = await waitForPhase(client, ns, 'tiny', 'Ready');
    expect(m.status?.endpoint).toBe(`http://tiny.${ns}.svc:8000/v1`);
    expect(m.status?.currentRevision?.precision).toBe('FP16');
    const table = await kubectl('get', 'npum', '-n', ns);
    expect(table.split('\n')[0]).toMatch(/NAME\s+PRECISION\s+PHASE\s+READY\s+REPLICAS\s+ENDPOINT\s+AGE/);
    expect(table).toMatch(new RegExp(`tiny\\s+FP16\\s+Ready\\s+1\\s+1\\s+http://tiny\\.${ns}\\.svc:8000/v1`));

    const proxy = await serviceAccess(client, { namespace: ns, service: 'tiny', port: 8000 });
    proxyUrl = proxy.url;
    closeProxy = proxy.close;
    const r = await complete(proxyUrl);
    expect(r.status).toBe(200);
    expect(r.body.choices?.[0].text).toBeTypeOf('string');

    const pods = await client.list<KubeObject & { spec: { nodeName?: string } }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'app.kubernetes.io/name=npuserve' });
    const npuNodes = new Set((await client.list<KubeObject>('/api/v1/nodes', { labelSelector: 'accelerator=huawei-Ascend910' })).items.map((n) => n.metadata.name));
    expect(pods.items.length).toBeGreaterThanOrEqual(2); // the conversion pod and a server pod
    for (const p of pods.items) expect(npuNodes.has(p.spec.nodeName ?? '')).toBe(true);
    // The Job's termination message carried the accuracy report into status.
    expect(m.status?.revisions?.[0].accuracy?.cosineSimilarity).toBeGreaterThan(0.99);
    // The serving pods' NetworkPolicy, owned by the model like its other children.
    const policies = await client.list<KubeObject & { spec: { podSelector: { matchLabels: Record<string, string> } } }>(`/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`);
    expect(policies.items.map((p) => p.metadata.name)).toEqual(['tiny']);
    expect(policies.items[0].metadata.ownerReferences?.[0]).toMatchObject({ kind: 'NPUModel', name: 'tiny', controller: true });
    expect(policies.items[0].spec.podSelector.matchLabels).toEqual({ 'app.kubernetes.io/instance': 'tiny', 'app.kubernetes.io/component': 'server' });
  }, 300_000);

  it('rolls FP16 -> INT8 -> FP16 with no failed request, converting INT8 once and reusing FP16', async () => {
    const jobs = async () => (await client.list(`/apis/batch/v1/namespaces/${ns}/jobs`, { labelSelector: 'app.kubernetes.io/component=converter' })).items.length;
    const before = await jobs();
    let ok = 0;
    const failures: string[] = [];
    let running = true;
    // The official client, as users call the endpoint (it retries 503 and broken connections).
    const openai = new OpenAI({ baseURL: `${proxyUrl}/v1`, apiKey: 'unused', timeout: 20_000 });
    const loop = (async () => {
      while (running) {
        try {
          const r = await openai.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 4, temperature: 0 });
          if (r.choices.length === 1) ok++;
        } catch (e) {
          failures.push((e as Error).message);
        }
      }
    })();
    try {
      await patchSpec(ns, 'tiny', { precision: 'INT8' });
      await waitFor('INT8 revision current', async () => {
        const m = await getModel(client, ns, 'tiny');
        return m.status?.currentRevision?.precision === 'INT8' && m.status.phase === 'Ready' ? m : undefined;
      }, 180_000, 500);
      expect(await jobs()).toBe(before + 1);
      await patchSpec(ns, 'tiny', { precision: 'FP16' });
      const back = await waitFor('FP16 revision current again', async () => {
        const m = await getModel(client, ns, 'tiny');
        return m.status?.currentRevision?.precision === 'FP16' && m.status.phase === 'Ready' ? m : undefined;
      }, 180_000, 500);
      expect(await jobs()).toBe(before + 1); // no new Job: the FP16 artifact existed
      expect(back.status?.targetRevision).toBeUndefined();
    } finally {
      running = false;
      await loop;
    }
    expect(failures).toEqual([]);
    expect(ok).toBeGreaterThan(10);
  }, 300_000);

  it('keeps the old revision serving when the accuracy gate fails, and says why', async () => {
    await patchSpec(ns, 'tiny', { precision: 'INT8', conversion: { optimizeLevel: 1, accuracyGate: { minCosineSimilarity: 0.99999999 } } });
    const m = await waitFor('gate failure reported', async () => {
      const x = await getModel(client, ns, 'tiny');
      const c = x.status?.conditions?.find((c) => c.type === 'Converted');
      return c?.status === 'False' && c.reason === 'AccuracyGateFailed' ? x : undefined;
    }, 180_000, 500);
    const converted = m.status!.conditions!.find((c) => c.type === 'Converted')!;
    expect(converted.message).toMatch(/accuracy gate failed: cosine similarity 0\.\d+ vs FP32 is below the minimum 0\.99999999/);
    expect(converted.message).toMatch(/keeps serving/);
    expect(m.status?.currentRevision?.precision).toBe('FP16');
    expect(m.status?.phase).toBe('Degraded');
    expect((await complete(proxyUrl)).status).toBe(200);
    const events = await kubectl('get', 'events', '-n', ns, '--field-selector', 'involvedObject.name=tiny', '-o', 'jsonpath={.items[*].reason}');
    expect(events).toMatch(/ConversionStarted/);
    expect(events).toMatch(/AccuracyGateFailed/);
    expect(events).toMatch(/RolloutComplete/);
    await patchSpec(ns, 'tiny', { precision: 'FP16', conversion: { optimizeLevel: 2, accuracyGate: { minCosineSimilarity: 0.99 } } });
    await waitForPhase(client, ns, 'tiny', 'Ready');
  }, 300_000);

  it('reports Pending with the scheduler reason when the NPUs are exhausted', async () => {
    await apply(ns, npuModel('greedy', { placement: { nodeSelector: { [servingNode().label]: 'true' }, npusPerReplica: 64 } }));
    const m = await waitForPhase(client, ns, 'greedy', 'Pending', 60_000);
    const converted = m.status!.conditions!.find((c) => c.type === 'Converted')!;
    expect(converted.message).toMatch(/Insufficient huawei\.com\/Ascend910/);
    await client.delete(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/greedy`);
  }, 300_000);

  it("requires the key from spec.service.apiKeySecretRef's Secret, while /metrics (the autoscaler's scrape) stays open", async () => {
    const key = 'sk-cluster-test-7d41';
    await client.create(`/api/v1/namespaces/${ns}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: 'tiny-key' }, stringData: { token: key } });
    await patchSpec(ns, 'tiny', { service: { apiKeySecretRef: { name: 'tiny-key', key: 'token' } } });
    // Rolled out once every answer without the key is a 401.
    await waitFor('the keyed pods serve alone', async () => {
      const r = await Promise.all([0, 1, 2].map(() => complete(proxyUrl)));
      return r.every((x) => x.status === 401) ? true : undefined;
    }, 240_000, 500);
    const openai = new OpenAI({ baseURL: `${proxyUrl}/v1`, apiKey: key, maxRetries: 0, timeout: 20_000 });
    expect((await openai.completions.create({ model: 'tiny', prompt: 'Hello', max_tokens: 2 })).choices).toHaveLength(1);
    const wrong = new OpenAI({ baseURL: `${proxyUrl}/v1`, apiKey: 'sk-wrong', maxRetries: 0, timeout: 20_000 });
    await expect(wrong.models.list()).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    expect((await fetch(`${proxyUrl}/metrics`)).status).toBe(200);
  }, 300_000);

  it('deletes everything it made, artifacts included, when the model is deleted', async () => {
    const artifacts = await claimDir(client, ns, 'npuserve-artifacts');
    expect(readdirSync(join(artifacts, 'tiny')).filter((f) => f.endsWith('.npu')).length).toBeGreaterThanOrEqual(2);
    await client.delete(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/tiny`);
    await waitFor('model gone', async () => {
      try {
        await getModel(client, ns, 'tiny');
        return undefined;
      } catch {
        return true;
      }
    }, 120_000, 500);
    await waitFor('children garbage-collected', async () => {
      const d = await client.list(`/apis/apps/v1/namespaces/${ns}/deployments`);
      const s = await client.list(`/api/v1/namespaces/${ns}/services`);
      return d.items.length === 0 && s.items.length === 0 ? true : undefined;
    }, 120_000, 500);
    expect(existsSync(join(artifacts, 'tiny'))).toBe(false);
  }, 300_000);
});

describe('operator resilience', () => {
  let ns: string;
  const ops: OperatorProcess[] = [];

  beforeAll(async () => {
    ns = await modelNamespace(client, 'opres');
  });

  afterAll(async () => {
    await Promise.all(ops.map((o) => o.stop('SIGKILL')));
    await deleteModelNamespace(client, ns, 0); // no operator left: drops the finalizers itself
  }, 180_000);

  it('a restart between Job and Deployment creation duplicates nothing and reaches Ready', async () => {
    const first = startOperator(ns, ['--leader-elect', 'false']);
    ops.push(first);
    await apply(ns, npuModel('restart'));
    await waitFor('conversion Job created', async () => ((await client.list(`/apis/batch/v1/namespaces/${ns}/jobs`)).items.length > 0 ? true : undefined), 60_000, 100);
    await first.stop('SIGKILL');
    const second = startOperator(ns, ['--leader-elect', 'false']);
    ops.push(second);
    await waitForPhase(client, ns, 'restart', 'Ready');
    expect((await client.list(`/apis/batch/v1/namespaces/${ns}/jobs`, { labelSelector: 'app.kubernetes.io/component=converter' })).items).toHaveLength(1);
    expect((await client.list(`/apis/apps/v1/namespaces/${ns}/deployments`)).items).toHaveLength(1);
    expect((await client.list(`/api/v1/namespaces/${ns}/services`)).items).toHaveLength(1);
    expect((await client.list(`/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`)).items).toHaveLength(1);
    await second.stop();
  }, 300_000);

  it('with two replicas only the leader acts, and the other takes over within 15 s of its death', async () => {
    const a = startOperator(ns, ['--leader-elect', 'true']);
    const b = startOperator(ns, ['--leader-elect', 'true']);
    ops.push(a, b);
    const leaderOf = () => [a, b].filter((o) => o.logs().includes('"msg":"became leader"'));
    await waitFor('a leader', () => (leaderOf().length > 0 ? true : undefined), 30_000);
    await new Promise((r) => setTimeout(r, 3000));
    expect(leaderOf()).toHaveLength(1);
    const [leader] = leaderOf();
    const standby = leader === a ? b : a;
    expect(standby.logs()).not.toMatch(/"msg":"event"/);
    const killedAt = Date.now();
    await leader.stop('SIGKILL');
    await waitFor('standby takes over', () => (standby.logs().includes('"msg":"became leader"') ? true : undefined), 20_000, 100);
    expect(Date.now() - killedAt).toBeLessThan(15_000);
    await patchSpec(ns, 'restart', { replicas: 2 });
    await waitFor('new leader scales', async () => ((await getModel(client, ns, 'restart')).status?.readyReplicas === 2 ? true : undefined), 120_000, 500);
  }, 300_000);

  it('reconnects after the API server restarts and keeps reconciling', async () => {
    const op = startOperator(ns, ['--leader-elect', 'false']);
    ops.push(op);
    await waitFor('operator caches synced', () => (op.logs().includes('"msg":"caches synced"') ? true : undefined), 30_000);
    await restartApiServer(client);
    await apply(ns, npuModel('after-restart', { replicas: 1 }));
    await waitForPhase(client, ns, 'after-restart', 'Ready');
    expect(op.child.exitCode).toBeNull();
    await op.stop();
  }, 300_000);
});

export type { Model };
