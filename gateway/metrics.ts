// The gateway's Prometheus metrics, all defined here: requests by model and status code, upstream
// retries, held requests, routing decisions (a conversation's earlier replica, the prefix's preferred
// replica or, at its load bound, a fallback), and the ready replicas it routes to.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests;
  readonly retries;
  readonly held;
  readonly holdSeconds;
  readonly routing;
  readonly replicas;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'npuserve_gateway_' });
    this.requests = new Counter({ name: 'npuserve_gateway_requests_total', help: 'Requests answered, by model and HTTP status code (the upstream\'s, or the gateway\'s own 404/503).', labelNames: ['model', 'code'], registers });
    this.retries = new Counter({ name: 'npuserve_gateway_upstream_retries_total', help: 'Requests sent again to another replica before anything reached the client (a draining replica\'s 503, a refused or reset connection), by model and reason.', labelNames: ['model', 'reason'], registers });
    this.held = new Gauge({ name: 'npuserve_gateway_held_requests', help: 'Requests waiting for their model to have a ready replica (at zero replicas or starting).', labelNames: ['model'], registers });
    this.holdSeconds = new Histogram({ name: 'npuserve_gateway_hold_seconds', help: 'Time requests were held for a ready replica, by outcome (ready, timeout, aborted).', labelNames: ['model', 'outcome'], buckets: [0.1, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320, 640], registers });
    this.routing = new Counter({ name: 'npuserve_gateway_routing_decisions_total', help: 'Replica choices by model and decision: affinity (the replica that took a longer prefix of the prompt, such as the conversation\'s last turn), preferred (the prefix\'s replica on the hash ring) or fallback (it was at its load bound).', labelNames: ['model', 'decision'], registers });
    this.replicas = new Gauge({ name: 'npuserve_gateway_ready_replicas', help: 'Ready replicas the gateway routes to, per model.', labelNames: ['model'], registers });
  }
}
