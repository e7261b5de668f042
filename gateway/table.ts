// What the gateway routes to, as pure functions of the watched objects: the public name of each
// NPUModel (its name, or `namespace/name` when the name is in several namespaces; `namespace/name`
// always works) and each model's ready replicas from its Service's EndpointSlices.
import type { NPUModel } from '../operator/types.js';
import type { EndpointSlice } from './kube.js';

export interface ModelEntry {
  /** `namespace/name`: the label of metrics and logs, the key of held requests. */
  key: string;
  namespace: string;
  name: string;
  /** What /v1/models lists and clients send as `model`. */
  id: string;
  createdSeconds: number;
}

export interface ModelTable {
  entries: ModelEntry[];
  /** `model` as a client sends it: the listed id or `namespace/name`. */
  resolve(model: string): ModelEntry | undefined;
  /** Qualified names a bare, ambiguous name could mean. */
  candidates(model: string): string[];
}

export function modelTable(models: NPUModel[]): ModelTable {
  const live = models.filter((m) => !m.metadata.deletionTimestamp);
  const namesake = new Map<string, number>();
  for (const m of live) namesake.set(m.metadata.name, (namesake.get(m.metadata.name) ?? 0) + 1);
  const entries = live
    .map((m) => {
      const key = `${m.metadata.namespace}/${m.metadata.name}`;
      return { key, namespace: m.metadata.namespace!, name: m.metadata.name, id: namesake.get(m.metadata.name)! > 1 ? key : m.metadata.name, createdSeconds: Math.floor(Date.parse(m.metadata.creationTimestamp ?? '') / 1000) || 0 };
    })
    .sort((a, b) => a.id.localeCompare(b.id));
  const byName = new Map<string, ModelEntry>();
  for (const e of entries) {
    byName.set(e.key, e);
    byName.set(e.id, e);
  }
  return {
    entries,
    resolve: (model) => byName.get(model),
    candidates: (model) => entries.filter((e) => e.name === model).map((e) => e.key),
  };
}

/** `ip:port` of every ready endpoint of the model's Service (`namespace/service` -> replicas), from its EndpointSlices. */
export function readyReplicas(slices: EndpointSlice[]): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  for (const s of slices) {
    const service = s.metadata.labels?.['kubernetes.io/service-name'];
    const port = s.ports?.find((p) => p.name === 'http')?.port ?? s.ports?.[0]?.port;
    if (!service || !port || (s.addressType && s.addressType !== 'IPv4' && s.addressType !== 'IPv6')) continue;
    const key = `${s.metadata.namespace}/${service}`;
    const set = out.get(key) ?? new Set<string>();
    out.set(key, set);
    // `ready` is false once the pod terminates (its preStop delay runs, then it drains).
    for (const e of s.endpoints ?? []) if (e.conditions?.ready !== false) for (const a of e.addresses.slice(0, 1)) set.add(s.addressType === 'IPv6' ? `[${a}]:${port}` : `${a}:${port}`);
  }
  return new Map([...out].map(([k, v]) => [k, [...v].sort()]));
}
