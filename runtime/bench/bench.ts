// `npuserve bench`: the seed study (latency at batch 1, throughput sweep, accuracy vs FP32, peak
// memory) for one or two model files, each in its own child process, or for a running server; writes
// a Markdown report, a JSON file and an SVG chart.
import { fork } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { measureAccuracy } from '../convert/accuracy.js';
import { readNpuFile } from '../format.js';
import { studyChartSvg, studyMarkdown } from './report.js';
import { runStudy, type ProgressFn, type StudyOptions, type StudyResult } from './study.js';
import { HttpTarget } from './targets.js';
import type { WorkerMessage, WorkerRequest } from './worker.js';

export interface BenchOptions {
  /** The model measured (the "after" column). Optional with `url`, where it is used for accuracy only. */
  modelPath?: string;
  /** A second model, the "before" column. */
  baselinePath?: string;
  /** A running server to measure instead of a model file. */
  url?: string;
  /** FP32 conversion of the same checkpoint, for the accuracy row. */
  referencePath?: string;
  outDir: string;
  threads: number;
  maxNumBatchedTokens: number;
  study: StudyOptions;
}

export interface BenchOutput {
  results: StudyResult[];
  markdown: string;
  files: { json: string; markdown: string; svg: string };
}

export async function bench(o: BenchOptions, progress: ProgressFn): Promise<BenchOutput> {
  const results: StudyResult[] = [];
  if (o.url) {
    results.push(await studyServer(o, progress));
  } else {
    for (const path of [o.baselinePath, o.modelPath]) {
      if (path) results.push(await studyInChild(path, o, progress));
    }
  }
  mkdirSync(o.outDir, { recursive: true });
  const files = { json: join(o.outDir, 'bench.json'), markdown: join(o.outDir, 'bench.md'), svg: join(o.outDir, 'bench.svg') };
  const markdown = studyMarkdown(results);
  writeFileSync(files.json, `${JSON.stringify({ createdAt: new Date().toISOString(), results }, null, 2)}\n`);
  writeFileSync(files.markdown, markdown);
  writeFileSync(files.svg, studyChartSvg(results));
  return { results, markdown, files };
}

/** Prompt and output lengths that fit the model's positions (the prompt gives way). */
function fitted(study: StudyOptions, maxSeqLen: number): StudyOptions {
  const outputTokens = Math.min(study.outputTokens, maxSeqLen - 1);
  return { ...study, outputTokens, promptTokens: Math.max(1, Math.min(study.promptTokens, maxSeqLen - outputTokens)) };
}

function studyInChild(modelPath: string, o: BenchOptions, progress: ProgressFn): Promise<StudyResult> {
  const options = fitted(o.study, readNpuFile(modelPath).metadata.config.maxPositionEmbeddings);
  const self = fileURLToPath(import.meta.url);
  const child = fork(join(self, '..', `worker${extname(self)}`), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const req: WorkerRequest = { modelPath, referencePath: o.referencePath ?? null, threads: o.threads, maxNumBatchedTokens: o.maxNumBatchedTokens, options };
  child.send(req);
  return new Promise((resolve, reject) => {
    let settled = false;
    child.on('message', (m: WorkerMessage) => {
      if (m.kind === 'progress') progress(m.label, m.done, m.total);
      else if (m.kind === 'result') ((settled = true), resolve(m.result));
      else ((settled = true), reject(new Error(`${modelPath}: ${m.message}`)));
    });
    child.on('exit', (code) => {
      if (!settled) reject(new Error(`${modelPath}: the benchmark process exited with code ${code} before reporting`));
    });
  });
}

/** The study against a server; its peak memory is the highest process_resident_memory_bytes seen. */
async function studyServer(o: BenchOptions, progress: ProgressFn): Promise<StudyResult> {
  const target = await HttpTarget.connect(o.url!);
  const options = fitted(o.study, target.maxModelLen ?? Number.MAX_SAFE_INTEGER);
  let peakRssBytes: number | null = null;
  const sample = async () => {
    const text = await (await fetch(`${target.url}/metrics`)).text();
    const rss = Number(/^process_resident_memory_bytes (\S+)$/m.exec(text)?.[1]);
    if (Number.isFinite(rss)) peakRssBytes = Math.max(peakRssBytes ?? 0, rss);
  };
  const sampler = setInterval(() => void sample().catch(() => {}), 500);
  try {
    const measured = await runStudy(target, options, progress);
    await sample();
    return {
      label: target.model,
      model: null,
      options,
      ...measured,
      accuracy: o.modelPath && o.referencePath ? await measureAccuracy(o.modelPath, o.referencePath) : null,
      peakRssBytes,
    };
  } finally {
    clearInterval(sampler);
    target.close();
  }
}
