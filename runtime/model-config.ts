// The architecture configuration of a Mistral/Llama-family decoder, normalised from Hugging Face
// config.json or GGUF metadata, and validated once so everything downstream can trust it.
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
  /** q/k/v projections carry biases (qwen2; llama with attention_bias). */
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

/** Checks the relations between fields (head counts, head_dim parity, token ids). */
export function validateConfig(file: string, c: ModelConfig): ModelConfig {
  if (c.numHeads % c.numKvHeads !== 0)
    throw new FormatError(file, `num_attention_heads ${c.numHeads} is not a multiple of num_key_value_heads ${c.numKvHeads}`);
  if (c.headDim % 2 !== 0) throw new FormatError(file, `head_dim ${c.headDim} must be even for RoPE`);
  for (const [key, id] of [['bos_token_id', c.bosTokenId], ['eos_token_id', c.eosTokenId]] as const) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= c.vocabSize) throw new FormatError(file, `'${key}' ${id} is outside the vocabulary of ${c.vocabSize}`);
  }
  if (c.slidingWindow !== null) positiveInt(file, 'sliding_window', c.slidingWindow);
  return c;
}

/** Reads a Hugging Face config.json object (MistralForCausalLM / LlamaForCausalLM). */
export function fromHfConfig(file: string, json: unknown): ModelConfig {
  if (typeof json !== 'object' || json === null) throw new FormatError(file, 'must be a JSON object');
  const j = json as Record<string, unknown>;
  const modelType = j.model_type;
  if (modelType !== 'mistral' && modelType !== 'llama')
    throw new FormatError(file, `model_type ${JSON.stringify(modelType)} is not supported (expected mistral or llama)`);
  const hiddenSize = positiveInt(file, 'hidden_size', j.hidden_size);
  const numHeads = positiveInt(file, 'num_attention_heads', j.num_attention_heads);
  const eos = Array.isArray(j.eos_token_id) ? j.eos_token_id[0] : j.eos_token_id;
  return validateConfig(file, {
    architecture: modelType,
    hiddenSize,
    numLayers: positiveInt(file, 'num_hidden_layers', j.num_hidden_layers),
    numHeads,
    numKvHeads: j.num_key_value_heads == null ? numHeads : positiveInt(file, 'num_key_value_heads', j.num_key_value_heads),
    headDim: j.head_dim == null ? hiddenSize / numHeads : positiveInt(file, 'head_dim', j.head_dim),
    intermediateSize: positiveInt(file, 'intermediate_size', j.intermediate_size),
    vocabSize: positiveInt(file, 'vocab_size', j.vocab_size),
    ropeTheta: j.rope_theta == null ? 10000 : positiveNumber(file, 'rope_theta', j.rope_theta),
    rmsNormEps: j.rms_norm_eps == null ? 1e-6 : positiveNumber(file, 'rms_norm_eps', j.rms_norm_eps),
    slidingWindow: j.sliding_window == null ? null : positiveInt(file, 'sliding_window', j.sliding_window),
    tieWordEmbeddings: j.tie_word_embeddings === true,
    attentionBias: false,
    ropeScaling: null,
    maxPositionEmbeddings: j.max_position_embeddings == null ? 32768 : positiveInt(file, 'max_position_embeddings', j.max_position_embeddings),
    bosTokenId: j.bos_token_id == null ? 1 : (j.bos_token_id as number),
    eosTokenId: eos == null ? 2 : (eos as number),
  });
}

/** The config.json a Hugging Face checkpoint of this configuration carries. */
export function toHfConfig(c: ModelConfig): Record<string, unknown> {
  return {
    architectures: [c.architecture === 'mistral' ? 'MistralForCausalLM' : 'LlamaForCausalLM'],
    model_type: c.architecture,
    hidden_size: c.hiddenSize,
    num_hidden_layers: c.numLayers,
    num_attention_heads: c.numHeads,
    num_key_value_heads: c.numKvHeads,
    head_dim: c.headDim,
    intermediate_size: c.intermediateSize,
    vocab_size: c.vocabSize,
    rope_theta: c.ropeTheta,
    rms_norm_eps: c.rmsNormEps,
    sliding_window: c.slidingWindow,
    tie_word_embeddings: c.tieWordEmbeddings,
    max_position_embeddings: c.maxPositionEmbeddings,
    bos_token_id: c.bosTokenId,
    eos_token_id: c.eosTokenId,
    hidden_act: 'silu',
    torch_dtype: 'float32',
  };
}
