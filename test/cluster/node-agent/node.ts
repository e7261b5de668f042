// The local node's kubelet duties towards the API server: register the Node with NPU capacity and
// labels, then keep its Lease renewed and its Ready condition fresh, so the node lifecycle
// controller keeps it schedulable.
import os from 'node:os';
import { isConflict, isNotFound, sleep, type KubeApi, type KubeObject } from '../kube.js';

export const localNodeLabel = 'npuserve.io/local-node';
export const npuResourceName = 'huawei.com/Ascend910';
const leaseDurationSeconds = 40;
const heartbeatIntervalMs = 10_000;

const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
/** Lease times are MicroTime: six fractional digits. */
const microNow = () => new Date().toISOString().replace(/Z$/, '000Z');

function capacity(): Record<string, string> {
  return {
    cpu: String(os.cpus().length),
    memory: `${Math.floor(os.totalmem() / 1024)}Ki`,
    pods: '110',
    'ephemeral-storage': '100Gi',
    [npuResourceName]: '8',
  };
}

export interface LocalNode {
  name: string;
  kubernetesVersion: string;
  /** Port of the agent's kubelet API (container logs) on the gateway address. */
  kubeletPort: number;
  /** InternalIP: the pod network's gateway, reachable from its pods and from this machine. */
  address: string;
  registeredAt: string;
}

function nodeStatus(node: LocalNode) {
  const time = now();
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: time,
    lastTransitionTime: node.registeredAt,
  });
  return {
    capacity: capacity(),
    allocatable: capacity(),
    conditions: [
      condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'kubelet has sufficient memory available'),
      condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
      condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
      condition('Ready', 'True', 'KubeletReady', 'npuserve local node agent is posting ready status'),
    ],
    // The node is the host side of the pod network: reachable from its pods and from this machine.
    addresses: [
      { type: 'InternalIP', address: node.address },
      { type: 'Hostname', address: node.name },
    ],
    daemonEndpoints: { kubeletEndpoint: { Port: node.kubeletPort } },
    nodeInfo: {
      machineID: '',
      systemUUID: '',
      bootID: '',
      kernelVersion: os.release(),
      osImage: `npuserve local node (${os.type()})`,
      containerRuntimeVersion: 'npuserve-local://0.1.0',
      kubeletVersion: node.kubernetesVersion,
      kubeProxyVersion: node.kubernetesVersion,
      operatingSystem: 'linux',
      architecture: 'amd64',
    },
  };
}

export async function registerNode(client: KubeApi, local: LocalNode): Promise<void> {
  const name = local.name;
  const node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name,
      annotations: { 'node.alpha.kubernetes.io/ttl': '0' },
      labels: {
        'kubernetes.io/hostname': name,
        'kubernetes.io/os': 'linux',
        'kubernetes.io/arch': 'amd64',
        accelerator: 'huawei-Ascend910',
        [localNodeLabel]: 'true',
      },
    },
    spec: {},
    status: nodeStatus(local),
  };
  try {
    await client.create('/api/v1/nodes', node);
  } catch (err) {
    if (!isConflict(err)) throw err;
    await client.patch(`/api/v1/nodes/${name}`, { metadata: { labels: node.metadata.labels } });
  }
  await client.patch(`/api/v1/nodes/${name}/status`, { status: node.status }, 'strategic');
}

async function renewLease(client: KubeApi, name: string, nodeUid: string): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${name}`;
  try {
    await client.patch(path, { spec: { holderIdentity: name, leaseDurationSeconds, renewTime: microNow() } });
  } catch (err) {
    if (!isNotFound(err)) throw err;
    const lease: KubeObject = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name, namespace: 'kube-node-lease', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name, uid: nodeUid }] },
      spec: { holderIdentity: name, leaseDurationSeconds, renewTime: microNow() },
    };
    await client.create('/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', lease);
  }
}

/** Renews the lease and posts node status every 10 s until the signal aborts. */
export async function heartbeat(client: KubeApi, local: LocalNode, signal: AbortSignal, log: (m: string) => void): Promise<void> {
  const name = local.name;
  while (!signal.aborted) {
    try {
      const node = await client.get<KubeObject>(`/api/v1/nodes/${name}`);
      await renewLease(client, name, node.metadata.uid ?? '');
      await client.patch(`/api/v1/nodes/${name}/status`, { status: nodeStatus(local) }, 'strategic');
    } catch (err) {
      if (isNotFound(err)) await registerNode(client, local).catch((e: Error) => log(`re-register ${name}: ${e.message}`));
      else log(`heartbeat ${name}: ${(err as Error).message}`);
    }
    await sleep(heartbeatIntervalMs);
  }
}
