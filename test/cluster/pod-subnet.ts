// Each local cluster's address space 10.N.0.0/16 (N from 244 to 254, the lowest free one at
// `cluster:up`), so several clusters (the demo's, a test run's) run on one machine at once: real
// nodes' pods, Services and node links in 10.N.0.0/17 (real-nodes.ts), simulated (KWOK) pods in
// 10.N.128.0/17, where nothing answers. A cluster claims its N with a bridge holding 10.N.0.1/16.
import { execFileSync } from 'node:child_process';

const prefixLength = 16;
/** The second octets a cluster's pod subnet may take; 10.96.0.0/16 is the Service range. */
export const podSubnetOctets = { first: 244, last: 254 };

/** One cluster's pod subnet 10.N.0.0/16. */
export interface PodSubnet {
  /** N */
  octet: number;
  cidr: string;
  /** 10.N.0.1: held by the claiming bridge on this machine. */
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

/** Reads '10.N.0.0/16' (a cluster state's podSubnet) back into a PodSubnet. */
export function parsePodSubnet(cidr: string): PodSubnet {
  const m = /^10\.(\d{1,3})\.0\.0\/16$/.exec(cidr);
  if (!m) throw new Error(`pod subnet '${cidr}': expected 10.N.0.0/16 with N from ${podSubnetOctets.first} to ${podSubnetOctets.last}`);
  return podSubnet(Number(m[1]));
}

export function bridgeName(networkId: string): string {
  return `nps${networkId}br`;
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
 * Picks the lowest pod subnet no interface on this machine uses. With `claim` (real nodes, root) it
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
    return podSubnet(podSubnetOctets.first); // no `ip` and no real nodes: simulated pods only, nothing to collide with
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

/** Releases the cluster's subnet: deletes its claiming bridge (also used by `cluster:down`). */
export function removePodNetwork(networkId: string): void {
  try {
    ip(['link', 'del', bridgeName(networkId)]);
  } catch {
    // already gone, or no `ip`: nothing was created
  }
}
