// `npuserve convert`: checkpoint -> .npu at FP32, FP16 or INT8, with optional fusion (level 1) and
// packing for the kernels (level 2), then the accuracy gate against an FP32 conversion. The output
// appears only when everything passed: work goes to a temporary file renamed at the end.
import { createHash } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

import { templateSpec, type ChatMessage } from '../chat.js';
import { DEFAULT_TEMPLATE_LIMITS, SandboxedChatTemplate, TemplateLimitError } from '../chat-sandbox.js';
import { FormatError, UsageError } from '../errors.js';
import { INT8_QUANTIZATION, type AccuracyReport, type NpuMetadata, type Precision, type TensorDType, type TensorLayout } from '../format.js';
import type { ModelFootprint } from '../../common/serving-memory.js';
import { hasOutputProjectionBias, modelFootprint, type ModelConfig } from '../model-config.js';
import { Tokenizer, tokenizerVocabSize } from '../tokenizer.js';
import { CONVERTER_VERSION, ENGINE_VERSION } from '../../common/version.js';
import { gateFailure, measureAccuracy } from './accuracy.js';
import { openCheckpoint, type Checkpoint, type SourceFormat } from './checkpoint.js';
import { downloadGguf, type DownloadOptions } from './download.js';
import { NpuWriter, type PlannedTensor } from './writer.js';

export interface ConvertOptions {
  input: string;
  output: string;
  precision: Precision;
  optimizeLevel: 0 | 1 | 2;
  format?: SourceFormat;
  /** Fail (and leave no output) when the mean cosine similarity vs FP32 is below this. */
  minCosine?: number;
  /** How an http(s) input is fetched: allowed internal hosts, size cap, Authorization header. */
  download?: Omit<DownloadOptions, 'onProgress'>;
  onProgress?: (stage: string, done: number, total: number) => void;
  /**
   * false skips the calibration run (no gate, accuracy null in the file): for tests of the engine
   * itself, which compare it with a float64 reference. Not a CLI flag: every served model is gated.
   */
  accuracyGate?: boolean;
}

export interface ConvertSummary {
  output: string;
  precision: Precision;
  optimizeLevel: number;
  sourceFormat: string;
  sourceBytes: number;
  outputBytes: number;
  /** What sizes a serving pod of this file (the operator records it per revision). */
  model: ModelFootprint;
  seconds: { convert: number; accuracy: number; total: number };
  accuracy: AccuracyReport | null;
}

export class AccuracyGateError extends Error {
  constructor(
    readonly report: AccuracyReport,
    readonly minCosine: number | undefined,
    detail: string,
  ) {
    super(`accuracy gate failed: ${detail}`);
    this.name = 'AccuracyGateError';
  }
}

const DTYPE: Record<Precision, TensorDType> = { FP32: 'f32', FP16: 'f16', INT8: 'i8' };

function concatRows(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/**
 * The values, or an error naming the tensor and the first NaN or infinity: such a weight converts
 * without complaint and then makes every logit NaN (the server would answer token 0 forever).
 */
function requireFinite(path: string, name: string, values: Float32Array): Float32Array {
  let s = 0;
  for (let i = 0; i < values.length; i++) s += values[i] - values[i]; // 0 unless some value is NaN or infinite
  if (s === 0) return values;
  const at = values.findIndex((v) => !Number.isFinite(v));
  throw new FormatError(path, `tensor '${name}' holds ${values[at]} at element ${at}; weights must be finite numbers`);
}

/** Which tensors to write, in file order, with the HF tensors each is made from. */
export function planTensors(ck: Checkpoint, precision: Precision, optimizeLevel: number): PlannedTensor[] {
  const c = ck.config;
  const dtype = DTYPE[precision];
  const layout: TensorLayout = optimizeLevel >= 2 ? 'packed16' : 'row-major';
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  const read = (name: string, shape: number[]) => {
    const info = ck.source.tensors.get(name);
    if (!info) throw new UsageError(`${ck.source.path}: tensor '${name}' is missing`);
    if (info.shape.join('x') !== shape.join('x'))
      throw new UsageError(`${ck.source.path}: tensor '${name}' has shape [${info.shape}], config.json implies [${shape}]`);
    return () => requireFinite(ck.source.path, name, ck.source.readF32(name));
  };
  const plan: PlannedTensor[] = [];
  const vector = (name: string, from: string) => plan.push({ name, dtype: 'f32', layout: 'row-major', shape: [c.hiddenSize], produce: read(from, [c.hiddenSize]) });
  // Attention biases stay f32 whatever the precision: they are added once per row after the matmul.
  const biases = (name: string, sources: Array<[string, number]>) => {
    const readers = sources.map(([n, r]) => read(n, [r]));
    plan.push({ name, dtype: 'f32', layout: 'row-major', shape: [sources.reduce((n, [, r]) => n + r, 0)], produce: () => concatRows(readers.map((f) => f())) });
  };
  const matrix = (name: string, rows: number, cols: number, sources: Array<[string, number]>) => {
    const readers = sources.map(([n, r]) => read(n, [r, cols]));
    plan.push({ name, dtype, layout, shape: [rows, cols], produce: () => concatRows(readers.map((f) => f())) });
  };
  plan.push({ name: 'tok_embeddings', dtype, layout: 'row-major', shape: [c.vocabSize, c.hiddenSize], produce: read('model.embed_tokens.weight', [c.vocabSize, c.hiddenSize]) });
  for (let l = 0; l < c.numLayers; l++) {
    const hf = `model.layers.${l}.`;
    const ours = `layers.${l}.`;
    const attn = (p: string): [string, number] => [`${hf}self_attn.${p}_proj.weight`, p === 'q' ? qDim : kvDim];
    const mlp = (p: string): [string, number] => [`${hf}mlp.${p}_proj.weight`, c.intermediateSize];
    vector(`${ours}attn_norm`, `${hf}input_layernorm.weight`);
    const bias = (p: string): [string, number] => [`${hf}self_attn.${p}_proj.bias`, p === 'q' ? qDim : kvDim];
    if (optimizeLevel >= 1) {
      matrix(`${ours}wqkv`, qDim + 2 * kvDim, c.hiddenSize, [attn('q'), attn('k'), attn('v')]);
      if (c.attentionBias) biases(`${ours}bqkv`, [bias('q'), bias('k'), bias('v')]);
    } else {
      for (const p of ['q', 'k', 'v']) matrix(`${ours}w${p}`, p === 'q' ? qDim : kvDim, c.hiddenSize, [attn(p)]);
      if (c.attentionBias) for (const p of ['q', 'k', 'v']) biases(`${ours}b${p}`, [bias(p)]);
    }
    matrix(`${ours}wo`, c.hiddenSize, qDim, [[`${hf}self_attn.o_proj.weight`, c.hiddenSize]]);
    const outputBias = `${hf}self_attn.o_proj.bias`;
    if (hasOutputProjectionBias(c)) biases(`${ours}bo`, [[outputBias, c.hiddenSize]]);
    for (const [name, used] of [[bias('q')[0], c.attentionBias], [outputBias, hasOutputProjectionBias(c)]] as const)
      if (!used && ck.source.tensors.has(name))
        throw new UsageError(`${ck.source.path}: tensor '${name}' is present but a ${c.architecture} config with attention_bias ${c.attentionBias} has no such bias; the model would run without it`);
    vector(`${ours}ffn_norm`, `${hf}post_attention_layernorm.weight`);
    if (optimizeLevel >= 1) {
      matrix(`${ours}w_gate_up`, 2 * c.intermediateSize, c.hiddenSize, [mlp('gate'), mlp('up')]);
    } else {
      matrix(`${ours}w_gate`, c.intermediateSize, c.hiddenSize, [mlp('gate')]);
      matrix(`${ours}w_up`, c.intermediateSize, c.hiddenSize, [mlp('up')]);
    }
    matrix(`${ours}w_down`, c.hiddenSize, c.intermediateSize, [[`${hf}mlp.down_proj.weight`, c.hiddenSize]]);
  }
  vector('norm', 'model.norm.weight');
  if (!c.tieWordEmbeddings) {
    if (!ck.source.tensors.has('lm_head.weight')) throw new UsageError(`${ck.source.path}: tensor 'lm_head.weight' is missing and tie_word_embeddings is false`);
    matrix('lm_head', c.vocabSize, c.hiddenSize, [['lm_head.weight', c.vocabSize]]);
  }
  return plan;
}

function digestFiles(files: string[]): { digest: string; bytes: number } {
  const hash = createHash('sha256');
  const buf = Buffer.alloc(8 << 20);
  let bytes = 0;
  for (const f of files) {
    const fd = openSync(f, 'r');
    try {
      for (let n = readSync(fd, buf); n > 0; n = readSync(fd, buf)) {
        hash.update(buf.subarray(0, n));
        bytes += n;
      }
    } finally {
      closeSync(fd);
    }
  }
  return { digest: `sha256:${hash.digest('hex')}`, bytes };
}

/** The embedding may have spare rows (padded to a multiple of 64 or 128), never fewer than the tokenizer's ids. */
function checkTokenizerFits(ck: Checkpoint): void {
  const tokens = tokenizerVocabSize(ck.tokenizer);
  if (tokens > ck.config.vocabSize)
    throw new UsageError(`${ck.source.path}: the tokenizer has ${tokens} tokens (ids 0..${tokens - 1}); the model's vocabulary (embedding rows) has only ${ck.config.vocabSize}`);
}

/** Conversations a chat template must render within the serving limits (it may refuse any of them). */
const PROBE_CONVERSATIONS: ChatMessage[][] = [
  [{ role: 'user', content: 'Hello!' }],
  [
    { role: 'system', content: 'You are a helpful assistant.' },
    { role: 'user', content: 'What is 2 + 2?' },
    { role: 'assistant', content: '4.' },
    { role: 'user', content: 'And 3 + 3?' },
  ],
];

/** Templates (with their special tokens) that passed the probe in this process: converting the same
 * checkpoint again (tests, benches) starts no second renderer process (~0.35 s). */
const probedTemplates = new Set<string>();

/**
 * The chat template travels into the .npu and is rendered for every chat request: one that does not
 * parse, or does not render a short conversation within the server's default deadline and heap
 * limit, is refused here rather than at every request.
 */
async function checkChatTemplate(ck: Checkpoint): Promise<void> {
  if (ck.tokenizer.chatTemplate === null) return;
  const limits = DEFAULT_TEMPLATE_LIMITS;
  const spec = templateSpec(new Tokenizer(ck.tokenizer));
  const key = JSON.stringify(spec);
  if (probedTemplates.has(key)) return;
  let sandbox: SandboxedChatTemplate;
  try {
    sandbox = await SandboxedChatTemplate.start(spec, limits);
  } catch (e) {
    throw new UsageError(`${ck.source.path}: ${(e as Error).message}`);
  }
  try {
    for (const messages of PROBE_CONVERSATIONS) {
      // A refusal (raise_exception for roles it does not support) is the template's right; a limit is not.
      const err = await sandbox.render(messages).then(() => null, (e: Error) => e);
      if (err instanceof TemplateLimitError) {
        throw new UsageError(`${ck.source.path}: the chat template fails a ${messages.length}-message probe conversation: ${err.message}; the server could not render it for chat requests (limits: ${limits.timeoutMs} ms, ${limits.heapMb} MiB)`);
      }
    }
    probedTemplates.add(key);
  } finally {
    await sandbox.close();
  }
}

function baseMetadata(ck: Checkpoint, config: ModelConfig, precision: Precision, optimizeLevel: number, digest: { digest: string; bytes: number }) {
  return {
    format: 'npuserve-model' as const,
    converterVersion: CONVERTER_VERSION,
    engineVersion: ENGINE_VERSION,
    architecture: config.architecture,
    config,
    precision,
    optimizeLevel,
    quantization: precision === 'INT8' ? INT8_QUANTIZATION : null,
    source: { format: ck.format, files: ck.files.map((f) => basename(f)), bytes: digest.bytes, digest: digest.digest },
    tokenizer: ck.tokenizer,
    accuracy: null,
    createdAt: new Date().toISOString(),
  } satisfies Omit<NpuMetadata, 'tensors' | 'formatVersion'>;
}

function writeModel(ck: Checkpoint, path: string, precision: Precision, level: number, digest: { digest: string; bytes: number }, progress?: ConvertOptions['onProgress']): NpuWriter {
  const writer = new NpuWriter(path, baseMetadata(ck, ck.config, precision, level, digest), planTensors(ck, precision, level));
  try {
    writer.writeTensors((_name, done, total) => progress?.(`${precision} tensors`, done, total));
  } catch (e) {
    writer.close();
    throw e;
  }
  return writer;
}

export async function convert(opts: ConvertOptions): Promise<ConvertSummary> {
  if (/^https?:\/\//.test(opts.input)) {
    const dir = mkdtempSync(join(tmpdir(), 'npuserve-download-'));
    try {
      const path = await downloadGguf(opts.input, dir, { ...opts.download, onProgress: opts.onProgress });
      return await convert({ ...opts, input: path });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (!(opts.optimizeLevel === 0 || opts.optimizeLevel === 1 || opts.optimizeLevel === 2)) throw new UsageError(`--optimize-level must be 0, 1 or 2, got ${opts.optimizeLevel}`);
  if (opts.minCosine !== undefined && !(opts.minCosine >= -1 && opts.minCosine <= 1)) throw new UsageError(`--min-cosine must be between -1 and 1, got ${opts.minCosine}`);
  const t0 = performance.now();
  const tmp = `${opts.output}.tmp-${process.pid}`;
  const refTmp = `${opts.output}.fp32-reference.tmp-${process.pid}`;
  const ck = openCheckpoint(opts.input, opts.format ?? 'auto');
  try {
    checkTokenizerFits(ck);
    await checkChatTemplate(ck);
    opts.onProgress?.('hashing source', 0, 1);
    const digest = digestFiles(ck.files);
    const writer = writeModel(ck, tmp, opts.precision, opts.optimizeLevel, digest, opts.onProgress);
    const t1 = performance.now();
    let accuracy: AccuracyReport | null = null;
    try {
      if (opts.accuracyGate !== false) {
        const needsReference = !(opts.precision === 'FP32' && opts.optimizeLevel === 0);
        if (needsReference) writeModel(ck, refTmp, 'FP32', 0, digest, opts.onProgress).close();
        opts.onProgress?.('accuracy', 0, 1);
        accuracy = await measureAccuracy(tmp, needsReference ? refTmp : tmp);
        writer.updateMetadata({ accuracy });
      }
    } finally {
      writer.close();
    }
    const failure = accuracy && gateFailure(accuracy, opts.minCosine);
    if (failure) throw new AccuracyGateError(accuracy!, opts.minCosine, failure);
    renameSync(tmp, opts.output);
    const t2 = performance.now();
    return {
      output: opts.output,
      precision: opts.precision,
      optimizeLevel: opts.optimizeLevel,
      sourceFormat: ck.format,
      sourceBytes: digest.bytes,
      outputBytes: statSync(opts.output).size,
      model: modelFootprint(ck.config, statSync(opts.output).size),
      seconds: { convert: (t1 - t0) / 1000, accuracy: (t2 - t1) / 1000, total: (t2 - t0) / 1000 },
      accuracy,
    };
  } finally {
    ck.source.close();
    rmSync(tmp, { force: true });
    rmSync(refTmp, { force: true });
  }
}
