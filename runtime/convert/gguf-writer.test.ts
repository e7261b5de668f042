// GGUF writer: round trips per stored type through the model view against references computed
// here, llama.cpp's Q/K row order, and what a llama GGUF cannot hold; the F32 twin of a GGUF.
import { readdirSync, writeFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { BASE_CONFIG, buildGguf, GGML, randomTensors, T, testVocab, type Kv } from '../../test/unit/gguf-builder.js';
import { rng as mulberry32 } from '../../test/unit/random.js';
import type { ModelConfig } from '../model-config.js';
import { GgufFile } from './gguf.js';
import { GgufCheckpoint } from './gguf-model.js';
import { writeF32Twin, writeGguf, writeGgufTwin, type GgufWeightDType } from './gguf-writer.js';
import { f16ToF32, f32ToF16 } from './tensors.js';
import { tempFiles } from '../../test/unit/temp-files.js';

const { dir, tempPath } = tempFiles('gguf-writer');

const SEED = Number(process.env.NPUSERVE_TEST_SEED ?? Date.now() % 2 ** 31);
console.log(`gguf-writer.test.ts: seed ${SEED} (rerun with NPUSERVE_TEST_SEED=${SEED})`);


function writeModel(dtype: GgufWeightDType, config = BASE_CONFIG, seed = SEED) {
  const rand = mulberry32(seed);
  const tensors = randomTensors(config, rand);
  const vocab = testVocab(config.vocabSize, rand);
  const path = tempPath(`model-${dtype}.gguf`);
  writeGguf(path, { config, tensors, vocab, dtype, name: 'test model', chatTemplate: '{{ bos_token }}{{ messages }}' });
  return { path, tensors, vocab, config };
}

/** Float64 reference of Q8_0: d = max|x| / 127 per block of 32, q = round(x / d), value = f16(d) * q. */
function q8Reference(x: Float32Array): { values: Float64Array; nearTie: Uint8Array } {
  const values = new Float64Array(x.length);
  const nearTie = new Uint8Array(x.length);
  for (let b = 0; b < x.length; b += 32) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b + j]));
    const d = amax / 127;
    const stored = f16ToF32(f32ToF16(d));
    for (let j = 0; j < 32; j++) {
      const t = d === 0 ? 0 : x[b + j] / d;
      const q = Math.sign(t) * Math.floor(Math.abs(t) + 0.5);
      values[b + j] = stored * q;
      nearTie[b + j] = Math.abs(Math.abs(t) - Math.floor(Math.abs(t)) - 0.5) < 1e-4 ? 1 : 0;
    }
  }
  return { values, nearTie };
}

/** Float64 reference of Q4_0: d = m / -8 (m the value of largest magnitude), q = min(15, floor(x/d + 8.5)). */
function q4Reference(x: Float32Array): { values: Float64Array; nearTie: Uint8Array } {
  const values = new Float64Array(x.length);
  const nearTie = new Uint8Array(x.length);
  for (let b = 0; b < x.length; b += 32) {
    let m = 0;
    for (let j = 0; j < 32; j++) if (Math.abs(x[b + j]) > Math.abs(m)) m = x[b + j];
    const d = m / -8;
    const stored = f16ToF32(f32ToF16(d));
    for (let j = 0; j < 32; j++) {
      const t = (d === 0 ? 0 : x[b + j] / d) + 8.5;
      const q = Math.min(15, Math.floor(t));
      values[b + j] = (q - 8) * stored;
      nearTie[b + j] = Math.abs(t - Math.round(t)) < 1e-4 ? 1 : 0;
    }
  }
  return { values, nearTie };
}

/** Compares dequantized values with a reference; at a rounding tie float32 and float64 may differ by one step. */
function expectQuantized(name: string, got: Float32Array, ref: { values: Float64Array; nearTie: Uint8Array }): number {
  expect(got.length).toBe(ref.values.length);
  let ties = 0;
  for (let i = 0; i < got.length; i++) {
    if (got[i] === ref.values[i]) continue;
    const step = Math.abs(ref.values[i] - got[i]);
    if (!ref.nearTie[i] || step > 1.01 * Math.abs(f16ToF32(f32ToF16(Math.abs(ref.values[i]) / 7)) * 8 + 1)) {
      expect.fail(`${name}[${i}]: got ${got[i]}, reference ${ref.values[i]}`);
    }
    ties++;
  }
  return ties;
}

/** llama.cpp's permute: w.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(w.shape). */
function llamaCppPermute(w: Float32Array, nHead: number, rows: number, cols: number): Float32Array {
  const half = rows / nHead / 2;
  const out = new Float32Array(w.length);
  let dst = 0;
  for (let h = 0; h < nHead; h++) {
    for (let i = 0; i < half; i++) {
      for (let s = 0; s < 2; s++) {
        const src = h * 2 * half + s * half + i;
        out.set(w.subarray(src * cols, (src + 1) * cols), dst * cols);
        dst++;
      }
    }
  }
  return out;
}

describe('writeGguf and GgufCheckpoint round trips', () => {
  it('F32: every tensor reads back exactly under its HF name', () => {
    const { path, tensors } = writeModel('F32');
    const ck = new GgufCheckpoint(path);
    try {
      expect([...ck.tensors.keys()].sort()).toEqual(tensors.map((t) => t.name).sort());
      for (const t of tensors) {
        expect(ck.tensors.get(t.name)).toEqual({ name: t.name, dtype: 'F32', shape: t.shape });
        expect(ck.readF32(t.name), t.name).toEqual(t.data);
      }
    } finally {
      ck.close();
    }
  });

  it('F16: matrices within half precision, norm vectors exact', () => {
    const { path, tensors } = writeModel('F16');
    const ck = new GgufCheckpoint(path);
    try {
      for (const t of tensors) {
        const got = ck.readF32(t.name);
        if (t.shape.length === 1) {
          expect(ck.tensors.get(t.name)!.dtype).toBe('F32');
          expect(got).toEqual(t.data);
          continue;
        }
        expect(ck.tensors.get(t.name)!.dtype).toBe('F16');
        for (let i = 0; i < got.length; i++) {
          const tolerance = Math.max(Math.abs(t.data[i]) * 2 ** -11, 2 ** -25);
          if (Math.abs(got[i] - t.data[i]) > tolerance) expect.fail(`${t.name}[${i}]: ${got[i]} vs ${t.data[i]}`);
        }
      }
    } finally {
      ck.close();
    }
  });

  for (const [dtype, reference] of [['Q8_0', q8Reference], ['Q4_0', q4Reference]] as const) {
    it(`${dtype}: dequantized values match a float64 reference of the quantization`, () => {
      const { path, tensors } = writeModel(dtype);
      const ck = new GgufCheckpoint(path);
      let ties = 0;
      let values = 0;
      try {
        expect(ck.file.metadata.get('general.file_type')).toBe(dtype === 'Q8_0' ? 7 : 2);
        for (const t of tensors) {
          const got = ck.readF32(t.name);
          if (t.shape.length === 1) {
            expect(got).toEqual(t.data);
            continue;
          }
          expect(ck.tensors.get(t.name)!.dtype).toBe(dtype);
          ties += expectQuantized(t.name, got, reference(t.data));
          values += got.length;
        }
      } finally {
        ck.close();
      }
      expect(ties).toBeLessThan(values / 1000);
    });
  }

  it('quantized types fall back to F16 for matrices whose rows are not whole blocks', () => {
    const config = { ...BASE_CONFIG, intermediateSize: 48 };
    const { path, tensors } = writeModel('Q4_0', config);
    const ck = new GgufCheckpoint(path);
    try {
      expect(ck.tensors.get('model.layers.0.mlp.down_proj.weight')!.dtype).toBe('F16'); // [64, 48]
      expect(ck.tensors.get('model.layers.0.mlp.up_proj.weight')!.dtype).toBe('Q4_0'); // [48, 64]
      const down = tensors.find((t) => t.name === 'model.layers.0.mlp.down_proj.weight')!;
      const got = ck.readF32(down.name);
      for (let i = 0; i < got.length; i++) expect(Math.abs(got[i] - down.data[i])).toBeLessThanOrEqual(Math.abs(down.data[i]) * 2 ** -11 + 2 ** -25);
    } finally {
      ck.close();
    }
  });

  it('stores q_proj/k_proj rows in llama.cpp order and reads back the HF rows exactly', () => {
    const { path, tensors, config } = writeModel('F32');
    const file = new GgufFile(path);
    const ck = new GgufCheckpoint(path);
    try {
      for (const [hf, gguf, heads] of [
        ['model.layers.1.self_attn.q_proj.weight', 'blk.1.attn_q.weight', config.numHeads],
        ['model.layers.1.self_attn.k_proj.weight', 'blk.1.attn_k.weight', config.numKvHeads],
      ] as const) {
        const t = tensors.find((x) => x.name === hf)!;
        const stored = file.readF32(gguf);
        expect(stored).not.toEqual(t.data);
        expect(stored).toEqual(llamaCppPermute(t.data, heads, t.shape[0], t.shape[1]));
        expect(ck.readF32(hf)).toEqual(t.data);
      }
      const v = tensors.find((x) => x.name === 'model.layers.1.self_attn.v_proj.weight')!;
      expect(file.readF32('blk.1.attn_v.weight')).toEqual(v.data);
    } finally {
      file.close();
      ck.close();
    }
  });


  it('round-trips the config, vocabulary and chat template, and writes the keys llama.cpp reads', () => {
    const config = { ...BASE_CONFIG, headDim: 32, numKvHeads: 1, tieWordEmbeddings: true, bosTokenId: 3, eosTokenId: 4 };
    const { path, vocab } = writeModel('Q8_0', config);
    const ck = new GgufCheckpoint(path);
    try {
      expect(ck.config).toEqual(config);
      expect(ck.vocab).toEqual(vocab);
      expect(ck.chatTemplate).toBe('{{ bos_token }}{{ messages }}');
      expect(ck.tensors.has('lm_head.weight')).toBe(false);
      const m = ck.file.metadata;
      expect(ck.file.version).toBe(3);
      expect(ck.file.tensors.has('output.weight')).toBe(false);
      expect(m.get('general.architecture')).toBe('llama');
      expect(m.get('general.name')).toBe('test model');
      expect(m.get('llama.rope.dimension_count')).toBe(32);
      expect(m.get('llama.attention.key_length')).toBe(32);
      expect(m.get('llama.vocab_size')).toBe(40);
      expect(m.get('tokenizer.ggml.model')).toBe('llama');
      expect(m.get('tokenizer.ggml.add_bos_token')).toBe(true);
      expect(m.get('tokenizer.ggml.unknown_token_id')).toBe(0);
      for (const t of ck.file.tensors.values()) expect((t.offset - ck.file.dataOffset) % 32).toBe(0);
    } finally {
      ck.close();
    }
  });

  it('refuses to write what a llama GGUF cannot hold, leaving no file behind', () => {
    const rand = mulberry32(SEED);
    const tensors = randomTensors(BASE_CONFIG, rand);
    const vocab = testVocab(BASE_CONFIG.vocabSize, rand);
    const path = tempPath('refused.gguf');
    const write = (o: Partial<Parameters<typeof writeGguf>[1]>) => () => writeGguf(path, { config: BASE_CONFIG, tensors, vocab, dtype: 'F16', ...o });
    expect(write({ tensors: tensors.filter((t) => t.name !== 'lm_head.weight') })).toThrow(/tensor 'lm_head.weight' is missing/);
    expect(write({ tensors: [...tensors, { name: 'model.layers.0.self_attn.q_proj.bias', shape: [64], data: new Float32Array(64) }] })).toThrow(
      /tensor 'model.layers.0.self_attn.q_proj.bias' has no place in a 2-layer llama GGUF/,
    );
    expect(write({ tensors: tensors.map((t) => (t.name === 'model.norm.weight' ? { ...t, shape: [32] } : t)) })).toThrow(
      /tensor 'model.norm.weight' has shape \[32\], the config needs \[64\]/,
    );
    expect(write({ config: { ...BASE_CONFIG, slidingWindow: 1024 } })).toThrow(/no sliding window/);
    expect(write({ vocab: { ...vocab, scores: vocab.scores.slice(1) } })).toThrow(/vocab.scores has 39 entries, the config's vocabulary has 40/);
    const late = tensors.map((t) => (t.name === 'model.norm.weight' ? { ...t, data: () => new Float32Array(3) } : t));
    expect(write({ tensors: late })).toThrow(/tensor 'model.norm.weight': shape \[64\] does not match 3 values/);
    expect(readdirSync(dir).filter((f) => f.includes('refused'))).toEqual([]);
  });
});


describe('writeGguf: qwen2, attention biases and RoPE scaling', () => {
  const QWEN2: ModelConfig = { ...BASE_CONFIG, architecture: 'qwen2', attentionBias: true };

  it('qwen2 with biases: qwen2.* keys, Q/K rows and biases stored in HF order, everything read back exactly', () => {
    const { path, tensors } = writeModel('F32', QWEN2);
    const file = new GgufFile(path);
    const ck = new GgufCheckpoint(path);
    try {
      expect(ck.config).toEqual(QWEN2);
      expect(file.metadata.get('general.architecture')).toBe('qwen2');
      expect(file.metadata.get('qwen2.block_count')).toBe(2);
      expect(file.metadata.has('llama.block_count')).toBe(false);
      for (const t of tensors) expect(ck.readF32(t.name), t.name).toEqual(t.data);
      const q = tensors.find((t) => t.name === 'model.layers.1.self_attn.q_proj.weight')!;
      expect(file.readF32('blk.1.attn_q.weight')).toEqual(q.data);
      const kBias = tensors.find((t) => t.name === 'model.layers.0.self_attn.k_proj.bias')!;
      expect(file.readF32('blk.0.attn_k.bias')).toEqual(kBias.data);
    } finally {
      file.close();
      ck.close();
    }
  });

  it('llama with biases: q/k biases interleaved like their weights', () => {
    const config = { ...BASE_CONFIG, attentionBias: true };
    const { path, tensors } = writeModel('Q8_0', config);
    const file = new GgufFile(path);
    const ck = new GgufCheckpoint(path);
    try {
      expect(ck.config).toEqual(config);
      for (const [hf, gguf, heads] of [
        ['model.layers.0.self_attn.q_proj.bias', 'blk.0.attn_q.bias', config.numHeads],
        ['model.layers.0.self_attn.k_proj.bias', 'blk.0.attn_k.bias', config.numKvHeads],
      ] as const) {
        const t = tensors.find((x) => x.name === hf)!;
        expect(ck.tensors.get(hf)!.dtype).toBe('F32');
        expect(file.readF32(gguf)).toEqual(llamaCppPermute(t.data, heads, t.shape[0], 1));
        expect(ck.readF32(hf)).toEqual(t.data);
      }
    } finally {
      file.close();
      ck.close();
    }
  });

  it('linear scaling as keys, frequency factors as rope_freqs.weight', () => {
    const linear: ModelConfig = { ...BASE_CONFIG, ropeScaling: { type: 'linear', factor: 8 } };
    const factors = Array.from({ length: 8 }, (_, i) => Math.fround(1 + i * 0.37));
    const freq: ModelConfig = { ...QWEN2, ropeScaling: { type: 'freq-factors', factors } };
    for (const config of [linear, freq]) {
      const { path } = writeModel('F16', config);
      const ck = new GgufCheckpoint(path);
      ck.close();
      expect(ck.config).toEqual(config);
    }
  });

  it("Llama 3 scaling becomes llama.cpp's rope_freqs factors, computed as Hugging Face scales inv_freq", () => {
    const scaling = { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const;
    const config: ModelConfig = { ...BASE_CONFIG, ropeScaling: scaling };
    const { path } = writeModel('F32', config);
    const ck = new GgufCheckpoint(path);
    ck.close();
    const got = ck.config.ropeScaling;
    if (got?.type !== 'freq-factors') return expect.fail(`ropeScaling ${JSON.stringify(got)}`);
    // transformers' _compute_llama3_parameters: the scaled inv_freq, then factor = inv_freq / scaled
    const expected = Array.from({ length: config.headDim / 2 }, (_, i) => {
      const invFreq = 1 / config.ropeTheta ** ((2 * i) / config.headDim);
      const wavelen = (2 * Math.PI) / invFreq;
      const [lowWavelen, highWavelen] = [8192 / 1, 8192 / 4];
      const long = wavelen > lowWavelen ? invFreq / 8 : invFreq;
      const smooth = (8192 / wavelen - 1) / (4 - 1);
      const scaled = wavelen >= highWavelen && wavelen <= lowWavelen ? ((1 - smooth) * long) / 8 + smooth * long : long;
      return invFreq / scaled;
    });
    expect(new Set(expected.map((f) => (f === 1 ? 'high' : f === 8 ? 'low' : 'medium')))).toEqual(new Set(['high', 'low', 'medium']));
    expect(got.factors.length).toBe(expected.length);
    got.factors.forEach((f, i) => expect(f).toBeCloseTo(expected[i], 5));
  });
});

describe('writeF32Twin', () => {
  /** A GGUF with every kind of metadata value and tensors of several stored types, from seeded random bytes. */
  function sourceFile(kv: Kv[], saneScales = false): string {
    const rand = mulberry32(SEED ^ 0x7477_696e);
    const bytes = (n: number) => Uint8Array.from({ length: n }, () => Math.floor(rand() * 256));
    // With saneScales, the f16 scale and minimum opening each Q4_1 and Q4_K block are 0.01 and 0.02
    // instead of random bits (which can be infinite, NaN or far beyond any weight).
    const scaled = (data: Uint8Array, blockBytes: number) => {
      if (saneScales) for (let o = 0; o < data.length; o += blockBytes) data.set([0x1f, 0x21, 0x1f, 0x25], o);
      return data;
    };
    const path = tempPath('twin-source.gguf');
    writeFileSync(path, buildGguf({
      kv,
      tensors: [
        { name: 'q4_1', ne: [64, 3], type: GGML.Q4_1, data: scaled(bytes(6 * 20), 20) },
        { name: 'blk.0.attn_q.weight', ne: [256, 2], type: 12, data: scaled(bytes(2 * 144), 144) }, // Q4_K
        { name: 'q6_k', ne: [256], type: 14, data: bytes(210) },
        { name: 'f16', ne: [5, 2, 3], type: GGML.F16, data: new Uint8Array(new Uint16Array(30).map((_, i) => 0x3c00 + 7 * i).buffer) },
        { name: 'f32', ne: [3], type: GGML.F32, data: new Uint8Array(Float32Array.of(1.5, -2, 3.25).buffer) },
      ],
    }).bytes);
    return path;
  }
  const METADATA: Kv[] = [
    ['general.architecture', T.STRING, 'llama'], ['general.alignment', T.U32, 64], ['general.file_type', T.U32, 15],
    ['u8', T.U8, 200], ['i16', T.I16, -3], ['u64', T.U64, 2 ** 40], ['f64', T.F64, 0.1], ['flag', T.BOOL, true],
    ['tokenizer.ggml.tokens', T.ARRAY, [T.STRING, ['<s>', 'é', '▁日本']]], ['tokenizer.ggml.scores', T.ARRAY, [T.F32, [0, -1.5, -2]]],
    ['nested', T.ARRAY, [T.ARRAY, [[T.I32, [1, -2]], [T.I32, []]]]],
  ];

  it('copies every metadata value byte for byte, sets general.file_type to 0, and stores our dequantization as F32', () => {
    const src = sourceFile(METADATA);
    const dest = tempPath('twin.gguf');
    writeF32Twin(src, dest);
    const [a, b] = [new GgufFile(src), new GgufFile(dest)];
    try {
      expect([...b.metadata.keys()]).toEqual([...a.metadata.keys()]);
      for (const key of a.metadata.keys()) {
        if (key === 'general.file_type') continue;
        expect(b.rawValue(key), key).toEqual(a.rawValue(key));
      }
      expect(a.metadata.get('general.file_type')).toBe(15);
      expect(b.metadata.get('general.file_type')).toBe(0);
      expect(b.alignment).toBe(64);
      expect([...b.tensors.keys()]).toEqual([...a.tensors.keys()]);
      for (const t of a.tensors.values()) {
        expect(b.tensors.get(t.name)).toMatchObject({ dtype: 'F32', shape: t.shape, ggmlType: 0 });
        const [want, got] = [a.readF32(t.name), b.readF32(t.name)];
        expect(got.length).toBe(want.length);
        for (let i = 0; i < got.length; i++) if (!Object.is(got[i], want[i])) expect.fail(`${t.name}[${i}]: twin ${got[i]}, source ${want[i]}`);
      }
    } finally {
      a.close();
      b.close();
    }
    expect(readdirSync(dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('Q8_0 twin: matrices with whole 32-value rows re-quantized as Q8_0, the others F16, vectors F32, metadata copied', () => {
    const src = sourceFile(METADATA.filter(([key]) => key !== 'general.file_type'), true);
    const dest = tempPath('twin-q8.gguf');
    writeGgufTwin(src, dest, 'Q8_0');
    const [a, b] = [new GgufFile(src), new GgufFile(dest)];
    try {
      for (const key of a.metadata.keys()) expect(b.rawValue(key), key).toEqual(a.rawValue(key));
      expect(b.metadata.get('general.file_type')).toBe(7);
      expect(b.metadata.get('general.quantization_version')).toBe(2);
      let checkedBlocks = 0;
      const expected: Record<string, string> = { q4_1: 'Q8_0', 'blk.0.attn_q.weight': 'Q8_0', q6_k: 'F32', f16: 'F16', f32: 'F32' };
      for (const t of a.tensors.values()) {
        expect(b.tensors.get(t.name), t.name).toMatchObject({ dtype: expected[t.name], shape: t.shape });
        const [want, got] = [a.readF32(t.name), b.readF32(t.name)];
        // Q8_0 keeps each value within half a step (max |x| / 127 per block), plus the f16 rounding of
        // the step, which 127 levels multiply: 0.5 + 127 * 2^-11 < 0.57 steps.
        for (let base = 0; base < want.length; base += 32) {
          const block = want.subarray(base, base + 32);
          const step = Math.max(...block.map(Math.abs)) / 127;
          if (!Number.isFinite(step)) continue; // the q6_k vector's scale is random bits
          checkedBlocks++;
          for (let i = 0; i < block.length; i++) expect(Math.abs(got[base + i] - block[i]), `${t.name}[${base + i}]`).toBeLessThanOrEqual(expected[t.name] === 'Q8_0' ? step * 0.57 + 1e-7 : Math.abs(block[i]) * 1e-3);
        }
      }
      expect(checkedBlocks).toBeGreaterThanOrEqual(22); // 6 Q4_1 and 16 Q4_K blocks of 32
    } finally {
      a.close();
      b.close();
    }
  });

  it('adds general.file_type when the source has none', () => {
    const src = sourceFile(METADATA.filter(([key]) => key !== 'general.file_type'));
    const dest = tempPath('twin-no-type.gguf');
    writeF32Twin(src, dest);
    const f = new GgufFile(dest);
    f.close();
    expect(f.metadata.get('general.file_type')).toBe(0);
    expect(f.metadata.size).toBe(METADATA.length);
  });
});
