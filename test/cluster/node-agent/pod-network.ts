// The local nodes' pod network, built like the CNI bridge plugin: a Linux bridge holding the gateway
// 10.N.0.1/16, and one network namespace per pod joined to it by a veth pair, with the pod's own
// address from 10.N.0.0/17. Pods get real, non-loopback pod IPs (EndpointSlices refuse loopback
// addresses), every pod can bind 0.0.0.0, and all traffic stays inside namespaces on this machine.
// Simulated (KWOK) pods take their addresses from 10.N.128.0/17, where nothing answers.
// Each local cluster has its own N (244..254, the lowest free one at `cluster:up`), so several
// clusters (the demo's, a test run's) can run on one machine at once.
import { execFileSync } from 'node:child_process';

const prefixLength = 16;
/** The second octets a cluster's pod subnet may take; 10.96.0.0/16 is the Service range. */
export const podSubnetOctets = { first: 244, last: 254 };

/** One cluster's pod subnet 10.N.0.0/16. */
export interface PodSubnet {
  /** N */
  octet: number;
  cidr: string;
  /** 10.N.0.1: the bridge, the local nodes' InternalIP and the pods' way to the API server. */
  gateway: string;
  /** 10.N.128.1/17: kwok's --cidr for simulated pods. */
  simulatedPodCidr: string;
}

export function podSubnet(octet: number): PodSubnet {
  if (!Number.isInteger(octet) || octet < podSubnetOctets.first || octet > podSubnetOctets.last) {
    throw new Error(`pod subnet 10.${octet}.0.0/16: the second octet must be a whole number from ${podSubnetOctets.first} to ${podSubnetOctets.last}`);
  }
  return { octet, cidr: `10.${octet}.0.0/${prefixLength}`, gateway: `10.${octet}.0.1`, simulatedPodCidr: `10.${octet}.128.1/17` };
}

/** Reads '10.N.0.0/16' (a cluster state's or the node agent's --pod-subnet) back into a PodSubnet. */
export function parsePodSubnet(cidr: string): PodSubnet {
  const m = /^10\.(\d{1,3})\.0\.0\/16$/.exec(cidr);
  if (!m) throw new Error(`pod subnet '${cidr}': expected 10.N.0.0/16 with N from ${podSubnetOctets.first} to ${podSubnetOctets.last}`);
  return podSubnet(Number(m[1]));
}

/** True for addresses of pods on local nodes (10.N.0.0/17 of any cluster), the only ones traffic may go to. */
export function isLocalPodAddress(address: string): boolean {
  const m = /^10\.(\d+)\.(\d+)\.(\d+)$/.exec(address);
  return m !== null && Number(m[1]) >= podSubnetOctets.first && Number(m[1]) <= podSubnetOctets.last && Number(m[2]) < 128;
}

export function bridgeName(networkId: string): string {
  return `nps${networkId}br`;
}

export function netnsPrefix(networkId: string): string {
  return `nps-${networkId}-`;
}

function ip(args: string[], input?: string): string {
  try {
    return execFileSync('ip', args, { input, stdio: ['pipe', 'pipe', 'pipe'] }).toString();
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT') throw new Error("the pod network needs the 'ip' command (apt-get install iproute2)");
    throw new Error(`ip ${args.join(' ')}: ${e.stderr?.toString().trim() || e.message}`);
  }
}

export interface PodAttachment {
  address: string;
  netns: string;
  /** Path for `nsenter --net=...`. */
  netnsPath: string;
}

/** IPv4 addresses on this machine's interfaces, one `ip -o` line each ("5: br0    inet 10.244.0.1/16 ..."). */
function addressLines(): string[] {
  return ip(['-o', '-4', 'addr', 'show']).split('\n').filter(Boolean);
}

function createBridge(networkId: string, subnet: PodSubnet): void {
  const bridge = bridgeName(networkId);
  ip(['-batch', '-'], [
    `link add ${bridge} type bridge`,
    `addr add ${subnet.gateway}/${prefixLength} dev ${bridge}`,
    `link set ${bridge} up`,
  ].join('\n') + '\n');
}

/**
 * Picks the lowest pod subnet no interface on this machine uses. With `claim` (local nodes, root) it
 * creates this cluster's bridge holding the gateway at once, so the next cluster to start sees the
 * subnet taken; if another cluster claimed the same subnet in the same instant, this one removes its
 * bridge and takes the next subnet.
 */
export function reservePodSubnet(networkId: string, claim: boolean): PodSubnet {
  let lines: string[];
  try {
    lines = addressLines();
  } catch (err) {
    if (claim) throw err;
    return podSubnet(podSubnetOctets.first); // no `ip` and no local nodes: simulated pods only, nothing to collide with
  }
  for (let octet = podSubnetOctets.first; octet <= podSubnetOctets.last; octet++) {
    if (lines.some((l) => l.includes(` inet 10.${octet}.`))) continue;
    const subnet = podSubnet(octet);
    if (!claim) return subnet;
    createBridge(networkId, subnet);
    const holders = addressLines().filter((l) => l.includes(` inet ${subnet.gateway}/`));
    if (holders.length === 1) return subnet;
    removePodNetwork(networkId);
    lines = addressLines();
  }
  throw new Error(
    `no free pod subnet: 10.${podSubnetOctets.first}.0.0/16 .. 10.${podSubnetOctets.last}.0.0/16 are all in use on this machine ` +
      `(${podSubnetOctets.last - podSubnetOctets.first + 1} local clusters running?); stop one with 'npm run cluster:down'`,
  );
}

export class PodNetwork {
  private readonly attachments = new Map<string, PodAttachment & { index: number }>();
  private readonly freeIndexes: number[] = [];
  private nextIndex = 1;

  constructor(readonly networkId: string, readonly subnet: PodSubnet) {}

  /** Creates the bridge with the gateway address unless `cluster:up` made it; fails naming the conflict if another interface holds it. */
  setup(): void {
    const bridge = bridgeName(this.networkId);
    const holders = addressLines().filter((l) => l.includes(` inet ${this.subnet.gateway}/`));
    const other = holders.find((l) => !l.includes(bridge));
    if (other) {
      throw new Error(`pod network ${this.subnet.cidr}: address ${this.subnet.gateway} is already in use (${other.trim()}); is another local cluster running on this subnet?`);
    }
    if (holders.length === 0) createBridge(this.networkId, this.subnet);
  }

  /** Index n -> 10.N.(n >> 8).(n & 255), skipping .0, .255 and the gateway. */
  private allocateIndex(): number {
    const reused = this.freeIndexes.shift();
    if (reused !== undefined) return reused;
    for (;;) {
      const n = ++this.nextIndex;
      if (n >= 128 * 256) throw new Error(`pod network ${this.subnet.cidr}: no addresses left in its local half (/17)`);
      if ((n & 255) !== 0 && (n & 255) !== 255) return n;
    }
  }

  attach(owner: string): PodAttachment {
    const existing = this.attachments.get(owner);
    if (existing) return existing;
    const index = this.allocateIndex();
    const address = `10.${this.subnet.octet}.${index >> 8}.${index & 255}`;
    const netns = `${netnsPrefix(this.networkId)}${index}`;
    const hostSide = `n${this.networkId}h${index}`;
    const podSide = `n${this.networkId}p${index}`;
    ip(['-batch', '-'], [
      `netns add ${netns}`,
      `link add ${hostSide} type veth peer name ${podSide}`,
      `link set ${hostSide} master ${bridgeName(this.networkId)} up`,
      `link set ${podSide} netns ${netns}`,
    ].join('\n') + '\n');
    ip(['-n', netns, '-batch', '-'], [
      `link set ${podSide} name eth0`,
      `addr add ${address}/${prefixLength} dev eth0`,
      'link set eth0 up',
      'link set lo up',
      `route add default via ${this.subnet.gateway}`,
    ].join('\n') + '\n');
    const attachment = { address, netns, netnsPath: `/run/netns/${netns}`, index };
    this.attachments.set(owner, attachment);
    return attachment;
  }

  /** Removes the pod's namespace (its veth pair goes with it); call once its processes are gone. */
  detach(owner: string): void {
    const attachment = this.attachments.get(owner);
    if (!attachment) return;
    this.attachments.delete(owner);
    try {
      ip(['netns', 'del', attachment.netns]);
    } catch {
      // already gone
    }
    this.freeIndexes.push(attachment.index);
  }

  teardown(): void {
    for (const owner of [...this.attachments.keys()]) this.detach(owner);
    removePodNetwork(this.networkId);
  }
}

/** Deletes every namespace of this network and its bridge (also used by `cluster:down`). */
export function removePodNetwork(networkId: string): void {
  let namespaces: string[] = [];
  try {
    namespaces = ip(['netns', 'list']).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(netnsPrefix(networkId)));
  } catch {
    return; // no `ip`: nothing was created
  }
  for (const ns of namespaces) {
    try {
      ip(['netns', 'del', ns]);
    } catch {
      // already gone
    }
  }
  try {
    ip(['link', 'del', bridgeName(networkId)]);
  } catch {
    // already gone
  }
}
