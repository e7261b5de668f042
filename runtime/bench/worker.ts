// Child process of `npuserve bench` for one model file, so each model's peak memory is its own:
// loads the engine, runs the study, reads the peak RSS, then (if given an FP32 reference) measures
// accuracy. Talks to the parent over the fork IPC channel.
import { measureAccuracy } from '../convert/accuracy.js';
import { EngineTarget } from './targets.js';
import { runStudy, type StudyOptions, type StudyResult } from './study.js';

export interface WorkerRequest {
  modelPath: string;
  referencePath: string | null;
  threads: number;
  maxNumBatchedTokens: number;
  options: StudyOptions;
}

export type WorkerMessage = { kind: 'progress'; label: string; done: number; total: number } | { kind: 'result'; result: StudyResult } | { kind: 'error'; message: string };

async function main(req: WorkerRequest): Promise<StudyResult> {
  const o = req.options;
  const target = await EngineTarget.load(req.modelPath, {
    threads: req.threads,
    maxBatchSize: o.maxConcurrency,
    maxSeqLen: o.promptTokens + o.outputTokens,
    maxNumBatchedTokens: req.maxNumBatchedTokens,
  });
  const measured = await runStudy(target, o, (label, done, total) => process.send!({ kind: 'progress', label, done, total } satisfies WorkerMessage));
  const peakRssBytes = process.resourceUsage().maxRSS * 1024;
  const meta = target.engine.metadata;
  return {
    label: `${meta.precision} o${meta.optimizeLevel}`,
    model: { path: req.modelPath, precision: meta.precision, optimizeLevel: meta.optimizeLevel, weightBytes: target.engine.info.weightBytes },
    options: o,
    ...measured,
    accuracy: req.referencePath ? await measureAccuracy(req.modelPath, req.referencePath) : null,
    peakRssBytes,
  };
}

process.once('message', (req: WorkerRequest) => {
  main(req).then(
    (result) => process.send!({ kind: 'result', result } satisfies WorkerMessage, () => process.exit(0)),
    (e: Error) => process.send!({ kind: 'error', message: e.message } satisfies WorkerMessage, () => process.exit(1)),
  );
});
