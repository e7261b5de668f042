// Test namespaces leave nothing Terminating: an NPUModel's `npuserve.io/artifacts` finalizer is
// removed by its operator when the model goes first, and by the test itself when no operator is left.
import { beforeAll, describe, expect, it } from 'vitest';
import type { KubeApi } from '../cluster/kube.js';
import { applyCrd, deleteModelNamespace, getModel, kubeClient, modelNamespace, npuModel, startOperator, waitFor, waitForPhase } from './operator-harness.js';

const finalizer = 'npuserve.io/artifacts';
const models = (ns: string) => `/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels`;
const namespaceGone = (client: KubeApi, ns: string) => client.get(`/api/v1/namespaces/${ns}`).then(() => false, () => true);

describe('deleting a test namespace with NPUModels', () => {
  let client: KubeApi;

  beforeAll(async () => {
    client = kubeClient();
    await applyCrd();
  });


  it('with its operator running: the operator cleans up and drops the finalizer, and the namespace is gone', async () => {
    const ns = await modelNamespace(client, 'cleanup');
    const op = startOperator(ns, ['--leader-elect', 'false']);
    try {
      await client.create(models(ns), npuModel('tiny'));
      const ready = await waitForPhase(client, ns, 'tiny', 'Ready');
      expect(ready.metadata.finalizers).toContain(finalizer);
      expect(await deleteModelNamespace(client, ns)).toEqual([]);
      expect(await namespaceGone(client, ns)).toBe(true);
    } finally {
      await op.stop();
    }
  }, 300_000);

  it('after its operator was killed: the test drops the finalizer, and the namespace is gone', async () => {
    const ns = await modelNamespace(client, 'cleanup');
    const op = startOperator(ns, ['--leader-elect', 'false']);
    await client.create(models(ns), npuModel('orphan'));
    await waitFor('finalizer added', async () => ((await getModel(client, ns, 'orphan')).metadata.finalizers?.includes(finalizer) ? true : undefined), 60_000, 200);
    await op.stop('SIGKILL');
    expect(await deleteModelNamespace(client, ns, 0)).toEqual(['orphan']);
    expect(await namespaceGone(client, ns)).toBe(true);
  }, 300_000);
});
