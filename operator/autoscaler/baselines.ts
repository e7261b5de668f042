// The autoscalers a user would otherwise pick, as the bench replays them on the same simulator and
// scrape rounds as our policy: the HPA on requests in flight.
import { TOLERANCE, type PolicyInput, type Recommendation, type ScrapeRound } from './policy.js';
import type { Policy } from './simulator.js';

/** Requests running and waiting at one round, pods without metrics assumed at the reporting pods' mean; null when none reported. */
export function inFlight(round: ScrapeRound | undefined): number | null {
  const reported = round?.pods.filter((p) => p.metrics) ?? [];
  if (!round || reported.length === 0) return null;
  const sum = reported.reduce((s, p) => s + p.metrics!.running + p.metrics!.waiting, 0);
  return (sum * round.pods.length) / reported.length;
}

const clamp = (n: number, input: PolicyInput) => Math.min(input.targets.maxReplicas, Math.max(input.targets.minReplicas, n));

/**
 * The HPA algorithm (sync every 15 s) on a per-pod metric, average requests in flight (running +
 * waiting) at the last scrape: desired = ceil(current x observed / target) outside a 10% tolerance,
 * scale-up at most max(4 pods, 100%) per sync, scale-down to the highest recommendation of the last
 * scaleDownStabilizationSeconds (the HPA's defaults, kubernetes.io "Horizontal Pod Autoscaling").
 */
export function hpaPolicy(targetInFlightPerPod: number): Policy {
  return (input: PolicyInput) => {
    const { currentReplicas: current, nowMs, targets: t } = input;
    const keep = { desiredReplicas: clamp(current, input), history: input.history };
    if (nowMs % 15_000 !== 0) return keep;
    const last = input.rounds.at(-1);
    const reported = last?.pods.filter((p) => p.metrics) ?? [];
    if (reported.length === 0) return keep;
    const perPod = reported.reduce((s, p) => s + p.metrics!.running + p.metrics!.waiting, 0) / reported.length;
    const ratio = perPod / targetInFlightPerPod;
    let rec = Math.abs(ratio - 1) <= TOLERANCE ? current : Math.ceil(reported.length * ratio);
    rec = clamp(Math.max(rec, 1), input);
    const windowMs = t.scaleDownStabilizationSeconds * 1000;
    const history: Recommendation[] = [...input.history.filter((h) => h.timeMs > nowMs - windowMs), { timeMs: nowMs, replicas: rec }];
    const desired = rec < current ? Math.min(current, Math.max(...history.map((h) => h.replicas))) : Math.min(rec, Math.max(current + 4, current * 2));
    return { desiredReplicas: desired, history };
  };
}

/** The baselines with the parameters the bench runs them with (docs/benchmarks.md says why each). */
export const BASELINE_PARAMETERS = {
  hpa: { targetInFlightPerPod: 13 },
};
