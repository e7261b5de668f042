// The operator's Prometheus metrics, defined in one place: its own work (reconciles, queue, lease),
// the autoscaler's decisions, conversions, and each NPUModel's state as its last reconcile wrote it
// (replicas, targets, conditions, revisions, the accuracy gate), which the chart's dashboard and
// alert rules read. Per-model series carry `namespace` and `model` (the NPUModel's name).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

import type { NPUModel, NPUModelStatus } from './types.js';

export const registry = new Registry();
// Standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...), so the usual
// process dashboards and alerts work on the operator as on any other target.
collectDefaultMetrics({ register: registry });

export const reconcileTotal = new Counter({ name: 'npuserve_operator_reconcile_total', help: 'Reconciles run, by result.', labelNames: ['result'], registers: [registry] });
export const reconcileErrors = new Counter({ name: 'npuserve_operator_reconcile_errors_total', help: 'Reconciles that failed with an error other than a write conflict (those are reconcile_total{result="conflict"}), by reason: the API server\'s status reason, or ClientError when no response came.', labelNames: ['reason'], registers: [registry] });
export const reconcileDuration = new Histogram({
  name: 'npuserve_operator_reconcile_duration_seconds',
  help: 'Time one reconcile of an NPUModel took.',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});
export const queueDepth = new Gauge({ name: 'npuserve_operator_workqueue_depth', help: 'Keys waiting in the work queue.', registers: [registry] });
export const isLeader = new Gauge({ name: 'npuserve_operator_leader', help: '1 while this replica holds the leader lease.', registers: [registry] });

const modelLabels = ['namespace', 'model'] as const;
export const autoscalerDesiredReplicas = new Gauge({ name: 'npuserve_autoscaler_desired_replicas', help: 'Replicas the autoscaler decided on, per NPUModel.', labelNames: modelLabels, registers: [registry] });
export const autoscalerTokensPerSecond = new Gauge({ name: 'npuserve_autoscaler_observed_tokens_per_second', help: 'Generation tokens/s of all serving pods over the stable window, per NPUModel.', labelNames: modelLabels, registers: [registry] });
export const autoscalerTtftP95 = new Gauge({ name: 'npuserve_autoscaler_observed_ttft_p95_seconds', help: 'p95 time to first token over the stable window, per NPUModel.', labelNames: modelLabels, registers: [registry] });
export const autoscalerScrapeFailures = new Counter({ name: 'npuserve_autoscaler_scrape_failures_total', help: 'Serving pods whose /metrics could not be read (skipped in that round), per NPUModel.', labelNames: modelLabels, registers: [registry] });

// Conversions take minutes to an hour on real checkpoints.
export const conversionDuration = new Histogram({
  name: 'npuserve_conversion_duration_seconds',
  help: 'Wall time of a finished conversion (or inspection) Job, from its start to its end, by result (succeeded, AccuracyGateFailed, ConversionFailed, ConversionStuck).',
  labelNames: ['namespace', 'model', 'result'],
  buckets: [5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200],
  registers: [registry],
});

const replicasDesired = new Gauge({ name: 'npuserve_model_replicas_desired', help: 'Serving replicas the NPUModel asks for (spec.replicas, set by the autoscaler when it is on).', labelNames: modelLabels, registers: [registry] });
const replicasReady = new Gauge({ name: 'npuserve_model_replicas_ready', help: 'Serving replicas ready (status.readyReplicas).', labelNames: modelLabels, registers: [registry] });
const maxReplicas = new Gauge({ name: 'npuserve_model_max_replicas', help: 'spec.autoscaling.maxReplicas, for models that autoscale.', labelNames: modelLabels, registers: [registry] });
const ttftTarget = new Gauge({ name: 'npuserve_model_ttft_p95_target_seconds', help: 'spec.autoscaling.ttftP95TargetMs in seconds, for models that set it.', labelNames: modelLabels, registers: [registry] });
const maxWaiting = new Gauge({ name: 'npuserve_model_max_waiting_requests', help: 'Bound of each serving pod\'s waiting queue (spec.runtime.maxWaitingRequests); beyond it the pod answers 429.', labelNames: modelLabels, registers: [registry] });
const condition = new Gauge({ name: 'npuserve_model_status_condition', help: 'The NPUModel\'s conditions (Converted, Available, Progressing, Degraded): 1 when True, 0 otherwise, with the reason.', labelNames: ['namespace', 'model', 'condition', 'reason'], registers: [registry] });
const revisionInfo = new Gauge({ name: 'npuserve_model_revision_info', help: 'Revisions of the NPUModel (value 1): role current (status.currentRevision) or target (status.targetRevision, set while a rollout runs).', labelNames: ['namespace', 'model', 'revision', 'role', 'precision'], registers: [registry] });
const gateMinCosine = new Gauge({ name: 'npuserve_accuracy_gate_min_cosine_similarity', help: 'spec.conversion.accuracyGate.minCosineSimilarity: the cosine a conversion must reach.', labelNames: modelLabels, registers: [registry] });
const gateCosine = new Gauge({ name: 'npuserve_accuracy_gate_cosine_similarity', help: 'Cosine similarity of the revision\'s logits vs FP32 on the calibration prompts, as its conversion measured it.', labelNames: ['namespace', 'model', 'revision'], registers: [registry] });

type Series = [Gauge<string>, Record<string, string>];
const seriesByModel = new Map<string, Series[]>();

/** The accuracy gate's bound when the spec leaves it out (the CRD's default). */
const DEFAULT_MIN_COSINE = 0.99;
const DEFAULT_MAX_WAITING_REQUESTS = 256;

/**
 * Replaces the model's state series with what `status` (just written) says. Level-triggered like the
 * reconcile: the series are recomputed whole, so a revision pruned or a condition whose reason
 * changed leaves no stale series behind.
 */
export function exportModelState(m: NPUModel, status: NPUModelStatus, desiredReplicas: number): void {
  const { namespace = '', name: model } = m.metadata;
  removeState(`${namespace}/${model}`);
  const series: Series[] = [];
  const set = (g: Gauge<string>, labels: Record<string, string>, value: number): void => {
    g.set(labels, value);
    series.push([g, labels]);
  };
  const base = { namespace, model };
  set(replicasDesired, base, desiredReplicas);
  set(replicasReady, base, status.readyReplicas ?? 0);
  set(maxWaiting, base, m.spec.runtime?.maxWaitingRequests ?? DEFAULT_MAX_WAITING_REQUESTS);
  set(gateMinCosine, base, m.spec.conversion?.accuracyGate?.minCosineSimilarity ?? DEFAULT_MIN_COSINE);
  const as = m.spec.autoscaling;
  if (as) set(maxReplicas, base, as.maxReplicas);
  if (as?.ttftP95TargetMs !== undefined) set(ttftTarget, base, as.ttftP95TargetMs / 1000);
  for (const c of status.conditions ?? []) set(condition, { ...base, condition: c.type, reason: c.reason ?? '' }, c.status === 'True' ? 1 : 0);
  for (const [role, r] of [['current', status.currentRevision], ['target', status.targetRevision]] as const) {
    if (r?.name) set(revisionInfo, { ...base, revision: r.name, role, precision: r.precision }, 1);
  }
  for (const r of status.revisions ?? []) {
    const cos = r.accuracy?.cosineSimilarity;
    if (cos !== undefined) set(gateCosine, { ...base, revision: r.name }, cos);
  }
  seriesByModel.set(`${namespace}/${model}`, series);
}

function removeState(key: string): void {
  for (const [g, labels] of seriesByModel.get(key) ?? []) g.remove(labels);
  seriesByModel.delete(key);
}

/** Drops every series of a model (deleted): its state and the autoscaler's gauges. */
export function forgetModel(namespace: string, model: string): void {
  removeState(`${namespace}/${model}`);
  for (const g of [autoscalerDesiredReplicas, autoscalerTokensPerSecond, autoscalerTtftP95]) g.remove({ namespace, model });
}
