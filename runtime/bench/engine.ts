// npm run bench:engine: the engine against llama.cpp (node-llama-cpp) on the same test-model weights,
// side by side in one run: prefill of a 512-token prompt, decode at batch 1, 4 and 16, peak RSS, and
// for npuserve the fraction of the machine's read bandwidth reached at batch 1 and of its int8
// multiply-accumulate peak reached by the prefill (both limits measured by the addon as the best of
// several patterns and runs, so no figure can exceed them). Each target runs in its own child
// process so its peak RSS is its own.
import { fork } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Llama, LlamaModel } from 'node-llama-cpp';

import { UsageError } from '../../common/errors.js';
import { choiceFlag, type CommandSpec, type FlagValues, intFlag, runScript, stringFlag } from '../../common/flags.js';
import { defaultThreads } from '../cgroup.js';
import { Engine, native, type Int8Activations, type MachineLimits } from '../engine.js';
import { FORMAT_VERSION } from '../format.js';
import { makeTestModel, PRESETS, TEST_MODEL_VERSION } from '../testmodel.js';
import { convert } from '../convert/convert.js';
import { withLlamaCppModel } from './llamacpp.js';

export type Runtime = 'npuserve' | 'llama.cpp';

export interface BenchPlan {
  threads: number;
  promptTokens: number;
  decodeTokens: number;
  batchSizes: number[];
  /** npuserve's KV cache element type; llama.cpp's default KV cache is f16. */
  kvCacheDtype: 'f32' | 'f16';
  /** npuserve INT8's activations (llama.cpp Q8_0 quantizes them to 8 bits). */
  int8Activations: Int8Activations;
}

export interface TargetResult {
  runtime: Runtime;
  model: string;
  precision: string;
  file: string;
  kernel: string;
  /** npuserve INT8: the activations' quantization (int8 or int16). */
  int8Activations?: Int8Activations;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: Record<string, number>;  // batch size -> aggregate tokens/s
  peakRssBytes: number;
  /** Weight bytes one decoded token reads (all matrices; of the embedding table one row). */
  weightBytesPerToken: number;
  /** Multiply-accumulates of the weight matrices per token (attention scores and sums excluded). */
  matrixMacsPerToken?: number;
}

export interface ModelResult {
  model: string;
  npuserve: TargetResult;
  llamaCpp: TargetResult | { error: string };
  /** Weights read per decoded token x batch-1 tokens/s / the machine's read bandwidth. */
  bandwidthFraction: number;
  /** INT8: matrix MACs per token x prefill tokens/s / the machine's MAC peak at the activations' width. */
  macPeakFraction?: number;
}

export interface EngineBenchResult {
  threads: number;
  limits: MachineLimits;
  plan: BenchPlan;
  models: ModelResult[];
}

const MODEL_PRECISIONS = { INT8: { gguf: 'Q8_0' }, FP16: { gguf: 'F16' } } as const;
type Precision = keyof typeof MODEL_PRECISIONS;

/** A fixed pseudo-random token stream, the same for both runtimes (avoids special tokens 0-2). */
export function benchTokens(n: number, vocab: number, seed: number): number[] {
  let s = seed >>> 0 || 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    out.push(3 + (s % (vocab - 3)));
  }
  return out;
}

/** Builds (once) the test model, its GGUF twin and the converted .npu under cacheDir. */
async function ensureModel(cacheDir: string, preset: string, precision: Precision): Promise<{ npu: string; gguf: string }> {
  const ggufType = MODEL_PRECISIONS[precision].gguf;
  const dir = join(cacheDir, `${preset}-t${TEST_MODEL_VERSION}-${ggufType}`);
  const npu = join(cacheDir, `${preset}-t${TEST_MODEL_VERSION}.${precision.toLowerCase()}.v${FORMAT_VERSION}.npu`);
  if (!existsSync(join(dir, 'model.gguf'))) {
    console.error(`bench:engine: writing test model ${preset} with a ${ggufType} GGUF twin to ${dir}`);
    makeTestModel(dir, { ...PRESETS[preset], gguf: ggufType });
  }
  if (!existsSync(npu)) {
    console.error(`bench:engine: converting ${dir} to ${precision} (optimize level 2)`);
    await convert({ input: dir, precision, output: npu, optimizeLevel: 2 });
  }
  return { npu, gguf: join(dir, 'model.gguf') };
}

/** Every tensor but the embedding table, unless the LM head is tied to it. */
function weightBytesPerToken(engine: Engine): number {
  const tensors = engine.metadata.tensors;
  const tied = !tensors.some((t) => t.name === 'lm_head');
  return tensors.filter((t) => tied || !t.name.startsWith('tok_embeddings')).reduce((s, t) => s + t.bytes, 0);
}

/** rows x cols of every weight matrix a token goes through (the LM head: the tied table or lm_head). */
function matrixMacsPerToken(engine: Engine): number {
  const tensors = engine.metadata.tensors;
  const tied = !tensors.some((t) => t.name === 'lm_head');
  return tensors
    .filter((t) => t.shape.length === 2 && (tied || t.name !== 'tok_embeddings'))
    .reduce((s, t) => s + t.shape[0] * t.shape[1], 0);
}

const now = () => performance.now() / 1000;

/** The MAC peak that bounds an INT8 prefill: that of the widest-throughput instruction at the activations' width. */
function macPeak(limits: MachineLimits, activations: Int8Activations | undefined): number {
  return activations === 'int16' ? limits.int16MacsPerSecond : limits.int8MacsPerSecond;
}

async function runNpuserve(file: string, model: string, precision: string, plan: BenchPlan): Promise<TargetResult> {
  const maxBatch = Math.max(...plan.batchSizes);
  const engine = await Engine.load(file, { threads: plan.threads, maxSeqLen: plan.promptTokens + plan.decodeTokens + 64, kvCacheTokens: Math.max(2 * (plan.promptTokens + 64), maxBatch * (plan.decodeTokens + 64)), kvCacheDtype: plan.kvCacheDtype, int8Activations: plan.int8Activations });
  const vocab = engine.metadata.config.vocabSize;
  const prompt = benchTokens(plan.promptTokens, vocab, 1);

  let prefill = 0;
  for (let r = 0; r < 2; r++) {
    const seq = engine.createSequence(r);
    const t0 = now();
    await engine.step([{ sequence: seq, tokens: prompt, temperature: 0 }]);
    prefill = Math.max(prefill, plan.promptTokens / (now() - t0));
    engine.releaseSequence(seq);
  }

  const decode: Record<string, number> = {};
  for (const b of plan.batchSizes) {
    const seqs = Array.from({ length: b }, (_, i) => engine.createSequence(i));
    let results = await engine.step(seqs.map((s, i) => ({ sequence: s, tokens: benchTokens(16, vocab, 100 + i), temperature: 0 })));
    const t0 = now();
    for (let step = 0; step < plan.decodeTokens; step++) {
      results = await engine.step(results.map((r) => ({ sequence: r.sequence, tokens: [r.token], temperature: 0 })));
    }
    decode[b] = (b * plan.decodeTokens) / (now() - t0);
    for (const s of seqs) engine.releaseSequence(s);
  }
  return {
    runtime: 'npuserve', model, precision, file, kernel: engine.info.kernel,
    int8Activations: precision === 'INT8' ? engine.info.int8Activations : undefined,
    prefillTokensPerSecond: prefill, decodeTokensPerSecond: decode,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, weightBytesPerToken: weightBytesPerToken(engine),
    matrixMacsPerToken: matrixMacsPerToken(engine),
  };
}

async function runLlamaCpp(file: string, model: string, precision: string, plan: BenchPlan, vocab: number): Promise<TargetResult> {
  return withLlamaCppModel(file, { threads: plan.threads }, (m, llama) => llamaCppFigures(m, llama, file, model, precision, plan, vocab));
}

async function llamaCppFigures(m: LlamaModel, llama: Llama, file: string, model: string, precision: string, plan: BenchPlan, vocab: number): Promise<TargetResult> {
  const prompt = benchTokens(plan.promptTokens, vocab, 1);

  let prefill = 0;
  {
    const ctx = await m.createContext({ contextSize: plan.promptTokens + 256, batchSize: plan.promptTokens, threads: plan.threads, sequences: 1 });
    for (let r = 0; r < 2; r++) {
      const seq = ctx.getSequence();
      const t0 = now();
      await seq.evaluateWithoutGeneratingNewTokens(prompt as never);
      prefill = Math.max(prefill, plan.promptTokens / (now() - t0));
      seq.dispose();
    }
    await ctx.dispose();
  }

  const decode: Record<string, number> = {};
  for (const b of plan.batchSizes) {
    const ctx = await m.createContext({ contextSize: 256 * b, batchSize: 512, threads: plan.threads, sequences: b });
    const seqs = Array.from({ length: b }, () => ctx.getSequence());
    // Each sequence's generator yields one token per batched evaluation: its first token comes after
    // the 16-token prompt, the clock starts once every sequence has produced that first token.
    const gens = seqs.map((s, i) => s.evaluate(benchTokens(16, vocab, 100 + i) as never, { temperature: 0 }));
    await Promise.all(gens.map((g) => g.next()));
    const t0 = now();
    await Promise.all(gens.map(async (g) => {
      for (let i = 0; i < plan.decodeTokens; i++) await g.next();
      await g.return();
    }));
    decode[b] = (b * plan.decodeTokens) / (now() - t0);
    for (const s of seqs) s.dispose();
    await ctx.dispose();
  }
  return {
    runtime: 'llama.cpp', model, precision, file, kernel: `cpu, ${llama.buildType} build`,
    prefillTokensPerSecond: prefill, decodeTokensPerSecond: decode,
    peakRssBytes: process.resourceUsage().maxRSS * 1024, weightBytesPerToken: m.size,
  };
}

interface ChildRequest { runtime: Runtime; file: string; model: string; precision: string; plan: BenchPlan; vocab: number }

function inChild(req: ChildRequest): Promise<TargetResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), ['--child'], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let done = false;
    child.on('message', (m: { result?: TargetResult; error?: string }) => {
      done = true;
      if (m.result) resolve(m.result);
      else reject(new Error(m.error));
    });
    child.on('exit', (code) => {
      if (!done) reject(new Error(`${req.runtime} on ${req.file}: child exited with code ${code}`));
    });
    child.send(req);
  });
}

function pad(s: string, n: number) { return s.length >= n ? s : s + ' '.repeat(n - s.length); }
const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));

export function formatTable(r: EngineBenchResult): string {
  const bs = r.plan.batchSizes;
  const head = ['model', 'runtime', 'precision', `prefill ${r.plan.promptTokens} tok/s`, ...bs.map((b) => `decode b${b} tok/s`), 'peak RSS MiB'];
  const rows: string[][] = [];
  for (const m of r.models) {
    for (const t of [m.npuserve, m.llamaCpp]) {
      if ('error' in t) { rows.push([m.model, 'llama.cpp', '-', `error: ${t.error}`]); continue; }
      rows.push([m.model, t.runtime === 'npuserve' ? `npuserve (${t.kernel}${t.int8Activations ? `, ${t.int8Activations} activations` : ''})` : 'llama.cpp', t.precision, fmt(t.prefillTokensPerSecond), ...bs.map((b) => fmt(t.decodeTokensPerSecond[b])), (t.peakRssBytes / 2 ** 20).toFixed(0)]);
    }
    if (!('error' in m.llamaCpp)) {
      const l = m.llamaCpp, n = m.npuserve;
      rows.push([m.model, 'ratio npuserve/llama.cpp', '', (n.prefillTokensPerSecond / l.prefillTokensPerSecond).toFixed(2) + 'x', ...bs.map((b) => (n.decodeTokensPerSecond[b] / l.decodeTokensPerSecond[b]).toFixed(2) + 'x'), '']);
    }
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? '').length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => pad(c ?? '', widths[i])).join(' | ') + ' |';
  const out = [line(head), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...rows.map(line)];
  out.push('');
  const best = r.limits.reads.reduce((a, b) => (b.bytesPerSecond > a.bytesPerSecond ? b : a));
  out.push(`npuserve KV cache ${r.plan.kvCacheDtype}; threads ${r.threads}`);
  out.push(`machine limits (best of all measured): read bandwidth ${(r.limits.readBytesPerSecond / 1e9).toFixed(1)} GB/s (${best.pattern}, ${(best.bytes / 2 ** 20).toFixed(0)} MiB); MAC peak ${(r.limits.int8MacsPerSecond / 1e9).toFixed(0)} G/s int8, ${(r.limits.int16MacsPerSecond / 1e9).toFixed(0)} G/s int16 (${r.limits.macPeaks.map((p) => `${p.instruction} ${(p.macsPerSecond / 1e9).toFixed(0)}`).join(', ')})`);
  for (const m of r.models) {
    out.push(`${m.model}: npuserve batch-1 decode reads ${(m.npuserve.weightBytesPerToken / 1e6).toFixed(0)} MB of weights per token = ${(100 * m.bandwidthFraction).toFixed(0)}% of the bandwidth limit`);
    if (m.macPeakFraction !== undefined)
      out.push(`${m.model}: npuserve prefill does ${((m.npuserve.matrixMacsPerToken ?? 0) / 1e6).toFixed(0)} M matrix MACs per token = ${(100 * m.macPeakFraction).toFixed(0)}% of the ${m.npuserve.int8Activations ?? 'int8'} MAC peak`);
  }
  return out.join('\n');
}

const COMMAND: CommandSpec = {
  name: 'npm run bench:engine --',
  summary: "Measures npuserve's engine against llama.cpp on test models: prefill and decode tokens/s per batch size, against the machine's memory bandwidth and MAC peak.",
  flags: [
    { name: 'models', value: 'A,B', default: '100m,1b', description: `test model presets (${Object.keys(PRESETS).join(', ')})` },
    { name: 'precision', value: 'INT8,FP16', default: 'INT8', description: 'precisions to measure' },
    { name: 'threads', value: 'N', defaultText: 'CPU count', description: 'engine threads' },
    { name: 'prompt-tokens', value: 'N', default: '512', description: 'prompt length of the prefill measurement' },
    { name: 'decode-tokens', value: 'N', default: '32', description: 'tokens decoded per measurement' },
    { name: 'batches', value: 'A,B', default: '1,4,16', description: 'decode batch sizes (1 is always included)' },
    { name: 'cache-dir', value: 'DIR', default: join(homedir(), '.cache', 'npuserve', 'bench', 'engine'), description: 'where the test models are kept between runs' },
    { name: 'skip-llama', description: 'measure npuserve only' },
    { name: 'kv-cache-dtype', value: 'f16|f32', default: 'f16', description: "llama.cpp's KV cache type" },
    { name: 'int8-activations', value: 'int16|int8', default: 'int16', description: "how npuserve's INT8 models quantize activations" },
    { name: 'json', description: 'print the results as JSON instead of a table' },
  ],
};

async function main(values: FlagValues): Promise<void> {
  const precisions = stringFlag(values, 'precision')!.split(',') as Precision[];
  for (const p of precisions) if (!(p in MODEL_PRECISIONS)) throw new UsageError(`--precision ${p}: expected INT8 or FP16`);
  const models = stringFlag(values, 'models')!.split(',');
  for (const m of models) if (!(m in PRESETS)) throw new UsageError(`--models ${m}: expected one of ${Object.keys(PRESETS).join(', ')}`);
  const threads = intFlag(values, 'threads', 1) ?? defaultThreads();
  const batchSizes = stringFlag(values, 'batches')!.split(',').map(Number);
  if (!batchSizes.every((b) => Number.isSafeInteger(b) && b >= 1)) throw new UsageError(`--batches must be positive integers separated by commas, got '${values.batches}'`);
  const plan: BenchPlan = {
    threads,
    promptTokens: intFlag(values, 'prompt-tokens', 1)!,
    decodeTokens: intFlag(values, 'decode-tokens', 1)!,
    batchSizes,
    kvCacheDtype: choiceFlag(values, 'kv-cache-dtype', ['f16', 'f32'] as const)!,
    int8Activations: choiceFlag(values, 'int8-activations', ['int16', 'int8'] as const)!,
  };
  if (!plan.batchSizes.includes(1)) plan.batchSizes.unshift(1);
  const cacheDir = stringFlag(values, 'cache-dir')!;
  mkdirSync(cacheDir, { recursive: true });

  const limits = native().machineLimits({ bytes: 1.5 * 2 ** 30, threads, repeats: 5 });
  const result: EngineBenchResult = { threads, limits, plan, models: [] };
  for (const preset of models) {
    for (const precision of precisions) {
      const { npu, gguf } = await ensureModel(cacheDir, preset, precision);
      const label = `${preset} ${precision}`;
      console.error(`bench:engine: ${label}: npuserve`);
      const vocab = Number(JSON.parse(readFileSync(join(dirname(gguf), 'config.json'), 'utf8')).vocab_size);
      const n = await inChild({ runtime: 'npuserve', file: npu, model: preset, precision, plan, vocab });
      let l: TargetResult | { error: string };
      if (values['skip-llama']) {
        l = { error: 'skipped (--skip-llama)' };
      } else {
        console.error(`bench:engine: ${label}: llama.cpp`);
        l = await inChild({ runtime: 'llama.cpp', file: gguf, model: preset, precision: MODEL_PRECISIONS[precision].gguf, plan, vocab }).catch((e: Error) => ({ error: e.message }));
      }
      result.models.push({
        model: preset, npuserve: n, llamaCpp: l,
        bandwidthFraction: (n.weightBytesPerToken * n.decodeTokensPerSecond[1]) / limits.readBytesPerSecond,
        macPeakFraction: precision === 'INT8' ? ((n.matrixMacsPerToken ?? 0) * n.prefillTokensPerSecond) / macPeak(limits, n.int8Activations) : undefined,
      });
    }
  }
  console.log(values.json ? JSON.stringify(result, null, 2) : formatTable(result));
}

if (process.argv[2] === '--child') {
  process.once('message', (req: ChildRequest) => {
    const run = req.runtime === 'npuserve' ? runNpuserve(req.file, req.model, req.precision, req.plan) : runLlamaCpp(req.file, req.model, req.precision, req.plan, req.vocab);
    run.then(
      (result) => process.send!({ result }, () => process.exit(0)),
      (e: Error) => process.send!({ error: e.message }, () => process.exit(1)),
    );
  });
} else if (process.argv[1] === fileURLToPath(import.meta.url)) {
  void runScript(COMMAND, main);
}
