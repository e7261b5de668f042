// Vitest global setup of the `cluster` project: starts one local cluster for the test run and stops it
// afterwards. If a cluster is already running (npm run cluster:up), the tests run against it and
// leave it running; NPUSERVE_CLUSTER_REUSE=0 refuses that instead.
import type { TestProject } from 'vitest/node';
import { defaultUpOptions, down, isRunning, readState, up, type ClusterState } from './cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterState;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const existing = readState();
  if (existing && isRunning(existing)) {
    if (process.env.NPUSERVE_CLUSTER_REUSE === '0') {
      throw new Error(`a local cluster is already running (${existing.server}) and NPUSERVE_CLUSTER_REUSE=0: stop it with 'npm run cluster:down'`);
    }
    console.log(`[cluster] using the running cluster at ${existing.server} (state ${existing.dir}); it stays running`);
    project.provide('cluster', existing);
    return async () => undefined;
  }
  const state = await up({ ...defaultUpOptions, log: (line) => console.log(`[cluster] ${line}`) });
  project.provide('cluster', state);
  return async () => {
    await down({ quiet: true });
  };
}
