// `npm run bench:operator`: 200 NPUModels (pre-converted .npu sources, serving pods on simulated
// KWOK NPU nodes) on 1000 simulated NPU nodes; reports apply-to-Ready p50/p95, reconciles per
// second and the operator's peak memory. Runs against the local cluster (started if none runs).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

import { type CommandSpec, intFlag, scriptFlags, stringFlag } from '../../common/flags.js';
import { addNpuNodes, defaultUpOptions, down, isRunning, readState, up } from '../cluster/cluster.js';
import { KubeApi } from '../cluster/kube.js';
import { kwokTaint } from '../cluster/kwok-nodes.js';

const repo = join(import.meta.dirname, '..', '..');
const COMMAND: CommandSpec = {
  name: 'npm run bench:operator --',
  summary: "NPUModels with pre-converted sources on simulated NPU nodes of the local cluster: apply-to-Ready p50/p95, reconciles per second, the operator's peak memory.",
  flags: [
    { name: 'models', value: 'N', default: '200', description: 'NPUModels applied' },
    { name: 'nodes', value: 'N', default: '1000', description: 'simulated NPU nodes' },
    { name: 'workers', value: 'N', default: '4', description: "the operator's --workers" },
  ],
};
const flags = scriptFlags(COMMAND);
const models = intFlag(flags, 'models', 1)!;
const nodes = intFlag(flags, 'nodes', 1)!;

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function main(): Promise<void> {
  let started = false;
  let state = readState();
  if (!state || !isRunning(state)) {
    console.log('starting the local cluster ...');
    state = await up({ ...defaultUpOptions, realNodes: 0 });
    started = true;
  }
  const client = KubeApi.fromFile(state.kubeconfig);
  const kubectl = join(state.binDir, 'kubectl');
  const missing = nodes - state.nodes.npu.length;
  if (missing > 0) {
    const added = await addNpuNodes(missing);
    console.log(`registered ${missing} simulated NPU nodes in ${added.seconds.toFixed(1)} s`);
  }
  await new Promise<void>((resolve, reject) => spawn(kubectl, ['--kubeconfig', state!.kubeconfig, 'apply', '-f', join(repo, 'crds', 'npuserve.io_npumodels.yaml')], { stdio: 'ignore' }).on('exit', (c) => (c === 0 ? resolve() : reject(new Error('CRD apply failed')))));
  const ns = `bench-op-${Date.now().toString(36)}`;
  await client.create('/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns } });
  const metricsPort = await freePort();
  const op = spawn(process.execPath, [join(repo, 'bin', 'npuserve.js'), 'operator', '--kubeconfig', state.kubeconfig, '--namespaces', ns, '--leader-elect', 'false', '--metrics-port', String(metricsPort), '--workers', stringFlag(flags, 'workers')!, '--image', 'npuserve:bench'], { stdio: ['ignore', 'ignore', 'inherit'] });
  let peakRssKb = 0;
  const rssTimer = setInterval(() => {
    try {
      const m = /VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${op.pid}/status`, 'utf8'));
      if (m) peakRssKb = Math.max(peakRssKb, Number(m[1]));
    } catch {
      // exited
    }
  }, 500);
  try {
    const t0 = Date.now();
    const created = new Map<string, number>();
    for (let i = 0; i < models; i++) {
      const name = `m${String(i).padStart(4, '0')}`;
      await client.create(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels`, {
        apiVersion: 'npuserve.io/v1alpha1',
        kind: 'NPUModel',
        metadata: { name },
        spec: {
          source: { uri: 'file:///models/bench.npu', format: 'npu' },
          precision: 'INT8',
          placement: { nodeSelector: { accelerator: 'huawei-Ascend910', type: 'kwok' }, tolerations: [{ key: kwokTaint.key, operator: 'Exists', effect: 'NoSchedule' }] },
        },
      });
      created.set(name, Date.now());
    }
    console.log(`applied ${models} NPUModels in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    const readyAt = new Map<string, number>();
    const deadline = Date.now() + 15 * 60_000;
    while (readyAt.size < models && Date.now() < deadline) {
      const list = await client.list<{ metadata: { name: string }; status?: { phase?: string } }>(`/apis/npuserve.io/v1alpha1/namespaces/${ns}/npumodels`);
      for (const m of list.items) if (m.status?.phase === 'Ready' && !readyAt.has(m.metadata.name)) readyAt.set(m.metadata.name, Date.now());
      process.stderr.write(`\r${readyAt.size}/${models} Ready`);
      await new Promise((r) => setTimeout(r, 1000));
    }
    process.stderr.write('\n');
    const elapsed = (Date.now() - t0) / 1000;
    const latencies = [...readyAt].map(([name, t]) => (t - created.get(name)!) / 1000);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const reconciles = [...metrics.matchAll(/^npuserve_operator_reconcile_total\{result="(\w+)"\} (\d+)/gm)].reduce((s, m) => s + Number(m[2]), 0);
    const result = {
      models,
      nodes: Math.max(nodes, state.nodes.npu.length),
      ready: readyAt.size,
      applyToReadySeconds: { p50: pct(latencies, 50), p95: pct(latencies, 95), max: Math.max(...latencies) },
      allReadySeconds: elapsed,
      reconciles,
      reconcilesPerSecond: reconciles / elapsed,
      operatorPeakRssMiB: peakRssKb / 1024,
    };
    console.log(JSON.stringify(result, null, 2));
    if (readyAt.size < models) process.exitCode = 1;
  } finally {
    clearInterval(rssTimer);
    op.kill('SIGTERM');
    await client.delete(`/api/v1/namespaces/${ns}`).catch(() => undefined);
    if (started) await down({ quiet: true });
  }
}

await main();
