// A revision is what one conversion produces: the hash of (source, precision, optimize level,
// engine version), the artifact path it is converted to, and how its source is mounted.
import { createHash } from 'node:crypto';
import { posix } from 'node:path';

import { SPEC_DEFAULTS } from '../common/defaults.js';
import { refusedHost } from '../common/source-policy.js';
import { ENGINE_VERSION } from '../common/version.js';
import type { SourcePolicy } from './config.js';
import type { NPUModel, Precision } from './types.js';

export const ARTIFACT_MOUNT = '/artifacts';
export const SOURCE_MOUNT = '/source';

export interface SourceVolume {
  /** Pod volume that makes the source readable, or null when the Job downloads it. */
  volume: Record<string, unknown> | null;
  /** The path (or URL) `npuserve convert --input` reads. */
  input: string;
  /** Where the volume is mounted in the container; SOURCE_MOUNT when absent. */
  mountPath?: string;
}

export interface Revision {
  name: string;
  precision: Precision;
  optimizeLevel: number;
  /** True when the source is an already converted .npu file, served with no Job. */
  prebuilt: boolean;
  /** Where serving pods read the model, inside the container. */
  artifact: string;
  source: SourceVolume;
}

export function specPrecision(m: NPUModel): Precision {
  return m.spec.precision ?? SPEC_DEFAULTS.precision;
}

export function specOptimizeLevel(m: NPUModel): number {
  return m.spec.conversion?.optimizeLevel ?? SPEC_DEFAULTS.conversion.optimizeLevel;
}

/**
 * Why a source path could name another path than it shows, or null: `..` segments, percent escapes
 * (never decoded, so never needed), control characters and backslashes are refused, not normalised.
 */
function pathProblem(path: string): string | null {
  if (path.split('/').includes('..')) return "'..' segments are not allowed";
  if (/[%\\\u0000-\u001f\u007f]/.test(path)) return 'percent escapes, backslashes and control characters are not allowed';
  return null;
}

function underPrefix(path: string, prefix: string): boolean {
  return prefix === '/' || path === prefix || path.startsWith(`${prefix}/`);
}

/**
 * A file:// source mounts the admin's prefix that holds it (a directory that exists on every NPU
 * node), not the path itself: a path that is a single file (GGUF, .npu) mounts as well as a folder,
 * and a missing path is reported by `convert` as missing instead of being created empty by the
 * container runtime. The pod sees no more than the admin lets any model name. Under the prefix `/`
 * the path's parent folder is mounted instead.
 */
function hostMount(path: string, prefixes: readonly string[]): string {
  const prefix = prefixes.filter((p) => underPrefix(path, p)).sort((a, b) => b.length - a.length)[0];
  return prefix === '/' ? posix.dirname(path) : prefix;
}

function fileSource(uri: string, rawPath: string, policy: SourcePolicy): SourceVolume | string {
  const problem = pathProblem(rawPath);
  if (problem) return `source.uri ${uri}: ${problem}`;
  const path = posix.normalize(rawPath).replace(/(.)\/$/, '$1');
  if (!policy.hostPathPrefixes.some((p) => underPrefix(path, p)))
    return policy.hostPathPrefixes.length === 0
      ? `source.uri ${uri}: file:// sources are disabled on this cluster (the admin allows no node path); use pvc:// or http(s)://`
      : `source.uri ${uri}: node path ${path} is not under a prefix the cluster admin allows (${policy.hostPathPrefixes.join(', ')})`;
  const root = hostMount(path, policy.hostPathPrefixes);
  return { volume: { name: 'source', hostPath: { path: root, type: 'Directory' } }, mountPath: posix.join(SOURCE_MOUNT, root), input: posix.join(SOURCE_MOUNT, path) };
}

function httpSource(uri: string, policy: SourcePolicy): SourceVolume | string {
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    return `source.uri ${uri}: not a valid URL`;
  }
  if (url.username || url.password) return `source.uri: credentials in the URL are not allowed; put the Authorization header in a Secret named by spec.source.authSecretRef`;
  const refused = refusedHost(url, policy.allowedHosts);
  if (refused) return `source.uri ${uri}: ${refused}; conversion Jobs download only from public hosts unless the cluster admin allows this one (chart value sources.allowedHosts)`;
  return { volume: null, input: url.href };
}

/** How a source URI is made visible to a pod (an error message when it cannot be, or the admin does not allow it). */
export function sourceVolume(uri: string, policy: SourcePolicy): SourceVolume | string {
  const pvc = /^pvc:\/\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/(.+)$/s.exec(uri);
  if (pvc) {
    const problem = pathProblem(pvc[3]);
    if (problem) return `source.uri ${uri}: ${problem} (the path could leave the volume)`;
    return { volume: { name: 'source', persistentVolumeClaim: { claimName: pvc[1], readOnly: true } }, input: posix.join(SOURCE_MOUNT, posix.normalize(pvc[3])) };
  }
  const file = /^file:\/\/(\/.*)$/s.exec(uri);
  if (file) return fileSource(uri, file[1], policy);
  if (/^https?:\/\/[^/]+/.test(uri)) return httpSource(uri, policy);
  return `source.uri ${uri}: expected pvc://CLAIM/PATH, file:///PATH or http(s)://URL`;
}

export function revisionName(m: NPUModel): string {
  const key = JSON.stringify({
    uri: m.spec.source.uri,
    format: m.spec.source.format ?? SPEC_DEFAULTS.source.format,
    precision: specPrecision(m),
    optimizeLevel: specOptimizeLevel(m),
    engineVersion: ENGINE_VERSION,
  });
  return `r${createHash('sha256').update(key).digest('hex').slice(0, 10)}`;
}

/** The revision the spec asks for, or an error message naming what is wrong with the source. */
export function desiredRevision(m: NPUModel, policy: SourcePolicy): Revision | string {
  const source = sourceVolume(m.spec.source.uri, policy);
  if (typeof source === 'string') return source;
  const name = revisionName(m);
  const prebuilt = m.spec.source.format === 'npu';
  if (prebuilt && source.volume === null) return `source.uri ${m.spec.source.uri}: a prebuilt .npu source must be pvc:// or file://, the serving pods read it in place`;
  return {
    name,
    precision: specPrecision(m),
    optimizeLevel: specOptimizeLevel(m),
    prebuilt,
    artifact: prebuilt ? source.input : artifactPath(m.metadata.name, name),
    source,
  };
}

export function artifactPath(model: string, revision: string): string {
  return posix.join(ARTIFACT_MOUNT, model, `${revision}.npu`);
}
