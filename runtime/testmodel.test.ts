// Test models must be able to fail a check: their weights never repeat, so no two embedding or LM
// head rows are equal (logit rows then have no exact ties at the maximum).
import { describe, expect, it } from 'vitest';

import { distinctRows } from '../test/unit/floats.js';
import { DEFAULT_OPTIONS, normalStream, PRESETS, testModelConfig, testModelTensors } from './testmodel.js';

describe('test model weights', () => {
  it('the normal stream does not repeat within a million samples and has unit variance', () => {
    const next = normalStream(1, 'model.embed_tokens.weight');
    const seen = new Set<number>();
    let sum = 0;
    let sq = 0;
    const n = 1 << 20;
    for (let i = 0; i < n; i++) {
      const v = next();
      seen.add(v);
      sum += v;
      sq += v * v;
    }
    expect(seen.size).toBe(n);
    expect(Math.abs(sum / n)).toBeLessThan(5e-3);
    expect(Math.abs(sq / n - 1)).toBeLessThan(5e-3);
  });

  it('streams differ between tensor names and seeds', () => {
    const first = (seed: number, name: string) => Array.from({ length: 4 }, normalStream(seed, name));
    expect(first(1, 'a')).not.toEqual(first(1, 'b'));
    expect(first(1, 'a')).not.toEqual(first(2, 'a'));
    expect(first(1, 'a')).toEqual(first(1, 'a'));
  });

  // The larger presets (seconds each) are checked in the models project (test/models/testmodel-presets.test.ts).
  it('preset tiny: every embedding and LM head row is distinct', () => {
    const c = testModelConfig({ ...DEFAULT_OPTIONS, ...PRESETS.tiny });
    const rows = testModelTensors(c, DEFAULT_OPTIONS.seed).filter((t) => t.name === 'model.embed_tokens.weight' || t.name === 'lm_head.weight');
    expect(rows).toHaveLength(2);
    for (const t of rows) expect(distinctRows(t.produce(), c.vocabSize), `tiny ${t.name}`).toBe(c.vocabSize);
  });
});
