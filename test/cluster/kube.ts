// The test harness's view of the Kubernetes API (cluster lifecycle, provisioner, tests, scripts): the
// operator's client (operator/kube/client.ts, on @kubernetes/client-node) plus list-then-watch,
// polling helpers and the object shapes the harness reads.
import { isGone, type KubeApi } from '../../operator/kube/client.js';

export { ApiError, isConflict, isGone, isNotFound, KubeApi, type KubeList, type WatchEvent } from '../../operator/kube/client.js';

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }>;
  finalizers?: string[];
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

/**
 * Keeps an in-memory view of a collection: lists, then watches from the list's resourceVersion, and
 * lists again when the watch ends or expires. `onChange` sees every add/update/delete. Runs until
 * the signal aborts. `onSynced` is called once, after the first list has been delivered.
 */
export async function informer<T extends KubeObject>(
  client: KubeApi,
  path: string,
  query: Record<string, string>,
  onChange: (type: 'ADDED' | 'MODIFIED' | 'DELETED', object: T) => void,
  signal: AbortSignal,
  onSynced?: () => void,
): Promise<void> {
  const known = new Map<string, T>();
  const key = (o: T) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
  while (!signal.aborted) {
    try {
      const list = await client.list<T>(path, query);
      const seen = new Set<string>();
      for (const item of list.items) {
        seen.add(key(item));
        const before = known.get(key(item));
        known.set(key(item), item);
        if (!before) onChange('ADDED', item);
        else if (before.metadata.resourceVersion !== item.metadata.resourceVersion) onChange('MODIFIED', item);
      }
      for (const [k, item] of known) {
        if (!seen.has(k)) {
          known.delete(k);
          onChange('DELETED', item);
        }
      }
      onSynced?.();
      onSynced = undefined;
      let resourceVersion = list.metadata.resourceVersion ?? '';
      while (!signal.aborted) {
        const watchStarted = Date.now();
        let expired = false;
        try {
          await client.watch<T>(path, resourceVersion, query, (event) => {
            resourceVersion = event.object.metadata.resourceVersion ?? resourceVersion;
            if (event.type === 'BOOKMARK') return;
            if (event.type === 'DELETED') known.delete(key(event.object));
            else known.set(key(event.object), event.object);
            onChange(event.type, event.object);
          }, signal);
        } catch (err) {
          if (!isGone(err)) throw err;
          expired = true;
        }
        // A watch that ends at once (server restarting, expired version) must not become a busy loop.
        if (Date.now() - watchStarted < 1000) await sleep(1000);
        if (expired) break; // expired resourceVersion: list again
      }
    } catch (err) {
      if (signal.aborted) return;
      console.error(`informer ${path}: ${(err as Error).message}; retrying in 1 s`);
      await sleep(1000);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value (not undefined), or throws naming what was awaited. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError ? ` (last error: ${(lastError as Error).message})` : '';
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${cause}`);
    }
    await sleep(intervalMs);
  }
}
