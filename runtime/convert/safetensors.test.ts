// Safetensors reader and writer: round trips per dtype (BF16 against an independent round-to-nearest-
// even reference), sharded checkpoints, one test per class of malformed input, and a seeded fuzz.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { byteMutation, expectFormatError, fuzzFiles } from '../../test/unit/fuzz.js';
import { rng as mulberry32 } from '../../test/unit/random.js';
import { FormatError } from '../errors.js';
import { SafetensorsFile, ShardedSafetensors, writeSafetensors, type TensorToWrite } from './safetensors.js';

const SEED = Number(process.env.NPUSERVE_TEST_SEED ?? Date.now() % 2 ** 31);
console.log(`safetensors.test.ts: seed ${SEED} (rerun with NPUSERVE_TEST_SEED=${SEED})`);

const dir = mkdtempSync(join(tmpdir(), 'npuserve-safetensors-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tempPath = (name: string) => join(dir, `${fileCounter++}-${name}`);

const bitsOf = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0];
const f32OfBits = (bits: number) => new Float32Array(Uint32Array.of(bits >>> 0).buffer)[0];

/** float32 -> bfloat16 by comparing the two neighbouring bf16 values in float64 (ties to even). */
function bf16Reference(bits: number): number {
  const x = f32OfBits(bits);
  if (!Number.isFinite(x)) return x;
  const loBits = (bits & 0xffff0000) >>> 0;
  const hiBits = (loBits + 0x10000) >>> 0;
  const lo = f32OfBits(loBits);
  const hiIsInfinite = (hiBits & 0x7fffffff) === 0x7f800000;
  const hi = hiIsInfinite ? Math.sign(x) * 2 ** 128 : f32OfBits(hiBits);
  const [dLo, dHi] = [Math.abs(x - lo), Math.abs(hi - x)];
  if (dLo < dHi || (dLo === dHi && ((loBits >>> 16) & 1) === 0)) return lo;
  return hiIsInfinite ? Math.sign(x) * Infinity : hi;
}

/** Values that exercise rounding: random normals and bit patterns, exact ties, extremes, NaNs. */
function bf16Cases(rand: () => number): Float32Array {
  const bits: number[] = [
    0x3f808000, 0x3f818000, 0x3f80_8001, 0x3f80_7fff, // ties to even (down, up) and either side
    0x7f7f_7fff, 0x7f7f_8000, 0x7f7f_ffff, 0xff7f_ffff, // near the largest finite value
    0x0000_0001, 0x0000_8000, 0x0001_8000, 0x8000_0000, 0x0000_0000, // subnormals and zeros
    0x7f80_0000, 0xff80_0000, // infinities
    0x7fc0_0000, 0x7f80_0001, 0x7fff_ffff, 0xffff_ffff, 0x7f80_8000, // NaNs, payloads in either half
  ];
  for (let i = 0; i < 2000; i++) {
    const b = Math.floor(rand() * 2 ** 32);
    if ((b & 0x7f800000) !== 0x7f800000) bits.push(b);
    bits.push(bitsOf((rand() * 2 - 1) * 2 ** (rand() * 40 - 20)));
  }
  return new Float32Array(Uint32Array.from(bits).buffer);
}

function rawSafetensors(header: unknown, data: Uint8Array, declaredLength?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, declaredLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function writeTemp(name: string, bytes: Uint8Array): string {
  const path = tempPath(name);
  writeFileSync(path, bytes);
  return path;
}

const openAndClose = (path: string) => new SafetensorsFile(path).close();

function randomTensor(name: string, dtype: TensorToWrite['dtype'], shape: number[], rand: () => number): TensorToWrite & { data: Float32Array } {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * 2 ** (rand() * 12 - 8);
  return { name, dtype, shape, data };
}

describe('safetensors round trips', () => {
  it('F32 exactly, F16 within half precision, BF16 rounded to nearest even, metadata kept', () => {
    const rand = mulberry32(SEED);
    const f32 = randomTensor('a.f32', 'F32', [3, 5, 7], rand);
    const f16 = randomTensor('b.f16', 'F16', [64, 33], rand);
    const bf16 = { name: 'c.bf16', dtype: 'BF16' as const, shape: [0], data: bf16Cases(rand) };
    bf16.shape = [bf16.data.length];
    const empty = { name: 'd.empty', dtype: 'F32' as const, shape: [0, 4], data: new Float32Array(0) };
    const path = tempPath('roundtrip.safetensors');
    writeSafetensors(path, [f32, f16, bf16, empty], { format: 'pt', note: 'héllo' });
    const file = new SafetensorsFile(path);
    try {
      expect(file.metadata).toEqual({ format: 'pt', note: 'héllo' });
      expect([...file.tensors.values()].map(({ name, dtype, shape }) => ({ name, dtype, shape }))).toEqual(
        [f32, f16, bf16, empty].map(({ name, dtype, shape }) => ({ name, dtype, shape })),
      );
      expect(file.readF32('a.f32')).toEqual(f32.data);
      expect(file.readF32('d.empty')).toEqual(new Float32Array(0));
      const gotF16 = file.readF32('b.f16');
      for (let i = 0; i < gotF16.length; i++) {
        const tolerance = Math.max(Math.abs(f16.data[i]) * 2 ** -11, 2 ** -25);
        if (Math.abs(gotF16[i] - f16.data[i]) > tolerance) expect.fail(`b.f16[${i}]: ${gotF16[i]} vs ${f16.data[i]}`);
      }
      const gotBf16 = file.readF32('c.bf16');
      const inputBits = new Uint32Array(bf16.data.buffer);
      for (let i = 0; i < gotBf16.length; i++) {
        const want = bf16Reference(inputBits[i]);
        const ok = Number.isNaN(want) ? Number.isNaN(gotBf16[i]) : Object.is(gotBf16[i], want);
        if (!ok) expect.fail(`c.bf16[${i}]: input bits 0x${inputBits[i].toString(16)} gave ${gotBf16[i]}, expected ${want}`);
      }
      expect(() => file.readF32('nope')).toThrow(/no tensor named 'nope'/);
    } finally {
      file.close();
    }
  });

  it('reads a checkpoint sharded by model.safetensors.index.json', () => {
    const rand = mulberry32(SEED + 1);
    const shardDir = join(dir, 'sharded');
    mkdirSync(shardDir);
    const tensors = ['x', 'y', 'z'].map((n) => randomTensor(n, 'F32', [4, 8], rand));
    writeSafetensors(join(shardDir, 'model-00001-of-00002.safetensors'), tensors.slice(0, 2));
    writeSafetensors(join(shardDir, 'model-00002-of-00002.safetensors'), tensors.slice(2));
    const index = join(shardDir, 'model.safetensors.index.json');
    const weightMap = { x: 'model-00001-of-00002.safetensors', y: 'model-00001-of-00002.safetensors', z: 'model-00002-of-00002.safetensors' };
    writeFileSync(index, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const sharded = new ShardedSafetensors(index);
    try {
      expect([...sharded.tensors.keys()]).toEqual(['x', 'y', 'z']);
      for (const t of tensors) expect(sharded.readF32(t.name)).toEqual(t.data);
      expect(sharded.shardPaths).toHaveLength(2);
    } finally {
      sharded.close();
    }

    writeFileSync(index, JSON.stringify({ weight_map: { ...weightMap, w: 'model-00003-of-00002.safetensors' } }));
    expectFormatError(() => new ShardedSafetensors(index).close(), index, /shard 'model-00003-of-00002.safetensors' \(for tensor 'w'\) does not exist/);

    writeFileSync(index, JSON.stringify({ weight_map: { ...weightMap, v: 'model-00002-of-00002.safetensors' } }));
    const shard2 = join(shardDir, 'model-00002-of-00002.safetensors');
    expectFormatError(() => new ShardedSafetensors(index).close(), shard2, new RegExp(`tensor 'v' listed in ${index} is not in this shard`));

    for (const bad of ['../model-00001-of-00002.safetensors', '..', '']) {
      writeFileSync(index, JSON.stringify({ weight_map: { x: bad } }));
      expectFormatError(() => new ShardedSafetensors(index).close(), index, /weight_map\['x'\] must be a file name in the same folder/);
    }
    writeFileSync(index, '{"weight_map": ');
    expectFormatError(() => new ShardedSafetensors(index).close(), index, /not valid JSON/);
  });

  it('accepts an empty tensor that starts where another tensor starts', () => {
    const path = writeTemp('empty-first.safetensors', rawSafetensors(
      { b: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, a: { dtype: 'F32', shape: [0], data_offsets: [0, 0] } },
      new Uint8Array(8),
    ));
    const f = new SafetensorsFile(path);
    expect(f.readF32('a')).toEqual(new Float32Array(0));
    f.close();
  });
});

describe('malformed safetensors input fails with a FormatError naming the problem', () => {
  const entry = (dtype: unknown, shape: unknown, offsets: unknown) => ({ dtype, shape, data_offsets: offsets });

  it('file too short and header length past the end of the file', () => {
    let path = writeTemp('short.safetensors', new Uint8Array(5));
    expectFormatError(() => openAndClose(path), path, /file has 5 bytes, too short for a safetensors header/);
    path = writeTemp('past-eof.safetensors', rawSafetensors({}, new Uint8Array(0), 4096n));
    expectFormatError(() => openAndClose(path), path, /the header length \(first 8 bytes\) runs past the end of the file \(10 bytes\)/);
    path = writeTemp('huge-length.safetensors', rawSafetensors({}, new Uint8Array(0), 2n ** 63n));
    expectFormatError(() => openAndClose(path), path, /the header length \(first 8 bytes\) exceeds the 104857600-byte limit/);
  });

  it('header that is not JSON, not UTF-8, or not an object', () => {
    let path = writeTemp('not-json.safetensors', rawSafetensors('{"a": {"dtype": "F32"', new Uint8Array(0)));
    expectFormatError(() => openAndClose(path), path, /header is not valid JSON/);
    const bytes = rawSafetensors('{"a": 1}', new Uint8Array(0));
    bytes[10] = 0xff;
    path = writeTemp('not-utf8.safetensors', bytes);
    expectFormatError(() => openAndClose(path), path, /header is not UTF-8 text/);
    path = writeTemp('array.safetensors', rawSafetensors([1, 2], new Uint8Array(0)));
    expectFormatError(() => openAndClose(path), path, /header must be a JSON object/);
    path = writeTemp('entry.safetensors', rawSafetensors({ a: 7 }, new Uint8Array(0)));
    expectFormatError(() => openAndClose(path), path, /tensor 'a': entry must be an object/);
  });

  it('unsupported dtype', () => {
    for (const dtype of ['I64', 'F64', 'constructor', 7]) {
      const path = writeTemp('dtype.safetensors', rawSafetensors({ t: entry(dtype, [2], [0, 16]) }, new Uint8Array(16)));
      expectFormatError(() => openAndClose(path), path, new RegExp(`tensor 't': dtype ${JSON.stringify(dtype)} is not supported \\(expected F32, F16 or BF16\\)`));
    }
  });

  it('bad shape and data_offsets fields', () => {
    const cases: Array<[unknown, unknown, RegExp]> = [
      [[2, -1], [0, 8], /tensor 't': shape must be an array of non-negative integers, got \[2,-1\]/],
      [[1.5], [0, 8], /tensor 't': shape must be an array of non-negative integers/],
      [[2], [0], /tensor 't': data_offsets must be \[begin, end\], got \[0\]/],
      [[2], [8, 0], /tensor 't': data_offsets begin 8 is after end 0/],
      [[2], [0, 1e300], /tensor 't': data_offsets must be \[begin, end\]/],
    ];
    for (const [shape, offsets, pattern] of cases) {
      const path = writeTemp('fields.safetensors', rawSafetensors({ t: entry('F32', shape, offsets) }, new Uint8Array(8)));
      expectFormatError(() => openAndClose(path), path, pattern);
    }
  });

  it('data_offsets size mismatch', () => {
    const path = writeTemp('size.safetensors', rawSafetensors({ t: entry('BF16', [3, 2], [0, 16]) }, new Uint8Array(16)));
    expectFormatError(() => openAndClose(path), path, /tensor 't': 16 bytes of data, shape \[3,2\] of BF16 needs 12/);
  });

  it('tensor past the end of the file', () => {
    const header = { t: entry('F32', [4], [0, 16]) };
    const path = writeTemp('past-end.safetensors', rawSafetensors(header, new Uint8Array(10)));
    const dataStart = 8 + JSON.stringify(header).length;
    expectFormatError(() => openAndClose(path), path, new RegExp(`tensor 't' ends at byte ${dataStart + 16}, file has ${dataStart + 10}`));
  });

  it('overlapping tensors', () => {
    const path = writeTemp('overlap.safetensors', rawSafetensors(
      { a: entry('F32', [4], [0, 16]), b: entry('F16', [4], [8, 16]) },
      new Uint8Array(16),
    ));
    expectFormatError(() => openAndClose(path), path, /tensors 'a' and 'b' overlap/);
  });
});

// ---- Fuzz ----

const HUGE_LITERALS = ['-1', '1e400', '18446744073709551616', '9007199254740993', '0', '1.5', 'null', '"x"', '[]', '{}', '4294967296', '-0'];
const STRING_SWAPS = ['"F64"', '"I8"', '"BF16"', '"F16"', '"F32"', '"__metadata__"', '"shape"', '"data_offsets"', '"dtype"', '""', '"constructor"', '"__proto__"'];

/** Mutates the header text, then rewrites the length prefix so the parser reads the whole header. */
function mutateHeaderText(bytes: Uint8Array, rand: () => number): { bytes: Uint8Array; step: string } | null {
  if (bytes.length < 8) return null;
  const length = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  if (8 + length > bytes.length) return null;
  let text = new TextDecoder().decode(bytes.subarray(8, 8 + length));
  const tokens = [...text.matchAll(/-?\d+(\.\d+)?(e[+-]?\d+)?|"[^"]*"/g)];
  if (tokens.length === 0) return null;
  const t = tokens[Math.floor(rand() * tokens.length)];
  const pool = t[0].startsWith('"') ? STRING_SWAPS : HUGE_LITERALS;
  const replacement = pool[Math.floor(rand() * pool.length)];
  text = text.slice(0, t.index) + replacement + text.slice(t.index! + t[0].length);
  const json = new TextEncoder().encode(text);
  const out = new Uint8Array(8 + json.length + bytes.length - 8 - length);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  out.set(bytes.subarray(8 + length), 8 + json.length);
  return { bytes: out, step: `header ${t[0]} -> ${replacement}` };
}

function mutate(seed: Uint8Array, rand: () => number): { bytes: Uint8Array; steps: string[] } {
  let bytes: Uint8Array = seed.slice();
  const steps: string[] = [];
  const at = (n: number) => Math.floor(rand() * n);
  for (let k = 1 + at(3); k > 0; k--) {
    const kind = at(6);
    if (kind <= 2 && (kind === 2 || bytes.length > 0)) {
      const m = byteMutation(kind as 0 | 1 | 2, bytes, rand);
      bytes = m.bytes;
      steps.push(m.step);
    } else if (kind === 3 && bytes.length >= 8) {
      const v = [2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n, 2n ** 32n, BigInt(bytes.length), BigInt(at(bytes.length))][at(6)];
      new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(0, v, true);
      steps.push(`header length = ${v}`);
    } else {
      const m = mutateHeaderText(bytes, rand);
      if (m) {
        bytes = m.bytes;
        steps.push(m.step);
      }
    }
  }
  return { bytes, steps };
}

function exerciseSafetensors(path: string): boolean {
  try {
    const f = new SafetensorsFile(path);
    try {
      for (const name of f.tensors.keys()) f.readF32(name);
      return true;
    } finally {
      f.close();
    }
  } catch (e) {
    if (!(e instanceof FormatError)) throw e;
    return false;
  }
}

describe('fuzz', () => {
  it('mutated safetensors files either parse and read, or fail with a FormatError', { timeout: 60_000 }, () => {
    const rand = mulberry32(SEED ^ 0x7361_6665);
    const seeds: Uint8Array[] = [];
    for (let s = 0; s < 3; s++) {
      const path = tempPath(`fuzz-seed-${s}.safetensors`);
      const dtypes = ['F32', 'F16', 'BF16'] as const;
      writeSafetensors(path, [
        randomTensor('model.embed_tokens.weight', dtypes[s], [4, 8], rand),
        randomTensor('model.norm.weight', dtypes[(s + 1) % 3], [8], rand),
        randomTensor('lm_head.weight', dtypes[(s + 2) % 3], [2, 2, 2], rand),
      ], { format: 'pt' });
      seeds.push(new Uint8Array(readFileSync(path)));
    }
    const path = tempPath('fuzz.safetensors');
    fuzzFiles({ label: 'safetensors', seed: SEED, seeds, path, mutate: (seed) => mutate(seed, rand), exercise: exerciseSafetensors });
  });
});
