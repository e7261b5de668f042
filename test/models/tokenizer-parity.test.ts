// Tokenizer ids equal llama.cpp's (node-llama-cpp) on the parity corpus, for a test model's GGUF twin
// (SentencePiece) and the real SmolLM2-135M-Instruct GGUF (byte-level BPE) when it is cached.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { describe, expect, it } from 'vitest';

import { compareTokenizerWithLlamaCpp } from '../../runtime/tokenizer/parity.js';
import { testModel } from '../unit/helpers.js';

const SMOLLM2 = join(homedir(), '.cache', 'npuserve', 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf');

describe('tokenizer parity with llama.cpp (node-llama-cpp) on the corpus', () => {
  const compare = async (path: string) => {
    const r = await compareTokenizerWithLlamaCpp(path);
    console.log(`${path}: ${r.strings - r.mismatches.length}/${r.strings} strings tokenized identically`);
    expect(r.mismatches).toEqual([]);
    expect(r.strings).toBeGreaterThanOrEqual(300);
  };

  it('matches on the GGUF twin of a test model (SentencePiece, Mistral v3 vocabulary)', { timeout: 120_000 }, async () => {
    await compare(join(testModel('tokenizer-twin', { gguf: 'F32' }).dir, 'model.gguf'));
  });

  it.skipIf(!existsSync(SMOLLM2))('matches on SmolLM2-135M-Instruct (byte-level BPE, smollm pre-tokenizer)', { timeout: 120_000 }, async () => {
    await compare(SMOLLM2);
  });
});
