// The seed study's measurements against one target: latency at batch 1 (time to first token and
// per-token latency), and a throughput sweep at a fixed prompt length with concurrency doubling from
// 1 until throughput stops rising.
import type { AccuracyReport } from '../format.js';
import { promptOf, runConcurrent, summarize, type BenchTarget, type LoadSummary, type RequestTiming } from './workload.js';

export interface StudyOptions {
  promptTokens: number;
  outputTokens: number;
  latencyRequests: number;
  maxConcurrency: number;
  /** The sweep stops after two doublings in a row that raise throughput by less than this fraction. */
  minGain: number;
}

export interface SweepPoint extends LoadSummary {
  concurrency: number;
}

export interface StudyResult {
  label: string;
  model: { path: string; precision: string; optimizeLevel: number; weightBytes: number } | null;
  options: StudyOptions;
  latency: { requests: number; ttftP50Ms: number; ttftP95Ms: number; perTokenP50Ms: number; perTokenP95Ms: number };
  sweep: SweepPoint[];
  best: { concurrency: number; outputTokensPerSecond: number };
  accuracy: AccuracyReport | null;
  /** Peak resident memory of the process holding the model. */
  peakRssBytes: number | null;
}

export type ProgressFn = (label: string, done: number, total: number) => void;

/** Sweep concurrencies: 1, 2, 4 ... up to and including maxConcurrency. */
export function concurrencies(max: number): number[] {
  const out: number[] = [];
  for (let c = 1; c < max; c *= 2) out.push(c);
  out.push(max);
  return out;
}

export async function runStudy(target: BenchTarget, o: StudyOptions, progress: ProgressFn): Promise<Pick<StudyResult, 'latency' | 'sweep' | 'best'>> {
  const levels = concurrencies(o.maxConcurrency);
  const total = o.latencyRequests + levels.reduce((n, c) => n + c, 0);
  let done = 0;
  const tick = (label: string) => () => progress(label, ++done, total);

  const timings: RequestTiming[] = [];
  for (let i = 0; i < o.latencyRequests; i++) {
    timings.push(await target.run({ prompt: promptOf(o.promptTokens, i), maxTokens: o.outputTokens, seed: i }));
    tick('latency, batch 1')();
  }
  const single = summarize(timings, 1);

  const sweep: SweepPoint[] = [];
  let flatLevels = 0;
  for (const concurrency of levels) {
    const specs = Array.from({ length: concurrency }, (_, i) => ({ prompt: promptOf(o.promptTokens, 100 + i), maxTokens: o.outputTokens, seed: 100 + i }));
    const point = { concurrency, ...(await runConcurrent(target, specs, tick(`throughput, ${concurrency} concurrent`))) };
    const bestSoFar = Math.max(0, ...sweep.map((p) => p.outputTokensPerSecond));
    sweep.push(point);
    // Two doublings in a row without a gain: one could be noise, two is the plateau.
    flatLevels = sweep.length > 1 && point.outputTokensPerSecond < bestSoFar * (1 + o.minGain) ? flatLevels + 1 : 0;
    if (flatLevels === 2) break;
  }
  progress('done', total, total);
  const best = sweep.reduce((a, b) => (b.outputTokensPerSecond > a.outputTokensPerSecond ? b : a));
  return {
    latency: { requests: o.latencyRequests, ttftP50Ms: single.ttftP50Ms, ttftP95Ms: single.ttftP95Ms, perTokenP50Ms: single.interTokenP50Ms, perTokenP95Ms: single.interTokenP95Ms },
    sweep,
    best: { concurrency: best.concurrency, outputTokensPerSecond: best.outputTokensPerSecond },
  };
}
