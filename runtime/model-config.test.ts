// config.json as the hub publishes it for each supported family (read, or refused naming the field),
// the toHfConfig round trip, and RoPE inverse frequencies against values computed by hand.
import { describe, expect, it } from 'vitest';

import { fromHfConfig, ropeInverseFrequencies, toHfConfig, type ModelConfig } from './model-config.js';

// Key sets of the published config.json files (values trimmed to what the tests need).
const LLAMA_2_7B = {
  architectures: ['LlamaForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 11008,
  max_position_embeddings: 4096,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 32,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  tie_word_embeddings: false,
  torch_dtype: 'float16',
  transformers_version: '4.31.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

const LLAMA_31_8B = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 131072,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.43.0.dev0',
  use_cache: true,
  vocab_size: 128256,
};

const LLAMA_32_1B = {
  ...LLAMA_31_8B,
  head_dim: 64,
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  rope_scaling: { factor: 32.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  tie_word_embeddings: true,
  transformers_version: '4.45.0.dev0',
};

const MISTRAL_7B_V01 = {
  architectures: ['MistralForCausalLM'],
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 4096,
  initializer_range: 0.02,
  intermediate_size: 14336,
  max_position_embeddings: 32768,
  model_type: 'mistral',
  num_attention_heads: 32,
  num_hidden_layers: 32,
  num_key_value_heads: 8,
  rms_norm_eps: 1e-5,
  rope_theta: 10000.0,
  sliding_window: 4096,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.34.0.dev0',
  use_cache: true,
  vocab_size: 32000,
};

const QWEN25_05B = {
  architectures: ['Qwen2ForCausalLM'],
  attention_dropout: 0.0,
  bos_token_id: 151643,
  eos_token_id: 151643,
  hidden_act: 'silu',
  hidden_size: 896,
  initializer_range: 0.02,
  intermediate_size: 4864,
  max_position_embeddings: 32768,
  max_window_layers: 24,
  model_type: 'qwen2',
  num_attention_heads: 14,
  num_hidden_layers: 24,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000.0,
  sliding_window: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.40.1',
  use_cache: true,
  use_sliding_window: false,
  vocab_size: 151936,
};

const SMOLLM2_135M_INSTRUCT = {
  _name_or_path: '/fsx/elie_bakouch/smollm2-135M-instruct',
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 1,
  eos_token_id: 2,
  head_dim: 64,
  hidden_act: 'silu',
  hidden_size: 576,
  initializer_range: 0.041666666666666664,
  intermediate_size: 1536,
  is_llama_config: true,
  max_position_embeddings: 8192,
  mlp_bias: false,
  model_type: 'llama',
  num_attention_heads: 9,
  num_hidden_layers: 30,
  num_key_value_heads: 3,
  pad_token_id: 2,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_interleaved: false,
  rope_scaling: null,
  rope_theta: 100000,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
  transformers_version: '4.42.3',
  'transformers.js_config': { kv_cache_dtype: { q4f16: 'float16', fp16: 'float16' } },
  use_cache: true,
  vocab_size: 49152,
};

const TINYLLAMA_11B_CHAT = {
  architectures: ['LlamaForCausalLM'],
  attention_bias: false,
  bos_token_id: 1,
  eos_token_id: 2,
  hidden_act: 'silu',
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 5632,
  max_position_embeddings: 2048,
  model_type: 'llama',
  num_attention_heads: 32,
  num_hidden_layers: 22,
  num_key_value_heads: 4,
  pretraining_tp: 1,
  rms_norm_eps: 1e-5,
  rope_scaling: null,
  rope_theta: 10000.0,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.35.0',
  use_cache: true,
  vocab_size: 32000,
};

describe('fromHfConfig on published configs', () => {
  it.each([
    ['Llama 2 7B', LLAMA_2_7B, { architecture: 'llama', headDim: 128, ropeTheta: 10000, ropeScaling: null, attentionBias: false, slidingWindow: null }],
    ['Llama 3.1 8B', LLAMA_31_8B, { numKvHeads: 8, eosTokenId: 128001, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }],
    ['Llama 3.2 1B', LLAMA_32_1B, { headDim: 64, tieWordEmbeddings: true, ropeScaling: { type: 'llama3', factor: 32 } }],
    ['Mistral 7B v0.1', MISTRAL_7B_V01, { architecture: 'mistral', slidingWindow: 4096, attentionBias: false }],
    ['Qwen2.5 0.5B', QWEN25_05B, { architecture: 'qwen2', attentionBias: true, slidingWindow: null, headDim: 64, tieWordEmbeddings: true }],
    ['SmolLM2 135M Instruct', SMOLLM2_135M_INSTRUCT, { architecture: 'llama', headDim: 64, numKvHeads: 3, ropeTheta: 100000, attentionBias: false }],
    ['TinyLlama 1.1B Chat', TINYLLAMA_11B_CHAT, { numKvHeads: 4, headDim: 64, slidingWindow: null }],
  ])('%s', (_name, json, want) => {
    expect(fromHfConfig('config.json', json)).toMatchObject(want);
  });

  it('reads the legacy rope_scaling key `type`, linear scaling and llama attention_bias', () => {
    const c = fromHfConfig('config.json', { ...LLAMA_2_7B, rope_scaling: { type: 'linear', factor: 4 }, attention_bias: true });
    expect(c.ropeScaling).toEqual({ type: 'linear', factor: 4 });
    expect(c.attentionBias).toBe(true);
    expect(fromHfConfig('config.json', { ...LLAMA_2_7B, rope_scaling: { rope_type: 'default' } }).ropeScaling).toBeNull();
  });

  it('uses MistralConfig\'s default window of 4096 when sliding_window is absent', () => {
    const { sliding_window: _, ...noWindow } = MISTRAL_7B_V01;
    expect(fromHfConfig('config.json', noWindow).slidingWindow).toBe(4096);
    expect(fromHfConfig('config.json', { ...MISTRAL_7B_V01, sliding_window: null }).slidingWindow).toBeNull();
  });

  it.each([
    [{ ...LLAMA_2_7B, hidden_act: 'gelu' }, /'hidden_act' "gelu" is not supported: the MLP is SwiGLU with silu only/],
    [{ ...LLAMA_2_7B, rope_scaling: { rope_type: 'dynamic', factor: 2 } }, /'rope_scaling\.rope_type' "dynamic" is not supported: implemented RoPE scalings are default, linear and llama3/],
    [{ ...LLAMA_2_7B, rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 32768 } }, /'rope_scaling\.rope_type' "yarn" is not supported/],
    [{ ...LLAMA_2_7B, rope_scaling: { rope_type: 'longrope', short_factor: [1], long_factor: [2] } }, /'rope_scaling\.rope_type' "longrope"/],
    [{ ...LLAMA_2_7B, rope_scaling: { type: 'su' } }, /'rope_scaling\.rope_type' "su"/],
    [{ ...LLAMA_2_7B, rope_scaling: { rope_type: 'linear', factor: 2, type: 'llama3' } }, /'rope_scaling' names two types/],
    [{ ...LLAMA_2_7B, rope_scaling: { rope_type: 'linear', factor: 2, attention_factor: 1.5 } }, /'rope_scaling\.attention_factor' 1\.5 is not supported: rope_type "linear" takes only factor/],
    [{ ...LLAMA_2_7B, rope_scaling: { rope_type: 'linear' } }, /'rope_scaling\.factor' must be a positive number, got undefined/],
    [{ ...LLAMA_31_8B, rope_scaling: { ...LLAMA_31_8B.rope_scaling, high_freq_factor: 1 } }, /llama3 rope_scaling needs 0 < low_freq_factor < high_freq_factor/],
    [{ ...LLAMA_31_8B, mlp_bias: true }, /'mlp_bias' true is not supported/],
    [{ ...SMOLLM2_135M_INSTRUCT, rope_interleaved: true }, /'rope_interleaved' true is not supported/],
    [{ ...QWEN25_05B, use_sliding_window: true }, /'use_sliding_window' true is not supported: qwen2's per-layer sliding window \(max_window_layers\) is not implemented/],
    [{ ...QWEN25_05B, attention_bias: false }, /'attention_bias' false is not supported: qwen2 always has q\/k\/v biases/],
    [{ ...MISTRAL_7B_V01, attention_bias: true }, /'attention_bias' true is not supported: mistral has no q\/k\/v biases/],
    [{ ...LLAMA_2_7B, sliding_window: 4096 }, /'sliding_window' 4096 is not supported: llama attends to every position/],
    [{ ...LLAMA_2_7B, partial_rotary_factor: 0.5 }, /'partial_rotary_factor' is not a config\.json field npuserve knows.*model_type llama, mistral and qwen2 with hidden_act silu/],
    [{ ...LLAMA_2_7B, quantization_config: { quant_method: 'gptq' } }, /'quantization_config' is not a config\.json field npuserve knows/],
    [{ ...LLAMA_2_7B, model_type: 'gemma' }, /'model_type' "gemma" is not supported \(expected llama, mistral or qwen2\)/],
  ])('refuses %j naming the field', (json, message) => {
    expect(() => fromHfConfig('ckpt/config.json', json)).toThrow(message);
  });
});

describe('toHfConfig', () => {
  const base: ModelConfig = fromHfConfig('config.json', TINYLLAMA_11B_CHAT);
  it.each([
    ['llama with attention biases and llama3 scaling', { ...base, attentionBias: true, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } }],
    ['llama with linear scaling', { ...base, ropeScaling: { type: 'linear', factor: 2.5 } }],
    ['qwen2', { ...base, architecture: 'qwen2', attentionBias: true }],
    ['mistral with a sliding window', { ...base, architecture: 'mistral', slidingWindow: 5 }],
    ['mistral without a sliding window', { ...base, architecture: 'mistral' }],
  ] as Array<[string, ModelConfig]>)('%s reads back unchanged', (_label, c) => {
    expect(fromHfConfig('config.json', JSON.parse(JSON.stringify(toHfConfig(c))))).toEqual(c);
  });
});

describe('ropeInverseFrequencies', () => {
  const rel = (got: Float64Array, want: number[]) => got.forEach((g, i) => expect(Math.abs(g - want[i]) / want[i], `pair ${i}`).toBeLessThan(1e-12));

  it('default: 1 / theta^(2i / head_dim)', () => {
    rel(ropeInverseFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: null }), [1, 0.1, 0.01, 0.001]);
  });

  it('linear divides every frequency by the factor; freq-factors divide pair by pair', () => {
    rel(ropeInverseFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: { type: 'linear', factor: 4 } }), [0.25, 0.025, 0.0025, 0.00025]);
    rel(ropeInverseFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: { type: 'freq-factors', factors: [1, 2, 4, 8] } }), [1, 0.05, 0.0025, 0.000125]);
  });

  it('llama3: the high-frequency band is kept, the low one divided by the factor, the middle one blended', () => {
    // head_dim 8, theta 10000: wavelengths 2*pi / f are 6.28, 62.8, 628, 6283. With
    // original_max_position_embeddings 1024, low 1, high 4 the bands end at 1024 / 4 = 256 and
    // 1024 / 1 = 1024: pairs 0 and 1 are high, pair 2 is in the middle, pair 3 is low.
    // Pair 2: smooth = (1024 / 628.3185 - 1) / (4 - 1) = 0.2099155390870,
    // f = 0.01 * ((1 - smooth) / 8 + smooth) = 0.003086760967011.
    const got = ropeInverseFrequencies({ headDim: 8, ropeTheta: 10000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 1024 } });
    rel(got, [1, 0.1, 0.003086760967011274, 0.000125]);
  });
});
