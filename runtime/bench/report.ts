// The seed study's report: a Markdown table like the article's (before and after columns with the
// improvement when two models are compared), the throughput sweep, and the SVG chart.
import { lineChartSvg } from './chart.js';
import type { StudyResult } from './study.js';

interface Row {
  test: string;
  value: (r: StudyResult) => number | null;
  digits: number;
  higherIsBetter: boolean;
}

const ROWS: Row[] = [
  { test: 'Time to first token, p50 (ms)', value: (r) => r.latency.ttftP50Ms, digits: 1, higherIsBetter: false },
  { test: 'Time to first token, p95 (ms)', value: (r) => r.latency.ttftP95Ms, digits: 1, higherIsBetter: false },
  { test: 'Per-token latency, p50 (ms)', value: (r) => r.latency.perTokenP50Ms, digits: 2, higherIsBetter: false },
  { test: 'Per-token latency, p95 (ms)', value: (r) => r.latency.perTokenP95Ms, digits: 2, higherIsBetter: false },
  { test: 'Max throughput (output tok/s)', value: (r) => r.best.outputTokensPerSecond, digits: 1, higherIsBetter: true },
  { test: 'Accuracy: cosine vs FP32', value: (r) => r.accuracy?.cosineSimilarity ?? null, digits: 6, higherIsBetter: true },
  { test: 'Peak memory (GB)', value: (r) => (r.peakRssBytes === null ? null : r.peakRssBytes / 1e9), digits: 3, higherIsBetter: false },
];

const cell = (v: number | null, digits: number) => (v === null || !Number.isFinite(v) ? 'n/a' : v.toFixed(digits));

function improvement(before: number | null, after: number | null, higherIsBetter: boolean): string {
  if (before === null || after === null || !Number.isFinite(before) || !Number.isFinite(after) || before === 0) return 'n/a';
  const gain = higherIsBetter ? (after - before) / before : (before - after) / before;
  return `${gain >= 0 ? '+' : ''}${(gain * 100).toFixed(1)}%`;
}

/** `results` is [model] or [before, after]. */
export function studyMarkdown(results: readonly StudyResult[]): string {
  const o = results[0].options;
  const lines = [
    `Latency: batch 1, ${o.latencyRequests} requests of ${o.promptTokens} prompt + ${o.outputTokens} output tokens. ` +
      `Throughput: prompt length ${o.promptTokens}, ${o.outputTokens} output tokens, concurrency doubling until two doublings in a row raise throughput < ${(o.minGain * 100).toFixed(0)}%.`,
    '',
  ];
  if (results.length === 2) {
    const [before, after] = results;
    lines.push(`| Test | Before: ${before.label} | After: ${after.label} | Improvement |`, '|---|---|---|---|');
    for (const row of ROWS) {
      lines.push(`| ${row.test} | ${cell(row.value(before), row.digits)} | ${cell(row.value(after), row.digits)} | ${improvement(row.value(before), row.value(after), row.higherIsBetter)} |`);
    }
  } else {
    lines.push(`| Test | ${results[0].label} |`, '|---|---|');
    for (const row of ROWS) lines.push(`| ${row.test} | ${cell(row.value(results[0]), row.digits)} |`);
  }
  lines.push('', '| Model | Concurrency | Output tok/s | Total tok/s | TTFT p95 (ms) | Per-token p95 (ms) |', '|---|---|---|---|---|---|');
  for (const r of results) {
    for (const p of r.sweep) {
      lines.push(`| ${r.label} | ${p.concurrency} | ${p.outputTokensPerSecond.toFixed(1)} | ${p.totalTokensPerSecond.toFixed(1)} | ${p.ttftP95Ms.toFixed(0)} | ${p.interTokenP95Ms.toFixed(1)} |`);
    }
  }
  return `${lines.join('\n')}\n`;
}

export function studyChartSvg(results: readonly StudyResult[]): string {
  return lineChartSvg(`Throughput and p95 latency vs concurrency (prompt ${results[0].options.promptTokens} tokens)`, 'concurrent requests', [
    { title: 'Throughput', yLabel: 'output tokens / s', series: results.map((r) => ({ name: r.label, points: r.sweep.map((p) => ({ x: p.concurrency, y: p.outputTokensPerSecond })) })) },
    { title: 'p95 time to first token', yLabel: 'ms', series: results.map((r) => ({ name: r.label, points: r.sweep.map((p) => ({ x: p.concurrency, y: p.ttftP95Ms })) })) },
  ]);
}
