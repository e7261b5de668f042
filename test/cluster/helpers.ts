// Helpers for tests that run against the local cluster (the `cluster` vitest project): a client for
// the cluster of this run, throwaway namespaces, kubectl, and where local pods' volumes live on disk.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { inject } from 'vitest';
import type { ClusterState } from './cluster.js';
import { KubeApi, waitFor, type KubeObject } from './kube.js';
import { nodeRootDir } from './node-agent/volumes.js';

export { waitFor } from './kube.js';
export { startServiceProxy, type ServiceProxy } from './proxy.js';
export { kwokTaint, npuResourceName, npuLabels } from './kwok-nodes.js';
export { localNodeLabel } from './node-agent/node.js';

export function cluster(): ClusterState {
  return inject('cluster');
}

export function kubeClient(): KubeApi {
  return KubeApi.fromFile(cluster().kubeconfig);
}

/** Runs the cluster's own kubectl against this cluster; resolves with stdout. */
export async function kubectl(...args: string[]): Promise<string> {
  const state = cluster();
  const { stdout } = await promisify(execFile)(path.join(state.binDir, 'kubectl'), ['--kubeconfig', state.kubeconfig, ...args], {
    maxBuffer: 256 * 1024 * 1024,
  });
  return stdout;
}

/** Creates a namespace named `${prefix}-<random>`; returns its name. */
export async function createNamespace(client: KubeApi, prefix: string): Promise<string> {
  const name = `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
  await client.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name } });
  // Pods are refused until the service-account controller has made the namespace's default account.
  await waitFor(`serviceaccount ${name}/default`, () => client.get(`/api/v1/namespaces/${name}/serviceaccounts/default`).then(() => true));
  return name;
}

/** Where a hostPath volume's `hostPath` lands for pods on local node `nodeName`. */
export function hostPathDir(hostPath: string, nodeName = cluster().nodes.local[0]): string {
  return path.join(nodeRootDir(cluster().dir, nodeName), hostPath);
}

/** The host directory backing a bound PVC (its PV's hostPath, made by the local provisioner). */
export async function claimDir(client: KubeApi, namespace: string, claim: string): Promise<string> {
  const pvc = await waitFor(`pvc ${namespace}/${claim} bound`, async () => {
    const c = await client.get<KubeObject & { spec: { volumeName?: string }; status?: { phase?: string } }>(
      `/api/v1/namespaces/${namespace}/persistentvolumeclaims/${claim}`,
    );
    return c.status?.phase === 'Bound' ? c : undefined;
  });
  const pv = await client.get<KubeObject & { spec: { hostPath: { path: string } } }>(`/api/v1/persistentvolumes/${pvc.spec.volumeName}`);
  return pv.spec.hostPath.path;
}
