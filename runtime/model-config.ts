// The architecture configuration of a Mistral/Llama-family decoder, normalised from Hugging Face
// config.json or GGUF metadata, and validated once so everything downstream can trust it.
import type { ModelFootprint } from '../common/serving-memory.js';
import { FormatError } from './errors.js';

/** RoPE frequency scaling (HF `rope_scaling`); GGUF's `rope_freqs.weight` gives per-pair factors. */
export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number }
  /** inv_freq[i] / factors[i] for each of the head_dim / 2 rotation pairs (llama.cpp's rope_freqs). */
  | { type: 'freq-factors'; factors: number[] };

export interface ModelConfig {
  architecture: 'mistral' | 'llama' | 'qwen2';
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  vocabSize: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** Tokens a position attends to (itself included); null for full attention. */
  slidingWindow: number | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (qwen2; llama with attention_bias, which adds o_proj's too). */
  attentionBias: boolean;
  ropeScaling: RopeScaling | null;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenId: number;
}

function positiveInt(file: string, key: string, v: unknown): number {
  if (!Number.isSafeInteger(v) || (v as number) <= 0) throw new FormatError(file, `'${key}' must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

function positiveNumber(file: string, key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new FormatError(file, `'${key}' must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

/** Checks the relations between fields (head counts, head_dim parity, token ids, RoPE scaling). */
export function validateConfig(file: string, c: ModelConfig): ModelConfig {
  if (c.numHeads % c.numKvHeads !== 0)
    throw new FormatError(file, `num_attention_heads ${c.numHeads} is not a multiple of num_key_value_heads ${c.numKvHeads}`);
  if (c.headDim % 2 !== 0) throw new FormatError(file, `head_dim ${c.headDim} must be even for RoPE`);
  for (const [key, id] of [['bos_token_id', c.bosTokenId], ['eos_token_id', c.eosTokenId]] as const) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= c.vocabSize) throw new FormatError(file, `'${key}' ${id} is outside the vocabulary of ${c.vocabSize}`);
  }
  if (c.slidingWindow !== null) positiveInt(file, 'sliding_window', c.slidingWindow);
  const s = c.ropeScaling;
  if (s?.type === 'linear' || s?.type === 'llama3') positiveNumber(file, 'rope_scaling.factor', s.factor);
  if (s?.type === 'llama3' && !(s.highFreqFactor > s.lowFreqFactor && s.lowFreqFactor > 0 && s.originalMaxPositionEmbeddings > 0))
    throw new FormatError(file, `llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got ${JSON.stringify(s)}`);
  if (s?.type === 'freq-factors' && (s.factors.length !== c.headDim / 2 || !s.factors.every((f) => Number.isFinite(f) && f > 0)))
    throw new FormatError(file, `RoPE frequency factors must be ${c.headDim / 2} positive numbers (head_dim / 2), got ${s.factors.length}`);
  return c;
}

/**
 * RoPE inverse frequencies, one per rotation pair (head_dim / 2), as Hugging Face computes them:
 * `_compute_default_rope_parameters` (1 / theta^(2i / head_dim)), then the scaling: linear divides
 * every frequency by the factor (positions / factor), llama3 (`_compute_llama3_parameters`) divides
 * the low-frequency band, keeps the high one and interpolates between, freq-factors divides each.
 */
export function ropeInverseFrequencies(c: Pick<ModelConfig, 'headDim' | 'ropeTheta' | 'ropeScaling'>): Float64Array {
  const base = Float64Array.from({ length: c.headDim / 2 }, (_, i) => 1 / c.ropeTheta ** ((2 * i) / c.headDim));
  const s = c.ropeScaling;
  if (!s) return base;
  if (s.type === 'linear') return base.map((f) => f / s.factor);
  if (s.type === 'freq-factors') return base.map((f, i) => f / s.factors[i]);
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return base.map((f) => {
    const wavelen = (2 * Math.PI) / f;
    if (wavelen < highFreqWavelen) return f;
    if (wavelen > lowFreqWavelen) return f / s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return ((1 - smooth) * f) / s.factor + smooth * f;
  });
}

/** HF LlamaAttention's attention_bias covers o_proj as well; Qwen2's biases are on q/k/v only. */
export function hasOutputProjectionBias(c: Pick<ModelConfig, 'architecture' | 'attentionBias'>): boolean {
  return c.attentionBias && c.architecture === 'llama';
}

type Architecture = ModelConfig['architecture'];

/**
 * Every config.json key of the Llama 2/3/3.1/3.2, Mistral 7B v0.1-v0.3, Qwen2/2.5, SmolLM2 and
 * TinyLlama checkpoints. 'read' keys are implemented (fromHfConfig reads and checks their values);
 * 'metadata' keys do not change inference: provenance, training-only settings (dropout, init,
 * pretraining_tp, which only splits HF's matmuls into slices of the same sum), the pad token,
 * qwen2's max_window_layers (only used with use_sliding_window, which is refused). Any other key is
 * refused: nothing in config.json is silently ignored.
 */
const HF_KEYS: Record<string, 'read' | 'metadata'> = {
  model_type: 'read',
  hidden_size: 'read',
  num_hidden_layers: 'read',
  num_attention_heads: 'read',
  num_key_value_heads: 'read',
  head_dim: 'read',
  intermediate_size: 'read',
  vocab_size: 'read',
  rope_theta: 'read',
  rope_scaling: 'read',
  rope_interleaved: 'read',
  rms_norm_eps: 'read',
  sliding_window: 'read',
  use_sliding_window: 'read',
  tie_word_embeddings: 'read',
  attention_bias: 'read',
  mlp_bias: 'read',
  hidden_act: 'read',
  max_position_embeddings: 'read',
  bos_token_id: 'read',
  eos_token_id: 'read',
  _name_or_path: 'metadata',
  architectures: 'metadata',
  torch_dtype: 'metadata',
  dtype: 'metadata',
  transformers_version: 'metadata',
  'transformers.js_config': 'metadata',
  is_llama_config: 'metadata',
  use_cache: 'metadata',
  initializer_range: 'metadata',
  attention_dropout: 'metadata',
  pretraining_tp: 'metadata',
  pad_token_id: 'metadata',
  max_window_layers: 'metadata',
};

const SUPPORTED =
  'npuserve implements model_type llama, mistral and qwen2 with hidden_act silu, rope_scaling default, linear or llama3, ' +
  'q/k/v biases (qwen2, llama attention_bias), no MLP biases, and mistral sliding windows';

function refuse(file: string, key: string, value: unknown, why: string): never {
  throw new FormatError(file, `'${key}' ${JSON.stringify(value)} is not supported: ${why}`);
}

/** HF `rope_scaling` (keyed `rope_type`, or `type` in older configs): default, linear or llama3. */
function readRopeScaling(file: string, v: unknown): RopeScaling | null {
  if (v == null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) refuse(file, 'rope_scaling', v, 'expected null or an object with rope_type');
  const r = v as Record<string, unknown>;
  if (r.rope_type != null && r.type != null && r.rope_type !== r.type)
    throw new FormatError(file, `'rope_scaling' names two types: rope_type ${JSON.stringify(r.rope_type)} and type ${JSON.stringify(r.type)}`);
  const type = r.rope_type ?? r.type;
  const only = (...keys: string[]) => {
    for (const k of Object.keys(r))
      if (![...keys, 'rope_type', 'type'].includes(k)) refuse(file, `rope_scaling.${k}`, r[k], `rope_type ${JSON.stringify(type)} takes only ${keys.join(', ') || 'no parameters'}`);
  };
  const num = (key: string) => positiveNumber(file, `rope_scaling.${key}`, r[key]);
  if (type === 'default') {
    only();
    return null;
  }
  if (type === 'linear') {
    only('factor');
    return { type: 'linear', factor: num('factor') };
  }
  if (type === 'llama3') {
    only('factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings');
    return {
      type: 'llama3',
      factor: num('factor'),
      lowFreqFactor: num('low_freq_factor'),
      highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: positiveInt(file, 'rope_scaling.original_max_position_embeddings', r.original_max_position_embeddings),
    };
  }
  return refuse(file, 'rope_scaling.rope_type', type, 'implemented RoPE scalings are default, linear and llama3');
}

/** The sliding window as HF's class of this architecture applies it (null: full attention). */
function readSlidingWindow(file: string, arch: Architecture, j: Record<string, unknown>): number | null {
  if (arch === 'qwen2') {
    // Qwen2 applies sliding_window only with use_sliding_window, and then only from layer
    // max_window_layers on; npuserve implements full attention for qwen2.
    if (j.use_sliding_window != null && j.use_sliding_window !== false)
      refuse(file, 'use_sliding_window', j.use_sliding_window, "qwen2's per-layer sliding window (max_window_layers) is not implemented; false is");
    return null;
  }
  if (j.use_sliding_window != null) refuse(file, 'use_sliding_window', j.use_sliding_window, `it is a qwen2 setting, model_type is ${arch}`);
  if (arch === 'llama') {
    if (j.sliding_window != null) refuse(file, 'sliding_window', j.sliding_window, 'llama attends to every position; use model_type mistral for a sliding window');
    return null;
  }
  // MistralConfig's default when the key is absent is a window of 4096.
  if (!('sliding_window' in j)) return 4096;
  return j.sliding_window === null ? null : positiveInt(file, 'sliding_window', j.sliding_window);
}

/** q/k/v biases: always in qwen2, with attention_bias in llama, never in mistral. */
function readAttentionBias(file: string, arch: Architecture, v: unknown): boolean {
  const fixed = arch === 'qwen2' ? true : arch === 'mistral' ? false : null;
  if (v == null) return fixed ?? false;
  if (typeof v !== 'boolean') refuse(file, 'attention_bias', v, 'expected true or false');
  if (fixed !== null && v !== fixed) refuse(file, 'attention_bias', v, `${arch} ${fixed ? 'always has' : 'has no'} q/k/v biases`);
  return v;
}

/** Reads a Hugging Face config.json object (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM). */
export function fromHfConfig(file: string, json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new FormatError(file, 'must be a JSON object');
  const j = json as Record<string, unknown>;
  const arch = j.model_type;
  if (arch !== 'mistral' && arch !== 'llama' && arch !== 'qwen2')
    throw new FormatError(file, `'model_type' ${JSON.stringify(arch)} is not supported (expected llama, mistral or qwen2)`);
  for (const key of Object.keys(j))
    if (!(key in HF_KEYS)) throw new FormatError(file, `'${key}' is not a config.json field npuserve knows, so its effect cannot be honoured (${SUPPORTED})`);
  if (j.hidden_act != null && j.hidden_act !== 'silu') refuse(file, 'hidden_act', j.hidden_act, 'the MLP is SwiGLU with silu only');
  if (j.mlp_bias != null && j.mlp_bias !== false) refuse(file, 'mlp_bias', j.mlp_bias, 'MLP projections without biases only');
  if (j.rope_interleaved != null && j.rope_interleaved !== false)
    refuse(file, 'rope_interleaved', j.rope_interleaved, "RoPE rotates dimension i with i + head_dim / 2 (Hugging Face's rotate_half) only");
  const hiddenSize = positiveInt(file, 'hidden_size', j.hidden_size);
  const numHeads = positiveInt(file, 'num_attention_heads', j.num_attention_heads);
  const eos = Array.isArray(j.eos_token_id) ? j.eos_token_id[0] : j.eos_token_id;
  return validateConfig(file, {
    architecture: arch,
    hiddenSize,
    numLayers: positiveInt(file, 'num_hidden_layers', j.num_hidden_layers),
    numHeads,
    numKvHeads: j.num_key_value_heads == null ? numHeads : positiveInt(file, 'num_key_value_heads', j.num_key_value_heads),
    headDim: j.head_dim == null ? hiddenSize / numHeads : positiveInt(file, 'head_dim', j.head_dim),
    intermediateSize: positiveInt(file, 'intermediate_size', j.intermediate_size),
    vocabSize: positiveInt(file, 'vocab_size', j.vocab_size),
    ropeTheta: j.rope_theta == null ? 10000 : positiveNumber(file, 'rope_theta', j.rope_theta),
    rmsNormEps: j.rms_norm_eps == null ? 1e-6 : positiveNumber(file, 'rms_norm_eps', j.rms_norm_eps),
    slidingWindow: readSlidingWindow(file, arch, j),
    tieWordEmbeddings: j.tie_word_embeddings === true,
    attentionBias: readAttentionBias(file, arch, j.attention_bias),
    ropeScaling: readRopeScaling(file, j.rope_scaling),
    maxPositionEmbeddings: j.max_position_embeddings == null ? 32768 : positiveInt(file, 'max_position_embeddings', j.max_position_embeddings),
    bosTokenId: j.bos_token_id == null ? 1 : (j.bos_token_id as number),
    eosTokenId: eos == null ? 2 : (eos as number),
  });
}

function hfRopeScaling(s: RopeScaling | null): Record<string, unknown> | null {
  if (s === null) return null;
  if (s.type === 'linear') return { rope_type: 'linear', factor: s.factor };
  if (s.type === 'llama3')
    return { rope_type: 'llama3', factor: s.factor, low_freq_factor: s.lowFreqFactor, high_freq_factor: s.highFreqFactor, original_max_position_embeddings: s.originalMaxPositionEmbeddings };
  throw new Error('RoPE frequency factors (GGUF rope_freqs) have no config.json form');
}

const HF_CLASS: Record<Architecture, string> = { llama: 'LlamaForCausalLM', mistral: 'MistralForCausalLM', qwen2: 'Qwen2ForCausalLM' };

/** The config.json a Hugging Face checkpoint of this configuration carries. */
export function toHfConfig(c: ModelConfig): Record<string, unknown> {
  const attention =
    c.architecture === 'mistral'
      ? { sliding_window: c.slidingWindow }
      : c.architecture === 'qwen2'
        ? { use_sliding_window: false, sliding_window: null }
        : { attention_bias: c.attentionBias, mlp_bias: false };
  return {
    architectures: [HF_CLASS[c.architecture]],
    model_type: c.architecture,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    intermediate_size: c.intermediateSize,
    vocab_size: c.vocabSize,
    rope_theta: c.ropeTheta,
    rope_scaling: hfRopeScaling(c.ropeScaling),
    rms_norm_eps: c.rmsNormEps,
    ...attention,
    tie_word_embeddings: c.tieWordEmbeddings,
    max_position_embeddings: c.maxPositionEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    hidden_act: 'silu',
    torch_dtype: 'float32',
  };
}

/** What a converted file of this config weighs in a serving process (besides its settings). */
export function modelFootprint(c: ModelConfig, fileBytes: number): ModelFootprint {
  return { fileBytes, layers: c.numLayers, kvHeads: c.numKvHeads, headDim: c.headDim };
}
