// Greedy parity with llama.cpp: the same prompts, tokenized once, continued greedily by npuserve's
// FP32 engine and by llama.cpp (node-llama-cpp) on the same float32 weights; the continuations must
// be the same token for token (up to an end-of-generation token).
import { Engine } from '../engine.js';
import { generate } from '../generate.js';
import { Tokenizer } from '../tokenizer.js';
import { withLlamaCppModel } from './llamacpp.js';

/** Varied prompts: facts, instructions, code, numbers, another language, a ChatML turn. */
export const GREEDY_PROMPTS = [
  'The capital of France is',
  'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n',
  'Here is a list of the planets of the solar system, in order from the sun:',
  'Q: What is 17 multiplied by 23?\nA:',
  'Once upon a time, in a village at the edge of a forest,',
  'La tour Eiffel est située à',
  '<|im_start|>user\nGive me three tips for staying healthy.<|im_end|>\n<|im_start|>assistant\n',
  'Kubernetes is an open-source system for',
];

export interface GreedyMismatch {
  prompt: string;
  promptTokens: number;
  ours: number[];
  llamaCpp: number[];
  /** Index of the first differing token. */
  firstDifference: number;
  /**
   * At that token, our logit of our choice minus our logit of llama.cpp's (>= 0): a near-zero margin
   * means a near-tie that another summation order breaks the other way. NaN when one side stopped.
   */
  logitMargin: number;
}

export interface GreedyParity {
  prompts: number;
  maxTokens: number;
  mismatches: GreedyMismatch[];
}

/** llama.cpp's greedy continuation of each prompt (token ids in, ids out; stops at end of generation). */
async function llamaCppGreedy(gguf: string, prompts: number[][], maxTokens: number, threads: number): Promise<number[][]> {
  return withLlamaCppModel(gguf, { threads }, async (model) => {
    const longest = Math.max(...prompts.map((p) => p.length));
    const ctx = await model.createContext({ contextSize: longest + maxTokens + 8, sequences: 1, threads });
    const out: number[][] = [];
    for (const prompt of prompts) {
      const seq = ctx.getSequence();
      const tokens: number[] = [];
      for await (const t of seq.evaluate(prompt as never[], { temperature: 0 })) {
        if (model.isEogToken(t)) break;
        tokens.push(t as number);
        if (tokens.length >= maxTokens) break;
      }
      out.push(tokens);
      seq.dispose();
    }
    await ctx.dispose();
    return out;
  });
}

/**
 * Compares greedy continuations of `prompts` by npuserve on `npuFp32` (an FP32 conversion of the
 * GGUF) and by llama.cpp on `ggufF32` (the same weights as float32).
 */
export async function compareGreedyWithLlamaCpp(npuFp32: string, ggufF32: string, opts: { prompts?: readonly string[]; maxTokens?: number; threads?: number } = {}): Promise<GreedyParity> {
  const prompts = opts.prompts ?? GREEDY_PROMPTS;
  const maxTokens = opts.maxTokens ?? 32;
  const threads = opts.threads ?? 2;
  const engine = await Engine.load(npuFp32, { threads, maxSeqLen: 512, kvCacheTokens: 1024 });
  const tok = new Tokenizer(engine.metadata.tokenizer);
  const ids = prompts.map((p) => tok.encode(p));
  const ours: number[][] = [];
  for (const p of ids) ours.push((await generate(engine, p, { maxTokens, temperature: 0 })).tokens);
  const theirs = await llamaCppGreedy(ggufF32, ids, maxTokens, threads);
  const mismatches: GreedyMismatch[] = [];
  for (const [i, prompt] of prompts.entries()) {
    const [a, b] = [ours[i], theirs[i]];
    let d = 0;
    while (d < a.length && d < b.length && a[d] === b[d]) d++;
    if (d === a.length && d === b.length) continue;
    let logitMargin = NaN;
    if (d < a.length && d < b.length) {
      const seq = engine.createSequence();
      const [r] = await engine.step([{ sequence: seq, tokens: [...ids[i], ...a.slice(0, d)], logits: 'last', sample: false }]);
      engine.releaseSequence(seq);
      logitMargin = r.logits![a[d]] - r.logits![b[d]];
    }
    mismatches.push({ prompt, promptTokens: ids[i].length, ours: a, llamaCpp: b, firstDifference: d, logitMargin });
  }
  return { prompts: prompts.length, maxTokens, mismatches };
}

export function formatGreedyParity(r: GreedyParity, tok?: Tokenizer): string {
  const lines = [`greedy: ${r.prompts - r.mismatches.length}/${r.prompts} prompts continued identically to llama.cpp for ${r.maxTokens} tokens (or to the end of generation), both on float32 weights`];
  for (const m of r.mismatches) {
    const text = (ids: number[]) => (tok ? JSON.stringify(tok.decode(ids)) : ids.join(' '));
    lines.push(`  ${JSON.stringify(m.prompt)}: first difference at token ${m.firstDifference} (our logit margin there ${m.logitMargin.toExponential(2)})\n    npuserve  ${text(m.ours)}\n    llama.cpp ${text(m.llamaCpp)}`);
  }
  return lines.join('\n');
}
