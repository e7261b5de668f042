// The larger test-model presets never repeat a row in their embedding or LM head (seconds of
// generation each, so here rather than in the unit project, which checks the tiny preset).
import { describe, expect, it } from 'vitest';

import { DEFAULT_OPTIONS, PRESETS, testModelConfig, testModelTensors } from '../../runtime/testmodel.js';
import { distinctRows } from '../unit/floats.js';

describe('test model presets', () => {
  it.each(Object.keys(PRESETS).filter((p) => p !== 'tiny'))('preset %s: every embedding and LM head row is distinct', (preset) => {
    const c = testModelConfig({ ...DEFAULT_OPTIONS, ...PRESETS[preset] });
    const rows = testModelTensors(c, DEFAULT_OPTIONS.seed).filter((t) => t.name === 'model.embed_tokens.weight' || t.name === 'lm_head.weight');
    expect(rows).toHaveLength(2);
    for (const t of rows) expect(distinctRows(t.produce(), c.vocabSize), `${preset} ${t.name}`).toBe(c.vocabSize);
  }, 120_000);
});
