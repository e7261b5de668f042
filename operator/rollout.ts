// Pure decisions of a revision's life: what a finished conversion Job says, how to roll the
// Deployment given spare NPUs, and whether a rollout is complete.
import type { RolloutStrategy } from './resources/deployment.js';

export interface JobView {
  status?: { succeeded?: number; failed?: number; active?: number; conditions?: Array<{ type: string; status: string; reason?: string; message?: string }> };
}

export interface PodView {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { nodeName?: string };
  status?: {
    phase?: string;
    conditions?: Array<{ type: string; status: string; reason?: string; message?: string }>;
    containerStatuses?: Array<{ ready?: boolean; state?: { waiting?: { reason?: string; message?: string }; terminated?: { exitCode?: number; reason?: string; message?: string } } }>;
  };
}

export type ConversionOutcome =
  | { state: 'running'; message: string }
  | { state: 'succeeded'; accuracy?: { cosineSimilarity?: number; top1Agreement?: number } }
  | { state: 'failed'; reason: 'AccuracyGateFailed' | 'ConversionFailed'; message: string };

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

/** Exit code 3 of `npuserve convert` is the accuracy gate; its JSON summary is the termination message. */
export function conversionOutcome(job: JobView, pods: PodView[]): ConversionOutcome {
  const done = job.status?.conditions?.find((c) => (c.type === 'Complete' || c.type === 'Failed') && c.status === 'True');
  if (job.status?.succeeded && done?.type !== 'Failed') {
    const { message } = terminationMessage(pods);
    try {
      const summary = JSON.parse(message ?? '');
      return { state: 'succeeded', accuracy: { cosineSimilarity: summary.accuracy?.cosineSimilarity, top1Agreement: summary.accuracy?.top1Agreement } };
    } catch {
      return { state: 'succeeded' };
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
    return { state: 'failed', reason: exitCode === 3 ? 'AccuracyGateFailed' : 'ConversionFailed', message: detail.slice(0, 1000) };
  }
  const pending = pods.map(unschedulable).find(Boolean);
  return { state: 'running', message: pending ? `conversion pod pending: ${pending}` : 'conversion Job running' };
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

/** All pods run the current template and are available, and no old pod is left. */
export function rolloutComplete(d: DeploymentView): boolean {
  const want = d.spec?.replicas ?? 1;
  const s = d.status ?? {};
  return (s.observedGeneration ?? 0) >= (d.metadata.generation ?? 0) && (s.updatedReplicas ?? 0) === want && (s.availableReplicas ?? 0) === want && (s.replicas ?? 0) === want;
}
