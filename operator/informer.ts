// List+watch cache of one resource type (optionally one namespace and a label selector): lists,
// then watches from the list's resourceVersion; on 410 Gone it lists again, on other errors it
// reconnects with capped exponential backoff. Handlers see every add, update and delete.
import type { Logger } from '../common/log.js';
import { isGone, isNotFound, type WatchEvent } from './kube/client.js';
import type { Resource } from './kube/resources.js';
import type { KubeObject } from './types.js';

export type Handler<T> = (obj: T, old?: T) => void;

export function objectKey(o: KubeObject): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

export class Informer<T extends KubeObject> {
  private readonly cache = new Map<string, T>();
  private readonly handlers: Array<{ add?: Handler<T>; update?: Handler<T>; delete?: Handler<T> }> = [];
  private synced = false;
  private syncWaiters: Array<() => void> = [];

  /** Collection path, e.g. /apis/apps/v1/deployments or /api/v1/namespaces/ns/pods. */
  readonly path: string;

  constructor(
    private readonly source: Resource<T, 'list' | 'watch'>,
    /** null: all namespaces. */
    private readonly namespace: string | null,
    private readonly query: Record<string, string> = {},
    private readonly log: Logger,
  ) {
    this.path = source.path(namespace);
  }

  on(h: { add?: Handler<T>; update?: Handler<T>; delete?: Handler<T> }): void {
    this.handlers.push(h);
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }

  list(filter?: (o: T) => boolean): T[] {
    const all = [...this.cache.values()];
    return filter ? all.filter(filter) : all;
  }

  get hasSynced(): boolean {
    return this.synced;
  }

  waitForSync(): Promise<void> {
    return this.synced ? Promise.resolve() : new Promise((r) => this.syncWaiters.push(r));
  }

  private apply(ev: WatchEvent<T>): void {
    const key = objectKey(ev.object);
    const old = this.cache.get(key);
    if (ev.type === 'DELETED') {
      this.cache.delete(key);
      for (const h of this.handlers) h.delete?.(ev.object);
    } else {
      this.cache.set(key, ev.object);
      for (const h of this.handlers) old ? h.update?.(ev.object, old) : h.add?.(ev.object);
    }
  }

  private async relist(): Promise<string> {
    const list = await this.source.list(this.namespace, this.query);
    const seen = new Set<string>();
    for (const o of list.items) {
      seen.add(objectKey(o));
      this.apply({ type: 'MODIFIED', object: o });
    }
    for (const [key, o] of [...this.cache]) if (!seen.has(key)) this.apply({ type: 'DELETED', object: o });
    if (!this.synced) {
      this.synced = true;
      for (const w of this.syncWaiters.splice(0)) w();
    }
    return list.metadata.resourceVersion ?? '';
  }

  /** Runs until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    let rv: string | null = null;
    let failures = 0;
    while (!signal.aborted) {
      try {
        if (rv === null) rv = await this.relist();
        await this.source.watch(this.namespace, rv, this.query, (ev) => {
          rv = ev.object.metadata.resourceVersion ?? rv;
          if (ev.type !== 'BOOKMARK') this.apply(ev);
        }, signal);
        failures = 0;
      } catch (e) {
        if (signal.aborted) return;
        if (isGone(e)) {
          rv = null; // resourceVersion too old: list again
          continue;
        }
        failures++;
        const delayMs = Math.min(30_000, 500 * 2 ** Math.min(failures, 6));
        const error = isNotFound(e) ? `${this.path} does not exist on the API server (for NPUModels: is the CRD installed? kubectl apply -f crds/)` : (e as Error).message;
        this.log.warn('watch failed; reconnecting', { path: this.path, error, delayMs });
        if (failures > 3) rv = null;
        await new Promise((r) => setTimeout(r, delayMs));
      }
    }
  }
}
