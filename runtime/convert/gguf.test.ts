// GGUF reader and writer: round trips per stored type against references computed here, llama.cpp's
// Q/K row order, one test per class of malformed input, and a seeded fuzz of the parser.
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { byteMutation, expectFormatError, fuzzFiles } from '../../test/unit/fuzz.js';
import { rng as mulberry32 } from '../../test/unit/random.js';
import { FormatError } from '../errors.js';
import type { ModelConfig } from '../model-config.js';
import { GgufCheckpoint, GgufFile, writeGguf, type GgufTensorToWrite, type GgufVocab, type GgufWeightDType } from './gguf.js';
import { f16ToF32, f32ToF16 } from './tensors.js';

const SEED = Number(process.env.NPUSERVE_TEST_SEED ?? Date.now() % 2 ** 31);
console.log(`gguf.test.ts: seed ${SEED} (rerun with NPUSERVE_TEST_SEED=${SEED})`);

const dir = mkdtempSync(join(tmpdir(), 'npuserve-gguf-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tempPath = (name: string) => join(dir, `${fileCounter++}-${name}`);

// ---- A hand-made GGUF builder, independent of the module under test ----

const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 };
const GGML = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, BF16: 30 };

type Kv = [key: string, type: number, value: unknown];
interface HandTensor {
  name: string;
  ne: number[]; // innermost first, as GGUF stores it
  type: number;
  data: Uint8Array;
  offset?: number; // relative to the data section; next aligned offset when absent
}
interface HandFile {
  version?: number;
  kv: Kv[];
  tensors: HandTensor[];
}
interface Built {
  bytes: Uint8Array;
  /** Byte offset of every uint64 count, length, dimension and data offset, by label. */
  fields: Map<string, number>;
}

class ByteSink {
  readonly out: number[] = [];
  readonly fields = new Map<string, number>();
  private scratch = new DataView(new ArrayBuffer(8));

  private put(n: number): void {
    for (let i = 0; i < n; i++) this.out.push(this.scratch.getUint8(i));
  }
  u32(v: number): void {
    this.scratch.setUint32(0, v, true);
    this.put(4);
  }
  u64(v: number | bigint, label?: string): void {
    if (label) this.fields.set(label, this.out.length);
    this.scratch.setBigUint64(0, BigInt.asUintN(64, BigInt(v)), true);
    this.put(8);
  }
  str(s: string, label?: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.length, label);
    this.out.push(...b);
  }
  value(type: number, v: unknown, label: string): void {
    const s = this.scratch;
    switch (type) {
      case T.U8: case T.BOOL: s.setUint8(0, Number(v)); return this.put(1);
      case T.I8: s.setInt8(0, v as number); return this.put(1);
      case T.U16: s.setUint16(0, v as number, true); return this.put(2);
      case T.I16: s.setInt16(0, v as number, true); return this.put(2);
      case T.U32: s.setUint32(0, v as number, true); return this.put(4);
      case T.I32: s.setInt32(0, v as number, true); return this.put(4);
      case T.F32: s.setFloat32(0, v as number, true); return this.put(4);
      case T.STRING: return this.str(v as string, `string:${label}`);
      case T.ARRAY: {
        const [elementType, values] = v as [number, unknown[]];
        this.u32(elementType);
        this.u64(values.length, `array:${label}`);
        values.forEach((x, i) => this.value(elementType, x, `${label}[${i}]`));
        return;
      }
      case T.U64: s.setBigUint64(0, BigInt(v as number), true); return this.put(8);
      case T.I64: s.setBigInt64(0, BigInt(v as number), true); return this.put(8);
      case T.F64: s.setFloat64(0, v as number, true); return this.put(8);
      default: return; // not a GGUF type: the parser must stop at the type, so no value follows
    }
  }
}

function buildGguf(spec: HandFile): Built {
  const sink = new ByteSink();
  sink.out.push(0x47, 0x47, 0x55, 0x46);
  sink.u32(spec.version ?? 3);
  sink.u64(spec.tensors.length, 'tensor count');
  sink.u64(spec.kv.length, 'kv count');
  for (const [key, type, value] of spec.kv) {
    sink.str(key, `key:${key}`);
    sink.u32(type);
    sink.value(type, value, key);
  }
  const alignment = (spec.kv.find(([k]) => k === 'general.alignment')?.[2] as number | undefined) ?? 32;
  const align = (n: number) => Math.ceil(n / alignment) * alignment;
  let next = 0;
  const offsets = spec.tensors.map((t) => {
    const o = t.offset ?? next;
    next = align(o + t.data.length);
    return o;
  });
  spec.tensors.forEach((t, i) => {
    sink.str(t.name, `name:${t.name}`);
    sink.u32(t.ne.length);
    t.ne.forEach((n, d) => sink.u64(n, `dim:${t.name}:${d}`));
    sink.u32(t.type);
    sink.u64(offsets[i], `offset:${t.name}`);
  });
  const dataStart = align(sink.out.length);
  const dataEnd = Math.max(0, ...spec.tensors.map((t, i) => offsets[i] + t.data.length));
  const bytes = new Uint8Array(dataStart + dataEnd);
  bytes.set(sink.out);
  spec.tensors.forEach((t, i) => bytes.set(t.data, dataStart + offsets[i]));
  return { bytes, fields: sink.fields };
}

function setU64(bytes: Uint8Array, at: number, v: bigint): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(at, v, true);
  return bytes;
}

const f32Bytes = (values: ArrayLike<number>) => new Uint8Array(Float32Array.from(values).buffer);

function writeTemp(name: string, bytes: Uint8Array): string {
  const path = tempPath(name);
  writeFileSync(path, bytes);
  return path;
}

/** Tiny llama metadata for hand-made checkpoints. */
function llamaKv(c: { hidden: number; heads: number; kvHeads: number; headDim: number; inter: number; vocab: number; layers: number }): Kv[] {
  return [
    ['general.architecture', T.STRING, 'llama'],
    ['llama.context_length', T.U32, 256],
    ['llama.embedding_length', T.U32, c.hidden],
    ['llama.block_count', T.U32, c.layers],
    ['llama.feed_forward_length', T.U32, c.inter],
    ['llama.attention.head_count', T.U32, c.heads],
    ['llama.attention.head_count_kv', T.U32, c.kvHeads],
    ['llama.attention.key_length', T.U32, c.headDim],
    ['llama.attention.layer_norm_rms_epsilon', T.F32, 1e-6],
    ['tokenizer.ggml.tokens', T.ARRAY, [T.STRING, Array.from({ length: c.vocab }, (_, i) => `tok${i}`)]],
  ];
}

/** Every tensor of a hand-made llama GGUF as F32, with `fill(ggufName, row, col)` as its values. */
function llamaTensorsF32(
  c: { hidden: number; heads: number; kvHeads: number; headDim: number; inter: number; vocab: number; layers: number },
  fill: (name: string, row: number, col: number) => number,
): HandTensor[] {
  const [D, Q, KV, I] = [c.hidden, c.heads * c.headDim, c.kvHeads * c.headDim, c.inter];
  const shapes: Array<[string, number[]]> = [['token_embd.weight', [c.vocab, D]]];
  for (let l = 0; l < c.layers; l++) {
    shapes.push(
      [`blk.${l}.attn_norm.weight`, [D]], [`blk.${l}.attn_q.weight`, [Q, D]], [`blk.${l}.attn_k.weight`, [KV, D]],
      [`blk.${l}.attn_v.weight`, [KV, D]], [`blk.${l}.attn_output.weight`, [D, Q]], [`blk.${l}.ffn_norm.weight`, [D]],
      [`blk.${l}.ffn_gate.weight`, [I, D]], [`blk.${l}.ffn_up.weight`, [I, D]], [`blk.${l}.ffn_down.weight`, [D, I]],
    );
  }
  shapes.push(['output_norm.weight', [D]], ['output.weight', [c.vocab, D]]);
  return shapes.map(([name, shape]) => {
    const [rows, cols] = shape.length === 1 ? [1, shape[0]] : shape;
    const values = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) values[r * cols + k] = fill(name, r, k);
    return { name, ne: [...shape].reverse(), type: GGML.F32, data: new Uint8Array(values.buffer) };
  });
}

function openAndClose(path: string): void {
  new GgufFile(path).close();
}

// ---- Fixtures for writeGguf ----

const BASE_CONFIG: ModelConfig = {
  architecture: 'llama',
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  intermediateSize: 96,
  vocabSize: 40,
  ropeTheta: 500000,
  rmsNormEps: 1e-5,
  slidingWindow: null,
  tieWordEmbeddings: false,
  attentionBias: false,
  ropeScaling: null,
  maxPositionEmbeddings: 4096,
  bosTokenId: 1,
  eosTokenId: 2,
};

/** HF names and shapes of a llama checkpoint, written out here rather than taken from the module. */
function hfShapes(c: ModelConfig): Array<[string, number[]]> {
  const [D, Q, KV, I, V] = [c.hiddenSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim, c.intermediateSize, c.vocabSize];
  const list: Array<[string, number[]]> = [['model.embed_tokens.weight', [V, D]]];
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    list.push(
      [`${p}input_layernorm.weight`, [D]], [`${p}self_attn.q_proj.weight`, [Q, D]], [`${p}self_attn.k_proj.weight`, [KV, D]],
      [`${p}self_attn.v_proj.weight`, [KV, D]], [`${p}self_attn.o_proj.weight`, [D, Q]], [`${p}post_attention_layernorm.weight`, [D]],
      [`${p}mlp.gate_proj.weight`, [I, D]], [`${p}mlp.up_proj.weight`, [I, D]], [`${p}mlp.down_proj.weight`, [D, I]],
    );
  }
  list.push(['model.norm.weight', [D]]);
  if (!c.tieWordEmbeddings) list.push(['lm_head.weight', [V, D]]);
  return list;
}

/** Random weights at a random scale per tensor, with an all-zero block and a few outliers. */
function randomTensors(c: ModelConfig, rand: () => number): Array<GgufTensorToWrite & { data: Float32Array }> {
  return hfShapes(c).map(([name, shape]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const scale = 2 ** (rand() * 8 - 6);
    for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * scale;
    if (data.length >= 64) data.fill(0, 32, 64);
    for (let k = 0; k < 3; k++) data[Math.floor(rand() * data.length)] *= 20;
    return { name, shape, data };
  });
}

function testVocab(n: number, rand: () => number): GgufVocab {
  const special = ['<unk>', '<s>', '</s>', '▁日本', 'é', '<0x0A>'];
  return {
    tokens: Array.from({ length: n }, (_, i) => special[i] ?? `▁tok${i}`),
    scores: Array.from({ length: n }, () => Math.fround(-rand() * 100)),
    tokenTypes: Array.from({ length: n }, (_, i) => (i === 0 ? 2 : i < 3 ? 3 : i === 5 ? 6 : 1)),
    unknownTokenId: 0,
  };
}

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

// ---- Tests ----

describe('GgufFile', () => {
  it('reads every metadata value type, in version 2 and 3 files', () => {
    const kv: Kv[] = [
      ['u8', T.U8, 250], ['i8', T.I8, -7], ['u16', T.U16, 65000], ['i16', T.I16, -30000], ['u32', T.U32, 4000000000],
      ['i32', T.I32, -2000000000], ['f32', T.F32, 0.1], ['bool.true', T.BOOL, true], ['bool.false', T.BOOL, false],
      ['string', T.STRING, 'héllo ▁日本'], ['u64', T.U64, 2n ** 63n + 5n], ['i64', T.I64, -(2n ** 62n)], ['f64', T.F64, 0.1],
      ['strings', T.ARRAY, [T.STRING, ['a', '', 'ü']]], ['f32s', T.ARRAY, [T.F32, [1.5, -2]]],
      ['nested', T.ARRAY, [T.ARRAY, [[T.I32, [1, 2]], [T.I32, []]]]], ['empty', T.ARRAY, [T.U8, []]],
    ];
    for (const version of [2, 3]) {
      const path = writeTemp(`types-v${version}.gguf`, buildGguf({ version, kv, tensors: [] }).bytes);
      const f = new GgufFile(path);
      f.close();
      expect(f.version).toBe(version);
      expect(Object.fromEntries(f.metadata)).toEqual({
        u8: 250, i8: -7, u16: 65000, i16: -30000, u32: 4000000000, i32: -2000000000, f32: Math.fround(0.1),
        'bool.true': true, 'bool.false': false, string: 'héllo ▁日本', u64: 2n ** 63n + 5n, i64: -(2n ** 62n), f64: 0.1,
        strings: ['a', '', 'ü'], f32s: [1.5, -2], nested: [[1, 2], []], empty: [],
      });
    }
  });

  it('decodes each tensor type: F32, F16, BF16, Q8_0, Q4_0 and Q4_1 block layouts', () => {
    // Q8_0 block: f16 scale 0.5 (0x3800), then int8 values -16..15.
    const q8 = new Uint8Array(34);
    q8.set([0x00, 0x38]);
    for (let j = 0; j < 32; j++) q8[2 + j] = (j - 16) & 0xff;
    // Q4_0 block: f16 scale 2 (0x4000); byte j holds value j in its low nibble and value j + 16 in its high.
    const q4 = new Uint8Array(18);
    q4.set([0x00, 0x40]);
    for (let j = 0; j < 16; j++) q4[2 + j] = (j & 0x0f) | ((15 - j) << 4);
    // Q4_1 block: f16 scale 0.5 (0x3800), f16 minimum -3 (0xc200), then nibbles as in Q4_0.
    const q41 = new Uint8Array(20);
    q41.set([0x00, 0x38, 0x00, 0xc2]);
    for (let j = 0; j < 16; j++) q41[4 + j] = j | ((15 - j) << 4);
    const path = writeTemp('types.gguf', buildGguf({
      kv: [['general.alignment', T.U32, 64]],
      tensors: [
        { name: 'f32', ne: [3, 2], type: GGML.F32, data: f32Bytes([1, 2, 3, 4, 5, 6]) },
        { name: 'f16', ne: [2], type: GGML.F16, data: Uint8Array.of(0x00, 0x3c, 0x00, 0xc0) }, // 1, -2
        { name: 'bf16', ne: [2], type: GGML.BF16, data: Uint8Array.of(0x80, 0x3f, 0x40, 0xc0) }, // 1, -3
        { name: 'q8', ne: [32, 1], type: GGML.Q8_0, data: q8 },
        { name: 'q4', ne: [32], type: GGML.Q4_0, data: q4 },
        { name: 'q41', ne: [32], type: GGML.Q4_1, data: q41 },
      ],
    }).bytes);
    const f = new GgufFile(path);
    try {
      expect(f.alignment).toBe(64);
      expect(f.dataOffset % 64).toBe(0);
      expect(f.tensors.get('f32')).toMatchObject({ dtype: 'F32', shape: [2, 3], ggmlType: 0 });
      expect(f.tensors.get('q8')).toMatchObject({ dtype: 'Q8_0', shape: [1, 32], byteLength: 34 });
      expect([...f.readF32('f32')]).toEqual([1, 2, 3, 4, 5, 6]);
      expect([...f.readF32('f16')]).toEqual([1, -2]);
      expect([...f.readF32('bf16')]).toEqual([1, -3]);
      expect([...f.readF32('q8')]).toEqual(Array.from({ length: 32 }, (_, j) => (j - 16) * 0.5));
      const q4Expected = [...Array.from({ length: 16 }, (_, j) => (j - 8) * 2), ...Array.from({ length: 16 }, (_, j) => (15 - j - 8) * 2)];
      expect([...f.readF32('q4')]).toEqual(q4Expected);
      const q41Expected = [...Array.from({ length: 16 }, (_, j) => j * 0.5 - 3), ...Array.from({ length: 16 }, (_, j) => (15 - j) * 0.5 - 3)];
      expect([...f.readF32('q41')]).toEqual(q41Expected);
      expect(() => f.readF32('nope')).toThrow(/no tensor named 'nope'/);
    } finally {
      f.close();
    }
  });
});

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

describe('malformed GGUF input fails with a FormatError naming the problem', () => {
  const smallFile = (): Built =>
    buildGguf({
      kv: [
        ['general.name', T.STRING, 'small'],
        ['tokenizer.ggml.tokens', T.ARRAY, [T.STRING, ['a', 'b', 'c']]],
        ['flag', T.BOOL, true],
      ],
      tensors: [
        { name: 'a', ne: [16], type: GGML.F32, data: f32Bytes(new Array(16).fill(1)) },
        { name: 'b', ne: [8, 2], type: GGML.F32, data: f32Bytes(new Array(16).fill(2)) },
      ],
    });

  it('accepts the unmodified file', () => {
    const path = writeTemp('small.gguf', smallFile().bytes);
    const f = new GgufFile(path);
    expect([...f.readF32('b')]).toEqual(new Array(16).fill(2));
    f.close();
  });

  it('truncated file', () => {
    const { bytes } = smallFile();
    let path = writeTemp('short.gguf', bytes.subarray(0, 20));
    expectFormatError(() => openAndClose(path), path, /file has 20 bytes, too short for a GGUF header \(24 bytes\)/);
    const cut = smallFile().fields.get('offset:b')! + 4;
    path = writeTemp('cut-header.gguf', bytes.subarray(0, cut));
    expectFormatError(() => openAndClose(path), path, new RegExp(`tensor 'b': data offset at byte ${cut - 4} needs 8 bytes, but the file ends at byte ${cut}`));
    path = writeTemp('cut-data.gguf', bytes.subarray(0, bytes.length - 10));
    expectFormatError(() => openAndClose(path), path, new RegExp(`tensor 'b' ends at byte ${bytes.length}, file has ${bytes.length - 10}`));
  });

  it('bad magic', () => {
    const bytes = smallFile().bytes;
    bytes.set([0x47, 0x47, 0x4d, 0x4c]);
    const path = writeTemp('magic.gguf', bytes);
    expectFormatError(() => openAndClose(path), path, /not a GGUF file: magic bytes are 47 47 4d 4c, expected 47 47 55 46/);
  });

  it('unsupported version', () => {
    for (const [version, pattern] of [
      [1, /GGUF version 1 is not supported \(expected 2 or 3\)/],
      [4, /GGUF version 4 is not supported/],
      [0x03000000, /GGUF version 50331648 is not supported \(expected 2 or 3; this looks like a big-endian file\)/],
    ] as const) {
      const path = writeTemp('version.gguf', buildGguf({ version, kv: [], tensors: [] }).bytes);
      expectFormatError(() => openAndClose(path), path, pattern);
    }
  });

  it('lying string length fails fast, without allocating it', () => {
    for (const field of ['string:general.name', 'key:flag', 'name:b', 'string:tokenizer.ggml.tokens[1]']) {
      const built = smallFile();
      const path = writeTemp('string-length.gguf', setU64(built.bytes, built.fields.get(field)!, 2n ** 60n));
      const started = performance.now();
      expectFormatError(() => openAndClose(path), path, /string length 1152921504606846976 at byte \d+ needs at least 1152921504606846976 bytes, only \d+ remain/);
      expect(performance.now() - started).toBeLessThan(100);
    }
  });

  it('lying array length', () => {
    const built = smallFile();
    const path = writeTemp('array-length.gguf', setU64(built.bytes, built.fields.get('array:tokenizer.ggml.tokens')!, 2n ** 60n));
    expectFormatError(() => openAndClose(path), path, /key 'tokenizer.ggml.tokens': array length 1152921504606846976 at byte \d+ needs at least 9223372036854775808 bytes/);
  });

  it('tensor and metadata counts larger than the file can hold', () => {
    let built = smallFile();
    let path = writeTemp('tensor-count.gguf', setU64(built.bytes, built.fields.get('tensor count')!, 1000000n));
    expectFormatError(() => openAndClose(path), path, /tensor count 1000000 at byte 8 needs at least 32000000 bytes, only \d+ remain/);
    built = smallFile();
    path = writeTemp('kv-count.gguf', setU64(built.bytes, built.fields.get('kv count')!, 2n ** 64n - 1n));
    expectFormatError(() => openAndClose(path), path, /metadata key count 18446744073709551615 at byte 16 needs at least/);
  });

  it('tensor past the end of the file', () => {
    const built = smallFile();
    const path = writeTemp('past-end.gguf', setU64(built.bytes, built.fields.get('offset:b')!, 4096n));
    expectFormatError(() => openAndClose(path), path, /tensor 'b' ends at byte \d+, file has \d+/);
  });

  it('huge dimensions', () => {
    let built = smallFile();
    let path = writeTemp('dim.gguf', setU64(built.bytes, built.fields.get('dim:b:1')!, 2n ** 40n));
    expectFormatError(() => openAndClose(path), path, /tensor 'b' ends at byte \d+, file has \d+/);
    setU64(built.bytes, built.fields.get('dim:b:0')!, 2n ** 40n);
    path = writeTemp('dims.gguf', built.bytes);
    expectFormatError(() => openAndClose(path), path, /tensor 'b': dimensions \[1099511627776, 1099511627776\] hold too many values/);
    built = smallFile();
    path = writeTemp('dim64.gguf', setU64(built.bytes, built.fields.get('dim:b:0')!, 2n ** 63n));
    expectFormatError(() => openAndClose(path), path, /tensor 'b': dimension 0 9223372036854775808 at byte \d+ is too large/);
  });

  it('overlapping tensors', () => {
    const path = writeTemp('overlap.gguf', buildGguf({
      kv: [],
      tensors: [
        { name: 'a', ne: [16], type: GGML.F32, data: f32Bytes(new Array(16).fill(1)) },
        { name: 'b', ne: [8], type: GGML.F32, data: f32Bytes(new Array(8).fill(2)), offset: 32 },
      ],
    }).bytes);
    expectFormatError(() => openAndClose(path), path, /tensors 'a' \(bytes \d+\.\.\d+\) and 'b' \(from byte \d+\) overlap/);
  });

  it('unaligned tensor offset', () => {
    const built = smallFile();
    const path = writeTemp('unaligned.gguf', setU64(built.bytes, built.fields.get('offset:b')!, 68n));
    expectFormatError(() => openAndClose(path), path, /tensor 'b': data offset 68 is not a multiple of the alignment 32/);
  });

  it('unsupported ggml type', () => {
    for (const [type, pattern] of [
      [16, /tensor 'k': ggml type 16 \(IQ2_XXS\) is not supported \(expected F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K\)/],
      [77, /tensor 'k': ggml type 77 \(unknown\) is not supported/],
    ] as const) {
      const path = writeTemp('type.gguf', buildGguf({ kv: [], tensors: [{ name: 'k', ne: [256], type, data: new Uint8Array(66) }] }).bytes);
      expectFormatError(() => openAndClose(path), path, pattern);
    }
  });

  it('quantized rows that are not whole blocks', () => {
    const path = writeTemp('q-rows.gguf', buildGguf({ kv: [], tensors: [{ name: 'q', ne: [16, 4], type: GGML.Q8_0, data: new Uint8Array(68) }] }).bytes);
    expectFormatError(() => openAndClose(path), path, /tensor 'q': Q8_0 needs a row length that is a multiple of 32, got 16/);
  });

  it('bad dimension counts and empty dimensions', () => {
    for (const [ne, pattern] of [
      [[], /tensor 'x': dimension count 0 at byte \d+ must be 1\.\.4/],
      [[1, 1, 1, 1, 1], /tensor 'x': dimension count 5 at byte \d+ must be 1\.\.4/],
      [[4, 0], /tensor 'x': dimension 1 is 0/],
    ] as const) {
      const path = writeTemp('dims.gguf', buildGguf({ kv: [], tensors: [{ name: 'x', ne: [...ne], type: GGML.F32, data: new Uint8Array(16) }] }).bytes);
      expectFormatError(() => openAndClose(path), path, pattern);
    }
  });

  it('duplicate keys and tensor names, bad names', () => {
    const cases: Array<[HandFile, RegExp]> = [
      [{ kv: [['k', T.U8, 1], ['k', T.U8, 2]], tensors: [] }, /metadata key 'k' appears twice/],
      [{ kv: [], tensors: [{ name: 't', ne: [8], type: GGML.F32, data: new Uint8Array(32) }, { name: 't', ne: [8], type: GGML.F32, data: new Uint8Array(32) }] }, /tensor name 't' appears twice/],
      [{ kv: [['', T.U8, 1]], tensors: [] }, /metadata key #0 is empty/],
      [{ kv: [], tensors: [{ name: 'n'.repeat(64), ne: [8], type: GGML.F32, data: new Uint8Array(32) }] }, /tensor #0: name: string length 64 at byte \d+ exceeds the 63-byte limit/],
    ];
    for (const [spec, pattern] of cases) {
      const path = writeTemp('dup.gguf', buildGguf(spec).bytes);
      expectFormatError(() => openAndClose(path), path, pattern);
    }
  });

  it('bad metadata values', () => {
    const cases: Array<[Kv[], RegExp]> = [
      [[['b', T.BOOL, 2]], /key 'b': bool at byte \d+ is 2, expected 0 or 1/],
      [[['t', 13, 0]], /key 't': value type 13 is not a GGUF value type/],
      [[['a', T.ARRAY, [13, []]]], /key 'a': array element type 13 at byte \d+ is not a GGUF value type/],
      [[['general.alignment', T.U32, 24]], /'general.alignment' must be a power of two, got 24/],
      [[['general.alignment', T.U64, 32]], /'general.alignment' must be a power of two, got 32/],
      [[['general.alignment', T.F32, 0.5]], /'general.alignment' must be a power of two, got 0.5/],
    ];
    let nested: unknown = [T.U8, []];
    for (let i = 0; i < 9; i++) nested = [T.ARRAY, [nested]];
    cases.push([[['deep', T.ARRAY, nested]], /key 'deep' element.*: arrays nested more than 8 deep/]);
    for (const [kv, pattern] of cases) {
      const path = writeTemp('values.gguf', buildGguf({ kv, tensors: [] }).bytes);
      expectFormatError(() => openAndClose(path), path, pattern);
    }
    const built = buildGguf({ kv: [['s', T.STRING, 'ab']], tensors: [] });
    built.bytes[built.fields.get('string:s')! + 8] = 0xff;
    const path = writeTemp('utf8.gguf', built.bytes);
    expectFormatError(() => openAndClose(path), path, /key 's' at byte \d+ is not valid UTF-8/);
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

// ---- Fuzz ----

const HUGE_VALUES = [2n ** 64n - 1n, 2n ** 63n, 2n ** 60n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 31n, 65536n];

interface Seed {
  bytes: Uint8Array;
  /** Offsets of the uint64 length/count/dimension fields, when known. */
  fields: number[];
}

function mutate(seed: Seed, rand: () => number): { bytes: Uint8Array; steps: string[] } {
  let bytes = seed.bytes.slice();
  const steps: string[] = [];
  const at = (n: number) => Math.floor(rand() * n);
  for (let k = 1 + at(3); k > 0; k--) {
    const kind = at(5);
    if (kind <= 2 && (kind === 2 || bytes.length > 0)) {
      const m = byteMutation(kind as 0 | 1 | 2, bytes, rand);
      bytes = m.bytes;
      steps.push(m.step);
    } else if (kind === 3 && seed.fields.length > 0) {
      const i = seed.fields[at(seed.fields.length)];
      const v = rand() < 0.2 ? BigInt(bytes.length + at(64)) : HUGE_VALUES[at(HUGE_VALUES.length)];
      if (i + 8 <= bytes.length) setU64(bytes, i, v);
      steps.push(`u64 field at ${i} = ${v}`);
    } else {
      const i = at(Math.max(1, Math.min(bytes.length, 512) - 8));
      if (i + 8 <= bytes.length) setU64(bytes, i, HUGE_VALUES[at(HUGE_VALUES.length)]);
      steps.push(`huge u64 at ${i}`);
    }
  }
  return { bytes, steps };
}

/** Parses and reads everything; only FormatError may escape. Returns whether the file was accepted. */
function exerciseGguf(path: string): boolean {
  let accepted = false;
  try {
    const f = new GgufFile(path);
    try {
      for (const name of f.tensors.keys()) f.readF32(name);
      accepted = true;
    } finally {
      f.close();
    }
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
  }
  try {
    const ck = new GgufCheckpoint(path);
    try {
      for (const name of ck.tensors.keys()) ck.readF32(name);
    } finally {
      ck.close();
    }
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
  }
  return accepted;
}

function fuzzSeeds(rand: () => number): Seed[] {
  const seeds: Seed[] = [];
  const everyType = buildGguf({
    version: 2,
    kv: [
      ['general.alignment', T.U32, 16], ['u8', T.U8, 1], ['i16', T.I16, -2], ['f64', T.F64, 1.5], ['u64', T.U64, 7],
      ['strings', T.ARRAY, [T.STRING, ['x', 'yz']]], ['nested', T.ARRAY, [T.ARRAY, [[T.U8, [1]]]]], ['b', T.BOOL, false],
    ],
    tensors: [
      { name: 'f32', ne: [4, 2], type: GGML.F32, data: f32Bytes([1, 2, 3, 4, 5, 6, 7, 8]) },
      { name: 'f16', ne: [4], type: GGML.F16, data: new Uint8Array(8).fill(0x3c) },
      { name: 'bf16', ne: [4], type: GGML.BF16, data: new Uint8Array(8).fill(0x3f) },
      { name: 'q8', ne: [32, 2], type: GGML.Q8_0, data: Uint8Array.from({ length: 68 }, () => Math.floor(rand() * 256)) },
      { name: 'q4', ne: [64], type: GGML.Q4_0, data: Uint8Array.from({ length: 36 }, () => Math.floor(rand() * 256)) },
      { name: 'q4k', ne: [256], type: 12, data: Uint8Array.from({ length: 144 }, () => Math.floor(rand() * 256)) },
      { name: 'q6k', ne: [256, 1], type: 14, data: Uint8Array.from({ length: 210 }, () => Math.floor(rand() * 256)) },
    ],
  });
  seeds.push({ bytes: everyType.bytes, fields: [...everyType.fields.values()] });
  const shape = { hidden: 32, heads: 2, kvHeads: 1, headDim: 16, inter: 32, vocab: 3, layers: 1 };
  const llama = buildGguf({ kv: llamaKv(shape), tensors: llamaTensorsF32(shape, (_, r, c) => r - c) });
  seeds.push({ bytes: llama.bytes, fields: [...llama.fields.values()] });
  for (const dtype of ['Q4_0', 'Q8_0', 'F16'] as const) {
    const config: ModelConfig = { ...BASE_CONFIG, hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16, intermediateSize: 32, vocabSize: 3, bosTokenId: 0, eosTokenId: 1 };
    const path = tempPath(`fuzz-seed-${dtype}.gguf`);
    const vocab = { tokens: ['a', 'b', 'c'], scores: [0, -1, -2], tokenTypes: [1, 1, 1] };
    writeGguf(path, { config, tensors: randomTensors(config, rand), vocab, dtype });
    const ck = new GgufCheckpoint(path);
    ck.close();
    seeds.push({ bytes: new Uint8Array(readFileSync(path)), fields: [] });
  }
  return seeds;
}

describe('fuzz', () => {
  it('mutated GGUF files either parse and read, or fail with a FormatError', { timeout: 60_000 }, () => {
    const rand = mulberry32(SEED ^ 0x6775_6766);
    const seeds = fuzzSeeds(rand);
    const path = tempPath('fuzz.gguf');
    fuzzFiles({ label: 'gguf', seed: SEED, seeds, path, mutate: (seed) => mutate(seed, rand), exercise: exerciseGguf });
  });
});
