// Test helpers for the GGUF modules: a hand-made GGUF builder independent of the code under test,
// tiny llama metadata and tensors for it, and random checkpoints for writeGguf.
import type { ModelConfig } from '../../runtime/model-config.js';
import type { GgufVocab } from '../../runtime/convert/gguf-model.js';
import type { GgufTensorToWrite } from '../../runtime/convert/gguf-writer.js';

export const T = { U8: 0, I8: 1, U16: 2, I16: 3, U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9, U64: 10, I64: 11, F64: 12 };
export const GGML = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 8, BF16: 30 };

export type Kv = [key: string, type: number, value: unknown];
export interface HandTensor {
  name: string;
  ne: number[]; // innermost first, as GGUF stores it
  type: number;
  data: Uint8Array;
  offset?: number; // relative to the data section; next aligned offset when absent
}
export interface HandFile {
  version?: number;
  kv: Kv[];
  tensors: HandTensor[];
}
export interface Built {
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

export function buildGguf(spec: HandFile): Built {
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

export function setU64(bytes: Uint8Array, at: number, v: bigint): Uint8Array {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(at, v, true);
  return bytes;
}

export const f32Bytes = (values: ArrayLike<number>) => new Uint8Array(Float32Array.from(values).buffer);

/** Tiny llama metadata for hand-made checkpoints. */
export interface HandShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  inter: number;
  vocab: number;
  layers: number;
}

/** Tiny metadata for hand-made checkpoints of architecture `arch` (keys `{arch}.*`). */
export function llamaKv(c: HandShape, arch = 'llama'): Kv[] {
  return [
    ['general.architecture', T.STRING, arch],
    [`${arch}.context_length`, T.U32, 256],
    [`${arch}.embedding_length`, T.U32, c.hidden],
    [`${arch}.block_count`, T.U32, c.layers],
    [`${arch}.feed_forward_length`, T.U32, c.inter],
    [`${arch}.attention.head_count`, T.U32, c.heads],
    [`${arch}.attention.head_count_kv`, T.U32, c.kvHeads],
    [`${arch}.attention.key_length`, T.U32, c.headDim],
    [`${arch}.attention.layer_norm_rms_epsilon`, T.F32, 1e-6],
    ['tokenizer.ggml.tokens', T.ARRAY, [T.STRING, Array.from({ length: c.vocab }, (_, i) => `tok${i}`)]],
  ];
}

/**
 * Every tensor of a hand-made llama GGUF as F32, with `fill(ggufName, row, col)` as its values
 * (row 0 for vectors); with `bias`, q/k/v biases follow their weights.
 */
export function llamaTensorsF32(c: HandShape, fill: (name: string, row: number, col: number) => number, bias = false): HandTensor[] {
  const [D, Q, KV, I] = [c.hidden, c.heads * c.headDim, c.kvHeads * c.headDim, c.inter];
  const shapes: Array<[string, number[]]> = [['token_embd.weight', [c.vocab, D]]];
  for (let l = 0; l < c.layers; l++) {
    shapes.push(
      [`blk.${l}.attn_norm.weight`, [D]], [`blk.${l}.attn_q.weight`, [Q, D]], [`blk.${l}.attn_k.weight`, [KV, D]],
      [`blk.${l}.attn_v.weight`, [KV, D]], [`blk.${l}.attn_output.weight`, [D, Q]], [`blk.${l}.ffn_norm.weight`, [D]],
      [`blk.${l}.ffn_gate.weight`, [I, D]], [`blk.${l}.ffn_up.weight`, [I, D]], [`blk.${l}.ffn_down.weight`, [D, I]],
    );
    if (bias) shapes.push([`blk.${l}.attn_q.bias`, [Q]], [`blk.${l}.attn_k.bias`, [KV]], [`blk.${l}.attn_v.bias`, [KV]]);
  }
  shapes.push(['output_norm.weight', [D]], ['output.weight', [c.vocab, D]]);
  return shapes.map(([name, shape]) => {
    const [rows, cols] = shape.length === 1 ? [1, shape[0]] : shape;
    const values = new Float32Array(rows * cols);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) values[r * cols + k] = fill(name, r, k);
    return { name, ne: [...shape].reverse(), type: GGML.F32, data: new Uint8Array(values.buffer) };
  });
}

export const BASE_CONFIG: ModelConfig = {
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
export function hfShapes(c: ModelConfig): Array<[string, number[]]> {
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
export function randomTensors(c: ModelConfig, rand: () => number): Array<GgufTensorToWrite & { data: Float32Array }> {
  return hfShapes(c).map(([name, shape]) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    const scale = 2 ** (rand() * 8 - 6);
    for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * scale;
    if (data.length >= 64) data.fill(0, 32, 64);
    for (let k = 0; k < 3; k++) data[Math.floor(rand() * data.length)] *= 20;
    return { name, shape, data };
  });
}

export function testVocab(n: number, rand: () => number): GgufVocab {
  const special = ['<unk>', '<s>', '</s>', '▁日本', 'é', '<0x0A>'];
  return {
    tokens: Array.from({ length: n }, (_, i) => special[i] ?? `▁tok${i}`),
    scores: Array.from({ length: n }, () => Math.fround(-rand() * 100)),
    tokenTypes: Array.from({ length: n }, (_, i) => (i === 0 ? 2 : i < 3 ? 3 : i === 5 ? 6 : 1)),
    unknownTokenId: 0,
  };
}
