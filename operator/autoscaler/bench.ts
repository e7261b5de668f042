// `npm run bench:autoscale`: replays one scripted load through the simulator twice, scaled by our
// policy and by a plain HPA-style policy on requests in flight, and prints replicas against demand,
// seconds of TTFT SLO violation and replica-seconds for each; writes an SVG chart and a JSON summary.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { SPEC_DEFAULTS } from '../../common/defaults.js';
import { type CommandSpec, type FlagValues, runScript, stringFlag } from '../../common/flags.js';

import { decide, TOLERANCE, type AutoscalingTargets, type PolicyInput, type Recommendation } from './policy.js';
import { simulate, summary, type PodModel, type Policy, type Second } from './simulator.js';

const targets: AutoscalingTargets = { ...SPEC_DEFAULTS.autoscaling, maxReplicas: 10, maxBatchSize: SPEC_DEFAULTS.runtime.maxBatchSize };
// One replica: 480 tokens/s at a full batch of 16, 200-token answers, 30 s from scale decision to ready.
const pod: PodModel = { capacityTokensPerSecond: 480, tokensPerRequest: 200, baseTtftSeconds: 0.25, startupSeconds: 30 };
const SCRAPE_INTERVAL_SECONDS = 5;
const DURATION_SECONDS = 1500;

/** The scripted load in generation tokens/s: a ramp, a plateau, a 20 s burst, a lull, a step, a slow decline. */
export function demand(second: number): number {
  if (second < 60) return 300;
  if (second < 300) return 300 + ((second - 60) / 240) * 1500; // ramp to 1800
  if (second < 480) return 1800;
  if (second < 500) return 4000; // burst
  if (second < 600) return 1800;
  if (second < 800) return 400; // lull
  if (second < 1100) return 2600; // step
  return Math.max(300, 2600 - (second - 1100) * 6);
}

/**
 * The HPA algorithm (sync every 15 s) on a per-pod metric, average requests in flight (running +
 * waiting) at the last scrape, target 13 of the batch of 16 (the same ~80% as 400 of 480 tokens/s):
 * desired = ceil(current x observed / target) outside a 10% tolerance, scale-up at most
 * max(4 pods, 100%) per sync, scale-down to the highest recommendation of the last 300 s.
 */
export function hpaPolicy(targetInFlightPerPod: number): Policy {
  return (input: PolicyInput) => {
    const { currentReplicas: current, nowMs, targets: t } = input;
    const keep = { desiredReplicas: current, history: input.history };
    if (nowMs % 15_000 !== 0) return keep;
    const last = input.rounds.at(-1);
    const reported = last?.pods.filter((p) => p.metrics) ?? [];
    if (reported.length === 0) return keep;
    const perPod = reported.reduce((s, p) => s + p.metrics!.running + p.metrics!.waiting, 0) / reported.length;
    const ratio = perPod / targetInFlightPerPod;
    let rec = Math.abs(ratio - 1) <= TOLERANCE ? current : Math.ceil(reported.length * ratio);
    rec = Math.min(t.maxReplicas, Math.max(t.minReplicas, rec, 1));
    const windowMs = t.scaleDownStabilizationSeconds * 1000;
    const history: Recommendation[] = [...input.history.filter((h) => h.timeMs > nowMs - windowMs), { timeMs: nowMs, replicas: rec }];
    const desired = rec < current ? Math.min(current, Math.max(...history.map((h) => h.replicas))) : Math.min(rec, Math.max(current + 4, current * 2));
    return { desiredReplicas: desired, history };
  };
}

const neededReplicas = (s: Second) => Math.ceil(s.demandTokensPerSecond / targets.targetTokensPerSecondPerReplica);

function chart(runs: Array<{ name: string; color: string; seconds: Second[] }>): string {
  const [w, h, left, right, top, bottom] = [960, 470, 50, 20, 30, 140];
  const maxY = targets.maxReplicas + 1;
  const x = (s: number) => left + (s / DURATION_SECONDS) * (w - left - right);
  const y = (r: number) => top + (1 - r / maxY) * (h - top - bottom);
  const steps = (values: number[]) => values.map((v, i) => `${i === 0 ? 'M' : 'L'}${x(i).toFixed(1)},${y(values[i - 1] ?? v).toFixed(1)} L${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
  const base = runs[0]!.seconds;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${left}" y="18" font-size="14">Replicas under a scripted load: npuserve policy vs HPA-style on requests in flight</text>`,
  ];
  for (let r = 0; r <= maxY; r += 2) parts.push(`<line x1="${left}" x2="${w - right}" y1="${y(r)}" y2="${y(r)}" stroke="#eee"/><text x="${left - 8}" y="${y(r) + 4}" text-anchor="end">${r}</text>`);
  for (let s = 0; s <= DURATION_SECONDS; s += 300) parts.push(`<text x="${x(s)}" y="${h - bottom + 16}" text-anchor="middle">${s} s</text>`);
  parts.push(`<path d="${steps(base.map(neededReplicas))} L${x(DURATION_SECONDS)},${y(0)} L${x(0)},${y(0)} Z" fill="#ddd" stroke="none"/>`);
  runs.forEach((run, i) => {
    parts.push(`<path d="${steps(run.seconds.map((s) => s.replicas))}" fill="none" stroke="${run.color}" stroke-width="2"/>`);
    const rowY = h - bottom + 30 + i * 16;
    parts.push(`<text x="${left - 8}" y="${rowY + 9}" text-anchor="end" fill="${run.color}">SLO</text>`);
    for (const s of run.seconds) if (s.ttftSeconds > targets.ttftP95TargetMs / 1000) parts.push(`<rect x="${x(s.second).toFixed(1)}" y="${rowY}" width="${Math.max(1, x(1) - x(0)).toFixed(1)}" height="10" fill="${run.color}"/>`);
  });
  const legend = [['#ddd', 'replicas the demand needs (demand / 400 tokens/s)'], ...runs.map((r) => [r.color, `${r.name} replicas; bars below: seconds with TTFT over 0.8 s`])];
  legend.forEach(([color, text], i) => parts.push(`<rect x="${left}" y="${h - bottom + 70 + i * 16}" width="12" height="10" fill="${color}"/><text x="${left + 18}" y="${h - bottom + 79 + i * 16}">${text}</text>`));
  parts.push('</svg>');
  return parts.join('\n');
}

const COMMAND: CommandSpec = {
  name: 'npm run bench:autoscale --',
  summary: "Replays a scripted load through the autoscaling simulator with npuserve's policy and an HPA-style one; prints replicas against demand and a summary per policy.",
  flags: [
    { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of autoscale.svg and autoscale.json' },
    { name: 'json', description: 'print the per-policy summary as JSON instead of tables' },
  ],
};

function main(f: FlagValues): void {
  const out = stringFlag(f, 'out')!;
  const common = { demand, durationSeconds: DURATION_SECONDS, initialReplicas: 1, targets, pod, scrapeIntervalSeconds: SCRAPE_INTERVAL_SECONDS };
  const runs = [
    { name: 'npuserve (tokens/s, TTFT, queue)', color: '#1f6fd1', seconds: simulate({ ...common, policy: decide }) },
    { name: 'HPA-style (requests in flight)', color: '#e07b00', seconds: simulate({ ...common, policy: hpaPolicy(13) }) },
  ];
  const results = runs.map((r) => ({ policy: r.name, ...summary(r.seconds, targets.ttftP95TargetMs / 1000) }));
  const report = { targets, pod, scrapeIntervalSeconds: SCRAPE_INTERVAL_SECONDS, durationSeconds: DURATION_SECONDS, results };
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'autoscale.svg'), chart(runs));
  writeFileSync(join(out, 'autoscale.json'), JSON.stringify(report, null, 2));
  if (f.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    console.log('second  demand tok/s  needed  npuserve  hpa-style');
    for (let s = 0; s < DURATION_SECONDS; s += 30) {
      const a = runs[0]!.seconds[s]!;
      console.log(`${String(s).padStart(6)}  ${Math.round(a.demandTokensPerSecond).toString().padStart(12)}  ${String(neededReplicas(a)).padStart(6)}  ${String(a.replicas).padStart(8)}  ${String(runs[1]!.seconds[s]!.replicas).padStart(9)}`);
    }
    console.log('\npolicy                              SLO-violation s  replica-seconds  max replicas  scale events');
    for (const r of results) console.log(`${r.policy.padEnd(36)}${String(r.sloViolationSeconds).padStart(15)}${String(r.replicaSeconds).padStart(17)}${String(r.maxReplicas).padStart(14)}${String(r.scaleEvents).padStart(14)}`);
  }
  console.error(`wrote ${join(out, 'autoscale.svg')} and autoscale.json`);
}

void runScript(COMMAND, main);
