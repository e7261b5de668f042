// The accuracy gate's arithmetic without an engine: logits with a NaN or an infinity fail it whatever
// the minimum (a NaN compared with `<` passes silently), close logits pass, far ones fail.
import { describe, expect, it } from 'vitest';

import { freshSeed, rng } from '../../test/unit/random.js';
import { compareLogits, cosine, gateFailure } from './accuracy.js';

const VOCAB = 37; // not a multiple of any vector width
const LENGTHS = [3, 5, 2];

/** Distinct logits per prompt (positions x vocab), and a copy nudged by up to `noise` each. */
function logits(seed: number, noise: number): { reference: Float32Array[]; candidate: Float32Array[] } {
  const next = rng(seed);
  const reference = LENGTHS.map((n) => Float32Array.from({ length: n * VOCAB }, (_, i) => i * 0.01 + next()));
  const candidate = reference.map((r) => r.map((x) => x + (next() - 0.5) * noise));
  return { reference, candidate };
}

describe('accuracy gate', () => {
  it('passes close logits and fails distant ones against the minimum', () => {
    const seed = freshSeed('accuracy gate close/far');
    const close = logits(seed, 1e-4);
    const report = compareLogits(close.candidate, close.reference, LENGTHS, VOCAB);
    expect(report.cosineSimilarity).toBeGreaterThan(0.9999);
    expect(report.top1Agreement).toBe(1);
    expect(gateFailure(report, 0.99)).toBeNull();
    const far = logits(seed, 50);
    expect(gateFailure(compareLogits(far.candidate, far.reference, LENGTHS, VOCAB), 0.99)).toMatch(/cosine similarity -?0\.\d+ vs FP32 is below the minimum 0\.99/);
  });

  it.each([
    ['NaN', NaN],
    ['+Infinity', Infinity],
    ['-Infinity', -Infinity],
  ])('fails logits holding %s, with or without a minimum, and never counts them as agreeing', (_name, bad) => {
    const seed = freshSeed('accuracy gate non-finite');
    const { reference, candidate } = logits(seed, 1e-4);
    const last = (LENGTHS[1] - 1) * VOCAB;
    candidate[1][last + 4] = bad; // the last position of prompt 1: its cosine is what the gate averages
    candidate[0][VOCAB + 2] = bad; // a middle position of prompt 0: only top-1 sees it
    const report = compareLogits(candidate, reference, LENGTHS, VOCAB);
    expect(report.cosineSimilarity).toBeNaN();
    expect(report.minCosineSimilarity).toBeNaN();
    const positions = LENGTHS.reduce((a, b) => a + b, 0);
    expect(report.top1Agreement).toBeCloseTo((positions - 2) / positions, 10);
    for (const min of [0.99, -1, undefined, NaN]) expect(gateFailure(report, min)).toMatch(/logits .* are not finite \(NaN or infinity\)/);
  });

  it('a NaN minimum (or similarity) cannot pass the comparison', () => {
    const report = { reference: 'FP32' as const, prompts: 1, positions: 1, cosineSimilarity: 0.5, minCosineSimilarity: 0.5, top1Agreement: 1 };
    expect(gateFailure(report, NaN)).toMatch(/below the minimum NaN/);
    expect(cosine(Float32Array.of(1, NaN), Float32Array.of(1, 2))).toBeNaN();
    expect(cosine(Float32Array.of(1, 2), Float32Array.of(Infinity, 2))).toBeNaN();
  });
});
