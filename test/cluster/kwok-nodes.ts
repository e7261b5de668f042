// Simulated nodes: the KWOK controller keeps Node objects carrying its annotation Ready (lease
// heartbeats) and plays the pods bound to them through kwok's default stages (Running, Succeeded,
// deleted). Here: its process and the Node objects for NPU and CPU-only nodes.
import path from 'node:path';
import { isConflict, KubeApi, waitFor, type KubeObject } from './kube.js';
import { startProcess, type ManagedProcess } from './processes.js';

export const kwokAnnotation = 'kwok.x-k8s.io/node';
/** Simulated nodes carry this taint so only pods that tolerate it land there (kwok's convention). */
export const kwokTaint = { key: 'kwok.x-k8s.io/node', value: 'fake', effect: 'NoSchedule' };
export const npuResourceName = 'huawei.com/Ascend910';
export const npuLabels = { accelerator: 'huawei-Ascend910' };
export const npusPerNode = 8;

export async function startKwok(bin: string, dir: string, kubeconfig: string, stagesFile: string, simulatedPodCidr: string): Promise<ManagedProcess> {
  const p = startProcess('kwok', path.join(bin, 'kwok'), [
    `--kubeconfig=${kubeconfig}`,
    `--config=${stagesFile}`,
    `--manage-nodes-with-annotation-selector=${kwokAnnotation}=fake`,
    // Simulated pods get addresses in the local pod network's bridge subnet where nothing answers,
    // so a connection to one never leaves this machine; the service proxy skips them.
    `--cidr=${simulatedPodCidr}`,
    '--node-ip=127.0.0.1',
    '--node-lease-duration-seconds=40',
  ], path.join(dir, 'logs', 'kwok.log'));
  // kwok has no readiness endpoint without a server port; an early exit shows up within a second.
  await Promise.race([p.exited, new Promise((r) => setTimeout(r, 1000))]);
  p.stopWatching();
  return { name: p.name, pid: p.pid, log: p.log };
}

export function simulatedNode(name: string, npu: boolean): KubeObject {
  const capacity: Record<string, string> = { cpu: '96', memory: '768Gi', pods: '110', 'ephemeral-storage': '1Ti' };
  if (npu) capacity[npuResourceName] = String(npusPerNode);
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { [kwokAnnotation]: 'fake', 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        type: 'kwok',
        ...(npu ? npuLabels : {}),
      },
    },
    spec: { taints: [kwokTaint] },
    status: { capacity, allocatable: capacity },
  };
}

/** Creates nodes `${prefix}-${from}` .. `${prefix}-${to - 1}` (existing ones are kept), `concurrency` at a time. */
export async function createSimulatedNodes(client: KubeApi, prefix: string, from: number, to: number, npu: boolean, concurrency = 16): Promise<string[]> {
  const names: string[] = [];
  for (let i = from; i < to; i++) names.push(`${prefix}-${i}`);
  let next = 0;
  const worker = async () => {
    while (next < names.length) {
      const name = names[next++];
      try {
        await client.create('/api/v1/nodes', simulatedNode(name, npu));
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, names.length) }, worker));
  return names;
}

/**
 * Ready=True, and the node lifecycle controller has lifted the not-ready taint it puts on new nodes
 * (with many nodes that lags the condition), so the scheduler will use the node.
 */
function isSchedulable(node: KubeObject): boolean {
  const conditions = (node.status as { conditions?: Array<{ type: string; status: string }> } | undefined)?.conditions ?? [];
  const taints = (node.spec as { taints?: Array<{ key: string }> } | undefined)?.taints ?? [];
  return conditions.some((c) => c.type === 'Ready' && c.status === 'True') && !taints.some((t) => t.key.startsWith('node.kubernetes.io/'));
}

/** Waits until every named node is Ready and schedulable. */
export async function waitNodesReady(client: KubeApi, names: string[], timeoutMs: number): Promise<void> {
  const wanted = new Set(names);
  await waitFor(
    `${names.length} nodes Ready`,
    async () => {
      const list = await client.list<KubeObject>('/api/v1/nodes');
      const ready = list.items.filter((n) => wanted.has(n.metadata.name ?? '') && isSchedulable(n)).length;
      return ready === wanted.size ? true : undefined;
    },
    timeoutMs,
    500,
  );
}

/** Resolves once the node's status.allocatable[resource] reads `quantity`. */
export async function waitNodeAllocatable(client: KubeApi, name: string, resource: string, quantity: string, timeoutMs: number): Promise<void> {
  await waitFor(
    `${name} allocatable ${resource}=${quantity}`,
    async () => {
      const node = await client.get<KubeObject & { status?: { allocatable?: Record<string, string> } }>(`/api/v1/nodes/${name}`);
      return node.status?.allocatable?.[resource] === quantity ? true : undefined;
    },
    timeoutMs,
    250,
  );
}
