// Automatic prefix caching in the engine: a prompt after a cached prefix gives bit-identical logits
// to the same prompt computed from scratch (every kernel set, FP32/FP16/INT8, chunked prefill, a
// sliding window shorter than the cached run), and the cache's bookkeeping survives eviction,
// sharing, aborted prefills, duplicates and releases during a step.
import { describe, expect, it } from 'vitest';

import { Engine, native, type EngineOptions } from '../../runtime/engine.js';
import type { Precision } from '../../runtime/format.js';
import type { TestModel } from '../../runtime/testmodel.js';
import { convertedModel, testModel } from './helpers.js';
import { freshSeed, randomTokens, rng } from './random.js';

const gqa = () => testModel('gqa', { layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 256 });
// Window 5 with blocks of 4: most cached blocks of a 20-token prefix lie wholly outside the window.
const swa = () => testModel('swa', { layers: 2, hidden: 96, heads: 3, kvHeads: 1, intermediate: 160, slidingWindow: 5, tied: true, seed: 7 });

const BLOCK = 4;

interface Run {
  /** Logits of the last prompt token, then of each decode step. */
  logits: Float32Array[];
  matched: number;
}

/**
 * Feeds `prompt` (after the cached prefix the engine attached, if any) in chunks of `chunks` tokens,
 * then `decode` greedy steps; `mate`, when given, is a second sequence stepped in the same batches
 * (its own prompt tokens, one at a time) so rows also move between positions of the step.
 */
async function run(engine: Engine, prompt: number[], chunks: number[], decode: number, mate?: number[]): Promise<Run> {
  const seq = engine.createSequence(0, prompt);
  const matched = engine.sequenceLength(seq);
  const other = mate ? engine.createSequence(1) : -1;
  const logits: Float32Array[] = [];
  let fed = matched;
  let m = 0;
  const step = async (tokens: number[], last: boolean) => {
    const entries = [{ sequence: seq, tokens, logits: last ? ('last' as const) : ('none' as const), sample: last }];
    if (mate && m < mate.length) entries.unshift({ sequence: other, tokens: [mate[m++]], logits: 'none', sample: false });
    const rs = await engine.step(entries);
    return rs[rs.length - 1];
  };
  for (let c = 0; fed < prompt.length; c++) {
    const n = Math.min(chunks[c % chunks.length], prompt.length - fed);
    const r = await step(prompt.slice(fed, fed + n), fed + n === prompt.length);
    fed += n;
    if (fed === prompt.length) logits.push(r.logits!);
  }
  let next = argmax(logits[0]);
  for (let d = 0; d < decode; d++) {
    const r = await step([next], true);
    logits.push(r.logits!);
    next = argmax(r.logits!);
  }
  engine.releaseSequence(seq);
  if (mate) engine.releaseSequence(other);
  return { logits, matched };
}

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

async function load(m: TestModel, precision: Precision, options: EngineOptions): Promise<Engine> {
  return Engine.load(await convertedModel(m, precision, 2), { kvBlockTokens: BLOCK, threads: 2, ...options });
}

describe('prefix caching gives bit-identical logits', () => {
  const kernels = native().cpuFeatures().availableKernels;
  const cases = kernels.flatMap((kernel) =>
    (['FP32', 'FP16', 'INT8'] as const).flatMap((precision) =>
      [
        ['gqa', gqa],
        ['sliding window', swa],
      ].map(([label, model]) => [kernel, precision, label as string, model as () => TestModel] as const),
    ),
  );
  it.each(cases)('%s %s %s: warm cache vs no cache, whole vs chunked prefill, alone vs batched', async (kernel, precision, label, model) => {
    const m = model();
    const seed = freshSeed(`prefix ${kernel} ${precision} ${label}`);
    const next = rng(seed);
    const V = m.config.vocabSize;
    const shared = randomTokens(next, 21, V);
    const first = [...shared, ...randomTokens(next, 6, V)];
    const second = [...shared, ...randomTokens(next, 7, V)];
    const cold = await load(m, precision, { kernel, prefixCaching: false });
    const whole = await run(cold, second, [second.length], 6);
    expect(whole.matched).toBe(0);
    const chunked = await run(cold, second, [3, 7, 5], 6, randomTokens(next, 9, V));
    expect(chunked.logits, `seed ${seed}`).toEqual(whole.logits);

    const warm = await load(m, precision, { kernel, prefixCaching: true });
    expect(warm.info.prefixCaching).toBe(true);
    await run(warm, first, [5, 11], 2);
    // Blocks of 4: the 21 shared tokens fill 5 blocks; the sixth differs.
    const hit = await run(warm, second, [2, 5], 6, randomTokens(next, 4, V));
    expect(hit.matched).toBe(20);
    expect(hit.logits, `seed ${seed}`).toEqual(whole.logits);
    // The second prompt's own blocks are cached now, decoded tokens included: all but the last token.
    const again = await run(warm, second, [second.length], 6);
    expect(again.matched).toBe(Math.floor((second.length - 1) / BLOCK) * BLOCK);
    expect(again.logits, `seed ${seed}`).toEqual(whole.logits);
    expect(warm.info.kvBlocksFree).toBe(warm.info.kvBlocksTotal);
  });
});

describe('prefix cache bookkeeping', () => {
  it('evicts least recently used blocks when the cache fills, and leaks nothing', async () => {
    const m = gqa();
    const engine = await load(m, 'INT8', { prefixCaching: true, kvCacheTokens: 16 * BLOCK, maxSeqLen: 64 });
    const next = rng(freshSeed('eviction'));
    const prompts = Array.from({ length: 12 }, () => randomTokens(next, 13, m.config.vocabSize));
    for (const p of prompts) {
      const r = await run(engine, p, [5], 2);
      expect(r.matched).toBe(0);
      expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
    }
    expect(engine.info.kvBlocksCached).toBeLessThanOrEqual(engine.info.kvBlocksTotal);
    expect(engine.info.kvBlocksCached).toBeGreaterThan(0);
    // The most recent prompt is still cached; the first was evicted.
    expect((await run(engine, prompts[11], [13], 0)).matched).toBe(12);
    expect((await run(engine, prompts[0], [13], 0)).matched).toBe(0);
    // A sequence needing every block evicts the whole cache.
    const big = engine.createSequence();
    await engine.step([{ sequence: big, tokens: randomTokens(next, 64, m.config.vocabSize), sample: false }]);
    expect(engine.info.kvBlocksFree).toBe(0);
    expect(engine.info.kvBlocksCached).toBe(16);
    engine.releaseSequence(big);
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
  });

  it('keeps shared blocks for a sequence whose first user is released', async () => {
    const m = gqa();
    const next = rng(freshSeed('shared'));
    const prompt = randomTokens(next, 18, m.config.vocabSize);
    const cold = await run(await load(m, 'FP32', { prefixCaching: false }), prompt, [18], 5);
    const engine = await load(m, 'FP32', { prefixCaching: true });
    const a = engine.createSequence(0, prompt);
    await engine.step([{ sequence: a, tokens: prompt, sample: false }]);
    const b = engine.createSequence(0, prompt);
    expect(engine.sequenceLength(b)).toBe(16);
    engine.releaseSequence(a);
    const free = engine.info.kvBlocksFree;
    // b's four shared blocks are still in use: releasing a freed only its unshared fifth block.
    expect(free).toBe(engine.info.kvBlocksTotal - 4);
    const [r] = await engine.step([{ sequence: b, tokens: prompt.slice(16), logits: 'last' }]);
    expect(r.logits).toEqual(cold.logits[0]);
    engine.releaseSequence(b);
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
  });

  it('an aborted prefill caches only its full blocks, with the tokens actually fed', async () => {
    const m = gqa();
    const next = rng(freshSeed('abort'));
    const V = m.config.vocabSize;
    const prompt = randomTokens(next, 14, V);
    const engine = await load(m, 'FP32', { prefixCaching: true });
    const a = engine.createSequence(0, prompt);
    await engine.step([{ sequence: a, tokens: prompt.slice(0, 6), sample: false }]);
    engine.releaseSequence(a);
    expect(engine.info.kvBlocksCached).toBe(1);
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
    const cold = await run(await load(m, 'FP32', { prefixCaching: false }), prompt, [14], 2);
    const warm = await run(engine, prompt, [3], 2);
    expect(warm.matched).toBe(4);
    expect(warm.logits).toEqual(cold.logits);
    // A prompt that shares the first 4 tokens only.
    const other = [...prompt.slice(0, 4), ...randomTokens(next, 5, V)];
    expect((await run(engine, other, [9], 0)).matched).toBe(4);
  });

  it('a prompt a multiple of the block size, identical to a cached one, leaves its last token to compute', async () => {
    const m = swa();
    const prompt = randomTokens(rng(freshSeed('multiple')), 12, m.config.vocabSize);
    const cold = await run(await load(m, 'FP16', { prefixCaching: false }), prompt, [12], 3);
    const engine = await load(m, 'FP16', { prefixCaching: true });
    expect((await run(engine, prompt, [12], 3)).matched).toBe(0);
    const warm = await run(engine, prompt, [12], 3);
    expect(warm.matched).toBe(8);
    expect(warm.logits).toEqual(cold.logits);
    // One token: nothing to match.
    expect((await run(engine, prompt.slice(0, 1), [1], 0)).matched).toBe(0);
  });

  it('a prompt of maxSeqLen tokens is cached and reused up to its last block', async () => {
    const m = gqa();
    const prompt = randomTokens(rng(freshSeed('max-seq-len')), 16, m.config.vocabSize);
    const cold = await run(await load(m, 'FP32', { prefixCaching: false, maxSeqLen: 16 }), prompt, [16], 0);
    const engine = await load(m, 'FP32', { prefixCaching: true, maxSeqLen: 16 });
    await run(engine, prompt, [7], 0);
    const warm = await run(engine, prompt, [16], 0);
    expect(warm.matched).toBe(12);
    expect(warm.logits).toEqual(cold.logits);
  });

  it('identical prompts prefilled in one step both run; one copy of each block stays cached', async () => {
    const m = gqa();
    const prompt = randomTokens(rng(freshSeed('duplicates')), 10, m.config.vocabSize);
    const engine = await load(m, 'FP32', { prefixCaching: true });
    const a = engine.createSequence(0, prompt);
    const b = engine.createSequence(0, prompt);
    const [ra, rb] = await engine.step([a, b].map((sequence) => ({ sequence, tokens: prompt, logits: 'last' as const, sample: false })));
    expect(ra.logits).toEqual(rb.logits);
    expect(engine.info.kvBlocksCached).toBe(2);
    engine.releaseSequence(a);
    engine.releaseSequence(b);
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
    expect(engine.info.kvBlocksCached).toBe(2);
  });

  it('a sequence released while its step runs registers that step’s blocks, then frees the rest', async () => {
    const m = gqa();
    const prompt = randomTokens(rng(freshSeed('release mid-step')), 11, m.config.vocabSize);
    const engine = await load(m, 'FP32', { prefixCaching: true });
    const a = engine.createSequence(0, prompt);
    const running = engine.step([{ sequence: a, tokens: prompt, sample: false }]);
    engine.releaseSequence(a);
    await running;
    expect(engine.info.kvBlocksCached).toBe(2);
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
    expect((await run(engine, prompt, [11], 0)).matched).toBe(8);
  });

  it('is off unless asked for, and caches of different models never mix', async () => {
    const m = gqa();
    const prompt = randomTokens(rng(freshSeed('off')), 10, m.config.vocabSize);
    const off = await load(m, 'FP32', {});
    expect(off.info.prefixCaching).toBe(false);
    await run(off, prompt, [10], 0);
    expect((await run(off, prompt, [10], 0)).matched).toBe(0);
    expect(off.info.kvBlocksCached).toBe(0);
  });
});
