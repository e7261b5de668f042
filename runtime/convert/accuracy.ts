// The accuracy gate: logits of a converted model against an FP32 conversion of the same checkpoint
// on fixed calibration prompts (encoded with the model's own tokenizer): cosine similarity of
// last-position logits, top-1 agreement at every position. Non-finite logits always fail it.

import { defaultThreads } from '../cgroup.js';
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

/** Cosine similarity; NaN when either side holds a NaN or an infinity, so no gate can pass on it. */
export function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  if (!allFinite(a) || !allFinite(b)) return NaN;
  return na === 0 || nb === 0 ? (na === nb ? 1 : 0) : dot / Math.sqrt(na * nb);
}

/** True when no value is NaN or infinite (x - x is 0 for finite x, NaN otherwise). */
export function allFinite(a: Float32Array): boolean {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] - a[i];
  return s === 0;
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
    threads: defaultThreads(),
    maxSeqLen: Math.max(...ids.map((x) => x.length)),
    kvCacheTokens: ids.reduce((n, x) => n + x.length + 16, 0),
  };
  const reference = await promptLogits(await Engine.load(referencePath, options), ids);
  const candidateEngine = await Engine.load(candidatePath, options);
  const candidate = await promptLogits(candidateEngine, ids);
  return compareLogits(candidate, reference, ids.map((p) => p.length), candidateEngine.metadata.config.vocabSize);
}

/**
 * The report from each prompt's logits ([positions x vocab], row-major) of candidate and reference.
 * A position whose logits are not all finite on either side never agrees, and its prompt's cosine is NaN.
 */
export function compareLogits(candidate: Float32Array[], reference: Float32Array[], promptLengths: number[], vocab: number): AccuracyReport {
  const lastCos: number[] = [];
  let agree = 0;
  let positions = 0;
  promptLengths.forEach((length, i) => {
    for (let pos = 0; pos < length; pos++) {
      const a = candidate[i].subarray(pos * vocab, (pos + 1) * vocab);
      const b = reference[i].subarray(pos * vocab, (pos + 1) * vocab);
      if (allFinite(a) && allFinite(b) && argmax(a) === argmax(b)) agree++;
      positions++;
      if (pos === length - 1) lastCos.push(cosine(a, b));
    }
  });
  return {
    reference: 'FP32',
    prompts: promptLengths.length,
    positions,
    cosineSimilarity: lastCos.reduce((s, x) => s + x, 0) / lastCos.length,
    minCosineSimilarity: lastCos.some(Number.isNaN) ? NaN : Math.min(...lastCos),
    top1Agreement: agree / positions,
  };
}

/**
 * Why a report fails the gate, or null when it passes. Non-finite similarities always fail; the
 * comparison is written so that NaN cannot pass (`!(x >= min)`).
 */
export function gateFailure(report: AccuracyReport, minCosine: number | undefined): string | null {
  if (!Number.isFinite(report.cosineSimilarity) || !Number.isFinite(report.minCosineSimilarity))
    return `the converted model's logits (or the FP32 reference's) are not finite (NaN or infinity) on the calibration prompts; the checkpoint or its conversion is broken`;
  if (minCosine !== undefined && !(report.cosineSimilarity >= minCosine))
    return `cosine similarity ${report.cosineSimilarity.toFixed(5)} vs FP32 is below the minimum ${minCosine} (top-1 agreement ${(report.top1Agreement * 100).toFixed(1)}%)`;
  return null;
}
