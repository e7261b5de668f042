// A GGUF seen as a Hugging Face checkpoint: HF tensor names and row order, and the ModelConfig read
// from the architecture's metadata keys. Anything that would change the math and the engine does
// not implement is refused with the key or tensor that carries it.
import { FormatError } from '../errors.js';
import { validateConfig, type ModelConfig, type RopeScaling } from '../model-config.js';
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

/** Every weight of a checkpoint in file order: HF name, GGUF name, HF shape (biases with attentionBias). */
export function ggufTensors(c: ModelConfig): Array<{ hf: string; gguf: string; shape: number[] }> {
  const [D, I, V, Q, KV] = [c.hiddenSize, c.intermediateSize, c.vocabSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const layerShapes: Record<string, number[]> = {
    attn_norm: [D], attn_q: [Q, D], attn_k: [KV, D], attn_v: [KV, D], attn_output: [D, Q],
    ffn_norm: [D], ffn_gate: [I, D], ffn_up: [I, D], ffn_down: [D, I],
  };
  const list = [{ hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight', shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    for (const [g, hf] of LAYER_TENSORS) {
      list.push({ hf: `model.layers.${l}.${hf}.weight`, gguf: `blk.${l}.${g}.weight`, shape: layerShapes[g] });
      if (c.attentionBias && (g === 'attn_q' || g === 'attn_k' || g === 'attn_v'))
        list.push({ hf: `model.layers.${l}.${hf}.bias`, gguf: `blk.${l}.${g}.bias`, shape: [layerShapes[g][0]] });
    }
  }
  list.push({ hf: 'model.norm.weight', gguf: 'output_norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) list.push({ hf: 'lm_head.weight', gguf: 'output.weight', shape: [V, D] });
  return list;
}

/**
 * Heads whose rows llama.cpp's converter interleaves: q_proj (weight and bias) by query heads,
 * k_proj by KV heads. Only the llama architecture is permuted; qwen2 keeps HF's rotate-half order
 * (llama.cpp runs it with NEOX-style RoPE).
 */
export function permutedHeads(hfName: string, c: ModelConfig): number {
  if (c.architecture === 'qwen2') return 0;
  if (/\.self_attn\.q_proj\.(weight|bias)$/.test(hfName)) return c.numHeads;
  if (/\.self_attn\.k_proj\.(weight|bias)$/.test(hfName)) return c.numKvHeads;
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

/** Moves whole rows of a [rows, cols] Q or K weight (or [rows] bias) between HF order and GGUF order. */
export function reorderRows(src: Float32Array, shape: readonly number[], heads: number, toGguf: boolean): Float32Array {
  const [rows, cols = 1] = shape;
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

const ARCHITECTURES = ['llama', 'qwen2'] as const;
type GgufArchitecture = (typeof ARCHITECTURES)[number];

/**
 * `{arch}.*` keys that change the math in ways the engine does not implement, each with the value
 * that leaves the math unchanged (null: refused whatever the value).
 */
const UNSUPPORTED_KEYS: ReadonlyArray<[suffix: string, what: string, neutral: number | null]> = [
  ['expert_count', 'mixture of experts', 0],
  ['attention.sliding_window', 'sliding-window attention', 0],
  ['attn_logit_softcapping', 'attention logit soft-capping', 0],
  ['final_logit_softcapping', 'final logit soft-capping', 0],
  ['attention.clamp_kqv', 'clamping of Q/K/V', 0],
  ['attention.scale', 'a custom attention scale', null],
  ['logit_scale', 'logit scaling', 1],
  ['residual_scale', 'residual scaling', 1],
  ['embedding_scale', 'embedding scaling', 1],
];

function refuseUnsupportedKeys(f: GgufFile, arch: GgufArchitecture): void {
  for (const [suffix, what, neutral] of UNSUPPORTED_KEYS) {
    const key = `${arch}.${suffix}`;
    const v = f.metadata.get(key);
    if (v === undefined) continue;
    const n = typeof v === 'bigint' ? Number(v) : v;
    if (neutral === null || n !== neutral) metaFail(f, `'${key}' is ${describeValue(v)}: ${what} is not supported`);
  }
}

/**
 * RoPE scaling from `{arch}.rope.scaling.*` (linear or none) or the per-pair frequency factors of a
 * `rope_freqs.weight` tensor (Llama 3.1 and later); any other scaling type is refused.
 */
function readRopeScaling(f: GgufFile, arch: GgufArchitecture, headDim: number): RopeScaling | null {
  const typeKey = `${arch}.rope.scaling.type`;
  const type = f.metadata.get(typeKey);
  let scaling: RopeScaling | null = null;
  if (type === 'linear') scaling = { type: 'linear', factor: metaFloat(f, `${arch}.rope.scaling.factor`) };
  else if (type !== undefined && type !== 'none')
    metaFail(f, `'${typeKey}' is ${describeValue(type)}: only "linear" and "none" RoPE scaling are supported`);
  const freqs = f.tensors.get('rope_freqs.weight');
  if (!freqs) return scaling;
  if (scaling) metaFail(f, `tensor 'rope_freqs.weight' and '${typeKey}' ${describeValue(type)} both scale RoPE; expected one of them`);
  if (!sameShape(freqs.shape, [headDim / 2])) metaFail(f, `tensor 'rope_freqs.weight' has shape [${freqs.shape.join(', ')}], expected [${headDim / 2}] (one factor per rotation pair)`);
  const factors = Array.from(f.readF32('rope_freqs.weight'));
  const bad = factors.findIndex((x) => !Number.isFinite(x) || x <= 0);
  if (bad >= 0) metaFail(f, `tensor 'rope_freqs.weight': factor ${bad} is ${factors[bad]}, expected a positive number`);
  return { type: 'freq-factors', factors };
}

/** The model configuration of a llama or qwen2 GGUF, from its `{arch}.*` and tokenizer keys. */
function ggufConfig(f: GgufFile): ModelConfig {
  const archValue = f.metadata.get('general.architecture');
  const arch = ARCHITECTURES.find((a) => a === archValue);
  if (!arch)
    metaFail(f, `general.architecture ${describeValue(archValue)} is not supported (expected "llama" or "qwen2"; Mistral models are stored as llama)`);
  refuseUnsupportedKeys(f, arch);
  const k = (suffix: string) => `${arch}.${suffix}`;
  const hiddenSize = metaInt(f, k('embedding_length'), 1);
  const numHeads = metaInt(f, k('attention.head_count'), 1);
  if (!f.metadata.has(k('attention.key_length')) && hiddenSize % numHeads !== 0)
    metaFail(f, `'${k('embedding_length')}' ${hiddenSize} is not a multiple of '${k('attention.head_count')}' ${numHeads} and '${k('attention.key_length')}' is missing`);
  const headDim = metaInt(f, k('attention.key_length'), 1, hiddenSize / numHeads);
  for (const key of [k('attention.value_length'), k('rope.dimension_count')]) {
    if (f.metadata.has(key) && metaInt(f, key, 1) !== headDim)
      metaFail(f, `'${key}' ${describeValue(f.metadata.get(key))} differs from the head size ${headDim}; only full-width heads and RoPE are supported`);
  }
  const tokens = f.metadata.get('tokenizer.ggml.tokens');
  const vocabFallback = Array.isArray(tokens) ? tokens.length : f.tensors.get('token_embd.weight')?.shape[0];
  return validateConfig(f.path, {
    architecture: arch,
    hiddenSize,
    numLayers: metaInt(f, k('block_count'), 1),
    numHeads,
    numKvHeads: metaInt(f, k('attention.head_count_kv'), 1, numHeads),
    headDim,
    intermediateSize: metaInt(f, k('feed_forward_length'), 1),
    vocabSize: metaInt(f, k('vocab_size'), 1, vocabFallback),
    ropeTheta: metaFloat(f, k('rope.freq_base'), 10000),
    rmsNormEps: metaFloat(f, k('attention.layer_norm_rms_epsilon')),
    slidingWindow: null,
    tieWordEmbeddings: !f.tensors.has('output.weight'),
    // qwen2 always has q/k/v biases; llama.cpp's llama architecture takes them when present
    attentionBias: arch === 'qwen2' || f.tensors.has('blk.0.attn_q.bias'),
    ropeScaling: readRopeScaling(f, arch, headDim),
    maxPositionEmbeddings: metaInt(f, k('context_length'), 1),
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
 * A llama or qwen2 GGUF seen as a Hugging Face checkpoint: HF tensor names, HF row order for a
 * llama file's q_proj/k_proj (undoing the converter's interleave), and the config from the
 * `{arch}.*` keys. `file.metadata` keeps every key, the tokenizer's included.
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
      this.config = ggufConfig(this.file);
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
      metaFail(this.file, `'${c.architecture}.block_count' is ${c.numLayers}, but the file has only ${this.file.tensors.size} tensors`);
    const expected = ggufTensors(c);
    const byGguf = new Map(expected.map((e) => [e.gguf, e]));
    for (const t of this.file.tensors.values()) {
      if (t.name === 'rope_freqs.weight') continue; // read into config.ropeScaling
      const e = byGguf.get(t.name);
      if (!e) metaFail(this.file, `tensor '${t.name}' is not part of a ${c.numLayers}-layer ${c.architecture} checkpoint${c.attentionBias ? ' with attention biases' : ''}`);
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
