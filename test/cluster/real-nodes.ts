// Real nodes for the local cluster: upstream containerd (Debian's, with runc) and the pinned kubelet
// and kube-proxy, one set per node, each node in a network namespace and a mount namespace of its
// own, the way a kind node is a container:
//
// - network: namespace npn-<id>-<K> joined to this machine by a veth pair (10.N.127.(4K+1) here,
//   10.N.127.(4K+2) in the node: its InternalIP); the node's pods get 10.N.K.0/24 on a CNI bridge
//   inside it (containernetworking-plugins' bridge + host-local). This machine routes each node's
//   pod range and the cluster's Service range (10.N.64.0/19) to the node, so the test process and an
//   operator running here reach pods and Services; kube-proxy's iptables rules stay inside the node.
// - mounts: a mount namespace (slave of this machine's) in which the node's root folder
//   <dir>/nodes/<node>/root/models is bind-mounted on /models, so hostPath volumes under /models are
//   per cluster, and every mount the kubelet and containerd make (secrets, projected tokens, rootfs
//   overlays) stays inside the node and goes with it.
//
// The API server listens on 10.N.127.1 (this machine's end of node 0's link), the address the
// `kubernetes` Service's endpoint advertises to pods.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import type { Pki } from './certs.js';
import { startProcess, type ManagedProcess } from './processes.js';

export interface RealNodeAddresses {
  /** This machine's end of the node's link. */
  hostIp: string;
  /** The node's end of the link: its InternalIP. */
  nodeIp: string;
  /** The node's pods: 10.N.K.0/24. */
  podCidr: string;
  /** The CNI bridge in the node (the pods' gateway). */
  bridgeIp: string;
}

export const realNodeName = (k: number) => `real-npu-${k}`;
export const realNodeLabel = 'npuserve.io/real-node';
/** The node's own folder: <root>/models is its /models (hostPath volumes), in its mount namespace. */
export const nodeRootDir = (clusterDir: string, node: string) => path.join(clusterDir, 'nodes', node, 'root');

export function realNodeAddresses(octet: number, k: number): RealNodeAddresses {
  if (!Number.isInteger(k) || k < 0 || k > 63) throw new Error(`real node index ${k}: at most 64 real nodes (0..63)`);
  return { hostIp: `10.${octet}.127.${4 * k + 1}`, nodeIp: `10.${octet}.127.${4 * k + 2}`, podCidr: `10.${octet}.${k}.0/24`, bridgeIp: `10.${octet}.${k}.1` };
}

/** The cluster's Service range: routed from this machine to node 0, where kube-proxy translates it. */
export const serviceCidr = (octet: number) => `10.${octet}.64.0/19`;
/** The `kubernetes` Service's cluster IP (the range's first address). */
export const apiServiceIp = (octet: number) => `10.${octet}.64.1`;
/** The pods of every real node (kube-proxy's --cluster-cidr: traffic from elsewhere is masqueraded). */
export const realPodCidr = (octet: number) => `10.${octet}.0.0/18`;

export const nodeNetns = (networkId: string, k: number) => `npn-${networkId}-${k}`;
const hostLink = (networkId: string, k: number) => `n${networkId}n${k}`;
/** Where each node's mount namespace is pinned (a private bind mount, as `ip netns` does for /run/netns). */
const mountNsDir = '/run/npuserve-mnt';
export const nodeMountNs = (networkId: string, k: number) => path.join(mountNsDir, `${networkId}-node${k}`);

function run(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error(`real nodes need '${cmd}' (Debian: apt-get install iproute2 util-linux containerd runc containernetworking-plugins iptables conntrack)`);
    throw new Error(`${cmd} ${args.join(' ')}: ${e.stderr?.toString().trim() || e.message}`);
  }
}

/** The node's network namespace, its link to this machine, and this machine's routes to its pods (and, for node 0, to Services). */
export function createNodeNetwork(networkId: string, octet: number, k: number): RealNodeAddresses {
  const a = realNodeAddresses(octet, k);
  const ns = nodeNetns(networkId, k);
  const host = hostLink(networkId, k);
  run('ip', ['-batch', '-'], [
    `netns add ${ns}`,
    `link add ${host} type veth peer name ${host}x`,
    `link set ${host}x netns ${ns}`,
    `addr add ${a.hostIp}/30 dev ${host}`,
    `link set ${host} up`,
    `route add ${a.podCidr} via ${a.nodeIp}`,
    ...(k === 0 ? [`route add ${serviceCidr(octet)} via ${a.nodeIp}`] : []),
  ].join('\n') + '\n');
  run('ip', ['-n', ns, '-batch', '-'], [
    `link set ${host}x name eth0`,
    `addr add ${a.nodeIp}/30 dev eth0`,
    'link set eth0 up',
    'link set lo up',
    `route add default via ${a.hostIp}`,
  ].join('\n') + '\n');
  // Per network namespace: the node forwards between its pods' bridge and its link, and bridged
  // traffic passes iptables (kube-proxy's Service rules apply to pods talking to pods on the bridge).
  run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  // This machine forwards between the nodes' links (a pod on node 0 to a pod on node 1, a Service
  // endpoint on another node): per link, so the machine-wide net.ipv4.ip_forward stays as it is.
  run('sysctl', ['-q', '-w', `net.ipv4.conf.${host}.forwarding=1`]);
  return a;
}

/** The node's mount namespace: /models is the node's own folder. */
export function createNodeMounts(networkId: string, k: number, nodeRoot: string): string {
  fs.mkdirSync(mountNsDir, { recursive: true });
  const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  if (!mounts.split('\n').some((l) => l.split(' ')[4] === mountNsDir)) {
    run('mount', ['--bind', mountNsDir, mountNsDir]);
    run('mount', ['--make-private', mountNsDir]);
  }
  const nsFile = nodeMountNs(networkId, k);
  fs.writeFileSync(nsFile, '');
  const models = path.join(nodeRoot, 'models');
  fs.mkdirSync(models, { recursive: true });
  fs.chmodSync(models, 0o777);
  // /models must exist here to be a mount point there (an empty folder; nothing is mounted on it here).
  fs.mkdirSync('/models', { recursive: true });
  run('unshare', [`--mount=${nsFile}`, '--propagation', 'slave', 'mount', '--bind', models, '/models']);
  return nsFile;
}

/** Removes what createNodeNetwork and createNodeMounts made (the veth pair goes with the namespace). */
export function removeNode(networkId: string, octet: number, k: number): void {
  const quiet = (cmd: string, args: string[]) => {
    try {
      run(cmd, args);
    } catch {
      // already gone
    }
  };
  const a = realNodeAddresses(octet, k);
  quiet('ip', ['route', 'del', a.podCidr]);
  if (k === 0) quiet('ip', ['route', 'del', serviceCidr(octet)]);
  quiet('ip', ['netns', 'del', nodeNetns(networkId, k)]);
  quiet('ip', ['link', 'del', hostLink(networkId, k)]);
  const nsFile = nodeMountNs(networkId, k);
  quiet('umount', [nsFile]);
  fs.rmSync(nsFile, { force: true });
}

/** The node indexes whose namespaces exist (so `down` finds them without a state file entry). */
export function existingNodes(networkId: string): number[] {
  let list = '';
  try {
    list = run('ip', ['netns', 'list']);
  } catch {
    return [];
  }
  const prefix = `npn-${networkId}-`;
  return list.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(prefix)).map((n) => Number(n.slice(prefix.length)));
}

export interface RealNodeOptions {
  dir: string;
  bin: string;
  networkId: string;
  octet: number;
  k: number;
  server: string;
  pki: Pki;
  kubeconfig: string;
  /** Image archives to import into the node's containerd (podman save output). */
  imageArchives: string[];
  /**
   * containerd's root (images, unpacked layers): kept between runs of a named cluster (the demo's),
   * so a warm start imports and unpacks nothing; a throwaway cluster's lives in its temp dir.
   */
  containerdRoot?: string;
  sandboxImage: string;
  labels: Record<string, string>;
}

export interface RealNode {
  name: string;
  addresses: RealNodeAddresses;
  processes: ManagedProcess[];
  containerdSocket: string;
}

/** Runs COMMAND inside the node's network and mount namespaces. */
function inNode(o: RealNodeOptions, command: string, args: string[]): [string, string[]] {
  return ['nsenter', [`--net=/run/netns/${nodeNetns(o.networkId, o.k)}`, `--mount=${nodeMountNs(o.networkId, o.k)}`, '--', command, ...args]];
}

async function waitForFile(file: string, what: string, timeoutMs: number, log: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!fs.existsSync(file)) {
    if (Date.now() > deadline) throw new Error(`${what} did not start within ${timeoutMs / 1000} s; see ${log}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export async function startRealNode(o: RealNodeOptions, onStarted: (p: ManagedProcess) => void): Promise<RealNode> {
  // The state file and vitest's provide() take plain records, not the Started handles.
  const record = (p: ManagedProcess) => onStarted({ name: p.name, pid: p.pid, log: p.log });
  const name = realNodeName(o.k);
  const nodeDir = path.join(o.dir, 'nodes', name);
  const logs = path.join(o.dir, 'logs');
  fs.mkdirSync(logs, { recursive: true });
  const addresses = realNodeAddresses(o.octet, o.k);
  const cni = path.join(nodeDir, 'cni');
  fs.mkdirSync(cni, { recursive: true });
  fs.writeFileSync(
    path.join(cni, '10-npuserve.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'npuserve',
      plugins: [
        {
          type: 'bridge',
          bridge: 'cni0',
          isGateway: true,
          ipMasq: false,
          hairpinMode: true,
          ipam: { type: 'host-local', ranges: [[{ subnet: addresses.podCidr, gateway: addresses.bridgeIp }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: path.join(nodeDir, 'cni-ipam') },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
      ],
    }, null, 2),
  );
  const containerdSocket = path.join(nodeDir, 'containerd', 'containerd.sock');
  const containerdRoot = o.containerdRoot ?? path.join(nodeDir, 'containerd', 'root');
  fs.mkdirSync(containerdRoot, { recursive: true });
  const containerdConfig = path.join(nodeDir, 'containerd.toml');
  fs.writeFileSync(containerdConfig, [
    'version = 2',
    `root = "${containerdRoot}"`,
    `state = "${path.join(nodeDir, 'containerd', 'state')}"`,
    '[grpc]',
    `  address = "${containerdSocket}"`,
    '[plugins."io.containerd.grpc.v1.cri"]',
    `  sandbox_image = "${o.sandboxImage}"`,
    // No CAP_SYS_RESOURCE here: containers may not lower their oom_score_adj below containerd's.
    '  restrict_oom_score_adj = true',
    '  enable_selinux = false',
    // Pod network namespaces under the node's state folder, not this machine's /run/netns.
    '  netns_mounts_under_state_dir = true',
    '  disable_apparmor = true',
    '[plugins."io.containerd.grpc.v1.cri".cni]',
    '  bin_dir = "/usr/lib/cni"',
    `  conf_dir = "${cni}"`,
    '[plugins."io.containerd.grpc.v1.cri".containerd]',
    '  snapshotter = "overlayfs"',
    '  default_runtime_name = "runc"',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]',
    '  runtime_type = "io.containerd.runc.v2"',
    '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
    '  SystemdCgroup = false',
    '',
  ].join('\n'));
  const [cCmd, cArgs] = inNode(o, 'containerd', ['--config', containerdConfig]);
  const containerdLog = path.join(logs, `${name}-containerd.log`);
  const containerd = startProcess(`${name}-containerd`, cCmd, cArgs, containerdLog);
  record(containerd);
  await Promise.race([containerd.exited, waitForFile(containerdSocket, `containerd of ${name}`, 30_000, containerdLog)]);
  containerd.stopWatching();
  for (const archive of o.imageArchives) {
    // The archive's name carries the image ID: one imported into this root before is there still.
    const marker = path.join(containerdRoot, `imported-${path.basename(archive)}`);
    if (fs.existsSync(marker)) continue;
    const [iCmd, iArgs] = inNode(o, 'ctr', ['--address', containerdSocket, '--namespace', 'k8s.io', 'images', 'import', archive]);
    run(iCmd, iArgs);
    fs.writeFileSync(marker, '');
  }

  createNodeCgroups(o.networkId, o.k);
  const kubeletDir = path.join(nodeDir, 'kubelet');
  fs.mkdirSync(kubeletDir, { recursive: true });
  const kubeletConfig = path.join(nodeDir, 'kubelet.yaml');
  // JSON is YAML: the kubelet reads it as its KubeletConfiguration.
  fs.writeFileSync(kubeletConfig, JSON.stringify({
    apiVersion: 'kubelet.config.k8s.io/v1beta1',
    kind: 'KubeletConfiguration',
    address: addresses.nodeIp,
    port: 10250,
    readOnlyPort: 0,
    healthzBindAddress: '127.0.0.1',
    healthzPort: 10248,
    authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: o.pki.caCert } },
    authorization: { mode: 'AlwaysAllow' },
    containerRuntimeEndpoint: `unix://${containerdSocket}`,
    // This machine: cgroup v1 and no systemd managing cgroups (containerd 1.6 cannot report its driver).
    failCgroupV1: false,
    cgroupDriver: 'cgroupfs',
    // Each node's pods in a cgroup subtree of its own, so side-by-side clusters' kubelets do not manage the same one.
    cgroupRoot: `/npuserve-${o.networkId}-${o.k}`,
    // false: the kubelet sets vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1 and the
    // kernel key quotas on this machine if they differ (true refuses to start unless they already match).
    protectKernelDefaults: false,
    failSwapOn: false,
    // Images come from `ctr import`, never from a registry: the kubelet must never delete one.
    imageGCHighThresholdPercent: 100,
    imageGCLowThresholdPercent: 99,
    evictionHard: { 'memory.available': '100Mi' },
    podLogsDir: path.join(nodeDir, 'pod-logs'),
    resolvConf: '/etc/resolv.conf',
    registerNode: true,
    serializeImagePulls: false,
    // The CNI bridge, not the kubelet, gives pods their addresses; the API server's pod CIDR is not used.
    podCIDR: addresses.podCidr,
    maxPods: 110,
    shutdownGracePeriod: '0s',
  }, null, 2));
  const labels = Object.entries(o.labels).map(([k, v]) => `${k}=${v}`).join(',');
  const [kCmd, kArgs] = inNode(o, path.join(o.bin, 'kubelet'), [
    `--config=${kubeletConfig}`,
    `--kubeconfig=${o.kubeconfig}`,
    `--root-dir=${kubeletDir}`,
    `--hostname-override=${name}`,
    `--node-ip=${addresses.nodeIp}`,
    `--node-labels=${labels}`,
    '--v=1',
  ]);
  const kubelet = startProcess(`${name}-kubelet`, kCmd, kArgs, path.join(logs, `${name}-kubelet.log`));
  record(kubelet);
  kubelet.stopWatching();

  const [pCmd, pArgs] = inNode(o, path.join(o.bin, 'kube-proxy'), [
    `--kubeconfig=${o.kubeconfig}`,
    `--hostname-override=${name}`,
    '--proxy-mode=iptables',
    `--cluster-cidr=${realPodCidr(o.octet)}`,
    // 0: leave the machine-wide nf_conntrack_max alone.
    '--conntrack-max-per-core=0',
    '--metrics-bind-address=127.0.0.1:10249',
    '--healthz-bind-address=127.0.0.1:10256',
    '--v=1',
  ]);
  const proxy = startProcess(`${name}-kube-proxy`, pCmd, pArgs, path.join(logs, `${name}-kube-proxy.log`));
  record(proxy);
  proxy.stopWatching();
  return { name, addresses, processes: [containerd, kubelet, proxy].map((p) => ({ name: p.name, pid: p.pid, log: p.log })), containerdSocket };
}

/**
 * The kubelet's cgroupRoot must exist in every hierarchy before it starts; a new cpuset cgroup
 * takes its CPUs and memory nodes from its parent (cgroup v1 leaves them empty).
 */
function createNodeCgroups(networkId: string, k: number): void {
  const root = '/sys/fs/cgroup';
  for (const controller of fs.readdirSync(root)) {
    const parent = path.join(root, controller);
    if (!fs.existsSync(path.join(parent, 'cgroup.procs'))) continue;
    const dir = path.join(parent, `npuserve-${networkId}-${k}`);
    fs.mkdirSync(dir, { recursive: true });
    for (const file of ['cpuset.cpus', 'cpuset.mems']) {
      if (fs.existsSync(path.join(parent, file))) fs.writeFileSync(path.join(dir, file), fs.readFileSync(path.join(parent, file)));
    }
  }
}

/** The node's cgroup subtree (kubelet's cgroupRoot) in every v1 hierarchy mounted here. */
function nodeCgroupDirs(networkId: string, k: number): string[] {
  const root = '/sys/fs/cgroup';
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root).map((c) => path.join(root, c, `npuserve-${networkId}-${k}`)).filter((d) => fs.existsSync(d));
}

/**
 * After containerd and the kubelet stopped: kills what they leave running (containers' processes in
 * the node's cgroups, containerd's runc shims, which outlive it by design) and removes the cgroups.
 */
export function killNodeLeftovers(networkId: string, k: number, nodeDir: string): void {
  const marker = `/npuserve-${networkId}-${k}/`;
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid <= 1 || pid === process.pid) continue;
    try {
      const cgroup = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cgroup.includes(marker) || (cmdline.startsWith('/usr/bin/containerd-shim') && cmdline.includes(nodeDir))) pids.push(pid);
    } catch {
      // gone meanwhile
    }
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone meanwhile
    }
  }
  // Depth first: a cgroup can be removed once its children are.
  const removeTree = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) removeTree(path.join(dir, e.name));
    try {
      fs.rmdirSync(dir);
    } catch {
      // still has a process for a moment; the next `down` removes it
    }
  };
  for (let attempt = 0; attempt < 20; attempt++) {
    const dirs = nodeCgroupDirs(networkId, k);
    if (dirs.length === 0) break;
    for (const d of dirs) removeTree(d);
    if (nodeCgroupDirs(networkId, k).length > 0) execFileSync('sleep', ['0.1']);
  }
}
