// The named loads of `npm run bench:autoscale`, each a list of requests replayed the same way every
// run: Poisson arrivals at a scripted rate, prompt and answer lengths drawn from a seeded generator;
// and the pods, targets and scrape interval the bench replays them with.
import { SPEC_DEFAULTS } from '../../common/defaults.js';
import { seededRandom } from '../../common/random.js';

import type { AutoscalingTargets } from './policy.js';
import { simulate, type PodModel, type Policy, type Request, type Second } from './simulator.js';

export const BENCH_TARGETS: AutoscalingTargets = { ...SPEC_DEFAULTS.autoscaling, maxReplicas: 10, maxBatchSize: SPEC_DEFAULTS.runtime.maxBatchSize };
// One replica: a prompt token or a batched decode token costs 1000/480 ms (480 tokens/s at a full batch
// of 16), a step at least 1000/30 ms (30 tokens/s per sequence), 256-token prefill chunks, 8192 tokens
// of KV cache, 30 s from scale decision to ready.
export const BENCH_POD: PodModel = { tokenMs: 1000 / 480, minStepMs: 1000 / 30, prefillChunkTokens: 256, kvCacheTokens: 8192, startupSeconds: 30 };
export const BENCH_SCRAPE_INTERVAL_SECONDS = 5;

export interface Trace {
  name: string;
  description: string;
  durationSeconds: number;
  initialReplicas: number;
  minReplicas: number;
  seed: number;
  /** Requests arriving in each second, by arrival. */
  requests: Request[][];
}

interface TraceSpec extends Omit<Trace, 'requests'> {
  /** Requests per second arriving at second s. */
  rate: (second: number) => number;
  /** Prompt and answer tokens of one request. */
  size: (random: () => number) => { promptTokens: number; outputTokens: number };
}

/** Poisson-distributed count with mean `mean` (Knuth's method; means here stay below 30). */
function poisson(mean: number, random: () => number): number {
  const limit = Math.exp(-mean);
  let k = 0;
  let p = random();
  while (p > limit) {
    k++;
    p *= random();
  }
  return k;
}

const uniform = (random: () => number, lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));

export function buildTrace(spec: TraceSpec): Trace {
  const random = seededRandom(spec.seed);
  const requests: Request[][] = [];
  for (let s = 0; s < spec.durationSeconds; s++) {
    const n = poisson(spec.rate(s), random);
    const times = Array.from({ length: n }, () => s * 1000 + random() * 1000).sort((a, b) => a - b);
    requests.push(times.map((arrivalMs) => ({ arrivalMs, ...spec.size(random) })));
  }
  const { rate: _rate, size: _size, ...rest } = spec;
  return { ...rest, requests };
}

/** The load of the first bench, in output tokens/s: a ramp, a plateau, a 20 s burst, a lull, a step, a slow decline. */
export function rampBurstTokensPerSecond(second: number): number {
  if (second < 60) return 300;
  if (second < 300) return 300 + ((second - 60) / 240) * 1500; // ramp to 1800
  if (second < 480) return 1800;
  if (second < 500) return 4000; // burst
  if (second < 600) return 1800;
  if (second < 800) return 400; // lull
  if (second < 1100) return 2600; // step
  return Math.max(300, 2600 - (second - 1100) * 6);
}

const chat = (random: () => number) => ({ promptTokens: uniform(random, 16, 48), outputTokens: uniform(random, 150, 250) });

export const TRACE_SPECS: TraceSpec[] = [
  {
    name: 'ramp-burst',
    description: 'the first bench\'s load: 300 tokens/s, a 4-minute ramp to 1800, a 20 s burst to 4000, a lull at 400, a step to 2600, a slow decline; chat-sized requests (16-48 prompt, 150-250 output tokens)',
    durationSeconds: 1500,
    initialReplicas: 1,
    minReplicas: 1,
    seed: 1,
    rate: (s) => rampBurstTokensPerSecond(s) / 200,
    size: chat,
  },
  {
    name: 'diurnal',
    description: 'a day compressed into 40 minutes: a cosine from 200 to 3200 tokens/s and back; chat-sized requests',
    durationSeconds: 2400,
    initialReplicas: 1,
    minReplicas: 1,
    seed: 2,
    rate: (s) => (200 + 1500 * (1 - Math.cos((2 * Math.PI * s) / 2400))) / 200,
    size: chat,
  },
  {
    name: 'bursts',
    description: 'a low base of 300 tokens/s with a 45 s burst to 2400 tokens/s every 4 minutes; chat-sized requests',
    durationSeconds: 1500,
    initialReplicas: 1,
    minReplicas: 1,
    seed: 3,
    rate: (s) => (s % 240 >= 120 && s % 240 < 165 ? 2400 : 300) / 200,
    size: chat,
  },
  {
    name: 'long-prompts',
    description: 'RAG-like requests (64-256 prompt, 16-48 output tokens): 1 request/s, a 5-minute ramp to 7, a plateau, back to 1; prefill dominates, so TTFT rises while requests in flight stay moderate',
    durationSeconds: 1500,
    initialReplicas: 1,
    minReplicas: 1,
    seed: 4,
    rate: (s) => (s < 120 ? 1 : s < 420 ? 1 + ((s - 120) / 300) * 6 : s < 900 ? 7 : s < 1000 ? 7 - ((s - 900) / 100) * 6 : 1),
    size: (random) => ({ promptTokens: uniform(random, 64, 256), outputTokens: uniform(random, 16, 48) }),
  },
  {
    name: 'mixed-answers',
    description: 'three in four answers of 8-24 tokens, one in four of 800-1200 (32-96 prompt tokens): 1 request/s, a step to 6 at 300 s, 3 from 900 s; a request count says little about tokens, and long answers fill the KV cache before the batch',
    durationSeconds: 1500,
    initialReplicas: 1,
    minReplicas: 1,
    seed: 5,
    rate: (s) => (s < 300 ? 1 : s < 900 ? 6 : 3),
    size: (random) => ({ promptTokens: uniform(random, 32, 96), outputTokens: random() < 0.25 ? uniform(random, 800, 1200) : uniform(random, 8, 24) }),
  },
  {
    name: 'cold-start',
    description: 'minReplicas 0, starting at zero: idle for 60 s, 1200 tokens/s for 400 s, idle (scale to zero after 300 s), then 600 tokens/s from 1200 s; chat-sized requests held by the gateway while no pod is ready',
    durationSeconds: 1500,
    initialReplicas: 0,
    minReplicas: 0,
    seed: 6,
    rate: (s) => (s >= 60 && s < 460 ? 1200 / 200 : s >= 1200 ? 600 / 200 : 0),
    size: chat,
  },
];

const built = new Map<string, Trace>();

/** The named trace, built once per process. */
export function trace(name: string): Trace {
  const cached = built.get(name);
  if (cached) return cached;
  const spec = TRACE_SPECS.find((t) => t.name === name);
  if (!spec) throw new Error(`trace '${name}' is not one of ${TRACE_SPECS.map((t) => t.name).join(', ')}`);
  const t = buildTrace(spec);
  built.set(name, t);
  return t;
}

/**
 * Evenly spaced requests for hand-checked tests: `tokensPerSecond(s) / outputTokens` requests in
 * second s (the fraction carried to the next second), each of `promptTokens` and `outputTokens`.
 */
export function evenRequests(tokensPerSecond: (second: number) => number, promptTokens: number, outputTokens: number): (second: number) => Request[] {
  const memo: Request[][] = [];
  let carried = 0;
  return (second: number) => {
    for (let s = memo.length; s <= second; s++) {
      const exact = carried + tokensPerSecond(s) / outputTokens;
      const n = Math.floor(exact + 1e-9);
      carried = exact - n;
      memo.push(Array.from({ length: n }, (_, i) => ({ arrivalMs: s * 1000 + (i * 1000) / n, promptTokens, outputTokens })));
    }
    return memo[second]!;
  };
}

/** Replays `t` on the bench's pods, scaled by `policy`. */
export function runTrace(t: Trace, policy: Policy): Second[] {
  return simulate({
    requests: (s) => t.requests[s] ?? [],
    durationSeconds: t.durationSeconds,
    initialReplicas: t.initialReplicas,
    targets: { ...BENCH_TARGETS, minReplicas: t.minReplicas },
    pod: BENCH_POD,
    policy,
    scrapeIntervalSeconds: BENCH_SCRAPE_INTERVAL_SECONDS,
  });
}
