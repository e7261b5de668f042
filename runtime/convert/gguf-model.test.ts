// The model view of a GGUF: HF names and row order, the config from each architecture's keys, and
// one refusal per thing the engine does not implement, on checkpoints made by hand.
import { describe, expect, it } from 'vitest';

import { expectFormatError } from '../../test/unit/fuzz.js';
import { buildGguf, GGML, llamaKv, llamaTensorsF32, T, type HandTensor, type Kv } from '../../test/unit/gguf-builder.js';
import { GgufCheckpoint } from './gguf-model.js';
import { tempFiles } from '../../test/unit/temp-files.js';

const { writeTemp } = tempFiles('gguf-model');


describe('GgufCheckpoint: llama', () => {
  it('un-permutes a hand-made GGUF whose Q and K rows are in llama.cpp order', () => {
    // 2 query heads and 1 KV head of 8 rows; each stored row holds 1000 * (its GGUF row) + column.
    const shape = { hidden: 16, heads: 2, kvHeads: 1, headDim: 8, inter: 32, vocab: 4, layers: 1 };
    const path = writeTemp('hand-permuted.gguf', buildGguf({ kv: llamaKv(shape), tensors: llamaTensorsF32(shape, (_, r, k) => 1000 * r + k) }).bytes);
    // Within a head, HF row s*4 + i (s = 0, 1; i = 0..3) is stored at GGUF row 2i + s.
    const ggufRowOfHfRow = [0, 2, 4, 6, 1, 3, 5, 7];
    const ck = new GgufCheckpoint(path);
    try {
      const q = ck.readF32('model.layers.0.self_attn.q_proj.weight');
      const k = ck.readF32('model.layers.0.self_attn.k_proj.weight');
      for (let r = 0; r < 16; r++) {
        const stored = 8 * Math.floor(r / 8) + ggufRowOfHfRow[r % 8];
        expect([...q.subarray(r * 16, r * 16 + 16)]).toEqual(Array.from({ length: 16 }, (_, c) => 1000 * stored + c));
      }
      for (let r = 0; r < 8; r++) expect(k[r * 16 + 3]).toBe(1000 * ggufRowOfHfRow[r] + 3);
      expect(ck.readF32('model.layers.0.self_attn.v_proj.weight')[5 * 16 + 2]).toBe(5002);
    } finally {
      ck.close();
    }
  });
});

/** Opens a hand-made checkpoint, hands it to `check`, and closes it. */
function withCheckpoint(name: string, kv: Kv[], tensors: HandTensor[], check: (ck: GgufCheckpoint) => void): void {
  const ck = new GgufCheckpoint(writeTemp(name, buildGguf({ kv, tensors }).bytes));
  try {
    check(ck);
  } finally {
    ck.close();
  }
}

const SMALL = { hidden: 16, heads: 2, kvHeads: 1, headDim: 8, inter: 32, vocab: 4, layers: 2 };

describe('GgufCheckpoint: attention biases and architectures', () => {
  it('qwen2: q/k/v biases under HF names, Q and K rows left in HF order', () => {
    // stored row r of every matrix holds 1000 * r + column; element i of a bias holds i
    withCheckpoint('qwen2.gguf', llamaKv(SMALL, 'qwen2'), llamaTensorsF32(SMALL, (_, r, k) => 1000 * r + k, 'qkv'), (ck) => {
      expect(ck.config).toMatchObject({ architecture: 'qwen2', attentionBias: true, ropeScaling: null, numLayers: 2, headDim: 8 });
      expect(ck.tensors.get('model.layers.1.self_attn.q_proj.bias')).toEqual({ name: 'model.layers.1.self_attn.q_proj.bias', dtype: 'F32', shape: [16] });
      expect(ck.tensors.get('model.layers.1.self_attn.k_proj.bias')!.shape).toEqual([8]);
      expect(ck.tensors.get('model.layers.1.self_attn.v_proj.bias')!.shape).toEqual([8]);
      expect(ck.tensors.has('model.layers.1.self_attn.o_proj.bias')).toBe(false);
      expect([...ck.readF32('model.layers.1.self_attn.q_proj.bias')]).toEqual(Array.from({ length: 16 }, (_, i) => i));
      expect([...ck.readF32('model.layers.0.self_attn.k_proj.bias')]).toEqual(Array.from({ length: 8 }, (_, i) => i));
      const q = ck.readF32('model.layers.0.self_attn.q_proj.weight');
      for (let r = 0; r < 16; r++) expect(q[r * 16 + 5]).toBe(1000 * r + 5);
    });
  });

  it('llama with biases: q/k biases un-permuted like their weights, v and o biases as stored', () => {
    const ggufRowOfHfRow = [0, 2, 4, 6, 1, 3, 5, 7];
    withCheckpoint('llama-bias.gguf', llamaKv(SMALL), llamaTensorsF32(SMALL, (_, r, k) => 1000 * r + k, 'qkvo'), (ck) => {
      expect(ck.config).toMatchObject({ architecture: 'llama', attentionBias: true });
      expect([...ck.readF32('model.layers.0.self_attn.q_proj.bias')]).toEqual(Array.from({ length: 16 }, (_, r) => 8 * Math.floor(r / 8) + ggufRowOfHfRow[r % 8]));
      expect([...ck.readF32('model.layers.0.self_attn.k_proj.bias')]).toEqual(ggufRowOfHfRow);
      expect([...ck.readF32('model.layers.0.self_attn.v_proj.bias')]).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
      expect([...ck.readF32('model.layers.1.self_attn.o_proj.bias')]).toEqual(Array.from({ length: 16 }, (_, i) => i));
    });
  });

  it('qwen2 without biases names the first missing one', () => {
    const path = writeTemp('qwen2-no-bias.gguf', buildGguf({ kv: llamaKv(SMALL, 'qwen2'), tensors: llamaTensorsF32(SMALL, () => 0.5) }).bytes);
    expectFormatError(() => new GgufCheckpoint(path).close(), path, /tensor 'blk.0.attn_q.bias' \(model.layers.0.self_attn.q_proj.bias\) is missing/);
  });

  it('a bias in only some layers of a llama file is refused', () => {
    const tensors = llamaTensorsF32(SMALL, () => 0.5, 'qkvo').filter((t) => !t.name.startsWith('blk.1.') || !t.name.endsWith('.bias'));
    const path = writeTemp('llama-half-bias.gguf', buildGguf({ kv: llamaKv(SMALL), tensors }).bytes);
    expectFormatError(() => new GgufCheckpoint(path).close(), path, /tensor 'blk.1.attn_q.bias' \(model.layers.1.self_attn.q_proj.bias\) is missing/);
  });
});

describe('GgufCheckpoint: RoPE scaling', () => {
  const f32 = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);
  const ropeFreqs = (values: number[]): HandTensor => ({ name: 'rope_freqs.weight', ne: [values.length], type: GGML.F32, data: f32(values) });

  it('linear with its factor; "none" and absent are no scaling', () => {
    const tensors = llamaTensorsF32(SMALL, () => 0.5);
    const linear: Kv[] = [['llama.rope.scaling.type', T.STRING, 'linear'], ['llama.rope.scaling.factor', T.F32, 4]];
    withCheckpoint('linear.gguf', [...llamaKv(SMALL), ...linear], tensors, (ck) => expect(ck.config.ropeScaling).toEqual({ type: 'linear', factor: 4 }));
    withCheckpoint('none.gguf', [...llamaKv(SMALL), ['llama.rope.scaling.type', T.STRING, 'none']], tensors, (ck) => expect(ck.config.ropeScaling).toBeNull());
    const qwen = [...llamaKv(SMALL, 'qwen2'), ['qwen2.rope.scaling.type', T.STRING, 'linear'], ['qwen2.rope.scaling.factor', T.F32, 2]] as Kv[];
    withCheckpoint('qwen-linear.gguf', qwen, llamaTensorsF32(SMALL, () => 0.5, 'qkv'), (ck) => expect(ck.config.ropeScaling).toEqual({ type: 'linear', factor: 2 }));
  });

  it('rope_freqs.weight (Llama 3.1) becomes per-pair frequency factors, not an unexpected tensor', () => {
    const factors = [1, 1, 2.5, 8];
    withCheckpoint('rope-freqs.gguf', llamaKv(SMALL), [...llamaTensorsF32(SMALL, () => 0.5), ropeFreqs(factors)], (ck) => {
      expect(ck.config.ropeScaling).toEqual({ type: 'freq-factors', factors });
      expect(ck.tensors.size).toBe(2 + 9 * 2 + 1); // embeddings, 2 layers, final norm, lm_head: rope_freqs is not a weight
    });
  });

  const refusals: Array<[string, Kv[], HandTensor[], RegExp]> = [
    ['yarn', [['llama.rope.scaling.type', T.STRING, 'yarn'], ['llama.rope.scaling.factor', T.F32, 4]], [], /'llama.rope.scaling.type' is "yarn": only "linear" and "none" RoPE scaling are supported/],
    ['linear without a factor', [['llama.rope.scaling.type', T.STRING, 'linear']], [], /missing metadata key 'llama.rope.scaling.factor'/],
    ['rope_freqs of the wrong length', [], [ropeFreqs([1, 2, 3])], /tensor 'rope_freqs.weight' has shape \[3\], expected \[4\] \(one factor per rotation pair\)/],
    ['a zero factor', [], [ropeFreqs([1, 0, 1, 1])], /tensor 'rope_freqs.weight': factor 1 is 0, expected a positive number/],
    ['rope_freqs and linear scaling', [['llama.rope.scaling.type', T.STRING, 'linear'], ['llama.rope.scaling.factor', T.F32, 2]], [ropeFreqs([1, 1, 1, 1])], /tensor 'rope_freqs.weight' and 'llama.rope.scaling.type' "linear" both scale RoPE/],
  ];
  for (const [what, kv, extra, pattern] of refusals) {
    it(`refuses ${what}`, () => {
      const path = writeTemp('rope.gguf', buildGguf({ kv: [...llamaKv(SMALL), ...kv], tensors: [...llamaTensorsF32(SMALL, () => 0.5), ...extra] }).bytes);
      expectFormatError(() => new GgufCheckpoint(path).close(), path, pattern);
    });
  }
});

describe('GgufCheckpoint refuses what it cannot present as a checkpoint the engine runs', () => {
  const shape = { hidden: 32, heads: 2, kvHeads: 1, headDim: 16, inter: 32, vocab: 4, layers: 1 };
  const cases: Array<[string, (kv: Kv[], tensors: HandTensor[]) => void, RegExp]> = [
    ['architecture', (kv) => (kv[0][2] = 'gemma2'), /general.architecture "gemma2" is not supported \(expected "llama" or "qwen2"; Mistral models are stored as llama\)/],
    ['missing key', (kv) => kv.splice(2, 1), /missing metadata key 'llama.embedding_length'/],
    ['bad key type', (kv) => (kv[3] = ['llama.block_count', T.STRING, '1']), /'llama.block_count' must be an integer >= 1, got "1"/],
    ['block count', (kv) => (kv[3] = ['llama.block_count', T.U32, 4000000000]), /'llama.block_count' is 4000000000, but the file has only 12 tensors/],
    ['partial rope', (kv) => kv.push(['llama.rope.dimension_count', T.U32, 8]), /'llama.rope.dimension_count' 8 differs from the head size 16/],
    ['value length', (kv) => kv.push(['llama.attention.value_length', T.U32, 32]), /'llama.attention.value_length' 32 differs from the head size 16/],
    ['mixture of experts', (kv) => kv.push(['llama.expert_count', T.U32, 8]), /'llama.expert_count' is 8: mixture of experts is not supported/],
    ['sliding window', (kv) => kv.push(['llama.attention.sliding_window', T.U32, 4096]), /'llama.attention.sliding_window' is 4096: sliding-window attention is not supported/],
    ['logit soft-capping', (kv) => kv.push(['llama.final_logit_softcapping', T.F32, 30]), /'llama.final_logit_softcapping' is 30: final logit soft-capping is not supported/],
    ['attention soft-capping', (kv) => kv.push(['llama.attn_logit_softcapping', T.F32, 50]), /'llama.attn_logit_softcapping' is 50: attention logit soft-capping is not supported/],
    ['embedding scale', (kv) => kv.push(['llama.embedding_scale', T.F32, 12]), /'llama.embedding_scale' is 12: embedding scaling is not supported/],
    ['extra tensor', (_, t) => t.push({ name: 'blk.0.attn_q_norm.weight', ne: [16], type: GGML.F32, data: new Uint8Array(64) }), /tensor 'blk.0.attn_q_norm.weight' is not part of a 1-layer llama checkpoint/],
    ['stray bias', (_, t) => t.push({ name: 'blk.0.attn_output.bias', ne: [32], type: GGML.F32, data: new Uint8Array(128) }), /tensor 'blk.0.attn_output.bias' is not part of a 1-layer llama checkpoint/],
    ['missing tensor', (_, t) => t.splice(8, 1), /tensor 'blk.0.ffn_up.weight' \(model.layers.0.mlp.up_proj.weight\) is missing/],
    ['wrong shape', (_, t) => (t[2] = { ...t[2], ne: [32, 16], data: new Uint8Array(2048) }), /tensor 'blk.0.attn_q.weight' has shape \[16, 32\], the config needs \[32, 32\]/],
    ['vocab mismatch', (kv) => kv.push(['llama.vocab_size', T.U32, 5]), /'tokenizer.ggml.tokens' has 4 tokens, the model's vocabulary has 5/],
    ['bad eos', (kv) => kv.push(['tokenizer.ggml.eos_token_id', T.U32, 9]), /'eos_token_id' 9 is outside the vocabulary of 4/],
  ];
  for (const [what, mutate, pattern] of cases) {
    it(what, () => {
      const kv = llamaKv(shape);
      const tensors = llamaTensorsF32(shape, () => 0.5);
      mutate(kv, tensors);
      const path = writeTemp('llama.gguf', buildGguf({ kv, tensors }).bytes);
      expectFormatError(() => new GgufCheckpoint(path).close(), path, pattern);
    });
  }

  it('accepts the neutral values of those keys (no experts, scale 1)', () => {
    const kv: Kv[] = [...llamaKv(shape), ['llama.expert_count', T.U32, 0], ['llama.logit_scale', T.F32, 1]];
    const path = writeTemp('llama-neutral.gguf', buildGguf({ kv, tensors: llamaTensorsF32(shape, () => 0.5) }).bytes);
    new GgufCheckpoint(path).close();
  });

  it('reads the unmodified hand-made checkpoint with llama.cpp defaults for absent keys', () => {
    const path = writeTemp('llama-ok.gguf', buildGguf({ kv: llamaKv(shape), tensors: llamaTensorsF32(shape, () => 0.5) }).bytes);
    const ck = new GgufCheckpoint(path);
    ck.close();
    expect(ck.config).toMatchObject({ vocabSize: 4, ropeTheta: 10000, rmsNormEps: 1e-6, bosTokenId: 1, eosTokenId: 2, tieWordEmbeddings: false });
    expect(ck.vocab).toEqual({ tokens: ['tok0', 'tok1', 'tok2', 'tok3'], scores: [0, 0, 0, 0], tokenTypes: [1, 1, 1, 1] });
    expect(ck.chatTemplate).toBeNull();
  });
});

