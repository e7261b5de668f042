// A typed facade per resource the operator uses, each declaring the verbs it may call and where (the
// watched namespaces, cluster-wide, or the leader-election namespace). A method exists only for a
// declared verb, so `operatorRbac()` lists exactly what the code can ask for: the chart's RBAC is
// checked against it, not against a scrape of the source.
import type { KubeApi, KubeList, Query, WatchEvent } from './client.js';

/** A namespace, or null/undefined for all namespaces (and for cluster-scoped resources). */
export type Namespace = string | null | undefined;

export type Verb = 'get' | 'list' | 'watch' | 'create' | 'update' | 'patch' | 'delete';
/** Where the operator uses a resource: in the namespaces it watches, cluster-wide, or in its own (leases). */
export type Scope = 'namespaced' | 'cluster' | 'leader';

export interface ResourceType {
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

interface Meta {
  metadata: { name?: string; namespace?: string; resourceVersion?: string };
}

/** All methods; a facade exposes the subset its verbs allow. */
interface AllMethods<T> {
  get(namespace: Namespace, name: string): Promise<T>;
  list(namespace: Namespace, query?: Query): Promise<KubeList<T>>;
  watch(namespace: Namespace, resourceVersion: string, query: Query, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal): Promise<void>;
  create(namespace: Namespace, obj: object): Promise<T>;
  replace(namespace: Namespace, name: string, obj: object): Promise<T>;
  mergePatch(namespace: Namespace, name: string, patch: unknown): Promise<T>;
  delete(namespace: Namespace, name: string): Promise<unknown>;
}

const methodsOfVerb = { get: 'get', list: 'list', watch: 'watch', create: 'create', update: 'replace', patch: 'mergePatch', delete: 'delete' } as const;
type MethodsOf<V extends Verb> = (typeof methodsOfVerb)[V];

export type Resource<T, V extends Verb> = Pick<AllMethods<T>, MethodsOf<V>> & {
  readonly type: ResourceType;
  readonly subresource?: string;
  /** The collection's path (namespace null: all namespaces, or a cluster-scoped resource). */
  path(namespace: Namespace, name?: string): string;
};

export interface Grant {
  group: string;
  /** plural[/subresource] */
  resource: string;
  verbs: Verb[];
  scope: Scope;
}

export function resourcePath(t: ResourceType, namespace: Namespace, name?: string, subresource?: string): string {
  const base = t.group ? `/apis/${t.group}/${t.version}` : `/api/${t.version}`;
  const ns = t.namespaced && namespace ? `/namespaces/${namespace}` : '';
  return `${base}${ns}/${t.plural}${name ? `/${name}` : ''}${name && subresource ? `/${subresource}` : ''}`;
}

/** Builds the facade of one resource (or subresource) with exactly the methods of `verbs`. */
export function resource<T extends Meta, const V extends Verb>(api: KubeApi, type: ResourceType, verbs: readonly V[], subresource?: string): Resource<T, V> {
  const path = (ns: Namespace, name?: string) => resourcePath(type, ns, name, subresource);
  const all: AllMethods<T> = {
    get: (ns, name) => api.get<T>(path(ns, name)),
    list: (ns, query = {}) => api.list<T>(path(ns), query),
    watch: (ns, rv, query, onEvent, signal) => api.watch<T>(path(ns), rv, query, onEvent, signal),
    create: (ns, obj) => api.create<T>(path(ns), obj),
    replace: (ns, name, obj) => api.replace<T>(path(ns, name), obj),
    mergePatch: (ns, name, patch) => api.mergePatch<T>(path(ns, name), patch),
    delete: (ns, name) => api.delete(path(ns, name)),
  };
  const facade: Record<string, unknown> = { type, subresource, path };
  for (const v of verbs) facade[methodsOfVerb[v]] = all[methodsOfVerb[v]];
  return facade as unknown as Resource<T, V>;
}

export const TYPES = {
  npumodels: { group: 'npuserve.io', version: 'v1alpha1', plural: 'npumodels', namespaced: true },
  jobs: { group: 'batch', version: 'v1', plural: 'jobs', namespaced: true },
  deployments: { group: 'apps', version: 'v1', plural: 'deployments', namespaced: true },
  services: { group: '', version: 'v1', plural: 'services', namespaced: true },
  networkpolicies: { group: 'networking.k8s.io', version: 'v1', plural: 'networkpolicies', namespaced: true },
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true },
  nodes: { group: '', version: 'v1', plural: 'nodes', namespaced: false },
  events: { group: '', version: 'v1', plural: 'events', namespaced: true },
  leases: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true },
  endpointslices: { group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true },
} as const satisfies Record<string, ResourceType>;
