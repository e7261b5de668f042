// `npuserve serve` with and without --enable-prefix-caching, through HTTP: the prefix cache counters
// are exact for known traffic, and the cache changes no output.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { convertedModel, testModel } from './helpers.js';
import { metricValue, startServer, type ServerProcess } from './server-process.js';

const MODEL = 'tiny-prefix';
const ids = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);
// The engine's KV blocks hold 16 tokens.
const A = ids(100, 40);
const TRAFFIC = [
  { prompt: A, hits: 0 }, // nothing cached yet; afterwards A's two full blocks are
  { prompt: A, hits: 32 }, // the same prompt: both full blocks (the last token is always computed)
  { prompt: [...A.slice(0, 20), ...ids(3000, 30)], hits: 16 }, // shares A's first block only
  { prompt: ids(5000, 10), hits: 0 }, // shorter than a block
];

/** Each server's answers, in traffic order: the second server's must equal the first's. */
const answers: string[][] = [];

describe.each([
  ['on (the default)', [] as string[], true],
  ['off (--no-enable-prefix-caching)', ['--no-enable-prefix-caching'], false],
])('prefix caching %s', (_label, flags, on) => {
  let server: ServerProcess;
  beforeAll(async () => {
    server = await startServer(await convertedModel(testModel('serve'), 'INT8', 2), ['--served-model-name', MODEL, '--threads', '1', '--max-seq-len', '256', ...flags]);
  });
  afterAll(async () => {
    expect(await server?.stop()).toBe(0);
  });

  it('counts the prompt tokens looked up and found, exactly, and answers as without the cache', async () => {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 30_000 });
    const texts: string[] = [];
    for (const { prompt } of TRAFFIC) {
      const r = await client.completions.create({ model: MODEL, prompt, max_tokens: 3, temperature: 0 });
      expect(r.usage?.prompt_tokens).toBe(prompt.length);
      texts.push(r.choices[0].text);
    }
    const text = await server.metrics();
    const promptTokens = TRAFFIC.reduce((n, t) => n + t.prompt.length, 0);
    expect(metricValue(text, 'npuserve_prefix_cache_queries_total', { model: MODEL })).toBe(on ? promptTokens : 0);
    expect(metricValue(text, 'npuserve_prefix_cache_hits_total', { model: MODEL })).toBe(on ? TRAFFIC.reduce((n, t) => n + t.hits, 0) : 0);
    // Prompt tokens count whether computed or found cached (as vLLM's).
    expect(metricValue(text, 'npuserve_prompt_tokens_total', { model: MODEL })).toBe(promptTokens);
    expect(texts[1]).toBe(texts[0]);
    answers.push(texts);
    if (answers.length === 2) expect(answers[1]).toEqual(answers[0]);
  });
});
