// ggml's tensor types as GGUF files store them: block sizes, decoders to float32 for every type a
// user's GGUF is likely to carry (plain floats, the 32-value quants and the 256-value K-quants), and
// the Q8_0/Q4_0 encoders the GGUF writer uses. Layouts follow ggml-common.h and ggml-quants.c.
import { f16ToF32, f32ToF16, halfBytesToF32, type SourceDType } from './tensors.js';

const QK = 32; // values per block of the 32-value quants (Q4_0 .. Q8_0)
const QK_K = 256; // values per super-block of the K-quants

export interface GgmlType {
  /** ggml_type number, as in a GGUF tensor header. */
  id: number;
  dtype: SourceDType;
  blockValues: number;
  blockBytes: number;
  /** Decodes `src` (whole blocks) into `out` (`blockValues` values per block). */
  decode(src: Uint8Array, out: Float32Array): void;
}

// ggml_type numbering (ggml.h), for naming the types we cannot read; 4, 5 and 31-33 were removed.
const GGML_TYPE_NAMES: Record<number, string> = {
  0: 'F32', 1: 'F16', 2: 'Q4_0', 3: 'Q4_1', 6: 'Q5_0', 7: 'Q5_1', 8: 'Q8_0', 9: 'Q8_1', 10: 'Q2_K', 11: 'Q3_K',
  12: 'Q4_K', 13: 'Q5_K', 14: 'Q6_K', 15: 'Q8_K', 16: 'IQ2_XXS', 17: 'IQ2_XS', 18: 'IQ3_XXS', 19: 'IQ1_S',
  20: 'IQ4_NL', 21: 'IQ3_S', 22: 'IQ2_S', 23: 'IQ4_XS', 24: 'I8', 25: 'I16', 26: 'I32', 27: 'I64', 28: 'F64',
  29: 'IQ1_M', 30: 'BF16', 34: 'TQ1_0', 35: 'TQ2_0', 39: 'MXFP4', 40: 'NVFP4', 41: 'Q1_0',
};

/** The name ggml gives a type number, or 'unknown'. */
export function ggmlTypeName(id: number): string {
  return GGML_TYPE_NAMES[id] ?? 'unknown';
}

/** A little-endian f16 at `at`, as float32. */
function f16At(src: Uint8Array, at: number): number {
  return f16ToF32(src[at] | (src[at + 1] << 8));
}

function decodeF32(src: Uint8Array, out: Float32Array): void {
  new Uint8Array(out.buffer, out.byteOffset, src.length).set(src);
}

function decodeF16(src: Uint8Array, out: Float32Array): void {
  out.set(halfBytesToF32(src, 'F16'));
}

function decodeBF16(src: Uint8Array, out: Float32Array): void {
  out.set(halfBytesToF32(src, 'BF16'));
}

// Q8_0 block (34 bytes): f16 scale d, 32 int8 q; value = d * q.
function decodeQ8_0(src: Uint8Array, out: Float32Array): void {
  const s8 = new Int8Array(src.buffer, src.byteOffset, src.length);
  for (let o = 0, y = 0; o < src.length; o += 34, y += QK) {
    const d = f16At(src, o);
    for (let j = 0; j < QK; j++) out[y + j] = d * s8[o + 2 + j];
  }
}

// Q4_0 block (18 bytes): f16 scale d, 16 bytes whose low nibble j is value j and high nibble value
// j + 16; value = (nibble - 8) * d.
function decodeQ4_0(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 18, y += QK) {
    const d = f16At(src, o);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 2 + j];
      out[y + j] = ((q & 15) - 8) * d;
      out[y + j + 16] = ((q >> 4) - 8) * d;
    }
  }
}

// Q4_1 block (20 bytes): f16 scale d, f16 minimum m, nibbles as in Q4_0; value = nibble * d + m.
function decodeQ4_1(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 20, y += QK) {
    const d = f16At(src, o);
    const m = f16At(src, o + 2);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 4 + j];
      out[y + j] = (q & 15) * d + m;
      out[y + j + 16] = (q >> 4) * d + m;
    }
  }
}

// Q5_0 block (22 bytes): f16 scale d, a uint32 whose bit i is the fifth bit of value i, nibbles as
// in Q4_0; value = (5-bit q - 16) * d.
function decodeQ5_0(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 22, y += QK) {
    const d = f16At(src, o);
    const qh = src[o + 2] | (src[o + 3] << 8) | (src[o + 4] << 16) | (src[o + 5] << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 6 + j];
      out[y + j] = (((q & 15) | (((qh >>> j) & 1) << 4)) - 16) * d;
      out[y + j + 16] = (((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) - 16) * d;
    }
  }
}

// Q5_1 block (24 bytes): f16 scale d, f16 minimum m, fifth bits and nibbles as in Q5_0;
// value = 5-bit q * d + m.
function decodeQ5_1(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 24, y += QK) {
    const d = f16At(src, o);
    const m = f16At(src, o + 2);
    const qh = src[o + 4] | (src[o + 5] << 8) | (src[o + 6] << 16) | (src[o + 7] << 24);
    for (let j = 0; j < 16; j++) {
      const q = src[o + 8 + j];
      out[y + j] = ((q & 15) | (((qh >>> j) & 1) << 4)) * d + m;
      out[y + j + 16] = ((q >> 4) | (((qh >>> (j + 16)) & 1) << 4)) * d + m;
    }
  }
}

// Per-16-value multipliers of the K-quant block being decoded (one block at a time, no allocation).
const subScales = new Float64Array(16);
const subMins = new Float64Array(16);

// Q2_K super-block (84 bytes): 16 scale bytes (low nibble scale, high nibble min, per 16 values),
// 64 bytes of 2-bit q, f16 d, f16 dmin. Each 32 bytes of q hold 128 values: bits 2g..2g+1 of byte l
// are value 32g + l; value = d * scale * q - dmin * min.
function decodeQ2_K(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 84) {
    const d = f16At(src, o + 80);
    const dmin = f16At(src, o + 82);
    for (let k = 0; k < 16; k++) {
      subScales[k] = d * (src[o + k] & 15);
      subMins[k] = dmin * (src[o + k] >> 4);
    }
    for (let n = 0; n < 2; n++, y += 128) {
      const q = o + 16 + 32 * n;
      for (let l = 0; l < 32; l++) {
        const k = 8 * n + (l >> 4);
        const b = src[q + l];
        out[y + l] = subScales[k] * (b & 3) - subMins[k];
        out[y + l + 32] = subScales[k + 2] * ((b >> 2) & 3) - subMins[k + 2];
        out[y + l + 64] = subScales[k + 4] * ((b >> 4) & 3) - subMins[k + 4];
        out[y + l + 96] = subScales[k + 6] * (b >> 6) - subMins[k + 6];
      }
    }
  }
}

// Q3_K super-block (110 bytes): 32 bytes of high bits (bit 4n + g of byte l belongs to value
// 128n + 32g + l; when it is clear the value loses 4), 64 bytes of 2-bit low parts laid out as in
// Q2_K, 12 bytes of sixteen 6-bit scales (low nibbles in bytes 0..7, high 2-bit pairs in bytes
// 8..11), f16 d; value = d * (scale - 32) * q.
function decodeQ3_K(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 110) {
    const d = f16At(src, o + 108);
    const s = o + 96;
    for (let k = 0; k < 16; k++) {
      const low = k < 8 ? src[s + k] & 15 : src[s + k - 8] >> 4;
      const high = (src[s + 8 + (k & 3)] >> (2 * (k >> 2))) & 3;
      subScales[k] = d * ((low | (high << 4)) - 32);
    }
    for (let n = 0; n < 2; n++, y += 128) {
      const q = o + 32 + 32 * n;
      for (let l = 0; l < 32; l++) {
        const k = 8 * n + (l >> 4);
        const b = src[q + l];
        const h = src[o + l] >> (4 * n);
        out[y + l] = subScales[k] * ((b & 3) - 4 + ((h & 1) << 2));
        out[y + l + 32] = subScales[k + 2] * (((b >> 2) & 3) - 4 + ((h & 2) << 1));
        out[y + l + 64] = subScales[k + 4] * (((b >> 4) & 3) - 4 + (h & 4));
        out[y + l + 96] = subScales[k + 6] * ((b >> 6) - 4 + ((h & 8) >> 1));
      }
    }
  }
}

/**
 * Scale and min number `j` (0..7) of a Q4_K/Q5_K super-block, 6 bits each in 12 bytes at `s`:
 * bytes 0..3 hold scales 0..3 and bytes 4..7 mins 0..3 in their low 6 bits; scales and mins 4..7
 * are a nibble of bytes 8..11 plus the top 2 bits of bytes 0..7. Returns scale | min << 8.
 */
function scaleMinK4(src: Uint8Array, s: number, j: number): number {
  if (j < 4) return (src[s + j] & 63) | ((src[s + j + 4] & 63) << 8);
  const sc = (src[s + j + 4] & 15) | ((src[s + j - 4] >> 6) << 4);
  const m = (src[s + j + 4] >> 4) | ((src[s + j] >> 6) << 4);
  return sc | (m << 8);
}

// Q4_K super-block (144 bytes): f16 d, f16 dmin, 12 bytes of scales/mins, 128 bytes of nibbles.
// Each 32 bytes hold 64 values: the low nibbles first (scale pair 2i), then the high (2i + 1);
// value = d * scale * q - dmin * min.
function decodeQ4_K(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 144, y += QK_K) {
    const d = f16At(src, o);
    const dmin = f16At(src, o + 2);
    for (let i = 0; i < 4; i++) {
      const a = scaleMinK4(src, o + 4, 2 * i);
      const b = scaleMinK4(src, o + 4, 2 * i + 1);
      const d1 = d * (a & 255);
      const m1 = dmin * (a >> 8);
      const d2 = d * (b & 255);
      const m2 = dmin * (b >> 8);
      const q = o + 16 + 32 * i;
      const y0 = y + 64 * i;
      for (let l = 0; l < 32; l++) {
        out[y0 + l] = d1 * (src[q + l] & 15) - m1;
        out[y0 + 32 + l] = d2 * (src[q + l] >> 4) - m2;
      }
    }
  }
}

// Q5_K super-block (176 bytes): as Q4_K, with 32 bytes of fifth bits before the nibbles: for the
// i-th 64 values, bit 2i of byte l belongs to the low-nibble value l and bit 2i + 1 to the high.
function decodeQ5_K(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 176, y += QK_K) {
    const d = f16At(src, o);
    const dmin = f16At(src, o + 2);
    const qh = o + 16;
    for (let i = 0; i < 4; i++) {
      const a = scaleMinK4(src, o + 4, 2 * i);
      const b = scaleMinK4(src, o + 4, 2 * i + 1);
      const d1 = d * (a & 255);
      const m1 = dmin * (a >> 8);
      const d2 = d * (b & 255);
      const m2 = dmin * (b >> 8);
      const q = o + 48 + 32 * i;
      const y0 = y + 64 * i;
      for (let l = 0; l < 32; l++) {
        const h = src[qh + l] >> (2 * i);
        out[y0 + l] = d1 * ((src[q + l] & 15) | ((h & 1) << 4)) - m1;
        out[y0 + 32 + l] = d2 * ((src[q + l] >> 4) | ((h & 2) << 3)) - m2;
      }
    }
  }
}

// Q6_K super-block (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8
// scales (one per 16 values), f16 d. Per 128 values: byte l of 64 low-nibble bytes gives values l
// and l + 64 (low and high nibble) or l + 32 and l + 96 (bytes 32..63); value = d * scale * (q - 32).
function decodeQ6_K(src: Uint8Array, out: Float32Array): void {
  for (let o = 0, y = 0; o < src.length; o += 210) {
    const d = f16At(src, o + 208);
    for (let n = 0; n < 2; n++, y += 128) {
      const ql = o + 64 * n;
      const qh = o + 128 + 32 * n;
      const sc = o + 192 + 8 * n;
      for (let l = 0; l < 32; l++) {
        const is = sc + (l >> 4);
        const lo = src[ql + l];
        const hi = src[ql + l + 32];
        const h = src[qh + l];
        out[y + l] = d * ((src[is] << 24) >> 24) * (((lo & 15) | ((h & 3) << 4)) - 32);
        out[y + l + 32] = d * ((src[is + 2] << 24) >> 24) * (((hi & 15) | (((h >> 2) & 3) << 4)) - 32);
        out[y + l + 64] = d * ((src[is + 4] << 24) >> 24) * (((lo >> 4) | (((h >> 4) & 3) << 4)) - 32);
        out[y + l + 96] = d * ((src[is + 6] << 24) >> 24) * (((hi >> 4) | ((h >> 6) << 4)) - 32);
      }
    }
  }
}

const TYPES: GgmlType[] = [
  { id: 0, dtype: 'F32', blockValues: 1, blockBytes: 4, decode: decodeF32 },
  { id: 1, dtype: 'F16', blockValues: 1, blockBytes: 2, decode: decodeF16 },
  { id: 30, dtype: 'BF16', blockValues: 1, blockBytes: 2, decode: decodeBF16 },
  { id: 8, dtype: 'Q8_0', blockValues: QK, blockBytes: 34, decode: decodeQ8_0 },
  { id: 2, dtype: 'Q4_0', blockValues: QK, blockBytes: 18, decode: decodeQ4_0 },
  { id: 3, dtype: 'Q4_1', blockValues: QK, blockBytes: 20, decode: decodeQ4_1 },
  { id: 6, dtype: 'Q5_0', blockValues: QK, blockBytes: 22, decode: decodeQ5_0 },
  { id: 7, dtype: 'Q5_1', blockValues: QK, blockBytes: 24, decode: decodeQ5_1 },
  { id: 10, dtype: 'Q2_K', blockValues: QK_K, blockBytes: 84, decode: decodeQ2_K },
  { id: 11, dtype: 'Q3_K', blockValues: QK_K, blockBytes: 110, decode: decodeQ3_K },
  { id: 12, dtype: 'Q4_K', blockValues: QK_K, blockBytes: 144, decode: decodeQ4_K },
  { id: 13, dtype: 'Q5_K', blockValues: QK_K, blockBytes: 176, decode: decodeQ5_K },
  { id: 14, dtype: 'Q6_K', blockValues: QK_K, blockBytes: 210, decode: decodeQ6_K },
];
const TYPE_BY_ID = new Map(TYPES.map((t) => [t.id, t]));
const TYPE_BY_DTYPE = new Map(TYPES.map((t) => [t.dtype, t]));

/** The names of the types `ggmlType` knows, for error messages. */
export const READABLE_GGML_TYPES = TYPES.map((t) => t.dtype).join(', ');

/** The ggml type with this number, if it can be read. */
export function ggmlType(id: number): GgmlType | undefined {
  return TYPE_BY_ID.get(id);
}

/** The ggml type stored as this dtype. */
export function ggmlTypeOf(dtype: SourceDType): GgmlType {
  return TYPE_BY_DTYPE.get(dtype)!;
}

/** Decodes whole blocks of `type` to float32; F32 data that is 4-byte aligned is returned as a view. */
export function dequantize(type: GgmlType, bytes: Uint8Array): Float32Array {
  if (bytes.length % type.blockBytes !== 0) throw new Error(`${bytes.length} bytes are not whole ${type.dtype} blocks of ${type.blockBytes} bytes`);
  if (type.id === 0 && bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  const out = new Float32Array((bytes.length / type.blockBytes) * type.blockValues);
  type.decode(bytes, out);
  return out;
}

function roundHalfAwayFromZero(v: number): number {
  return v < 0 ? -Math.floor(-v + 0.5) : Math.floor(v + 0.5);
}

function putF16(out: Uint8Array, at: number, v: number): void {
  const h = f32ToF16(v);
  out[at] = h & 0xff;
  out[at + 1] = h >> 8;
}

// The encoders follow llama.cpp's quantize_row_q8_0_ref and quantize_row_q4_0_ref step by step in
// float32 arithmetic (Math.fround), so the bytes are the ones llama.cpp would write.

export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / QK) * 34);
  for (let base = 0, o = 0; base < x.length; base += QK, o += 34) {
    let amax = 0;
    for (let j = 0; j < QK; j++) {
      const a = Math.abs(x[base + j]);
      if (a > amax) amax = a;
    }
    const d = Math.fround(amax / 127);
    const id = d ? Math.fround(1 / d) : 0;
    putF16(out, o, d);
    for (let j = 0; j < QK; j++) out[o + 2 + j] = roundHalfAwayFromZero(Math.fround(x[base + j] * id)) & 0xff;
  }
  return out;
}

export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / QK) * 18);
  const nibble = (v: number, id: number) => Math.min(15, Math.trunc(Math.fround(Math.fround(v * id) + 8.5)));
  for (let base = 0, o = 0; base < x.length; base += QK, o += 18) {
    let amax = 0;
    let max = 0; // the value of largest magnitude, with its sign
    for (let j = 0; j < QK; j++) {
      const v = x[base + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d ? Math.fround(1 / d) : 0;
    putF16(out, o, d);
    for (let j = 0; j < QK / 2; j++) out[o + 2 + j] = nibble(x[base + j], id) | (nibble(x[base + QK / 2 + j], id) << 4);
  }
  return out;
}
