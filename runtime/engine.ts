// Typed wrapper over the native addon: loads a .npu file (header, metadata and tokenizer checked
// here; every tensor checked natively against the config before the KV cache is sized against the
// memory budget) and runs batched steps off the JS thread.
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { availableMemoryBytes } from './cgroup.js';
import { FormatError } from './errors.js';
import { readNpuFile, type NpuMetadata } from './format.js';
import { hasOutputProjectionBias, ropeInverseFrequencies, type ModelConfig } from './model-config.js';
import { tokenizerVocabSize } from './tokenizer.js';

export type LogitsMode = 'none' | 'last' | 'all';

export interface StepEntry {
  sequence: number;
  tokens: readonly number[] | Int32Array;
  /** Which rows' logits to return (default none). */
  logits?: LogitsMode;
  /** Sample the next token from the last row (default true). */
  sample?: boolean;
  temperature?: number;
  topP?: number;
}

export interface StepResult {
  sequence: number;
  /** The sampled token, or -1 when sampling was not asked for. */
  token: number;
  /** (rows x vocab) when logits were asked for. */
  logits?: Float32Array;
}

export interface EngineInfo {
  kernel: string;
  threads: number;
  weightBytes: number;
  kvCacheBytes: number;
  kvCacheDtype: 'f32' | 'f16';
  int8Activations: Int8Activations;
  kvBlockTokens: number;
  kvBlocksTotal: number;
  /** Blocks nobody uses plus cached blocks nobody uses (those are evicted when space is needed). */
  kvBlocksFree: number;
  /** Full blocks registered in the prefix cache, in use or not. */
  kvBlocksCached: number;
  maxSeqLen: number;
  prefixCaching: boolean;
}

export interface EngineOptions {
  threads?: number;
  maxSeqLen?: number;
  /** Tokens the paged KV cache holds across all sequences. */
  kvCacheTokens?: number;
  /** Tokens per KV block (default 16): the unit of paging and of prefix caching. */
  kvBlockTokens?: number;
  /** Force a kernel set (scalar | avx2 | avxvnni | avx512vnni); default: the best this CPU supports. */
  kernel?: string;
  /** KV cache element type (default f32; `serve` defaults to f16); f16 halves its memory and the bytes attention reads. */
  kvCacheDtype?: 'f32' | 'f16';
  /**
   * Activations of INT8 weights (default int16, W8A16): quantized to int16 per group of 32, about 15
   * bits per value; int8 (W8A8) has a faster prefill but flips near-tied logits of real models.
   */
  int8Activations?: Int8Activations;
  /**
   * What the KV cache and RoPE tables may take, checked before they are allocated (the weights,
   * held in memory once, come on top). Default: defaultMemoryBudgetBytes().
   */
  memoryBudgetBytes?: number;
  /**
   * Automatic prefix caching (default off; `serve` turns it on): full KV blocks stay cached, keyed by
   * a hash chain of their tokens seeded with the model file's identity, and a sequence created with
   * its prompt starts after the longest cached run of the prompt's full blocks.
   */
  prefixCaching?: boolean;
}

/** Half of availableMemoryBytes(): the other half is left to the weights, the heap and the OS. */
export function defaultMemoryBudgetBytes(): number {
  return Math.floor(availableMemoryBytes() / 2);
}

export type Int8Activations = 'int8' | 'int16';

interface NativeEngine {
  createSequence(seed?: number | bigint, promptTokens?: readonly number[] | Int32Array): number;
  releaseSequence(id: number): void;
  sequenceLength(id: number): number;
  entryProblems(entries: StepEntry[]): Array<string | null>;
  step(entries: StepEntry[]): Promise<StepResult[]>;
  info(): EngineInfo;
}

export interface MachineLimits {
  readBytesPerSecond: number;
  reads: Array<{ pattern: string; bytes: number; bytesPerSecond: number }>;
  /** Register-only chains of each integer dot-product instruction the CPU has. */
  macPeaks: Array<{ instruction: string; activationBits: 8 | 16; macsPerSecond: number }>;
  /** The best of macPeaks at each activation width. */
  int8MacsPerSecond: number;
  int16MacsPerSecond: number;
}

export interface NativeAddon {
  loadModel(path: string, descriptor: unknown, options: EngineOptions & { modelIdentity?: string }): Promise<NativeEngine>;
  packWeight(w: Float32Array, rows: number, cols: number, dtype: string, layout: string): { data: Uint8Array; scales?: Uint16Array };
  gemm(args: Record<string, unknown>): Float32Array;
  /** One kernel set's attention of queries over key/value rows, fed in KV blocks (kernel tests). */
  attention(args: Record<string, unknown>): Float32Array;
  /** One kernel set's element-wise row operation: silu_mul or to_f16 (kernel tests). */
  rowOp(args: Record<string, unknown>): Float32Array | Uint16Array;
  cpuFeatures(): Record<string, unknown> & { selectedKernel: string; availableKernels: string[] };
  /** The machine's read bandwidth (best over access patterns and buffer sizes) and int8 MAC peak. */
  machineLimits(args: { bytes: number; threads: number; repeats: number }): MachineLimits;
}

let addon: NativeAddon | undefined;

/** The compiled addon: NPUSERVE_ADDON, or native/build/npuserve.node of this package. */
export function native(): NativeAddon {
  if (addon) return addon;
  let path = process.env.NPUSERVE_ADDON;
  if (!path) {
    let dir = dirname(fileURLToPath(import.meta.url));
    while (!existsSync(join(dir, 'native', 'build', 'npuserve.node')) && dirname(dir) !== dir) dir = dirname(dir);
    path = join(dir, 'native', 'build', 'npuserve.node');
  }
  if (!existsSync(path)) throw new Error(`native engine not built: ${path} is missing (run npm run build:native)`);
  addon = createRequire(import.meta.url)(resolve(path)) as NativeAddon;
  return addon;
}

/** The architecture as the native engine takes it (descriptor.config of loadModel). */
export function nativeConfig(c: ModelConfig) {
  return {
    dim: c.hiddenSize,
    nLayers: c.numLayers,
    nHeads: c.numHeads,
    nKvHeads: c.numKvHeads,
    headDim: c.headDim,
    hiddenDim: c.intermediateSize,
    vocabSize: c.vocabSize,
    slidingWindow: c.slidingWindow ?? 0,
    normEps: c.rmsNormEps,
    /** head_dim / 2 RoPE inverse frequencies, scaling applied; the engine builds its tables from them. */
    ropeInvFreq: Array.from(ropeInverseFrequencies(c)),
    /** The file must then carry q/k/v biases (layers.N.bqkv, or bq/bk/bv). */
    attentionBias: c.attentionBias,
    /** The file must then carry the output projection's bias (layers.N.bo). */
    attentionOutputBias: hasOutputProjectionBias(c),
  };
}

export class Engine {
  private constructor(
    readonly path: string,
    readonly metadata: NpuMetadata,
    private readonly impl: NativeEngine,
  ) {}

  static async load(path: string, options: EngineOptions = {}): Promise<Engine> {
    const file = readNpuFile(path);
    checkTokenizer(path, file.metadata);
    const descriptor = {
      config: nativeConfig(file.metadata.config),
      tensors: file.metadata.tensors.map((t) => ({ ...t, offset: file.header.dataOffset + t.offset })),
    };
    const impl = await native().loadModel(path, descriptor, {
      ...options,
      memoryBudgetBytes: options.memoryBudgetBytes ?? defaultMemoryBudgetBytes(),
      modelIdentity: modelIdentity(file.metadata),
    });
    return new Engine(path, file.metadata, impl);
  }

  get info(): EngineInfo {
    return this.impl.info();
  }

  /**
   * A new sequence; `seed` drives its sampling RNG. Given the prompt (and with prefix caching on), it
   * starts with the KV of the longest cached run of the prompt's full blocks, always leaving at least
   * the last prompt token to feed: sequenceLength() is then the number of prompt tokens to skip.
   */
  createSequence(seed = 0, promptTokens?: readonly number[] | Int32Array): number {
    return this.impl.createSequence(seed, promptTokens);
  }

  /** Frees the sequence's KV blocks (after the running step, if one is running). */
  releaseSequence(id: number): void {
    this.impl.releaseSequence(id);
  }

  sequenceLength(id: number): number {
    return this.impl.sequenceLength(id);
  }

  /**
   * Per entry, what is wrong with it alone (unknown or released sequence, no tokens, a token outside
   * the vocabulary, longer than maxSeqLen), or null: a caller can drop the offenders and step the rest.
   */
  entryProblems(entries: StepEntry[]): Array<string | null> {
    return this.impl.entryProblems(entries);
  }

  /** One batched forward pass. Steps must be awaited one at a time. */
  step(entries: StepEntry[]): Promise<StepResult[]> {
    return this.impl.step(entries);
  }
}

/**
 * What the prefix cache's hash chains are seeded with: a digest of the file's metadata, which holds
 * the source digest, precision, converter version and tensor table, so KV computed by another model
 * or revision can never be taken for this one's (and hashes could be compared across replicas).
 */
function modelIdentity(m: NpuMetadata): string {
  return createHash('sha256').update(JSON.stringify(m)).digest('hex');
}

/** Every id the tokenizer can produce, and every special id it names, must be a row of the model's vocabulary. */
function checkTokenizer(path: string, m: NpuMetadata): void {
  const vocab = m.config.vocabSize;
  let tokens: number;
  try {
    tokens = tokenizerVocabSize(m.tokenizer);
  } catch (e) {
    throw new FormatError(path, `the tokenizer's tokenizer.json cannot be read: ${(e as Error).message}`);
  }
  if (tokens > vocab) throw new FormatError(path, `the tokenizer has ${tokens} tokens (ids 0..${tokens - 1}); the model's vocabulary has only ${vocab}`);
  const endIds: unknown = m.tokenizer.endOfGenerationIds;
  if (!Array.isArray(endIds)) throw new FormatError(path, `the tokenizer's endOfGenerationIds must be an array of token ids, got ${JSON.stringify(endIds)}`);
  const special: Array<[string, unknown]> = [
    ['bosId', m.tokenizer.bosId],
    ['eosId', m.tokenizer.eosId],
    ...endIds.map((id): [string, unknown] => ['endOfGenerationIds', id]),
  ];
  for (const [key, id] of special)
    if (id !== null && (!Number.isSafeInteger(id) || (id as number) < 0 || (id as number) >= vocab))
      throw new FormatError(path, `the tokenizer's ${key} ${JSON.stringify(id)} is outside the model's vocabulary [0, ${vocab})`);
}
