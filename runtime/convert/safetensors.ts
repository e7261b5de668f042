// Reader and writer for Hugging Face safetensors (single file or sharded with
// model.safetensors.index.json). Every header field and byte range is checked before use.
import { closeSync, existsSync, fstatSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';

import { FormatError, jsonProblem } from '../errors.js';
import { isSymlink, openRegularFile, readJsonFile, realFolder, requireInside } from './files.js';
import { elementCount, f32ToF16, halfBytesToF32, readExact, type SourceDType, type TensorInfo, type TensorSource } from './tensors.js';

const MAX_HEADER_BYTES = 100 * 1024 * 1024;
const DTYPE_BYTES: Record<string, number> = { F32: 4, F16: 2, BF16: 2 };

interface Entry extends TensorInfo {
  begin: number; // absolute file offsets
  end: number;
}

/** One safetensors file. */
export class SafetensorsFile implements TensorSource {
  readonly tensors = new Map<string, Entry>();
  readonly metadata: Record<string, string> = {};
  private fd: number;

  constructor(readonly path: string) {
    this.fd = openRegularFile(path);
    try {
      this.parseHeader();
    } catch (e) {
      closeSync(this.fd);
      throw e;
    }
  }

  private fail(detail: string): never {
    throw new FormatError(this.path, detail);
  }

  private parseHeader(): void {
    const size = fstatSync(this.fd).size;
    if (size < 8) this.fail(`file has ${size} bytes, too short for a safetensors header`);
    const lenBytes = readExact(this.fd, this.path, 0, 8);
    const headerLen = Number(new DataView(lenBytes.buffer).getBigUint64(0, true));
    // The length is the file's first 8 bytes: messages describe it but never print it.
    if (headerLen > MAX_HEADER_BYTES) this.fail(`not a safetensors file: the header length (first 8 bytes) exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    if (8 + headerLen > size) this.fail(`not a safetensors file, or truncated: the header length (first 8 bytes) runs past the end of the file (${size} bytes)`);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(readExact(this.fd, this.path, 8, headerLen)));
    } catch (e) {
      this.fail(`not a safetensors file: the header is ${e instanceof SyntaxError ? jsonProblem(e) : 'not UTF-8 text'}`);
    }
    if (typeof header !== 'object' || header === null || Array.isArray(header)) this.fail('header must be a JSON object');
    const dataStart = 8 + headerLen;
    const dataSize = size - dataStart;
    for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
      if (name === '__metadata__') {
        if (typeof raw === 'object' && raw !== null) Object.assign(this.metadata, raw);
        continue;
      }
      this.tensors.set(name, this.parseEntry(name, raw, dataStart, dataSize));
    }
    const sorted = [...this.tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i].begin < sorted[i - 1].end) this.fail(`tensors '${sorted[i - 1].name}' and '${sorted[i].name}' overlap`);
    }
  }

  private parseEntry(name: string, raw: unknown, dataStart: number, dataSize: number): Entry {
    if (typeof raw !== 'object' || raw === null) this.fail(`tensor '${name}': entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !Object.hasOwn(DTYPE_BYTES, dtype))
      this.fail(`tensor '${name}': dtype ${JSON.stringify(dtype)} is not supported (expected F32, F16 or BF16)`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0))
      this.fail(`tensor '${name}': shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((d) => Number.isSafeInteger(d) && d >= 0))
      this.fail(`tensor '${name}': data_offsets must be [begin, end], got ${JSON.stringify(offsets)}`);
    const [begin, end] = offsets as number[];
    if (begin > end) this.fail(`tensor '${name}': data_offsets begin ${begin} is after end ${end}`);
    if (end > dataSize) this.fail(`tensor '${name}' ends at byte ${dataStart + end}, file has ${dataStart + dataSize}`);
    const expected = elementCount(shape as number[]) * DTYPE_BYTES[dtype];
    if (end - begin !== expected)
      this.fail(`tensor '${name}': ${end - begin} bytes of data, shape ${JSON.stringify(shape)} of ${dtype} needs ${expected}`);
    return { name, dtype: dtype as SourceDType, shape: shape as number[], begin: dataStart + begin, end: dataStart + end };
  }

  readF32(name: string): Float32Array {
    const t = this.tensors.get(name);
    if (!t) throw new FormatError(this.path, `no tensor named '${name}'`);
    const bytes = readExact(this.fd, this.path, t.begin, t.end - t.begin);
    if (t.dtype === 'F32') return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
    return halfBytesToF32(bytes, t.dtype as 'F16' | 'BF16');
  }

  close(): void {
    closeSync(this.fd);
  }
}

/** A set of shards named by model.safetensors.index.json, seen as one source. */
export class ShardedSafetensors implements TensorSource {
  readonly tensors = new Map<string, TensorInfo>();
  private owner = new Map<string, SafetensorsFile>();
  private shards: SafetensorsFile[] = [];

  constructor(readonly path: string) {
    const index = readJsonFile(path);
    const folder = realFolder(dirname(path));
    const map = (index as { weight_map?: unknown })?.weight_map;
    if (typeof map !== 'object' || map === null) throw new FormatError(path, "missing 'weight_map' object");
    const byFile = new Map<string, SafetensorsFile>();
    try {
      for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
        if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file === '' || file === '.' || file === '..')
          throw new FormatError(path, `weight_map['${name}'] must be a file name in the same folder, got ${JSON.stringify(file)}`);
        let shard = byFile.get(file);
        if (!shard) {
          const shardPath = join(dirname(path), file);
          if (!existsSync(shardPath) && !isSymlink(shardPath)) throw new FormatError(path, `shard '${file}' (for tensor '${name}') does not exist`);
          requireInside(folder, shardPath);
          shard = new SafetensorsFile(shardPath);
          byFile.set(file, shard);
          this.shards.push(shard);
        }
        const info = shard.tensors.get(name);
        if (!info) throw new FormatError(shard.path, `tensor '${name}' listed in ${path} is not in this shard`);
        this.tensors.set(name, info);
        this.owner.set(name, shard);
      }
    } catch (e) {
      this.close();
      throw e;
    }
  }

  readF32(name: string): Float32Array {
    const shard = this.owner.get(name);
    if (!shard) throw new FormatError(this.path, `no tensor named '${name}'`);
    return shard.readF32(name);
  }

  get shardPaths(): string[] {
    return this.shards.map((s) => s.path);
  }

  close(): void {
    for (const s of this.shards) s.close();
  }
}

export interface TensorToWrite {
  name: string;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
  /** The values, or a function producing them when the writer gets to this tensor. */
  data: Float32Array | (() => Float32Array);
}

const DTYPE_WRITE_BYTES = { F32: 4, F16: 2, BF16: 2 };

function encode(dtype: TensorToWrite['dtype'], data: Float32Array): Uint8Array {
  if (dtype === 'F32') return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  if (dtype === 'F16') {
    for (let i = 0; i < data.length; i++) out[i] = f32ToF16(data[i]);
  } else {
    const u32 = new Uint32Array(data.buffer, data.byteOffset, data.length);
    for (let i = 0; i < data.length; i++) {
      const x = u32[i];
      if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40; // NaN stays NaN (quiet), whatever its payload
      else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // round to nearest even
    }
  }
  return new Uint8Array(out.buffer);
}

/** Writes a safetensors file (through a temporary file and a rename), one tensor in memory at a time. */
export function writeSafetensors(path: string, tensors: TensorToWrite[], metadata: Record<string, string> = {}): void {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const t of tensors) {
    const bytes = elementCount(t.shape) * DTYPE_WRITE_BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  const tmp = `${path}.tmp`;
  const fd = openSync(tmp, 'w');
  try {
    writeSync(fd, len);
    writeSync(fd, headerBytes);
    for (const t of tensors) {
      const data = typeof t.data === 'function' ? t.data() : t.data;
      if (elementCount(t.shape) !== data.length) throw new Error(`tensor '${t.name}': shape ${JSON.stringify(t.shape)} does not match ${data.length} values`);
      const blob = encode(t.dtype, data);
      for (let done = 0; done < blob.length; ) done += writeSync(fd, blob, done);
    }
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}
