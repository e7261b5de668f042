// Reader for GGUF, llama.cpp's single-file checkpoint (versions 2 and 3, little-endian): metadata,
// tensor table, and float32 reads of single tensors. Every count, length and byte range is checked
// against the file before it is used. The writer is gguf-writer.ts, the model view gguf-model.ts.
import { closeSync, fstatSync } from 'node:fs';

import { FormatError } from '../errors.js';
import { openRegularFile } from './files.js';
import { dequantize, ggmlType, ggmlTypeName, READABLE_GGML_TYPES } from './ggml-types.js';
import { readExact, type TensorInfo, type TensorSource } from './tensors.js';

export const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const DEFAULT_ALIGNMENT = 32;
const HEADER_BYTES = 24; // magic, version, tensor count, metadata count
const READ_CHUNK_BYTES = 1 << 20;
const MAX_STRING_BYTES = 1 << 24;
const MAX_ARRAY_LENGTH = 1 << 24;
const MAX_ARRAY_DEPTH = 8;
const MAX_TENSOR_NAME_BYTES = 63; // ggml's GGML_MAX_NAME (64) includes the terminating NUL
const MAX_DIMS = 4;

/** GGUF metadata value types, as numbered in the file. */
export const V = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;
/** The fewest bytes a value of each type takes (a string or an array at least its length fields). */
const MIN_VALUE_BYTES = [1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8];

/** A metadata value: 64-bit integers are bigints, every other number a number. */
export type GgufValue = number | bigint | boolean | string | GgufValue[];

export function alignUp(offset: number, alignment: number): number {
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
  /** Where each metadata value is stored: its type and byte range in the file. */
  private readonly valueSpans = new Map<string, { type: number; start: number; end: number }>();
  readonly tensors = new Map<string, GgufTensor>();
  readonly version: number;
  readonly alignment: number;
  /** Absolute offset of the data section (tensor offsets in the file are relative to it). */
  readonly dataOffset: number;
  private fd: number;

  constructor(readonly path: string) {
    this.fd = openRegularFile(path);
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
    // What the file starts with instead is not shown: it could be anyone's secret.
    if (magic !== GGUF_MAGIC) this.fail('not a GGUF file: its first 4 bytes are not "GGUF"');
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
    const start = r.pos;
    this.metadata.set(key, readValue(r, type, `key '${key}'`, 0));
    this.valueSpans.set(key, { type, start, end: r.pos });
  }

  /** A metadata value's type and its bytes exactly as stored, for copying it verbatim. */
  rawValue(key: string): { type: number; bytes: Uint8Array } {
    const span = this.valueSpans.get(key);
    if (!span) throw new FormatError(this.path, `no metadata key '${key}'`);
    return { type: span.type, bytes: readExact(this.fd, this.path, span.start, span.end - span.start) };
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

/** A metadata value as an error message quotes it. */
export function describeValue(v: GgufValue | undefined): string {
  if (Array.isArray(v)) return `an array of ${v.length}`;
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
}
