// The NetworkPolicy of a model's serving pods: ingress only to the API port, only from pods in the
// model's own namespace (the Service's clients), the operator's pods (the autoscaler scrapes
// /metrics), the chart's gateway pods (in the operator's namespace) and the namespaces the cluster
// admin allowed (an ingress controller).
// Conversion Jobs are not selected: nothing needs to reach them.
import type { OperatorConfig } from '../config.js';
import type { NPUModel } from '../types.js';
import { labels, ownerReference, serverSelector } from './common.js';
import { servicePort } from './deployment.js';

/** Labels of the operator's own pods (the chart's selector labels). */
export const OPERATOR_POD_LABELS = { 'app.kubernetes.io/name': 'npuserve-operator' };
/** Labels of the chart's `npuserve gateway` pods, which run in the operator's namespace. */
export const GATEWAY_POD_LABELS = { 'app.kubernetes.io/name': 'npuserve-gateway' };

const namespaceNamed = (name: string) => ({ matchLabels: { 'kubernetes.io/metadata.name': name } });

export function networkPolicy(m: NPUModel, cfg: OperatorConfig) {
  const np = cfg.networkPolicy;
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: { name: m.metadata.name, namespace: m.metadata.namespace, labels: labels(m, 'server'), ownerReferences: [ownerReference(m)] },
    spec: {
      podSelector: { matchLabels: serverSelector(m) },
      policyTypes: ['Ingress'],
      ingress: [
        {
          ports: [{ protocol: 'TCP', port: servicePort(m) }],
          from: [
            { podSelector: {} },
            { namespaceSelector: namespaceNamed(np.operatorNamespace), podSelector: { matchLabels: OPERATOR_POD_LABELS } },
            { namespaceSelector: namespaceNamed(np.operatorNamespace), podSelector: { matchLabels: GATEWAY_POD_LABELS } },
            ...np.ingressNamespaces.map((ns) => ({ namespaceSelector: namespaceNamed(ns) })),
          ],
        },
      ],
    },
  };
}
