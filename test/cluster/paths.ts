// Where the local cluster's pieces live: the pinned versions (versions.env), the built binaries in
// ~/.cache/npuserve, and the state file of the running cluster (.cluster/state.json in the checkout).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const clusterSourceDir = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(clusterSourceDir, '../..');

export interface Versions {
  K8S_VERSION: string;
  STAGING_VERSION: string;
  ETCD_VERSION: string;
  KWOK_VERSION: string;
  HELM_VERSION: string;
}

export function readVersions(): Versions {
  const file = path.join(clusterSourceDir, 'versions.env');
  const values: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z0-9_]+)=(\S+)$/.exec(line.trim());
    if (m) values[m[1]] = m[2];
  }
  for (const key of ['K8S_VERSION', 'STAGING_VERSION', 'ETCD_VERSION', 'KWOK_VERSION', 'HELM_VERSION']) {
    if (!values[key]) throw new Error(`${file}: ${key} is not set`);
  }
  return values as unknown as Versions;
}

export function cacheDir(): string {
  return process.env.NPUSERVE_CACHE ?? path.join(os.homedir(), '.cache', 'npuserve');
}

/** Directory of the built upstream binaries; `bash test/cluster/build` fills it. */
export function binDir(versions = readVersions()): string {
  return path.join(cacheDir(), `k8s-${versions.K8S_VERSION}`, 'bin');
}

export function kwokStagesFile(versions = readVersions()): string {
  return path.join(cacheDir(), `k8s-${versions.K8S_VERSION}`, 'kwok-stages.yaml');
}

export const binaries = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubectl', 'kwok', 'helm', 'kubelet', 'kube-proxy'];

export function checkBinaries(dir = binDir()): void {
  const missing = binaries.filter((b) => !fs.existsSync(path.join(dir, b)));
  if (missing.length > 0 || !fs.existsSync(kwokStagesFile())) {
    throw new Error(
      `cluster binaries missing in ${dir} (${missing.join(', ') || 'kwok-stages.yaml'}): run 'bash test/cluster/build' first`,
    );
  }
}

/**
 * State file of the cluster of `npm run cluster:up` and of test runs (.cluster/state.json);
 * NPUSERVE_CLUSTER_STATE overrides where it is kept.
 */
export function stateFile(): string {
  return process.env.NPUSERVE_CLUSTER_STATE ?? path.join(repoRoot, '.cluster', 'state.json');
}

/** The demo's long-lived cluster: its own state file, which test runs never read. */
export const demoClusterName = 'demo';

/** State file of a named cluster, `.cluster/<name>/state.json` (`--cluster NAME` of the cluster CLI). */
export function namedStateFile(name: string): string {
  if (!/^[a-z0-9][a-z0-9-]*$/.test(name)) throw new Error(`cluster name '${name}': use lowercase letters, digits and '-'`);
  return path.join(repoRoot, '.cluster', name, 'state.json');
}
