// The gateway's view of where requests can go: the model table, each model's ready replicas and hash
// ring, and each replica's load (requests this gateway has in flight to it, and its queue and KV cache
// usage as last scraped).
import type { NPUModel } from '../operator/types.js';
import type { StaticBackend } from './config.js';
import type { EndpointSlice } from './kube.js';
import { AffinityMemory } from './affinity.js';
import { HashRing, route, type ReplicaLoad, type RouteDecision } from './ring.js';
import { modelTable, readyReplicas, staticTable, type ModelTable } from './table.js';

/** A replica's load as last read from its /metrics. */
export type Scraped = Omit<ReplicaLoad, 'inFlight'>;

export class Routing {
  table: ModelTable = modelTable([]);
  private replicas = new Map<string, string[]>();
  private readonly rings = new Map<string, HashRing>();
  private readonly inFlight = new Map<string, number>();
  private readonly scraped = new Map<string, Scraped>();
  private readonly affinity: AffinityMemory;

  constructor(
    private readonly loadFactor: number,
    affinityEntries?: number,
  ) {
    this.affinity = new AffinityMemory(affinityEntries);
  }

  setModels(models: NPUModel[]): void {
    this.table = modelTable(models);
  }

  /** Takes the current EndpointSlices; returns the models (namespace/name) that have ready replicas. */
  setSlices(slices: EndpointSlice[]): string[] {
    return this.setReplicas(readyReplicas(slices));
  }

  /** Static mode (`--backend`): fixed models and replicas. */
  setStatic(backends: StaticBackend[], createdSeconds: number): void {
    const { table, replicas } = staticTable(backends, createdSeconds);
    this.table = table;
    this.setReplicas(replicas);
  }

  /** Takes each model's ready replicas (model key -> `host:port`s); returns the models that have some. */
  private setReplicas(replicas: Map<string, string[]>): string[] {
    this.replicas = replicas;
    for (const [model, ring] of this.rings) {
      const now = this.replicas.get(model) ?? [];
      if (ring.replicas.join() !== now.join()) this.rings.delete(model);
    }
    const live = new Set([...this.replicas.values()].flat());
    for (const r of this.scraped.keys()) if (!live.has(r)) this.scraped.delete(r);
    return [...this.replicas].filter(([, r]) => r.length > 0).map(([m]) => m);
  }

  replicasOf(model: string): string[] {
    return this.replicas.get(model) ?? [];
  }

  allReplicas(): string[] {
    return [...new Set([...this.replicas.values()].flat())];
  }

  /**
   * The replica for a request of `model` with prefix `key` and prefix chain `chain` (affinity.ts),
   * never one of `exclude`; null when none is ready. The choice is remembered for the chain's prefixes.
   */
  choose(model: string, key: string, chain: readonly string[], exclude: ReadonlySet<string>): RouteDecision | null {
    const replicas = this.replicasOf(model);
    let ring = this.rings.get(model);
    if (!ring) {
      ring = new HashRing(replicas);
      this.rings.set(model, ring);
    }
    const loads = new Map<string, ReplicaLoad>();
    for (const r of replicas) if (!exclude.has(r)) loads.set(r, { inFlight: this.inFlight.get(r) ?? 0, ...(this.scraped.get(r) ?? { waiting: 0, kvUsage: 0, batchSize: 0 }) });
    const choice = route(ring, key, loads, this.loadFactor, this.affinity.candidates(chain));
    if (choice) this.affinity.remember(chain, choice.replica);
    return choice;
  }

  started(replica: string): void {
    this.inFlight.set(replica, (this.inFlight.get(replica) ?? 0) + 1);
  }

  finished(replica: string): void {
    const n = (this.inFlight.get(replica) ?? 1) - 1;
    if (n > 0) this.inFlight.set(replica, n);
    else this.inFlight.delete(replica);
  }

  setScraped(replica: string, load: Scraped): void {
    this.scraped.set(replica, load);
  }
}
