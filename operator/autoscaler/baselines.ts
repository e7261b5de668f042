// The autoscalers a user would otherwise pick, as the bench replays them on the same simulator and
// scrape rounds as our policy: the HPA on requests in flight, KubeAI's and Knative's KPA. Each keeps
// its own state in a closure (a fresh one per run), as those controllers keep it in memory.
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

export interface KubeAIParameters {
  /** Model spec.targetRequests: active requests per replica (KubeAI's default is 100, sized for vLLM). */
  targetRequests: number;
  /** Model spec.scaleDownDelaySeconds (default 30). */
  scaleDownDelaySeconds: number;
  /** modelAutoscaling.interval (default 10 s). */
  intervalSeconds: number;
  /** modelAutoscaling.timeWindow (default 10 m). */
  timeWindowSeconds: number;
}

/**
 * KubeAI's autoscaler (substratusai/kubeai internal/modelautoscaler): every interval, the model's
 * active requests enter a simple moving average of timeWindow / interval samples; desired =
 * ceil(average / targetRequests), bounded by min and max replicas; a scale-up (or no change) applies at
 * once and resets the count of consecutive scale-downs, a scale-down applies only once
 * ceil(scaleDownDelaySeconds / interval) scale-downs in a row were asked for. KubeAI persists the
 * average across restarts; here it starts full of the first sample, as if the load had run before.
 */
export function kubeaiPolicy(p: KubeAIParameters): Policy {
  const samples: number[] = [];
  const count = Math.ceil(p.timeWindowSeconds / p.intervalSeconds);
  const required = Math.ceil(p.scaleDownDelaySeconds / p.intervalSeconds);
  let consecutiveScaleDowns = 0;
  return (input: PolicyInput) => {
    const current = input.currentReplicas;
    const keep = { desiredReplicas: clamp(current, input), history: input.history };
    if (input.nowMs % (p.intervalSeconds * 1000) !== 0) return keep;
    const active = inFlight(input.rounds.at(-1)) ?? 0;
    if (samples.length === 0) samples.push(...Array.from({ length: count - 1 }, () => active));
    samples.push(active);
    if (samples.length > count) samples.shift();
    const average = samples.reduce((a, b) => a + b, 0) / samples.length;
    const replicas = clamp(Math.ceil(average / p.targetRequests), input);
    if (replicas < current) {
      if (consecutiveScaleDowns < required) {
        consecutiveScaleDowns++;
        return keep;
      }
    } else {
      consecutiveScaleDowns = 0;
    }
    return { desiredReplicas: replicas, history: input.history };
  };
}

export interface KnativeParameters {
  /** containerConcurrency x target-utilization-percentage: concurrent requests per pod aimed at. */
  targetConcurrencyPerPod: number;
  /** stable-window (default 60 s). */
  stableWindowSeconds: number;
  /** stable-window x panic-window-percentage (default 10%: 6 s). */
  panicWindowSeconds: number;
  /** panic-threshold-percentage / 100 (default 200%: 2). */
  panicThreshold: number;
  /** max-scale-up-rate (default 1000) and max-scale-down-rate (default 2). */
  maxScaleUpRate: number;
  maxScaleDownRate: number;
}

/**
 * Knative's KPA on concurrency (knative/serving pkg/autoscaler/scaling/autoscaler.go): desired =
 * ceil(average concurrency over the window / target per pod) for the stable and the panic window,
 * each bounded to [ready / max-scale-down-rate, ready x max-scale-up-rate]; panic starts when the panic
 * window asks for panicThreshold x the ready pods, lasts until a stable window passes without that,
 * and in panic the count never drops. Averages are over the scrape rounds (the KPA samples every second).
 */
export function knativePolicy(p: KnativeParameters): Policy {
  let panicSinceMs: number | null = null;
  let maxPanicPods = 0;
  return (input: PolicyInput) => {
    const { nowMs } = input;
    const average = (windowSeconds: number) => {
      const values = input.rounds.filter((r) => r.timeMs > nowMs - windowSeconds * 1000).map(inFlight).filter((v): v is number => v !== null);
      return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
    };
    const stable = average(p.stableWindowSeconds);
    const panic = average(p.panicWindowSeconds) ?? stable;
    if (stable === null || panic === null) return { desiredReplicas: clamp(input.currentReplicas, input), history: input.history };
    const ready = Math.max(1, input.readyReplicas);
    const bound = (n: number) => Math.min(Math.ceil(ready * p.maxScaleUpRate), Math.max(Math.floor(ready / p.maxScaleDownRate), n));
    const stablePods = bound(Math.ceil(stable / p.targetConcurrencyPerPod));
    const panicPods = bound(Math.ceil(panic / p.targetConcurrencyPerPod));
    const overThreshold = panicPods / ready >= p.panicThreshold;
    if (overThreshold) panicSinceMs = nowMs;
    else if (panicSinceMs !== null && nowMs > panicSinceMs + p.stableWindowSeconds * 1000) {
      panicSinceMs = null;
      maxPanicPods = 0;
    }
    let desired = stablePods;
    if (panicSinceMs !== null) {
      maxPanicPods = Math.max(maxPanicPods, panicPods, input.currentReplicas);
      desired = maxPanicPods;
    }
    return { desiredReplicas: clamp(desired, input), history: input.history };
  };
}

/** The baselines with the parameters the bench runs them with (docs/benchmarks.md says why each). */
export const BASELINE_PARAMETERS = {
  hpa: { targetInFlightPerPod: 13 },
  kubeai: { targetRequests: 13, scaleDownDelaySeconds: 30, intervalSeconds: 10, timeWindowSeconds: 600 } satisfies KubeAIParameters,
  knative: { targetConcurrencyPerPod: 16 * 0.7, stableWindowSeconds: 60, panicWindowSeconds: 6, panicThreshold: 2, maxScaleUpRate: 1000, maxScaleDownRate: 2 } satisfies KnativeParameters,
};
