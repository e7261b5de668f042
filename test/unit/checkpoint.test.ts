// Source checkpoints as users have them: the verbatim Mistral-7B-v0.3 config.json, sharded BF16
// safetensors with an index, and errors for folders that are not checkpoints.
import { closeSync, ftruncateSync, mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { openCheckpoint } from '../../runtime/convert/checkpoint.js';
import { convert, planTensors } from '../../runtime/convert/convert.js';
import { writeSafetensors } from '../../runtime/convert/safetensors.js';
import { Engine } from '../../runtime/engine.js';
import { fromHfConfig } from '../../runtime/model-config.js';
import { mistralV3Vocab } from '../../runtime/tokenizer/mistral-v3.js';
import { sentencePieceJson } from '../../runtime/tokenizer/vocab-json.js';
import { referenceLogits } from './reference.js';
import { convertedModel, testModel, workDir } from './helpers.js';
import { freshSeed, randomTokens, rng } from './random.js';

// config.json of mistralai/Mistral-7B-v0.3 as published.
const MISTRAL_7B_V03 = {
  architectures: ['MistralForCausalLM'],
  attention_dropout: 0.0,
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
  rope_theta: 1000000.0,
  sliding_window: null,
  tie_word_embeddings: false,
  torch_dtype: 'bfloat16',
  transformers_version: '4.42.0.dev0',
  use_cache: true,
  vocab_size: 32768,
};

describe('checkpoints', () => {
  it('reads the Mistral-7B-v0.3 config.json as published', () => {
    const c = fromHfConfig('config.json', MISTRAL_7B_V03);
    expect(c).toMatchObject({ hiddenSize: 4096, numLayers: 32, numHeads: 32, numKvHeads: 8, headDim: 128, intermediateSize: 14336, vocabSize: 32768, ropeTheta: 1e6, slidingWindow: null, tieWordEmbeddings: false });
  });

  it('plans the Mistral-7B-v0.3 conversion: fused QKV (6144 rows) and gate/up (28672 rows), untied LM head', () => {
    const dir = join(workDir, 'mistral-7b-shape');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'config.json'), JSON.stringify(MISTRAL_7B_V03));
    const shapes: Record<string, number[]> = { 'model.embed_tokens.weight': [32768, 4096], 'model.norm.weight': [4096], 'lm_head.weight': [32768, 4096] };
    for (let l = 0; l < 32; l++) {
      const p = `model.layers.${l}.`;
      Object.assign(shapes, {
        [`${p}input_layernorm.weight`]: [4096],
        [`${p}post_attention_layernorm.weight`]: [4096],
        [`${p}self_attn.q_proj.weight`]: [4096, 4096],
        [`${p}self_attn.k_proj.weight`]: [1024, 4096],
        [`${p}self_attn.v_proj.weight`]: [1024, 4096],
        [`${p}self_attn.o_proj.weight`]: [4096, 4096],
        [`${p}mlp.gate_proj.weight`]: [14336, 4096],
        [`${p}mlp.up_proj.weight`]: [14336, 4096],
        [`${p}mlp.down_proj.weight`]: [4096, 14336],
      });
    }
    // Headers only (tensor data is never read while planning): three shards and an index, like the hub's.
    const names = Object.keys(shapes);
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < 3; s++) {
      const file = `model-0000${s + 1}-of-00003.safetensors`;
      const header: Record<string, unknown> = {};
      let off = 0;
      for (const n of names.filter((_, i) => i % 3 === s)) {
        const bytes = shapes[n].reduce((a, b) => a * b, 1) * 2;
        header[n] = { dtype: 'BF16', shape: shapes[n], data_offsets: [off, off + bytes] };
        weightMap[n] = file;
        off += bytes;
      }
      const json = Buffer.from(JSON.stringify(header));
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(json.length));
      writeFileSync(join(dir, file), Buffer.concat([len, json]));
      // Sparse: the file is as long as its header says without writing gigabytes.
      const fd = openSync(join(dir, file), 'r+');
      ftruncateSync(fd, 8 + json.length + off);
      closeSync(fd);
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: weightMap }));
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(sentencePieceJson(mistralV3Vocab(), true, 0)));
    const ck = openCheckpoint(dir);
    const plan = planTensors(ck, 'INT8', 2);
    ck.source.close();
    const byName = new Map(plan.map((t) => [t.name, t]));
    expect(byName.get('layers.31.wqkv')?.shape).toEqual([6144, 4096]);
    expect(byName.get('layers.0.w_gate_up')?.shape).toEqual([28672, 4096]);
    expect(byName.get('lm_head')?.shape).toEqual([32768, 4096]);
    expect(byName.get('layers.0.wqkv')?.layout).toBe('packed16');
    expect(plan).toHaveLength(1 + 32 * 6 + 2);
  });

  it('converts a sharded BF16 checkpoint and matches the reference on BF16 weights', async () => {
    const m = testModel('sharded-bf16', { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, dtype: 'BF16', shards: 3 });
    const engine = await Engine.load(await convertedModel(m, 'FP32', 1));
    const tokens = randomTokens(rng(freshSeed('sharded')), 8, m.config.vocabSize);
    const ck = openCheckpoint(m.dir);
    const want = referenceLogits(m.config, (n) => ck.source.readF32(n), tokens);
    ck.source.close();
    const seq = engine.createSequence();
    const [r] = await engine.step([{ sequence: seq, tokens, logits: 'last', sample: false }]);
    const last = want[want.length - 1];
    let num = 0;
    let den = 0;
    last.forEach((v, i) => {
      num += (r.logits![i] - v) ** 2;
      den += v * v;
    });
    expect(Math.sqrt(num / den)).toBeLessThan(1e-4);
  });

  it('converts the GGUF twin of a checkpoint (Q/K rows un-permuted) to the same model', async () => {
    const m = testModel('gguf-twin', { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, gguf: 'F32' });
    const fromSafetensors = await Engine.load(await convertedModel(m, 'FP32', 0));
    const output = join(workDir, 'gguf-twin.from-gguf.npu');
    const summary = await convert({ input: join(m.dir, 'model.gguf'), output, precision: 'FP32', optimizeLevel: 0 });
    expect(summary.sourceFormat).toBe('gguf');
    const fromGguf = await Engine.load(output);
    const tokens = randomTokens(rng(freshSeed('gguf twin')), 9, m.config.vocabSize);
    const run = async (e: Engine) => (await e.step([{ sequence: e.createSequence(), tokens, logits: 'all', sample: false }]))[0].logits!;
    expect(await run(fromGguf)).toEqual(await run(fromSafetensors));
  });

  it('names what is missing from a folder that is not a checkpoint', () => {
    const dir = join(workDir, 'empty-ckpt');
    mkdirSync(dir, { recursive: true });
    expect(() => openCheckpoint(dir)).toThrow(/empty-ckpt: no config\.json/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...MISTRAL_7B_V03, num_key_value_heads: 5 }));
    expect(() => openCheckpoint(dir)).toThrow(/num_attention_heads 32 is not a multiple of num_key_value_heads 5/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(MISTRAL_7B_V03));
    expect(() => openCheckpoint(dir)).toThrow(/no model\.safetensors or model\.safetensors\.index\.json/);
    writeSafetensors(join(dir, 'model.safetensors'), [{ name: 'model.norm.weight', dtype: 'F32', shape: [2], data: () => Float32Array.of(1, 2) }], { format: 'pt' });
    expect(() => openCheckpoint(dir)).toThrow(/empty-ckpt: no tokenizer\.json/);
  });
});
