// A GGUF seen as a Hugging Face checkpoint: HF tensor names and row order, and the ModelConfig read
// from the architecture's metadata keys. Anything that would change the math and the engine does
// not implement is refused with the key or tensor that carries it.
import { FormatError } from '../errors.js';
import { validateConfig, type ModelConfig } from '../model-config.js';
import { describeValue, GgufFile } from './gguf.js';
import type { TensorInfo, TensorSource } from './tensors.js';

/** Per-layer tensors: GGUF name inside `blk.N.`, HF name inside `model.layers.N.`. */
const LAYER_TENSORS: ReadonlyArray<readonly [string, string]> = [
  ['attn_norm', 'input_layernorm'],
  ['attn_q', 'self_attn.q_proj'],
  ['attn_k', 'self_attn.k_proj'],
  ['attn_v', 'self_attn.v_proj'],
  ['attn_output', 'self_attn.o_proj'],
  ['ffn_norm', 'post_attention_layernorm'],
  ['ffn_gate', 'mlp.gate_proj'],
  ['ffn_up', 'mlp.up_proj'],
  ['ffn_down', 'mlp.down_proj'],
];

/** Every tensor of a llama checkpoint in file order: HF name, GGUF name, HF shape. */
export function llamaTensors(c: ModelConfig): Array<{ hf: string; gguf: string; shape: number[] }> {
  const [D, I, V, Q, KV] = [c.hiddenSize, c.intermediateSize, c.vocabSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const layerShapes: Record<string, number[]> = {
    attn_norm: [D], attn_q: [Q, D], attn_k: [KV, D], attn_v: [KV, D], attn_output: [D, Q],
    ffn_norm: [D], ffn_gate: [I, D], ffn_up: [I, D], ffn_down: [D, I],
  };
  const list = [{ hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight', shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    for (const [g, hf] of LAYER_TENSORS) list.push({ hf: `model.layers.${l}.${hf}.weight`, gguf: `blk.${l}.${g}.weight`, shape: layerShapes[g] });
  }
  list.push({ hf: 'model.norm.weight', gguf: 'output_norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) list.push({ hf: 'lm_head.weight', gguf: 'output.weight', shape: [V, D] });
  return list;
}

/** Heads whose rows llama.cpp's converter interleaves: q_proj by query heads, k_proj by KV heads. */
export function permutedHeads(hfName: string, c: ModelConfig): number {
  if (hfName.endsWith('.self_attn.q_proj.weight')) return c.numHeads;
  if (hfName.endsWith('.self_attn.k_proj.weight')) return c.numKvHeads;
  return 0;
}

/**
 * The GGUF row holding HF row `r` of a Q or K weight. convert_hf_to_gguf.py reorders each head's
 * rows from RoPE's rotate-half pairing (i, i + headDim/2) to ggml's adjacent pairing (2i, 2i + 1):
 * HF row s * headDim/2 + i of a head is GGUF row 2i + s.
 */
function ggufRowOf(r: number, rowsPerHead: number): number {
  const half = rowsPerHead / 2;
  const within = r % rowsPerHead;
  return r - within + 2 * (within % half) + Math.floor(within / half);
}

/** Moves whole rows of a [rows, cols] Q or K weight between HF order and GGUF order. */
export function reorderRows(src: Float32Array, shape: readonly number[], heads: number, toGguf: boolean): Float32Array {
  const [rows, cols] = shape;
  const rowsPerHead = rows / heads;
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    const g = ggufRowOf(r, rowsPerHead);
    const [from, to] = toGguf ? [r, g] : [g, r];
    out.set(src.subarray(from * cols, (from + 1) * cols), to * cols);
  }
  return out;
}

export interface GgufVocab {
  tokens: string[];
  scores: number[];
  /** SentencePiece token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
  tokenTypes: number[];
  unknownTokenId?: number;
}

function metaFail(f: GgufFile, detail: string): never {
  throw new FormatError(f.path, detail);
}

/** An integer metadata value (any GGUF integer type) of at least `min`, or `fallback` when absent. */
function metaInt(f: GgufFile, key: string, min: number, fallback?: number): number {
  const v = f.metadata.get(key) ?? fallback;
  if (v === undefined) metaFail(f, `missing metadata key '${key}'`);
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) metaFail(f, `'${key}' must be an integer >= ${min}, got ${describeValue(v)}`);
  return n;
}

/** A positive finite metadata number, or `fallback` when absent. */
function metaFloat(f: GgufFile, key: string, fallback?: number): number {
  const v = f.metadata.get(key) ?? fallback;
  if (v === undefined) metaFail(f, `missing metadata key '${key}'`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) metaFail(f, `'${key}' must be a positive number, got ${describeValue(v)}`);
  return shortestFloat32(v);
}

/**
 * GGUF stores hyperparameters as float32; report the shortest decimal that is the same float32
 * (1e-5 rather than 9.99999974e-6), which is the value the Hugging Face config carried.
 */
function shortestFloat32(v: number): number {
  if (Math.fround(v) !== v) return v;
  for (let digits = 1; digits < 9; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/** The architecture of a llama GGUF, from its `llama.*` and tokenizer keys. */
function llamaConfig(f: GgufFile): ModelConfig {
  const arch = f.metadata.get('general.architecture');
  if (arch !== 'llama')
    metaFail(f, `general.architecture ${describeValue(arch)} is not supported (expected "llama"; Mistral models are stored as llama)`);
  const scaling = f.metadata.get('llama.rope.scaling.type');
  if (scaling !== undefined && scaling !== 'none') metaFail(f, `RoPE scaling ${describeValue(scaling)} is not supported`);
  const hiddenSize = metaInt(f, 'llama.embedding_length', 1);
  const numHeads = metaInt(f, 'llama.attention.head_count', 1);
  if (!f.metadata.has('llama.attention.key_length') && hiddenSize % numHeads !== 0)
    metaFail(f, `'llama.embedding_length' ${hiddenSize} is not a multiple of 'llama.attention.head_count' ${numHeads} and 'llama.attention.key_length' is missing`);
  const headDim = metaInt(f, 'llama.attention.key_length', 1, hiddenSize / numHeads);
  for (const key of ['llama.attention.value_length', 'llama.rope.dimension_count']) {
    if (f.metadata.has(key) && metaInt(f, key, 1) !== headDim)
      metaFail(f, `'${key}' ${describeValue(f.metadata.get(key))} differs from the head size ${headDim}; only full-width heads and RoPE are supported`);
  }
  const tokens = f.metadata.get('tokenizer.ggml.tokens');
  const vocabFallback = Array.isArray(tokens) ? tokens.length : f.tensors.get('token_embd.weight')?.shape[0];
  return validateConfig(f.path, {
    architecture: 'llama',
    hiddenSize,
    numLayers: metaInt(f, 'llama.block_count', 1),
    numHeads,
    numKvHeads: metaInt(f, 'llama.attention.head_count_kv', 1, numHeads),
    headDim,
    intermediateSize: metaInt(f, 'llama.feed_forward_length', 1),
    vocabSize: metaInt(f, 'llama.vocab_size', 1, vocabFallback),
    ropeTheta: metaFloat(f, 'llama.rope.freq_base', 10000),
    rmsNormEps: metaFloat(f, 'llama.attention.layer_norm_rms_epsilon'),
    slidingWindow: null,
    tieWordEmbeddings: !f.tensors.has('output.weight'),
    attentionBias: false,
    ropeScaling: null,
    maxPositionEmbeddings: metaInt(f, 'llama.context_length', 1),
    bosTokenId: metaInt(f, 'tokenizer.ggml.bos_token_id', 0, 1),
    eosTokenId: metaInt(f, 'tokenizer.ggml.eos_token_id', 0, 2),
  });
}

/** A per-token number array; llama.cpp's defaults (score 0, type normal) when the key is absent. */
function perTokenNumbers(f: GgufFile, key: string, length: number, fallback: number): number[] {
  const v = f.metadata.get(key);
  if (v === undefined) return new Array<number>(length).fill(fallback);
  if (!Array.isArray(v) || v.length !== length || !v.every((x) => typeof x === 'number'))
    metaFail(f, `'${key}' must be an array of ${length} numbers (one per token), got ${describeValue(v)}`);
  return v as number[];
}

function readVocab(f: GgufFile, vocabSize: number): GgufVocab | null {
  const tokens = f.metadata.get('tokenizer.ggml.tokens');
  if (tokens === undefined) return null;
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === 'string'))
    metaFail(f, `'tokenizer.ggml.tokens' must be an array of strings, got ${describeValue(tokens)}`);
  if (tokens.length !== vocabSize) metaFail(f, `'tokenizer.ggml.tokens' has ${tokens.length} tokens, the model's vocabulary has ${vocabSize}`);
  const vocab: GgufVocab = {
    tokens: tokens as string[],
    scores: perTokenNumbers(f, 'tokenizer.ggml.scores', vocabSize, 0),
    tokenTypes: perTokenNumbers(f, 'tokenizer.ggml.token_type', vocabSize, 1),
  };
  if (f.metadata.has('tokenizer.ggml.unknown_token_id')) {
    vocab.unknownTokenId = metaInt(f, 'tokenizer.ggml.unknown_token_id', 0);
    if (vocab.unknownTokenId >= vocabSize) metaFail(f, `'tokenizer.ggml.unknown_token_id' ${vocab.unknownTokenId} is outside the vocabulary of ${vocabSize}`);
  }
  return vocab;
}

export function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/**
 * A llama-architecture GGUF seen as a Hugging Face checkpoint: HF tensor names, HF row order for
 * q_proj/k_proj (undoing the converter's interleave), and the config from the `llama.*` keys.
 */
export class GgufCheckpoint implements TensorSource {
  readonly file: GgufFile;
  readonly config: ModelConfig;
  /** Keyed by Hugging Face name; dtypes are those stored in the file. */
  readonly tensors = new Map<string, TensorInfo>();
  readonly vocab: GgufVocab | null;
  readonly chatTemplate: string | null;
  private readonly ggufNames = new Map<string, string>();

  constructor(readonly path: string) {
    this.file = new GgufFile(path);
    try {
      this.config = llamaConfig(this.file);
      this.vocab = readVocab(this.file, this.config.vocabSize);
      const template = this.file.metadata.get('tokenizer.chat_template');
      if (template !== undefined && typeof template !== 'string') metaFail(this.file, `'tokenizer.chat_template' must be a string, got ${describeValue(template)}`);
      this.chatTemplate = template ?? null;
      this.mapTensors();
    } catch (e) {
      this.file.close();
      throw e;
    }
  }

  private mapTensors(): void {
    const c = this.config;
    // Each layer has several tensors: a larger layer count is wrong, and must not size the list below.
    if (c.numLayers > this.file.tensors.size)
      metaFail(this.file, `'llama.block_count' is ${c.numLayers}, but the file has only ${this.file.tensors.size} tensors`);
    const expected = llamaTensors(c);
    const byGguf = new Map(expected.map((e) => [e.gguf, e]));
    for (const t of this.file.tensors.values()) {
      const e = byGguf.get(t.name);
      if (!e) metaFail(this.file, `tensor '${t.name}' is not part of a ${c.numLayers}-layer llama checkpoint`);
      if (!sameShape(t.shape, e.shape)) metaFail(this.file, `tensor '${t.name}' has shape [${t.shape.join(', ')}], the config needs [${e.shape.join(', ')}]`);
    }
    for (const e of expected) {
      const t = this.file.tensors.get(e.gguf);
      if (!t) metaFail(this.file, `tensor '${e.gguf}' (${e.hf}) is missing`);
      this.tensors.set(e.hf, { name: e.hf, dtype: t.dtype, shape: e.shape });
      this.ggufNames.set(e.hf, e.gguf);
    }
  }

  readF32(name: string): Float32Array {
    const gguf = this.ggufNames.get(name);
    if (!gguf) throw new FormatError(this.path, `no tensor named '${name}'`);
    const data = this.file.readF32(gguf);
    const heads = permutedHeads(name, this.config);
    return heads ? reorderRows(data, this.tensors.get(name)!.shape, heads, false) : data;
  }

  close(): void {
    this.file.close();
  }
}
