// The operator's Prometheus metrics, defined in one place.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: 'npuserve_operator_' });

export const reconcileTotal = new Counter({ name: 'npuserve_operator_reconcile_total', help: 'Reconciles run, by result.', labelNames: ['result'], registers: [registry] });
export const reconcileDuration = new Histogram({
  name: 'npuserve_operator_reconcile_duration_seconds',
  help: 'Time one reconcile of an NPUModel took.',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});
export const queueDepth = new Gauge({ name: 'npuserve_operator_workqueue_depth', help: 'Keys waiting in the work queue.', registers: [registry] });
export const isLeader = new Gauge({ name: 'npuserve_operator_leader', help: '1 while this replica holds the leader lease.', registers: [registry] });
