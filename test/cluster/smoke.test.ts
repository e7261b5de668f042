// Smoke tests proving the local cluster is a real one: the controller-manager's controllers, the
// scheduler's node selection with NPU capacity, the garbage collector, and pods run in containers by
// the real node's kubelet, reachable through their Service (kube-proxy) at ready endpoints only.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KubeApi, KubeObject } from './kube.js';
import { parsePodSubnet } from './pod-subnet.js';
import type { Pod } from './pod-types.js';
import {
  claimDir,
  cluster,
  createNamespace,
  hostPathDir,
  kubeClient,
  kubectl,
  kwokTaint,
  npuLabels,
  npuResourceName,
  servingNode,
  waitFor,
} from './helpers.js';

let client: KubeApi;
let ns: string;

beforeAll(async () => {
  client = kubeClient();
  ns = await createNamespace(client, 'smoke');
});

afterAll(async () => {
  await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
});

const pods = (selector: string) => client.list<Pod>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: selector }).then((l) => l.items);
const onRealNode = () => ({ [servingNode().label]: 'true' });
/** Every pod here runs the npuserve image (the only image on the node: no registry) with a command of its own. */
const image = () => cluster().image!;

function deployment(name: string, replicas: number, podSpec: object, labels: Record<string, string> = {}): KubeObject {
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name },
    spec: {
      replicas,
      selector: { matchLabels: { app: name } },
      template: { metadata: { labels: { app: name, ...labels } }, spec: podSpec },
    },
  };
}

/** NPUs requested by the pods bound to each node that have not finished. */
async function npusInUse(): Promise<Map<string, number>> {
  const all = await client.list<Pod>('/api/v1/pods', { fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed' });
  const used = new Map<string, number>();
  for (const pod of all.items) {
    if (!pod.spec.nodeName) continue;
    const npus = pod.spec.containers.reduce(
      (sum, c) => sum + Number(c.resources?.requests?.[npuResourceName] ?? c.resources?.limits?.[npuResourceName] ?? 0),
      0,
    );
    used.set(pod.spec.nodeName, (used.get(pod.spec.nodeName) ?? 0) + npus);
  }
  return used;
}

/** One GET on a fresh connection (the proxy balances connections, as kube-proxy does). */
function getOnNewConnection(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(url, { agent: false, timeout: 5000 }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

describe('local cluster', () => {
  it('lists Ready simulated and real NPU nodes through the built kubectl', async () => {
    const out = await kubectl('get', 'nodes', '-l', 'accelerator=huawei-Ascend910', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}');
    const lines = out.trim().split('\n');
    const state = cluster();
    expect(lines).toHaveLength(state.nodes.npu.length + state.nodes.real.length);
    for (const line of lines) expect(line).toMatch(/ True$/);
  });

  it('a Deployment creates a ReplicaSet and running pods through the controller-manager', async () => {
    await client.create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment('sleeper', 3, {
      nodeSelector: onRealNode(),
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'sleep', image: image(), imagePullPolicy: 'Never', command: ['sleep', 'infinity'] }],
    }));
    const available = await waitFor('deployment sleeper available', async () => {
      const d = await client.get<KubeObject & { status?: { availableReplicas?: number } }>(`/apis/apps/v1/namespaces/${ns}/deployments/sleeper`);
      return d.status?.availableReplicas === 3 ? d : undefined;
    });
    const replicaSets = await client.list<KubeObject>(`/apis/apps/v1/namespaces/${ns}/replicasets`, { labelSelector: 'app=sleeper' });
    expect(replicaSets.items).toHaveLength(1);
    expect(replicaSets.items[0].metadata.ownerReferences?.[0]).toMatchObject({ kind: 'Deployment', uid: available.metadata.uid });
    const running = await pods('app=sleeper');
    expect(running).toHaveLength(3);
    for (const pod of running) {
      expect(pod.metadata.ownerReferences?.[0]).toMatchObject({ kind: 'ReplicaSet', uid: replicaSets.items[0].metadata.uid });
      expect(pod.status?.phase).toBe('Running');
      expect(pod.status?.podIP?.startsWith(`10.${parsePodSubnet(cluster().podSubnet).octet}.`)).toBe(true);
    }
    expect(new Set(running.map((p) => p.status?.podIP)).size).toBe(3);
  });

  it('deleting an owner garbage-collects its children', async () => {
    const before = await pods('app=sleeper');
    expect(before.length).toBeGreaterThan(0);
    await client.delete(`/apis/apps/v1/namespaces/${ns}/deployments/sleeper`, { propagationPolicy: 'Background' });
    await waitFor('ReplicaSet and pods of sleeper collected', async () => {
      const rs = await client.list(`/apis/apps/v1/namespaces/${ns}/replicasets`, { labelSelector: 'app=sleeper' });
      return rs.items.length === 0 && (await pods('app=sleeper')).length === 0 ? true : undefined;
    });
    // The kubelet stopped the containers: no process is left in the pods' cgroups.
    const uids = before.map((p) => p.metadata.uid!.replaceAll('-', '_'));
    const inPodCgroup = () => fs.readdirSync('/proc').filter((e) => /^\d+$/.test(e)).filter((pid) => {
      try {
        const cgroups = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
        return uids.some((uid) => cgroups.includes(uid) || cgroups.includes(uid.replaceAll('_', '-')));
      } catch {
        return false;
      }
    });
    await waitFor('the sleeper containers stopped', () => (inPodCgroup().length === 0 ? true : undefined), 30_000);
  });

  it('schedules NPU pods only onto NPU nodes and leaves one Pending as Unschedulable when they are full', async () => {
    type Node = KubeObject & { status: { allocatable: Record<string, string> } };
    const nodes = (await client.list<Node>('/api/v1/nodes')).items;
    const npus = (n: Node) => Number(n.status.allocatable[npuResourceName] ?? 0);
    const npuNodes = nodes.filter((n) => npus(n) >= 8);
    expect(npuNodes.length).toBe(cluster().nodes.npu.length + cluster().nodes.real.length);
    expect(npuNodes.every((n) => n.metadata.labels?.accelerator === npuLabels.accelerator)).toBe(true);
    // The pods may go to a pool of up to 4 NPU nodes with 8 free NPUs (other tests sharing the cluster
    // may hold some), the local one first, plus every CPU node: the pool keeps the test's size fixed
    // on clusters with thousands of nodes, and the scheduler must still skip the CPU nodes.
    const used = await npusInUse();
    const pool = npuNodes
      .filter((n) => npus(n) - (used.get(n.metadata.name ?? '') ?? 0) >= 8)
      .sort((a, b) => Number(b.metadata.labels?.[servingNode().label] === 'true') - Number(a.metadata.labels?.[servingNode().label] === 'true'))
      .slice(0, 4)
      .map((n) => n.metadata.name ?? '');
    const cpuNodes = nodes.filter((n) => npus(n) === 0).map((n) => n.metadata.name ?? '');
    expect(pool.length).toBeGreaterThan(0);
    expect(cpuNodes.length).toBeGreaterThan(0);
    const count = pool.length + 1;
    for (let i = 0; i < count; i++) {
      await client.create(`/api/v1/namespaces/${ns}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: `npu-${i}`, labels: { app: 'npu' } },
        spec: {
          nodeSelector: npuLabels,
          affinity: {
            nodeAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: {
                nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [...pool, ...cpuNodes] }] }],
              },
            },
          },
          tolerations: [{ ...kwokTaint, operator: 'Equal' }],
          terminationGracePeriodSeconds: 1,
          containers: [{ name: 'sleep', image: image(), imagePullPolicy: 'Never', command: ['sleep', 'infinity'], resources: { limits: { [npuResourceName]: '8' } } }],
        },
      });
    }
    const unschedulable = (p: Pod) => p.status?.conditions?.some((c) => c.type === 'PodScheduled' && c.reason === 'Unschedulable');
    const settled = await waitFor(`${pool.length} NPU pods scheduled and one Unschedulable`, async () => {
      const list = await pods('app=npu');
      const scheduledNow = list.filter((p) => p.spec.nodeName).length;
      return scheduledNow === pool.length && list.some((p) => !p.spec.nodeName && unschedulable(p)) ? list : undefined;
    }, 120_000);
    const scheduled = settled.filter((p) => p.spec.nodeName);
    expect(scheduled.map((p) => p.spec.nodeName).sort()).toEqual([...pool].sort()); // one per NPU node, none on CPU nodes
    const pending = settled.filter((p) => !p.spec.nodeName);
    expect(pending).toHaveLength(1);
    expect(pending[0].status?.phase).toBe('Pending');
    const condition = pending[0].status?.conditions?.find((c) => c.type === 'PodScheduled');
    expect(condition).toMatchObject({ status: 'False', reason: 'Unschedulable' });
    expect(condition?.message).toContain(`${pool.length} Insufficient ${npuResourceName}`);
    await client.request('DELETE', `/api/v1/namespaces/${ns}/pods`, { query: { labelSelector: 'app=npu' }, body: { gracePeriodSeconds: 1 } });
    await waitFor('NPU pods deleted', async () => ((await pods('app=npu')).length === 0 ? true : undefined));
  }, 180_000);

  it('runs a Job on the real NPU node that writes to a hostPath and a PVC, reaches Succeeded, and has kubectl logs', async () => {
    await client.create(`/api/v1/namespaces/${ns}/persistentvolumeclaims`, {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name: 'store' },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    });
    // /models is the node's own folder (its mount namespace); the image runs as uid 10001, the folder is 0777.
    const hostPath = '/models';
    await client.create(`/apis/batch/v1/namespaces/${ns}/jobs`, {
      apiVersion: 'batch/v1',
      kind: 'Job',
      metadata: { name: 'writer' },
      spec: {
        backoffLimit: 0,
        template: {
          spec: {
            restartPolicy: 'Never',
            nodeSelector: onRealNode(),
            containers: [{
              name: 'writer',
              image: image(),
              imagePullPolicy: 'Never',
              command: ['sh', '-c', `echo "job ran in $MY_POD" > /out/${ns}-result.txt && echo stored > /store/data.txt && echo writer done`],
              env: [{ name: 'MY_POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
              volumeMounts: [{ name: 'out', mountPath: '/out' }, { name: 'store', mountPath: '/store' }],
            }],
            volumes: [
              { name: 'out', hostPath: { path: hostPath, type: 'Directory' } },
              { name: 'store', persistentVolumeClaim: { claimName: 'store' } },
            ],
          },
        },
      },
    });
    await waitFor('job writer Complete', async () => {
      const job = await client.get<KubeObject & { status?: { conditions?: Array<{ type: string; status: string }>; succeeded?: number } }>(
        `/apis/batch/v1/namespaces/${ns}/jobs/writer`,
      );
      if (job.status?.conditions?.some((c) => c.type === 'Failed' && c.status === 'True')) throw new Error('job writer failed');
      return job.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True') ? true : undefined;
    });
    const [pod] = await pods('job-name=writer');
    expect(pod.status?.phase).toBe('Succeeded');
    expect(pod.status?.containerStatuses?.[0].state.terminated).toMatchObject({ exitCode: 0, reason: 'Completed' });
    expect(fs.readFileSync(path.join(hostPathDir(hostPath, pod.spec.nodeName), `${ns}-result.txt`), 'utf8')).toBe(`job ran in ${pod.metadata.name}\n`);
    expect(fs.readFileSync(path.join(await claimDir(client, ns, 'store'), 'data.txt'), 'utf8')).toBe('stored\n');
    expect(await kubectl('logs', '-n', ns, pod.metadata.name ?? '')).toBe('writer done\n');
  });

  it('restarts a failing container and reports its exit code', async () => {
    await client.create(`/api/v1/namespaces/${ns}/pods`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'crasher' },
      spec: { nodeSelector: onRealNode(), restartPolicy: 'Always', containers: [{ name: 'c', image: image(), imagePullPolicy: 'Never', command: ['sh', '-c', 'exit 3'] }] },
    });
    const status = await waitFor('crasher restarted', async () => {
      const pod = await client.get<Pod>(`/api/v1/namespaces/${ns}/pods/crasher`);
      const s = pod.status?.containerStatuses?.[0];
      return s && s.restartCount >= 1 ? s : undefined;
    });
    expect(status.lastState.terminated).toMatchObject({ exitCode: 3, reason: 'Error' });
  });

  it('routes a Service through kube-proxy to ready pods only, read from EndpointSlices', async () => {
    const server = (ready: boolean) => [
      'node', '-e',
      `require('http').createServer((q, s) => { if (q.url === '/ready') { s.statusCode = ${ready ? 200 : 503}; return s.end(); } ` +
        `s.end(process.env.MY_NAME); }).listen(8080); process.on('SIGTERM', () => process.exit(0));`,
    ];
    const podSpec = (ready: boolean) => ({
      nodeSelector: onRealNode(),
      terminationGracePeriodSeconds: 2,
      containers: [{
        name: 'web',
        image: image(),
        imagePullPolicy: 'Never',
        command: server(ready),
        env: [{ name: 'MY_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } }],
        ports: [{ name: 'http', containerPort: 8080 }],
        readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 },
      }],
    });
    await client.create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment('web', 2, podSpec(true), { role: 'web' }));
    await client.create(`/apis/apps/v1/namespaces/${ns}/deployments`, deployment('web-unready', 1, podSpec(false), { role: 'web' }));
    await client.create(`/api/v1/namespaces/${ns}/services`, {
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'web' },
      spec: { selector: { role: 'web' }, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
    });
    const readyPods = await waitFor('two ready web pods', async () => {
      const list = (await pods('app=web')).filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return list.length === 2 ? list : undefined;
    });
    await waitFor('web-unready running', async () => ((await pods('app=web-unready'))[0]?.status?.phase === 'Running' ? true : undefined));
    const svc = await client.get<KubeObject & { spec: { clusterIP: string } }>(`/api/v1/namespaces/${ns}/services/web`);
    const slices = await waitFor('two ready endpoints in the EndpointSlices', async () => {
      const list = await client.list<KubeObject & { endpoints?: Array<{ conditions: { ready: boolean } }> }>(
        `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`,
        { labelSelector: 'kubernetes.io/service-name=web' },
      );
      const endpoints = list.items.flatMap((e) => e.endpoints ?? []);
      return endpoints.filter((e) => e.conditions.ready).length === 2 && endpoints.length === 3 ? endpoints : undefined;
    });
    expect(slices.filter((e) => !e.conditions.ready)).toHaveLength(1); // listed, never routed to
    // kube-proxy syncs its rules a moment after the EndpointSlice changes: wait until it has
    // answered from both ready pods once, then check the steady state.
    const readyNames = new Set(readyPods.map((p) => p.metadata.name));
    const seen = new Set<string>();
    await waitFor(`kube-proxy serving ${svc.spec.clusterIP} from both ready pods`, async () => {
      const answer = await getOnNewConnection(`http://${svc.spec.clusterIP}/`).catch(() => undefined);
      if (answer !== undefined) seen.add(answer);
      return seen.size === readyNames.size ? true : undefined;
    }, 60_000, 200);
    expect(seen).toEqual(readyNames);
    // kube-proxy picks an endpoint at random per connection: 24 connections reach both ready pods
    // (missing one has probability 2^-23) and never the unready one.
    const answers = new Set<string>();
    for (let i = 0; i < 24; i++) answers.add(await getOnNewConnection(`http://${svc.spec.clusterIP}/`));
    expect(answers).toEqual(readyNames);
  });
});
