// bench:engine's pure parts: the token stream both runtimes see, the table and the bandwidth
// and MAC-peak fractions a reader checks the figures by; and the addon's machine-limit probes.
import { describe, expect, it } from 'vitest';

import { native } from '../engine.js';
import { benchTokens, formatTable, type EngineBenchResult, type TargetResult } from './engine.js';

const target = (runtime: TargetResult['runtime'], scale: number): TargetResult => ({
  runtime, model: '100m', precision: runtime === 'npuserve' ? 'INT8' : 'Q8_0', file: 'x', kernel: 'avx2',
  prefillTokensPerSecond: 1000 * scale, decodeTokensPerSecond: { 1: 100 * scale, 16: 800 * scale },
  peakRssBytes: 200 * 2 ** 20, weightBytesPerToken: 76e6,
});

describe('bench:engine', () => {
  it('feeds both runtimes the same in-vocabulary tokens, never the special ids 0-2', () => {
    const a = benchTokens(512, 32768, 1);
    expect(a).toEqual(benchTokens(512, 32768, 1));
    expect(a).not.toEqual(benchTokens(512, 32768, 2));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(3);
    expect(Math.max(...a)).toBeLessThan(32768);
  });

  it('prints one row per runtime, the npuserve/llama.cpp ratios and the bandwidth fraction', () => {
    const r: EngineBenchResult = {
      threads: 2,
      limits: { readBytesPerSecond: 20e9, reads: [{ pattern: 'slice-per-thread, AVX2', bytes: 2 ** 30, bytesPerSecond: 20e9 }], macPeaks: [{ instruction: 'avx512-vnni vpdpwssd zmm', activationBits: 16, macsPerSecond: 200e9 }, { instruction: 'avx512-vnni vpdpbusd zmm', activationBits: 8, macsPerSecond: 400e9 }], int8MacsPerSecond: 400e9, int16MacsPerSecond: 200e9 },
      plan: { threads: 2, promptTokens: 512, decodeTokens: 32, batchSizes: [1, 16], kvCacheDtype: 'f16', int8Activations: 'int16' },
      models: [{ model: '100m', npuserve: { ...target('npuserve', 2), int8Activations: 'int16', matrixMacsPerToken: 80e6 }, llamaCpp: target('llama.cpp', 1), bandwidthFraction: (76e6 * 200) / 20e9, macPeakFraction: (80e6 * 2000) / 200e9 }],
    };
    const table = formatTable(r);
    expect(table).toMatch(/\| 100m\s+\| ratio npuserve\/llama.cpp\s+\|\s+\| 2.00x\s+\| 2.00x\s+\| 2.00x/);
    expect(table).toContain('76 MB of weights per token = 76% of the bandwidth limit');
    expect(table).toContain('80 M matrix MACs per token = 80% of the int16 MAC peak');
    expect(table).toContain('read bandwidth 20.0 GB/s (slice-per-thread, AVX2, 1024 MiB); MAC peak 400 G/s int8, 200 G/s int16 (avx512-vnni vpdpwssd zmm 200, avx512-vnni vpdpbusd zmm 400)');
    expect(table).toContain('npuserve (avx2, int16 activations)');
  });

  it('measures the read bandwidth over several patterns and sizes, reporting the best, and the MAC peak of each instruction', () => {
    const r = native().machineLimits({ bytes: 64 * 2 ** 20, threads: 1, repeats: 1 });
    expect(r.reads.length).toBeGreaterThanOrEqual(3);
    expect(new Set(r.reads.map((x) => x.bytes)).size).toBe(3);
    expect(r.readBytesPerSecond).toBe(Math.max(...r.reads.map((x) => x.bytesPerSecond)));
    expect(r.readBytesPerSecond).toBeGreaterThan(1e8);
    const f = native().cpuFeatures();
    if (f.avx2) {
      expect(r.int8MacsPerSecond).toBeGreaterThan(1e9);
      expect(r.int16MacsPerSecond).toBeGreaterThan(1e9);
      expect(r.int8MacsPerSecond).toBe(Math.max(...r.macPeaks.filter((p) => p.activationBits === 8).map((p) => p.macsPerSecond)));
      expect(r.macPeaks.map((p) => p.instruction)).toContain('avx2 vpmaddwd');
      if (f.avx512vnni) expect(r.macPeaks.map((p) => p.instruction)).toContain('avx512-vnni vpdpwssd zmm');
    }
    expect(() => native().machineLimits({ bytes: 10, threads: 1, repeats: 1 })).toThrow(/between 1 MiB and 64 GiB/);
  });
});
