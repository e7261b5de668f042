// `npm run bench:server`: load-tests real `npuserve serve` processes with the official openai client.
// (1) Rising concurrency: the server's tokens/s and TTFT against the engine's own tokens/s on the
// same requests (the engine in this process behind the same scheduler, no HTTP), interleaved in one
// run, giving the cost of the HTTP path. (2) A mixed load (Poisson arrivals, mixed prompt and output
// lengths) against continuous batching and against the seed's fixed-size batches: p95 TTFT.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, setPriority } from 'node:os';
import { join } from 'node:path';

import OpenAI from 'openai';

import { SPEC_DEFAULTS } from '../../common/defaults.js';
import { UsageError } from '../../common/errors.js';
import { type CommandSpec, type FlagValues, intFlag, numberFlag, parseFlags, runScript, stringFlag } from '../../common/flags.js';
import { serve, serveConfig } from '../../cli/serve.js';
import { Progress } from '../progress.js';
import { defaultModel, type Server, startServer, stopServer } from './serve-process.js';
import { EngineTarget } from './targets.js';
import { promptOf, runArrivals, runClosedLoop, type BenchTarget, type LoadSummary, type RequestSpec, type RequestTiming } from './workload.js';

const CLIENT_NICENESS = 10;

interface Options {
  modelPath: string;
  concurrencies: number[];
  /** Each concurrency level is measured this many times per target, interleaved; the best run counts. */
  repeats: number;
  promptTokens: number;
  outputTokens: number;
  maxBatchSize: number;
  mixedRequests: number;
  mixedRatePerSecond: number;
  outDir: string;
}

/** The server's streamed completions through the openai client; TTFT is the first chunk with text. */
class OpenAITarget implements BenchTarget {
  constructor(
    readonly label: string,
    private readonly client: OpenAI,
    private readonly model: string,
  ) {}

  async run(spec: RequestSpec): Promise<RequestTiming> {
    const startMs = performance.now();
    const stream = await this.client.completions.create({ model: this.model, prompt: spec.prompt, max_tokens: spec.maxTokens, temperature: 1, seed: spec.seed, stream: true, stream_options: { include_usage: true } });
    const times: number[] = [];
    let outputTokens = 0;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.text) times.push(performance.now());
      if (chunk.usage) outputTokens = chunk.usage.completion_tokens;
    }
    const endMs = performance.now();
    return { promptTokens: spec.prompt.length, outputTokens, startMs, firstTokenMs: times[0] ?? endMs, endMs, tokenGapsMs: times.slice(1).map((t, i) => t - times[i]) };
  }
}

function openaiTarget(label: string, s: Server): OpenAITarget {
  return new OpenAITarget(label, new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 600_000 }), 'bench');
}

interface OverheadPoint {
  concurrency: number;
  /** The round whose overhead is the median of the rounds'. */
  engine: LoadSummary;
  server: LoadSummary;
  /** Median over rounds of 1 - server tokens/s / engine tokens/s, each round measuring both. */
  httpOverhead: number;
  /** Every round's overhead, in the order run. */
  rounds: number[];
  /** CPU the openai client in this process used during that round's server run, in % of one core (it shares the machine). */
  clientCpuPercent: number;
}

function median<T>(items: T[], value: (t: T) => number): T {
  return [...items].sort((a, b) => value(a) - value(b))[Math.floor((items.length - 1) / 2)];
}

/**
 * The client yields the cores to the server's engine threads, as a client on another machine would
 * (what it still uses is reported); the in-process engine's scheduler runs on this same thread, so
 * the niceness is lowered again for its runs (root may; elsewhere it stays, and the engine's figures
 * are then the conservative ones).
 */
function clientNiceness(niceness: number): void {
  try {
    setPriority(niceness);
  } catch {
    // Only root may lower a niceness it raised.
  }
}

async function measureOverhead(o: Options, progress: Progress): Promise<OverheadPoint[]> {
  const serverArgs = ['--max-batch-size', String(o.maxBatchSize), '--max-seq-len', String(SPEC_DEFAULTS.runtime.maxSeqLen)];
  // The same flags make the in-process engine and the server: same KV cache type and size, threads, budget.
  const engine = await EngineTarget.fromServeConfig(serveConfig(parseFlags(serve.spec, ['--model', o.modelPath, ...serverArgs], {})));
  const server = await startServer(o.modelPath, serverArgs);
  const http = openaiTarget('server', server);
  const points: OverheadPoint[] = [];
  const total = o.concurrencies.length * o.repeats * 2;
  let done = 0;
  try {
    // Warm both paths (first-request costs: JIT, connection, page faults) before measuring.
    const warmup = { prompt: promptOf(o.promptTokens, 0), maxTokens: 8, seed: 0 };
    await engine.run(warmup);
    await http.run(warmup);
    for (const concurrency of o.concurrencies) {
      // Enough requests that a run lasts seconds even at concurrency 1: a run of half a second
      // would measure the machine's hiccups more than the server.
      const requests = Math.max(16, 2 * concurrency);
      const specs = Array.from({ length: requests }, (_, i) => ({ prompt: promptOf(o.promptTokens, i), maxTokens: o.outputTokens, seed: 1000 + i }));
      const rounds: Array<{ engine: LoadSummary; server: LoadSummary; overhead: number; clientCpuPercent: number }> = [];
      for (let r = 0; r < o.repeats; r++) {
        let e: LoadSummary | undefined;
        let s: LoadSummary | undefined;
        let clientCpuPercent = 0;
        const runEngine = async () => {
          progress.update(`engine, ${concurrency} concurrent`, done++, total);
          clientNiceness(0);
          e = await runClosedLoop(engine, specs, concurrency);
        };
        const runServer = async () => {
          progress.update(`server, ${concurrency} concurrent`, done++, total);
          clientNiceness(CLIENT_NICENESS);
          const cpu = process.cpuUsage();
          s = await runClosedLoop(http, specs, concurrency);
          const { user, system } = process.cpuUsage(cpu);
          clientCpuPercent = (user + system) / 1e4 / s.seconds;
        };
        // Alternating which target goes first evens out drifts in the machine's load; each round
        // pairs two adjacent runs, and the median round is reported.
        for (const run of r % 2 === 0 ? [runEngine, runServer] : [runServer, runEngine]) await run();
        rounds.push({ engine: e!, server: s!, overhead: 1 - s!.outputTokensPerSecond / e!.outputTokensPerSecond, clientCpuPercent });
      }
      const mid = median(rounds, (x) => x.overhead);
      points.push({ concurrency, engine: mid.engine, server: mid.server, httpOverhead: mid.overhead, rounds: rounds.map((x) => x.overhead), clientCpuPercent: mid.clientCpuPercent });
    }
  } finally {
    clientNiceness(0);
    await stopServer(server);
  }
  return points;
}

/** Seeded Poisson arrivals with prompt lengths 16..512 and output lengths 8..128 tokens. */
function mixedLoad(o: Options): Array<{ atMs: number; spec: RequestSpec }> {
  let state = 20240611;
  const rand = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32;
  };
  let atMs = 0;
  return Array.from({ length: o.mixedRequests }, (_, i) => {
    atMs += (-Math.log(1 - rand()) / o.mixedRatePerSecond) * 1000;
    const promptTokens = 16 + Math.floor(rand() * 497);
    const maxTokens = 8 + Math.floor(rand() * 121);
    return { atMs, spec: { prompt: promptOf(promptTokens, 500 + i), maxTokens, seed: 500 + i } };
  });
}

async function measureMixed(o: Options, progress: Progress): Promise<Record<'continuous' | 'fixed', LoadSummary>> {
  const load = mixedLoad(o);
  const out: Partial<Record<'continuous' | 'fixed', LoadSummary>> = {};
  let done = 0;
  for (const policy of ['continuous', 'fixed'] as const) {
    const server = await startServer(o.modelPath, ['--max-batch-size', String(o.maxBatchSize), '--max-seq-len', String(SPEC_DEFAULTS.runtime.maxSeqLen), '--scheduler', policy]);
    try {
      out[policy] = await runArrivals(openaiTarget(policy, server), load, () => progress.update(`mixed load, ${policy}`, ++done, load.length * 2));
    } finally {
      await stopServer(server);
    }
  }
  return out as Record<'continuous' | 'fixed', LoadSummary>;
}

function report(o: Options, overhead: OverheadPoint[], mixed: Record<'continuous' | 'fixed', LoadSummary>, loadAverages: number[]): string {
  const ms = (v: number) => v.toFixed(0);
  const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
  const lines = [
    `Model: ${o.modelPath}; ${cpus().length} cores (1-minute load average ${loadAverages.map((l) => l.toFixed(1)).join(' at the start, ')} at the end); max batch size ${o.maxBatchSize}.`,
    '',
    `### HTTP overhead: ${o.promptTokens}-token prompts, ${o.outputTokens} output tokens, max(16, 2 × concurrency) requests per run from as many clients as the concurrency in a closed loop (median of ${o.repeats} rounds, each running both, interleaved)`,
    '',
    '| Concurrency | Engine tok/s | Server tok/s | HTTP overhead (median) | Every round | Server TTFT p50 (ms) | Engine TTFT p50 (ms) | Client CPU (% of a core) |',
    '|---|---|---|---|---|---|---|---|',
    ...overhead.map(
      (p) =>
        `| ${p.concurrency} | ${p.engine.outputTokensPerSecond.toFixed(1)} | ${p.server.outputTokensPerSecond.toFixed(1)} | ${pct(p.httpOverhead)} | ${p.rounds.map(pct).join(', ')} | ${ms(p.server.ttftP50Ms)} | ${ms(p.engine.ttftP50Ms)} | ${p.clientCpuPercent.toFixed(1)} |`,
    ),
    '',
    `### Mixed load: ${o.mixedRequests} requests, Poisson arrivals at ${o.mixedRatePerSecond}/s, prompts 16-512 tokens, outputs 8-128 tokens`,
    '',
    '| Scheduler | TTFT p50 (ms) | TTFT p95 (ms) | E2E p95 (ms) | Output tok/s | Wall time (s) |',
    '|---|---|---|---|---|---|',
    ...(['continuous', 'fixed'] as const).map((k) => {
      const s = mixed[k];
      return `| ${k === 'continuous' ? 'continuous (npuserve)' : 'fixed batches (seed)'} | ${ms(s.ttftP50Ms)} | ${ms(s.ttftP95Ms)} | ${ms(s.e2eP95Ms)} | ${s.outputTokensPerSecond.toFixed(1)} | ${s.seconds.toFixed(1)} |`;
    }),
    '',
    `Continuous batching p95 TTFT is ${(mixed.fixed.ttftP95Ms / mixed.continuous.ttftP95Ms).toFixed(1)}x lower than fixed batches.`,
  ];
  return `${lines.join('\n')}\n`;
}

const COMMAND: CommandSpec = {
  name: 'npm run bench:server --',
  summary: "The HTTP server's overhead over the bare engine at each concurrency, and continuous against fixed batching under a mixed load.",
  flags: [
    { name: 'model', value: 'X.npu', defaultText: 'a converted test model', description: 'the model to serve' },
    { name: 'concurrency', value: 'A,B', default: '1,2,4,8,16', description: 'concurrent requests of the overhead study' },
    { name: 'repeats', value: 'N', default: '5', description: 'rounds per concurrency (the median round is reported)' },
    { name: 'mixed-requests', value: 'N', default: '24', description: 'requests of the mixed load' },
    { name: 'mixed-rate', value: 'R', default: '0.6', description: 'arrivals per second of the mixed load' },
    { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of server-load.json' },
  ],
};

async function main(f: FlagValues): Promise<void> {
  const o: Options = {
    modelPath: stringFlag(f, 'model') ?? (await defaultModel()),
    concurrencies: stringFlag(f, 'concurrency')!.split(',').map(Number),
    repeats: intFlag(f, 'repeats', 1)!,
    promptTokens: 16,
    outputTokens: 96,
    maxBatchSize: SPEC_DEFAULTS.runtime.maxBatchSize,
    mixedRequests: intFlag(f, 'mixed-requests', 1)!,
    mixedRatePerSecond: numberFlag(f, 'mixed-rate')!,
    outDir: stringFlag(f, 'out')!,
  };
  if (o.concurrencies.some((c) => !Number.isInteger(c) || c < 1)) throw new UsageError(`--concurrency must list positive integers, got '${f.concurrency}'`);
  o.maxBatchSize = Math.max(o.maxBatchSize, ...o.concurrencies);
  const progress = new Progress();
  const t0 = performance.now();
  // Other work on the machine shows in every figure: the load average is reported with them.
  const loadAverages = [loadavg()[0]];
  const overhead = await measureOverhead(o, progress);
  const mixed = await measureMixed(o, progress);
  loadAverages.push(loadavg()[0]);
  progress.done();
  const markdown = report(o, overhead, mixed, loadAverages);
  process.stdout.write(markdown);
  mkdirSync(o.outDir, { recursive: true });
  const json = join(o.outDir, 'server-load.json');
  writeFileSync(json, `${JSON.stringify({ createdAt: new Date().toISOString(), options: o, loadAverages, overhead, mixed }, null, 2)}\n`);
  console.error(`wrote ${json}; ${((performance.now() - t0) / 1000).toFixed(0)} s in all`);
}

void runScript(COMMAND, main);
