// Which local cluster a test run uses: never the demo's (its pods hold its node's CPUs and its operator
// would lose its lease), and the one of `npm run cluster:up` only when reuse is allowed.
import { describe, expect, it } from 'vitest';
import type { ClusterState } from '../cluster/cluster.js';
import { testClusterPlan } from '../cluster/global-setup.js';
import { demoClusterName, namedStateFile, stateFile } from '../cluster/paths.js';

const state = (name?: string): ClusterState => ({
  dir: '/tmp/npuserve-cluster-x',
  kubeconfig: '/tmp/npuserve-cluster-x/kubeconfig',
  server: 'https://127.0.0.1:6443',
  binDir: '/bin',
  kubernetesVersion: 'v1.36.3',
  networkId: 'abc123',
  ...(name ? { name } : {}),
  podSubnet: '10.244.0.0/16',
  ports: { etcd: 1, etcdPeer: 2, apiserver: 6443 },
  processes: [],
  nodes: { npu: [], cpu: [], real: [] },
  startedAt: '2026-01-01T00:00:00Z',
});

describe('the test run\'s cluster', () => {
  it('the demo keeps its cluster in a state file of its own, not the one test runs read', () => {
    expect(namedStateFile(demoClusterName)).not.toBe(stateFile());
    expect(namedStateFile(demoClusterName)).toMatch(/\.cluster\/demo\/state\.json$/);
  });

  it('starts its own cluster when none runs, and reuses a running cluster:up one unless told not to', () => {
    expect(testClusterPlan(undefined, false, 'f', undefined)).toBe('start');
    expect(testClusterPlan(state(), false, 'f', undefined)).toBe('start');
    expect(testClusterPlan(state(), true, 'f', undefined)).toBe('reuse');
    expect(() => testClusterPlan(state(), true, 'f', '0')).toThrow(/NPUSERVE_CLUSTER_REUSE=0/);
  });

  it('refuses a running demo cluster even when NPUSERVE_CLUSTER_STATE points at it', () => {
    expect(() => testClusterPlan(state(demoClusterName), true, '.cluster/demo/state.json', undefined)).toThrow(/the demo's cluster .* tests never run on it/);
  });

  it('names a bad cluster name', () => {
    expect(() => namedStateFile('../x')).toThrow(/cluster name '\.\.\/x': use lowercase letters, digits and '-'/);
  });
});
