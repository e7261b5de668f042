// `npuserve bench` as a user runs it, with tiny models and small settings (the numbers themselves
// are for docs/benchmarks.md, not asserted): before/after report, JSON, SVG chart, accuracy, memory,
// and the same study against a running server.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import type { StudyResult } from '../../runtime/bench/study.js';
import { convertedModel, testModel, workDir } from './helpers.js';
import { startServer } from './server-process.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');
const SMALL = ['--prompt-tokens', '48', '--output-tokens', '6', '--latency-requests', '2', '--max-concurrency', '4', '--threads', '1'];

function npuserve(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args]);
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (b) => (stdout += b));
    p.stderr.on('data', (b) => (stderr += b));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('npuserve bench', () => {
  it('compares two model files: Markdown table with before/after columns, JSON, SVG chart, accuracy and memory', async () => {
    const m = testModel('bench');
    const [int8, fp32] = await Promise.all([convertedModel(m, 'INT8', 2), convertedModel(m, 'FP32', 2)]);
    const out = join(workDir, 'bench-files');
    const r = await npuserve('bench', '--model', int8, '--baseline', fp32, '--reference', fp32, '--out', out, ...SMALL);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('| Test | Before: FP32 o2 | After: INT8 o2 | Improvement |');
    expect(r.stdout).toMatch(/\| Max throughput \(output tok\/s\) \| [\d.]+ \| [\d.]+ \| [+-][\d.]+% \|/);
    expect(readFileSync(join(out, 'bench.md'), 'utf8')).toBe(r.stdout);

    const { results } = JSON.parse(readFileSync(join(out, 'bench.json'), 'utf8')) as { results: StudyResult[] };
    expect(results.map((x) => x.label)).toEqual(['FP32 o2', 'INT8 o2']);
    const [before, after] = results;
    expect(before.accuracy?.cosineSimilarity).toBeCloseTo(1, 6);
    expect(after.accuracy?.cosineSimilarity).toBeGreaterThan(0.99);
    for (const x of results) {
      expect(x.latency.requests).toBe(2);
      expect(x.latency.ttftP50Ms).toBeGreaterThan(0);
      expect(x.sweep[0].concurrency).toBe(1);
      expect(x.sweep.every((p, i) => i === 0 || p.concurrency === 2 * x.sweep[i - 1].concurrency)).toBe(true);
      expect(x.sweep.at(-1)!.concurrency).toBeLessThanOrEqual(4);
      expect(x.sweep.every((p) => p.outputTokens === p.concurrency * 6 && p.promptTokens === p.concurrency * 48)).toBe(true);
      expect(x.peakRssBytes).toBeGreaterThan(x.model!.weightBytes);
    }
    expect(after.model!.weightBytes).toBeLessThan(before.model!.weightBytes / 3);

    const svg = readFileSync(join(out, 'bench.svg'), 'utf8');
    expect(svg).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    expect(svg.match(/<polyline /g)).toHaveLength(4); // two models x (throughput, p95 TTFT)
    expect(svg).toContain('INT8 o2');
  });

  it('measures a running server, with its peak memory read from /metrics', async () => {
    const server = await startServer(await convertedModel(testModel('bench'), 'INT8', 2), ['--served-model-name', 'served', '--threads', '1']);
    try {
      const out = join(workDir, 'bench-url');
      const r = await npuserve('bench', '--url', server.url, '--out', out, '--json', ...SMALL);
      expect(r.code, r.stderr).toBe(0);
      const [result] = JSON.parse(r.stdout) as StudyResult[];
      expect(result.label).toBe('served');
      expect(result.sweep.length).toBeGreaterThan(0);
      expect(result.peakRssBytes).toBeGreaterThan(0);
      expect(result.accuracy).toBeNull();
    } finally {
      await server.stop();
    }
  });

  it('refuses to run without a model or a server', async () => {
    const r = await npuserve('bench');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--model X.npu or --url/);
  });
});
