// A revision is what one conversion produces: the hash of (source, precision, optimize level,
// engine version), the artifact path it is converted to, and how its source is mounted.
import { createHash } from 'node:crypto';
import { posix } from 'node:path';

import { ENGINE_VERSION } from '../runtime/version.js';
import type { NPUModel, Precision } from './types.js';

export const ARTIFACT_MOUNT = '/artifacts';
export const SOURCE_MOUNT = '/source';

export interface SourceVolume {
  /** Pod volume that makes the source readable, or null when the Job downloads it. */
  volume: Record<string, unknown> | null;
  /** The path (or URL) `npuserve convert --input` reads. */
  input: string;
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
  return m.spec.precision ?? 'INT8';
}

export function specOptimizeLevel(m: NPUModel): number {
  return m.spec.conversion?.optimizeLevel ?? 2;
}

/** How a source URI is made visible to a pod (an error message when it cannot be). */
export function sourceVolume(uri: string): SourceVolume | string {
  const pvc = /^pvc:\/\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/(.+)$/.exec(uri);
  if (pvc) {
    const path = posix.normalize(pvc[3]);
    if (path.startsWith('..')) return `source.uri ${uri}: the path leaves the volume`;
    return { volume: { name: 'source', persistentVolumeClaim: { claimName: pvc[1], readOnly: true } }, input: posix.join(SOURCE_MOUNT, path) };
  }
  const file = /^file:\/\/(\/.+)$/.exec(uri);
  if (file) {
    const path = posix.normalize(file[1]);
    return { volume: { name: 'source', hostPath: { path } }, input: posix.join(SOURCE_MOUNT, posix.basename(path)) };
  }
  if (/^https?:\/\/[^/]+/.test(uri)) return { volume: null, input: uri };
  return `source.uri ${uri}: expected pvc://CLAIM/PATH, file:///PATH or http(s)://URL`;
}

export function revisionName(m: NPUModel): string {
  const key = JSON.stringify({
    uri: m.spec.source.uri,
    format: m.spec.source.format ?? 'auto',
    precision: specPrecision(m),
    optimizeLevel: specOptimizeLevel(m),
    engineVersion: ENGINE_VERSION,
  });
  return `r${createHash('sha256').update(key).digest('hex').slice(0, 10)}`;
}

/** The revision the spec asks for, or an error message naming what is wrong with the source. */
export function desiredRevision(m: NPUModel): Revision | string {
  const source = sourceVolume(m.spec.source.uri);
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
