// Decoding of every ggml type the GGUF reader accepts: blocks packed here from known quantized
// values and scales (every bit position and every level of each type), and blocks decoded by an
// independent implementation (gguf-py) kept as a small fixture.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { dequantize, ggmlType, ggmlTypeName, READABLE_GGML_TYPES } from './ggml-types.js';
import { f16ToF32, f32ToF16 } from './tensors.js';

/** A block's f16 field: the value must be exact in half precision, so the expectation is exact too. */
function putF16(bytes: Uint8Array, at: number, v: number): void {
  const h = f32ToF16(v);
  if (f16ToF32(h) !== v) throw new Error(`test value ${v} is not exact in f16`);
  bytes[at] = h & 0xff;
  bytes[at + 1] = h >> 8;
}

/** Quantized level of value i of block b: all `levels` within each run of `levels` values, shifted every 32 values. */
const level = (i: number, b: number, levels: number) => (i * 5 + (i >> 5) * 7 + 3 + b) % levels;

interface Hand {
  bytes: Uint8Array;
  expected: number[];
}

/** Two blocks (positive and negative scales) of a 32-value type. */
function blocks32(blockBytes: number, pack: (block: Uint8Array, b: number) => number[]): Hand {
  const bytes = new Uint8Array(2 * blockBytes);
  const expected: number[] = [];
  for (let b = 0; b < 2; b++) expected.push(...pack(bytes.subarray(b * blockBytes, (b + 1) * blockBytes), b));
  return { bytes, expected };
}

const SCALES = [0.375, -0.0234375]; // d of block 0 and 1
const MINS = [-1.25, 0.5];

const hand: Record<string, () => Hand> = {
  // q = -127, -119, .. 121 (block 1: -124 ..): every bit of the int8 takes both values.
  Q8_0: () => blocks32(34, (blk, b) => {
    putF16(blk, 0, SCALES[b]);
    return Array.from({ length: 32 }, (_, j) => {
      const q = ((j * 8 + b * 3 + 1) % 256) - 128;
      blk[2 + j] = q & 0xff;
      return SCALES[b] * q;
    });
  }),
  Q4_0: () => blocks32(18, (blk, b) => {
    putF16(blk, 0, SCALES[b]);
    const q = Array.from({ length: 32 }, (_, i) => level(i, b, 16));
    for (let j = 0; j < 16; j++) blk[2 + j] = q[j] | (q[j + 16] << 4);
    return q.map((x) => (x - 8) * SCALES[b]);
  }),
  Q4_1: () => blocks32(20, (blk, b) => {
    putF16(blk, 0, SCALES[b]);
    putF16(blk, 2, MINS[b]);
    const q = Array.from({ length: 32 }, (_, i) => level(i, b, 16));
    for (let j = 0; j < 16; j++) blk[4 + j] = q[j] | (q[j + 16] << 4);
    return q.map((x) => Math.fround(x * SCALES[b] + MINS[b]));
  }),
  Q5_0: () => blocks32(22, (blk, b) => {
    putF16(blk, 0, SCALES[b]);
    const q = Array.from({ length: 32 }, (_, i) => level(i, b, 32));
    for (let j = 0; j < 16; j++) blk[6 + j] = (q[j] & 15) | ((q[j + 16] & 15) << 4);
    for (let i = 0; i < 32; i++) blk[2 + (i >> 3)] |= (q[i] >> 4) << (i & 7);
    return q.map((x) => (x - 16) * SCALES[b]);
  }),
  Q5_1: () => blocks32(24, (blk, b) => {
    putF16(blk, 0, SCALES[b]);
    putF16(blk, 2, MINS[b]);
    const q = Array.from({ length: 32 }, (_, i) => level(i, b, 32));
    for (let j = 0; j < 16; j++) blk[8 + j] = (q[j] & 15) | ((q[j + 16] & 15) << 4);
    for (let i = 0; i < 32; i++) blk[4 + (i >> 3)] |= (q[i] >> 4) << (i & 7);
    return q.map((x) => Math.fround(x * SCALES[b] + MINS[b]));
  }),
  // K-quants: one super-block of 256 values per call; value i lives in sub-block i >> 4 (or i >> 5).
  Q2_K: () => {
    const blk = new Uint8Array(84);
    const [d, dmin] = [0.0078125, 0.01171875];
    putF16(blk, 80, d);
    putF16(blk, 82, dmin);
    const sc = (k: number) => (k * 7 + 3) % 16;
    const mn = (k: number) => (k * 5 + 11) % 16;
    for (let k = 0; k < 16; k++) blk[k] = sc(k) | (mn(k) << 4);
    const expected = Array.from({ length: 256 }, (_, i) => {
      const q = level(i, 0, 4);
      const [half, group, l] = [i >> 7, (i >> 5) & 3, i & 31]; // 2 bits of byte 16 + 32 half + l at 2 group
      blk[16 + 32 * half + l] |= q << (2 * group);
      return Math.fround(d * sc(i >> 4) * q - dmin * mn(i >> 4));
    });
    return { bytes: blk, expected };
  },
  Q3_K: () => {
    const blk = new Uint8Array(110);
    const d = -0.01171875;
    putF16(blk, 108, d);
    const sc = (k: number) => ((k * 11 + 7) % 64) - 32; // signed 6-bit
    for (let k = 0; k < 16; k++) {
      const s = sc(k) + 32;
      blk[96 + (k & 7)] |= (s & 15) << (k < 8 ? 0 : 4);
      blk[96 + 8 + (k & 3)] |= (s >> 4) << (2 * (k >> 2));
    }
    const expected = Array.from({ length: 256 }, (_, i) => {
      const q = level(i, 0, 8) - 4; // -4..3: the high bit is set for q >= 0
      const [half, group, l] = [i >> 7, (i >> 5) & 3, i & 31];
      blk[32 + 32 * half + l] |= (q & 3) << (2 * group);
      if (q >= 0) blk[l] |= 1 << (4 * half + group);
      return d * sc(i >> 4) * q;
    });
    return { bytes: blk, expected };
  },
  Q4_K: () => kQuant(144, 4),
  Q5_K: () => kQuant(176, 5),
  Q6_K: () => {
    const blk = new Uint8Array(210);
    const d = 0.0029296875;
    putF16(blk, 208, d);
    const sc = (k: number) => ((k * 37 + 28) % 256) - 128;
    for (let k = 0; k < 16; k++) blk[192 + k] = sc(k) & 0xff;
    const expected = Array.from({ length: 256 }, (_, i) => {
      const q = level(i, 0, 64);
      const [half, group, l] = [i >> 7, (i >> 5) & 3, i & 31];
      // groups 0..3 of 32 values: low nibbles of ql[l], ql[l + 32], then high nibbles of the same
      blk[64 * half + 32 * (group & 1) + l] |= (q & 15) << (group < 2 ? 0 : 4);
      blk[128 + 32 * half + l] |= (q >> 4) << (2 * group);
      return Math.fround(d * sc(8 * half + (l >> 4) + 2 * group) * (q - 32));
    });
    return { bytes: blk, expected };
  },
};

/** Q4_K (4 bits) or Q5_K (5 bits): eight 6-bit scales and mins, one per 32 values. */
function kQuant(blockBytes: number, bits: 4 | 5): Hand {
  const blk = new Uint8Array(blockBytes);
  const [d, dmin] = [0.01953125, 0.0048828125];
  putF16(blk, 0, d);
  putF16(blk, 2, dmin);
  const sc = (j: number) => (j * 9 + 5) % 64;
  const mn = (j: number) => (j * 13 + 60) % 64;
  for (let j = 0; j < 4; j++) {
    blk[4 + j] = sc(j) | ((sc(j + 4) >> 4) << 6);
    blk[8 + j] = mn(j) | ((mn(j + 4) >> 4) << 6);
    blk[12 + j] = (sc(j + 4) & 15) | ((mn(j + 4) & 15) << 4);
  }
  const qs = bits === 4 ? 16 : 48;
  const expected = Array.from({ length: 256 }, (_, i) => {
    const q = level(i, 0, 1 << bits);
    const [chunk, high, l] = [i >> 6, (i >> 5) & 1, i & 31]; // 64 values per 32 bytes: low nibbles, then high
    blk[qs + 32 * chunk + l] |= (q & 15) << (4 * high);
    if (bits === 5) blk[16 + l] |= (q >> 4) << (2 * chunk + high);
    return Math.fround(d * sc(i >> 5) * q - dmin * mn(i >> 5));
  });
  return { bytes: blk, expected };
}

const ID: Record<string, number> = { Q8_0: 8, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14 };

describe('ggml types: blocks packed by hand', () => {
  for (const [name, build] of Object.entries(hand)) {
    it(`${name}: every level, scale and bit position decodes to its value`, () => {
      const { bytes, expected } = build();
      const type = ggmlType(ID[name])!;
      expect(type.dtype).toBe(name);
      expect(bytes.length % type.blockBytes).toBe(0);
      const got = dequantize(type, bytes);
      expect(got.length).toBe(expected.length);
      expect(new Set(expected).size).toBeGreaterThan(expected.length / 8); // not a constant block
      expect(expected.some((v) => v < 0) && expected.some((v) => v > 0)).toBe(true);
      for (let i = 0; i < expected.length; i++) if (got[i] !== expected[i]) expect.fail(`${name}[${i}]: got ${got[i]}, expected ${expected[i]}`);
    });
  }

  it('F32, F16 and BF16', () => {
    expect([...dequantize(ggmlType(0)!, new Uint8Array(Float32Array.of(1.5, -2.25).buffer))]).toEqual([1.5, -2.25]);
    expect([...dequantize(ggmlType(1)!, Uint8Array.of(0x00, 0x3c, 0x01, 0x80, 0xff, 0x7b))]).toEqual([1, -(2 ** -24), 65504]);
    expect([...dequantize(ggmlType(30)!, Uint8Array.of(0x80, 0x3f, 0x41, 0xc0))]).toEqual([1, -3.015625]);
  });

  it('refuses bytes that are not whole blocks, and names the types it cannot read', () => {
    expect(() => dequantize(ggmlType(12)!, new Uint8Array(143))).toThrow(/143 bytes are not whole Q4_K blocks of 144 bytes/);
    expect(ggmlType(16)).toBeUndefined();
    expect(ggmlTypeName(16)).toBe('IQ2_XXS');
    expect(ggmlTypeName(77)).toBe('unknown');
    expect(READABLE_GGML_TYPES).toBe('F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K');
  });
});

// fixtures/ggml-dequant.json was written once by a Python script outside the repository, with the
// PyPI packages gguf 0.19.0 and numpy 2.4.6: per type, random block bytes (f16 scale fields set to
// finite values of either sign between 2^-9 and 2^-2; for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 also
// 4 blocks from gguf.quants.quantize of normal values with an outlier) and their float32 values
// from gguf.quants.dequantize; random F16/BF16 bit patterns without Inf/NaN and F32 values.
describe('ggml types: blocks decoded by gguf-py', () => {
  const fixture = JSON.parse(readFileSync(new URL('./fixtures/ggml-dequant.json', import.meta.url), 'utf8')) as Record<string, { type: number; bytes: string; values: string } | string>;
  for (const [name, entry] of Object.entries(fixture)) {
    if (typeof entry === 'string') continue; // the generator note
    it(`${name}: identical to gguf.quants.dequantize`, () => {
      const bytes = new Uint8Array(Buffer.from(entry.bytes, 'base64'));
      const values = Buffer.from(entry.values, 'base64');
      const expected = new Float32Array(values.buffer, values.byteOffset, values.length / 4).slice();
      const type = ggmlType(entry.type)!;
      expect(type.dtype).toBe(name);
      const got = dequantize(type, bytes);
      expect(got.length).toBe(expected.length);
      for (let i = 0; i < got.length; i++) if (!Object.is(got[i], expected[i])) expect.fail(`${name}[${i}]: got ${got[i]}, gguf-py ${expected[i]}`);
    });
  }
});
