// The local cluster's lifecycle: `up` starts the control plane, KWOK, the PVC provisioner and the
// real nodes, registers the simulated nodes and records everything in the state file; `down` stops
// what the state file lists and removes the temp dir. Used by the CLI (npm run cluster:up/down),
// the vitest global setup and the demo.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import { loopbackNetwork, startControlPlane } from './control-plane.js';
import { nodeImages } from './images.js';
import { KubeApi } from './kube.js';
import { createSimulatedNodes, startKwok, waitNodeAllocatable, waitNodesReady } from './kwok-nodes.js';
import { removePodNetwork, reservePodSubnet } from './pod-subnet.js';
import { binDir, cacheDir, checkBinaries, clusterSourceDir, kwokStagesFile, readVersions, repoRoot, stateFile } from './paths.js';
import { waitingFor } from './progress.js';
import { isAlive, startProcess, stopProcessGroup, tail, type ManagedProcess } from './processes.js';
import { apiServiceIp, realNodeLabel, createNodeMounts, createNodeNetwork, existingNodes, killNodeLeftovers, realNodeAddresses, realNodeName, removeNode, serviceCidr, startRealNode } from './real-nodes.js';

export interface ClusterState {
  dir: string;
  kubeconfig: string;
  server: string;
  binDir: string;
  kubernetesVersion: string;
  /** Names the cluster's links and namespaces (claiming bridge nps<ID>br, node namespaces npn-<ID>-K). */
  networkId: string;
  /** Set for named clusters (the demo's is 'demo'); test runs refuse to reuse one. */
  name?: string;
  /** 10.N.0.0/16, the lowest free one at start (pod-subnet.ts), so clusters can run side by side. */
  podSubnet: string;
  ports: { etcd: number; etcdPeer: number; apiserver: number };
  processes: ManagedProcess[];
  /** real: nodes with containerd, kubelet and kube-proxy (real-nodes.ts); npu, cpu: simulated (KWOK). */
  nodes: { npu: string[]; cpu: string[]; real: string[] };
  /** The image real nodes run npuserve pods from (imported into their containerd). */
  image?: string;
  startedAt: string;
}

export interface UpOptions {
  npuNodes: number;
  cpuNodes: number;
  /** Nodes with containerd, a kubelet and kube-proxy running the npuserve image (real-nodes.ts). */
  realNodes: number;
  log?: (line: string) => void;
  /** Where this cluster's state is kept (default: stateFile()); one file per cluster. */
  stateFile?: string;
  /** Recorded in the state (ClusterState.name). */
  name?: string;
}

export const defaultUpOptions: UpOptions = { npuNodes: 4, cpuNodes: 2, realNodes: 1 };

export function readState(file = stateFile()): ClusterState | undefined {
  if (!fs.existsSync(file)) return undefined;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as ClusterState;
}

function writeState(state: ClusterState, file = stateFile()): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(state, null, 2) + '\n');
  fs.renameSync(`${file}.tmp`, file);
}

/** True when the state file names a cluster whose API server process still runs. */
export function isRunning(state: ClusterState | undefined): boolean {
  const apiserver = state?.processes.find((p) => p.name === 'kube-apiserver');
  return apiserver !== undefined && isAlive(apiserver.pid);
}

export async function up(options: UpOptions = defaultUpOptions): Promise<ClusterState> {
  const log = options.log ?? ((line: string) => console.log(line));
  const file = options.stateFile ?? stateFile();
  const existing = readState(file);
  if (existing && isRunning(existing)) {
    throw new Error(`a local cluster is already running (API server ${existing.server}, state ${file}); run 'npm run cluster:down' first`);
  }
  if (existing) {
    log(`removing state of a cluster that is no longer running (${existing.dir})`);
    await down({ quiet: true, stateFile: file });
  }
  const bin = binDir();
  ensureBinaries(bin, log);
  const realNodes = options.realNodes;
  if (realNodes > 0 && process.getuid?.() !== 0) {
    throw new Error('real nodes run containerd and a kubelet in namespaces of their own, which needs root: run as root, or pass --real-nodes 0 (control plane and simulated nodes only)');
  }
  const images = realNodes > 0 ? nodeImages(log) : undefined;
  const versions = readVersions();
  const started = Date.now();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npuserve-cluster-'));
  const networkId = crypto.randomBytes(3).toString('hex');
  const state: ClusterState = {
    dir,
    kubeconfig: path.join(dir, 'kubeconfig'),
    server: '',
    binDir: bin,
    kubernetesVersion: versions.K8S_VERSION,
    networkId,
    ...(options.name ? { name: options.name } : {}),
    podSubnet: '',
    ports: { etcd: 0, etcdPeer: 0, apiserver: 0 },
    processes: [],
    nodes: { npu: [], cpu: [], real: [] },
    ...(images ? { image: images.npuserve } : {}),
    startedAt: new Date().toISOString(),
  };
  const record = (p: ManagedProcess) => {
    state.processes.push(p);
    writeState(state, file);
  };
  writeState(state, file);
  try {
    const subnet = reservePodSubnet(networkId, realNodes > 0);
    state.podSubnet = subnet.cidr;
    writeState(state, file);
    // Real nodes' namespaces come first: the API server listens on this machine's end of node 0's link.
    for (let k = 0; k < realNodes; k++) {
      createNodeNetwork(networkId, subnet.octet, k);
      createNodeMounts(networkId, k, path.join(dir, 'nodes', realNodeName(k), 'root'));
    }
    const net = realNodes > 0
      ? { bindAddress: realNodeAddresses(subnet.octet, 0).hostIp, serviceCidr: serviceCidr(subnet.octet), serviceIp: apiServiceIp(subnet.octet) }
      : loopbackNetwork;
    log(`starting control plane (Kubernetes ${versions.K8S_VERSION}) in ${dir}, pod subnet ${subnet.cidr}`);
    const cp = await waitingFor('etcd, kube-apiserver, kube-controller-manager and kube-scheduler', startControlPlane(dir, bin, subnet.gateway, record, net), { log });
    Object.assign(state, { server: cp.server, kubeconfig: cp.kubeconfig, ports: cp.ports });
    writeState(state, file);
    execFileSync(path.join(bin, 'kubectl'), ['--kubeconfig', cp.kubeconfig, 'get', '--raw', '/readyz'], { stdio: 'ignore' });
    log(`control plane ready at ${cp.server}`);

    record(await startKwok(bin, dir, cp.kubeconfig, kwokStagesFile(versions), subnet.simulatedPodCidr));
    record(startProvisioner(dir, cp.kubeconfig));
    for (let k = 0; k < realNodes; k++) {
      const node = await waitingFor(
        `containerd, kubelet and kube-proxy of ${realNodeName(k)} (importing the images into containerd)`,
        startRealNode({
          dir, bin, networkId, octet: subnet.octet, k, server: cp.server, pki: cp.pki, kubeconfig: cp.kubeconfig,
          imageArchives: [images!.archive], sandboxImage: images!.sandbox,
          ...(options.name ? { containerdRoot: path.join(cacheDir(), 'nodes', `${options.name}-${realNodeName(k)}`, 'containerd') } : {}),
          labels: { accelerator: 'huawei-Ascend910', [realNodeLabel]: 'true' },
        }, record),
        { log },
      );
      state.nodes.real.push(node.name);
      writeState(state, file);
    }
    const client = KubeApi.fromFile(cp.kubeconfig);
    try {
      state.nodes.npu = await createSimulatedNodes(client, 'kwok-npu', 0, options.npuNodes, true);
      state.nodes.cpu = await createSimulatedNodes(client, 'kwok-cpu', 0, options.cpuNodes, false);
      writeState(state, file);
      const all = [...state.nodes.npu, ...state.nodes.cpu, ...state.nodes.real];
      await waitingFor(`${all.length} nodes to be Ready`, waitNodesReady(client, all, 120_000 + 100 * all.length), { log });
      // The NPU is simulated on real nodes too: no device plugin, the capacity is advertised on the
      // Node's status (the documented way to advertise an extended resource), and the kubelet keeps it.
      // Allocatable is patched too: the kubelet would derive it only at its next status update.
      for (const name of state.nodes.real) {
        const npus = { 'huawei.com/Ascend910': '8' };
        await client.patch(`/api/v1/nodes/${name}/status`, { status: { capacity: npus, allocatable: npus } });
        await waitingFor(`${name} to advertise 8 NPUs`, waitNodeAllocatable(client, name, 'huawei.com/Ascend910', '8', 30_000), { log });
      }
    } finally {
    }
    log(
      `cluster up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${state.nodes.npu.length} simulated NPU, ` +
        `${state.nodes.cpu.length} simulated CPU, ${state.nodes.real.length} real NPU node(s) Ready`,
    );
    return state;
  } catch (err) {
    const kubelet = state.processes.find((p) => p.name.endsWith('-kubelet'));
    const kubeletLog = kubelet ? `\nkubelet log:\n${tail(kubelet.log, 20)}` : '';
    await down({ quiet: true, keepDir: true, stateFile: file });
    throw new Error(`${(err as Error).message}${kubeletLog}\n(logs kept in ${dir}/logs)`);
  }
}

/** Builds the upstream binaries on first use (minutes; `test/cluster/build` prints its progress). */
function ensureBinaries(bin: string, log: (line: string) => void): void {
  try {
    checkBinaries(bin);
  } catch {
    log(`cluster binaries not built yet: running test/cluster/build (about 10 minutes on 2 cores)`);
    execFileSync('bash', [path.join(clusterSourceDir, 'build')], { stdio: ['ignore', 'ignore', 'inherit'] });
    checkBinaries(bin);
  }
}

/** The PVC provisioner (provisioner.ts), a process of its own like the control plane's. */
function startProvisioner(dir: string, kubeconfig: string): ManagedProcess {
  const p = startProcess(
    'provisioner',
    process.execPath,
    ['--import', 'tsx', path.join(clusterSourceDir, 'provisioner.ts'), `--kubeconfig=${kubeconfig}`, `--dir=${dir}`],
    path.join(dir, 'logs', 'provisioner.log'),
    process.env,
    repoRoot,
  );
  p.stopWatching();
  return { name: p.name, pid: p.pid, log: p.log };
}

export async function down(options: { quiet?: boolean; keepDir?: boolean; stateFile?: string } = {}): Promise<boolean> {
  const file = options.stateFile ?? stateFile();
  const state = readState(file);
  if (!state) {
    if (!options.quiet) console.log(`no local cluster is running (no state file ${file})`);
    return false;
  }
  // Reverse start order: kube-proxy, the kubelet and containerd first, etcd last.
  for (const p of [...state.processes].reverse()) {
    if (!isAlive(p.pid)) continue;
    if (!options.quiet) console.log(`stopping ${p.name} (pid ${p.pid})`);
    await stopProcessGroup(p.pid, 10_000);
  }
  if (state.networkId) {
    const octet = Number(state.podSubnet.split('.')[1]);
    const real = new Set([...state.nodes.real.map((_, k) => k), ...existingNodes(state.networkId)]);
    for (const k of real) {
      killNodeLeftovers(state.networkId, k, path.join(state.dir, 'nodes', realNodeName(k)));
      removeNode(state.networkId, octet, k);
    }
    removePodNetwork(state.networkId);
  }
  if (!options.keepDir) fs.rmSync(state.dir, { recursive: true, force: true });
  fs.rmSync(file, { force: true });
  if (!options.quiet) console.log(`local cluster stopped${options.keepDir ? '' : `, ${state.dir} removed`}`);
  return true;
}

/** Adds simulated NPU nodes to a running cluster; returns the seconds until all are Ready. */
/** The state of the running cluster, or an error saying none runs. */
export function runningState(): ClusterState {
  const state = readState();
  if (!state || !isRunning(state)) throw new Error("no local cluster is running: start one with 'npm run cluster:up'");
  return state;
}

export async function addNpuNodes(count: number): Promise<{ names: string[]; seconds: number }> {
  const state = runningState();
  const client = KubeApi.fromFile(state.kubeconfig);
  try {
    const from = state.nodes.npu.length;
    const started = Date.now();
    const names = await createSimulatedNodes(client, 'kwok-npu', from, from + count, true);
    await waitNodesReady(client, names, 120_000 + 200 * count);
    state.nodes.npu.push(...names);
    writeState(state);
    return { names, seconds: (Date.now() - started) / 1000 };
  } finally {
  }
}
