// `npuserve make-test-model`: a small Mistral-, Llama- or Qwen2-architecture checkpoint in the
// Hugging Face layout (config.json, model.safetensors, tokenizer.json, tokenizer_config.json) with the
// real Mistral v3 vocabulary (its tokenizer.json built as a GGUF's would be) and deterministic seeded
// weights at realistic scales (optionally q/k/v biases and RoPE scaling), optionally also as GGUF.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { UsageError } from './errors.js';
import { hasOutputProjectionBias, toHfConfig, validateConfig, type ModelConfig, type RopeScaling } from './model-config.js';
import type { GgufVocab } from './convert/gguf-model.js';
import { writeGguf, type GgufWeightDType } from './convert/gguf-writer.js';
import { writeSafetensors, type TensorToWrite } from './convert/safetensors.js';
import { mistralV3Vocab } from './tokenizer/mistral-v3.js';
import { sentencePieceJson } from './tokenizer/vocab-json.js';

export interface TestModelOptions {
  architecture: ModelConfig['architecture'];
  /** q/k/v biases: llama only (qwen2 always has them, mistral never). */
  attentionBias: boolean;
  ropeScaling: RopeScaling | null;
  layers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim?: number;
  intermediate: number;
  slidingWindow: number | null;
  tied: boolean;
  seed: number;
  ropeTheta: number;
  dtype: 'F32' | 'F16' | 'BF16';
  /** Split the weights over this many safetensors files with an index, as large checkpoints are. */
  shards: number;
  /** Also write the same weights as model.gguf (llama or qwen2 architecture) of this type, for llama.cpp. */
  gguf?: GgufWeightDType;
}

/**
 * The generator's version: a test model written by another version has other weights or files, so
 * caches of generated models (the benchmarks') are keyed by it. Bump it with any change to either.
 */
export const TEST_MODEL_VERSION = 2;

export const PRESETS: Record<string, Partial<TestModelOptions>> = {
  tiny: { layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 256 },
  '100m': { layers: 8, hidden: 768, heads: 12, kvHeads: 4, intermediate: 2048 },
  '1b': { layers: 16, hidden: 2048, heads: 16, kvHeads: 8, intermediate: 5632 },
};

export const DEFAULT_OPTIONS: TestModelOptions = {
  architecture: 'mistral',
  attentionBias: false,
  ropeScaling: null,
  layers: 2,
  hidden: 128,
  heads: 4,
  kvHeads: 2,
  intermediate: 256,
  slidingWindow: null,
  tied: false,
  seed: 1,
  ropeTheta: 1e6,
  dtype: 'F32',
  shards: 1,
};

/** The chat template of Mistral's instruct checkpoints ([INST] ... [/INST]). */
export const MISTRAL_CHAT_TEMPLATE =
  "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}" +
  "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% endif %}{% endfor %}";

/**
 * Seeded normal samples, one stream per (seed, tensor name): xoshiro128** (period 2^128 - 1, so no
 * tensor of any size repeats itself) seeded by splitmix32 from an FNV-1a hash of the name, and
 * Box-Muller on 53-bit uniforms.
 */
export function normalStream(seed: number, name: string): () => number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  const splitmix32 = () => {
    h = (h + 0x9e3779b9) | 0;
    let z = h;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return (z ^ (z >>> 16)) >>> 0;
  };
  const s = Uint32Array.from({ length: 4 }, splitmix32);
  if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 1; // the one state xoshiro never leaves
  const rotl = (x: number, k: number) => (x << k) | (x >>> (32 - k));
  const u32 = () => {
    const out = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return out;
  };
  const uniform = () => ((u32() >>> 5) * 67108864 + (u32() >>> 6)) / 9007199254740992; // [0, 1), 53 bits
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const r = Math.sqrt(-2 * Math.log(1 - uniform()));
    const angle = 2 * Math.PI * uniform();
    spare = r * Math.sin(angle);
    return r * Math.cos(angle);
  };
}

export function testModelConfig(o: TestModelOptions): ModelConfig {
  const headDim = o.headDim ?? o.hidden / o.heads;
  if (!Number.isInteger(headDim)) throw new UsageError(`--hidden ${o.hidden} is not a multiple of --heads ${o.heads}; give --head-dim`);
  if (o.attentionBias && o.architecture === 'mistral') throw new UsageError('--attention-bias needs --architecture llama or qwen2: mistral has no q/k/v biases');
  if (o.slidingWindow !== null && o.architecture !== 'mistral') throw new UsageError(`--sliding-window needs --architecture mistral: ${o.architecture} test models attend to every position`);
  return validateConfig('make-test-model', {
    architecture: o.architecture,
    hiddenSize: o.hidden,
    numLayers: o.layers,
    numHeads: o.heads,
    numKvHeads: o.kvHeads,
    headDim,
    intermediateSize: o.intermediate,
    vocabSize: mistralV3Vocab().tokens.length,
    ropeTheta: o.ropeTheta,
    rmsNormEps: 1e-5,
    slidingWindow: o.slidingWindow,
    tieWordEmbeddings: o.tied,
    attentionBias: o.attentionBias || o.architecture === 'qwen2',
    ropeScaling: o.ropeScaling,
    maxPositionEmbeddings: 32768,
    bosTokenId: 1,
    eosTokenId: 2,
  });
}

/** The HF-named tensors of the test model, each generated when asked for. */
export function testModelTensors(c: ModelConfig, seed: number): Array<{ name: string; shape: number[]; produce: () => Float32Array }> {
  const gaussian = (name: string, shape: number[], std: number, mean = 0) => ({
    name,
    shape,
    produce: () => {
      const next = normalStream(seed, name);
      const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < out.length; i++) out[i] = mean + std * next();
      return out;
    },
  });
  const D = c.hiddenSize;
  const qDim = c.numHeads * c.headDim;
  const kvDim = c.numKvHeads * c.headDim;
  // Projections keep unit variance (std 1/sqrt(fan_in)); the ones writing into the residual stream
  // are smaller, as in trained models; logits come out with a std of about 2.5.
  const tensors = [gaussian('model.embed_tokens.weight', [c.vocabSize, D], 2.5 / Math.sqrt(D))];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      gaussian(`${p}input_layernorm.weight`, [D], 0.1, 1),
      gaussian(`${p}self_attn.q_proj.weight`, [qDim, D], 1 / Math.sqrt(D)),
      gaussian(`${p}self_attn.k_proj.weight`, [kvDim, D], 1 / Math.sqrt(D)),
      gaussian(`${p}self_attn.v_proj.weight`, [kvDim, D], 1 / Math.sqrt(D)),
      ...(c.attentionBias
        ? [gaussian(`${p}self_attn.q_proj.bias`, [qDim], 0.5), gaussian(`${p}self_attn.k_proj.bias`, [kvDim], 0.5), gaussian(`${p}self_attn.v_proj.bias`, [kvDim], 0.5)]
        : []),
      gaussian(`${p}self_attn.o_proj.weight`, [D, qDim], 0.5 / Math.sqrt(qDim)),
      ...(hasOutputProjectionBias(c) ? [gaussian(`${p}self_attn.o_proj.bias`, [D], 0.1)] : []),
      gaussian(`${p}post_attention_layernorm.weight`, [D], 0.1, 1),
      gaussian(`${p}mlp.gate_proj.weight`, [c.intermediateSize, D], 1 / Math.sqrt(D)),
      gaussian(`${p}mlp.up_proj.weight`, [c.intermediateSize, D], 1 / Math.sqrt(D)),
      gaussian(`${p}mlp.down_proj.weight`, [D, c.intermediateSize], 0.5 / Math.sqrt(c.intermediateSize)),
    );
  }
  tensors.push(gaussian('model.norm.weight', [D], 0.1, 1));
  if (!c.tieWordEmbeddings) tensors.push(gaussian('lm_head.weight', [c.vocabSize, D], 2.5 / Math.sqrt(D)));
  return tensors;
}

/** The Mistral v3 vocabulary as GGUF carries it; scores rank merges by id as SentencePiece does. */
export function ggufVocab(): GgufVocab {
  const v = mistralV3Vocab();
  return { tokens: [...v.tokens], scores: v.scores, tokenTypes: [...v.types], unknownTokenId: 0 };
}

/** The test models' tokenizer.json (the Mistral v3 vocabulary as llama.cpp tokenizes it), built once. */
let testTokenizerJson: string | undefined;

export interface TestModel {
  dir: string;
  config: ModelConfig;
  parameters: number;
}

export function makeTestModel(dir: string, options: Partial<TestModelOptions> = {}): TestModel {
  const o = { ...DEFAULT_OPTIONS, ...options };
  const config = testModelConfig(o);
  const tensors = testModelTensors(config, o.seed);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'config.json'), `${JSON.stringify({ ...toHfConfig(config), torch_dtype: o.dtype === 'F32' ? 'float32' : o.dtype === 'F16' ? 'float16' : 'bfloat16' }, null, 2)}\n`);
  writeFileSync(
    join(dir, 'tokenizer_config.json'),
    `${JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', add_bos_token: true, add_eos_token: false, chat_template: MISTRAL_CHAT_TEMPLATE, tokenizer_class: 'LlamaTokenizer' }, null, 2)}\n`,
  );
  testTokenizerJson ??= JSON.stringify(sentencePieceJson(mistralV3Vocab(), true, 0));
  writeFileSync(join(dir, 'tokenizer.json'), testTokenizerJson);
  const toWrite: TensorToWrite[] = tensors.map((t) => ({ name: t.name, dtype: o.dtype, shape: t.shape, data: t.produce }));
  if (o.shards <= 1) {
    writeSafetensors(join(dir, 'model.safetensors'), toWrite, { format: 'pt' });
  } else {
    const name = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(o.shards).padStart(5, '0')}.safetensors`;
    const perShard = Math.ceil(toWrite.length / o.shards);
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < o.shards; i++) {
      const part = toWrite.slice(i * perShard, (i + 1) * perShard);
      part.forEach((t) => (weightMap[t.name] = name(i)));
      writeSafetensors(join(dir, name(i)), part, { format: 'pt' });
    }
    const totalSize = toWrite.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1) * (o.dtype === 'F32' ? 4 : 2), 0);
    writeFileSync(join(dir, 'model.safetensors.index.json'), `${JSON.stringify({ metadata: { total_size: totalSize }, weight_map: weightMap }, null, 2)}\n`);
  }
  if (o.gguf) {
    writeGguf(join(dir, 'model.gguf'), {
      config,
      tensors: tensors.map((t) => ({ name: t.name, shape: t.shape, data: t.produce })),
      vocab: ggufVocab(),
      dtype: o.gguf,
      name: 'npuserve-test-model',
      chatTemplate: MISTRAL_CHAT_TEMPLATE,
    });
  }
  return { dir, config, parameters: tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0) };
}
