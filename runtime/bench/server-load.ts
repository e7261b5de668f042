// `npm run bench:server`: load-tests real `npuserve serve` processes with streamed completions.
// (1) Rising concurrency: the server's tokens/s and TTFT against the engine's own tokens/s on the
// same requests (the engine in this process behind the same scheduler, no HTTP) and against the same
// server behind a static `npuserve gateway`, interleaved in one run, giving the cost of the HTTP path
// and of the gateway's hop (a lean HTTP client: targets.ts HttpTarget). (2) A mixed load (Poisson
// arrivals, mixed prompt and output lengths) through the official openai client against continuous
// batching and against the seed's fixed-size batches: p95 TTFT.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, setPriority } from 'node:os';
import { join } from 'node:path';

import OpenAI from 'openai';

import { SPEC_DEFAULTS } from '../../common/defaults.js';
import { UsageError } from '../../common/errors.js';
import { type CommandSpec, type FlagValues, intFlag, numberFlag, parseFlags, runScript, stringFlag } from '../../common/flags.js';
import { serve, serveConfig } from '../../cli/serve.js';
import { Progress } from '../progress.js';
import { defaultModel, type Server, startGateway, startServer, stopServer } from './serve-process.js';
import { EngineTarget, HttpTarget } from './targets.js';
import { closedLoopTimings, promptOf, runArrivals, summarize, type BenchTarget, type LoadSummary, type RequestSpec, type RequestTiming } from './workload.js';

const CLIENT_NICENESS = 10;

interface Options {
  modelPath: string;
  concurrencies: number[];
  /** Rounds per concurrency level, each running every target once; medians are reported. */
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

/** One round at one concurrency: the same requests to each target, wave by wave, the three targets back to back in each wave. */
interface OverheadRound {
  engine: LoadSummary;
  server: LoadSummary;
  gateway: LoadSummary;
  /** 1 - server tokens/s / engine tokens/s. */
  httpOverhead: number;
  /** 1 - gateway tokens/s / server tokens/s. */
  gatewayOverhead: number;
  /** CPU the client in this process used during the server and the gateway run, in % of one core (it shares the machine). */
  clientCpuPercent: { server: number; gateway: number };
  /** CPU time the hypervisor gave other guests during each run (steal, /proc/stat), in % of the machine's. */
  stealPercent: { engine: number; server: number; gateway: number };
}

/** The machine's CPU ticks, all and stolen by the hypervisor (/proc/stat; zeros where there is none). */
function cpuTicks(): { total: number; steal: number } {
  try {
    const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal guest guest_nice: guest time is inside user.
    return { total: f.slice(0, 8).reduce((a, b) => a + b, 0), steal: f[7] ?? 0 };
  } catch {
    return { total: 0, steal: 0 };
  }
}

/** One target's waves of a round added up: its requests, wall time, the machine's CPU ticks and stolen ticks, and the client's CPU. */
interface WaveTally {
  timings: RequestTiming[];
  seconds: number;
  ticks: number;
  steal: number;
  cpuMicros: number;
}

/** A round is run again when the hypervisor took more than this share of the CPU during one of its runs. */
const MAX_STEAL_PERCENT = 2;

interface OverheadPoint {
  concurrency: number;
  /** Each figure's own median over the rounds (so two medians may come from different rounds). */
  median: {
    engineTokensPerSecond: number;
    serverTokensPerSecond: number;
    gatewayTokensPerSecond: number;
    httpOverhead: number;
    gatewayOverhead: number;
    engineTtftP50Ms: number;
    serverTtftP50Ms: number;
    gatewayTtftP50Ms: number;
    clientCpuPercent: { server: number; gateway: number };
    stealPercent: { engine: number; server: number; gateway: number };
  };
  /** Every round kept, in the order run. */
  rounds: OverheadRound[];
  /** Rounds run again because the hypervisor took more than MAX_STEAL_PERCENT of the CPU during one of their runs. */
  discarded: number;
}

/** The median (the mean of the middle two of an even count). */
function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = (sorted.length - 1) / 2;
  return (sorted[Math.floor(mid)]! + sorted[Math.ceil(mid)]!) / 2;
}

function medians(rounds: OverheadRound[]): OverheadPoint['median'] {
  const of = (value: (r: OverheadRound) => number) => median(rounds.map(value));
  return {
    engineTokensPerSecond: of((r) => r.engine.outputTokensPerSecond),
    serverTokensPerSecond: of((r) => r.server.outputTokensPerSecond),
    gatewayTokensPerSecond: of((r) => r.gateway.outputTokensPerSecond),
    httpOverhead: of((r) => r.httpOverhead),
    gatewayOverhead: of((r) => r.gatewayOverhead),
    engineTtftP50Ms: of((r) => r.engine.ttftP50Ms),
    serverTtftP50Ms: of((r) => r.server.ttftP50Ms),
    gatewayTtftP50Ms: of((r) => r.gateway.ttftP50Ms),
    clientCpuPercent: { server: of((r) => r.clientCpuPercent.server), gateway: of((r) => r.clientCpuPercent.gateway) },
    stealPercent: { engine: of((r) => r.stealPercent.engine), server: of((r) => r.stealPercent.server), gateway: of((r) => r.stealPercent.gateway) },
  };
}

/**
 * The client yields the cores to the server's engine threads, as a client on another machine would
 * (what it still uses is reported): its thread runs under SCHED_IDLE (`chrt --idle`), so it takes
 * only time the engine's threads leave idle, else at niceness 10. On 2 cores every millisecond the
 * client takes from one engine thread stalls the other at the step's next barrier: a process burning
 * 10% of one core cost the in-process engine 8-13% of its tokens/s at niceness 0 and 10, 8% under
 * SCHED_IDLE (docs/benchmarks.md). The in-process engine's scheduler runs on this same thread, so the
 * normal policy is restored for its runs (root may; elsewhere it stays, and the engine's figures are
 * then the conservative ones).
 */
function clientYields(yields: boolean): void {
  try {
    execFileSync('chrt', [yields ? '--idle' : '--other', '-p', '0', String(process.pid)], { stdio: 'ignore' });
    return;
  } catch {
    // No chrt, or not allowed: niceness instead.
  }
  try {
    setPriority(yields ? CLIENT_NICENESS : 0);
  } catch {
    // Only root may lower a niceness it raised.
  }
}

async function measureOverhead(o: Options, progress: Progress): Promise<OverheadPoint[]> {
  const serverArgs = ['--max-batch-size', String(o.maxBatchSize), '--max-seq-len', String(SPEC_DEFAULTS.runtime.maxSeqLen)];
  // The same flags make the in-process engine and the server: same KV cache type and size, threads, budget.
  const engine = await EngineTarget.fromServeConfig(serveConfig(parseFlags(serve.spec, ['--model', o.modelPath, ...serverArgs], {})));
  // Both processes start before the client lowers its priority, so they keep the normal one.
  const server = await startServer(o.modelPath, serverArgs);
  const gateway = await startGateway(server).catch(async (e: unknown) => {
    await stopServer(server);
    throw e;
  });
  const http = await HttpTarget.connect(server.url, 'server');
  const proxied = await HttpTarget.connect(gateway.url, 'gateway');
  const points: OverheadPoint[] = [];
  const total = o.concurrencies.length * o.repeats * 3;
  let done = 0;
  try {
    // Warm every path (first-request costs: JIT, connection, page faults) before measuring.
    const warmup = { prompt: promptOf(o.promptTokens, 0), maxTokens: 8, seed: 0 };
    await engine.run(warmup);
    await http.run(warmup);
    await proxied.run(warmup);
    for (const concurrency of o.concurrencies) {
      // Enough requests that a run lasts seconds at every concurrency (about 10 s at 1 and 16 on 2
      // cores, 4 waves of requests at 16): a short run measures the machine's hiccups more than the server.
      const requests = Math.max(16, 4 * concurrency);
      const specs = Array.from({ length: requests }, (_, i) => ({ prompt: promptOf(o.promptTokens, i), maxTokens: o.outputTokens, seed: 1000 + i }));
      const rounds: OverheadRound[] = [];
      let discarded = 0;
      // A round's requests in waves of `concurrency`; each wave goes to the three targets back to
      // back, rotating which goes first, so that a change in the machine's load (the hypervisor's
      // steal comes and goes over seconds) lands on all three alike instead of on one target's run.
      const waves = Array.from({ length: Math.ceil(specs.length / concurrency) }, (_, w) => specs.slice(w * concurrency, (w + 1) * concurrency));
      const targets = { engine, server: http, gateway: proxied } as const;
      const labels = ['engine', 'server', 'gateway'] as const;
      for (let r = 0; rounds.length < o.repeats; r++) {
        progress.update(`${concurrency} concurrent, round ${rounds.length + 1} of ${o.repeats}${discarded ? ` (${discarded} run again)` : ''}`, done, total);
        const acc = Object.fromEntries(labels.map((l): [string, WaveTally] => [l, { timings: [], seconds: 0, ticks: 0, steal: 0, cpuMicros: 0 }])) as Record<(typeof labels)[number], WaveTally>;
        for (const [w, wave] of waves.entries()) {
          for (let i = 0; i < labels.length; i++) {
            const label = labels[(r + w + i) % labels.length];
            clientYields(label !== 'engine');
            const cpu = process.cpuUsage();
            const t0 = cpuTicks();
            const run = await closedLoopTimings(targets[label], wave, concurrency);
            const t1 = cpuTicks();
            const used = process.cpuUsage(cpu);
            const a = acc[label];
            a.timings.push(...run.timings);
            a.seconds += run.seconds;
            a.ticks += t1.total - t0.total;
            a.steal += t1.steal - t0.steal;
            a.cpuMicros += used.user + used.system;
          }
        }
        clientYields(false);
        const [e, s, g] = labels.map((l) => summarize(acc[l].timings, acc[l].seconds));
        const stealPercent = { engine: 0, server: 0, gateway: 0 };
        for (const l of labels) stealPercent[l] = (100 * acc[l].steal) / Math.max(1, acc[l].ticks);
        const clientCpuPercent = { server: acc.server.cpuMicros / 1e4 / acc.server.seconds, gateway: acc.gateway.cpuMicros / 1e4 / acc.gateway.seconds };
        // A round during which the hypervisor ran other guests on these cores compares runs of
        // different machines: it is run again (at most as many times as there are rounds).
        if (Math.max(stealPercent.engine, stealPercent.server, stealPercent.gateway) > MAX_STEAL_PERCENT && discarded < o.repeats) {
          discarded++;
          continue;
        }
        done += 3;
        rounds.push({ engine: e, server: s, gateway: g, httpOverhead: 1 - s.outputTokensPerSecond / e.outputTokensPerSecond, gatewayOverhead: 1 - g.outputTokensPerSecond / s.outputTokensPerSecond, clientCpuPercent, stealPercent });
      }
      points.push({ concurrency, median: medians(rounds), rounds, discarded });
    }
  } finally {
    clientYields(false);
    http.close();
    proxied.close();
    await stopServer(gateway);
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
  const tps = (v: number) => v.toFixed(1);
  const lines = [
    `Model: ${o.modelPath}; ${cpus().length} cores (1-minute load average ${loadAverages.map((l) => l.toFixed(1)).join(' at the start, ')} at the end); max batch size ${o.maxBatchSize}.`,
    '',
    `### HTTP and gateway overhead: ${o.promptTokens}-token prompts, ${o.outputTokens} output tokens, max(16, 4 × concurrency) requests per round, in waves of as many requests as the concurrency, each wave a closed loop of as many clients run on the engine in this process, the server, and the server through a static \`npuserve gateway\`, back to back (rotating which goes first); medians of ${o.repeats} rounds, every round in brackets; a round during which the hypervisor took more than ${MAX_STEAL_PERCENT}% of the CPU is run again`,
    '',
    'HTTP overhead = 1 - server tok/s / engine tok/s; gateway overhead = 1 - gateway tok/s / server tok/s.',
    '',
    '| Concurrency | Engine tok/s | Server tok/s | Gateway tok/s | HTTP overhead | Gateway overhead | TTFT p50 engine / server / gateway (ms) | Client CPU server / gateway (% of a core) | Steal engine / server / gateway (%), rounds run again |',
    '|---|---|---|---|---|---|---|---|---|',
    ...overhead.map((p) => {
      const cell = (value: number, each: (r: OverheadRound) => number, format: (v: number) => string) => `${format(value)} (${p.rounds.map((r) => format(each(r))).join(', ')})`;
      const m = p.median;
      return `| ${p.concurrency} | ${cell(m.engineTokensPerSecond, (r) => r.engine.outputTokensPerSecond, tps)} | ${cell(m.serverTokensPerSecond, (r) => r.server.outputTokensPerSecond, tps)} | ${cell(m.gatewayTokensPerSecond, (r) => r.gateway.outputTokensPerSecond, tps)} | ${cell(m.httpOverhead, (r) => r.httpOverhead, pct)} | ${cell(m.gatewayOverhead, (r) => r.gatewayOverhead, pct)} | ${ms(m.engineTtftP50Ms)} / ${ms(m.serverTtftP50Ms)} / ${ms(m.gatewayTtftP50Ms)} | ${m.clientCpuPercent.server.toFixed(1)} / ${m.clientCpuPercent.gateway.toFixed(1)} | ${m.stealPercent.engine.toFixed(1)} / ${m.stealPercent.server.toFixed(1)} / ${m.stealPercent.gateway.toFixed(1)}, ${p.discarded} |`;
    }),
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
  summary: "The HTTP server's overhead over the bare engine and a gateway's over the server at each concurrency, and continuous against fixed batching under a mixed load.",
  flags: [
    { name: 'model', value: 'X.npu', defaultText: 'a converted test model', description: 'the model to serve' },
    { name: 'concurrency', value: 'A,B', default: '1,2,4,8,16', description: 'concurrent requests of the overhead study' },
    { name: 'repeats', value: 'N', default: '5', description: 'rounds per concurrency, each running every target once (medians are reported)' },
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
