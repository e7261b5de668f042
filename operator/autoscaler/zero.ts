// Scale to zero and back, as a pure function: a model with autoscaling.minReplicas 0 keeps one
// replica while requests come, goes to zero once none ran, waited or finished on its pods for
// scaleToZeroAfterSeconds, and is woken by requests the gateway holds for it (at least one replica,
// more when many are held). Requests are seen in the pods' metrics between two scrape rounds and in
// the gateway's held-requests annotations; a pod whose metrics cannot be read counts as busy.
import type { ScrapeRound } from './policy.js';

export interface ZeroInput {
  minReplicas: number;
  maxReplicas: number;
  /** Requests one replica runs at once (spec.runtime.maxBatchSize): held requests beyond it ask for more replicas. */
  maxBatchSize: number;
  scaleToZeroAfterSeconds: number;
  /** Requests the gateway holds for a replica (common/demand.ts). */
  heldRequests: number;
  /** A request ran, waited or finished on a pod since the previous round (`requestsSeen`). */
  requestsSeen: boolean;
  /** status.autoscaler.lastRequestTime; absent: the autoscaler has not watched the model yet. */
  lastRequestMs?: number;
  nowMs: number;
}

export interface ZeroDecision {
  /** Fewest replicas now: minReplicas, or for minReplicas 0, 1 while requests came recently (or are held), else 0. */
  floor: number;
  /** The model has been idle long enough to go to zero. */
  idle: boolean;
  lastRequestMs: number;
  /** Why the floor is what it is, when that is not simply minReplicas. */
  reason?: string;
}

export function zeroDecision(i: ZeroInput): ZeroDecision {
  const lastRequestMs = i.requestsSeen || i.heldRequests > 0 || i.lastRequestMs === undefined ? i.nowMs : i.lastRequestMs;
  if (i.heldRequests > 0) {
    const floor = Math.min(i.maxReplicas, Math.max(i.minReplicas, 1, Math.ceil(i.heldRequests / Math.max(i.maxBatchSize, 1))));
    return { floor, idle: false, lastRequestMs, reason: `${i.heldRequests} requests held by the gateway need ${floor} replicas` };
  }
  if (i.minReplicas > 0) return { floor: i.minReplicas, idle: false, lastRequestMs };
  const idleSeconds = (i.nowMs - lastRequestMs) / 1000;
  if (idleSeconds >= i.scaleToZeroAfterSeconds) return { floor: 0, idle: true, lastRequestMs, reason: `no requests for ${Math.round(idleSeconds)} s (scaleToZeroAfterSeconds ${i.scaleToZeroAfterSeconds}): scaled to zero` };
  return { floor: 1, idle: false, lastRequestMs };
}

/**
 * Whether `round` shows requests since `prev`: one running or waiting, a finished-requests counter
 * that grew (from 0 for a pod `prev` did not have), or a pod whose metrics could not be read.
 */
export function requestsSeen(prev: ScrapeRound | undefined, round: ScrapeRound): boolean {
  const before = new Map((prev?.pods ?? []).map((p) => [p.name, p.metrics?.requests]));
  return round.pods.some((p) => {
    if (!p.metrics) return true;
    if (p.metrics.running + p.metrics.waiting > 0) return true;
    const was = before.get(p.name);
    return p.metrics.requests > (was ?? 0) && !(was === undefined && before.has(p.name));
  });
}
