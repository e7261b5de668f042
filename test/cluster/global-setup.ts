// Vitest global setup of the `cluster` project: starts one local cluster for the test run and stops it
// afterwards. If the cluster of `npm run cluster:up` is running (.cluster/state.json), the tests run
// against it and leave it running; NPUSERVE_CLUSTER_REUSE=0 refuses that instead. The demo's cluster
// (.cluster/demo/) is never used: the tests would take its node's CPU and restart its API server.
import { execFileSync } from 'node:child_process';

import type { TestProject } from 'vitest/node';
import { defaultUpOptions, down, isRunning, readState, up, type ClusterState } from './cluster.js';
import { demoClusterName, stateFile } from './paths.js';

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterState;
  }
}

/** Whether the test run reuses the cluster in `file` or starts its own; throws when it may do neither. */
export function testClusterPlan(existing: ClusterState | undefined, running: boolean, file: string, reuse = process.env.NPUSERVE_CLUSTER_REUSE): 'reuse' | 'start' {
  if (!existing || !running) return 'start';
  if (existing.name === demoClusterName) {
    throw new Error(`${file} is the demo's cluster (${existing.server}); tests never run on it, as they would disturb the demo: unset NPUSERVE_CLUSTER_STATE`);
  }
  if (reuse === '0') {
    throw new Error(`a local cluster is already running (${existing.server}) and NPUSERVE_CLUSTER_REUSE=0: stop it with 'npm run cluster:down'`);
  }
  return 'reuse';
}

function hasPodman(): boolean {
  try {
    execFileSync('podman', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const existing = readState();
  if (testClusterPlan(existing, isRunning(existing), stateFile()) === 'reuse') {
    console.log(`[cluster] using the running cluster at ${existing!.server} (state ${existing!.dir}); it stays running`);
    project.provide('cluster', existing!);
    return async () => undefined;
  }
  // A real node (containerd + kubelet running the image built from this checkout) needs root and
  // podman; without them the control plane and simulated nodes still start, and every test that
  // runs pods fails naming what is missing.
  const realNodes = process.getuid?.() === 0 && hasPodman() ? 1 : 0;
  if (realNodes === 0) console.log('[cluster] no real node: it needs root and podman (bash scripts/system-packages.sh installs podman, containerd, runc)');
  const state = await up({ ...defaultUpOptions, realNodes, log: (line) => console.log(`[cluster] ${line}`) });
  try {
    project.provide('cluster', state);
  } catch (err) {
    await down({ quiet: true });
    throw err;
  }
  return async () => {
    await down({ quiet: true });
  };
}
