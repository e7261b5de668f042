// bench:agreement's pure parts: top-1 agreement and KL divergence of next-token distributions, the
// token stream cut, and the table a reader compares INT8 with llama.cpp's Q8_0 by.
import { describe, expect, it } from 'vitest';

import { agreement, formatAgreement, logSoftmax, streamTokens } from './agreement.js';

const logs = (rows: number[][]) => Float64Array.from(rows.flat(), Math.log);

describe('bench:agreement', () => {
  it('counts positions whose most likely token agrees and averages KL(reference || candidate)', () => {
    const ref = logs([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]);
    const cand = logs([[0.6, 0.3, 0.1], [0.1, 0.3, 0.6]]);
    const a = agreement(ref, cand, 3);
    expect(a.positions).toBe(2);
    expect(a.top1).toBe(0.5);
    const kl0 = 0.7 * Math.log(0.7 / 0.6) + 0.2 * Math.log(0.2 / 0.3);
    const kl1 = 0.6 * Math.log(0.6 / 0.3) + 0.3 * Math.log(0.3 / 0.6);
    expect(a.meanKl).toBeCloseTo((kl0 + kl1) / 2, 12);
    expect(agreement(ref, ref, 3)).toEqual({ positions: 2, top1: 1, meanKl: 0 });
  });

  it('turns logits into log-probabilities in float64, row by row', () => {
    const lp = logSoftmax(Float32Array.of(1, 2, 3, -5, 0, 5), 3);
    for (const row of [lp.subarray(0, 3), lp.subarray(3, 6)]) expect(row.reduce((s, x) => s + Math.exp(x), 0)).toBeCloseTo(1, 12);
    expect(lp[2] - lp[1]).toBeCloseTo(1, 6);
  });

  it('prepends BOS when the model has one and refuses a text shorter than the stream', () => {
    expect(streamTokens([5, 6, 7], 1, 3)).toEqual([1, 5, 6]);
    expect(streamTokens([5, 6, 7], null, 2)).toEqual([5, 6]);
    expect(() => streamTokens([5], null, 4)).toThrow(/gives 1 tokens, fewer than --tokens 4/);
  });

  it('prints the three comparisons and INT8 against Q8_0 in points of top-1', () => {
    const table = formatAgreement({
      model: 'm', tokens: 320,
      npuserveInt8: { positions: 320, top1: 0.963, meanKl: 4.868e-3 },
      npuserveInt8A8: { positions: 320, top1: 0.95, meanKl: 5.1e-3 },
      llamaQ8_0: { positions: 320, top1: 0.947, meanKl: 5.22e-3 },
      fp32VsLlamaF32: { positions: 320, top1: 1, meanKl: 1.5e-4 },
    });
    expect(table).toContain('| npuserve INT8 (int16 activations) vs npuserve FP32 | 320 | 96.3% | 4.868e-3 |');
    expect(table).toContain('| npuserve INT8 (int8 activations) vs npuserve FP32 | 320 | 95.0% | 5.100e-3 |');
    expect(table).toContain('| llama.cpp Q8_0 vs llama.cpp F32 | 320 | 94.7% | 5.220e-3 |');
    expect(table).toContain('INT8 top-1 minus Q8_0 top-1: +1.6 points; KL ratio INT8 / Q8_0: 0.93');
  });
});
