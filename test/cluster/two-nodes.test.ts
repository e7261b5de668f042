// A cluster with two real nodes: pods on different nodes reach each other, and a Service's
// endpoints on either node answer, from this machine and from a pod (kube-proxy on each node,
// this machine forwarding between the nodes' links).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { down, up, type ClusterState } from './cluster.js';
import { createNamespace, servingNode, waitFor } from './helpers.js';
import { KubeApi, type KubeObject } from './kube.js';
import type { Pod } from './pod-types.js';

describe.runIf(process.getuid?.() === 0)('two real nodes', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npuserve-two-nodes-'));
  const stateFile = path.join(dir, 'state.json');
  let state: ClusterState;
  let client: KubeApi;
  let ns: string;
  const ips = new Map<string, string>();

  beforeAll(async () => {
    servingNode(); // throws, naming what is missing, on a run without real nodes
    state = await up({ npuNodes: 0, cpuNodes: 0, realNodes: 2, stateFile, log: (line) => console.log(`[two nodes] ${line}`) });
    client = KubeApi.fromFile(state.kubeconfig);
    ns = await createNamespace(client, 'two');
    for (const [k, node] of state.nodes.real.entries()) {
      await client.create(`/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `web${k}`, labels: { app: 'web' } },
        spec: {
          nodeName: node,
          terminationGracePeriodSeconds: 1,
          containers: [{
            name: 'web',
            image: state.image,
            imagePullPolicy: 'Never',
            command: ['node', '-e', `require('http').createServer((q, s) => s.end('web${k}')).listen(8080); process.on('SIGTERM', () => process.exit(0));`],
            ports: [{ containerPort: 8080 }],
            readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
          }],
        },
      });
    }
    for (const k of [0, 1]) {
      const pod = await waitFor(`pod web${k} ready`, async () => {
        const p = await client.get<Pod>(`/api/v1/namespaces/${ns}/pods/web${k}`);
        return p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? p : undefined;
      }, 90_000);
      ips.set(`web${k}`, pod.status!.podIP!);
    }
    await client.create(`/api/v1/namespaces/${ns}/services`, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web' },
      spec: { selector: { app: 'web' }, ports: [{ port: 80, targetPort: 8080 }] },
    });
  }, 240_000);

  afterAll(async () => {
    await down({ quiet: true, stateFile });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const exec = async (pod: string, script: string) => {
    const { execFileSync } = await import('node:child_process');
    return execFileSync(path.join(state.binDir, 'kubectl'), ['--kubeconfig', state.kubeconfig, 'exec', '-n', ns, pod, '--', 'node', '-e', script], { timeout: 30_000 }).toString().trim();
  };

  it('puts one pod on each node, each in its node\'s pod range', () => {
    expect(state.nodes.real).toHaveLength(2);
    expect(ips.get('web0')).toMatch(/^10\.\d+\.0\./);
    expect(ips.get('web1')).toMatch(/^10\.\d+\.1\./);
  });

  it('a pod on node 0 reaches the pod on node 1 at its pod IP, and back', async () => {
    expect(await exec('web0', `fetch('http://${ips.get('web1')}:8080').then((r) => r.text()).then(console.log)`)).toBe('web1');
    expect(await exec('web1', `fetch('http://${ips.get('web0')}:8080').then((r) => r.text()).then(console.log)`)).toBe('web0');
  });

  it('the Service answers from both nodes\' pods, from this machine and from a pod', async () => {
    const svc = await client.get<KubeObject & { spec: { clusterIP: string } }>(`/api/v1/namespaces/${ns}/services/web`);
    const url = `http://${svc.spec.clusterIP}/`;
    await waitFor(`kube-proxy serving ${url}`, () => fetch(url, { signal: AbortSignal.timeout(2000) }).then((r) => r.text(), () => undefined), 60_000, 500);
    // kube-proxy picks an endpoint at random per connection: 24 tries miss one of two with probability 2^-23.
    const fromHere = new Set<string>();
    for (let i = 0; i < 24; i++) fromHere.add(await (await fetch(url, { headers: { connection: 'close' }, signal: AbortSignal.timeout(5000) })).text());
    expect(fromHere).toEqual(new Set(['web0', 'web1']));
    const fromPod = await exec('web1', `Promise.all(Array.from({ length: 24 }, () => fetch('${url}', { headers: { connection: 'close' } }).then((r) => r.text()))).then((x) => console.log([...new Set(x)].sort().join(' ')))`);
    expect(fromPod).toBe('web0 web1');
  });
});
