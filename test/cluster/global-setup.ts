// Vitest global setup of the `cluster` project: starts one local cluster for the test run and stops it
// afterwards. With NPUSERVE_CLUSTER_REUSE=1 the tests run against an already running cluster
// (npm run cluster:up) and leave it running.
import type { TestProject } from 'vitest/node';
import { defaultUpOptions, down, isRunning, readState, up, type ClusterState } from './cluster.js';

declare module 'vitest' {
  export interface ProvidedContext {
    cluster: ClusterState;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const existing = readState();
  const reuse = process.env.NPUSERVE_CLUSTER_REUSE === '1';
  if (existing && isRunning(existing)) {
    if (!reuse) {
      throw new Error(
        `a local cluster is already running (${existing.server}): stop it with 'npm run cluster:down', ` +
          'or set NPUSERVE_CLUSTER_REUSE=1 to run the tests against it',
      );
    }
    project.provide('cluster', existing);
    return async () => undefined;
  }
  const state = await up({ ...defaultUpOptions, log: (line) => console.log(`[cluster] ${line}`) });
  project.provide('cluster', state);
  return async () => {
    await down({ quiet: true });
  };
}
