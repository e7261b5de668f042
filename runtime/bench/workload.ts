// What every benchmark shares: deterministic prompts of an exact token length, the timing of one
// request as a client sees it, the targets a load is sent to, and summary statistics.
import { CALIBRATION_PROMPTS } from '../convert/accuracy.js';
import { mistralV3Tokenizer } from '../tokenizer/mistral-v3.js';

export interface RequestSpec {
  /** Token ids, BOS first. */
  prompt: number[];
  maxTokens: number;
  /** Sampling seed (temperature 1): the same tokens whatever the batch, so every target does the same work. */
  seed: number;
}

/** One request's timeline in milliseconds (performance.now clock of the measuring process). */
export interface RequestTiming {
  promptTokens: number;
  outputTokens: number;
  startMs: number;
  firstTokenMs: number;
  endMs: number;
  /** Gaps between consecutive output tokens (or streamed chunks, for HTTP targets). */
  tokenGapsMs: number[];
}

/** Where a benchmark sends requests: the engine in this process, or a server. */
export interface BenchTarget {
  readonly label: string;
  run(spec: RequestSpec): Promise<RequestTiming>;
}

let corpus: number[] | undefined;

/** A prompt of exactly `tokens` tokens (BOS + text), different for each `variant`. */
export function promptOf(tokens: number, variant: number): number[] {
  const tok = mistralV3Tokenizer();
  corpus ??= tok.encode(CALIBRATION_PROMPTS.join('\n'), { addSpecial: false });
  const body: number[] = [];
  for (let i = 0; body.length < tokens - 1; i++) body.push(corpus[(variant * 7 + i) % corpus.length]);
  return [tok.bosId!, ...body];
}

/** The p-th percentile (0..100) by linear interpolation; NaN for no samples. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(rank);
  const hi = Math.ceil(rank);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo);
}

export interface LoadSummary {
  requests: number;
  seconds: number;
  outputTokens: number;
  promptTokens: number;
  /** Output tokens per second of wall time. */
  outputTokensPerSecond: number;
  /** Prompt and output tokens per second of wall time. */
  totalTokensPerSecond: number;
  ttftP50Ms: number;
  ttftP95Ms: number;
  interTokenP50Ms: number;
  interTokenP95Ms: number;
  e2eP95Ms: number;
}

export function summarize(timings: readonly RequestTiming[], seconds: number): LoadSummary {
  const outputTokens = timings.reduce((n, t) => n + t.outputTokens, 0);
  const promptTokens = timings.reduce((n, t) => n + t.promptTokens, 0);
  const ttft = timings.map((t) => t.firstTokenMs - t.startMs);
  const gaps = timings.flatMap((t) => t.tokenGapsMs);
  return {
    requests: timings.length,
    seconds,
    outputTokens,
    promptTokens,
    outputTokensPerSecond: outputTokens / seconds,
    totalTokensPerSecond: (outputTokens + promptTokens) / seconds,
    ttftP50Ms: percentile(ttft, 50),
    ttftP95Ms: percentile(ttft, 95),
    interTokenP50Ms: percentile(gaps, 50),
    interTokenP95Ms: percentile(gaps, 95),
    e2eP95Ms: percentile(
      timings.map((t) => t.endMs - t.startMs),
      95,
    ),
  };
}

/** Sends `specs` all at once (a closed batch of concurrent clients) and summarizes them. */
export async function runConcurrent(target: BenchTarget, specs: readonly RequestSpec[], onDone?: () => void): Promise<LoadSummary> {
  const t0 = performance.now();
  const timings = await Promise.all(specs.map((s) => target.run(s).finally(() => onDone?.())));
  return summarize(timings, (performance.now() - t0) / 1000);
}

/** `concurrency` clients, each sending its next spec as soon as its last one finished, until every spec ran (a closed loop): the timings and the wall time. */
export async function closedLoopTimings(target: BenchTarget, specs: readonly RequestSpec[], concurrency: number): Promise<{ timings: RequestTiming[]; seconds: number }> {
  const t0 = performance.now();
  const timings: RequestTiming[] = [];
  let next = 0;
  const client = async () => {
    while (next < specs.length) timings.push(await target.run(specs[next++]));
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  return { timings, seconds: (performance.now() - t0) / 1000 };
}

/** A closed loop (closedLoopTimings), summarized. */
export async function runClosedLoop(target: BenchTarget, specs: readonly RequestSpec[], concurrency: number): Promise<LoadSummary> {
  const { timings, seconds } = await closedLoopTimings(target, specs, concurrency);
  return summarize(timings, seconds);
}

/** Sends each spec at its arrival time (ms from now), as independent clients do (an open loop). */
export async function runArrivals(target: BenchTarget, arrivals: ReadonlyArray<{ atMs: number; spec: RequestSpec }>, onDone?: () => void): Promise<LoadSummary> {
  const t0 = performance.now();
  const timings = await Promise.all(
    arrivals.map(async ({ atMs, spec }) => {
      const wait = t0 + atMs - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      return target.run(spec).finally(() => onDone?.());
    }),
  );
  return summarize(timings, (performance.now() - t0) / 1000);
}
