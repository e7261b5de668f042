// The demo after scripts/demo.sh has built everything: starts (or reuses) its own local cluster
// (.cluster/demo/, which test runs never use, so `npm test` and the demo leave each other alone), installs
// the Helm chart so the operator and the gateway run as pods, serves a real model (examples/smollm2.yaml:
// SmolLM2-135M-Instruct, fetched once from PyPI), asks it one chat completion through its Service and
// one through the gateway, and prints how to reach, watch and stop it. Safe to run again.
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { isRunning, readState, up, type ClusterState } from '../test/cluster/cluster.js';
import { KubeApi, type KubeObject } from '../test/cluster/kube.js';
import { demoClusterName, namedStateFile } from '../test/cluster/paths.js';
import { waitingFor } from '../test/cluster/progress.js';
import { SMOLLM2_GGUF, smolLM2Gguf } from './smollm2.js';

const repoRoot = join(import.meta.dirname, '..');
const namespace = 'npuserve-demo';
const release = 'npuserve';
const modelName = 'smollm2';
const question = 'What is the capital of France?';
const readyTimeoutMs = 300_000;
const demoStateFile = namedStateFile(demoClusterName);
const started = Date.now();

const seconds = () => `${((Date.now() - started) / 1000).toFixed(1).padStart(5)} s`;
const step = (what: string) => console.log(`\n\x1b[1m==> ${what}\x1b[0m`);

async function run(state: ClusterState, bin: 'kubectl' | 'helm', ...args: string[]): Promise<string> {
  const { stdout } = await promisify(execFile)(join(state.binDir, bin), ['--kubeconfig', state.kubeconfig, ...args], { maxBuffer: 64 * 1024 * 1024, timeout: 300_000 });
  return stdout;
}

async function cluster(): Promise<ClusterState> {
  const existing = readState(demoStateFile);
  if (isRunning(existing)) {
    console.log(`reusing the demo's running local cluster (${existing!.dir}, pod subnet ${existing!.podSubnet})`);
    return existing!;
  }
  return up({ npuNodes: 4, cpuNodes: 2, realNodes: 1, name: demoClusterName, stateFile: demoStateFile, log: (line) => console.log(`  ${line}`) });
}

async function installChart(state: ClusterState): Promise<void> {
  // The operator watches only the demo namespace, so other work on the same cluster is left alone.
  const out = await waitingFor('helm --wait: the operator and gateway pods ready (at most 180 s)', run(state, 'helm', 'upgrade', '--install', release, join(repoRoot, 'charts', 'npuserve'),
    '--namespace', namespace, '--create-namespace',
    '--set', `operator.watchNamespaces={${namespace}}`,
    // The image built from this checkout and imported into the real node's containerd (no registry).
    '--set', `image.repository=${state.image!.replace(/:[^:/]+$/, '')}`,
    '--set', `image.tag=${state.image!.replace(/^.*:/, '')}`,
    '--set', 'image.pullPolicy=Never',
    '--wait', '--timeout', '180s'));
  console.log(out.split('\n').filter((l) => /^(NAME|STATUS|REVISION):/.test(l)).join('  '));
  console.log((await run(state, 'kubectl', 'get', 'pods', '-n', namespace, '-l', 'app.kubernetes.io/name in (npuserve-operator,npuserve-gateway)', '-o', 'wide')).trimEnd());
}

function placeModel(state: ClusterState): void {
  // The example's source is file:///models/smollm2: a hostPath on the real NPU node, whose /models is its own folder.
  const cached = smolLM2Gguf((line) => console.log(`  ${line}`));
  const dir = join(state.dir, 'nodes', state.nodes.real![0], 'root', 'models', 'smollm2');
  const target = join(dir, SMOLLM2_GGUF);
  if (existsSync(target) && statSync(target).size === statSync(cached).size) {
    console.log(`SmolLM2-135M-Instruct already at ${dir} (hostPath /models/smollm2)`);
    return;
  }
  mkdirSync(dir, { recursive: true });
  copyFileSync(cached, target);
  console.log(`copied ${SMOLLM2_GGUF} to ${dir} (hostPath /models/smollm2)`);
}

async function applyModel(state: ClusterState): Promise<void> {
  const claim = join(repoRoot, 'scripts', 'demo-artifacts-pvc.yaml');
  console.log((await run(state, 'kubectl', 'apply', '-n', namespace, '-f', claim, '-f', join(repoRoot, 'examples', 'smollm2.yaml'))).trimEnd());
}

interface Model extends KubeObject {
  spec: { precision: string };
  status?: { phase?: string; observedGeneration?: number; currentRevision?: { precision: string }; readyReplicas?: number; endpoint?: string; conditions?: Array<{ type: string; status: string; reason?: string; message?: string }> };
}

async function waitReady(client: KubeApi): Promise<Model> {
  const deadline = Date.now() + readyTimeoutMs;
  let last = '';
  let printedAt = 0;
  for (;;) {
    const m = await client.get<Model>(`/apis/npuserve.io/v1alpha1/namespaces/${namespace}/npumodels/${modelName}`).catch(() => undefined);
    const s = m?.status;
    // Pending says why in Converted (conversion pod) or Available (serving pod); otherwise Progressing says what runs.
    const why = s?.phase === 'Pending' ? s.conditions?.find((c) => (c.type === 'Converted' || c.type === 'Available') && c.status === 'False' && /Unschedulable|pending/.test(c.message ?? '')) : undefined;
    const progressing = why ?? s?.conditions?.find((c) => c.type === 'Progressing');
    const line = `phase ${s?.phase ?? '(none yet)'}${progressing?.message ? ` - ${progressing.message}` : ''}`;
    // A new state prints at once; an unchanged one every 15 s, so a long conversion is not silent.
    if (line !== last || Date.now() - printedAt >= 15_000) {
      console.log(`  [${seconds()}] ${line !== last ? line : `still ${line}`}`);
      printedAt = Date.now();
    }
    last = line;
    // Ready with the example's precision: a model changed by hand earlier must roll back first.
    if (m && s?.phase === 'Ready' && s.observedGeneration === m.metadata.generation && s.currentRevision?.precision === m.spec.precision) return m;
    if (s?.phase === 'Failed') throw new Error(`${modelName} failed: ${JSON.stringify(s.conditions, null, 2)}`);
    if (Date.now() > deadline) throw new Error(`${modelName} not Ready after ${readyTimeoutMs / 1000} s; see kubectl describe npum ${modelName} -n ${namespace}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** The model's Service address: its cluster IP, which this machine routes to the real node's kube-proxy. */
async function serviceUrl(client: KubeApi): Promise<string> {
  const svc = await client.get<KubeObject & { spec: { clusterIP: string; ports: Array<{ port: number }> } }>(`/api/v1/namespaces/${namespace}/services/${modelName}`);
  return `http://${svc.spec.clusterIP}:${svc.spec.ports[0].port}`;
}

/** The chart's gateway Service: one endpoint for every model of the namespace. */
async function gatewayUrl(client: KubeApi): Promise<string> {
  const list = await client.list<KubeObject & { spec: { clusterIP: string; ports: Array<{ port: number }> } }>(`/api/v1/namespaces/${namespace}/services`, { labelSelector: 'app.kubernetes.io/name=npuserve-gateway' });
  const svc = list.items[0];
  if (!svc) throw new Error(`no gateway Service in ${namespace} (the chart's gateway.enabled)`);
  return `http://${svc.spec.clusterIP}:${svc.spec.ports[0].port}`;
}

async function chat(client: KubeApi, via: 'service' | 'gateway' = 'service'): Promise<void> {
  const url = via === 'service' ? await serviceUrl(client) : await gatewayUrl(client);
  if (via === 'gateway') {
    const models = (await (await fetch(`${url}/v1/models`, { signal: AbortSignal.timeout(10_000) })).json()) as { data: Array<{ id: string }> };
    console.log(`GET ${url}/v1/models (the gateway): ${models.data.map((m) => m.id).join(', ')}`);
  }
  console.log(`POST ${url}/v1/chat/completions (${via === 'service' ? `Service ${namespace}/${modelName}, through kube-proxy on the node` : 'the gateway: one endpoint for every model, routed by `model` and prompt prefix'})`);
  console.log(`  user: ${question}`);
  const res = await waitingFor('the chat completion (at most 32 tokens, 60 s timeout)', fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: modelName, messages: [{ role: 'user', content: question }], max_tokens: 32, temperature: 0 }),
    signal: AbortSignal.timeout(60_000),
  }), { log: (line) => console.log(`  ${line}`) });
  const body = (await res.json()) as { choices?: Array<{ message: { content: string } }>; usage?: { completion_tokens: number }; error?: { message: string } };
  if (res.status !== 200) throw new Error(`chat completion: HTTP ${res.status} ${body.error?.message ?? ''}`);
  const answer = body.choices![0].message.content;
  console.log(`  assistant: ${JSON.stringify(answer)}`);
  console.log(`  (${body.usage?.completion_tokens} tokens, greedy)`);
  if (!/Paris/.test(answer)) throw new Error(`the answer does not name Paris: ${JSON.stringify(answer)}`);
}

async function howTo(state: ClusterState, client: KubeApi): Promise<void> {
  step('next');
  console.log(`Reach it through the gateway, one endpoint for every model (this machine routes the cluster's Service range to the real node, where kube-proxy runs):
  curl -s ${await gatewayUrl(client)}/v1/chat/completions -H 'content-type: application/json' \\
    -d '{"model":"${modelName}","messages":[{"role":"user","content":"Name three planets."}],"max_tokens":48}'
or through the model's own Service: ${await serviceUrl(client)}

Watch it (it now serves INT8; back to FP16: kubectl patch npum ${modelName} -n ${namespace} --type merge -p '{"spec":{"precision":"FP16"}}'):
  export KUBECONFIG=${state.kubeconfig} PATH=${state.binDir}:$PATH
  kubectl get npum -n ${namespace} -w
  kubectl logs -n ${namespace} deploy/${modelName}       # kubectl exec works too: the pods run on a real kubelet

Stop the demo's cluster (tests run on a cluster of their own, so it may keep running meanwhile):
  npm run demo:down`);
}

async function main(): Promise<void> {
  step('local cluster');
  const state = await cluster();
  const client = KubeApi.fromFile(state.kubeconfig);
  try {
    step(`helm chart charts/npuserve -> namespace ${namespace} (the operator and the gateway run as pods)`);
    await installChart(state);
    step('SmolLM2-135M-Instruct on the real NPU node');
    placeModel(state);
    step(`artifact claim and examples/smollm2.yaml`);
    await applyModel(state);
    step(`waiting for ${modelName} to be Ready (conversion Job, then a serving pod)`);
    const m = await waitReady(client);
    console.log(`  ${modelName} is Ready: ${m.status?.readyReplicas} replica(s), endpoint ${m.status?.endpoint}`);
    console.log((await run(state, 'kubectl', 'get', 'npum', '-n', namespace)).trimEnd());
    console.log((await run(state, 'kubectl', 'get', 'pods', '-n', namespace, '-o', 'wide')).trimEnd());
    console.log((await run(state, 'kubectl', 'get', 'nodes', '-o', 'wide', '-l', 'npuserve.io/real-node=true')).trimEnd());
    step('a chat completion through the Service');
    await chat(client);
    step('the same through the gateway');
    await chat(client, 'gateway');
    step('precision FP16 -> INT8: a new revision converts (accuracy gate 0.99) and rolls out');
    console.log((await run(state, 'kubectl', 'patch', 'npum', modelName, '-n', namespace, '--type', 'merge', '-p', '{"spec":{"precision":"INT8"}}')).trimEnd());
    const int8 = await waitReady(client);
    const gate = int8.status?.conditions?.find((c) => c.type === 'Converted')?.message;
    console.log(`  ${modelName} is Ready at INT8${gate ? `: ${gate}` : ''}`);
    await chat(client, 'gateway');
    await howTo(state, client);
    console.log(`\ndemo finished in ${seconds().trim()}`);
  } finally {
  }
}

main().catch((e) => {
  console.error(`\ndemo failed: ${(e as Error).message}`);
  process.exit(1);
});
