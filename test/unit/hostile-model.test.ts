// Hostile model files: a small .npu that claims a huge model is refused before the engine sizes
// anything from its config (peak memory of the loading process stays small), a tokenizer that does
// not fit the model is refused at load, anything but a regular file is refused at once, and a file
// truncated on disk under a loaded engine changes nothing (the engine holds its own copy).
import { execFile, execFileSync } from 'node:child_process';
import { copyFileSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { Engine } from '../../runtime/engine.js';
import { alignUp, crc32, encodeHeader, FORMAT_VERSION, HEADER_BYTES, MAX_METADATA_BYTES, readNpuFile, TENSOR_ALIGN, type NpuMetadata } from '../../runtime/format.js';
import { convertedModel, testModel } from './helpers.js';
import { tempFiles } from './temp-files.js';

const { tempPath } = tempFiles('hostile');
const small = () => testModel('hostile', { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });
const child = join(import.meta.dirname, 'load-child.mts');

/** Peak resident memory a refused load may reach: node, tsx and the metadata, no KV cache. */
const REFUSED_LOAD_MAX_RSS_BYTES = 400 * 2 ** 20;

/** A .npu with the good model's metadata changed by `patch` and its tensor data cut or zero-padded to `dataBytes(good)`. */
async function hostileNpu(name: string, patch: (m: NpuMetadata, dataBytes: number) => void, dataBytes = (good: number) => good): Promise<string> {
  const src = await convertedModel(small(), 'INT8', 2);
  const { header, metadata } = readNpuFile(src);
  patch(metadata, header.dataBytes);
  const json = Buffer.from(JSON.stringify(metadata));
  const dataOffset = alignUp(HEADER_BYTES + json.length, TENSOR_ALIGN);
  const good = readFileSync(src).subarray(header.dataOffset);
  const bytes = dataBytes(good.length);
  const data = Buffer.concat([good.subarray(0, bytes), Buffer.alloc(Math.max(0, bytes - good.length))]);
  const meta = Buffer.alloc(dataOffset - HEADER_BYTES, 0x20);
  json.copy(meta);
  const h = encodeHeader({
    formatVersion: FORMAT_VERSION,
    metadataOffset: HEADER_BYTES,
    metadataBytes: meta.length,
    dataOffset,
    dataBytes: data.length,
    fileBytes: dataOffset + data.length,
    metadataCrc32: crc32(meta),
  });
  const path = tempPath(name);
  writeFileSync(path, Buffer.concat([h, meta, data]));
  return path;
}

interface ChildResult {
  code: number | null;
  signal: string | null;
  ms: number;
  out: Record<string, unknown> | undefined;
  stderr: string;
}

/** Runs load-child.mts ACTION PATH OPTIONS in a fresh node (killed after timeoutMs). */
function runChild(action: string, path: string, options: object = {}, timeoutMs = 60_000): Promise<ChildResult> {
  const started = performance.now();
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', child, action, path, JSON.stringify(options)], { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      const line = stdout.trim().split('\n').pop();
      let out: Record<string, unknown> | undefined;
      try {
        out = line ? JSON.parse(line) : undefined;
      } catch {
        out = undefined;
      }
      const e = err as (Error & { code?: number; signal?: string }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, ms: performance.now() - started, out, stderr });
    });
  });
}

describe('a hostile .npu is refused before the engine sizes anything from its config', () => {
  const tok = (m: NpuMetadata) => m.tensors.find((t) => t.name === 'tok_embeddings')!;
  it.each<[string, (m: NpuMetadata, dataBytes: number) => void, ((good: number) => number) | undefined, object, RegExp]>([
    [
      'a 24-layer, 1M-token config whose file holds one 4 x 64 tensor (the KV cache alone would be 1.6 GB)',
      (m) => {
        Object.assign(m.config, { numLayers: 24, hiddenSize: 8192, numHeads: 64, numKvHeads: 8, headDim: 128, vocabSize: 2 ** 20, maxPositionEmbeddings: 131072 });
        m.tensors = [{ ...tok(m), shape: [4, 64], bytes: 1024, offset: 0, dtype: 'f32', layout: 'row-major' }];
      },
      () => 1024,
      {},
      /tensor 'tok_embeddings' has shape \[4, 64\], expected \[1048576, 8192\]/,
    ],
    ['a layer count past the engine limit', (m) => (m.config.numLayers = 100000), undefined, {}, /config\.numLayers must be an integer in \[1, 1024\], got 100000/],
    ['a head size of 2^30 (its RoPE table would be 4 GB)', (m) => (m.config.headDim = 2 ** 30), undefined, {}, /config\.headDim must be an integer in \[1, 4096\], got 1073741824/],
    ['a negative vocabulary', (m) => (m.config.vocabSize = -5), undefined, {}, /config\.vocabSize must be an integer in \[1, 16777216\], got -5/],
    ['a tensor past the end of the file', (m) => (tok(m).offset = 2 ** 40), undefined, {}, /tensor 'tok_embeddings' ends at data byte \d+, the data section has \d+/],
    ['a tensor whose size disagrees with its shape', (m) => (tok(m).bytes += 64), undefined, {}, /tensor 'tok_embeddings': \d+ bytes, its dtype, layout and shape need \d+/],
    [
      'a tensor of a layer the config does not have',
      (m, dataBytes) => m.tensors.push({ ...m.tensors.find((t) => t.name === 'norm')!, name: 'layers.7.attn_norm', offset: dataBytes }),
      (good) => good + 256,
      {},
      /tensor 'layers\.7\.attn_norm' is not part of a 1-layer model of this config/,
    ],
    [
      'a KV cache past the memory budget (2^22 tokens of a small model: 1 GiB)',
      () => {},
      undefined,
      { kvCacheTokens: 2 ** 22, memoryBudgetBytes: 64 * 2 ** 20 },
      /the KV cache \(4194304 tokens x 1 layers x 32 KV dims x 2 x f32 = 1024 MiB\) and RoPE tables \(\d+ MiB\) need more than the memory budget of 64 MiB/,
    ],
  ])('%s', async (name, patch, dataBytes, options, expected) => {
    const path = await hostileNpu(`${name.slice(0, 20).replace(/\W/g, '-')}.npu`, patch, dataBytes);
    const r = await runChild('load', path, options);
    expect(r.out, r.stderr).toBeDefined();
    expect(r.out!.error).toMatch(expected);
    expect(r.out!.maxRssBytes as number).toBeLessThan(REFUSED_LOAD_MAX_RSS_BYTES);
  });

  it('refuses a metadata block larger than any model needs before reading it', async () => {
    const path = tempPath('metadata.npu');
    const metadataBytes = MAX_METADATA_BYTES + 64;
    const fileBytes = HEADER_BYTES + metadataBytes + 64;
    const h = encodeHeader({ formatVersion: FORMAT_VERSION, metadataOffset: HEADER_BYTES, metadataBytes, dataOffset: HEADER_BYTES + metadataBytes, dataBytes: 64, fileBytes, metadataCrc32: 0 });
    writeFileSync(path, h);
    truncateSync(path, fileBytes); // sparse: the disk holds the header only
    const r = await runChild('load', path);
    expect(r.out?.error).toMatch(/metadata\.npu: metadata block of 268435520 bytes is larger than the 268435456 bytes/);
    expect(r.out!.maxRssBytes as number).toBeLessThan(REFUSED_LOAD_MAX_RSS_BYTES);
  });

  it("refuses a tokenizer whose ids or special tokens fall outside the model's vocabulary", async () => {
    const fewer = await hostileNpu('vocab.npu', (m) => (m.config.vocabSize = 1000));
    await expect(Engine.load(fewer)).rejects.toThrow(/vocab\.npu: the tokenizer has 32768 tokens \(ids 0\.\.32767\); the model's vocabulary has only 1000/);
    const eos = await hostileNpu('eos.npu', (m) => (m.tokenizer.endOfGenerationIds = [2, 40000]));
    await expect(Engine.load(eos)).rejects.toThrow(/eos\.npu: the tokenizer's endOfGenerationIds 40000 is outside the model's vocabulary \[0, 32768\)/);
  });
});

describe('only a regular file is a model, and it cannot change under the engine', () => {
  it('refuses a FIFO at once (opening it would wait for a writer forever)', async () => {
    const fifo = tempPath('model.npu');
    execFileSync('mkfifo', [fifo]);
    const r = await runChild('load', fifo, {}, 20_000);
    expect(r.signal, 'the load hung and was killed').toBeNull();
    expect(r.out?.error).toMatch(/model\.npu: not a regular file \(a model must be a \.npu file, not a FIFO, device or directory\)/);
  });

  it('refuses a device and a directory', async () => {
    await expect(Engine.load('/dev/zero')).rejects.toThrow(/\/dev\/zero: not a regular file/);
    await expect(Engine.load(import.meta.dirname)).rejects.toThrow(/unit: not a regular file/);
  });

  it('keeps serving the same logits when the file is truncated on disk under a loaded engine (no SIGBUS)', async () => {
    const path = tempPath('served.npu');
    copyFileSync(await convertedModel(small(), 'INT8', 2), path);
    const r = await runChild('truncate', path, { maxSeqLen: 16, kvCacheTokens: 16 });
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    expect(r.out!.after).toBe(r.out!.before);
    expect(readFileSync(path).length).toBe(64);
  });
});
