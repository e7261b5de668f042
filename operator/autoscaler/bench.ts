// `npm run bench:autoscale`: replays each named trace (traces.ts) through the simulator once per
// policy, ours and the baselines users would otherwise pick (baselines.ts), and prints per trace and
// policy the seconds over the TTFT SLO, replica-seconds and scale events; writes one SVG chart per trace.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

import { type CommandSpec, type FlagValues, runScript, stringFlag } from '../../common/flags.js';

import { BASELINE_PARAMETERS, hpaPolicy, knativePolicy, kubeaiPolicy } from './baselines.js';
import { decide } from './policy.js';
import { summary, type Policy, type Second } from './simulator.js';
import { BENCH_POD, BENCH_SCRAPE_INTERVAL_SECONDS, BENCH_TARGETS, runTrace, trace, TRACE_SPECS, type Trace } from './traces.js';

const targets = BENCH_TARGETS;

export const POLICIES: Array<{ key: string; name: string; color: string; make: () => Policy }> = [
  { key: 'npuserve', name: 'npuserve (tokens/s, TTFT, queue, trend)', color: '#1f6fd1', make: () => decide },
  // The same policy with the spec's scale-down stabilization at 60 s instead of its default 300 s, and
  // with prompt tokens counted against the target (AutoscalingTargets.promptTokenWeight, not a spec field).
  { key: 'npuserve-60s', name: 'npuserve, scaleDownStabilizationSeconds 60', color: '#8fc1f5', make: () => (i) => decide({ ...i, targets: { ...i.targets, scaleDownStabilizationSeconds: 60 } }) },
  { key: 'npuserve-prompts', name: 'npuserve, promptTokenWeight 1', color: '#0b3d7a', make: () => (i) => decide({ ...i, targets: { ...i.targets, promptTokenWeight: 1 } }) },
  { key: 'hpa', name: 'HPA-style (requests in flight)', color: '#e07b00', make: () => hpaPolicy(BASELINE_PARAMETERS.hpa.targetInFlightPerPod) },
  { key: 'kubeai', name: 'KubeAI (averaged active requests)', color: '#2a9d3a', make: () => kubeaiPolicy(BASELINE_PARAMETERS.kubeai) },
  { key: 'knative', name: 'Knative KPA (concurrency)', color: '#b03a8c', make: () => knativePolicy(BASELINE_PARAMETERS.knative) },
];

/** Replicas the offered work needs at the target's share of a pod (400 of 480 tokens/s), over the last 30 s. */
function neededReplicas(seconds: Second[]): number[] {
  const share = targets.targetTokensPerSecondPerReplica / (targets.maxBatchSize * 1000 / Math.max(BENCH_POD.minStepMs, targets.maxBatchSize * BENCH_POD.tokenMs));
  return seconds.map((_, i) => {
    const window = seconds.slice(Math.max(0, i - 29), i + 1);
    return Math.ceil(window.reduce((a, s) => a + s.demandPodSeconds, 0) / window.length / share);
  });
}

function chart(t: Trace, runs: Array<{ name: string; color: string; seconds: Second[] }>): string {
  const [w, h, left, right, top, bottom] = [960, 500, 50, 20, 30, 170];
  const maxY = targets.maxReplicas + 1;
  const x = (s: number) => left + (s / t.durationSeconds) * (w - left - right);
  const y = (r: number) => top + (1 - Math.min(r, maxY) / maxY) * (h - top - bottom);
  // A staircase: a point only where the value changes.
  const steps = (values: number[]) => {
    const d = [`M${x(0).toFixed(1)},${y(values[0]!).toFixed(1)}`];
    values.forEach((v, i) => { if (i > 0 && v !== values[i - 1]) d.push(`H${x(i).toFixed(1)} V${y(v).toFixed(1)}`); });
    return `${d.join(' ')} H${x(values.length).toFixed(1)}`;
  };
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">`,
    `<rect width="${w}" height="${h}" fill="white"/>`,
    `<text x="${left}" y="18" font-size="14">Replicas under the '${t.name}' trace, per policy</text>`,
  ];
  for (let r = 0; r <= maxY; r += 2) parts.push(`<line x1="${left}" x2="${w - right}" y1="${y(r)}" y2="${y(r)}" stroke="#eee"/><text x="${left - 8}" y="${y(r) + 4}" text-anchor="end">${r}</text>`);
  for (let s = 0; s <= t.durationSeconds; s += 300) parts.push(`<text x="${x(s)}" y="${h - bottom + 16}" text-anchor="middle">${s} s</text>`);
  parts.push(`<path d="${steps(neededReplicas(runs[0]!.seconds))} L${x(t.durationSeconds)},${y(0)} L${x(0)},${y(0)} Z" fill="#ddd" stroke="none"/>`);
  runs.forEach((run, i) => {
    parts.push(`<path d="${steps(run.seconds.map((s) => s.replicas))}" fill="none" stroke="${run.color}" stroke-width="2" opacity="0.85"/>`);
    const rowY = h - bottom + 30 + i * 16;
    parts.push(`<text x="${left - 8}" y="${rowY + 9}" text-anchor="end" fill="${run.color}">SLO</text>`);
    // One bar per run of consecutive seconds over the SLO.
    const over = run.seconds.map((s) => s.ttftSeconds > targets.ttftP95TargetMs / 1000);
    over.forEach((o, i) => {
      if (!o || over[i - 1]) return;
      let end = i;
      while (over[end + 1]) end++;
      parts.push(`<rect x="${x(i).toFixed(1)}" y="${rowY}" width="${Math.max(1, x(end + 1) - x(i)).toFixed(1)}" height="10" fill="${run.color}"/>`);
    });
  });
  const legend = [['#ddd', 'replicas the offered work needs at 400 of 480 tokens/s per pod (30 s mean)'], ...runs.map((r) => [r.color, `${r.name}; bars: seconds with TTFT over 0.8 s`])];
  legend.forEach(([color, text], i) => parts.push(`<rect x="${left}" y="${h - bottom + 96 + i * 14}" width="12" height="10" fill="${color}"/><text x="${left + 18}" y="${h - bottom + 105 + i * 14}">${text}</text>`));
  parts.push('</svg>');
  return parts.join('\n');
}

type Summary = ReturnType<typeof summary> & { policy: string };

/** Per baseline: does ours spend fewer seconds over the SLO at no more than 105% of its replica-seconds. */
function verdicts(ours: Summary, policies: Summary[]) {
  return policies.filter((p) => !p.policy.startsWith('npuserve')).map((b) => {
    const replicaSecondsRatio = Number((ours.replicaSeconds / b.replicaSeconds).toFixed(3));
    return { policy: ours.policy, baseline: b.policy, fewerSloSeconds: ours.sloViolationSeconds < b.sloViolationSeconds, replicaSecondsRatio, wins: ours.sloViolationSeconds < b.sloViolationSeconds && replicaSecondsRatio <= 1.05 };
  });
}

const COMMAND: CommandSpec = {
  name: 'npm run bench:autoscale --',
  summary: "Replays named request traces through the autoscaling simulator with npuserve's policy and the HPA, KubeAI and Knative baselines; prints SLO-violation seconds, replica-seconds and scale events per trace and policy.",
  flags: [
    { name: 'out', value: 'DIR', default: 'bench-results', description: 'folder of autoscale-TRACE.svg and autoscale.json' },
    { name: 'trace', value: 'NAME', description: `one trace only (${TRACE_SPECS.map((t) => t.name).join(', ')})` },
    { name: 'json', description: 'print the results as JSON instead of a table' },
  ],
};

function main(f: FlagValues): void {
  const out = stringFlag(f, 'out')!;
  const only = stringFlag(f, 'trace');
  const names = only ? [trace(only).name] : TRACE_SPECS.map((t) => t.name);
  mkdirSync(out, { recursive: true });
  const results = [];
  for (const name of names) {
    const t = trace(name);
    const runs = POLICIES.map((p) => ({ ...p, seconds: runTrace(t, p.make()) }));
    writeFileSync(join(out, `autoscale-${name}.svg`), chart(t, runs));
    const requests = t.requests.reduce((a, r) => a + r.length, 0);
    const policies = runs.map((r) => ({ policy: r.key, ...summary(r.seconds, targets.ttftP95TargetMs / 1000) }));
    const ours = policies.filter((p) => p.policy.startsWith('npuserve'));
    results.push({ trace: name, description: t.description, seed: t.seed, requests, policies, verdicts: ours.flatMap((o) => verdicts(o, policies)) });
  }
  const report = { targets, pod: BENCH_POD, scrapeIntervalSeconds: BENCH_SCRAPE_INTERVAL_SECONDS, baselines: BASELINE_PARAMETERS, results };
  writeFileSync(join(out, 'autoscale.json'), JSON.stringify(report, null, 2));
  if (f.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    console.log('trace          policy             SLO-violation s  replica-seconds  max replicas  scale events  vs hpa / kubeai / knative (replica-seconds ratio, win)');
    for (const r of results) {
      for (const p of r.policies) {
        const vs = r.verdicts.filter((v) => v.policy === p.policy).map((v) => `${v.replicaSecondsRatio.toFixed(2)} ${v.wins ? 'win' : v.fewerSloSeconds ? 'cost' : 'slo'}`).join(' / ');
        console.log(`${r.trace.padEnd(15)}${p.policy.padEnd(17)}${String(p.sloViolationSeconds).padStart(17)}${String(p.replicaSeconds).padStart(17)}${String(p.maxReplicas).padStart(14)}${String(p.scaleEvents).padStart(14)}  ${vs}`);
      }
    }
  }
  console.error(`wrote ${names.map((n) => `autoscale-${n}.svg`).join(', ')} and autoscale.json in ${out}`);
}

void runScript(COMMAND, main);
