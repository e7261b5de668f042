// bench:engine's pure parts: the token stream both runtimes see, the table and the bandwidth
// fraction a reader checks the figures by; and the addon's bandwidth probe.
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
      threads: 2, readBandwidthBytesPerSecond: 20e9,
      plan: { threads: 2, promptTokens: 512, decodeTokens: 32, batchSizes: [1, 16], kvCacheDtype: 'f16' },
      models: [{ model: '100m', npuserve: target('npuserve', 2), llamaCpp: target('llama.cpp', 1), bandwidthFraction: (76e6 * 200) / 20e9 }],
    };
    const table = formatTable(r);
    expect(table).toMatch(/\| 100m\s+\| ratio npuserve\/llama.cpp \|\s+\| 2.00x\s+\| 2.00x\s+\| 2.00x/);
    expect(table).toContain('76 MB of weights per token = 76% of the bandwidth limit');
  });

  it('measures a positive streaming read bandwidth', () => {
    expect(native().readBandwidth(64 * 2 ** 20, 1, 1)).toBeGreaterThan(1e8);
    expect(() => native().readBandwidth(10)).toThrow(/between 1 MiB and 64 GiB/);
  });
});
