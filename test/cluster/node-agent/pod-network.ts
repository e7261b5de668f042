// The local nodes' pod network, built like the CNI bridge plugin: a Linux bridge holding the gateway
// 10.244.0.1/16, and one network namespace per pod joined to it by a veth pair, with the pod's own
// address from 10.244.0.0/17. Pods get real, non-loopback pod IPs (EndpointSlices refuse loopback
// addresses), every pod can bind 0.0.0.0, and all traffic stays inside namespaces on this machine.
// Simulated (KWOK) pods take their addresses from 10.244.128.0/17, where nothing answers.
import { execFileSync } from 'node:child_process';

export const podSubnet = '10.244.0.0/16';
export const gatewayAddress = '10.244.0.1';
export const simulatedPodCidr = '10.244.128.1/17';
const prefixLength = 16;

/** True for addresses of pods on local nodes (10.244.0.0/17), the only ones traffic may go to. */
export function isLocalPodAddress(address: string): boolean {
  const m = /^10\.244\.(\d+)\.(\d+)$/.exec(address);
  return m !== null && Number(m[1]) < 128;
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

export class PodNetwork {
  private readonly attachments = new Map<string, PodAttachment & { index: number }>();
  private readonly freeIndexes: number[] = [];
  private nextIndex = 1;

  constructor(readonly networkId: string) {}

  /** Creates the bridge with the gateway address; fails naming the conflict if the subnet is taken. */
  setup(): void {
    const bridge = bridgeName(this.networkId);
    const taken = ip(['-o', '-4', 'addr', 'show']).split('\n').find((l) => l.includes(` ${gatewayAddress}/`));
    if (taken && !taken.includes(bridge)) {
      throw new Error(`pod network ${podSubnet}: address ${gatewayAddress} is already in use (${taken.trim()}); is another local cluster running?`);
    }
    if (!taken) {
      ip(['-batch', '-'], [
        `link add ${bridge} type bridge`,
        `addr add ${gatewayAddress}/${prefixLength} dev ${bridge}`,
        `link set ${bridge} up`,
      ].join('\n') + '\n');
    }
  }

  /** Index n -> 10.244.(n >> 8).(n & 255), skipping .0, .255 and the gateway. */
  private allocateIndex(): number {
    const reused = this.freeIndexes.shift();
    if (reused !== undefined) return reused;
    for (;;) {
      const n = ++this.nextIndex;
      if (n >= 128 * 256) throw new Error('pod network: no addresses left in 10.244.0.0/17');
      if ((n & 255) !== 0 && (n & 255) !== 255) return n;
    }
  }

  attach(owner: string): PodAttachment {
    const existing = this.attachments.get(owner);
    if (existing) return existing;
    const index = this.allocateIndex();
    const address = `10.244.${index >> 8}.${index & 255}`;
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
      `route add default via ${gatewayAddress}`,
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
