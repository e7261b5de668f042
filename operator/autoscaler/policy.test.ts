// The autoscaling policy on scripted load traces replayed through the pod simulator, each asserting
// the replica sequence a user would see, plus hand-built scrape rounds for the edge cases.
import { describe, expect, it } from 'vitest';

import { seededRandom } from '../../common/random.js';
import { decide, fitLine, histogramQuantile, type AutoscalingTargets, type PodMetrics, type PolicyInput, type ScrapeRound } from './policy.js';
import { replicaSteps, simulate, summary, TTFT_BUCKETS_SECONDS, type Faults, type PodModel } from './simulator.js';
import { evenRequests } from './traces.js';

const targets: AutoscalingTargets = { minReplicas: 1, maxReplicas: 8, targetTokensPerSecondPerReplica: 400, ttftP95TargetMs: 800, scaleDownStabilizationSeconds: 60, maxBatchSize: 16 };
// A replica serves 480 tokens/s at a full batch (20% above the target), is ready 15 s after it is asked for.
const pod: PodModel = { tokenMs: 1000 / 480, minStepMs: 1000 / 30, prefillChunkTokens: 256, kvCacheTokens: 16_384, startupSeconds: 15 };

/** Replays `demand` output tokens/s as evenly spaced requests of an 8-token prompt and 100 output tokens. */
function replay(demand: (second: number) => number, durationSeconds: number, initialReplicas: number, faults?: Faults) {
  const seconds = simulate({ requests: evenRequests(demand, 8, 100), durationSeconds, initialReplicas, targets, pod, policy: decide, scrapeIntervalSeconds: 5, faults });
  return { steps: replicaSteps(seconds), ...summary(seconds, targets.ttftP95TargetMs / 1000) };
}

describe('autoscaling policy on load traces', () => {
  it('a step from 300 to 1100 tokens/s scales 1 -> 3 at the first scrape, adds a fourth for the backlog, then settles at 3 once it is served', () => {
    const r = replay((s) => (s < 30 ? 300 : 1100), 200, 1);
    // 1100 / 400 = 3 replicas for the load, the fourth drains the queue that built up while pods started;
    // it stays while requests wait (the history keeps what demand asked for, not the backlog's replicas).
    expect(r.steps).toEqual([[0, 1], [35, 3], [50, 4], [175, 3]]);
  });

  it('a 4 s spike (shorter than the panic window) scales up at once and is remembered for the stabilization window', () => {
    const r = replay((s) => (s >= 30 && s < 34 ? 2000 : 300), 200, 1);
    expect(r.steps).toEqual([[0, 1], [35, 5], [95, 2], [135, 1]]);
    // Scale-down starts only 60 s (scaleDownStabilizationSeconds) after the spike's recommendation.
    expect(r.steps[2]![0] - r.steps[1]![0]).toBeGreaterThanOrEqual(targets.scaleDownStabilizationSeconds);
  });

  it('a slow ramp from 100 to 1600 tokens/s adds replicas one by one, a pod start-up ahead of the load (the trend), without scale-down', () => {
    const r = replay((s) => 100 + s * 5, 300, 1);
    // Each replica comes when the load 15 s (the start-up) ahead passes a multiple of 400 tokens/s.
    // Without the trend: [75, 2], [160, 3], [250, 4] and 20 s over the SLO.
    expect(r.steps).toEqual([[0, 1], [55, 2], [130, 3], [210, 4], [290, 5]]);
    expect(r.sloViolationSeconds).toBe(0);
  });

  it('load flapping around the threshold of 2 replicas inside the tolerance changes nothing', () => {
    expect(replay((s) => (Math.floor(s / 20) % 2 ? 680 : 780), 400, 2).steps).toEqual([[0, 2]]);
  });

  it('load flapping between 2 and 3 replicas of demand every 30 s scales up once and does not oscillate', () => {
    const r = replay((s) => (Math.floor(s / 30) % 2 ? 1000 : 700), 400, 2);
    expect(r.steps).toEqual([[0, 2], [35, 3]]);
  });

  it('a pod whose scrapes all fail is assumed to carry the mean load, so replicas hold', () => {
    const r = replay(() => 1000, 200, 3, { scrapeFails: (name) => name === 'pod-1' });
    expect(r.steps).toEqual([[0, 3]]);
  });

  it('a pod that restarts (its counters back to 0) is not read as a load drop', () => {
    expect(replay(() => 700, 200, 2, { restarts: [{ pod: 'pod-0', atSeconds: 62 }] }).steps).toEqual([[0, 2]]);
  });

  it('sustained lower load scales 4 -> 1 only after the stabilization window, one recommendation at a time', () => {
    expect(replay((s) => (s < 100 ? 1500 : 100), 300, 4).steps).toEqual([[0, 4], [165, 3], [175, 2], [195, 1]]);
  });
});

const metrics = (tokens: number, waiting = 0, ttftCounts?: number[]): PodMetrics => ({
  generationTokens: tokens,
  requests: tokens / 100,
  ttftBuckets: TTFT_BUCKETS_SECONDS.map((le, i) => [le, ttftCounts?.[i] ?? 0]),
  waiting,
  running: 0,
});

/** Rounds every 5 s from 0 to `untilSeconds` with `pods` pods each generating `perPod` tokens/s. */
function steadyRounds(pods: number, perPod: number, untilSeconds: number): ScrapeRound[] {
  const rounds: ScrapeRound[] = [];
  for (let s = 0; s <= untilSeconds; s += 5) {
    rounds.push({ timeMs: s * 1000, pods: Array.from({ length: pods }, (_, i) => ({ name: `p${i}`, metrics: metrics(10_000 + perPod * s) })) });
  }
  return rounds;
}

const input = (over: Partial<PolicyInput>): PolicyInput => ({ rounds: [], currentReplicas: 2, readyReplicas: 2, targets, history: [], rolloutInProgress: false, nowMs: 60_000, ...over });

describe('autoscaling policy on scrape rounds', () => {
  it('a brand-new pod with no history (its warm-up tokens counted) is neither load nor assumed to carry the mean', () => {
    const rounds = steadyRounds(2, 500, 60);
    rounds.at(-1)!.pods.push({ name: 'new', metrics: metrics(40) });
    const d = decide(input({ rounds, currentReplicas: 3, readyReplicas: 3 }));
    expect(d.inputs?.tokensPerSecond).toBeCloseTo(1000);
    expect(d.desiredReplicas).toBe(3);
  });

  it('holds replicas when no pod has given two samples yet (a restarted operator)', () => {
    const d = decide(input({ rounds: steadyRounds(2, 100, 0), currentReplicas: 2 }));
    expect(d).toMatchObject({ desiredReplicas: 2, inputs: null, reason: 'no metrics yet: holding replicas' });
  });

  it('keeps a spike recorded in the history (as status.autoscaler.recommendations after a restart) until the window passes', () => {
    const rounds = steadyRounds(5, 50, 60);
    const history = [{ timeMs: 20_000, replicas: 5 }];
    expect(decide(input({ rounds, currentReplicas: 5, readyReplicas: 5, history })).desiredReplicas).toBe(5);
    expect(decide(input({ rounds: steadyRounds(5, 50, 85), currentReplicas: 5, readyReplicas: 5, history, nowMs: 85_000 })).desiredReplicas).toBe(1);
  });

  it('never scales down while a new revision rolls out', () => {
    const d = decide(input({ rounds: steadyRounds(4, 50, 60), currentReplicas: 4, readyReplicas: 4, rolloutInProgress: true }));
    expect(d.desiredReplicas).toBe(4);
    expect(d.reason).toMatch(/^scale-down to 1 held while a new revision rolls out/);
  });

  it('clamps to [minReplicas, maxReplicas]', () => {
    const rounds = steadyRounds(2, 5000, 60);
    expect(decide(input({ rounds, targets: { ...targets, maxReplicas: 5 } })).desiredReplicas).toBe(5);
    expect(decide(input({ rounds: steadyRounds(2, 1, 60), targets: { ...targets, minReplicas: 2 } })).desiredReplicas).toBe(2);
  });

  it('says why in the Event words: tokens/s against the target and the TTFT p95 against its objective', () => {
    // 2 pods at 900 tokens/s each, 10 requests waiting on each and growing, first tokens after 2.5 s
    const slow = TTFT_BUCKETS_SECONDS.map((le) => (le >= 2.5 ? 1 : 0));
    const rounds: ScrapeRound[] = [];
    for (let s = 0; s <= 60; s += 5) {
      rounds.push({ timeMs: s * 1000, pods: ['a', 'b'].map((name) => ({ name, metrics: metrics(900 * s, s / 6, slow.map((c) => c * s * 9)) })) });
    }
    const d = decide(input({ rounds }));
    expect(d.reason).toMatch(/^panic: tokens\/s 1800 > 2 x 400 target; .*ttft p95 2\.\d+ s > 0\.8 s with 20 waiting/);
    expect(d.desiredReplicas).toBeGreaterThanOrEqual(5);
  });
});

/** Rounds every 5 s over the stable window of one pod whose tokens/s at second s is `rate(s)` (100 tokens a request). */
function rateRounds(rate: (second: number) => number, untilSeconds: number): ScrapeRound[] {
  const rounds: ScrapeRound[] = [];
  let tokens = 10_000;
  for (let s = untilSeconds - 60; s <= untilSeconds; s += 5) {
    if (s > untilSeconds - 60) tokens += rate(s - 2.5) * 5;
    rounds.push({ timeMs: s * 1000, pods: [{ name: 'p0', metrics: metrics(tokens) }] });
  }
  return rounds;
}

describe('prompt tokens', () => {
  // 2 pods, each generating 300 tokens/s and prefilling 300 prompt tokens/s.
  const rounds: ScrapeRound[] = [];
  for (let s = 0; s <= 60; s += 5) {
    rounds.push({ timeMs: s * 1000, pods: ['a', 'b'].map((name) => ({ name, metrics: { ...metrics(10_000 + 300 * s), promptTokens: 300 * s } })) });
  }

  it('do not count against the target by default: it is in generated tokens/s', () => {
    const d = decide(input({ rounds }));
    expect(d.desiredReplicas).toBe(2);
    expect(d.reason).toBe('tokens/s 600 within 10% of 2 x 400 target');
  });

  it('with promptTokenWeight 1 weigh as generated tokens, and the Event says how tokens/s splits', () => {
    const d = decide(input({ rounds, targets: { ...targets, promptTokenWeight: 1 } }));
    expect(d.desiredReplicas).toBe(3);
    expect(d.reason).toBe('tokens/s 1200 > 2 x 400 target (600 generated, 600 prompt)');
    expect(d.inputs?.tokensPerSecond).toBeCloseTo(600);
  });
});

describe('the trend term', () => {
  const one = (rounds: ScrapeRound[], nowSeconds: number) => decide(input({ rounds, currentReplicas: 1, readyReplicas: 1, nowMs: nowSeconds * 1000, podStartupSeconds: 30 }));

  it('fires on a sustained ramp: 4 tokens/s more each second, carried over the 30 s start-up past one replica', () => {
    // 100 -> 340 tokens/s over the window: the stable window's weighted rate alone still asks for 1 replica.
    const d = one(rateRounds((s) => 100 + 4 * (s - 60), 120), 120);
    expect(d.desiredReplicas).toBe(2);
    expect(d.reason).toMatch(/^tokens\/s rising 4\/s: 4\d\d expected in 30 s \(pod start-up\) > 1 x 400 target/);
  });

  it('does not fire on a step (a new level) nor on noise around a level', () => {
    expect(one(rateRounds((s) => (s < 100 ? 150 : 340), 120), 120).reason).not.toMatch(/rising/);
    const seed = 20_261_203;
    console.log(`trend noise test seed ${seed}`);
    const random = seededRandom(seed);
    let fired = 0;
    for (let i = 0; i < 200; i++) {
      const noise = Array.from({ length: 13 }, () => 1 + 0.4 * (random() - 0.5));
      const d = one(rateRounds((s) => 300 * noise[Math.floor((s - 60) / 5)]!, 120), 120);
      if (/rising/.test(d.reason)) fired++;
    }
    expect(fired, `seed ${seed}`).toBe(0);
  });

  it('needs 55 s of data however often pods are scraped (the operator may scrape every second)', () => {
    const rounds: ScrapeRound[] = [];
    let tokens = 10_000;
    for (let s = 100; s <= 120; s++) {
      tokens += 100 + 10 * (s - 100);
      rounds.push({ timeMs: s * 1000, pods: [{ name: 'p0', metrics: metrics(tokens) }] });
    }
    expect(one(rounds, 120).reason).not.toMatch(/rising/);
  });

  it('fits a least-squares line with the slope\'s t statistic, as computed by hand', () => {
    expect(fitLine([[0, 1], [1, 3], [2, 5]], 3)).toEqual({ slope: 2, valueAt: 7, tStatistic: Infinity });
    // slope 1 / 5, residuals -0.2, 0.6, -0.6, 0.2: standard error sqrt(0.8 / 2 / 5).
    const f = fitLine([[0, 0], [1, 1], [2, 0], [3, 1]], 0);
    expect(f.slope).toBeCloseTo(0.2, 12);
    expect(f.tStatistic).toBeCloseTo(0.2 / Math.sqrt(0.08), 12);
  });
});

describe('histogramQuantile', () => {
  it('interpolates within the bucket holding the rank, as Prometheus does', () => {
    expect(histogramQuantile(0.95, [[0.1, 0], [0.5, 50], [1, 100], [Infinity, 100]])).toBeCloseTo(0.95);
    expect(histogramQuantile(0.5, [[1, 0], [Infinity, 10]])).toBe(1);
    expect(histogramQuantile(0.95, [[1, 0], [Infinity, 0]])).toBeNull();
  });
});
