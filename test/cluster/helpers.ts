// Helpers for tests that run against the local cluster (the `cluster` vitest project): a client for
// the cluster of this run, throwaway namespaces, kubectl, and where the real node's volumes live on disk.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { inject } from 'vitest';
import type { ClusterState } from './cluster.js';
import { KubeApi, waitFor, type KubeObject } from './kube.js';
import { nodeRootDir, realNodeLabel } from './real-nodes.js';

export { waitFor } from './kube.js';
export { kwokTaint, npuResourceName, npuLabels } from './kwok-nodes.js';
export { realNodeLabel } from './real-nodes.js';

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

/** The node the product's pods run on in tests: the cluster's real node (containerd + kubelet); `label` selects it (`<label>=true`). */
export function servingNode(): { name: string; label: string } {
  const real = cluster().nodes.real[0];
  if (!real) throw new Error('this cluster has no real node: the cluster tests need root and podman (npm run cluster:up -- --real-nodes 1)');
  return { name: real, label: realNodeLabel };
}

/** The operator's flags for the image its pods run: the one built from this checkout, imported into the node's containerd (never pulled). */
export function imageFlags(): string[] {
  return ['--image', cluster().image!, '--image-pull-policy', 'Never'];
}

/**
 * Where a hostPath volume's `hostPath` lands for pods on `nodeName` (the serving node by default):
 * the node's own root folder (a real node mounts its root/models on /models in its mount namespace).
 */
export function hostPathDir(hostPath: string, nodeName = servingNode().name): string {
  return path.join(nodeRootDir(cluster().dir, nodeName), hostPath);
}

export interface ServiceAccess {
  url: string;
  close: () => Promise<void>;
}

/**
 * A URL for a Service from the test process: its cluster IP (this machine routes the Service range
 * to the real node, where kube-proxy translates it) once a connection succeeds.
 */
export async function serviceAccess(client: KubeApi, o: { namespace: string; service: string; port: number }): Promise<ServiceAccess> {
  const svc = await client.get<KubeObject & { spec: { clusterIP: string } }>(`/api/v1/namespaces/${o.namespace}/services/${o.service}`);
  const url = `http://${svc.spec.clusterIP}:${o.port}`;
  // kube-proxy programs a Service's rules a moment after its endpoints become ready.
  await waitFor(`${o.namespace}/${o.service} at ${url} (kube-proxy)`, () => fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) }).then((r) => (r.status < 500 ? true : undefined), () => undefined), 60_000, 500);
  return { url, close: async () => undefined };
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
