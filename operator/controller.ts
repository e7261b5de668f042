// Wires informers to the work queue and runs reconcile workers: NPUModel events enqueue the model,
// events of owned objects (Jobs, Deployments, Services, pods) enqueue their owner.
import { getMaxListeners, setMaxListeners } from 'node:events';

import type { Logger } from '../common/log.js';
import type { OperatorConfig } from './config.js';
import { EventRecorder } from './events.js';
import { Informer, objectKey } from './informer.js';
import { ApiError, isConflict } from './kube/client.js';
import type { OperatorApi } from './kube/operator-api.js';
import type { Resource } from './kube/resources.js';
import { queueDepth, reconcileDuration, reconcileErrors, reconcileTotal } from './metrics.js';
import { WorkQueue } from './queue.js';
import { Reconciler, type World } from './reconcile.js';
import { LABEL_INSTANCE } from './resources/common.js';
import { KIND, type KubeObject, type NPUModel } from './types.js';

type Log = Logger;

/** Informers of one kind over the configured namespaces, seen as one. */
class MultiInformer<T extends KubeObject> {
  constructor(readonly parts: Informer<T>[]) {}
  get(key: string): T | undefined {
    for (const p of this.parts) {
      const o = p.get(key);
      if (o) return o;
    }
    return undefined;
  }
  list(filter?: (o: T) => boolean): T[] {
    return this.parts.flatMap((p) => p.list(filter));
  }
  on(h: Parameters<Informer<T>['on']>[0]): void {
    for (const p of this.parts) p.on(h);
  }
}

export class Controller {
  readonly queue = new WorkQueue();
  private readonly informers: Informer<KubeObject>[] = [];
  readonly world: World;
  private readonly reconciler: Reconciler;
  private readonly resyncMs = 60_000;

  constructor(
    private readonly kube: OperatorApi,
    private readonly cfg: OperatorConfig,
    private readonly log: Log,
  ) {
    const scopes = cfg.namespaces.length ? cfg.namespaces : [null];
    const make = <T extends KubeObject>(source: Resource<KubeObject, 'list' | 'watch'>, labelSelector?: string) =>
      new MultiInformer<T>(scopes.map((ns) => {
        const inf = new Informer<T>(source as unknown as Resource<T, 'list' | 'watch'>, ns, labelSelector ? { labelSelector } : {}, log);
        this.informers.push(inf as unknown as Informer<KubeObject>);
        return inf;
      }));
    const managed = 'app.kubernetes.io/managed-by=npuserve-operator';
    const models = make<NPUModel>(kube.npumodels as unknown as Resource<KubeObject, 'list' | 'watch'>);
    const jobs = make<KubeObject>(kube.jobs, managed);
    const deployments = make<KubeObject>(kube.deployments, managed);
    const services = make<KubeObject>(kube.services, managed);
    const networkPolicies = make<KubeObject>(kube.networkpolicies, managed);
    const pods = make<KubeObject>(kube.pods, 'app.kubernetes.io/name=npuserve');
    this.world = { models, jobs, deployments, services, networkPolicies, pods } as unknown as World;

    const enqueue = (o: KubeObject) => this.queue.add(objectKey(o));
    models.on({ add: enqueue, update: (o, old) => o.metadata.resourceVersion !== old?.metadata.resourceVersion && enqueue(o), delete: enqueue });
    const enqueueOwner = (o: KubeObject) => {
      const ref = (o.metadata.ownerReferences ?? []).find((r) => r.controller && r.kind === KIND);
      const name = ref?.name ?? o.metadata.labels?.[LABEL_INSTANCE];
      if (name && o.metadata.namespace) this.queue.add(`${o.metadata.namespace}/${name}`);
    };
    for (const inf of [jobs, deployments, services, networkPolicies, pods]) inf.on({ add: enqueueOwner, update: enqueueOwner, delete: enqueueOwner });
    this.reconciler = new Reconciler(kube, this.world, cfg, new EventRecorder(kube, 'npuserve-operator', log), log, { stuckAfterMs: cfg.podStartTimeoutSeconds * 1000 });
  }

  /** Starts the informers (reading is safe before leadership) and waits for their first list. */
  async startInformers(signal: AbortSignal): Promise<void> {
    // Each informer's watch listens on the stop signal while it runs (6 per watched namespace).
    setMaxListeners(Math.max(getMaxListeners(signal), this.informers.length + 10), signal);
    for (const inf of this.informers) void inf.run(signal);
    await Promise.all(this.informers.map((i) => i.waitForSync()));
    // The operator reads and writes only these namespaces: an NPUModel elsewhere gets no status at all.
    this.log('caches synced', { watchedNamespaces: this.cfg.namespaces.length ? this.cfg.namespaces : 'all', informers: this.informers.map((i) => i.path) });
  }

  private async worker(): Promise<void> {
    for (let key = await this.queue.get(); key !== null; key = await this.queue.get()) {
      const end = reconcileDuration.startTimer();
      try {
        const r = await this.reconciler.reconcile(key);
        this.queue.forget(key);
        reconcileTotal.inc({ result: 'success' });
        if (r.requeueAfterMs) this.queue.addAfter(key, r.requeueAfterMs);
      } catch (e) {
        if (isConflict(e)) {
          // Someone (often our own previous write) changed the object after the cache's copy: the
          // watch event of that change enqueues the key again at once; the backoff is a fallback.
          reconcileTotal.inc({ result: 'conflict' });
          this.log.debug('conflict; requeued', { key, error: (e as Error).message });
        } else {
          reconcileTotal.inc({ result: 'error' });
          reconcileErrors.inc({ reason: e instanceof ApiError ? e.reason || `HTTP${e.status}` : 'ClientError' });
          this.log('reconcile failed; will retry', { key, error: (e as Error).message });
        }
        this.queue.addRateLimited(key);
      } finally {
        end();
        this.queue.done(key);
        queueDepth.set(this.queue.depth);
      }
    }
  }

  /** Runs `workers` reconcile loops until the queue shuts down; resyncs every model periodically. */
  async runWorkers(signal: AbortSignal): Promise<void> {
    for (const m of this.world.models.list()) this.queue.add(objectKey(m));
    const resync = setInterval(() => {
      for (const m of this.world.models.list()) this.queue.add(objectKey(m));
      queueDepth.set(this.queue.depth);
    }, this.resyncMs);
    signal.addEventListener('abort', () => {
      clearInterval(resync);
      this.queue.shutDown();
    }, { once: true });
    await Promise.all(Array.from({ length: this.cfg.workers }, () => this.worker()));
  }

  get kubeClient(): OperatorApi {
    return this.kube;
  }
}
