// GGUF reader: every metadata value type, tensor decoding, one test per class of malformed input,
// and a seeded fuzz of the parser (and of the model view on top of it).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

import { byteMutation, expectFormatError, fuzzFiles } from '../../test/unit/fuzz.js';
import { BASE_CONFIG, buildGguf, f32Bytes, GGML, llamaKv, llamaTensorsF32, randomTensors, setU64, T, type Built, type HandFile, type Kv } from '../../test/unit/gguf-builder.js';
import { rng as mulberry32 } from '../../test/unit/random.js';
import { FormatError } from '../errors.js';
import type { ModelConfig } from '../model-config.js';
import { GgufFile } from './gguf.js';
import { GgufCheckpoint } from './gguf-model.js';
import { writeGguf } from './gguf-writer.js';
import { tempFiles } from '../../test/unit/temp-files.js';

const { tempPath, writeTemp } = tempFiles('gguf');

const SEED = Number(process.env.NPUSERVE_TEST_SEED ?? Date.now() % 2 ** 31);
console.log(`gguf.test.ts: seed ${SEED} (rerun with NPUSERVE_TEST_SEED=${SEED})`);


function openAndClose(path: string): void {
  new GgufFile(path).close();
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
    expectFormatError(() => openAndClose(path), path, /not a GGUF file: its first 4 bytes are not "GGUF"/);
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

// ---- Fuzz ----

const HUGE_VALUES = [2n ** 64n - 1n, 2n ** 63n, 2n ** 60n, 2n ** 53n + 1n, 2n ** 32n, 2n ** 31n, 65536n];

interface Seed {
  bytes: Uint8Array;
  /** Offsets of the uint64 length/count/dimension fields, when known. */
  fields: number[];
}

function mutate(seed: Seed, rand: () => number): { bytes: Uint8Array; steps: string[] } {
  let bytes: Uint8Array = seed.bytes.slice();
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
  const small: ModelConfig = { ...BASE_CONFIG, hiddenSize: 32, numLayers: 1, numHeads: 2, numKvHeads: 1, headDim: 16, intermediateSize: 32, vocabSize: 3, bosTokenId: 0, eosTokenId: 1 };
  const qwen2: ModelConfig = { ...small, architecture: 'qwen2', attentionBias: true, ropeScaling: { type: 'freq-factors', factors: [1, 1, 2, 2, 4, 4, 8, 8] } };
  for (const [dtype, config] of [['Q4_0', small], ['Q8_0', small], ['F16', small], ['F32', qwen2]] as const) {
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
