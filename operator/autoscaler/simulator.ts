// A one-second-step model of serving pods under a scripted load, scraped like the operator scrapes
// them and scaled by any policy: replays traces for the policy tests and for `npm run bench:autoscale`.
import type { AutoscalingTargets, PodMetrics, PolicyInput, Recommendation, ScrapeRound } from './policy.js';

/** TTFT histogram bounds of the serving pods (runtime/metrics.ts), in seconds. */
export const TTFT_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, Infinity];

export interface PodModel {
  /** Generation tokens/s one replica delivers at a full batch. */
  capacityTokensPerSecond: number;
  /** Output tokens of each request. */
  tokensPerRequest: number;
  /** TTFT of a request that does not wait. */
  baseTtftSeconds: number;
  /** From the scale decision to the pod being ready (scheduling, model load, warm-up). */
  startupSeconds: number;
}

export type Policy = (input: PolicyInput) => { desiredReplicas: number; history: Recommendation[] };

export interface Faults {
  /** The pod's scrape fails at this time. */
  scrapeFails?: (pod: string, timeMs: number) => boolean;
  /** Pods whose process restarts (counters back to 0) at the given second. */
  restarts?: Array<{ pod: string; atSeconds: number }>;
}

export interface SimulationOptions {
  /** Requested generation tokens/s at each second. */
  demand: (second: number) => number;
  durationSeconds: number;
  initialReplicas: number;
  targets: AutoscalingTargets;
  pod: PodModel;
  policy: Policy;
  scrapeIntervalSeconds: number;
  faults?: Faults;
}

export interface Second {
  second: number;
  demandTokensPerSecond: number;
  servedTokensPerSecond: number;
  replicas: number;
  readyReplicas: number;
  ttftSeconds: number;
}

interface SimPod {
  name: string;
  readyAtSecond: number;
  tokens: number;
  requests: number;
  buckets: number[];
}

function observe(pod: SimPod, ttftSeconds: number, count: number): void {
  const from = TTFT_BUCKETS_SECONDS.findIndex((le) => ttftSeconds <= le);
  for (let i = from; i < pod.buckets.length; i++) pod.buckets[i]! += count;
}

function metricsOf(pod: SimPod, running: number, waiting: number): PodMetrics {
  return { generationTokens: pod.tokens, requests: pod.requests, ttftBuckets: TTFT_BUCKETS_SECONDS.map((le, i) => [le, pod.buckets[i]!]), running, waiting };
}

/**
 * Fluid queue model: requests arrive as demanded tokens, ready pods serve up to their capacity split
 * evenly, the rest waits; a request's TTFT is the base plus the time to drain the tokens ahead of it.
 */
export function simulate(o: SimulationOptions): Second[] {
  const pods: SimPod[] = [];
  let created = 0;
  const addPod = (readyAtSecond: number) =>
    pods.push({ name: `pod-${created++}`, readyAtSecond, tokens: 0, requests: 0, buckets: TTFT_BUCKETS_SECONDS.map(() => 0) });
  for (let i = 0; i < o.initialReplicas; i++) addPod(0);
  let backlogTokens = 0;
  let rounds: ScrapeRound[] = [];
  let history: Recommendation[] = [];
  const out: Second[] = [];
  const perSequence = o.pod.capacityTokensPerSecond / o.targets.maxBatchSize;
  let lastServed = 0;
  for (let s = 0; s < o.durationSeconds; s++) {
    for (const r of o.faults?.restarts ?? []) {
      const p = pods.find((x) => x.name === r.pod);
      if (p && r.atSeconds === s) Object.assign(p, { tokens: 0, requests: 0, buckets: p.buckets.map(() => 0) });
    }
    if (s % o.scrapeIntervalSeconds === 0) {
      // The scrape at the start of second s sees everything served before it.
      const ready = pods.filter((p) => p.readyAtSecond <= s);
      const nowMs = s * 1000;
      const running = ready.length ? Math.min(o.targets.maxBatchSize, lastServed / ready.length / perSequence) : 0;
      const waiting = ready.length ? backlogTokens / o.pod.tokensPerRequest / ready.length : 0;
      rounds = [...rounds.filter((r) => r.timeMs > nowMs - 120_000), {
        timeMs: nowMs,
        pods: ready.map((p) => ({ name: p.name, metrics: o.faults?.scrapeFails?.(p.name, nowMs) ? undefined : metricsOf(p, running, waiting) })),
      }];
      const d = o.policy({ rounds, currentReplicas: pods.length, readyReplicas: ready.length, targets: o.targets, history, rolloutInProgress: false, nowMs });
      history = d.history;
      while (pods.length < d.desiredReplicas) addPod(s + o.pod.startupSeconds);
      // Scale-down removes pods not yet ready first, then the newest.
      while (pods.length > d.desiredReplicas) pods.splice(pods.reduce((iMax, p, i) => (p.readyAtSecond >= pods[iMax]!.readyAtSecond ? i : iMax), 0), 1);
    }
    const ready = pods.filter((p) => p.readyAtSecond <= s);
    const capacity = ready.length * o.pod.capacityTokensPerSecond;
    const demand = o.demand(s);
    const served = Math.min(backlogTokens + demand, capacity);
    backlogTokens += demand - served;
    lastServed = served;
    const ttft = o.pod.baseTtftSeconds + (capacity > 0 ? backlogTokens / capacity : 60);
    for (const p of ready) {
      p.tokens += served / ready.length;
      p.requests += served / ready.length / o.pod.tokensPerRequest;
      observe(p, ttft, served / ready.length / o.pod.tokensPerRequest);
    }
    out.push({ second: s, demandTokensPerSecond: demand, servedTokensPerSecond: served, replicas: pods.length, readyReplicas: ready.length, ttftSeconds: ttft });
  }
  return out;
}

/** The replica count at each change: [[second, replicas], ...], starting with the initial count. */
export function replicaSteps(seconds: Second[]): Array<[number, number]> {
  const steps: Array<[number, number]> = [];
  for (const s of seconds) if (steps.at(-1)?.[1] !== s.replicas) steps.push([s.second, s.replicas]);
  return steps;
}

export function summary(seconds: Second[], ttftTargetSeconds: number) {
  return {
    sloViolationSeconds: seconds.filter((s) => s.ttftSeconds > ttftTargetSeconds).length,
    replicaSeconds: seconds.reduce((a, s) => a + s.replicas, 0),
    maxReplicas: Math.max(...seconds.map((s) => s.replicas)),
    scaleEvents: replicaSteps(seconds).length - 1,
  };
}
