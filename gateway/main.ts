// `npuserve gateway`: watches the NPUModels and their Services' EndpointSlices (or, in static mode,
// takes fixed servers from --backend), serves the OpenAI routes for all of them, scrapes the replicas'
// queue and KV usage for the fallback choice, writes its held requests on each model as the
// held-requests annotation (the operator scales a model at zero replicas up for them; not in static
// mode), and on SIGTERM stops accepting and lets requests in flight finish.
import { createHash } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

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
  const stop = new AbortController();
  setMaxListeners(100, stop.signal);
  const metrics = new GatewayMetrics();
  const routing = new Routing(cfg.loadFactor);
  const holds = new Holds((model, held) => {
    metrics.held.set({ model }, held);
    source.held(model, held);
  });
  const source = cfg.backends.length ? staticSource(cfg, routing, metrics) : watchCluster(cfg, routing, holds, metrics, log, stop.signal);

  const app = createGatewayApp({ routing, holds, metrics, ready: source.ready }, cfg, log);
  const server = answerClientErrors(app.listen(cfg.port, cfg.host));
  await new Promise<void>((resolve, reject) => server.once('listening', resolve).once('error', reject));
  const { address, port } = server.address() as AddressInfo;
  log(`listening on http://${address.includes(':') ? `[${address}]` : address}:${port}`, { ...source.describe, loadFactor: cfg.loadFactor, prefixChars: cfg.prefixChars, holdTimeoutSeconds: cfg.holdTimeoutSeconds });

  const scraping = scrapeLoads(routing, cfg.scrapeIntervalSeconds, stop.signal);
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
  await Promise.all([scraping, source.stopped()]);
  log('stopped');
  return 0;
}

/** Where the models and their replicas come from: the cluster, or the `--backend` flags. */
interface ModelSource {
  /** The models and replicas are known (readiness). */
  ready: () => boolean;
  /** A model's held requests changed. */
  held: (model: string, held: number) => void;
  /** What the listening line logs about the source. */
  describe: Record<string, unknown>;
  /** After the stop signal: resolves once the source has stopped and cleaned up. */
  stopped: () => Promise<void>;
}

/** Static mode: fixed models and replicas, ready at once; a held request only waits (nobody scales these servers). */
function staticSource(cfg: GatewayConfig, routing: Routing, metrics: GatewayMetrics): ModelSource {
  routing.setStatic(cfg.backends, Math.floor(Date.now() / 1000));
  for (const e of routing.table.entries) metrics.replicas.set({ model: e.key }, routing.replicasOf(e.key).length);
  const backends = Object.fromEntries(routing.table.entries.map((e) => [e.key, routing.replicasOf(e.key)]));
  return { ready: () => true, held: () => {}, describe: { backends }, stopped: async () => {} };
}

/** The NPUModels and their Services' EndpointSlices, watched; held requests written on each model for the operator. */
function watchCluster(cfg: GatewayConfig, routing: Routing, holds: Holds, metrics: GatewayMetrics, log: Logger, stop: AbortSignal): ModelSource {
  const kube = new GatewayApi(KubeApi.fromEnvironment({ kubeconfig: cfg.kubeconfig, context: cfg.context }));
  const wake = new WakeRequests(kube, cfg.identity, log);
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
  const running = [...[...models, ...slices].map((i) => i.run(stop)), wake.run(stop)];
  let synced = false;
  void Promise.all([...models, ...slices].map((i) => i.waitForSync())).then(() => {
    synced = true;
    log('synced', { models: routing.table.entries.map((e) => e.key) });
  });
  return {
    ready: () => synced,
    held: (model, held) => wake.set(model, held),
    describe: { namespaces: cfg.namespaces.length ? cfg.namespaces : 'all' },
    stopped: async () => {
      await Promise.all(running);
      await wake.clear();
    },
  };
}

/**
 * Waits `ms`, or less when `signal` aborts. The loops end promptly at shutdown: a timer that merely
 * did not hold the process open would let it exit before the held-requests annotation is cleared.
 */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return sleep(ms, undefined, { signal }).catch(() => {});
}

/** Every interval, each ready replica's npuserve_requests_waiting, npuserve_kv_cache_usage_ratio and npuserve_max_batch_size. */
async function scrapeLoads(routing: Routing, intervalSeconds: number, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    await Promise.all(routing.allReplicas().map(async (replica) => {
      try {
        const res = await fetch(`http://${replica}/metrics`, { signal: AbortSignal.timeout(Math.min(1000, intervalSeconds * 500)) });
        if (!res.ok) return;
        const samples = parsePrometheusText(await res.text());
        const sum = (name: string) => samples.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
        routing.setScraped(replica, { waiting: sum('npuserve_requests_waiting'), kvUsage: sum('npuserve_kv_cache_usage_ratio'), batchSize: sum('npuserve_max_batch_size') });
      } catch {
        // A replica whose metrics cannot be read counts as idle; its in-flight count still bounds it.
      }
    }));
    await pause(intervalSeconds * 1000, signal);
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
      await pause((HELD_DEMAND_REFRESH_SECONDS * 1000) / 2, signal);
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
