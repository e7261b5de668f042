// Writer for GGUF v3 files llama.cpp loads: a llama or qwen2 checkpoint from HF-named tensors, and
// the F32 twin of any GGUF (same metadata and tensor names, every tensor dequantized).
import { closeSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';

import { validateConfig, type ModelConfig } from '../model-config.js';
import { ggmlTypeOf, quantizeQ4_0, quantizeQ8_0, type GgmlType } from './ggml-types.js';
import { alignUp, GGUF_MAGIC, GgufFile, V } from './gguf.js';
import { ggufTensors, permutedHeads, reorderRows, sameShape, type GgufVocab } from './gguf-model.js';
import { elementCount, f32ToF16 } from './tensors.js';

const WRITE_VERSION = 3;
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
  raw(bytes: Uint8Array): void {
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

/** The GGUF architecture a config is stored as: Mistral is llama to llama.cpp. */
function ggufArchitecture(c: ModelConfig): 'llama' | 'qwen2' {
  return c.architecture === 'qwen2' ? 'qwen2' : 'llama';
}

function metadataToWrite(o: GgufWriteOptions): Array<[string, KvValue]> {
  const [c, v] = [o.config, o.vocab];
  const arch = ggufArchitecture(c);
  const kv: Array<[string, KvValue]> = [
    ['general.architecture', stringValue(arch)],
    ['general.name', stringValue(o.name ?? 'npuserve')],
    ['general.alignment', u32Value(WRITE_ALIGNMENT)],
    ['general.file_type', u32Value(FILE_TYPE[o.dtype])],
    [`${arch}.context_length`, u32Value(c.maxPositionEmbeddings)],
    [`${arch}.embedding_length`, u32Value(c.hiddenSize)],
    [`${arch}.block_count`, u32Value(c.numLayers)],
    [`${arch}.feed_forward_length`, u32Value(c.intermediateSize)],
    [`${arch}.attention.head_count`, u32Value(c.numHeads)],
    [`${arch}.attention.head_count_kv`, u32Value(c.numKvHeads)],
    [`${arch}.attention.key_length`, u32Value(c.headDim)],
    [`${arch}.attention.value_length`, u32Value(c.headDim)],
    [`${arch}.rope.dimension_count`, u32Value(c.headDim)],
    [`${arch}.rope.freq_base`, f32Value(c.ropeTheta)],
    [`${arch}.attention.layer_norm_rms_epsilon`, f32Value(c.rmsNormEps)],
    [`${arch}.vocab_size`, u32Value(c.vocabSize)],
    ['tokenizer.ggml.model', stringValue('llama')],
    ['tokenizer.ggml.tokens', arrayValue(V.STRING, v.tokens, (w, t) => w.string(t))],
    ['tokenizer.ggml.scores', arrayValue(V.FLOAT32, v.scores, (w, s) => w.f32(s))],
    ['tokenizer.ggml.token_type', arrayValue(V.INT32, v.tokenTypes, (w, t) => w.i32(t))],
    ['tokenizer.ggml.bos_token_id', u32Value(c.bosTokenId)],
    ['tokenizer.ggml.eos_token_id', u32Value(c.eosTokenId)],
    ['tokenizer.ggml.unknown_token_id', u32Value(v.unknownTokenId ?? 0)],
    ['tokenizer.ggml.add_bos_token', boolValue(true)],
  ];
  if (c.ropeScaling?.type === 'linear')
    kv.push([`${arch}.rope.scaling.type`, stringValue('linear')], [`${arch}.rope.scaling.factor`, f32Value(c.ropeScaling.factor)]);
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

/**
 * RoPE's per-pair frequency divisors, stored by llama.cpp as the `rope_freqs.weight` tensor: given
 * (freq-factors) or derived from Llama 3 scaling as convert_hf_to_gguf.py does; null otherwise.
 */
function ropeFreqFactors(c: ModelConfig): Float32Array | null {
  const s = c.ropeScaling;
  if (s?.type === 'freq-factors') return Float32Array.from(s.factors);
  if (s?.type !== 'llama3') return null;
  const lowFreqWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highFreqWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  return Float32Array.from({ length: c.headDim / 2 }, (_, i) => {
    const wavelen = 2 * Math.PI * c.ropeTheta ** ((2 * i) / c.headDim);
    if (wavelen < highFreqWavelen) return 1;
    if (wavelen > lowFreqWavelen) return s.factor;
    const smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
    return 1 / ((1 - smooth) / s.factor + smooth);
  });
}

function planTensors(o: GgufWriteOptions): PlannedTensor[] {
  const given = new Map<string, GgufTensorToWrite>();
  for (const t of o.tensors) {
    if (given.has(t.name)) throw new Error(`tensor '${t.name}' is given twice`);
    given.set(t.name, t);
  }
  const c = o.config;
  const expected = ggufTensors(c);
  const known = new Set(expected.map((e) => e.hf));
  for (const name of given.keys()) {
    if (!known.has(name) && !skippedOnWrite(name, c))
      throw new Error(`tensor '${name}' has no place in a ${c.numLayers}-layer ${ggufArchitecture(c)} GGUF${c.attentionBias ? ' with attention biases' : ''}`);
  }
  const freqs = ropeFreqFactors(c);
  const list = expected.map((e) => {
    const t = given.get(e.hf);
    if (!t) throw new Error(`tensor '${e.hf}' is missing`);
    if (!sameShape(t.shape, e.shape)) throw new Error(`tensor '${e.hf}' has shape [${t.shape.join(', ')}], the config needs [${e.shape.join(', ')}]`);
    return { ...e, data: t.data };
  });
  if (freqs) list.push({ hf: 'rope_freqs.weight', gguf: 'rope_freqs.weight', shape: [freqs.length], data: freqs });
  let offset = 0;
  return list.map((e) => {
    const type = storedType(e.shape, o.dtype);
    const byteLength = (elementCount(e.shape) / type.blockValues) * type.blockBytes;
    const planned = { ...e, type, offset, byteLength };
    offset = alignUp(offset + byteLength, WRITE_ALIGNMENT);
    return planned;
  });
}

function checkWritable(path: string, o: GgufWriteOptions): void {
  const c = validateConfig(path, o.config);
  if (c.slidingWindow !== null && c.slidingWindow < c.maxPositionEmbeddings)
    throw new Error(`a ${ggufArchitecture(c)} GGUF has no sliding window: attention over ${c.slidingWindow} tokens cannot be stored (context is ${c.maxPositionEmbeddings})`);
  if (c.ropeScaling?.type === 'freq-factors' && c.ropeScaling.factors.length !== c.headDim / 2)
    throw new Error(`ropeScaling has ${c.ropeScaling.factors.length} frequency factors, head size ${c.headDim} needs ${c.headDim / 2}`);
  const v = o.vocab;
  for (const [what, n] of [['tokens', v.tokens.length], ['scores', v.scores.length], ['tokenTypes', v.tokenTypes.length]] as const) {
    if (n !== c.vocabSize) throw new Error(`vocab.${what} has ${n} entries, the config's vocabulary has ${c.vocabSize}`);
  }
  const unk = v.unknownTokenId ?? 0;
  if (!Number.isSafeInteger(unk) || unk < 0 || unk >= c.vocabSize) throw new Error(`vocab.unknownTokenId ${unk} is outside the vocabulary of ${c.vocabSize}`);
}

/** A tensor as the header lists it; `encode` produces its bytes when the writer gets to it. */
interface TensorEntry {
  name: string;
  ne: number[]; // innermost first, as GGUF stores it
  type: GgmlType;
  offset: number; // from the start of the data section
  encode(): Uint8Array;
}

function encodeHeader(kv: Array<[string, KvValue]>, tensors: TensorEntry[], alignment: number): Uint8Array {
  const w = new ByteWriter();
  w.u32(GGUF_MAGIC);
  w.u32(WRITE_VERSION);
  w.u64(tensors.length);
  w.u64(kv.length);
  for (const [key, value] of kv) {
    w.string(key);
    w.u32(value.type);
    value.write(w);
  }
  for (const t of tensors) {
    w.string(t.name);
    w.u32(t.ne.length);
    for (const n of t.ne) w.u64(n);
    w.u32(t.type.id);
    w.u64(t.offset);
  }
  w.padTo(alignment);
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

/** Writes header and tensors through `path + '.tmp'` and a rename; one tensor is in memory at a time. */
function writeFile(path: string, kv: Array<[string, KvValue]>, tensors: TensorEntry[], alignment: number): void {
  const header = encodeHeader(kv, tensors, alignment);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeAll(fd, header);
    for (const t of tensors) {
      const bytes = t.encode();
      writeAll(fd, bytes);
      writeAll(fd, new Uint8Array(alignUp(bytes.length, alignment) - bytes.length));
    }
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
}

/**
 * Writes a llama (or Mistral) or qwen2 GGUF v3 that llama.cpp loads: HF-named float32 tensors
 * (a llama file's q_proj and k_proj rows interleaved as llama.cpp expects), the config as `{arch}.*`
 * keys (RoPE scaling as linear keys or a rope_freqs tensor), and a SentencePiece vocabulary. Goes
 * through `path + '.tmp'` and a rename; one tensor is in memory at a time.
 */
export function writeGguf(path: string, opts: GgufWriteOptions): void {
  checkWritable(path, opts);
  const tensors = planTensors(opts).map((t) => ({
    name: t.gguf,
    ne: [...t.shape].reverse(),
    type: t.type,
    offset: t.offset,
    encode: () => encodeTensor(t, opts.config),
  }));
  writeFile(path, metadataToWrite(opts), tensors, WRITE_ALIGNMENT);
}

/**
 * Writes a twin of the GGUF at `src` to `dest`: every metadata key and value copied byte for byte
 * (tokenizer included) except `general.file_type` (and `general.quantization_version` for Q8_0), set
 * in place or added,
 * and every tensor under the same name and ne[], rows as stored (no reordering), dequantized to F32;
 * with Q8_0, matrices whose rows are whole blocks are then re-quantized to Q8_0 as llama.cpp's
 * quantizer would (vectors stay F32). llama.cpp runs the F32 twin on exactly the weights our reader
 * sees (parity checks), and the Q8_0 twin as its INT8 peer on the same weights (bench:agreement).
 */
export function writeGgufTwin(src: string, dest: string, dtype: 'F32' | 'Q8_0'): void {
  const file = new GgufFile(src);
  try {
    const replaced = new Map<string, KvValue>([['general.file_type', u32Value(FILE_TYPE[dtype])]]);
    if (dtype === 'Q8_0') replaced.set('general.quantization_version', u32Value(QUANTIZATION_VERSION));
    const kv: Array<[string, KvValue]> = [...file.metadata.keys()].map((key) => {
      const { type, bytes } = file.rawValue(key);
      return [key, replaced.get(key) ?? { type, write: (w) => w.raw(bytes) }];
    });
    for (const [key, value] of replaced) if (!file.metadata.has(key)) kv.push([key, value]);
    let offset = 0;
    const tensors = [...file.tensors.values()].map((t): TensorEntry => {
      const type = storedType(t.shape, dtype);
      const encode = () => {
        const values = file.readF32(t.name);
        if (type.dtype === 'Q8_0') return quantizeQ8_0(values);
        if (type.dtype === 'F16') return new Uint8Array(Uint16Array.from(values, f32ToF16).buffer);
        return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      };
      const entry = { name: t.name, ne: [...t.shape].reverse(), type, offset, encode };
      offset = alignUp(offset + (elementCount(t.shape) / type.blockValues) * type.blockBytes, file.alignment);
      return entry;
    });
    writeFile(dest, kv, tensors, file.alignment);
  } finally {
    file.close();
  }
}

/** The F32 twin (see writeGgufTwin). */
export function writeF32Twin(src: string, dest: string): void {
  writeGgufTwin(src, dest, 'F32');
}
