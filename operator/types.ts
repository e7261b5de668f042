// TypeScript shapes of the NPUModel resource, mirroring crds/npuserve.io_npumodels.yaml (checked
// against it in types.test.ts) and of the Kubernetes objects the operator builds.
export const GROUP = 'npuserve.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;
export const KIND = 'NPUModel';
export const PLURAL = 'npumodels';

import type { KvCacheDtype, ModelFootprint } from '../common/serving-memory.js';

export type Precision = 'FP16' | 'INT8' | 'FP32';
export type Phase = 'Pending' | 'Converting' | 'Deploying' | 'Ready' | 'Degraded' | 'Failed';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: OwnerReference[];
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface Toleration {
  key?: string;
  operator?: 'Exists' | 'Equal';
  value?: string;
  effect?: '' | 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute';
  tolerationSeconds?: number;
}

export interface NPUModelSpec {
  source: { uri: string; format?: 'auto' | 'safetensors' | 'gguf' | 'npu'; authSecretRef?: { name: string; key: string } };
  precision?: Precision;
  conversion?: { optimizeLevel?: number; accuracyGate?: { minCosineSimilarity?: number } };
  runtime?: { maxBatchSize?: number; maxSeqLen?: number; maxWaitingRequests?: number; kvCacheDtype?: KvCacheDtype; threads?: number; resources?: CpuMemoryRequirements };
  replicas?: number;
  autoscaling?: {
    minReplicas?: number;
    maxReplicas: number;
    targetTokensPerSecondPerReplica?: number;
    ttftP95TargetMs?: number;
    scaleDownStabilizationSeconds?: number;
    scaleToZeroAfterSeconds?: number;
  };
  placement?: { npuResourceName?: string; npusPerReplica?: number; nodeSelector?: Record<string, string>; tolerations?: Toleration[] };
  service?: { port?: number; apiKeySecretRef?: { name: string; key?: string } };
}

/** Quantities as Kubernetes writes them: `2`, `500m`, `8Gi`. */
export type Quantity = string | number;

/** The cpu and memory part of a core/v1 ResourceRequirements. */
export interface CpuMemoryRequirements {
  requests?: { cpu?: Quantity; memory?: Quantity };
  limits?: { cpu?: Quantity; memory?: Quantity };
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason?: string;
  message?: string;
}

export interface RevisionStatus {
  name: string;
  precision: string;
  artifact: string;
  accuracy?: { cosineSimilarity?: number; top1Agreement?: number };
  /** What sizes a serving pod; absent for revisions converted before the operator recorded it. */
  model?: ModelFootprint;
  convertedAt?: string;
}

export interface AutoscalerStatus {
  desiredReplicas?: number;
  tokensPerSecond?: number;
  ttftP95Ms?: number;
  waitingRequests?: number;
  lastScaleTime?: string;
  lastRequestTime?: string;
  heldRequests?: number;
  reason?: string;
  recommendations?: Array<{ time: string; replicas: number }>;
}

export interface NPUModelStatus {
  observedGeneration?: number;
  phase?: Phase;
  conditions?: Condition[];
  currentRevision?: RevisionStatus;
  targetRevision?: RevisionStatus;
  revisions?: RevisionStatus[];
  replicas?: number;
  readyReplicas?: number;
  selector?: string;
  endpoint?: string;
  autoscaler?: AutoscalerStatus;
}

export interface NPUModel {
  apiVersion: typeof API_VERSION;
  kind: typeof KIND;
  metadata: ObjectMeta;
  spec: NPUModelSpec;
  status?: NPUModelStatus;
}

/** Any Kubernetes object as the operator reads it. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  spec?: object;
  status?: object;
}
