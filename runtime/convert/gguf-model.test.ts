// The model view of a GGUF: HF names and row order, the config from each architecture's keys, and
// one refusal per thing the engine does not implement, on checkpoints made by hand.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { expectFormatError } from '../../test/unit/fuzz.js';
import { buildGguf, GGML, llamaKv, llamaTensorsF32, T, type HandTensor, type Kv } from '../../test/unit/gguf-builder.js';
import { GgufCheckpoint } from './gguf-model.js';

const dir = mkdtempSync(join(tmpdir(), 'npuserve-gguf-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tempPath = (name: string) => join(dir, `${fileCounter++}-${name}`);

function writeTemp(name: string, bytes: Uint8Array): string {
  const path = tempPath(name);
  writeFileSync(path, bytes);
  return path;
}

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

describe('GgufCheckpoint rejects GGUFs it cannot present as a llama checkpoint', () => {
  const shape = { hidden: 32, heads: 2, kvHeads: 1, headDim: 16, inter: 32, vocab: 4, layers: 1 };
  const cases: Array<[string, (kv: Kv[], tensors: HandTensor[]) => void, RegExp]> = [
    ['architecture', (kv) => (kv[0][2] = 'qwen2'), /general.architecture "qwen2" is not supported \(expected "llama"/],
    ['missing key', (kv) => kv.splice(2, 1), /missing metadata key 'llama.embedding_length'/],
    ['bad key type', (kv) => (kv[3] = ['llama.block_count', T.STRING, '1']), /'llama.block_count' must be an integer >= 1, got "1"/],
    ['block count', (kv) => (kv[3] = ['llama.block_count', T.U32, 4000000000]), /'llama.block_count' is 4000000000, but the file has only 12 tensors/],
    ['rope scaling', (kv) => kv.push(['llama.rope.scaling.type', T.STRING, 'linear']), /RoPE scaling "linear" is not supported/],
    ['partial rope', (kv) => kv.push(['llama.rope.dimension_count', T.U32, 8]), /'llama.rope.dimension_count' 8 differs from the head size 16/],
    ['extra tensor', (_, t) => t.push({ name: 'rope_freqs.weight', ne: [8], type: GGML.F32, data: new Uint8Array(32) }), /tensor 'rope_freqs.weight' is not part of a 1-layer llama checkpoint/],
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

  it('reads the unmodified hand-made checkpoint with llama.cpp defaults for absent keys', () => {
    const path = writeTemp('llama-ok.gguf', buildGguf({ kv: llamaKv(shape), tensors: llamaTensorsF32(shape, () => 0.5) }).bytes);
    const ck = new GgufCheckpoint(path);
    ck.close();
    expect(ck.config).toMatchObject({ vocabSize: 4, ropeTheta: 10000, rmsNormEps: 1e-6, bosTokenId: 1, eosTokenId: 2, tieWordEmbeddings: false });
    expect(ck.vocab).toEqual({ tokens: ['tok0', 'tok1', 'tok2', 'tok3'], scores: [0, 0, 0, 0], tokenTypes: [1, 1, 1, 1] });
    expect(ck.chatTemplate).toBeNull();
  });
});

