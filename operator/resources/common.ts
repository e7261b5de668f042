// Pieces shared by the builders: names, labels, the owner reference, and pod placement on NPU nodes.
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

/** A DNS-1123 label: `base-suffix`, with `base` shortened so the whole fits in 63 characters. */
export function childName(base: string, suffix: string): string {
  const room = 63 - suffix.length - 1;
  return `${base.slice(0, room).replace(/-+$/, '')}-${suffix}`;
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
