// The autoscaling decision as a pure function of scraped pod metrics over time, the current replicas,
// the spec and the recommendation history: KPA-style stable (60 s) and panic (6 s) windows, the HPA's
// 10% tolerance and max-over-window scale-down stabilization, on tokens/s, TTFT p95 and the queue,
// and the tokens/s trend over the stable window carried over the pods' start-up time.

export const STABLE_WINDOW_MS = 60_000;
export const PANIC_WINDOW_MS = 6_000;
/** Demand at this multiple of ready capacity enters panic: scale up at once, from the short window. */
export const PANIC_THRESHOLD = 2;
/** Usage within this fraction of the target changes nothing (the HPA's default). */
export const TOLERANCE = 0.1;
/** The trend counts only when its slope is this many standard errors above zero (noise rarely is). */
export const TREND_MIN_T_STATISTIC = 3;
/** The trend adds at most this fraction of the current tokens/s. */
export const TREND_MAX_RISE = 0.5;
/** Pod start-up the trend looks ahead by when no pod shows its own (PolicyInput.podStartupSeconds). */
export const DEFAULT_POD_STARTUP_SECONDS = 30;
/**
 * The trend needs intervals over nearly the whole stable window (a new model's first minute shows its
 * pods warming up, not a trend), and at least this many of them.
 */
const TREND_MIN_SPAN_MS = 55_000;
const TREND_MIN_INTERVALS = 6;
/** Most history entries kept; the history is a staircase (see `remember`), so this is rarely reached. */
const HISTORY_LIMIT = 100;

/** One pod's metrics at one scrape: counters and gauges summed over its `model` label. */
export interface PodMetrics {
  generationTokens: number;
  /** Prompt tokens prefilled (npuserve_prompt_tokens_total); absent counts as 0. */
  promptTokens?: number;
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
  /**
   * What a prompt token weighs against a generated one in the tokens/s compared with the target.
   * Absent: 0, as targetTokensPerSecondPerReplica counts generated tokens (the CRD's meaning). On this
   * engine prefill costs about as much per token as a batched decode step, so 1 would size replicas
   * by all the tokens they process; the bench shows that variant (docs/benchmarks.md).
   */
  promptTokenWeight?: number;
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
  /** Generation tokens/s. */
  tokensPerSecond: number;
  /** Generation plus weighted prompt tokens/s: what the replicas carry, compared with the target. */
  workPerSecond: number;
  /** Mean over the window's rounds of the requests in flight (running + waiting) over all ready pods. */
  inFlight: number;
  /** Generation plus weighted prompt tokens per finished request, null when none finished. */
  workPerRequest: number | null;
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

const vectorOf = (m: PodMetrics) => [m.generationTokens, m.promptTokens ?? 0, m.requests, ...m.ttftBuckets.map(([, c]) => c)];

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
function windowStats(rounds: ScrapeRound[], nowMs: number, windowMs: number, promptTokenWeight: number): WindowStats | null {
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
  let measuredPromptTokens = 0;
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
    measuredPromptTokens += total[1]!;
    measuredRequests += total[2]!;
    measuredSeconds += (e.samples.at(-1)!.timeMs - first.timeMs) / 1000;
    if (bucketBounds.length === 0) bucketBounds = first.m.ttftBuckets.map(([le]) => le);
    if (first.m.ttftBuckets.length === bucketBounds.length) buckets = total.slice(3).map((c, i) => c + (buckets[i] ?? 0));
  }
  if (measuredSeconds <= 0) return null;
  // Pods without metrics carry the measured pods' mean rate.
  const scale = 1 + missingSeconds / measuredSeconds;
  const measuredWork = measuredTokens + promptTokenWeight * measuredPromptTokens;
  const ttft = histogramQuantile(0.95, bucketBounds.map((le, i) => [le, buckets[i] ?? 0]));
  return {
    tokensPerSecond: (measuredTokens * scale) / seconds,
    workPerSecond: (measuredWork * scale) / seconds,
    inFlight: meanInFlight(inside),
    workPerRequest: measuredRequests > 0 ? measuredWork / measuredRequests : null,
    waitingAtStart: waitingAt(inside[0]!),
    waiting: latestWaiting(inside),
    seconds,
    fewestPods: Math.min(...inside.map((r) => r.pods.length)),
    ttftP95Ms: ttft === null ? null : ttft * 1000,
  };
}

/** Each scrape interval of the window, oldest first: its end and its statistics. */
function intervals(rounds: ScrapeRound[], nowMs: number, windowMs: number, promptTokenWeight: number): Array<{ endMs: number; ms: number; stats: WindowStats }> {
  const inside = rounds.filter((r) => r.timeMs >= nowMs - windowMs && r.timeMs <= nowMs);
  const out = [];
  for (let i = 1; i < inside.length; i++) {
    const [a, b] = [inside[i - 1]!, inside[i]!];
    const stats = windowStats([a, b], b.timeMs, b.timeMs - a.timeMs, promptTokenWeight);
    if (stats) out.push({ endMs: b.timeMs, ms: b.timeMs - a.timeMs, stats });
  }
  return out;
}

/**
 * Tokens/s over the window as Knative weighs its windows: per scrape interval, each older interval
 * weighing (1 - 2 / (n + 1)) less than the next of n, so a ramp is seen without waiting half a window.
 */
function weightedRates(rounds: ScrapeRound[], nowMs: number, windowMs: number, promptTokenWeight: number): { tokensPerSecond: number; workPerSecond: number } | null {
  const inside = rounds.filter((r) => r.timeMs >= nowMs - windowMs && r.timeMs <= nowMs);
  const decay = 1 - 2 / inside.length;
  const byEnd = new Map(intervals(rounds, nowMs, windowMs, promptTokenWeight).map((i) => [i.endMs, i]));
  let [tokens, work, weights, weight] = [0, 0, 0, 1];
  for (let i = inside.length - 1; i > 0; i--) {
    const interval = byEnd.get(inside[i]!.timeMs);
    if (interval) {
      tokens += weight * interval.stats.tokensPerSecond * interval.ms;
      work += weight * interval.stats.workPerSecond * interval.ms;
      weights += weight * interval.ms;
    }
    weight *= decay;
  }
  return weights > 0 ? { tokensPerSecond: tokens / weights, workPerSecond: work / weights } : null;
}

/** Least-squares line through (x, y) points: its slope, its value at `atX`, and the slope's t statistic. */
export function fitLine(points: Array<[x: number, y: number]>, atX: number): { slope: number; valueAt: number; tStatistic: number } {
  const n = points.length;
  const meanX = points.reduce((a, [x]) => a + x, 0) / n;
  const meanY = points.reduce((a, [, y]) => a + y, 0) / n;
  const sxx = points.reduce((a, [x]) => a + (x - meanX) ** 2, 0);
  const slope = points.reduce((a, [x, y]) => a + (x - meanX) * (y - meanY), 0) / sxx;
  const residuals = points.reduce((a, [x, y]) => a + (y - meanY - slope * (x - meanX)) ** 2, 0);
  const slopeError = Math.sqrt(residuals / Math.max(n - 2, 1) / sxx);
  return { slope, valueAt: meanY + slope * (atX - meanX), tStatistic: slopeError > 0 ? slope / slopeError : slope > 0 ? Infinity : 0 };
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
 * at the observed tokens (prompt and generated) per request. Without finished requests to size them,
 * in-flight requests against the batch size (KubeAI's signal).
 */
function queueReplicas(w: WindowStats, current: number, t: AutoscalingTargets): { replicas: number; sustained: number } {
  if (w.waiting <= 0) return { replicas: 0, sustained: 0 };
  if (w.workPerRequest === null) {
    const replicas = replicasFor(w.inFlight, t.maxBatchSize, current);
    return { replicas, sustained: replicas };
  }
  // Arrivals are what was served plus what the queue grew by (less, while it shrinks).
  const arrivals = Math.max(0, w.workPerSecond + ((w.waiting - w.waitingAtStart) * w.workPerRequest) / w.seconds);
  const drain = (w.waiting * w.workPerRequest) / (STABLE_WINDOW_MS / 1000);
  return { replicas: replicasFor(arrivals + drain, t.targetTokensPerSecondPerReplica, current), sustained: replicasFor(arrivals, t.targetTokensPerSecondPerReplica, current) };
}

/** A replica count one signal asks for, and the words for the Event. */
interface Term {
  kind: 'tokens' | 'queue' | 'latency' | 'trend';
  replicas: number;
  /** What the signal asks for without draining a backlog, when that is less. */
  sustained?: number;
  reason: string;
}

/** How tokens/s splits, when prompt tokens are a tenth of it or more. */
const promptShare = (w: WindowStats, t: AutoscalingTargets) => {
  const prompt = (w.workPerSecond - w.tokensPerSecond) / (t.promptTokenWeight || 1);
  return prompt >= 0.1 * w.workPerSecond ? ` (${fmt(w.tokensPerSecond)} generated, ${fmt(prompt)} prompt)` : '';
};

function tokensTerm(w: WindowStats, current: number, t: AutoscalingTargets): Term {
  const replicas = replicasFor(w.workPerSecond, t.targetTokensPerSecondPerReplica, current);
  const relation = replicas > current ? '>' : replicas < current ? '<' : 'within 10% of';
  return { kind: 'tokens', replicas, reason: `tokens/s ${fmt(w.workPerSecond)} ${relation} ${current} x ${fmt(t.targetTokensPerSecondPerReplica)} target${promptShare(w, t)}` };
}

/**
 * Replicas for the tokens/s expected once a pod asked for now is ready: the line through the stable
 * window's intervals, carried `startupSeconds` ahead. Per interval, the tokens/s arriving: served plus
 * the queue's growth (less while a backlog drains), at `workPerRequest`. It counts only on a sustained
 * rise: a slope TREND_MIN_T_STATISTIC standard errors above zero over the window, each half of the
 * window rising at half to twice that slope (a step is a new level, not a trend); the rise is capped at TREND_MAX_RISE of the
 * current level, so that noise cannot buy many replicas. Only ever adds.
 */
function trendTerm(rounds: ScrapeRound[], nowMs: number, startupSeconds: number, workPerRequest: number, current: number, t: AutoscalingTargets): Term {
  const none: Term = { kind: 'trend', replicas: 0, reason: '' };
  const arriving = (w: WindowStats) => Math.max(0, w.workPerSecond + ((w.waiting - w.waitingAtStart) * workPerRequest) / w.seconds);
  const window = intervals(rounds, nowMs, STABLE_WINDOW_MS, t.promptTokenWeight ?? 0);
  const spanMs = window.length ? nowMs - (window[0]!.endMs - window[0]!.ms) : 0;
  if (window.length < TREND_MIN_INTERVALS || spanMs < TREND_MIN_SPAN_MS) return none;
  const points = window.map((i): [number, number] => [(i.endMs - i.ms / 2 - nowMs) / 1000, arriving(i.stats)]);
  const whole = fitLine(points, 0);
  const half = Math.floor(points.length / 2);
  const halves = [fitLine(points.slice(0, half), 0).slope, fitLine(points.slice(half), 0).slope];
  const steady = halves.every((slope) => slope >= whole.slope / 2 && slope <= whole.slope * 2);
  if (whole.tStatistic < TREND_MIN_T_STATISTIC || !steady || whole.valueAt <= 0) return none;
  const expected = whole.valueAt + Math.min(whole.slope * startupSeconds, TREND_MAX_RISE * whole.valueAt);
  const replicas = Math.ceil(expected / t.targetTokensPerSecondPerReplica);
  if (replicas <= current) return none;
  return { kind: 'trend', replicas, reason: `tokens/s rising ${fmt(whole.slope)}/s: ${fmt(expected)} expected in ${fmt(startupSeconds)} s (pod start-up) > ${current} x ${fmt(t.targetTokensPerSecondPerReplica)} target` };
}

function queueTerm(w: WindowStats, current: number, t: AutoscalingTargets): Term {
  const { replicas, sustained } = queueReplicas(w, current, t);
  return { kind: 'queue', replicas, sustained, reason: `${fmt(w.waiting)} requests waiting need ${replicas} replicas` };
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
    replicas: current + Math.max(1, Math.ceil((current * (Math.min(w.ttftP95Ms! / t.ttftP95TargetMs, PANIC_THRESHOLD) - 1)) / 2)),
    reason: `ttft p95 ${secondsText(w.ttftP95Ms!)} > ${secondsText(t.ttftP95TargetMs)} with ${fmt(w.waiting)} waiting`,
  };
}

/**
 * The recommendation before stabilization: the most any signal asks for. The stable window (weighted
 * towards its newest intervals) carries throughput and the backlog; the short window adds what is
 * happening now: throughput, queue and latency. Panic (short-window demand at 2x the ready replicas)
 * is named in the reason; scale-down only ever follows the stabilized history.
 */
function recommend(stable: WindowStats, short: WindowStats | null, trend: Term, current: number, ready: number, t: AutoscalingTargets): { replicas: number; sustained: number; reason: string; panic: boolean } {
  const candidates = [tokensTerm(stable, current, t), queueTerm(stable, current, t), trend];
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
  const sustained = Math.max(...candidates.map((c) => c.sustained ?? c.replicas));
  // Per kind of signal, the window asking for most; the stable tokens term when none asks for more.
  const strongest = new Map<Term['kind'], Term>();
  for (const c of candidates) if (c.replicas > current && c.replicas > (strongest.get(c.kind)?.replicas ?? 0)) strongest.set(c.kind, c);
  const why = strongest.size ? [...strongest.values()].map((c) => c.reason) : [candidates[0]!.reason];
  return { replicas, sustained, reason: `${panic ? 'panic: ' : ''}${why.join('; ')}`, panic };
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
  const weight = t.promptTokenWeight ?? 0;
  const whole = windowStats(input.rounds, nowMs, STABLE_WINDOW_MS, weight);
  const stable = whole && { ...whole, ...weightedRates(input.rounds, nowMs, STABLE_WINDOW_MS, weight) };
  const downWindowMs = t.scaleDownStabilizationSeconds * 1000;
  if (!stable) {
    const held = clamp(current, t);
    const reason = held === current ? 'no metrics yet: holding replicas' : `replicas ${current} outside [${t.minReplicas}, ${t.maxReplicas}]`;
    return { desiredReplicas: held, reason, panic: false, inputs: null, history: input.history };
  }
  const trend = trendTerm(input.rounds, nowMs, input.podStartupSeconds ?? DEFAULT_POD_STARTUP_SECONDS, stable.workPerRequest ?? 0, current, t);
  // Requests are sized over the stable window: the few that finish within the panic window say little.
  const short = windowStats(input.rounds, nowMs, PANIC_WINDOW_MS, weight);
  const rec = recommend(stable, short && { ...short, workPerRequest: stable.workPerRequest ?? short.workPerRequest }, trend, current, ready, t);
  const recommended = clamp(rec.replicas, t);
  // The stabilization window remembers demand, not the replicas a backlog needed once it is drained.
  const history = remember(input.history, { timeMs: nowMs, replicas: clamp(rec.sustained, t) }, downWindowMs);
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
    // The history forgets the replicas a backlog needed, so they stay until the backlog is served.
    if (stable.waiting >= 1 && desired < current) {
      desired = current;
      reason = `scale-down to ${recommended} held while ${fmt(stable.waiting)} requests wait; ${reason}`;
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
