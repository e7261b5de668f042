// The engine under ThreadSanitizer (run by run.mts, never directly): on this thread and on two
// worker_threads, each with its own Engine over the same .npu, a Scheduler serves requests that are
// submitted and aborted while steps run (reportState reads the KV free list on every submit), and the
// JS thread creates, measures and releases sequences during steps. Prints one line per thread.
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';

import { Engine } from '../../runtime/engine.js';
import { Scheduler, type GenerationResult, type SchedulerObserver } from '../../runtime/scheduler.js';

const ROUNDS = 6;

async function stress(modelPath: string, label: string, seed: number): Promise<string> {
  const engine = await Engine.load(modelPath, { threads: 2, maxSeqLen: 128, kvCacheTokens: 8 * 128, kvCacheDtype: seed % 2 ? 'f16' : 'f32' });
  let stateReports = 0;
  const observer: SchedulerObserver = { step() {}, state: () => void stateReports++, firstToken() {}, interToken() {}, finished() {} };
  const scheduler = new Scheduler(engine, { policy: 'continuous', maxBatchSize: 4, maxNumBatchedTokens: 48, maxWaitingRequests: 64, batchTimeoutMs: 0, observer });
  const reasons = new Map<string, number>();
  for (let round = 0; round < ROUNDS; round++) {
    const done: Array<Promise<GenerationResult>> = [];
    for (let i = 0; i < 6; i++) {
      const abort = new AbortController();
      done.push(
        new Promise((resolve) =>
          scheduler.submit({
            prompt: Array.from({ length: 5 + ((i * 7 + round) % 30) }, (_, j) => 1 + ((j * 31 + i + seed) % 500)),
            maxTokens: 4 + (i % 5),
            temperature: 1,
            topP: 0.9,
            seed: seed * 100 + round * 10 + i,
            signal: abort.signal,
            onToken: () => false,
            onFinish: resolve,
          }),
        ),
      );
      // Every third request is aborted a moment later: mid-step, queued or already done.
      if (i % 3 === 2) setTimeout(() => abort.abort(), i);
      // Direct calls on this thread while a step may be running on a worker thread.
      const extra = engine.createSequence(i);
      engine.sequenceLength(extra);
      void engine.info.kvBlocksFree;
      engine.releaseSequence(extra);
      await new Promise((resolve) => setImmediate(resolve));
    }
    for (const r of await Promise.all(done)) reasons.set(r.reason, (reasons.get(r.reason) ?? 0) + 1);
  }
  await scheduler.idle();
  const info = engine.info;
  if (info.kvBlocksFree !== info.kvBlocksTotal) throw new Error(`${label}: ${info.kvBlocksTotal - info.kvBlocksFree} KV blocks still in use after every request finished`);
  return `${label}: ${[...reasons].map(([r, n]) => `${n} ${r}`).join(', ')}; ${stateReports} state reports`;
}

if (isMainThread) {
  const modelPath = process.argv[2];
  const workers = [1, 2].map(
    (n) =>
      new Promise<string>((resolve, reject) => {
        // Node 20 does not apply the main thread's --import tsx hooks to a worker's entry: register them there.
        const entry = `import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${JSON.stringify(import.meta.url)}); })`;
        const w = new Worker(entry, { eval: true, workerData: { modelPath, n } });
        w.once('message', resolve).once('error', reject);
      }),
  );
  const lines = await Promise.all([stress(modelPath, 'main thread', 0), ...workers]);
  for (const line of lines) console.log(line);
} else {
  const { modelPath, n } = workerData as { modelPath: string; n: number };
  parentPort!.postMessage(await stress(modelPath, `worker ${n}`, n));
}
