// Source checkpoints as users have them: the verbatim Mistral-7B-v0.3 config.json, sharded BF16
// safetensors with an index, qwen2/llama variants made by `npuserve make-test-model`, config fields
// the engine does not implement refused by `npuserve convert`, and folders that are not checkpoints.
import { spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { openCheckpoint } from '../../runtime/convert/checkpoint.js';
import { convert, planTensors } from '../../runtime/convert/convert.js';
import { writeSafetensors } from '../../runtime/convert/safetensors.js';
import { Engine } from '../../runtime/engine.js';
import { fromHfConfig } from '../../runtime/model-config.js';
import type { TestModelOptions } from '../../runtime/testmodel.js';
import { mistralV3Vocab } from '../../runtime/tokenizer/mistral-v3.js';
import { sentencePieceJson } from '../../runtime/tokenizer/vocab-json.js';
import { expectIdenticalFloats } from './floats.js';
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

const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');

function npuserve(...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('architectures through the CLI (make-test-model, then convert)', () => {
  const small = ['--layers', '1', '--hidden', '64', '--heads', '4', '--kv-heads', '2', '--intermediate', '96'];
  const make = (name: string, ...flags: string[]) => {
    const dir = join(workDir, name);
    const r = npuserve('make-test-model', '--out', dir, ...small, ...flags);
    expect(r.code, r.stderr).toBe(0);
    return { dir, config: JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown> };
  };
  const convertDir = (dir: string) => npuserve('convert', '--input', dir, '--precision', 'FP32', '--optimize-level', '1', '--output', `${dir}.npu`, '--json');

  it('writes and converts qwen2 (biases in the safetensors, sliding window off)', () => {
    const m = make('cli-qwen2', '--architecture', 'qwen2');
    expect(m.config).toMatchObject({ model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], use_sliding_window: false, rope_scaling: null });
    const r = convertDir(m.dir);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).accuracy.cosineSimilarity).toBeCloseTo(1, 6);
  });

  it('writes and converts llama with attention_bias and llama3 RoPE scaling', () => {
    const m = make('cli-llama3', '--architecture', 'llama', '--attention-bias', '--rope-scaling', 'llama3:8');
    expect(m.config).toMatchObject({
      model_type: 'llama',
      attention_bias: true,
      mlp_bias: false,
      rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 },
    });
    expect(convertDir(m.dir).code).toBe(0);
  });

  it.each([
    [{ hidden_act: 'gelu' }, /config\.json: 'hidden_act' "gelu" is not supported: the MLP is SwiGLU with silu only/],
    [{ rope_scaling: { rope_type: 'dynamic', factor: 2 } }, /config\.json: 'rope_scaling\.rope_type' "dynamic" is not supported: implemented RoPE scalings are default, linear and llama3/],
    [{ rope_scaling: { type: 'yarn', factor: 4, original_max_position_embeddings: 4096 } }, /'rope_scaling\.rope_type' "yarn" is not supported/],
    [{ mlp_bias: true }, /'mlp_bias' true is not supported/],
    [{ use_sliding_window: true }, /'use_sliding_window' true is not supported/],
    [{ model_type: 'gemma2' }, /'model_type' "gemma2" is not supported/],
    [{ rope_parameters: { rope_type: 'default' } }, /'rope_parameters' is not a config\.json field npuserve knows/],
  ])('convert refuses %j naming the field, and writes nothing', (patch, message) => {
    const m = make(`cli-refused-${Object.keys(patch)[0]}`, '--architecture', 'llama');
    writeFileSync(join(m.dir, 'config.json'), JSON.stringify({ ...m.config, ...patch }));
    const r = convertDir(m.dir);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(() => readFileSync(`${m.dir}.npu`)).toThrow(/ENOENT/);
  });

  it('refuses bias tensors the config does not declare, and declared biases that are missing', () => {
    const m = make('cli-undeclared-bias', '--architecture', 'llama', '--attention-bias');
    writeFileSync(join(m.dir, 'config.json'), JSON.stringify({ ...m.config, attention_bias: false }));
    expect(convertDir(m.dir).stderr).toMatch(/tensor 'model\.layers\.0\.self_attn\.q_proj\.bias' is present but a llama config with attention_bias false has no such bias/);
    const plain = make('cli-missing-bias', '--architecture', 'llama');
    writeFileSync(join(plain.dir, 'config.json'), JSON.stringify({ ...plain.config, attention_bias: true }));
    expect(convertDir(plain.dir).stderr).toMatch(/tensor 'model\.layers\.0\.self_attn\.q_proj\.bias' is missing/);
  });

  it('make-test-model refuses combinations no checkpoint has', () => {
    expect(npuserve('make-test-model', '--out', join(workDir, 'x'), '--attention-bias').stderr).toMatch(/--attention-bias needs --architecture llama or qwen2/);
    expect(npuserve('make-test-model', '--out', join(workDir, 'x'), '--rope-scaling', 'yarn:4').stderr).toMatch(/--rope-scaling must be linear:FACTOR or llama3:FACTOR/);
    expect(npuserve('make-test-model', '--out', join(workDir, 'x'), '--architecture', 'gemma').stderr).toMatch(/--architecture must be mistral, llama or qwen2, got 'gemma'/);
  });
});

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

  const relativeError = (got: Float32Array, want: Float32Array) => {
    let num = 0;
    let den = 0;
    want.forEach((v, i) => {
      num += (got[i] - v) ** 2;
      den += v * v;
    });
    return Math.sqrt(num / den);
  };

  // Each architecture's GGUF form: llama's Q/K rows (and biases) permuted by llama.cpp's converter,
  // qwen2's not; biases and RoPE scaling carried as GGUF keys and tensors.
  it.each([
    ['mistral', {}],
    ['qwen2', { architecture: 'qwen2', tied: true }],
    ['llama-bias-linear', { architecture: 'llama', attentionBias: true, ropeScaling: { type: 'linear', factor: 4 } }],
    ['llama3-rope', { architecture: 'llama', ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 } }],
  ] as const)('converts the GGUF twin of a %s checkpoint to the same model', async (name, arch) => {
    const m = testModel(`gguf-twin-${name}`, { layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, gguf: 'F32', ...arch } as Partial<TestModelOptions>);
    const fromSafetensors = await Engine.load(await convertedModel(m, 'FP32', 0));
    const output = join(workDir, `gguf-twin-${name}.from-gguf.npu`);
    const summary = await convert({ input: join(m.dir, 'model.gguf'), output, precision: 'FP32', optimizeLevel: 0 });
    expect(summary.sourceFormat).toBe('gguf');
    const fromGguf = await Engine.load(output);
    // GGUF has no mistral architecture: Mistral models are stored (and read back) as llama.
    expect(fromGguf.metadata.config.architecture).toBe(m.config.architecture === 'mistral' ? 'llama' : m.config.architecture);
    const tokens = randomTokens(rng(freshSeed(`gguf twin ${name}`)), 40, m.config.vocabSize);
    const run = async (e: Engine) => (await e.step([{ sequence: e.createSequence(), tokens, logits: 'all', sample: false }]))[0].logits!;
    const [got, want] = [await run(fromGguf), await run(fromSafetensors)];
    // Llama 3 scaling comes back from GGUF as per-pair frequency factors (float32), so its RoPE
    // angles may differ in the last bit; everything else is the same model bit for bit.
    if (name !== 'llama3-rope') expectIdenticalFloats(got, want, 'logits from the GGUF and from the safetensors');
    else expect(relativeError(got, want)).toBeLessThan(1e-5);
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
