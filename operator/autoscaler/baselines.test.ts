// Each baseline's decision rule on hand-made scrape rounds: the HPA's tolerance and sync period,
// KubeAI's moving average and consecutive scale-downs, Knative's panic mode.
import { describe, expect, it } from 'vitest';

import { hpaPolicy, knativePolicy, kubeaiPolicy } from './baselines.js';
import type { AutoscalingTargets, PolicyInput, ScrapeRound } from './policy.js';

const targets: AutoscalingTargets = { minReplicas: 1, maxReplicas: 10, targetTokensPerSecondPerReplica: 400, ttftP95TargetMs: 800, scaleDownStabilizationSeconds: 300, maxBatchSize: 16 };

/** A round at `seconds` of `pods` pods sharing `inFlight` requests, half running and half waiting. */
function round(seconds: number, pods: number, inFlight: number): ScrapeRound {
  const each = inFlight / pods;
  return { timeMs: seconds * 1000, pods: Array.from({ length: pods }, (_, i) => ({ name: `p${i}`, metrics: { generationTokens: 0, requests: 0, ttftBuckets: [], running: each / 2, waiting: each / 2 } })) };
}

const input = (rounds: ScrapeRound[], current: number, over: Partial<PolicyInput> = {}): PolicyInput => ({
  rounds, currentReplicas: current, readyReplicas: current, targets, history: [], rolloutInProgress: false, nowMs: rounds.at(-1)!.timeMs, ...over,
});

describe('HPA-style baseline', () => {
  it('scales to ceil(pods x observed / target) at a 15 s sync, not within the 10% tolerance, not between syncs', () => {
    const hpa = hpaPolicy(13);
    // 2 pods at 20 in flight each: ceil(2 x 20 / 13) = 4.
    expect(hpa(input([round(15, 2, 40)], 2)).desiredReplicas).toBe(4);
    // 14 per pod is 7.7% over 13: inside the tolerance.
    expect(hpa(input([round(15, 2, 28)], 2)).desiredReplicas).toBe(2);
    expect(hpa(input([round(10, 2, 40)], 2)).desiredReplicas).toBe(2);
  });
});

describe('KubeAI baseline', () => {
  it('averages active requests over timeWindow / interval samples, scales up at once, down after ceil(delay / interval) asks in a row', () => {
    const kubeai = kubeaiPolicy({ targetRequests: 13, scaleDownDelaySeconds: 30, intervalSeconds: 10, timeWindowSeconds: 30 });
    const steps: Array<[seconds: number, inFlight: number, current: number, desired: number]> = [
      [0, 26, 2, 2], // the window starts full of 26: ceil(26 / 13) = 2
      [5, 200, 2, 2], // not an interval boundary
      [10, 78, 2, 4], // (26 + 26 + 78) / 3 = 43.3 -> 4, at once
      [20, 0, 4, 4], // (26 + 78 + 0) / 3 = 34.7 -> 3: first scale-down asked
      [30, 0, 4, 4], // 26 -> 2: second
      [40, 0, 4, 4], // 0 -> 1: third
      [50, 0, 4, 1], // fourth in a row: 3 were required before it applies
    ];
    for (const [seconds, inFlight, current, desired] of steps) expect(kubeai(input([round(seconds, current, inFlight)], current)).desiredReplicas, `at ${seconds} s`).toBe(desired);
  });
});

describe('Knative KPA baseline', () => {
  const params = { targetConcurrencyPerPod: 10, stableWindowSeconds: 60, panicWindowSeconds: 6, panicThreshold: 2, maxScaleUpRate: 1000, maxScaleDownRate: 2 };

  it('follows the stable window; enters panic when the 6 s window asks for 2x the ready pods, and does not scale down in panic', () => {
    const kpa = knativePolicy(params);
    const rounds = Array.from({ length: 12 }, (_, i) => round(5 * (i + 1), 1, 8));
    // Stable: mean 8 in flight, ceil(8 / 10) = 1.
    expect(kpa(input(rounds, 1)).desiredReplicas).toBe(1);
    // A burst to 40: panic window (55 s, 60 s and 65 s rounds inside 6 s: 8 and 40) mean 24 -> 3 >= 2 x 1 ready: panic, 3 pods.
    rounds.push(round(65, 1, 40));
    expect(kpa(input(rounds, 1)).desiredReplicas).toBe(3);
    // The burst ends: the panic window asks for 1 of 3 ready, but panic holds 3 for a stable window.
    rounds.push(round(70, 3, 0), round(75, 3, 0));
    expect(kpa(input(rounds, 3)).desiredReplicas).toBe(3);
    for (let s = 80; s <= 125; s += 5) rounds.push(round(s, 3, 0));
    expect(kpa(input(rounds, 3)).desiredReplicas).toBe(3);
    // More than 60 s after the last over-threshold decision (65 s) panic ends: the stable window (0 in
    // flight) rules, bounded to floor(3 ready / 2) = 1 per decision.
    rounds.push(round(130, 3, 0));
    expect(kpa(input(rounds, 3)).desiredReplicas).toBe(1);
  });
});
