// The autoscaling decision as a pure function of scraped pod metrics over time, the current replicas,
// the spec and the recommendation history: KPA-style stable (60 s) and panic (6 s) windows, the HPA's
// 10% tolerance and max-over-window scale-down stabilization, on tokens/s, TTFT p95 and the queue.

export const STABLE_WINDOW_MS = 60_000;
export const PANIC_WINDOW_MS = 6_000;
/** Demand at this multiple of ready capacity enters panic: scale up at once, from the short window. */
export const PANIC_THRESHOLD = 2;
/** Usage within this fraction of the target changes nothing (the HPA's default). */
export const TOLERANCE = 0.1;
/** Most history entries kept; the history is a staircase (see `remember`), so this is rarely reached. */
const HISTORY_LIMIT = 100;

/** One pod's metrics at one scrape: counters and gauges summed over its `model` label. */
export interface PodMetrics {
  generationTokens: number;
  /** Finished requests (npuserve_requests_total over all finish reasons). */
  requests: number;
  /** Cumulative TTFT histogram buckets, ascending `le` in seconds, the last one +Inf. */
  ttftBuckets: Array<[le: number, count: number]>;
  waiting: number;
  running: number;
}

/** One scrape round: the ready serving pods at `timeMs`, with metrics for those that answered. */
export interface ScrapeRound {
  timeMs: number;
  pods: Array<{ name: string; metrics?: PodMetrics }>;
}

export interface AutoscalingTargets {
  minReplicas: number;
  maxReplicas: number;
  targetTokensPerSecondPerReplica: number;
  ttftP95TargetMs: number;
  scaleDownStabilizationSeconds: number;
  /** Requests one replica runs at once (spec.runtime.maxBatchSize); more wait in its queue. */
  maxBatchSize: number;
}

export interface Recommendation {
  timeMs: number;
  replicas: number;
}

export interface PolicyInput {
  /** Scrape rounds, oldest first; rounds older than the stable window are ignored. */
  rounds: ScrapeRound[];
  currentReplicas: number;
  readyReplicas: number;
  targets: AutoscalingTargets;
  history: Recommendation[];
  /** A new revision is rolling out (status.targetRevision set): hold scale-down. */
  rolloutInProgress: boolean;
  nowMs: number;
  /** Measured seconds from a pod's creation to its readiness; absent when no pod shows it. */
  podStartupSeconds?: number;
}

export interface Observed {
  tokensPerSecond: number;
  ttftP95Ms: number | null;
  waitingRequests: number;
}

export interface Decision {
  desiredReplicas: number;
  reason: string;
  panic: boolean;
  /** Stable-window observations, or null when no pod gave two samples to compare. */
  inputs: Observed | null;
  history: Recommendation[];
}

interface WindowStats {
  tokensPerSecond: number;
  /** Mean over the window's rounds of the requests in flight (running + waiting) over all ready pods. */
  inFlight: number;
  /** Generation tokens per finished request, null when none finished. */
  tokensPerRequest: number | null;
  /** Waiting requests at the window's start and end. */
  waitingAtStart: number;
  waiting: number;
  seconds: number;
  /** Fewest ready pods in any round of the window. */
  fewestPods: number;
  ttftP95Ms: number | null;
}

/** Increase of a cumulative vector between two samples; a decrease means the counter restarted at 0. */
function increase(prev: number[], cur: number[]): number[] {
  return cur.map((v, i) => (v >= (prev[i] ?? 0) ? v - (prev[i] ?? 0) : v));
}

const vectorOf = (m: PodMetrics) => [m.generationTokens, m.requests, ...m.ttftBuckets.map(([, c]) => c)];

/** histogram_quantile as Prometheus computes it: linear within the bucket holding the rank. */
export function histogramQuantile(q: number, buckets: Array<[le: number, count: number]>): number | null {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lowerLe = 0;
  let lowerCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return lowerLe;
      return lowerLe + ((le - lowerLe) * (rank - lowerCount)) / Math.max(count - lowerCount, 1e-12);
    }
    lowerLe = le;
    lowerCount = count;
  }
  return lowerLe;
}

/**
 * Throughput, queue and TTFT p95 over the rounds inside [now - windowMs, now]. Per pod, counters are
 * differenced between its own samples (a gap spans fine: counters are cumulative), from its first
 * sample as Prometheus' rate() does: what a new pod counted before (its warm-up) is not load. A pod
 * listed in two or more rounds that never gave two samples is missing metrics and is assumed to carry
 * the measured pods' mean rate; a pod listed once is brand-new and carried nothing yet.
 */
function windowStats(rounds: ScrapeRound[], nowMs: number, windowMs: number): WindowStats | null {
  const inside = rounds.filter((r) => r.timeMs >= nowMs - windowMs && r.timeMs <= nowMs);
  if (inside.length < 2) return null;
  const startMs = inside[0]!.timeMs;
  const seconds = (inside.at(-1)!.timeMs - startMs) / 1000;
  const perPod = new Map<string, { listed: number[]; samples: Array<{ timeMs: number; m: PodMetrics }> }>();
  for (const r of inside) {
    for (const p of r.pods) {
      const e = perPod.get(p.name) ?? { listed: [], samples: [] };
      e.listed.push(r.timeMs);
      if (p.metrics) e.samples.push({ timeMs: r.timeMs, m: p.metrics });
      perPod.set(p.name, e);
    }
  }
  let bucketBounds: number[] = [];
  let measuredTokens = 0;
  let measuredRequests = 0;
  let measuredSeconds = 0;
  let missingSeconds = 0;
  let buckets: number[] = [];
  for (const e of perPod.values()) {
    const first = e.samples[0];
    if (!first || e.samples.length < 2) {
      if (e.listed.length >= 2) missingSeconds += (e.listed.at(-1)! - e.listed[0]!) / 1000;
      continue;
    }
    let prev = vectorOf(first.m);
    let total = prev.map(() => 0);
    for (const s of e.samples.slice(1)) {
      const cur = vectorOf(s.m);
      total = increase(prev, cur).map((d, i) => d + (total[i] ?? 0));
      prev = cur;
    }
    measuredTokens += total[0]!;
    measuredRequests += total[1]!;
    measuredSeconds += (e.samples.at(-1)!.timeMs - first.timeMs) / 1000;
    if (bucketBounds.length === 0) bucketBounds = first.m.ttftBuckets.map(([le]) => le);
    if (first.m.ttftBuckets.length === bucketBounds.length) buckets = total.slice(2).map((c, i) => c + (buckets[i] ?? 0));
  }
  if (measuredSeconds <= 0) return null;
  const tokens = measuredTokens + (measuredTokens / measuredSeconds) * missingSeconds;
  const ttft = histogramQuantile(0.95, bucketBounds.map((le, i) => [le, buckets[i] ?? 0]));
  return {
    tokensPerSecond: tokens / seconds,
    inFlight: meanInFlight(inside),
    tokensPerRequest: measuredRequests > 0 ? measuredTokens / measuredRequests : null,
    waitingAtStart: waitingAt(inside[0]!),
    waiting: latestWaiting(inside),
    seconds,
    fewestPods: Math.min(...inside.map((r) => r.pods.length)),
    ttftP95Ms: ttft === null ? null : ttft * 1000,
  };
}

/**
 * Tokens/s over the window as Knative weighs its windows: per scrape interval, each older interval
 * weighing (1 - 2 / (n + 1)) less than the next of n, so a ramp is seen without waiting half a window.
 */
function weightedTokensPerSecond(rounds: ScrapeRound[], nowMs: number, windowMs: number): number | null {
  const inside = rounds.filter((r) => r.timeMs >= nowMs - windowMs && r.timeMs <= nowMs);
  const decay = 1 - 2 / inside.length;
  let sum = 0;
  let weights = 0;
  let weight = 1;
  for (let i = inside.length - 1; i > 0; i--) {
    const [a, b] = [inside[i - 1]!, inside[i]!];
    const interval = windowStats([a, b], b.timeMs, b.timeMs - a.timeMs);
    if (interval) {
      sum += weight * interval.tokensPerSecond * (b.timeMs - a.timeMs);
      weights += weight * (b.timeMs - a.timeMs);
    }
    weight *= decay;
  }
  return weights > 0 ? sum / weights : null;
}

/** Requests in flight per round, pods without metrics assumed at the reporting pods' mean; averaged over rounds. */
function meanInFlight(rounds: ScrapeRound[]): number {
  let sum = 0;
  let n = 0;
  for (const r of rounds) {
    const reported = r.pods.filter((p) => p.metrics);
    if (reported.length === 0) continue;
    const load = reported.reduce((s, p) => s + p.metrics!.running + p.metrics!.waiting, 0);
    sum += (load * r.pods.length) / reported.length;
    n++;
  }
  return n ? sum / n : 0;
}

const waitingAt = (r: ScrapeRound) => r.pods.reduce((s, p) => s + (p.metrics?.waiting ?? 0), 0);

/** Waiting requests at each pod's newest sample. */
function latestWaiting(rounds: ScrapeRound[]): number {
  const last = new Map<string, number>();
  for (const r of rounds) for (const p of r.pods) if (p.metrics) last.set(p.name, p.metrics.waiting);
  const current = new Set(rounds.at(-1)!.pods.map((p) => p.name));
  return [...last].filter(([name]) => current.has(name)).reduce((s, [, w]) => s + w, 0);
}

/** Replicas for `demand` at `perReplica` each, with the tolerance band around the current count. */
function replicasFor(demand: number, perReplica: number, current: number): number {
  const usage = demand / (Math.max(current, 1) * perReplica);
  if (current > 0 && Math.abs(usage - 1) <= TOLERANCE) return current;
  return Math.ceil(demand / perReplica);
}

const fmt = (v: number) => (v >= 100 ? Math.round(v).toString() : Number(v.toPrecision(3)).toString());
const secondsText = (ms: number) => `${fmt(ms / 1000)} s`;

/**
 * Replicas the queue asks for. Served tokens/s cannot show demand beyond capacity, the queue can:
 * demand = arrivals (served + the queue's growth) + its backlog drained within the stable window, in tokens
 * at the observed tokens per request. Without finished requests to size them, in-flight requests
 * against the batch size (KubeAI's signal).
 */
function queueReplicas(w: WindowStats, current: number, t: AutoscalingTargets): number {
  if (w.waiting <= 0) return 0;
  if (w.tokensPerRequest === null) return replicasFor(w.inFlight, t.maxBatchSize, current);
  // Arrivals are what was served plus what the queue grew by (less, while it shrinks).
  const arrivals = Math.max(0, w.tokensPerSecond + ((w.waiting - w.waitingAtStart) * w.tokensPerRequest) / w.seconds);
  const drain = (w.waiting * w.tokensPerRequest) / (STABLE_WINDOW_MS / 1000);
  return replicasFor(arrivals + drain, t.targetTokensPerSecondPerReplica, current);
}

/** A replica count one signal asks for, and the words for the Event. */
interface Term {
  kind: 'tokens' | 'queue' | 'latency';
  replicas: number;
  reason: string;
}

function tokensTerm(w: WindowStats, current: number, t: AutoscalingTargets): Term {
  const replicas = replicasFor(w.tokensPerSecond, t.targetTokensPerSecondPerReplica, current);
  const relation = replicas > current ? '>' : replicas < current ? '<' : 'within 10% of';
  return { kind: 'tokens', replicas, reason: `tokens/s ${fmt(w.tokensPerSecond)} ${relation} ${current} x ${fmt(t.targetTokensPerSecondPerReplica)} target` };
}

function queueTerm(w: WindowStats, current: number, t: AutoscalingTargets): Term {
  const replicas = queueReplicas(w, current, t);
  return { kind: 'queue', replicas, reason: `${fmt(w.waiting)} requests waiting need ${replicas} replicas` };
}

/**
 * Adds replicas while p95 TTFT is over the target and the queue is not shrinking (if it shrinks, the
 * replicas there work it off), counting only latencies measured with every replica asked for ready
 * (else pods still starting would be added again).
 */
function latencyTerm(w: WindowStats, current: number, t: AutoscalingTargets): Term {
  const over = w.ttftP95Ms !== null && w.ttftP95Ms > t.ttftP95TargetMs;
  const queueStuck = w.waiting > 0 && w.waiting >= w.waitingAtStart;
  if (!over || !queueStuck || w.fewestPods < current) return { kind: 'latency', replicas: 0, reason: '' };
  return {
    kind: 'latency',
    replicas: Math.max(current + 1, Math.ceil(current * Math.min(w.ttftP95Ms! / t.ttftP95TargetMs, PANIC_THRESHOLD))),
    reason: `ttft p95 ${secondsText(w.ttftP95Ms!)} > ${secondsText(t.ttftP95TargetMs)} with ${fmt(w.waiting)} waiting`,
  };
}

/**
 * The recommendation before stabilization: the most any signal asks for. The stable window (weighted
 * towards its newest intervals) carries throughput and the backlog; the short window adds what is
 * happening now: throughput, queue and latency. Panic (short-window demand at 2x the ready replicas)
 * is named in the reason; scale-down only ever follows the stabilized history.
 */
function recommend(stable: WindowStats, short: WindowStats | null, current: number, ready: number, t: AutoscalingTargets): { replicas: number; reason: string; panic: boolean } {
  const candidates = [tokensTerm(stable, current, t), queueTerm(stable, current, t)];
  let panic = false;
  if (short) {
    const shortTokens = tokensTerm(short, current, t);
    const shortQueue = queueTerm(short, current, t);
    panic = Math.max(shortTokens.replicas, shortQueue.replicas) >= PANIC_THRESHOLD * Math.max(ready, 1);
    candidates.push(shortQueue, latencyTerm(short, current, t));
    // Scale-up follows the newest throughput at once (the HPA does not stabilize scale-up), except
    // while the queue shrinks: then pods serve the backlog too, and that is not demand.
    if (panic || short.waiting >= short.waitingAtStart) candidates.push(shortTokens);
  }
  const replicas = Math.max(...candidates.map((c) => c.replicas));
  // Per kind of signal, the window asking for most; the stable tokens term when none asks for more.
  const strongest = new Map<Term['kind'], Term>();
  for (const c of candidates) if (c.replicas > current && c.replicas > (strongest.get(c.kind)?.replicas ?? 0)) strongest.set(c.kind, c);
  const why = strongest.size ? [...strongest.values()].map((c) => c.reason) : [candidates[0]!.reason];
  return { replicas, reason: `${panic ? 'panic: ' : ''}${why.join('; ')}`, panic };
}

/**
 * Appends a recommendation and drops entries that can no longer be the maximum of any scale-down
 * window: an older entry with fewer or equal replicas than a newer one, and entries past the window.
 */
function remember(history: Recommendation[], rec: Recommendation, windowMs: number): Recommendation[] {
  const kept = history.filter((h) => h.timeMs > rec.timeMs - windowMs && h.timeMs <= rec.timeMs && h.replicas > rec.replicas);
  return [...kept, rec].slice(-HISTORY_LIMIT);
}

const clamp = (n: number, t: AutoscalingTargets) => Math.min(t.maxReplicas, Math.max(t.minReplicas, n));

export function decide(input: PolicyInput): Decision {
  const { currentReplicas: current, readyReplicas: ready, targets: t, nowMs } = input;
  const whole = windowStats(input.rounds, nowMs, STABLE_WINDOW_MS);
  const stable = whole && { ...whole, tokensPerSecond: weightedTokensPerSecond(input.rounds, nowMs, STABLE_WINDOW_MS) ?? whole.tokensPerSecond };
  const downWindowMs = t.scaleDownStabilizationSeconds * 1000;
  if (!stable) {
    const held = clamp(current, t);
    const reason = held === current ? 'no metrics yet: holding replicas' : `replicas ${current} outside [${t.minReplicas}, ${t.maxReplicas}]`;
    return { desiredReplicas: held, reason, panic: false, inputs: null, history: input.history };
  }
  const rec = recommend(stable, windowStats(input.rounds, nowMs, PANIC_WINDOW_MS), current, ready, t);
  const recommended = clamp(rec.replicas, t);
  const history = remember(input.history, { timeMs: nowMs, replicas: recommended }, downWindowMs);
  const stabilized = Math.max(recommended, ...history.filter((h) => h.timeMs > nowMs - downWindowMs).map((h) => h.replicas));

  let desired = recommended;
  let reason = rec.reason;
  if (recommended < current) {
    desired = Math.min(current, stabilized);
    if (desired > recommended) reason = `recommendation ${recommended} held at ${desired}: highest of the last ${t.scaleDownStabilizationSeconds} s; ${reason}`;
    if (input.rolloutInProgress && desired < current) {
      desired = current;
      reason = `scale-down to ${recommended} held while a new revision rolls out; ${reason}`;
    }
  }
  desired = clamp(desired, t);
  return {
    desiredReplicas: desired,
    reason,
    panic: rec.panic,
    inputs: { tokensPerSecond: stable.tokensPerSecond, ttftP95Ms: stable.ttftP95Ms, waitingRequests: stable.waiting },
    history,
  };
}
