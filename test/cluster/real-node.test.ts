// A real node (containerd + runc, the pinned kubelet and kube-proxy) runs the npuserve image as
// the chart runs it: non-root, read-only root filesystem, all capabilities dropped. The kubelet
// enforces what the former node agent only imitated, and `kubectl logs` and `kubectl exec` work.
import fs from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { convert } from '../../runtime/convert/convert.js';
import { makeTestModel } from '../../runtime/testmodel.js';
import type { KubeApi, KubeObject } from './kube.js';
import { cluster, createNamespace, kubeClient, kubectl, waitFor } from './helpers.js';

const realNode = () => cluster().nodes.real?.[0];
let client: KubeApi;
let ns: string;
const RUNTIME_SECURITY = {
  runAsNonRoot: true,
  runAsUser: 10001,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};

interface PodStatus {
  phase?: string;
  podIP?: string;
  conditions?: Array<{ type: string; status: string }>;
  containerStatuses?: Array<{ ready: boolean; restartCount: number; state?: Record<string, unknown> }>;
}

async function post(url: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(30_000) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

describe.runIf(process.getuid?.() === 0)('a real node', () => {
  let podIP: string;

  beforeAll(async () => {
    if (!realNode()) throw new Error('this cluster has no real node (cluster:up --real-nodes 1)');
    client = kubeClient();
    ns = await createNamespace(client, 'realnode');
    // A tiny model in the node's /models (its own folder: hostPath volumes are per node and per cluster).
    const models = path.join(cluster().dir, 'nodes', realNode()!, 'root', 'models');
    const src = path.join(models, `${ns}-src`);
    makeTestModel(src, { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });
    await convert({ input: src, output: path.join(models, `${ns}.npu`), precision: 'FP16', optimizeLevel: 2 });
    fs.chmodSync(path.join(models, `${ns}.npu`), 0o644);
    await client.create(`/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'server', labels: { app: 'server' } },
      spec: {
        nodeSelector: { 'npuserve.io/real-node': 'true' },
        securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        containers: [{
          name: 'runtime',
          image: cluster().image,
          imagePullPolicy: 'Never',
          args: ['serve', '--model', `/models/${ns}.npu`, '--served-model-name', 'tiny', '--port', '8000', '--threads', '1'],
          ports: [{ containerPort: 8000, name: 'http' }],
          readinessProbe: { httpGet: { path: '/readyz', port: 8000 }, periodSeconds: 1 },
          securityContext: RUNTIME_SECURITY,
          volumeMounts: [{ name: 'models', mountPath: '/models', readOnly: true }, { name: 'tmp', mountPath: '/tmp' }],
        }],
        volumes: [{ name: 'models', hostPath: { path: '/models', type: 'Directory' } }, { name: 'tmp', emptyDir: {} }],
      },
    });
    const pod = await waitFor('the server pod Ready on the real node', async () => {
      const p = await client.get<KubeObject & { status?: PodStatus }>(`/api/v1/namespaces/${ns}/pods/server`);
      const waiting = p.status?.containerStatuses?.[0]?.state?.waiting as { reason?: string; message?: string } | undefined;
      if (waiting?.reason && /Err|Invalid|BackOff/.test(waiting.reason)) throw new Error(`the server pod is ${waiting.reason}: ${waiting.message}`);
      return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
    }, 180_000);
    podIP = pod.status!.podIP!;
  }, 300_000);

  afterAll(async () => {
    if (ns) await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
  });

  it('is a containerd node in kubectl get node -o wide, and holds the simulated NPUs', async () => {
    const wide = await kubectl('get', 'node', realNode()!, '-o', 'wide');
    expect(wide).toMatch(/containerd:\/\/1\.\d+/);
    expect(wide).toMatch(/\bReady\b/);
    const node = await client.get<KubeObject & { status: { capacity: Record<string, string> } }>(`/api/v1/nodes/${realNode()}`);
    expect(node.status.capacity['huawei.com/Ascend910']).toBe('8');
  });

  it('serves a completion at the pod IP and through its Service (kube-proxy)', async () => {
    const direct = await post(`http://${podIP}:8000/v1/completions`, { model: 'tiny', prompt: 'The capital of France is', max_tokens: 3 });
    expect(direct.status).toBe(200);
    expect((direct.json.choices as Array<{ text: string }>)[0].text.length).toBeGreaterThan(0);
    const svc = await client.create<KubeObject & { spec: { clusterIP: string } }>(`/api/v1/namespaces/${ns}/services`, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'server' },
      spec: { selector: { app: 'server' }, ports: [{ port: 80, targetPort: 'http' }] },
    });
    const viaService = await waitFor(`the Service's cluster IP ${svc.spec.clusterIP}`, () =>
      post(`http://${svc.spec.clusterIP}/v1/completions`, { model: 'tiny', prompt: 'Hello', max_tokens: 2 }).catch(() => undefined), 60_000);
    expect(viaService.status).toBe(200);
  });

  it('kubectl logs shows the access log, and kubectl exec runs in the container as uid 10001', async () => {
    const logs = await waitFor('an access log line', async () => {
      const text = await kubectl('logs', '-n', ns, 'server');
      return /POST \/v1\/completions|\/v1\/completions/.test(text) ? text : undefined;
    }, 30_000);
    expect(logs).not.toMatch(/The capital of France/);
    expect((await kubectl('exec', '-n', ns, 'server', '--', 'id', '-u')).trim()).toBe('10001');
  });

  it('refuses writes to the root filesystem, and the runtime keeps serving', async () => {
    const attempt = await kubectl('exec', '-n', ns, 'server', '--', 'sh', '-c', 'touch /opt/npuserve/x 2>&1; echo "exit $?"');
    expect(attempt).toMatch(/Read-only file system/);
    expect(attempt).toMatch(/exit 1/);
    expect((await kubectl('exec', '-n', ns, 'server', '--', 'sh', '-c', 'touch /tmp/x && echo ok')).trim()).toBe('ok');
    const after = await post(`http://${podIP}:8000/v1/completions`, { model: 'tiny', prompt: 'Again', max_tokens: 2 });
    expect(after.status).toBe(200);
  });

  it('a server under a memory limit below what the model needs stops at once and says why in its termination message', async () => {
    await client.create(`/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'small' },
      spec: {
        nodeSelector: { 'npuserve.io/real-node': 'true' },
        restartPolicy: 'Never',
        containers: [{
          name: 'runtime',
          image: cluster().image,
          imagePullPolicy: 'Never',
          args: ['serve', '--model', `/models/${ns}.npu`, '--port', '8000', '--termination-log', '/dev/termination-log'],
          resources: { limits: { memory: '160Mi' } },
          securityContext: RUNTIME_SECURITY,
          volumeMounts: [{ name: 'models', mountPath: '/models', readOnly: true }, { name: 'tmp', mountPath: '/tmp' }],
        }],
        volumes: [{ name: 'models', hostPath: { path: '/models', type: 'Directory' } }, { name: 'tmp', emptyDir: {} }],
      },
    });
    const terminated = await waitFor('the small pod terminated', async () => {
      const p = await client.get<KubeObject & { status?: PodStatus }>(`/api/v1/namespaces/${ns}/pods/small`);
      return p.status?.containerStatuses?.[0]?.state?.terminated as { exitCode: number; reason: string; message?: string } | undefined;
    }, 60_000);
    // The kubelet's cgroup limit is what the server read: a refusal, not an OOM kill.
    expect(terminated.reason).not.toBe('OOMKilled');
    expect(terminated.exitCode).not.toBe(0);
    expect(terminated.message).toMatch(/the memory limit of 160 MiB \(cgroup\) is below what serving/);
  });

  it("a pod reaches the API server at the kubernetes Service's cluster IP", async () => {
    const script = [
      "const fs = require('fs');",
      "const sa = '/var/run/secrets/kubernetes.io/serviceaccount';",
      "require('https').get({ host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT, path: '/version',",
      "  ca: fs.readFileSync(sa + '/ca.crt'), headers: { authorization: 'Bearer ' + fs.readFileSync(sa + '/token', 'utf8') } },",
      "  (r) => { let b = ''; r.on('data', (c) => (b += c)); r.on('end', () => console.log(r.statusCode, JSON.parse(b).gitVersion)); })",
      "  .on('error', (e) => { console.log('error', e.message); process.exit(1); });",
    ].join('\n');
    const out = await kubectl('exec', '-n', ns, 'server', '--', 'node', '-e', script);
    expect(out.trim()).toBe(`200 ${cluster().kubernetesVersion}`);
  });
});
