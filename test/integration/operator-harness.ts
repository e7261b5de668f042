// Test harness for the operator on the local cluster: the CRD applied, a namespace with an artifact
// claim and a test model on the real NPU node, and operator processes started from bin/npuserve.js.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { makeTestModel } from '../../runtime/testmodel.js';
import type { ClusterState } from '../cluster/cluster.js';
import { stateFile } from '../cluster/paths.js';
import { cluster, createNamespace, hostPathDir, imageFlags, kubeClient, kubectl, servingNode, waitFor } from '../cluster/helpers.js';
import type { KubeApi, KubeObject } from '../cluster/kube.js';

export const repoRoot = join(import.meta.dirname, '..', '..');
export const crdPath = join(repoRoot, 'crds', 'npuserve.io_npumodels.yaml');

export interface Model extends KubeObject {
  spec: Record<string, unknown>;
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    currentRevision?: { name: string; precision: string };
    targetRevision?: { name: string };
    revisions?: Array<{ name: string; precision: string; accuracy?: { cosineSimilarity?: number } }>;
    readyReplicas?: number;
    replicas?: number;
    endpoint?: string;
    observedGeneration?: number;
  };
}

export async function applyCrd(): Promise<void> {
  await kubectl('apply', '-f', crdPath);
  await kubectl('wait', '--for=condition=Established', '--timeout=60s', 'crd/npumodels.npuserve.io');
}

/** A namespace with the artifact claim, and the tiny test model on the serving node at hostPath /models/<name>. */
export async function modelNamespace(client: KubeApi, prefix: string, modelName = 'tiny'): Promise<string> {
  const ns = await createNamespace(client, prefix);
  await client.create(`/api/v1/namespaces/${ns}/persistentvolumeclaims`, {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: 'npuserve-artifacts' },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
  });
  const dir = hostPathDir(`/models/${modelName}`);
  mkdirSync(dir, { recursive: true });
  makeTestModel(dir, { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });
  return ns;
}

/**
 * Deletes a test namespace so that nothing stays Terminating. Its NPUModels go first, while the
 * namespace still admits the operator's cleanup Job: a running operator removes their artifacts and
 * the `npuserve.io/artifacts` finalizer within `waitMs`. A model still holding the finalizer then has
 * no operator left to act on it (a test killed it), so the test drops the finalizer itself.
 * Returns the names of the models whose finalizer the test had to drop.
 */
export async function deleteModelNamespace(client: KubeApi, ns: string, waitMs = 60_000): Promise<string[]> {
  const models = `/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels`;
  const names = async () => (await client.list<Model>(models).catch(() => ({ items: [] as Model[] }))).items.map((m) => m.metadata.name!);
  for (const name of await names()) await client.delete(`${models}/${name}`).catch(() => undefined);
  const deadline = Date.now() + waitMs;
  while ((await names()).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 500));
  const stripped = await names();
  for (const name of stripped) {
    await client.patch(`${models}/${name}`, [{ op: 'remove', path: '/metadata/finalizers' }], 'json').catch(() => undefined);
  }
  await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
  await waitFor(`namespace ${ns} deleted`, async () => ((await client.get(`/api/v1/namespaces/${ns}`).then(() => false, () => true)) ? true : undefined), 120_000, 500);
  return stripped;
}

/**
 * The real node has this machine's CPUs (2): a small CPU request lets several test models share it
 * (each then runs 1 engine thread, its CPU limit). A spec's own runtime fields replace these one by one.
 */
const LOCAL_RUNTIME = { maxBatchSize: 4, maxSeqLen: 256, maxWaitingRequests: 16, resources: { requests: { cpu: '100m' } } };

export function npuModel(name: string, spec: Record<string, unknown> = {}): Model {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name },
    spec: {
      source: { uri: 'file:///models/tiny' },
      precision: 'FP16',
      placement: { nodeSelector: { [servingNode().label]: 'true' } },
      ...spec,
      runtime: { ...LOCAL_RUNTIME, ...(spec.runtime as object | undefined) },
    },
  };
}

export interface OperatorProcess {
  child: ChildProcess;
  logs: () => string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export function startOperator(namespace: string, extra: string[] = []): OperatorProcess {
  let out = '';
  const child = spawn(process.execPath, [
    join(repoRoot, 'bin', 'npuserve.js'), 'operator',
    '--kubeconfig', cluster().kubeconfig,
    '--namespaces', namespace,
    ...imageFlags(),
    '--npu-node-selector', `${servingNode().label}=true`,
    '--metrics-port', '0',
    '--leader-election-namespace', namespace,
    '--lease-duration-seconds', '6',
    ...extra,
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.on('data', (c) => (out += c));
  child.stderr!.on('data', (c) => (out += c));
  return {
    child,
    logs: () => out,
    stop: (signal = 'SIGTERM') =>
      new Promise((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
        child.once('exit', (code) => resolve(code));
        child.kill(signal);
      }),
  };
}

export async function getModel(client: KubeApi, ns: string, name: string): Promise<Model> {
  return client.get<Model>(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels/${name}`);
}

export function waitForPhase(client: KubeApi, ns: string, name: string, phase: string, timeoutMs = 180_000): Promise<Model> {
  return waitFor(`npum ${ns}/${name} phase ${phase}`, async () => {
    const m = await getModel(client, ns, name);
    return m.status?.phase === phase && m.status.observedGeneration === m.metadata.generation ? m : undefined;
  }, timeoutMs, 500);
}

/**
 * Stops the running kube-apiserver, keeps it down for `downMs`, and starts it again with the same
 * command line (recorded in the cluster state, so cluster:down still stops it).
 */
export async function restartApiServer(client: KubeApi, downMs = 3000): Promise<void> {
  const state = JSON.parse(readFileSync(stateFile(), 'utf8')) as ClusterState;
  const proc = state.processes.find((p) => p.name === 'kube-apiserver');
  if (!proc) throw new Error('no kube-apiserver in the cluster state');
  const argv = readFileSync(`/proc/${proc.pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  const alive = () => {
    try {
      process.kill(proc.pid, 0);
      return !readFileSync(`/proc/${proc.pid}/stat`, 'utf8').includes(') Z ');
    } catch {
      return false;
    }
  };
  process.kill(proc.pid, 'SIGTERM');
  const deadline = Date.now() + 10_000;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(proc.pid, 'SIGKILL');
  await waitFor('kube-apiserver stopped', () => (alive() ? undefined : true), 30_000, 100);
  await new Promise((r) => setTimeout(r, downMs));
  const fd = openSync(proc.log, 'a');
  const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', fd, fd] });
  closeSync(fd);
  child.unref();
  proc.pid = child.pid!;
  writeFileSync(stateFile(), JSON.stringify(state, null, 2));
  await waitFor('kube-apiserver ready again', async () => ((await client.get<{ status?: string }>('/api/v1/namespaces/default')) ? true : undefined), 120_000, 500);
}

export { cluster, kubeClient, kubectl, waitFor, readFileSync };

/** `kubectl apply` of an object into a namespace; resolves to kubectl's output. */
export async function apply(namespace: string, obj: object): Promise<string> {
  const file = join(tmpdir(), `npum-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(obj));
  return kubectl('apply', '-n', namespace, '-f', file);
}

/** The error output of a `kubectl apply` that must fail. */
export async function applyError(namespace: string, obj: object): Promise<string> {
  try {
    await apply(namespace, obj);
  } catch (e) {
    return String((e as { stderr?: string }).stderr ?? e);
  }
  throw new Error('kubectl apply was expected to fail');
}
