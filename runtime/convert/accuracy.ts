// The accuracy gate: logits of a converted model against an FP32 conversion of the same checkpoint
// on fixed calibration prompts (encoded with the model's own tokenizer) (cosine similarity of last-position logits, top-1 agreement at every
// position).
import { cpus } from 'node:os';

import { Engine } from '../engine.js';
import { readNpuFile, type AccuracyReport } from '../format.js';
import { Tokenizer } from '../tokenizer.js';

export const CALIBRATION_PROMPTS = [
  'The capital of France is',
  'def fibonacci(n):\n    if n < 2:\n        return n\n    return',
  'Large language models are deployed on accelerators because',
  'In 1969, the first humans landed on the',
  'Translate to German: "Good morning, how are you?"',
  'The recipe calls for two cups of flour, one egg, and',
  'Kubernetes schedules pods onto nodes that have enough',
  'Once upon a time, in a small village by the sea, there lived',
];

export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return na === 0 || nb === 0 ? (na === nb ? 1 : 0) : dot / Math.sqrt(na * nb);
}

function argmax(a: Float32Array): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i] > a[best]) best = i;
  return best;
}

async function promptLogits(engine: Engine, prompts: number[][]): Promise<Float32Array[]> {
  const seqs = prompts.map(() => engine.createSequence());
  try {
    const results = await engine.step(prompts.map((tokens, i) => ({ sequence: seqs[i], tokens, logits: 'all', sample: false })));
    return results.map((r) => r.logits as Float32Array);
  } finally {
    for (const s of seqs) engine.releaseSequence(s);
  }
}

export async function measureAccuracy(candidatePath: string, referencePath: string, prompts = CALIBRATION_PROMPTS): Promise<AccuracyReport> {
  const tok = new Tokenizer(readNpuFile(candidatePath).metadata.tokenizer);
  const ids = prompts.map((p) => tok.encode(p));
  const options = {
    threads: cpus().length,
    maxSeqLen: Math.max(...ids.map((x) => x.length)),
    kvCacheTokens: ids.reduce((n, x) => n + x.length + 16, 0),
  };
  const reference = await promptLogits(await Engine.load(referencePath, options), ids);
  const candidateEngine = await Engine.load(candidatePath, options);
  const candidate = await promptLogits(candidateEngine, ids);
  const vocab = candidateEngine.metadata.config.vocabSize;
  const lastCos: number[] = [];
  let agree = 0;
  let positions = 0;
  ids.forEach((p, i) => {
    for (let pos = 0; pos < p.length; pos++) {
      const a = candidate[i].subarray(pos * vocab, (pos + 1) * vocab);
      const b = reference[i].subarray(pos * vocab, (pos + 1) * vocab);
      if (argmax(a) === argmax(b)) agree++;
      positions++;
      if (pos === p.length - 1) lastCos.push(cosine(a, b));
    }
  });
  return {
    reference: 'FP32',
    prompts: prompts.length,
    positions,
    cosineSimilarity: lastCos.reduce((s, x) => s + x, 0) / lastCos.length,
    minCosineSimilarity: Math.min(...lastCos),
    top1Agreement: agree / positions,
  };
}
