// A model of serving pods under a replayed list of requests, scraped like the operator scrapes them
// and scaled by any policy: replays traces for the policy tests and for `npm run bench:autoscale`.
// Each pod runs engine steps as the runtime's scheduler does: one decode token per running sequence
// plus a prefill chunk, a step costing its tokens (prompt and decode alike), a bounded batch and a KV
// cache that holds each admitted request's prompt and answer; requests wait when either is full.
import type { AutoscalingTargets, PodMetrics, PolicyInput, Recommendation, ScrapeRound } from './policy.js';
import { requestsSeen, zeroDecision } from './zero.js';

/** TTFT histogram bounds of the serving pods (runtime/metrics.ts), in seconds. */
export const TTFT_BUCKETS_SECONDS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, Infinity];

export interface PodModel {
  /** Cost of one token in a step, a prompt token or one sequence's decode token (2-4 ms on 2 cores, docs/benchmarks.md). */
  tokenMs: number;
  /** A step takes at least this long (decode at a small batch is bound by reading the weights). */
  minStepMs: number;
  /** Prompt tokens one step prefills at most (the runtime's --max-num-batched-tokens). */
  prefillChunkTokens: number;
  /** Tokens the KV cache holds; a request is admitted when its prompt and answer fit. */
  kvCacheTokens: number;
  /** From the scale decision to the pod being ready (scheduling, model load, warm-up). */
  startupSeconds: number;
}

export interface Request {
  arrivalMs: number;
  promptTokens: number;
  outputTokens: number;
}

export type Policy = (input: PolicyInput) => { desiredReplicas: number; history: Recommendation[] };

export interface Faults {
  /** The pod's scrape fails at this time. */
  scrapeFails?: (pod: string, timeMs: number) => boolean;
  /** Pods whose process restarts (counters back to 0) at the given second. */
  restarts?: Array<{ pod: string; atSeconds: number }>;
}

export interface SimulationOptions {
  /** Requests arriving in each second, ordered by arrival: requests(s) all arrive in [s, s + 1). */
  requests: (second: number) => Request[];
  durationSeconds: number;
  initialReplicas: number;
  /** minReplicas 0 scales to zero as the operator does (zero.ts), with requests held while no pod is ready. */
  targets: AutoscalingTargets & { scaleToZeroAfterSeconds?: number };
  pod: PodModel;
  policy: Policy;
  scrapeIntervalSeconds: number;
  faults?: Faults;
}

export interface Second {
  second: number;
  /** Step time the requests arriving in this second cost, in pod-seconds (prompt and output tokens). */
  demandPodSeconds: number;
  servedTokensPerSecond: number;
  replicas: number;
  readyReplicas: number;
  /** p95 TTFT of the first tokens in this second, or the age of the oldest request still without one if longer. */
  ttftSeconds: number;
}

interface Sequence extends Request {
  prefilled: number;
  generated: number;
}

interface SimPod {
  name: string;
  readyAtSecond: number;
  /** The pod's engine clock: the end of its last step. */
  clockMs: number;
  queue: Sequence[];
  running: Sequence[];
  kvUsedTokens: number;
  tokens: number;
  promptTokens: number;
  requests: number;
  buckets: number[];
}

interface StepResult {
  tokens: number;
  firstTokens: Array<{ timeMs: number; ttftMs: number }>;
}

function observe(pod: SimPod, ttftSeconds: number): void {
  const from = TTFT_BUCKETS_SECONDS.findIndex((le) => ttftSeconds <= le);
  for (let i = from; i < pod.buckets.length; i++) pod.buckets[i]! += 1;
}

function metricsOf(pod: SimPod): PodMetrics {
  return { generationTokens: pod.tokens, promptTokens: pod.promptTokens, requests: pod.requests, ttftBuckets: TTFT_BUCKETS_SECONDS.map((le, i) => [le, pod.buckets[i]!]), running: pod.running.length, waiting: pod.queue.length };
}

/** Moves queued requests that have arrived into the batch while a slot and their KV cache fit. */
function admit(pod: SimPod, maxBatchSize: number, model: PodModel): void {
  while (pod.queue.length && pod.running.length < maxBatchSize) {
    const next = pod.queue[0]!;
    const kv = next.promptTokens + next.outputTokens;
    if (next.arrivalMs > pod.clockMs || pod.kvUsedTokens + kv > model.kvCacheTokens) return;
    pod.queue.shift();
    pod.kvUsedTokens += kv;
    pod.running.push(next);
  }
}

/**
 * One engine step: every prefilled sequence decodes a token, the oldest prefilling ones share the
 * prefill chunk; the step that ends a prompt's prefill also samples its first token (as the runtime does).
 */
function step(pod: SimPod, model: PodModel): StepResult {
  const decoding = pod.running.filter((r) => r.prefilled >= r.promptTokens);
  let chunk = model.prefillChunkTokens;
  const prefills: Array<[Sequence, number]> = [];
  for (const r of pod.running) {
    if (r.prefilled >= r.promptTokens || chunk <= 0) continue;
    const n = Math.min(chunk, r.promptTokens - r.prefilled);
    prefills.push([r, n]);
    chunk -= n;
  }
  const work = decoding.length + (model.prefillChunkTokens - chunk);
  pod.clockMs += Math.max(model.minStepMs, work * model.tokenMs);
  const result: StepResult = { tokens: 0, firstTokens: [] };
  for (const r of decoding) r.generated++;
  for (const [r, n] of prefills) {
    r.prefilled += n;
    pod.promptTokens += n;
    if (r.prefilled < r.promptTokens) continue;
    r.generated = 1;
    result.firstTokens.push({ timeMs: pod.clockMs, ttftMs: pod.clockMs - r.arrivalMs });
  }
  result.tokens = decoding.length + result.firstTokens.length;
  const done = pod.running.filter((r) => r.generated >= r.outputTokens);
  for (const r of done) pod.kvUsedTokens -= r.promptTokens + r.outputTokens;
  pod.running = pod.running.filter((r) => r.generated < r.outputTokens);
  pod.requests += done.length;
  return result;
}

/** Runs a pod's engine until its clock reaches `untilMs`; returns the tokens and first tokens of those steps. */
function runUntil(pod: SimPod, untilMs: number, maxBatchSize: number, model: PodModel): StepResult {
  const total: StepResult = { tokens: 0, firstTokens: [] };
  while (pod.clockMs < untilMs) {
    admit(pod, maxBatchSize, model);
    if (pod.running.length === 0) {
      const next = pod.queue[0]?.arrivalMs;
      // Idle until the next arrival (a request larger than the whole KV cache would wait forever).
      pod.clockMs = next !== undefined && next > pod.clockMs ? Math.min(next, untilMs) : untilMs;
      continue;
    }
    const r = step(pod, model);
    total.tokens += r.tokens;
    total.firstTokens.push(...r.firstTokens);
  }
  for (const f of total.firstTokens) observe(pod, f.ttftMs / 1000);
  pod.tokens += total.tokens;
  return total;
}

const p95 = (values: number[]) => {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(0.95 * sorted.length) - 1)]!;
};

const load = (p: SimPod) => p.running.length + p.queue.length;

/** Arrival of the oldest request held or on a pod without its first token yet; `endMs` if none. */
function oldestWithoutFirstTokenMs(held: Sequence[], pods: SimPod[], endMs: number): number {
  let oldestMs = endMs;
  for (const r of held) oldestMs = Math.min(oldestMs, r.arrivalMs);
  for (const p of pods) for (const r of [...p.queue, ...p.running]) if (r.generated === 0) oldestMs = Math.min(oldestMs, r.arrivalMs);
  return oldestMs;
}

/** Replays the requests second by second; a step is counted in the second it starts in. */
export function simulate(o: SimulationOptions): Second[] {
  const { maxBatchSize } = o.targets;
  const pods: SimPod[] = [];
  const draining: SimPod[] = [];
  let created = 0;
  const addPod = (readyAtSecond: number) =>
    pods.push({ name: `pod-${created++}`, readyAtSecond, clockMs: readyAtSecond * 1000, queue: [], running: [], kvUsedTokens: 0, tokens: 0, promptTokens: 0, requests: 0, buckets: TTFT_BUCKETS_SECONDS.map(() => 0) });
  for (let i = 0; i < o.initialReplicas; i++) addPod(0);
  // Requests the gateway holds while no pod is ready, oldest first.
  let held: Sequence[] = [];
  let rounds: ScrapeRound[] = [];
  // The initial replicas were the last recommendation, as status.autoscaler of a running model records.
  let history: Recommendation[] = o.initialReplicas > 0 ? [{ timeMs: 0, replicas: o.initialReplicas }] : [];
  // A model starting at zero has been idle at least scaleToZeroAfterSeconds.
  let lastRequestMs = o.initialReplicas === 0 ? -(o.targets.scaleToZeroAfterSeconds ?? 300) * 1000 : undefined;
  const out: Second[] = [];
  for (let s = 0; s < o.durationSeconds; s++) {
    for (const r of o.faults?.restarts ?? []) {
      const p = pods.find((x) => x.name === r.pod);
      if (p && r.atSeconds === s) Object.assign(p, { tokens: 0, promptTokens: 0, requests: 0, buckets: p.buckets.map(() => 0) });
    }
    if (s % o.scrapeIntervalSeconds === 0) {
      // The scrape at the start of second s sees everything served before it.
      const ready = pods.filter((p) => p.readyAtSecond <= s);
      const nowMs = s * 1000;
      const round: ScrapeRound = { timeMs: nowMs, pods: ready.map((p) => ({ name: p.name, metrics: o.faults?.scrapeFails?.(p.name, nowMs) ? undefined : metricsOf(p) })) };
      let targets: AutoscalingTargets = o.targets;
      let idle = false;
      if (o.targets.minReplicas === 0) {
        const zero = zeroDecision({ ...o.targets, scaleToZeroAfterSeconds: o.targets.scaleToZeroAfterSeconds ?? 300, heldRequests: held.length, requestsSeen: requestsSeen(rounds.at(-1), round), lastRequestMs, nowMs });
        lastRequestMs = zero.lastRequestMs;
        targets = { ...o.targets, minReplicas: zero.floor };
        idle = zero.idle;
      }
      rounds = [...rounds.filter((r) => r.timeMs > nowMs - 120_000), round];
      const d = o.policy({ rounds, currentReplicas: pods.length, readyReplicas: ready.length, targets, history, rolloutInProgress: false, nowMs, podStartupSeconds: o.pod.startupSeconds });
      history = d.history;
      const desired = idle ? 0 : Math.min(targets.maxReplicas, Math.max(targets.minReplicas, d.desiredReplicas));
      while (pods.length < desired) addPod(s + o.pod.startupSeconds);
      // Scale-down removes pods not yet ready first, then the newest; a ready pod drains what it holds (SIGTERM).
      while (pods.length > desired) {
        const [gone] = pods.splice(pods.reduce((iMax, p, i) => (p.readyAtSecond >= pods[iMax]!.readyAtSecond ? i : iMax), 0), 1);
        if (gone!.readyAtSecond <= s) draining.push(gone!);
      }
    }
    const ready = pods.filter((p) => p.readyAtSecond <= s);
    for (const p of ready) p.clockMs = Math.max(p.clockMs, s * 1000);
    const arriving = o.requests(s).map((r) => ({ ...r, prefilled: 0, generated: 0 }));
    const routed = [...held, ...arriving];
    held = [];
    // Least requests in flight (the gateway's fallback, and what a Service's random pick approaches).
    for (const r of routed) {
      if (ready.length === 0) held.push(r);
      else ready.reduce((a, b) => (load(b) < load(a) ? b : a)).queue.push(r);
    }
    let served = 0;
    const ttfts: number[] = [];
    for (const p of [...ready, ...draining]) {
      const r = runUntil(p, (s + 1) * 1000, maxBatchSize, o.pod);
      served += r.tokens;
      ttfts.push(...r.firstTokens.map((f) => f.ttftMs / 1000));
    }
    for (let i = draining.length - 1; i >= 0; i--) if (load(draining[i]!) === 0) draining.splice(i, 1);
    const endMs = (s + 1) * 1000;
    out.push({
      second: s,
      demandPodSeconds: arriving.reduce((a, r) => a + (r.promptTokens + r.outputTokens) * o.pod.tokenMs, 0) / 1000,
      servedTokensPerSecond: served,
      replicas: pods.length,
      readyReplicas: ready.length,
      ttftSeconds: Math.max(p95(ttfts), (endMs - oldestWithoutFirstTokenMs(held, [...ready, ...draining], endMs)) / 1000),
    });
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
