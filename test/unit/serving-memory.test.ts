// The memory figure the operator sizes pods with, against what the engine really allocates, and
// `npuserve serve` refusing a cgroup memory limit below it, with the message its termination log
// carries to the operator.
import { spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { servingMemory } from '../../common/serving-memory.js';
import { inspectNpu } from '../../runtime/convert/inspect.js';
import { Engine } from '../../runtime/engine.js';
import { memoryBudgetWithin } from '../../runtime/server/main.js';
import { convertedModel, testModel, workDir } from './helpers.js';

const model = testModel('serving-memory', { layers: 3, hidden: 96, heads: 6, kvHeads: 3, intermediate: 160 });

describe('serving memory', () => {
  it("the conversion reports the file's footprint, and inspect reads the same from the file", async () => {
    const path = await convertedModel(model, 'FP16', 2);
    expect(inspectNpu(path).model).toEqual({ fileBytes: statSync(path).size, layers: 3, kvHeads: 3, headDim: 16 });
  });

  it.each(['f16', 'f32'] as const)('the KV cache the engine allocates (%s) is the one the operator counts', async (kvCacheDtype) => {
    const path = await convertedModel(model, 'FP16', 2);
    // 37 tokens: not a multiple of the 16-token block, so the rounding to whole blocks counts.
    const engine = await Engine.load(path, { threads: 1, maxSeqLen: 37, kvCacheTokens: 37, kvCacheDtype });
    expect(engine.info.kvCacheDtype).toBe(kvCacheDtype);
    expect(servingMemory(inspectNpu(path).model, { kvCacheTokens: 37, maxSeqLen: 37, kvCacheDtype }).kvCacheBytes).toBe(engine.info.kvCacheBytes);
    expect(engine.info.kvCacheBytes).toBe(48 * 3 * 2 * 3 * 16 * (kvCacheDtype === 'f16' ? 2 : 4));
  });

  it('serve refuses a memory limit below weights + KV cache + runtime, naming each; at the figure it gives the KV cache what is left', async () => {
    const path = await convertedModel(model, 'FP16', 2);
    const settings = { modelPath: path, kvCacheTokens: 4096, maxSeqLen: 256, kvCacheDtype: 'f32' as const };
    const need = servingMemory(inspectNpu(path).model, settings);
    expect(() => memoryBudgetWithin(settings, need.totalBytes - 1)).toThrow(
      new RegExp(`^the memory limit of ${Math.floor((need.totalBytes - 1) / 2 ** 20)} MiB \\(cgroup\\) is below what serving .*\\.npu needs: weights \\d+ MiB \\+ KV cache 5 MiB \\(4096 tokens x 3 layers x 2 \\(K, V\\) x 3 KV heads x 16 head dim x 4 bytes \\(f32\\)\\) \\+ RoPE tables 1 MiB \\+ runtime 384 MiB = \\d+ MiB; raise the limit`),
    );
    expect(memoryBudgetWithin(settings, need.totalBytes)).toBe(need.totalBytes - need.weightBytes - need.overheadBytes);
    expect(memoryBudgetWithin(settings, undefined)).toBeUndefined();
  });

  it("serve writes the error that stops it to --termination-log (the container's termination message)", () => {
    const log = join(workDir, 'termination-log');
    const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');
    const r = spawnSync(process.execPath, [bin, 'serve', '--model', join(workDir, 'missing.npu'), '--port', '0', '--termination-log', log], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).toBe(1);
    expect(readFileSync(log, 'utf8')).toMatch(/ENOENT: no such file or directory.*missing\.npu/);
  });
});
