// The resources the operator reads and writes, with the verbs and scope of each: the only way
// operator code reaches the API server. `operatorGrants()` lists the RBAC this needs; the chart's
// rules are tested against it.
import type { KubeObject, NPUModel } from '../types.js';
import type { KubeApi } from './client.js';
import { resource, TYPES, type Grant, type Resource, type ResourceType, type Scope, type Verb } from './resources.js';

export interface Lease {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: { holderIdentity?: string; leaseDurationSeconds?: number; acquireTime?: string; renewTime?: string; leaseTransitions?: number };
}

export interface NodeView extends KubeObject {
  spec?: { unschedulable?: boolean };
  status?: { allocatable?: Record<string, string> };
}

export interface PodSpecView extends KubeObject {
  spec?: { nodeName?: string; containers: Array<{ resources?: { requests?: Record<string, string> } }> };
}

export class OperatorApi {
  readonly grants: Grant[] = [];
  /** Models: the informer, and the finalizer (a metadata merge patch). */
  readonly npumodels;
  readonly npumodelStatus;
  /** The autoscaler's writes go through the scale subresource, as kubectl scale's do. */
  readonly npumodelScale;
  readonly jobs;
  readonly deployments;
  readonly services;
  readonly networkpolicies;
  /** Pods of the watched namespaces (conversion and serving pods). */
  readonly pods;
  readonly events;
  /** Cluster-wide reads of the spare-NPU check: NPU nodes and the pods bound to them. */
  readonly nodes;
  readonly allPods;
  readonly leases;

  constructor(readonly api: KubeApi) {
    this.npumodels = this.use<NPUModel, 'list' | 'watch' | 'patch'>(TYPES.npumodels, 'namespaced', ['list', 'watch', 'patch']);
    this.npumodelStatus = this.use<NPUModel, 'update' | 'patch'>(TYPES.npumodels, 'namespaced', ['update', 'patch'], 'status');
    this.npumodelScale = this.use<KubeObject, 'patch'>(TYPES.npumodels, 'namespaced', ['patch'], 'scale');
    this.jobs = this.use<KubeObject, 'create' | 'list' | 'watch'>(TYPES.jobs, 'namespaced', ['create', 'list', 'watch']);
    this.deployments = this.use<KubeObject, 'create' | 'update' | 'list' | 'watch'>(TYPES.deployments, 'namespaced', ['create', 'update', 'list', 'watch']);
    this.services = this.use<KubeObject, 'create' | 'patch' | 'list' | 'watch'>(TYPES.services, 'namespaced', ['create', 'patch', 'list', 'watch']);
    this.networkpolicies = this.use<KubeObject, 'create' | 'patch' | 'list' | 'watch'>(TYPES.networkpolicies, 'namespaced', ['create', 'patch', 'list', 'watch']);
    this.pods = this.use<KubeObject, 'list' | 'watch'>(TYPES.pods, 'namespaced', ['list', 'watch']);
    this.events = this.use<KubeObject, 'create' | 'patch'>(TYPES.events, 'namespaced', ['create', 'patch']);
    this.nodes = this.use<NodeView, 'list'>(TYPES.nodes, 'cluster', ['list']);
    this.allPods = this.use<PodSpecView, 'list'>(TYPES.pods, 'cluster', ['list']);
    this.leases = this.use<Lease, 'get' | 'create' | 'update'>(TYPES.leases, 'leader', ['get', 'create', 'update']);
  }

  private use<T extends { metadata: object }, V extends Verb>(type: ResourceType, scope: Scope, verbs: readonly V[], subresource?: string): Resource<T, V> {
    this.grants.push({ group: type.group, resource: subresource ? `${type.plural}/${subresource}` : type.plural, verbs: [...verbs], scope });
    return resource<T & { metadata: { name?: string } }, V>(this.api, type, verbs, subresource) as unknown as Resource<T, V>;
  }
}

/** The RBAC the operator's code can use: (group, resource, verbs, scope) per facade. */
export function operatorGrants(): Grant[] {
  return new OperatorApi(null as unknown as KubeApi).grants;
}
