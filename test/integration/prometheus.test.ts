// The chart's dashboard and alert rules against a real Prometheus scraping the operator of the local
// cluster and the serving pod it runs on the real node (with the revision label the chart's
// PodMonitor gives it), under a load of 200s, 429s and 400s, beside a model whose accuracy gate
// fails and one whose conversion fails. Every dashboard query and alert expression answers with
// samples, but those that need an event or a process this run does not have: the reconcile errors
// by reason (no reconcile fails), the rollout-stuck alert (no rollout runs) and the gateway's panels
// (no gateway runs); test/unit/prometheus.test.ts covers them.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { KubeApi, KubeObject } from '../cluster/kube.js';
import { dashboardQueries, freePort, ruleQueries, startPrometheus, type PrometheusProcess } from '../unit/prometheus-process.js';
import { apply, applyCrd, deleteModelNamespace, getModel, kubeClient, modelNamespace, npuModel, startOperator, waitFor, waitForPhase, type OperatorProcess } from './operator-harness.js';

const converted = (client: KubeApi, ns: string, name: string, reason: string) =>
  waitFor(`${name}: Converted reason ${reason}`, async () => ((await getModel(client, ns, name)).status?.conditions ?? []).some((c) => c.type === 'Converted' && c.reason === reason) || undefined, 240_000, 1000);

describe('the dashboard and the alert rules against Prometheus scraping the cluster', () => {
  let client: KubeApi;
  let ns: string;
  let op: OperatorProcess;
  let prometheus: PrometheusProcess;
  const statuses = new Map<number, number>();

  beforeAll(async () => {
    client = kubeClient();
    await applyCrd();
    ns = await modelNamespace(client, 'prom');
    const metricsPort = await freePort();
    op = startOperator(ns, ['--leader-elect', 'false', '--metrics-port', String(metricsPort), '--scrape-interval-seconds', '1']);
    await apply(ns, npuModel('tiny', { runtime: { maxBatchSize: 1, maxWaitingRequests: 1 }, autoscaling: { minReplicas: 1, maxReplicas: 1, ttftP95TargetMs: 800 } }));
    await apply(ns, npuModel('gated', { precision: 'INT8', conversion: { accuracyGate: { minCosineSimilarity: 0.99999999 } } }));
    await apply(ns, npuModel('broken', { source: { uri: 'file:///models/missing' } }));
    await waitForPhase(client, ns, 'tiny', 'Ready', 240_000);
    await converted(client, ns, 'gated', 'AccuracyGateFailed');
    await converted(client, ns, 'broken', 'ConversionFailed');
    const pods = await client.list<KubeObject & { metadata: { labels: Record<string, string> }; status: { podIP: string } }>(`/api/v1/namespaces/${ns}/pods`, { labelSelector: 'app.kubernetes.io/instance=tiny,app.kubernetes.io/component=server' });
    const pod = pods.items[0];
    const target = `${pod.status.podIP}:8000`;
    prometheus = await startPrometheus([
      { job_name: 'npuserve-models', static_configs: [{ targets: [target], labels: { namespace: ns, pod: pod.metadata.name ?? '', revision: pod.metadata.labels['npuserve.io/revision'] ?? '' } }] },
      { job_name: 'npuserve-operator', honor_labels: true, static_configs: [{ targets: [`127.0.0.1:${metricsPort}`] }] },
    ]);
    await prometheus.scraped();
    for (let round = 0; round < 4; round++) {
      await Promise.all([
        ...Array.from({ length: 8 }, async (_, i) => {
          const body = { model: 'tiny', prompt: `Hello ${i}`, max_tokens: i === 7 ? -1 : 4, temperature: 0 };
          const r = await fetch(`http://${target}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(30_000) });
          await r.arrayBuffer();
          statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
        }),
        new Promise((r) => setTimeout(r, 1000)),
      ]);
    }
    await prometheus.scraped(3);
  }, 600_000);

  afterAll(async () => {
    await prometheus?.stop();
    if (ns) await deleteModelNamespace(client, ns);
    await op?.stop();
  });

  it('the load produced 200s, 429s and 400s', () => {
    expect([...statuses.keys()].sort()).toEqual([200, 400, 429]);
  });

  it("the operator's process metrics have their standard names", async () => {
    const r = await prometheus.query('process_cpu_seconds_total{job="npuserve-operator"}');
    expect(r.data?.result.length).toBe(1);
  });

  it('every dashboard query answers with samples but the reconcile errors and the gateway', async () => {
    const empty: string[] = [];
    for (const q of dashboardQueries({ namespace: ns, model: 'tiny' }, '1m')) {
      const r = await prometheus.query(q.expr);
      expect(r.status, `${q.where}: ${q.expr}: ${r.error}`).toBe('success');
      if (!r.data!.result.some((s) => Number.isFinite(Number(s.value[1])))) empty.push(`${q.where}: ${q.expr} -> ${JSON.stringify(r.data!.result)}`);
    }
    // No gateway runs here: its three queries are empty (test/unit/prometheus.test.ts scrapes one).
    expect(empty.filter((e) => !e.includes('npuserve_gateway_'))).toEqual([`panel "Reconcile errors by reason": sum by (reason) (rate(npuserve_operator_reconcile_errors_total[1m])) -> []`]);
    expect(empty.filter((e) => e.includes('npuserve_gateway_'))).toHaveLength(3);
  });

  it('every alert expression answers with samples but the rollout-stuck one', async () => {
    const empty: string[] = [];
    for (const q of ruleQueries()) {
      const r = await prometheus.query(q.expr);
      expect(r.status, `${q.where}: ${q.expr}: ${r.error}`).toBe('success');
      if (r.data!.result.length === 0) empty.push(q.where);
    }
    expect(empty).toEqual(['alert NPUServeRolloutStuck']);
  });
});
