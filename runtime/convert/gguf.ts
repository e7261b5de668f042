// Reader and writer for GGUF, llama.cpp's single-file checkpoint (versions 2 and 3, little-endian),
// and a view of a llama-architecture GGUF under Hugging Face tensor names and weight layouts.
// Every count, length and byte range is checked against the file before it is used.
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

import { FormatError } from '../errors.js';
import { validateConfig, type ModelConfig } from '../model-config.js';
import { dequantize, ggmlType, ggmlTypeName, ggmlTypeOf, quantizeQ4_0, quantizeQ8_0, READABLE_GGML_TYPES, type GgmlType } from './ggml-types.js';
import { elementCount, f32ToF16, readExact, type TensorInfo, type TensorSource } from './tensors.js';

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const WRITE_VERSION = 3;
const DEFAULT_ALIGNMENT = 32;
const HEADER_BYTES = 24; // magic, version, tensor count, metadata count
const READ_CHUNK_BYTES = 1 << 20;
const MAX_STRING_BYTES = 1 << 24;
const MAX_ARRAY_LENGTH = 1 << 24;
const MAX_ARRAY_DEPTH = 8;
const MAX_TENSOR_NAME_BYTES = 63; // ggml's GGML_MAX_NAME (64) includes the terminating NUL
const MAX_DIMS = 4;

/** GGUF metadata value types, as numbered in the file. */
const V = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
/** The fewest bytes a value of each type takes (a string or an array at least its length fields). */
const MIN_VALUE_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** A metadata value: 64-bit integers are bigints, every other number a number. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

function alignUp(offset: number, alignment: number): number {
  return Math.ceil(offset / alignment) * alignment;
}

/** A tensor of a GGUF file: `shape` is outermost first, the reverse of GGUF's ne[]. */
export interface GgufTensor extends TensorInfo {
  ggmlType: number;
  /** Absolute file offset of the tensor's first byte. */
  offset: number;
  byteLength: number;
}

/** Sequential little-endian reads of the header through a file descriptor, a chunk at a time. */
class HeaderReader {
  pos = 0;
  private chunk: Uint8Array = new Uint8Array(0);
  private view = new DataView(this.chunk.buffer);
  private chunkStart = 0;
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(
    private readonly fd: number,
    readonly path: string,
    readonly size: number,
  ) {}

  get remaining(): number {
    return this.size - this.pos;
  }

  fail(detail: string): never {
    throw new FormatError(this.path, detail);
  }

  /** Consumes `n` bytes and returns their index in `chunk` (read the chunk only after calling this). */
  private take(n: number, what: string): number {
    if (n > this.remaining) this.fail(`${what} at byte ${this.pos} needs ${n} bytes, but the file ends at byte ${this.size}`);
    if (this.pos + n > this.chunkStart + this.chunk.length) {
      this.chunkStart = this.pos;
      this.chunk = readExact(this.fd, this.path, this.pos, Math.min(Math.max(n, READ_CHUNK_BYTES), this.remaining));
      this.view = new DataView(this.chunk.buffer, this.chunk.byteOffset, this.chunk.byteLength);
    }
    const at = this.pos - this.chunkStart;
    this.pos += n;
    return at;
  }

  u8(what: string): number {
    const at = this.take(1, what);
    return this.chunk[at];
  }
  i8(what: string): number {
    const at = this.take(1, what);
    return this.view.getInt8(at);
  }
  u16(what: string): number {
    const at = this.take(2, what);
    return this.view.getUint16(at, true);
  }
  i16(what: string): number {
    const at = this.take(2, what);
    return this.view.getInt16(at, true);
  }
  u32(what: string): number {
    const at = this.take(4, what);
    return this.view.getUint32(at, true);
  }
  i32(what: string): number {
    const at = this.take(4, what);
    return this.view.getInt32(at, true);
  }
  f32(what: string): number {
    const at = this.take(4, what);
    return this.view.getFloat32(at, true);
  }
  f64(what: string): number {
    const at = this.take(8, what);
    return this.view.getFloat64(at, true);
  }
  bigU64(what: string): bigint {
    const at = this.take(8, what);
    return this.view.getBigUint64(at, true);
  }
  bigI64(what: string): bigint {
    const at = this.take(8, what);
    return this.view.getBigInt64(at, true);
  }

  /** A uint64 that must fit a JavaScript number exactly. */
  u64(what: string): number {
    const start = this.pos;
    const v = this.bigU64(what);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) this.fail(`${what} ${v} at byte ${start} is too large`);
    return Number(v);
  }

  /** A uint64 count of items of at least `minItemBytes` each, checked against the bytes left. */
  count(what: string, minItemBytes: number): number {
    const start = this.pos;
    const n = this.bigU64(what);
    const needed = n * BigInt(minItemBytes);
    if (needed > BigInt(this.remaining)) this.fail(`${what} ${n} at byte ${start} needs at least ${needed} bytes, only ${this.remaining} remain`);
    return Number(n);
  }

  string(what: string, maxBytes = MAX_STRING_BYTES): string {
    const start = this.pos;
    const n = this.count(`${what}: string length`, 1);
    if (n > maxBytes) this.fail(`${what}: string length ${n} at byte ${start} exceeds the ${maxBytes}-byte limit`);
    const at = this.take(n, what);
    try {
      return this.utf8.decode(this.chunk.subarray(at, at + n));
    } catch {
      return this.fail(`${what} at byte ${start + 8} is not valid UTF-8`);
    }
  }
}

function readValue(r: HeaderReader, type: number, what: string, depth: number): GgufValue {
  switch (type) {
    case V.UINT8: return r.u8(what);
    case V.INT8: return r.i8(what);
    case V.UINT16: return r.u16(what);
    case V.INT16: return r.i16(what);
    case V.UINT32: return r.u32(what);
    case V.INT32: return r.i32(what);
    case V.FLOAT32: return r.f32(what);
    case V.BOOL: {
      const start = r.pos;
      const b = r.u8(what);
      if (b > 1) r.fail(`${what}: bool at byte ${start} is ${b}, expected 0 or 1`);
      return b === 1;
    }
    case V.STRING: return r.string(what);
    case V.ARRAY: return readArray(r, what, depth);
    case V.UINT64: return r.bigU64(what);
    case V.INT64: return r.bigI64(what);
    case V.FLOAT64: return r.f64(what);
    default: return r.fail(`${what}: value type ${type} is not a GGUF value type (0..12)`);
  }
}

function readArray(r: HeaderReader, what: string, depth: number): GgufValue[] {
  if (depth >= MAX_ARRAY_DEPTH) r.fail(`${what}: arrays nested more than ${MAX_ARRAY_DEPTH} deep`);
  const start = r.pos;
  const type = r.u32(`${what}: array element type`);
  if (!(type in MIN_VALUE_BYTES)) r.fail(`${what}: array element type ${type} at byte ${start} is not a GGUF value type (0..12)`);
  const n = r.count(`${what}: array length`, MIN_VALUE_BYTES[type]);
  if (n > MAX_ARRAY_LENGTH) r.fail(`${what}: array length ${n} at byte ${start + 4} exceeds the limit of ${MAX_ARRAY_LENGTH}`);
  const element = `${what} element`;
  const out = new Array<GgufValue>(n);
  for (let i = 0; i < n; i++) out[i] = readValue(r, type, element, depth + 1);
  return out;
}

interface TensorHeader {
  name: string;
  ne: number[]; // innermost dimension first, as GGUF stores it
  type: number;
  relOffset: number; // from the start of the data section
}

/** One GGUF file: its metadata, its tensor table, and float32 reads of single tensors. */
export class GgufFile implements TensorSource {
  readonly metadata = new Map<string, GgufValue>();
  readonly tensors = new Map<string, GgufTensor>();
  readonly version: number;
  readonly alignment: number;
  /** Absolute offset of the data section (tensor offsets in the file are relative to it). */
  readonly dataOffset: number;
  private fd: number;

  constructor(readonly path: string) {
    this.fd = openSync(path, 'r');
    try {
      const r = new HeaderReader(this.fd, path, fstatSync(this.fd).size);
      this.version = this.readPreamble(r);
      const tensorCount = r.count('tensor count', 8 + 4 + 8 + 4 + 8);
      const kvCount = r.count('metadata key count', 8 + 4 + 1);
      for (let k = 0; k < kvCount; k++) this.readKeyValue(r, k);
      this.alignment = this.readAlignment();
      const headers = new Map<string, TensorHeader>();
      for (let t = 0; t < tensorCount; t++) {
        const h = this.readTensorHeader(r, t);
        if (headers.has(h.name)) this.fail(`tensor name '${h.name}' appears twice`);
        headers.set(h.name, h);
      }
      this.dataOffset = alignUp(r.pos, this.alignment);
      for (const h of headers.values()) this.tensors.set(h.name, this.placeTensor(h, r.size));
      this.checkOverlaps();
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  private fail(detail: string): never {
    throw new FormatError(this.path, detail);
  }

  private readPreamble(r: HeaderReader): number {
    if (r.size < HEADER_BYTES) this.fail(`file has ${r.size} bytes, too short for a GGUF header (${HEADER_BYTES} bytes)`);
    const magic = r.u32('magic');
    if (magic !== GGUF_MAGIC) {
      const hex = magic.toString(16).padStart(8, '0').match(/../g)!.reverse().join(' ');
      this.fail(`not a GGUF file: magic bytes are ${hex}, expected 47 47 55 46 ("GGUF")`);
    }
    const version = r.u32('version');
    if (version !== 2 && version !== 3) {
      const bigEndian = version === 0x02000000 || version === 0x03000000;
      this.fail(`GGUF version ${version} is not supported (expected 2 or 3${bigEndian ? '; this looks like a big-endian file' : ''})`);
    }
    return version;
  }

  private readKeyValue(r: HeaderReader, index: number): void {
    const key = r.string(`metadata key #${index}`);
    if (key === '') this.fail(`metadata key #${index} is empty`);
    if (this.metadata.has(key)) this.fail(`metadata key '${key}' appears twice`);
    const type = r.u32(`key '${key}': value type`);
    this.metadata.set(key, readValue(r, type, `key '${key}'`, 0));
  }

  private readAlignment(): number {
    const a = this.metadata.get('general.alignment') ?? DEFAULT_ALIGNMENT;
    if (typeof a !== 'number' || !Number.isInteger(a) || a < 1 || !Number.isInteger(Math.log2(a)))
      this.fail(`'general.alignment' must be a power of two, got ${describeValue(a)}`);
    return a;
  }

  private readTensorHeader(r: HeaderReader, index: number): TensorHeader {
    const name = r.string(`tensor #${index}: name`, MAX_TENSOR_NAME_BYTES);
    if (name === '') this.fail(`tensor #${index} has an empty name`);
    const start = r.pos;
    const nDims = r.u32(`tensor '${name}': dimension count`);
    if (nDims < 1 || nDims > MAX_DIMS) this.fail(`tensor '${name}': dimension count ${nDims} at byte ${start} must be 1..${MAX_DIMS}`);
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) {
      const n = r.u64(`tensor '${name}': dimension ${d}`);
      if (n === 0) this.fail(`tensor '${name}': dimension ${d} is 0`);
      ne.push(n);
    }
    const type = r.u32(`tensor '${name}': type`);
    const relOffset = r.u64(`tensor '${name}': data offset`);
    return { name, ne, type, relOffset };
  }

  /** Checks a tensor's type, size and byte range, and resolves its absolute offset. */
  private placeTensor(h: TensorHeader, fileSize: number): GgufTensor {
    const type = ggmlType(h.type);
    if (!type) this.fail(`tensor '${h.name}': ggml type ${h.type} (${ggmlTypeName(h.type)}) is not supported (expected ${READABLE_GGML_TYPES})`);
    if (h.ne[0] % type.blockValues !== 0)
      this.fail(`tensor '${h.name}': ${type.dtype} needs a row length that is a multiple of ${type.blockValues}, got ${h.ne[0]}`);
    let values = 1;
    for (const n of h.ne) {
      if (values > Number.MAX_SAFE_INTEGER / n) this.fail(`tensor '${h.name}': dimensions [${h.ne.join(', ')}] hold too many values`);
      values *= n;
    }
    if (h.relOffset % this.alignment !== 0)
      this.fail(`tensor '${h.name}': data offset ${h.relOffset} is not a multiple of the alignment ${this.alignment}`);
    const offset = this.dataOffset + h.relOffset;
    const byteLength = (values / type.blockValues) * type.blockBytes;
    if (offset + byteLength > fileSize) this.fail(`tensor '${h.name}' ends at byte ${offset + byteLength}, file has ${fileSize}`);
    return { name: h.name, dtype: type.dtype, shape: [...h.ne].reverse(), ggmlType: h.type, offset, byteLength };
  }

  private checkOverlaps(): void {
    const sorted = [...this.tensors.values()].sort((a, b) => a.offset - b.offset);
    for (let i = 1; i < sorted.length; i++) {
      const [a, b] = [sorted[i - 1], sorted[i]];
      if (b.offset < a.offset + a.byteLength)
        this.fail(`tensors '${a.name}' (bytes ${a.offset}..${a.offset + a.byteLength}) and '${b.name}' (from byte ${b.offset}) overlap`);
    }
  }

  readF32(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (!t) throw new FormatError(this.path, `no tensor named '${name}'`);
    return dequantize(ggmlType(t.ggmlType)!, readExact(this.fd, this.path, t.offset, t.byteLength));
  }

  close(): void {
    closeSync(this.fd);
  }
}

function describeValue(v: GgufValue | undefined): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}

// ---- Llama checkpoints under Hugging Face names ----

/** Per-layer tensors: GGUF name inside `blk.N.`, HF name inside `model.layers.N.`. */
const LAYER_TENSORS: ReadonlyArray<readonly [string, string]> = [
  ['attn_norm', 'input_layernorm'],
  ['attn_q', 'self_attn.q_proj'],
  ['attn_k', 'self_attn.k_proj'],
  ['attn_v', 'self_attn.v_proj'],
  ['attn_output', 'self_attn.o_proj'],
  ['ffn_norm', 'post_attention_layernorm'],
  ['ffn_gate', 'mlp.gate_proj'],
  ['ffn_up', 'mlp.up_proj'],
  ['ffn_down', 'mlp.down_proj'],
];

/** Every tensor of a llama checkpoint in file order: HF name, GGUF name, HF shape. */
function llamaTensors(c: ModelConfig): Array<{ hf: string; gguf: string; shape: number[] }> {
  const [D, I, V, Q, KV] = [c.hiddenSize, c.intermediateSize, c.vocabSize, c.numHeads * c.headDim, c.numKvHeads * c.headDim];
  const layerShapes: Record<string, number[]> = {
    attn_norm: [D], attn_q: [Q, D], attn_k: [KV, D], attn_v: [KV, D], attn_output: [D, Q],
    ffn_norm: [D], ffn_gate: [I, D], ffn_up: [I, D], ffn_down: [D, I],
  };
  const list = [{ hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight', shape: [V, D] }];
  for (let l = 0; l < c.numLayers; l++) {
    for (const [g, hf] of LAYER_TENSORS) list.push({ hf: `model.layers.${l}.${hf}.weight`, gguf: `blk.${l}.${g}.weight`, shape: layerShapes[g] });
  }
  list.push({ hf: 'model.norm.weight', gguf: 'output_norm.weight', shape: [D] });
  if (!c.tieWordEmbeddings) list.push({ hf: 'lm_head.weight', gguf: 'output.weight', shape: [V, D] });
  return list;
}

/** Heads whose rows llama.cpp's converter interleaves: q_proj by query heads, k_proj by KV heads. */
function permutedHeads(hfName: string, c: ModelConfig): number {
  if (hfName.endsWith('.self_attn.q_proj.weight')) return c.numHeads;
  if (hfName.endsWith('.self_attn.k_proj.weight')) return c.numKvHeads;
  return 0;
}

/**
 * The GGUF row holding HF row `r` of a Q or K weight. convert_hf_to_gguf.py reorders each head's
 * rows from RoPE's rotate-half pairing (i, i + headDim/2) to ggml's adjacent pairing (2i, 2i + 1):
 * HF row s * headDim/2 + i of a head is GGUF row 2i + s.
 */
function ggufRowOf(r: number, rowsPerHead: number): number {
  const half = rowsPerHead / 2;
  const within = r % rowsPerHead;
  return r - within + 2 * (within % half) + Math.floor(within / half);
}

/** Moves whole rows of a [rows, cols] Q or K weight between HF order and GGUF order. */
function reorderRows(src: Float32Array, shape: readonly number[], heads: number, toGguf: boolean): Float32Array {
  const [rows, cols] = shape;
  const rowsPerHead = rows / heads;
  const out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) {
    const g = ggufRowOf(r, rowsPerHead);
    const [from, to] = toGguf ? [r, g] : [g, r];
    out.set(src.subarray(from * cols, (from + 1) * cols), to * cols);
  }
  return out;
}

export interface GgufVocab {
  tokens: string[];
  scores: number[];
  /** SentencePiece token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte. */
  tokenTypes: number[];
  unknownTokenId?: number;
}

function metaFail(f: GgufFile, detail: string): never {
  throw new FormatError(f.path, detail);
}

/** An integer metadata value (any GGUF integer type) of at least `min`, or `fallback` when absent. */
function metaInt(f: GgufFile, key: string, min: number, fallback?: number): number {
  const v = f.metadata.get(key) ?? fallback;
  if (v === undefined) metaFail(f, `missing metadata key '${key}'`);
  const n = typeof v === 'bigint' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < min) metaFail(f, `'${key}' must be an integer >= ${min}, got ${describeValue(v)}`);
  return n;
}

/** A positive finite metadata number, or `fallback` when absent. */
function metaFloat(f: GgufFile, key: string, fallback?: number): number {
  const v = f.metadata.get(key) ?? fallback;
  if (v === undefined) metaFail(f, `missing metadata key '${key}'`);
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) metaFail(f, `'${key}' must be a positive number, got ${describeValue(v)}`);
  return shortestFloat32(v);
}

/**
 * GGUF stores hyperparameters as float32; report the shortest decimal that is the same float32
 * (1e-5 rather than 9.99999974e-6), which is the value the Hugging Face config carried.
 */
function shortestFloat32(v: number): number {
  if (Math.fround(v) !== v) return v;
  for (let digits = 1; digits < 9; digits++) {
    const d = Number(v.toPrecision(digits));
    if (Math.fround(d) === v) return d;
  }
  return v;
}

/** The architecture of a llama GGUF, from its `llama.*` and tokenizer keys. */
function llamaConfig(f: GgufFile): ModelConfig {
  const arch = f.metadata.get('general.architecture');
  if (arch !== 'llama')
    metaFail(f, `general.architecture ${describeValue(arch)} is not supported (expected "llama"; Mistral models are stored as llama)`);
  const scaling = f.metadata.get('llama.rope.scaling.type');
  if (scaling !== undefined && scaling !== 'none') metaFail(f, `RoPE scaling ${describeValue(scaling)} is not supported`);
  const hiddenSize = metaInt(f, 'llama.embedding_length', 1);
  const numHeads = metaInt(f, 'llama.attention.head_count', 1);
  if (!f.metadata.has('llama.attention.key_length') && hiddenSize % numHeads !== 0)
    metaFail(f, `'llama.embedding_length' ${hiddenSize} is not a multiple of 'llama.attention.head_count' ${numHeads} and 'llama.attention.key_length' is missing`);
  const headDim = metaInt(f, 'llama.attention.key_length', 1, hiddenSize / numHeads);
  for (const key of ['llama.attention.value_length', 'llama.rope.dimension_count']) {
    if (f.metadata.has(key) && metaInt(f, key, 1) !== headDim)
      metaFail(f, `'${key}' ${describeValue(f.metadata.get(key))} differs from the head size ${headDim}; only full-width heads and RoPE are supported`);
  }
  const tokens = f.metadata.get('tokenizer.ggml.tokens');
  const vocabFallback = Array.isArray(tokens) ? tokens.length : f.tensors.get('token_embd.weight')?.shape[0];
  return validateConfig(f.path, {
    architecture: 'llama',
    hiddenSize,
    numLayers: metaInt(f, 'llama.block_count', 1),
    numHeads,
    numKvHeads: metaInt(f, 'llama.attention.head_count_kv', 1, numHeads),
    headDim,
    intermediateSize: metaInt(f, 'llama.feed_forward_length', 1),
    vocabSize: metaInt(f, 'llama.vocab_size', 1, vocabFallback),
    ropeTheta: metaFloat(f, 'llama.rope.freq_base', 10000),
    rmsNormEps: metaFloat(f, 'llama.attention.layer_norm_rms_epsilon'),
    slidingWindow: null,
    tieWordEmbeddings: !f.tensors.has('output.weight'),
    attentionBias: false,
    ropeScaling: null,
    maxPositionEmbeddings: metaInt(f, 'llama.context_length', 1),
    bosTokenId: metaInt(f, 'tokenizer.ggml.bos_token_id', 0, 1),
    eosTokenId: metaInt(f, 'tokenizer.ggml.eos_token_id', 0, 2),
  });
}

/** A per-token number array; llama.cpp's defaults (score 0, type normal) when the key is absent. */
function perTokenNumbers(f: GgufFile, key: string, length: number, fallback: number): number[] {
  const v = f.metadata.get(key);
  if (v === undefined) return new Array<number>(length).fill(fallback);
  if (!Array.isArray(v) || v.length !== length || !v.every((x) => typeof x === 'number'))
    metaFail(f, `'${key}' must be an array of ${length} numbers (one per token), got ${describeValue(v)}`);
  return v as number[];
}

function readVocab(f: GgufFile, vocabSize: number): GgufVocab | null {
  const tokens = f.metadata.get('tokenizer.ggml.tokens');
  if (tokens === undefined) return null;
  if (!Array.isArray(tokens) || !tokens.every((t) => typeof t === 'string'))
    metaFail(f, `'tokenizer.ggml.tokens' must be an array of strings, got ${describeValue(tokens)}`);
  if (tokens.length !== vocabSize) metaFail(f, `'tokenizer.ggml.tokens' has ${tokens.length} tokens, the model's vocabulary has ${vocabSize}`);
  const vocab: GgufVocab = {
    tokens: tokens as string[],
    scores: perTokenNumbers(f, 'tokenizer.ggml.scores', vocabSize, 0),
    tokenTypes: perTokenNumbers(f, 'tokenizer.ggml.token_type', vocabSize, 1),
  };
  if (f.metadata.has('tokenizer.ggml.unknown_token_id')) {
    vocab.unknownTokenId = metaInt(f, 'tokenizer.ggml.unknown_token_id', 0);
    if (vocab.unknownTokenId >= vocabSize) metaFail(f, `'tokenizer.ggml.unknown_token_id' ${vocab.unknownTokenId} is outside the vocabulary of ${vocabSize}`);
  }
  return vocab;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((n, i) => n === b[i]);
}

/**
 * A llama-architecture GGUF seen as a Hugging Face checkpoint: HF tensor names, HF row order for
 * q_proj/k_proj (undoing the converter's interleave), and the config from the `llama.*` keys.
 */
export class GgufCheckpoint implements TensorSource {
  readonly file: GgufFile;
  readonly config: ModelConfig;
  /** Keyed by Hugging Face name; dtypes are those stored in the file. */
  readonly tensors = new Map<string, TensorInfo>();
  readonly vocab: GgufVocab | null;
  readonly chatTemplate: string | null;
  private readonly ggufNames = new Map<string, string>();

  constructor(readonly path: string) {
    this.file = new GgufFile(path);
    try {
      this.config = llamaConfig(this.file);
      this.vocab = readVocab(this.file, this.config.vocabSize);
      const template = this.file.metadata.get('tokenizer.chat_template');
      if (template !== undefined && typeof template !== 'string') metaFail(this.file, `'tokenizer.chat_template' must be a string, got ${describeValue(template)}`);
      this.chatTemplate = template ?? null;
      this.mapTensors();
    } catch (e) {
      this.file.close();
      throw e;
    }
  }

  private mapTensors(): void {
    const c = this.config;
    // Each layer has several tensors: a larger layer count is wrong, and must not size the list below.
    if (c.numLayers > this.file.tensors.size)
      metaFail(this.file, `'llama.block_count' is ${c.numLayers}, but the file has only ${this.file.tensors.size} tensors`);
    const expected = llamaTensors(c);
    const byGguf = new Map(expected.map((e) => [e.gguf, e]));
    for (const t of this.file.tensors.values()) {
      const e = byGguf.get(t.name);
      if (!e) metaFail(this.file, `tensor '${t.name}' is not part of a ${c.numLayers}-layer llama checkpoint`);
      if (!sameShape(t.shape, e.shape)) metaFail(this.file, `tensor '${t.name}' has shape [${t.shape.join(', ')}], the config needs [${e.shape.join(', ')}]`);
    }
    for (const e of expected) {
      const t = this.file.tensors.get(e.gguf);
      if (!t) metaFail(this.file, `tensor '${e.gguf}' (${e.hf}) is missing`);
      this.tensors.set(e.hf, { name: e.hf, dtype: t.dtype, shape: e.shape });
      this.ggufNames.set(e.hf, e.gguf);
    }
  }

  readF32(name: string): Float32Array {
    const gguf = this.ggufNames.get(name);
    if (!gguf) throw new FormatError(this.path, `no tensor named '${name}'`);
    const data = this.file.readF32(gguf);
    const heads = permutedHeads(name, this.config);
    return heads ? reorderRows(data, this.tensors.get(name)!.shape, heads, false) : data;
  }

  close(): void {
    this.file.close();
  }
}

// ---- Writing ----

const WRITE_ALIGNMENT = 32;
const QUANTIZATION_VERSION = 2; // ggml's GGML_QNT_VERSION, written by llama.cpp beside quantized types

export type GgufWeightDType = 'F32' | 'F16' | 'Q8_0' | 'Q4_0';

/** llama.cpp's llama_ftype for a file whose matrices are mostly of this type. */
const FILE_TYPE: Record<GgufWeightDType, number> = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 7 };

export interface GgufTensorToWrite {
  /** Hugging Face name, e.g. 'model.layers.0.self_attn.q_proj.weight'. */
  name: string;
  shape: number[];
  /** The values in HF layout, or a function producing them when the writer gets to this tensor. */
  data: Float32Array | (() => Float32Array);
}

export interface GgufWriteOptions {
  config: ModelConfig;
  tensors: GgufTensorToWrite[];
  vocab: GgufVocab;
  /** Type of the 2-D weights, token embedding included; norm vectors stay F32. */
  dtype: GgufWeightDType;
  /** `general.name`. */
  name?: string;
  chatTemplate?: string;
}

/** Little-endian appends to a growing buffer, for the header. */
class ByteWriter {
  private buf = new Uint8Array(1 << 16);
  private view = new DataView(this.buf.buffer);
  private length = 0;
  private readonly utf8 = new TextEncoder();

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): void {
    this.reserve(1);
    this.buf[this.length++] = v;
  }
  u32(v: number): void {
    this.reserve(4);
    this.view.setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.reserve(4);
    this.view.setInt32(this.length, v, true);
    this.length += 4;
  }
  f32(v: number): void {
    this.reserve(4);
    this.view.setFloat32(this.length, v, true);
    this.length += 4;
  }
  u64(v: number): void {
    this.reserve(8);
    this.view.setBigUint64(this.length, BigInt(v), true);
    this.length += 8;
  }
  string(s: string): void {
    const bytes = this.utf8.encode(s);
    this.u64(bytes.length);
    this.reserve(bytes.length);
    this.buf.set(bytes, this.length);
    this.length += bytes.length;
  }
  /** Zero bytes up to the next multiple of `alignment` (the buffer is zero beyond `length`). */
  padTo(alignment: number): void {
    const n = alignUp(this.length, alignment) - this.length;
    this.reserve(n);
    this.length += n;
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

interface KvValue {
  type: number;
  write(w: ByteWriter): void;
}

const u32Value = (v: number): KvValue => ({ type: V.UINT32, write: (w) => w.u32(v) });
const f32Value = (v: number): KvValue => ({ type: V.FLOAT32, write: (w) => w.f32(v) });
const stringValue = (v: string): KvValue => ({ type: V.STRING, write: (w) => w.string(v) });
const boolValue = (v: boolean): KvValue => ({ type: V.BOOL, write: (w) => w.u8(v ? 1 : 0) });
function arrayValue<T>(elementType: number, values: readonly T[], put: (w: ByteWriter, v: T) => void): KvValue {
  return {
    type: V.ARRAY,
    write: (w) => {
      w.u32(elementType);
      w.u64(values.length);
      for (const v of values) put(w, v);
    },
  };
}

function metadataToWrite(o: GgufWriteOptions): Array<[string, KvValue]> {
  const [c, v] = [o.config, o.vocab];
  const kv: Array<[string, KvValue]> = [
    ['general.architecture', stringValue('llama')],
    ['general.name', stringValue(o.name ?? 'npuserve')],
    ['general.alignment', u32Value(WRITE_ALIGNMENT)],
    ['general.file_type', u32Value(FILE_TYPE[o.dtype])],
    ['llama.context_length', u32Value(c.maxPositionEmbeddings)],
    ['llama.embedding_length', u32Value(c.hiddenSize)],
    ['llama.block_count', u32Value(c.numLayers)],
    ['llama.feed_forward_length', u32Value(c.intermediateSize)],
    ['llama.attention.head_count', u32Value(c.numHeads)],
    ['llama.attention.head_count_kv', u32Value(c.numKvHeads)],
    ['llama.attention.key_length', u32Value(c.headDim)],
    ['llama.attention.value_length', u32Value(c.headDim)],
    ['llama.rope.dimension_count', u32Value(c.headDim)],
    ['llama.rope.freq_base', f32Value(c.ropeTheta)],
    ['llama.attention.layer_norm_rms_epsilon', f32Value(c.rmsNormEps)],
    ['llama.vocab_size', u32Value(c.vocabSize)],
    ['tokenizer.ggml.model', stringValue('llama')],
    ['tokenizer.ggml.tokens', arrayValue(V.STRING, v.tokens, (w, t) => w.string(t))],
    ['tokenizer.ggml.scores', arrayValue(V.FLOAT32, v.scores, (w, s) => w.f32(s))],
    ['tokenizer.ggml.token_type', arrayValue(V.INT32, v.tokenTypes, (w, t) => w.i32(t))],
    ['tokenizer.ggml.bos_token_id', u32Value(c.bosTokenId)],
    ['tokenizer.ggml.eos_token_id', u32Value(c.eosTokenId)],
    ['tokenizer.ggml.unknown_token_id', u32Value(v.unknownTokenId ?? 0)],
    ['tokenizer.ggml.add_bos_token', boolValue(true)],
  ];
  if (o.dtype === 'Q8_0' || o.dtype === 'Q4_0') kv.push(['general.quantization_version', u32Value(QUANTIZATION_VERSION)]);
  if (o.chatTemplate !== undefined) kv.push(['tokenizer.chat_template', stringValue(o.chatTemplate)]);
  return kv;
}

interface PlannedTensor {
  hf: string;
  gguf: string;
  shape: number[]; // HF order
  type: GgmlType;
  offset: number; // from the start of the data section
  byteLength: number;
  data: GgufTensorToWrite['data'];
}

/**
 * The stored type of one tensor: vectors stay F32; a quantized type needs rows that are whole
 * blocks, otherwise the matrix falls back to F16 (as llama.cpp's quantizer does).
 */
function storedType(shape: readonly number[], dtype: GgufWeightDType): GgmlType {
  if (shape.length === 1) return ggmlTypeOf('F32');
  const type = ggmlTypeOf(dtype);
  return shape[shape.length - 1] % type.blockValues === 0 ? type : ggmlTypeOf('F16');
}

/** Tensors need no place in a GGUF: a tied lm_head, and RoPE's inverse frequencies (derived). */
function skippedOnWrite(name: string, c: ModelConfig): boolean {
  return (name === 'lm_head.weight' && c.tieWordEmbeddings) || name.endsWith('.rotary_emb.inv_freq');
}

function planTensors(o: GgufWriteOptions): PlannedTensor[] {
  const given = new Map<string, GgufTensorToWrite>();
  for (const t of o.tensors) {
    if (given.has(t.name)) throw new Error(`tensor '${t.name}' is given twice`);
    given.set(t.name, t);
  }
  const expected = llamaTensors(o.config);
  const known = new Set(expected.map((e) => e.hf));
  for (const name of given.keys()) {
    if (!known.has(name) && !skippedOnWrite(name, o.config)) throw new Error(`tensor '${name}' has no place in a ${o.config.numLayers}-layer llama GGUF`);
  }
  let offset = 0;
  return expected.map((e) => {
    const t = given.get(e.hf);
    if (!t) throw new Error(`tensor '${e.hf}' is missing`);
    if (!sameShape(t.shape, e.shape)) throw new Error(`tensor '${e.hf}' has shape [${t.shape.join(', ')}], the config needs [${e.shape.join(', ')}]`);
    const type = storedType(e.shape, o.dtype);
    const byteLength = (elementCount(e.shape) / type.blockValues) * type.blockBytes;
    const planned = { ...e, type, offset, byteLength, data: t.data };
    offset = alignUp(offset + byteLength, WRITE_ALIGNMENT);
    return planned;
  });
}

function checkWritable(path: string, o: GgufWriteOptions): void {
  const c = validateConfig(path, o.config);
  if (c.slidingWindow !== null && c.slidingWindow < c.maxPositionEmbeddings)
    throw new Error(`a llama GGUF has no sliding window: attention over ${c.slidingWindow} tokens cannot be stored (context is ${c.maxPositionEmbeddings})`);
  const v = o.vocab;
  for (const [what, n] of [['tokens', v.tokens.length], ['scores', v.scores.length], ['tokenTypes', v.tokenTypes.length]] as const) {
    if (n !== c.vocabSize) throw new Error(`vocab.${what} has ${n} entries, the config's vocabulary has ${c.vocabSize}`);
  }
  const unk = v.unknownTokenId ?? 0;
  if (!Number.isSafeInteger(unk) || unk < 0 || unk >= c.vocabSize) throw new Error(`vocab.unknownTokenId ${unk} is outside the vocabulary of ${c.vocabSize}`);
}

function encodeHeader(o: GgufWriteOptions, plan: PlannedTensor[]): Uint8Array {
  const kv = metadataToWrite(o);
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(WRITE_VERSION);
  w.u64(plan.length);
  w.u64(kv.length);
  for (const [key, value] of kv) {
    w.string(key);
    w.u32(value.type);
    value.write(w);
  }
  for (const t of plan) {
    w.string(t.gguf);
    w.u32(t.shape.length);
    for (let d = t.shape.length - 1; d >= 0; d--) w.u64(t.shape[d]); // GGUF's ne[] is innermost first
    w.u32(t.type.id);
    w.u64(t.offset);
  }
  w.padTo(WRITE_ALIGNMENT);
  return w.bytes();
}

function encodeTensor(t: PlannedTensor, c: ModelConfig): Uint8Array {
  const raw = typeof t.data === 'function' ? t.data() : t.data;
  if (raw.length !== elementCount(t.shape)) throw new Error(`tensor '${t.hf}': shape [${t.shape.join(', ')}] does not match ${raw.length} values`);
  const heads = permutedHeads(t.hf, c);
  const data = heads ? reorderRows(raw, t.shape, heads, true) : raw;
  switch (t.type.dtype) {
    case 'F32': return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    case 'F16': {
      const out = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) out[i] = f32ToF16(data[i]);
      return new Uint8Array(out.buffer);
    }
    case 'Q8_0': return quantizeQ8_0(data);
    case 'Q4_0': return quantizeQ4_0(data);
    default: throw new Error(`cannot write ${t.type.dtype}`);
  }
}

function writeAll(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length; ) done += writeSync(fd, bytes, done);
}

/**
 * Writes a llama-architecture GGUF v3 that llama.cpp loads: HF-named float32 tensors (q_proj and
 * k_proj rows interleaved as llama.cpp expects), the config as `llama.*` keys, and a SentencePiece
 * vocabulary. Goes through `path + '.tmp'` and a rename; one tensor is in memory at a time.
 */
export function writeGguf(path: string, opts: GgufWriteOptions): void {
  checkWritable(path, opts);
  const plan = planTensors(opts);
  const header = encodeHeader(opts, plan);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeAll(fd, header);
    for (const t of plan) {
      const bytes = encodeTensor(t, opts.config);
      writeAll(fd, bytes);
      writeAll(fd, new Uint8Array(alignUp(bytes.length, WRITE_ALIGNMENT) - bytes.length));
    }
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}
