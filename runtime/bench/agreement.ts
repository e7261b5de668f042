// npm run bench:agreement: how closely npuserve's INT8 follows its FP32, next to how closely
// llama.cpp's Q8_0 follows its F32, on the same weights and one fixed token stream fed teacher-forced:
// at every position, top-1 agreement of the next-token distributions and KL(FP32 || quantized),
// printed as KL(ref, q) so the Markdown table stays a table.
// Also npuserve FP32 against llama.cpp F32, which checks that both read the same weights and tokens.
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { UsageError } from '../../common/errors.js';
import { type CommandSpec, type FlagValues, intFlag, runScript, stringFlag } from '../../common/flags.js';
import { defaultThreads } from '../cgroup.js';
import { convert } from '../convert/convert.js';
import { writeGgufTwin } from '../convert/gguf-writer.js';
import { Engine, type Int8Activations } from '../engine.js';
import { FORMAT_VERSION } from '../format.js';
import { makeTestModel, PRESETS, TEST_MODEL_VERSION } from '../testmodel.js';
import { withLlamaCppModel } from './llamacpp.js';

/** Fixed English prose and a little code: the stream both runtimes are fed (tokenized by llama.cpp). */
export const AGREEMENT_TEXT = [
  'The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined',
  'movable metal type, oil-based ink and a screw press adapted from those used to make wine. Within fifty',
  'years, presses were running in more than two hundred European cities, and the price of a book fell so',
  'far that students could own the texts they studied. Scholars argue about how much of the Reformation,',
  'the scientific revolution and the growth of literacy can be traced to this one machine, but few doubt',
  'that cheap copies changed who could take part in an argument.',
  '',
  'A modern compiler turns source code into machine instructions in several passes. The parser builds a',
  'syntax tree; later passes check types, inline small functions, allocate registers and schedule',
  'instructions so that the processor is never left waiting on memory. For example:',
  '',
  'def mean(values):',
  '    if not values:',
  '        raise ValueError("mean of an empty list")',
  '    return sum(values) / len(values)',
  '',
  'In the kitchen, bread needs only flour, water, salt and yeast, yet bakers spend years learning how',
  'temperature, humidity and time change the dough. A cold, slow rise gives a deeper flavour; too much',
  'yeast makes the loaf collapse. The same recipe can taste different in summer and in winter, which is',
  'why experienced bakers adjust by feel rather than by the clock. Mountains, rivers and coastlines shape',
  'where people settle: most large cities grew near a harbour, a ford or a pass through the hills, and',
  'their streets still follow paths that were laid out long before anyone drew a map of them.',
].join('\n');

export interface Agreement {
  positions: number;
  /** Fraction of positions whose most likely next token is the reference's. */
  top1: number;
  /** Mean over positions of KL(reference || candidate) in nats. */
  meanKl: number;
}

/**
 * Agreement of two runs' next-token distributions, given as log-probabilities [positions][vocab]
 * (-Infinity for a probability of 0).
 */
export function agreement(reference: Float64Array, candidate: Float64Array, vocab: number): Agreement {
  const positions = reference.length / vocab;
  let same = 0;
  let kl = 0;
  for (let p = 0; p < positions; p++) {
    const r = reference.subarray(p * vocab, (p + 1) * vocab);
    const c = candidate.subarray(p * vocab, (p + 1) * vocab);
    if (argmax(r) === argmax(c)) same++;
    for (let i = 0; i < vocab; i++) if (r[i] > -Infinity) kl += Math.exp(r[i]) * (r[i] - Math.max(c[i], LOG_FLOOR));
  }
  return { positions, top1: same / positions, meanKl: kl / positions };
}

/** The log of the smallest positive float32: a candidate probability of 0 counts as this. */
const LOG_FLOOR = Math.log(1.4e-45);

function argmax(a: Float64Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

/** Log-softmax of each row of logits [positions][vocab], in float64. */
export function logSoftmax(logits: Float32Array, vocab: number): Float64Array {
  const out = new Float64Array(logits.length);
  for (let p = 0; p < logits.length / vocab; p++) {
    const row = logits.subarray(p * vocab, (p + 1) * vocab);
    let mx = -Infinity;
    for (const x of row) mx = Math.max(mx, x);
    let sum = 0;
    for (const x of row) sum += Math.exp(x - mx);
    const lse = mx + Math.log(sum);
    for (let i = 0; i < vocab; i++) out[p * vocab + i] = row[i] - lse;
  }
  return out;
}

export async function npuserveLogProbs(npu: string, tokens: number[], threads: number, int8Activations?: Int8Activations): Promise<Float64Array> {
  const engine = await Engine.load(npu, { threads, maxSeqLen: tokens.length, kvCacheTokens: tokens.length + 16, int8Activations });
  const seq = engine.createSequence();
  const [r] = await engine.step([{ sequence: seq, tokens, logits: 'all', sample: false }]);
  engine.releaseSequence(seq);
  return logSoftmax(r.logits as Float32Array, engine.metadata.config.vocabSize);
}

interface LlamaRun {
  tokens: number[];
  logProbs: Float64Array;
}

/** llama.cpp's next-token distribution after every token of the stream (full softmax, no sampling cut-offs). */
export async function llamaLogProbs(gguf: string, threads: number, tokenCount: number, tokens?: number[]): Promise<LlamaRun> {
  return withLlamaCppModel(gguf, { threads }, async (model) => {
    const stream = tokens ?? streamTokens(model.tokenize(AGREEMENT_TEXT) as number[], model.tokens.bos as number | null, tokenCount);
    const ctx = await model.createContext({ contextSize: stream.length + 16, batchSize: stream.length, threads, sequences: 1 });
    const full = { temperature: 1, topK: 0, topP: 1, minP: 0 };
    const out = await ctx.getSequence().controlledEvaluate(stream.map((t) => [t as never, { generateNext: { probabilities: true, options: full } }]));
    // With no sampling cut-offs every position lists the whole vocabulary.
    const vocab = out[0]?.next.probabilities?.size ?? 0;
    const logProbs = new Float64Array(stream.length * vocab).fill(-Infinity);
    out.forEach((o, p) => {
      if (!o?.next.probabilities) throw new Error(`${gguf}: llama.cpp returned no probabilities at position ${p}`);
      for (const [token, prob] of o.next.probabilities) if (prob > 0) logProbs[p * vocab + (token as number)] = Math.log(prob);
    });
    await ctx.dispose();
    return { tokens: stream, logProbs };
  });
}

/** BOS (when the model has one) and the text's tokens, cut to `count`. */
export function streamTokens(textTokens: number[], bos: number | null, count: number): number[] {
  const all = bos === null ? textTokens : [bos, ...textTokens];
  if (all.length < count) throw new Error(`the agreement text gives ${all.length} tokens, fewer than --tokens ${count}`);
  return all.slice(0, count);
}

interface Sources {
  label: string;
  /** What npuserve converts (a GGUF file or an HF directory). */
  input: string;
  llamaF32: string;
  llamaQ8: string;
}

/** A test-model preset: its HF checkpoint with F32 and Q8_0 GGUF twins of the same seeded weights. */
function presetSources(cacheDir: string, preset: string): Sources {
  const dirs = { F32: join(cacheDir, `${preset}-t${TEST_MODEL_VERSION}-F32`), Q8_0: join(cacheDir, `${preset}-t${TEST_MODEL_VERSION}-Q8_0`) };
  for (const [gguf, dir] of Object.entries(dirs) as Array<['F32' | 'Q8_0', string]>) {
    if (!existsSync(join(dir, 'model.gguf'))) {
      console.error(`bench:agreement: writing test model ${preset} with a ${gguf} GGUF twin to ${dir}`);
      makeTestModel(dir, { ...PRESETS[preset], gguf });
    }
  }
  return { label: preset, input: dirs.F32, llamaF32: join(dirs.F32, 'model.gguf'), llamaQ8: join(dirs.Q8_0, 'model.gguf') };
}

/**
 * A user's GGUF: npuserve converts it; llama.cpp runs its F32 twin and the Q8_0 file given, or else
 * the Q8_0 twin of the same weights (quantized as llama.cpp's quantizer does).
 */
function ggufSources(cacheDir: string, gguf: string, llamaQ8: string | undefined): Sources {
  const twin = (dtype: 'F32' | 'Q8_0') => {
    const path = join(cacheDir, `${basename(gguf, '.gguf')}.${dtype}.gguf`);
    if (!existsSync(path)) {
      console.error(`bench:agreement: writing the ${dtype} twin of ${gguf} to ${path}`);
      writeGgufTwin(gguf, path, dtype);
    }
    return path;
  };
  return { label: basename(gguf), input: gguf, llamaF32: twin('F32'), llamaQ8: llamaQ8 ?? twin('Q8_0') };
}

async function converted(cacheDir: string, s: Sources, precision: 'FP32' | 'INT8'): Promise<string> {
  const out = join(cacheDir, `${basename(s.input)}.${precision.toLowerCase()}.v${FORMAT_VERSION}.npu`);
  if (!existsSync(out)) {
    console.error(`bench:agreement: converting ${s.input} to ${precision}`);
    await convert({ input: s.input, output: out, precision, optimizeLevel: 2 });
  }
  return out;
}

export interface AgreementResult {
  model: string;
  tokens: number;
  /** npuserve INT8 (int16 activations, the default) against npuserve FP32. */
  npuserveInt8: Agreement;
  /** npuserve INT8 with int8 activations (--int8-activations int8) against npuserve FP32. */
  npuserveInt8A8: Agreement;
  /** llama.cpp Q8_0 against llama.cpp F32 (absent without a Q8_0 file). */
  llamaQ8_0: Agreement;
  /** npuserve FP32 against llama.cpp F32: same weights, so this should be ~1 and ~0. */
  fp32VsLlamaF32: Agreement;
}

export function formatAgreement(r: AgreementResult): string {
  const row = (name: string, a: Agreement) => `| ${name} | ${a.positions} | ${(100 * a.top1).toFixed(1)}% | ${a.meanKl.toExponential(3)} |`;
  const lines = [
    `${r.model}: ${r.tokens} tokens, teacher-forced; next-token distributions compared at every position`,
    '',
    '| comparison | positions | top-1 agreement | mean KL(ref, q) nats |',
    '|------------|----------:|----------------:|-----------------------:|',
    row('npuserve INT8 (int16 activations) vs npuserve FP32', r.npuserveInt8),
    row('npuserve INT8 (int8 activations) vs npuserve FP32', r.npuserveInt8A8),
    row('llama.cpp Q8_0 vs llama.cpp F32', r.llamaQ8_0),
    row('npuserve FP32 vs llama.cpp F32 (same weights)', r.fp32VsLlamaF32),
  ];
  const d = 100 * (r.npuserveInt8.top1 - r.llamaQ8_0.top1);
  lines.push('', `INT8 top-1 minus Q8_0 top-1: ${d >= 0 ? '+' : ''}${d.toFixed(1)} points; KL ratio INT8 / Q8_0: ${(r.npuserveInt8.meanKl / r.llamaQ8_0.meanKl).toFixed(2)}`);
  return lines.join('\n');
}

const COMMAND: CommandSpec = {
  name: 'npm run bench:agreement --',
  summary: "How closely npuserve's FP32 and INT8 logits follow llama.cpp's F32 on one text, beside llama.cpp's own Q8_0: top-1 agreement and KL divergence.",
  synopsis: '(--model X.gguf | --preset NAME) [flags]',
  flags: [
    { name: 'model', value: 'X.gguf', description: 'an F32 or F16 GGUF model' },
    { name: 'preset', value: 'NAME', description: `a test model instead (${Object.keys(PRESETS).join(', ')})` },
    { name: 'llama-q8', value: 'X.gguf', defaultText: 'quantized from --model', description: "llama.cpp's Q8_0 twin of --model" },
    { name: 'tokens', value: 'N', default: '320', description: 'positions compared (>= 2)' },
    { name: 'threads', value: 'N', defaultText: 'CPU count', description: 'engine threads' },
    // Shared with bench:engine, whose INT8 runs write the same presets' Q8_0 twins.
    { name: 'cache-dir', value: 'DIR', default: join(homedir(), '.cache', 'npuserve', 'bench', 'engine'), description: 'where converted models are kept between runs' },
    { name: 'json', description: 'print the results as JSON instead of a table' },
  ],
};

async function main(values: FlagValues): Promise<void> {
  const model = stringFlag(values, 'model');
  const preset = stringFlag(values, 'preset');
  if (!model === !preset) throw new UsageError('give one of --model X.gguf or --preset NAME (a test model)');
  if (preset && !(preset in PRESETS)) throw new UsageError(`--preset ${preset}: expected one of ${Object.keys(PRESETS).join(', ')}`);
  const tokenCount = intFlag(values, 'tokens', 2)!;
  const threads = intFlag(values, 'threads', 1) ?? defaultThreads();
  const cacheDir = stringFlag(values, 'cache-dir')!;
  mkdirSync(cacheDir, { recursive: true });
  const s = preset ? presetSources(cacheDir, preset) : ggufSources(cacheDir, model!, stringFlag(values, 'llama-q8'));

  console.error('bench:agreement: llama.cpp F32');
  const f32 = await llamaLogProbs(s.llamaF32, threads, tokenCount);
  const vocab = f32.logProbs.length / f32.tokens.length;
  console.error('bench:agreement: llama.cpp Q8_0');
  const q8 = await llamaLogProbs(s.llamaQ8, threads, tokenCount, f32.tokens);
  console.error('bench:agreement: npuserve FP32 and INT8');
  const ours32 = await npuserveLogProbs(await converted(cacheDir, s, 'FP32'), f32.tokens, threads);
  const int8 = await converted(cacheDir, s, 'INT8');
  const ours8 = await npuserveLogProbs(int8, f32.tokens, threads, 'int16');
  const ours8a8 = await npuserveLogProbs(int8, f32.tokens, threads, 'int8');
  if (ours32.length !== f32.logProbs.length) throw new Error(`vocabulary sizes differ: npuserve ${ours32.length / f32.tokens.length}, llama.cpp ${vocab}`);
  const result: AgreementResult = {
    model: s.label,
    tokens: f32.tokens.length,
    npuserveInt8: agreement(ours32, ours8, vocab),
    npuserveInt8A8: agreement(ours32, ours8a8, vocab),
    llamaQ8_0: agreement(f32.logProbs, q8.logProbs, vocab),
    fp32VsLlamaF32: agreement(f32.logProbs, ours32, vocab),
  };
  console.log(values.json ? JSON.stringify(result, null, 2) : formatAgreement(result));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  void runScript(COMMAND, main);
}
