// Where the gateway sends a request within one model: consistent hashing with bounded loads (CHWBL,
// as KubeAI routes by prefix). Each replica owns virtual nodes on a 32-bit hash ring; a request's
// prefix key picks the replica owning the first virtual node at or after its hash, so requests that
// share a prompt prefix meet the same replica's prefix cache, and a replica joining or leaving moves
// only the keys of its own arcs (about 1/n). A replica may hold at most ceil(loadFactor x average
// in-flight) requests, counting the new one; when the preferred replica is at that bound the request
// goes to the next replica on the ring under it (see `route`).
import { createHash } from 'node:crypto';

/** Virtual nodes per replica: enough that n replicas split the ring within a few percent. */
export const DEFAULT_VIRTUAL_NODES = 160;
export const DEFAULT_LOAD_FACTOR = 1.25;

export function hash32(text: string): number {
  return createHash('sha1').update(text, 'utf8').digest().readUInt32BE(0);
}

export class HashRing {
  /** Virtual node hashes, ascending, and the replica owning each (same index). */
  private readonly points: number[];
  private readonly owners: string[];

  constructor(
    readonly replicas: readonly string[],
    virtualNodes = DEFAULT_VIRTUAL_NODES,
  ) {
    const nodes = replicas.flatMap((r) => Array.from({ length: virtualNodes }, (_, i) => ({ at: hash32(`${r}#${i}`), owner: r })));
    // Ties (a 32-bit collision) are broken by name, so every gateway builds the same ring.
    nodes.sort((a, b) => a.at - b.at || a.owner.localeCompare(b.owner));
    this.points = nodes.map((n) => n.at);
    this.owners = nodes.map((n) => n.owner);
  }

  /** Replicas in the order the ring visits them from `key`'s hash, each once; the first is the key's owner. */
  walk(key: string): string[] {
    if (this.points.length === 0) return [];
    const h = hash32(key);
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]! < h) lo = mid + 1;
      else hi = mid;
    }
    const seen = new Set<string>();
    for (let i = 0; i < this.owners.length && seen.size < this.replicas.length; i++) seen.add(this.owners[(lo + i) % this.owners.length]!);
    return [...seen];
  }
}

/** What the gateway knows of a replica's load. */
export interface ReplicaLoad {
  /** Requests this gateway has in flight to the replica. */
  inFlight: number;
  /** npuserve_requests_waiting at its last scrape (0 when unknown). */
  waiting: number;
  /** npuserve_kv_cache_usage_ratio at its last scrape (0 when unknown). */
  kvUsage: number;
  /** npuserve_max_batch_size at its last scrape: sequences it runs at once (0 when unknown). */
  batchSize: number;
}

export interface RouteDecision {
  replica: string;
  /**
   * `affinity`: the replica that took a longer prefix of this prompt before (a conversation's earlier
   * turn); `preferred`: the key's owner on the ring; `fallback`: it was at its bound.
   */
  decision: 'affinity' | 'preferred' | 'fallback';
}

/** Most requests one replica may hold, the new one included: ceil(loadFactor x (in flight + 1) / replicas). */
export function loadBound(totalInFlight: number, replicas: number, loadFactor: number): number {
  return Math.ceil((loadFactor * (totalInFlight + 1)) / replicas);
}

/**
 * The replica for `key` among those of `loads` that are on `ring`, or null when there is none.
 *
 * First, the first of `remembered` (replicas that took longer prefixes of this prompt, longest
 * first: affinity.ts) that has room, so a conversation stays where its history is cached. Room is
 * the bound, or, above it, a free place in the replica's running batch (in flight + 1 <= its
 * `batchSize`) with nothing waiting there: such a replica starts the request at once and prefills
 * only the new turn, where any other replica would prefill the whole history again (at low load,
 * ceil(1.25 x 4 / 4) = 2 would spill a conversation as soon as one other request shares its
 * replica). The bound keeps its meaning for where prompts go that no replica has seen.
 *
 * Else the preferred one when under its bound. Else, as CHWBL walks the ring, the next replica on
 * the ring under its bound whose queue is empty: a prefix's overflow then keeps landing on the same
 * second replica, whose cache holds it too (taking the least-loaded replica instead scattered the
 * overflow and lost those hits: docs/benchmarks.md, bench:gateway). When every replica under the
 * bound has requests waiting (other clients keep it busy), the least loaded of them (in flight plus
 * its queue, then KV usage, then ring order). Some replica is always under the bound: the loads sum
 * to less than replicas x bound.
 */
export function route(ring: HashRing, key: string, loads: ReadonlyMap<string, ReplicaLoad>, loadFactor = DEFAULT_LOAD_FACTOR, remembered: readonly string[] = []): RouteDecision | null {
  const order = ring.walk(key).filter((r) => loads.has(r));
  if (order.length === 0) return null;
  const total = order.reduce((s, r) => s + loads.get(r)!.inFlight, 0);
  const bound = loadBound(total, order.length, loadFactor);
  const under = order.filter((r) => loads.get(r)!.inFlight + 1 <= bound);
  const hasRoom = (r: string) => {
    const l = loads.get(r);
    return l !== undefined && (l.inFlight + 1 <= bound || (l.inFlight + 1 <= l.batchSize && l.waiting === 0));
  };
  const known = remembered.find(hasRoom);
  if (known !== undefined) return { replica: known, decision: 'affinity' };
  if (under[0] === order[0]) return { replica: order[0]!, decision: 'preferred' };
  const idle = under.find((r) => loads.get(r)!.waiting === 0);
  if (idle !== undefined) return { replica: idle, decision: 'fallback' };
  const score = (r: string) => loads.get(r)!.inFlight + loads.get(r)!.waiting;
  let best = under[0]!;
  for (const r of under.slice(1)) {
    const [a, b] = [score(r), score(best)];
    if (a < b || (a === b && loads.get(r)!.kvUsage < loads.get(best)!.kvUsage)) best = r;
  }
  return { replica: best, decision: 'fallback' };
}
