// `npm run validate:llamacpp -- --model X.gguf`: npuserve against llama.cpp (node-llama-cpp) on the
// same GGUF, each check with a pass/fail verdict:
//   1. tokenizer: ids identical on the parity corpus (special-token text included);
//   2. greedy: 8 prompts continued identically for 32 tokens (or to the end of generation) when both
//      run the F32-dequantized weights (our FP32 conversion; llama.cpp on the file's F32 twin);
//   3. quantized file: teacher-forced next-token top-1 of our FP32 conversion against llama.cpp
//      running the file as it is (its own quantized kernels), over one fixed token stream.
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';

import { defaultThreads } from '../cgroup.js';
import { convert } from '../convert/convert.js';
import { writeGgufTwin } from '../convert/gguf-writer.js';
import { FORMAT_VERSION } from '../format.js';
import { Tokenizer } from '../tokenizer.js';
import { compareTokenizerWithLlamaCpp, formatTokenizerParity, type TokenizerParity } from '../tokenizer/parity.js';
import { ENGINE_VERSION } from '../../common/version.js';
import { agreement, llamaLogProbs, npuserveLogProbs, type Agreement } from './agreement.js';
import { compareGreedyWithLlamaCpp, formatGreedyParity, type GreedyParity } from './greedy-parity.js';

/** Teacher-forced top-1 on the quantized file below this fails the check. */
export const MIN_QUANTIZED_TOP1 = 0.9;

export interface LlamaCppValidation {
  model: string;
  tokenizer: TokenizerParity;
  greedy: GreedyParity;
  /** Our FP32 conversion against llama.cpp on the file as stored. */
  quantized: Agreement;
  passed: boolean;
}

/** Runs the three checks; `workDir` keeps the F32 twin and our FP32 conversion between runs. */
export async function validateAgainstLlamaCpp(gguf: string, workDir: string, opts: { threads?: number; log?: (line: string) => void } = {}): Promise<LlamaCppValidation> {
  const threads = opts.threads ?? defaultThreads();
  const log = opts.log ?? ((line: string) => console.error(line));
  mkdirSync(workDir, { recursive: true });
  // Cached files are named by the source's size and mtime and our format and engine versions.
  const stamp = `${statSync(gguf).size}-${Math.round(statSync(gguf).mtimeMs)}`;
  const twin = join(workDir, `${basename(gguf, '.gguf')}.${stamp}.F32.gguf`);
  if (!existsSync(twin)) {
    log(`validate:llamacpp: writing the F32 twin of ${gguf}`);
    writeGgufTwin(gguf, twin, 'F32');
  }
  const npu = join(workDir, `${basename(gguf, '.gguf')}.${stamp}.fp32.v${FORMAT_VERSION}.e${ENGINE_VERSION}.npu`);
  if (!existsSync(npu)) {
    log(`validate:llamacpp: converting ${gguf} to FP32`);
    await convert({ input: gguf, output: npu, precision: 'FP32', optimizeLevel: 0 });
  }
  log('validate:llamacpp: tokenizer');
  const tokenizer = await compareTokenizerWithLlamaCpp(gguf);
  log('validate:llamacpp: greedy continuations');
  const greedy = await compareGreedyWithLlamaCpp(npu, twin, { threads });
  log('validate:llamacpp: teacher-forced on the quantized file');
  const theirs = await llamaLogProbs(gguf, threads, 256);
  const ours = await npuserveLogProbs(npu, theirs.tokens, threads);
  const quantized = agreement(theirs.logProbs, ours, theirs.logProbs.length / theirs.tokens.length);
  const passed = tokenizer.mismatches.length === 0 && greedy.mismatches.length === 0 && quantized.top1 >= MIN_QUANTIZED_TOP1;
  return { model: gguf, tokenizer, greedy, quantized, passed };
}

export function formatValidation(v: LlamaCppValidation, tok?: Tokenizer): string {
  const q = v.quantized;
  return [
    formatTokenizerParity(v.model, v.tokenizer),
    formatGreedyParity(v.greedy, tok),
    `quantized file: npuserve FP32 vs llama.cpp on the file as stored, ${q.positions} tokens teacher-forced: top-1 ${(100 * q.top1).toFixed(1)}% (minimum ${100 * MIN_QUANTIZED_TOP1}%), mean KL ${q.meanKl.toExponential(3)} nats`,
    v.passed ? 'PASS' : 'FAIL',
  ].join('\n');
}
