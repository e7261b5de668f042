// `npuserve make-test-model`: a small Mistral-architecture checkpoint in the Hugging Face layout
// (config.json, model.safetensors, tokenizer_config.json) with the real Mistral v3 vocabulary and
// deterministic seeded weights at realistic scales, optionally also as GGUF for llama.cpp.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { UsageError } from './errors.js';
import { toHfConfig, validateConfig, type ModelConfig } from './model-config.js';
import type { GgufVocab } from './convert/gguf-model.js';
import { writeGguf, type GgufWeightDType } from './convert/gguf-writer.js';
import { writeSafetensors, type TensorToWrite } from './convert/safetensors.js';
import { Tokenizer } from './tokenizer.js';

export interface TestModelOptions {
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
  /** Also write the same weights as model.gguf (llama architecture) of this type, for llama.cpp. */
  gguf?: GgufWeightDType;
}

export const PRESETS: Record<string, Partial<TestModelOptions>> = {
  tiny: { layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 256 },
  '100m': { layers: 8, hidden: 768, heads: 12, kvHeads: 4, intermediate: 2048 },
  '1b': { layers: 16, hidden: 2048, heads: 16, kvHeads: 8, intermediate: 5632 },
};

export const DEFAULT_OPTIONS: TestModelOptions = {
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

/** Seeded normal samples (xorshift128+ and Box-Muller), one stream per tensor name. */
export function normalStream(seed: number, name: string): () => number {
  let h = 0x811c9dc5 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  let s0 = (h >>> 0) | 1;
  let s1 = Math.imul(h, 0x9e3779b1) >>> 0 || 0x12345;
  const u32 = () => {
    let x = s0;
    const y = s1;
    s0 = y;
    x ^= x << 23;
    x ^= x >>> 17;
    x ^= y ^ (y >>> 26);
    s1 = x >>> 0;
    return (s0 + s1) >>> 0;
  };
  let spare: number | null = null;
  return () => {
    if (spare !== null) {
      const v = spare;
      spare = null;
      return v;
    }
    const u = (u32() + 1) / 4294967297;
    const v = u32() / 4294967296;
    const r = Math.sqrt(-2 * Math.log(u));
    spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  };
}

export function testModelConfig(o: TestModelOptions): ModelConfig {
  const tok = Tokenizer.mistralV3();
  const headDim = o.headDim ?? o.hidden / o.heads;
  if (!Number.isInteger(headDim)) throw new UsageError(`--hidden ${o.hidden} is not a multiple of --heads ${o.heads}; give --head-dim`);
  return validateConfig('make-test-model', {
    architecture: 'mistral',
    hiddenSize: o.hidden,
    numLayers: o.layers,
    numHeads: o.heads,
    numKvHeads: o.kvHeads,
    headDim,
    intermediateSize: o.intermediate,
    vocabSize: tok.vocabSize,
    ropeTheta: o.ropeTheta,
    rmsNormEps: 1e-5,
    slidingWindow: o.slidingWindow,
    tieWordEmbeddings: o.tied,
    attentionBias: false,
    ropeScaling: null,
    maxPositionEmbeddings: 32768,
    bosTokenId: tok.bosId,
    eosTokenId: tok.eosId,
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
      gaussian(`${p}self_attn.o_proj.weight`, [D, qDim], 0.5 / Math.sqrt(qDim)),
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
export function ggufVocab(tok: Tokenizer): GgufVocab {
  return { tokens: [...tok.vocab], scores: tok.vocab.map((_, id) => -id), tokenTypes: tok.vocab.map((_, id) => tok.tokenType(id)), unknownTokenId: 0 };
}

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
    `${JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>', chat_template: MISTRAL_CHAT_TEMPLATE, tokenizer_class: 'LlamaTokenizer' }, null, 2)}\n`,
  );
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
      vocab: ggufVocab(Tokenizer.mistralV3()),
      dtype: o.gguf,
      name: 'npuserve-test-model',
      chatTemplate: MISTRAL_CHAT_TEMPLATE,
    });
  }
  return { dir, config, parameters: tensors.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0) };
}
