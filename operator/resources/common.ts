// Pieces shared by the builders: names, labels, the owner reference, and pod placement on NPU nodes.
import { createHash } from 'node:crypto';

import type { OperatorConfig } from '../config.js';
import { API_VERSION, KIND, type NPUModel, type OwnerReference, type Toleration } from '../types.js';

export const LABEL_NAME = 'app.kubernetes.io/name';
export const LABEL_INSTANCE = 'app.kubernetes.io/instance';
export const LABEL_COMPONENT = 'app.kubernetes.io/component';
export const LABEL_MANAGED_BY = 'app.kubernetes.io/managed-by';
export const LABEL_REVISION = 'npuserve.io/revision';

export function labels(m: NPUModel, component: 'server' | 'converter' | 'cleanup', revision?: string): Record<string, string> {
  return {
    [LABEL_NAME]: 'npuserve',
    [LABEL_INSTANCE]: m.metadata.name,
    [LABEL_COMPONENT]: component,
    [LABEL_MANAGED_BY]: 'npuserve-operator',
    ...(revision ? { [LABEL_REVISION]: revision } : {}),
  };
}

/** Pods of the serving Deployment; the Service and the scale subresource select them. */
export function serverSelector(m: NPUModel): Record<string, string> {
  return { [LABEL_INSTANCE]: m.metadata.name, [LABEL_COMPONENT]: 'server' };
}

export function selectorString(sel: Record<string, string>): string {
  return Object.entries(sel)
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
}

export function ownerReference(m: NPUModel): OwnerReference {
  return { apiVersion: API_VERSION, kind: KIND, name: m.metadata.name, uid: m.metadata.uid ?? '', controller: true, blockOwnerDeletion: true };
}

/** Longest DNS-1123 label (object names of Jobs and Services, label values). */
export const MAX_LABEL = 63;

/**
 * A DNS-1123 label `base-suffix`. When that is longer than 63 characters, `base` is cut and a hash
 * of the whole `base` follows it (`base[:n]-h8-suffix`), so two bases that share their first
 * characters still get different names.
 */
export function childName(base: string, suffix: string): string {
  const whole = `${base}-${suffix}`;
  if (whole.length <= MAX_LABEL) return whole;
  const hash = createHash('sha256').update(base).digest('hex').slice(0, 8);
  const room = MAX_LABEL - suffix.length - hash.length - 2;
  return `${base.slice(0, room).replace(/-+$/, '')}-${hash}-${suffix}`;
}

/**
 * Why a model name cannot name its children, or null: the Service (and the endpoint's host) take
 * the model's name, and a Service name is a DNS-1035 label. The CRD refuses such names at
 * `kubectl apply`; this catches models created before that rule was installed.
 */
export function modelNameProblem(name: string): string | null {
  if (name.length <= MAX_LABEL && /^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(name)) return null;
  return `metadata.name '${name}' (${name.length} characters) cannot name the model's Service and labels: it must be at most ${MAX_LABEL} characters of lowercase letters, digits and '-', starting with a letter and ending with a letter or digit; recreate the model under such a name`;
}

export interface Placement {
  npuResourceName: string;
  npusPerReplica: number;
  nodeSelector: Record<string, string>;
  tolerations: Toleration[];
}

export function placement(m: NPUModel, cfg: OperatorConfig): Placement {
  const p = m.spec.placement ?? {};
  return {
    npuResourceName: p.npuResourceName ?? cfg.npuResourceName,
    npusPerReplica: p.npusPerReplica ?? 1,
    nodeSelector: p.nodeSelector ?? cfg.npuNodeSelector,
    tolerations: p.tolerations ?? [],
  };
}

/** Scheduling fields of a pod spec that runs on NPU nodes. */
export function npuScheduling(pl: Placement) {
  return { nodeSelector: pl.nodeSelector, tolerations: pl.tolerations };
}

/** Container resources: the NPUs (an extended resource: request equals limit). */
export function npuResources(pl: Placement) {
  const npus = pl.npusPerReplica > 0 ? { [pl.npuResourceName]: String(pl.npusPerReplica) } : {};
  return { requests: { cpu: '100m', ...npus }, limits: { ...npus } };
}

export const RESTRICTED_CONTAINER_SECURITY = {
  runAsNonRoot: true,
  runAsUser: 10001,
  runAsGroup: 10001,
  readOnlyRootFilesystem: true,
  allowPrivilegeEscalation: false,
  capabilities: { drop: ['ALL'] },
  seccompProfile: { type: 'RuntimeDefault' },
};
