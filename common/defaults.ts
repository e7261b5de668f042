// The defaults of an NPUModel's spec, in one place: the operator fills unset fields from here, the
// `npuserve serve` flags default to the same values, and a unit test checks them against the
// CRD's schema defaults (crds/npuserve.io_npumodels.yaml), which the API server applies.

export const SPEC_DEFAULTS = {
  source: { format: 'auto' },
  precision: 'INT8',
  conversion: { optimizeLevel: 2, accuracyGate: { minCosineSimilarity: 0.99 } },
  runtime: { maxBatchSize: 16, maxSeqLen: 2048, maxWaitingRequests: 256, kvCacheDtype: 'f16' },
  autoscaling: { minReplicas: 1, targetTokensPerSecondPerReplica: 400, ttftP95TargetMs: 800, scaleDownStabilizationSeconds: 300, scaleToZeroAfterSeconds: 300 },
  placement: { npusPerReplica: 1 },
  service: { port: 8000, apiKeySecretRef: { key: 'api-key' } },
} as const;

/** spec.replicas when unset and not autoscaled (the CRD has no default: the autoscaler writes the field). */
export const DEFAULT_REPLICAS = 1;

/**
 * Engine threads of a serving pod, and so its CPU request and limit, when neither spec.runtime.threads
 * nor a CPU figure in spec.runtime.resources says (the CRD has no default: a CPU limit the user sets
 * decides the threads instead).
 */
export const DEFAULT_SERVING_THREADS = 4;
