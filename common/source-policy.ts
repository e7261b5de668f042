// Which network targets a model source may name: loopback, link-local (cloud metadata), private and
// other non-public addresses, and cluster-internal names are refused unless the admin allows the
// host. Shared by `npuserve convert` (every hop's resolved address) and the operator (at reconcile).
import { BlockList, isIP } from 'node:net';

/** Address ranges a download must not reach, each with the name an error message uses. */
const BLOCKED_RANGES: Array<[string, Array<[string, number, 'ipv4' | 'ipv6']>]> = [
  ['a loopback address', [['127.0.0.0', 8, 'ipv4'], ['::1', 128, 'ipv6']]],
  ['a link-local address (cloud metadata lives there)', [['169.254.0.0', 16, 'ipv4'], ['fe80::', 10, 'ipv6']]],
  ['a private address', [['10.0.0.0', 8, 'ipv4'], ['172.16.0.0', 12, 'ipv4'], ['192.168.0.0', 16, 'ipv4'], ['fc00::', 7, 'ipv6'], ['fec0::', 10, 'ipv6'], ['64:ff9b:1::', 48, 'ipv6']]],
  ['a shared (carrier-grade NAT) address', [['100.64.0.0', 10, 'ipv4']]],
  ['an unspecified or IPv4-compatible address', [['0.0.0.0', 8, 'ipv4'], ['::', 96, 'ipv6']]],
  ['a special-purpose address', [['192.0.0.0', 24, 'ipv4'], ['198.18.0.0', 15, 'ipv4'], ['100::', 64, 'ipv6']]],
  ['a multicast or reserved address', [['224.0.0.0', 3, 'ipv4'], ['ff00::', 8, 'ipv6']]],
];

const blockLists = BLOCKED_RANGES.map(([what, ranges]) => {
  const list = new BlockList();
  for (const [net, prefix, type] of ranges) list.addSubnet(net, prefix, type);
  return { what, list };
});

/** Why `address` (an IP literal) is not a public address, or null when it is. IPv4-mapped IPv6 counts as its IPv4. */
export function blockedAddress(address: string): string | null {
  const family = isIP(address);
  if (family === 0) return null;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  return blockLists.find((b) => b.list.check(address, type))?.what ?? null;
}

/** A URL's host as compared with allow lists: lower case, no IPv6 brackets, no trailing dot. */
export function hostOf(url: URL): string {
  return url.hostname.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
}

/** Names that resolve inside the machine or the cluster whatever public DNS says. */
const INTERNAL_SUFFIXES = ['.localhost', '.local', '.internal', '.svc', '.cluster.local'];

/**
 * What the operator can tell from the URL alone (no DNS): why the host is not allowed, or null.
 * `npuserve convert` checks again by resolved address at every hop.
 */
export function refusedHost(url: URL, allowedHosts: readonly string[]): string | null {
  const host = hostOf(url);
  if (allowedHosts.includes(host)) return null;
  const blocked = blockedAddress(host);
  if (blocked) return `${host} is ${blocked}`;
  if (isIP(host)) return null;
  if (host === 'localhost' || INTERNAL_SUFFIXES.some((s) => host.endsWith(s))) return `${host} is a machine- or cluster-internal name`;
  if (!host.includes('.')) return `${host} is a single-label (cluster-internal) name`;
  return null;
}

const SIZE_UNITS: Record<string, number> = { '': 1, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };

/** A size such as `64Gi`, `500Mi` or `1073741824` (bytes), or null when it is not one. */
export function parseByteSize(text: string): number | null {
  const m = /^(\d+)(Ki|Mi|Gi|Ti)?$/.exec(text.trim());
  if (!m) return null;
  const bytes = Number(m[1]) * SIZE_UNITS[m[2] ?? ''];
  return Number.isSafeInteger(bytes) && bytes > 0 ? bytes : null;
}

export const DEFAULT_MAX_DOWNLOAD_BYTES = 64 * 2 ** 30;
