// Backs a pod's volumes with host directories: emptyDir under the pod's dir, hostPath under the
// node's root dir (<cluster>/nodes/<node>/root<path>, so pods never write to the real host paths),
// persistentVolumeClaim at its bound PV's host path (see provisioner.ts), and configMap, secret and
// projected (service-account token, CA, namespace) volumes as files written from the API objects.
import fs from 'node:fs';
import path from 'node:path';
import { isNotFound, type KubeApi, type KubeObject } from '../kube.js';
import type { MountMap } from './container.js';
import type { Pod, Volume } from './types.js';

export interface VolumeContext {
  client: KubeApi;
  clusterDir: string;
  nodeName: string;
  podDir: string;
  /** The node's address (its pod network's gateway), for `status.hostIP`. */
  hostIP: string;
}

/** A volume that is not ready yet (PVC not bound, ConfigMap missing); the agent retries. */
export class VolumeNotReady extends Error {}

export function nodeRootDir(clusterDir: string, nodeName: string): string {
  return path.join(clusterDir, 'nodes', nodeName, 'root');
}

interface DataObject extends KubeObject {
  data?: Record<string, string>;
  binaryData?: Record<string, string>;
}

async function readData(ctx: VolumeContext, kind: 'configmaps' | 'secrets', namespace: string, name: string, optional: boolean) {
  try {
    const obj = await ctx.client.get<DataObject>(`/api/v1/namespaces/${namespace}/${kind}/${name}`);
    const files = new Map<string, Buffer>();
    for (const [k, v] of Object.entries(obj.data ?? {})) files.set(k, kind === 'secrets' ? Buffer.from(v, 'base64') : Buffer.from(v));
    for (const [k, v] of Object.entries(obj.binaryData ?? {})) files.set(k, Buffer.from(v, 'base64'));
    return files;
  } catch (err) {
    if (isNotFound(err) && optional) return new Map<string, Buffer>();
    if (isNotFound(err)) throw new VolumeNotReady(`${kind.slice(0, -1)} ${namespace}/${name} not found`);
    throw err;
  }
}

function writeFiles(dir: string, files: Map<string, Buffer>, items?: Array<{ key: string; path: string }>): void {
  fs.mkdirSync(dir, { recursive: true });
  const selected = items ? items.filter((i) => files.has(i.key)).map((i) => [i.path, files.get(i.key)!] as const) : [...files];
  for (const [rel, content] of selected) {
    const file = path.join(dir, rel);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
  }
}

interface ClaimAndVolume extends KubeObject {
  spec: { volumeName?: string; hostPath?: { path: string }; local?: { path: string } };
  status?: { phase?: string };
}

async function claimDir(ctx: VolumeContext, namespace: string, claimName: string): Promise<string> {
  let claim: ClaimAndVolume;
  try {
    claim = await ctx.client.get<ClaimAndVolume>(`/api/v1/namespaces/${namespace}/persistentvolumeclaims/${claimName}`);
  } catch (err) {
    if (isNotFound(err)) throw new VolumeNotReady(`persistentvolumeclaim ${namespace}/${claimName} not found`);
    throw err;
  }
  if (claim.status?.phase !== 'Bound' || !claim.spec.volumeName) {
    throw new VolumeNotReady(`persistentvolumeclaim ${namespace}/${claimName} is not bound yet`);
  }
  const pv = await ctx.client.get<ClaimAndVolume>(`/api/v1/persistentvolumes/${claim.spec.volumeName}`);
  const pvPath = pv.spec.hostPath?.path ?? pv.spec.local?.path;
  if (!pvPath) throw new VolumeNotReady(`persistentvolume ${claim.spec.volumeName} has no hostPath or local path`);
  // PVs made by our provisioner point into the cluster dir; any other path is a path on the node.
  const dir = pvPath.startsWith(ctx.clusterDir + path.sep) ? pvPath : path.join(nodeRootDir(ctx.clusterDir, ctx.nodeName), pvPath);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

interface ProjectedSource {
  serviceAccountToken?: { audience?: string; expirationSeconds?: number; path: string };
  configMap?: { name: string; items?: Array<{ key: string; path: string }>; optional?: boolean };
  secret?: { name: string; items?: Array<{ key: string; path: string }>; optional?: boolean };
  downwardAPI?: { items: Array<{ path: string; fieldRef?: { fieldPath: string } }> };
}

async function writeProjected(ctx: VolumeContext, pod: Pod, dir: string, sources: ProjectedSource[]): Promise<void> {
  const namespace = pod.metadata.namespace ?? 'default';
  fs.mkdirSync(dir, { recursive: true });
  for (const source of sources) {
    if (source.serviceAccountToken) {
      const sa = pod.spec.serviceAccountName ?? 'default';
      const request = await ctx.client.create<{ status: { token: string } }>(
        `/api/v1/namespaces/${namespace}/serviceaccounts/${sa}/token`,
        {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            audiences: source.serviceAccountToken.audience ? [source.serviceAccountToken.audience] : [],
            expirationSeconds: source.serviceAccountToken.expirationSeconds ?? 3607,
            boundObjectRef: { apiVersion: 'v1', kind: 'Pod', name: pod.metadata.name, uid: pod.metadata.uid },
          },
        },
      );
      writeFiles(dir, new Map([[source.serviceAccountToken.path, Buffer.from(request.status.token)]]));
    }
    if (source.configMap) {
      writeFiles(dir, await readData(ctx, 'configmaps', namespace, source.configMap.name, source.configMap.optional ?? false), source.configMap.items);
    }
    if (source.secret) {
      writeFiles(dir, await readData(ctx, 'secrets', namespace, source.secret.name, source.secret.optional ?? false), source.secret.items);
    }
    for (const item of source.downwardAPI?.items ?? []) {
      const value = item.fieldRef ? fieldValue(pod, item.fieldRef.fieldPath, pod.status?.podIP ?? '', ctx.hostIP) : '';
      writeFiles(dir, new Map([[item.path, Buffer.from(value)]]));
    }
  }
}

/** Value of a downward-API field path (metadata.name, metadata.namespace, status.podIP, ...). */
export function fieldValue(pod: Pod, fieldPath: string, podIP: string, hostIP: string): string {
  const labelMatch = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(fieldPath);
  if (labelMatch) return pod.metadata[labelMatch[1] as 'labels' | 'annotations']?.[labelMatch[2]] ?? '';
  switch (fieldPath) {
    case 'metadata.name':
      return pod.metadata.name ?? '';
    case 'metadata.namespace':
      return pod.metadata.namespace ?? '';
    case 'metadata.uid':
      return pod.metadata.uid ?? '';
    case 'spec.nodeName':
      return pod.spec.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec.serviceAccountName ?? '';
    case 'status.podIP':
      return podIP;
    case 'status.hostIP':
      return hostIP;
    default:
      return '';
  }
}

async function volumeDir(ctx: VolumeContext, pod: Pod, volume: Volume): Promise<string> {
  const namespace = pod.metadata.namespace ?? 'default';
  const own = path.join(ctx.podDir, 'volumes', volume.name);
  if (volume.hostPath) {
    const dir = path.join(nodeRootDir(ctx.clusterDir, ctx.nodeName), volume.hostPath.path);
    const isFile = volume.hostPath.type === 'File' || volume.hostPath.type === 'FileOrCreate';
    fs.mkdirSync(isFile ? path.dirname(dir) : dir, { recursive: true });
    return dir;
  }
  if (volume.persistentVolumeClaim) return claimDir(ctx, namespace, volume.persistentVolumeClaim.claimName);
  if (volume.configMap) {
    writeFiles(own, await readData(ctx, 'configmaps', namespace, volume.configMap.name, volume.configMap.optional ?? false), volume.configMap.items);
  } else if (volume.secret) {
    writeFiles(own, await readData(ctx, 'secrets', namespace, volume.secret.secretName, volume.secret.optional ?? false), volume.secret.items);
  } else if (volume.projected) {
    await writeProjected(ctx, pod, own, (volume.projected as { sources?: ProjectedSource[] }).sources ?? []);
  } else if (volume.downwardAPI) {
    await writeProjected(ctx, pod, own, [{ downwardAPI: volume.downwardAPI as ProjectedSource['downwardAPI'] }]);
  }
  fs.mkdirSync(own, { recursive: true }); // emptyDir and anything unsupported: a fresh dir
  return own;
}

/** Host dir per volume name. Throws VolumeNotReady while a claim or object is missing. */
export async function prepareVolumes(ctx: VolumeContext, pod: Pod): Promise<Map<string, string>> {
  const dirs = new Map<string, string>();
  for (const volume of pod.spec.volumes ?? []) dirs.set(volume.name, await volumeDir(ctx, pod, volume));
  return dirs;
}

/** Mount path -> host path for one container, honouring subPath. */
export function containerMounts(mounts: Array<{ name: string; mountPath: string; subPath?: string }> | undefined, volumeDirs: Map<string, string>): MountMap {
  const out: MountMap = [];
  for (const m of mounts ?? []) {
    const dir = volumeDirs.get(m.name);
    if (!dir) throw new VolumeNotReady(`volume mount '${m.name}' names no volume of the pod`);
    const host = m.subPath ? path.join(dir, m.subPath) : dir;
    if (m.subPath) fs.mkdirSync(host, { recursive: true });
    out.push([m.mountPath, host]);
  }
  return out;
}
