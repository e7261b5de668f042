// The resources the gateway reads and writes, each with its verbs (operator/kube/resources.ts): the
// NPUModels it routes to (and whose held-requests annotation it patches) and the EndpointSlices of
// their Services. `gatewayGrants()` lists the RBAC this needs; the chart's gateway rules are tested
// against it.
import type { KubeApi } from '../operator/kube/client.js';
import { resource, TYPES, type Grant, type Resource, type ResourceType, type Verb } from '../operator/kube/resources.js';
import type { KubeObject, NPUModel } from '../operator/types.js';

export interface EndpointSlice extends KubeObject {
  addressType?: string;
  endpoints?: Array<{ addresses: string[]; conditions?: { ready?: boolean; serving?: boolean; terminating?: boolean }; targetRef?: { name?: string } }>;
  ports?: Array<{ name?: string; port?: number; protocol?: string }>;
}

export class GatewayApi {
  readonly grants: Grant[] = [];
  /** Models to route to (list, watch); the held-requests annotation (a metadata merge patch). */
  readonly npumodels;
  /** Ready endpoints of each model's Service: the replicas. */
  readonly endpointslices;

  constructor(readonly api: KubeApi) {
    this.npumodels = this.use<NPUModel, 'list' | 'watch' | 'patch'>(TYPES.npumodels, ['list', 'watch', 'patch']);
    this.endpointslices = this.use<EndpointSlice, 'list' | 'watch'>(TYPES.endpointslices, ['list', 'watch']);
  }

  private use<T extends { metadata: object }, V extends Verb>(type: ResourceType, verbs: readonly V[]): Resource<T, V> {
    this.grants.push({ group: type.group, resource: type.plural, verbs: [...verbs], scope: 'namespaced' });
    return resource<T & { metadata: { name?: string } }, V>(this.api, type, verbs) as unknown as Resource<T, V>;
  }
}

/** The RBAC the gateway's code can use. */
export function gatewayGrants(): Grant[] {
  return new GatewayApi(null as unknown as KubeApi).grants;
}
