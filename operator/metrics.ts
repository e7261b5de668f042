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

export const autoscalerDesiredReplicas = new Gauge({ name: 'npuserve_autoscaler_desired_replicas', help: 'Replicas the autoscaler decided on, per NPUModel (namespace/name).', labelNames: ['model'], registers: [registry] });
export const autoscalerTokensPerSecond = new Gauge({ name: 'npuserve_autoscaler_observed_tokens_per_second', help: 'Generation tokens/s of all serving pods over the stable window, per NPUModel.', labelNames: ['model'], registers: [registry] });
export const autoscalerTtftP95 = new Gauge({ name: 'npuserve_autoscaler_observed_ttft_p95_seconds', help: 'p95 time to first token over the stable window, per NPUModel.', labelNames: ['model'], registers: [registry] });
export const autoscalerScrapeFailures = new Counter({ name: 'npuserve_autoscaler_scrape_failures_total', help: 'Serving pods whose /metrics could not be read (skipped in that round), per NPUModel.', labelNames: ['model'], registers: [registry] });
