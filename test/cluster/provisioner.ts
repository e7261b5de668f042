// A dynamic provisioner for the default StorageClass `standard`: each PVC gets a PV whose hostPath
// is a fresh directory under <cluster>/volumes, pre-bound to the claim (kube-controller-manager's PV
// controller completes the binding); released PVs are deleted with their directory. A stand-in for
// local-path-provisioner, whose image would need a registry; `cluster:up` runs it as a process:
//   node --import tsx test/cluster/provisioner.ts --kubeconfig=F --dir=CLUSTER_DIR
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { informer, isConflict, isNotFound, KubeApi, type KubeObject } from './kube.js';

export const storageClassName = 'standard';
export const provisionerName = 'npuserve.io/local-dir';

interface Claim extends KubeObject {
  spec: { storageClassName?: string; volumeName?: string; accessModes?: string[]; resources?: { requests?: { storage?: string } } };
  status?: { phase?: string };
}

interface Volume extends KubeObject {
  spec: { hostPath?: { path: string } };
  status?: { phase?: string };
}

export async function ensureStorageClass(client: KubeApi): Promise<void> {
  try {
    await client.create('/apis/storage.k8s.io/v1/storageclasses', {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: storageClassName, annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } },
      provisioner: provisionerName,
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'Immediate',
    });
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
}

async function provision(client: KubeApi, clusterDir: string, claim: Claim, log: (m: string) => void): Promise<void> {
  const { namespace, name, uid } = claim.metadata;
  const dir = path.join(clusterDir, 'volumes', `${namespace}-${name}-${uid}`);
  fs.mkdirSync(dir, { recursive: true });
  // Pods run as non-root users (the npuserve image as 10001), and hostPath volumes take no fsGroup.
  fs.chmodSync(dir, 0o777);
  try {
    await client.create('/api/v1/persistentvolumes', {
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: { name: `pvc-${uid}`, annotations: { 'pv.kubernetes.io/provisioned-by': provisionerName } },
      spec: {
        capacity: { storage: claim.spec.resources?.requests?.storage ?? '1Gi' },
        accessModes: claim.spec.accessModes ?? ['ReadWriteOnce'],
        persistentVolumeReclaimPolicy: 'Delete',
        storageClassName,
        hostPath: { path: dir, type: 'DirectoryOrCreate' },
        claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid },
      },
    });
    log(`provisioned pvc-${uid} for ${namespace}/${name} at ${dir}`);
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
}

async function reclaim(client: KubeApi, clusterDir: string, pv: Volume, log: (m: string) => void): Promise<void> {
  try {
    await client.delete(`/api/v1/persistentvolumes/${pv.metadata.name}`);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  const dir = pv.spec.hostPath?.path;
  if (dir?.startsWith(path.join(clusterDir, 'volumes') + path.sep)) fs.rmSync(dir, { recursive: true, force: true });
  log(`deleted released volume ${pv.metadata.name}`);
}

export function runProvisioner(client: KubeApi, clusterDir: string, signal: AbortSignal, log: (m: string) => void): Promise<void[]> {
  const onError = (what: string) => (err: Error) => log(`provisioner: ${what}: ${err.message}`);
  return Promise.all([
    informer<Claim>(client, '/api/v1/persistentvolumeclaims', {}, (type, claim) => {
      if (type === 'DELETED' || claim.status?.phase !== 'Pending' || claim.spec.volumeName) return;
      if ((claim.spec.storageClassName ?? '') !== storageClassName) return;
      provision(client, clusterDir, claim, log).catch(onError(`claim ${claim.metadata.namespace}/${claim.metadata.name}`));
    }, signal),
    informer<Volume>(client, '/api/v1/persistentvolumes', {}, (type, pv) => {
      if (type === 'DELETED' || pv.status?.phase !== 'Released') return;
      if (pv.metadata.annotations?.['pv.kubernetes.io/provisioned-by'] !== provisionerName) return;
      reclaim(client, clusterDir, pv, log).catch(onError(`volume ${pv.metadata.name}`));
    }, signal),
  ]);
}

async function main(argv: string[]): Promise<void> {
  const get = (name: string) => {
    const arg = argv.find((a) => a.startsWith(`--${name}=`));
    if (!arg) throw new Error(`provisioner: missing --${name}=...`);
    return arg.slice(name.length + 3);
  };
  const client = KubeApi.fromFile(get('kubeconfig'));
  const log = (message: string) => console.log(`${new Date().toISOString()} ${message}`);
  const stop = new AbortController();
  process.once('SIGTERM', () => stop.abort());
  process.once('SIGINT', () => stop.abort());
  await ensureStorageClass(client);
  log(`provisioning PVCs of StorageClass ${storageClassName} under ${path.join(get('dir'), 'volumes')}`);
  await runProvisioner(client, get('dir'), stop.signal, log);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(`provisioner: ${(err as Error).message}`);
    process.exit(1);
  });
}
