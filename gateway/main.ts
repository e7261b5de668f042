// `npuserve gateway`: watches the NPUModels and their Services' EndpointSlices, serves the OpenAI
// routes for all of them, scrapes the replicas' queue and KV usage for the least-loaded choice,
// writes its held requests on each model as the held-requests annotation (the operator scales a model
// at zero replicas up for them), and on SIGTERM stops accepting and lets requests in flight finish.
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { AddressInfo } from 'node:net';

import { HELD_DEMAND_REFRESH_SECONDS, heldDemandKey } from '../common/demand.js';
import { createLogger, type Logger } from '../common/log.js';
import { parsePrometheusText } from '../operator/autoscaler/scrape.js';
import { Informer } from '../operator/informer.js';
import { KubeApi } from '../operator/kube/client.js';
import type { NPUModel } from '../operator/types.js';
import { answerClientErrors } from '../runtime/server/errors.js';
import { createGatewayApp } from './app.js';
import type { GatewayConfig } from './config.js';
import { Holds } from './hold.js';
import { GatewayApi, type EndpointSlice } from './kube.js';
import { GatewayMetrics } from './metrics.js';
import { Routing } from './routing.js';

/** EndpointSlices of the operator's serving Services (the slice controller copies the Service's labels). */
const SERVER_SLICES = { labelSelector: 'app.kubernetes.io/component=server,app.kubernetes.io/managed-by=npuserve-operator' };

export async function runGateway(cfg: GatewayConfig): Promise<number> {
  const log = createLogger({ ...cfg.log, base: { component: 'gateway' } });
  const kube = new GatewayApi(KubeApi.fromEnvironment({ kubeconfig: cfg.kubeconfig, context: cfg.context }));
  const stop = new AbortController();
  setMaxListeners(100, stop.signal);
  const metrics = new GatewayMetrics();
  const routing = new Routing(cfg.loadFactor);
  const wake = new WakeRequests(kube, cfg.identity, log);
  const holds = new Holds((model, held) => {
    metrics.held.set({ model }, held);
    wake.set(model, held);
  });

  const namespaces: Array<string | null> = cfg.namespaces.length ? cfg.namespaces : [null];
  const models = namespaces.map((ns) => new Informer<NPUModel>(kube.npumodels, ns, {}, log));
  const slices = namespaces.map((ns) => new Informer<EndpointSlice>(kube.endpointslices, ns, SERVER_SLICES, log));
  const refreshModels = () => routing.setModels(models.flatMap((i) => i.list()));
  const refreshSlices = () => {
    for (const model of routing.setSlices(slices.flatMap((i) => i.list()))) holds.release(model);
    for (const e of routing.table.entries) metrics.replicas.set({ model: e.key }, routing.replicasOf(e.key).length);
  };
  for (const i of models) i.on({ add: refreshModels, update: refreshModels, delete: refreshModels });
  for (const i of slices) i.on({ add: refreshSlices, update: refreshSlices, delete: refreshSlices });
  const informers = [...models, ...slices].map((i) => i.run(stop.signal));
  let synced = false;
  void Promise.all([...models, ...slices].map((i) => i.waitForSync())).then(() => {
    synced = true;
    log('synced', { models: routing.table.entries.map((e) => e.key) });
  });

  const app = createGatewayApp({ routing, holds, metrics, ready: () => synced }, cfg, log);
  const server = answerClientErrors(app.listen(cfg.port, cfg.host));
  await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
  const { address, port } = server.address() as AddressInfo;
  log(`listening on http://${address.includes(':') ? `[${address}]` : address}:${port}`, { namespaces: cfg.namespaces.length ? cfg.namespaces : 'all', loadFactor: cfg.loadFactor, prefixChars: cfg.prefixChars, holdTimeoutSeconds: cfg.holdTimeoutSeconds });

  const scraping = scrapeLoads(routing, cfg.scrapeIntervalSeconds, stop.signal);
  const refreshing = wake.run(stop.signal);
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
  });
  log('shutting down: finishing requests in flight', { signal });
  // New connections are refused; open ones (streams) finish; the kubelet's grace period bounds this.
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
  });
  stop.abort();
  await Promise.all([...informers, scraping, refreshing]);
  await wake.clear();
  log('stopped');
  return 0;
}

/** Every interval, each ready replica's npuserve_requests_waiting and npuserve_kv_cache_usage_ratio. */
async function scrapeLoads(routing: Routing, intervalSeconds: number, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await Promise.all(routing.allReplicas().map(async (replica) => {
      try {
        const res = await fetch(`http://${replica}/metrics`, { signal: AbortSignal.timeout(Math.min(1000, intervalSeconds * 500)) });
        if (!res.ok) return;
        const samples = parsePrometheusText(await res.text());
        const sum = (name: string) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
        routing.setScraped(replica, { waiting: sum('npuserve_requests_waiting'), kvUsage: sum('npuserve_kv_cache_usage_ratio') });
      } catch {
        // A replica whose metrics cannot be read counts as idle; its in-flight count still bounds it.
      }
    }));
    await new Promise((r) => setTimeout(r, intervalSeconds * 1000).unref());
  }
}

/**
 * The held-requests annotation of this gateway on each model holding requests (common/demand.ts):
 * written at once when a model starts or stops holding requests, rewritten with the current count
 * every half refresh period while it holds some, removed when it holds none. One patch per model at
 * a time; a change during a patch is written after it.
 */
class WakeRequests {
  /** Requests held now, and as last written (absent: nothing written, or removed). */
  private readonly held = new Map<string, number>();
  private readonly written = new Map<string, number>();
  private readonly busy = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly key: string;

  constructor(
    private readonly kube: GatewayApi,
    identity: string,
    private readonly log: Logger,
  ) {
    this.key = heldDemandKey(identity, (s) => createHash('sha256').update(s).digest('hex'));
  }

  set(model: string, held: number): void {
    this.held.set(model, held);
    if (held > 0 !== this.written.has(model)) void this.write(model);
  }

  private async write(model: string): Promise<void> {
    if (this.busy.has(model)) return void this.dirty.add(model);
    this.busy.add(model);
    const held = this.held.get(model) ?? 0;
    try {
      const [namespace, name] = model.split('/') as [string, string];
      const value = held > 0 ? JSON.stringify({ requests: held, time: new Date().toISOString() }) : null;
      await this.kube.npumodels.mergePatch(namespace, name, { metadata: { annotations: { [this.key]: value } } });
      if (held > 0) this.written.set(model, held);
      else this.written.delete(model);
    } catch (e) {
      this.log.warn('could not write held requests on the model; the next refresh retries', { model, error: (e as Error).message });
    } finally {
      this.busy.delete(model);
    }
    if (this.dirty.delete(model)) return this.write(model);
  }

  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, (HELD_DEMAND_REFRESH_SECONDS * 1000) / 2).unref());
      for (const model of new Set([...this.written.keys(), ...[...this.held].filter(([, n]) => n > 0).map(([m]) => m)])) void this.write(model);
      for (const [model, n] of this.held) if (n === 0 && !this.written.has(model)) this.held.delete(model);
    }
  }

  /** At shutdown: this gateway holds nothing any more. */
  async clear(): Promise<void> {
    await Promise.all([...this.written.keys()].map((model) => {
      this.held.set(model, 0);
      return this.write(model);
    }));
  }
}
