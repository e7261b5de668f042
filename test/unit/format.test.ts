// A corrupt or lying .npu file fails to load with a message naming the file and the problem, from
// the metadata checks in TypeScript and from the native loader's own bounds checks.
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { Engine, native, nativeConfig } from '../../runtime/engine.js';
import { crc32, HEADER_BYTES, INT8_QUANTIZATION, readNpuFile, scaleCount } from '../../runtime/format.js';
import { convertedModel, testModel, workDir } from './helpers.js';
import { freshSeed, rng } from './random.js';

const small = () => testModel('format', { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });

async function copyOf(name: string): Promise<string> {
  const path = join(workDir, name);
  copyFileSync(await convertedModel(small(), 'INT8', 2), path);
  return path;
}

function patch(path: string, offset: number, bytes: number[]): void {
  const buf = readFileSync(path);
  bytes.forEach((b, i) => (buf[offset + i] = b));
  writeFileSync(path, buf);
}

describe('.npu validation', () => {
  it('loads a good file and records what it was made from', async () => {
    const f = readNpuFile(await convertedModel(small(), 'INT8', 2, { accuracyGate: true }));
    expect(f.metadata.precision).toBe('INT8');
    expect(f.metadata.source.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(f.metadata.accuracy?.cosineSimilarity).toBeGreaterThan(0.98);
    expect(f.metadata.tensors.every((t) => t.offset % 64 === 0)).toBe(true);
    // The other tests here convert without the gate (test-only option): such a file records no accuracy.
    expect(readNpuFile(await convertedModel(small(), 'INT8', 2)).metadata.accuracy).toBeNull();
  });

  it('stores INT8 weights with one f16 scale per row and group of 32 columns, as the metadata names it', async () => {
    const f = readNpuFile(await convertedModel(small(), 'INT8', 2));
    expect(f.metadata.quantization).toEqual({ weights: 'int8-symmetric-group32', activations: 'int8-dynamic-group32', groupSize: 32, scales: 'f16' });
    expect(f.metadata.quantization).toEqual(INT8_QUANTIZATION);
    const byName = new Map(f.metadata.tensors.map((t) => [t.name, t]));
    // w_down is [64, 96]: 64 rows (4 groups of 16) x 3 column groups; the embedding is row-major.
    expect(byName.get('layers.0.w_down.scale')).toMatchObject({ dtype: 'f16', shape: [64 * 3], bytes: 64 * 3 * 2 });
    const emb = byName.get('tok_embeddings')!;
    expect(byName.get('tok_embeddings.scale')).toMatchObject({ dtype: 'f16', shape: [scaleCount('row-major', emb.shape[0], 64)] });
    expect(scaleCount('packed16', 17, 33)).toBe(32 * 2);
  });

  it('rejects a truncated file', async () => {
    const path = await copyOf('truncated.npu');
    truncateSync(path, 5000);
    await expect(Engine.load(path)).rejects.toThrow(/truncated\.npu: file is 5000 bytes but its header says \d+: truncated/);
  });

  it('rejects a file that is not an npuserve model', async () => {
    const path = join(workDir, 'notnpu.npu');
    writeFileSync(path, Buffer.alloc(100, 7));
    await expect(Engine.load(path)).rejects.toThrow(/notnpu\.npu: not an npuserve model/);
  });

  it('checksums the metadata with CRC-32 (IEEE), whose check value for "123456789" is cbf43926', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  it('rejects corrupted metadata by its checksum', async () => {
    const path = await copyOf('crc.npu');
    patch(path, 70, [0x41]);
    await expect(Engine.load(path)).rejects.toThrow(/crc\.npu: metadata checksum .* does not match/);
  });

  it('rejects an unsupported format version', async () => {
    const path = await copyOf('version.npu');
    patch(path, 8, [99]);
    await expect(Engine.load(path)).rejects.toThrow(/format version 99 is not supported/);
  });

  it('asks for a re-conversion of a version 1 file (INT8 with one scale per row)', async () => {
    const path = await copyOf('version1.npu');
    patch(path, 8, [1]);
    await expect(Engine.load(path)).rejects.toThrow(/version1\.npu: format version 1 .* re-convert the model with `npuserve convert`/);
  });

  it('the native loader checks every tensor range against the mapping itself', async () => {
    const path = await convertedModel(small(), 'INT8', 2);
    const f = readNpuFile(path);
    const c = f.metadata.config;
    const config = nativeConfig(c);
    const tensors = f.metadata.tensors.map((t) => ({ ...t, offset: f.header.dataOffset + t.offset }));
    const lying = tensors.map((t) => (t.name === 'layers.0.wo' ? { ...t, offset: f.header.fileBytes - 64 } : t));
    await expect(native().loadModel(path, { config, tensors: lying }, {})).rejects.toThrow(/tensor 'layers\.0\.wo' ends at byte \d+, file has \d+/);
    const missing = tensors.filter((t) => t.name !== 'norm');
    await expect(native().loadModel(path, { config, tensors: missing }, {})).rejects.toThrow(/tensor 'norm' is missing/);
    const misshapen = tensors.map((t) => (t.name === 'layers.0.w_down' ? { ...t, shape: [c.hiddenSize, c.intermediateSize + 1] } : t));
    await expect(native().loadModel(path, { config, tensors: misshapen }, {})).rejects.toThrow(/tensor 'layers\.0\.w_down' has shape \[64, 97\], expected \[64, 96\]/);
  });

  it('survives random corruption of the header and metadata: a clear error or a working model, never a crash', async () => {
    const good = readFileSync(await convertedModel(small(), 'INT8', 2));
    const next = rng(freshSeed('npu fuzz'));
    const path = join(workDir, 'fuzz.npu');
    const metaEnd = readNpuFile(await convertedModel(small(), 'INT8', 2)).header.dataOffset;
    for (let i = 0; i < 200; i++) {
      const buf = Buffer.from(good);
      for (let m = 0; m < 1 + Math.floor(next() * 4); m++) buf[Math.floor(next() * metaEnd)] = Math.floor(next() * 256);
      writeFileSync(path, next() < 0.2 ? buf.subarray(0, Math.floor(next() * buf.length)) : buf);
      try {
        const e = await Engine.load(path, { maxSeqLen: 8, kvCacheTokens: 8 });
        const s = e.createSequence();
        await e.step([{ sequence: s, tokens: [1, 2] }]);
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).message).toMatch(/fuzz\.npu|tensor|must|sequence|token/);
      }
    }
  });

  it('survives a lying tensor table with a valid checksum: a clear error, never an out-of-bounds read', async () => {
    const src = await convertedModel(small(), 'INT8', 2);
    const good = readFileSync(src);
    const { header, metadata } = readNpuFile(src);
    const next = rng(freshSeed('npu table fuzz'));
    const path = join(workDir, 'lying.npu');
    const lies: Array<(t: Record<string, unknown>) => void> = [
      (t) => (t.offset = Math.floor(next() * header.dataBytes * 2)),
      (t) => (t.bytes = Math.floor(next() * 1e6)),
      (t) => (t.shape = [Math.floor(next() * 5000), 64]),
      (t) => (t.dtype = ['f32', 'f16', 'i8', 'q4'][Math.floor(next() * 4)]),
      (t) => (t.layout = next() < 0.5 ? 'row-major' : 'packed16'),
      (t) => (t.name = 'layers.0.wqkv'),
    ];
    let rejected = 0;
    for (let i = 0; i < 150; i++) {
      const meta = structuredClone(metadata) as unknown as { tensors: Record<string, unknown>[] };
      const victim = meta.tensors[Math.floor(next() * meta.tensors.length)];
      lies[Math.floor(next() * lies.length)](victim);
      const json = Buffer.alloc(header.metadataBytes, 0x20);
      json.write(JSON.stringify(meta));
      const buf = Buffer.from(good);
      json.copy(buf, HEADER_BYTES);
      buf.writeUInt32LE(crc32(json), 56);
      writeFileSync(path, buf);
      try {
        const e = await Engine.load(path, { maxSeqLen: 8, kvCacheTokens: 8 });
        await e.step([{ sequence: e.createSequence(), tokens: [1, 2] }]);
      } catch (err) {
        rejected++;
        expect((err as Error).message).toMatch(/lying\.npu|tensor '|shape|bytes/);
      }
    }
    expect(rejected).toBeGreaterThan(50);
  });
});
