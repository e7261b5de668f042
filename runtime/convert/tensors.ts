// The common view of a checkpoint file's tensors, whatever its container (safetensors, GGUF):
// names, dtypes and shapes, and a reader that returns a tensor as float32.
import { readSync } from 'node:fs';

import { FormatError } from '../errors.js';

export type SourceDType =
  | 'F32' | 'F16' | 'BF16'
  | 'Q8_0' | 'Q4_0' | 'Q4_1' | 'Q5_0' | 'Q5_1' | 'Q2_K' | 'Q3_K' | 'Q4_K' | 'Q5_K' | 'Q6_K'; // ggml types in GGUF files

export interface TensorInfo {
  name: string;
  dtype: SourceDType;
  /** Outermost dimension first (a weight is [out, in], as in PyTorch). */
  shape: number[];
}

export interface TensorSource {
  readonly path: string;
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** The tensor's values as float32, in row-major order of `shape`. */
  readF32(name: string): Float32Array;
  close(): void;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

const f16Table = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const mant = h & 0x3ff;
    if (exp === 0) t[h] = sign * mant * 2 ** -24;
    else if (exp === 31) t[h] = mant ? NaN : sign * Infinity;
    else t[h] = sign * (1 + mant / 1024) * 2 ** (exp - 15);
  }
  return t;
})();

export function f16ToF32(h: number): number {
  return f16Table[h & 0xffff];
}

/** Decodes little-endian F16 or BF16 values into float32. */
export function halfBytesToF32(bytes: Uint8Array, dtype: 'F16' | 'BF16'): Float32Array {
  const n = bytes.length >> 1;
  const out = new Float32Array(n);
  if (dtype === 'F16') {
    for (let i = 0; i < n; i++) out[i] = f16Table[bytes[2 * i] | (bytes[2 * i + 1] << 8)];
  } else {
    const u32 = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) u32[i] = ((bytes[2 * i] | (bytes[2 * i + 1] << 8)) << 16) >>> 0;
  }
  return out;
}

/** float32 -> IEEE half (round to nearest even), for writing F16 checkpoints. */
export function f32ToF16(value: number): number {
  const f = new Float32Array([value]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0);
  if (absx >= 0x477ff000) return sign | 0x7c00;
  if (absx < 0x38800000) {
    if (absx < 0x33000000) return sign;
    const mant = (absx & 0x7fffff) | 0x800000;
    const shift = 126 - (absx >>> 23);
    let rounded = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && rounded & 1)) rounded++;
    return sign | rounded;
  }
  const bits = absx - 0x38000000;
  let rounded = bits >>> 13;
  const rem = bits & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && rounded & 1)) rounded++;
  return sign | rounded;
}

/** Reads exactly `length` bytes at `offset` of an open file, or throws naming what was short. */
export function readExact(fd: number, path: string, offset: number, length: number): Uint8Array {
  const buf = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, offset + done);
    if (n === 0) throw new FormatError(path, `unexpected end of file at byte ${offset + done} (needed ${length} bytes from byte ${offset})`);
    done += n;
  }
  return buf;
}
