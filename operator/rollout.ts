// Pure decisions of a revision's life: what a conversion Job and its pod say (done, failed, pending,
// stuck), why a serving pod fails, and how to roll the Deployment given spare NPUs.
import type { ModelFootprint } from '../common/serving-memory.js';
import type { RolloutStrategy } from './resources/deployment.js';

export interface JobView {
  metadata?: { annotations?: Record<string, string> };
  spec?: { suspend?: boolean };
  status?: { succeeded?: number; failed?: number; active?: number; startTime?: string; completionTime?: string; conditions?: Array<{ type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string }> };
}

interface ContainerState {
  waiting?: { reason?: string; message?: string };
  running?: { startedAt?: string };
  terminated?: { exitCode?: number; reason?: string; message?: string };
}

export interface PodView {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string; creationTimestamp?: string };
  spec?: { nodeName?: string };
  status?: {
    phase?: string;
    reason?: string;
    message?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string }>;
    containerStatuses?: Array<{ ready?: boolean; state?: ContainerState; lastState?: ContainerState }>;
  };
}

/** Annotation on a conversion Job the operator suspended because its pod could not start; the value says why. */
export const STUCK_ANNOTATION = 'npuserve.io/stuck';

export type ConversionOutcome =
  /** `pending`: the scheduler cannot place the pod (it may once NPUs free up). */
  | { state: 'running'; message: string; pending?: boolean }
  /** The pod is placed but has not started for longer than the operator waits: the Job is to be suspended. */
  | { state: 'stuck'; message: string }
  | { state: 'succeeded'; accuracy?: { cosineSimilarity?: number; top1Agreement?: number }; precision?: string; model?: ModelFootprint; durationSeconds?: number }
  | { state: 'failed'; reason: 'AccuracyGateFailed' | 'ConversionFailed' | 'ConversionStuck'; message: string; durationSeconds?: number };

/**
 * A finished Job's wall time: its startTime to its completionTime (set on success) or to the
 * transition of its Complete/Failed condition; undefined while a time is missing.
 */
export function jobDurationSeconds(job: JobView): number | undefined {
  const done = job.status?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  const start = Date.parse(job.status?.startTime ?? '');
  const end = Date.parse(job.status?.completionTime ?? done?.lastTransitionTime ?? '');
  return Number.isFinite(start) && Number.isFinite(end) ? Math.max(0, (end - start) / 1000) : undefined;
}

/** The scheduler's reason a pod is not running, if it is unschedulable. */
export function unschedulable(pod: PodView): string | undefined {
  const c = pod.status?.conditions?.find((x) => x.type === 'PodScheduled' && x.status === 'False');
  return c ? `${c.reason ?? 'Unschedulable'}: ${c.message ?? ''}`.trim() : undefined;
}

function terminationMessage(pods: PodView[]): { exitCode?: number; message?: string } {
  for (const p of pods) {
    const t = p.status?.containerStatuses?.[0]?.state?.terminated;
    if (t) return { exitCode: t.exitCode, message: t.message };
  }
  return {};
}

/** Container states of a pod that will not resolve by waiting. */
const FAILING_REASONS = new Set(['CrashLoopBackOff', 'ErrImagePull', 'ImagePullBackOff', 'InvalidImageName', 'CreateContainerConfigError', 'CreateContainerError', 'RunContainerError']);

/** Why a serving pod's container cannot run (crash loop, image, config), with its last exit message. */
export function failing(pod: PodView): string | undefined {
  for (const s of pod.status?.containerStatuses ?? []) {
    const w = s.state?.waiting;
    if (!w?.reason || !FAILING_REASONS.has(w.reason)) continue;
    const last = s.lastState?.terminated;
    const exit = last ? `; last exit code ${last.exitCode ?? '?'}${last.message ? `: ${last.message.trim().slice(0, 500)}` : ''}` : '';
    return `pod ${pod.metadata.name}: ${w.reason}${w.message ? `: ${w.message}` : ''}${exit}`;
  }
  return undefined;
}

/**
 * A placed pod whose containers have not started for longer than `stuckAfterMs` (a mount that
 * fails, an image that cannot be pulled): what it waits on, or undefined.
 */
export function stuckPod(pod: PodView, nowMs: number, stuckAfterMs: number): string | undefined {
  if (pod.status?.phase !== 'Pending' || pod.metadata.deletionTimestamp) return undefined;
  const scheduled = pod.status.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'True');
  if (!scheduled && !pod.spec?.nodeName) return undefined;
  const since = Date.parse(scheduled?.lastTransitionTime ?? pod.metadata.creationTimestamp ?? '');
  if (!Number.isFinite(since) || nowMs - since < stuckAfterMs) return undefined;
  const waiting = pod.status.containerStatuses?.map((s) => s.state?.waiting).find((w) => w?.reason);
  const why = waiting ? `${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}` : `${pod.status.reason ?? 'ContainerCreating'}${pod.status.message ? `: ${pod.status.message}` : ''}`;
  return `pod ${pod.metadata.name} on node ${pod.spec?.nodeName ?? '?'} has not started in ${Math.round((nowMs - since) / 1000)} s (${why})`;
}

/** The summary's `model` when every figure is a positive integer (an older image reports none). */
function footprint(v: unknown): ModelFootprint | undefined {
  const m = v as Partial<Record<keyof ModelFootprint, unknown>> | undefined;
  const keys = ['fileBytes', 'layers', 'kvHeads', 'headDim'] as const;
  if (!m || !keys.every((k) => Number.isSafeInteger(m[k]) && (m[k] as number) > 0)) return undefined;
  return { fileBytes: m.fileBytes as number, layers: m.layers as number, kvHeads: m.kvHeads as number, headDim: m.headDim as number };
}

/**
 * Exit code 3 of `npuserve convert` is the accuracy gate; its JSON summary is the termination
 * message. A Job the operator suspended as stuck stays failed with the reason it recorded.
 */
export function conversionOutcome(job: JobView, pods: PodView[], nowMs = Date.now(), stuckAfterMs = Infinity): ConversionOutcome {
  const stuck = job.metadata?.annotations?.[STUCK_ANNOTATION];
  if (stuck && job.spec?.suspend) return { state: 'failed', reason: 'ConversionStuck', message: stuck };
  const done = job.status?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  if (job.status?.succeeded && done?.type !== 'Failed') {
    const { message } = terminationMessage(pods);
    try {
      const summary = JSON.parse(message ?? '');
      return { state: 'succeeded', accuracy: { cosineSimilarity: summary.accuracy?.cosineSimilarity, top1Agreement: summary.accuracy?.top1Agreement }, precision: summary.precision, model: footprint(summary.model), durationSeconds: jobDurationSeconds(job) };
    } catch {
      return { state: 'succeeded', durationSeconds: jobDurationSeconds(job) };
    }
  }
  if (done?.type === 'Failed' || (job.status?.failed ?? 0) > 0) {
    const { exitCode, message } = terminationMessage(pods);
    let detail = message?.trim() ?? '';
    try {
      const parsed = JSON.parse(detail);
      detail = parsed.error ?? detail;
    } catch {
      // a plain message (the log tail on error)
    }
    if (!detail) detail = done?.message ?? `conversion Job failed${exitCode !== undefined ? ` with exit code ${exitCode}` : ''}`;
    return { state: 'failed', reason: exitCode === 3 ? 'AccuracyGateFailed' : 'ConversionFailed', message: detail.slice(0, 1000), durationSeconds: jobDurationSeconds(job) };
  }
  const pending = pods.map(unschedulable).find(Boolean);
  if (pending) return { state: 'running', message: `conversion pod pending: ${pending}`, pending: true };
  const notStarting = pods.map((p) => stuckPod(p, nowMs, stuckAfterMs)).find(Boolean);
  if (notStarting) return { state: 'stuck', message: notStarting };
  return { state: 'running', message: 'conversion Job running' };
}

export interface RolloutPlan {
  strategy: RolloutStrategy;
  /** Set when the only way forward takes serving down for a moment. */
  pausesServing: boolean;
}

/**
 * NPUs are scarce: a surge pod that cannot be scheduled would hang a plain rolling update. Surge
 * when a spare NPU allotment exists, else replace one pod at a time while another keeps serving,
 * else (one replica, no spare) replace it and report the pause.
 */
export function planRollout(spareNpus: number, npusPerReplica: number, readyReplicas: number): RolloutPlan {
  if (npusPerReplica === 0 || spareNpus >= npusPerReplica) return { strategy: { maxSurge: 1, maxUnavailable: 0 }, pausesServing: false };
  if (readyReplicas >= 2) return { strategy: { maxSurge: 0, maxUnavailable: 1 }, pausesServing: false };
  return { strategy: { maxSurge: 0, maxUnavailable: 1 }, pausesServing: true };
}

export interface DeploymentView {
  metadata: { generation?: number };
  spec?: { replicas?: number; template?: { metadata?: { labels?: Record<string, string> } } };
  status?: { observedGeneration?: number; replicas?: number; updatedReplicas?: number; readyReplicas?: number; availableReplicas?: number };
}
