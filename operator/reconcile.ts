// One NPUModel, level-triggered: read the model and its children from the informer caches,
// converge the children (conversion Job, Deployment, Service, NetworkPolicy, cleanup Jobs), write
// status last.
// Running it twice changes nothing; no state lives only in memory.
import { createHash } from 'node:crypto';

import type { Logger } from '../common/log.js';
import type { OperatorConfig } from './config.js';
import type { EventRecorder } from './events.js';
import type { Informer } from './informer.js';
import { isAlreadyExists, isConflict, isNotFound } from './kube/client.js';
import { conversionDuration, exportModelState, forgetModel } from './metrics.js';
import type { OperatorApi } from './kube/operator-api.js';
import { cleanupJob, conversionJob, conversionJobName } from './resources/job.js';
import { LABEL_COMPONENT, LABEL_INSTANCE, LABEL_REVISION, modelNameProblem, placement, selectorString } from './resources/common.js';
import { deployment, service, type RolloutStrategy } from './resources/deployment.js';
import { networkPolicy } from './resources/network-policy.js';
import { podSizing, type PodSizing } from './resources/sizing.js';
import { desiredRevision, type Revision } from './revision.js';
import { conversionOutcome, planRollout, STUCK_ANNOTATION, type ConversionOutcome, type DeploymentView, type JobView, type PodView } from './rollout.js';
import { condition, modelStatus, setCondition, statusEqual, UNKNOWN_PRECISION } from './status.js';
import type { KubeObject, NPUModel, NPUModelStatus, RevisionStatus } from './types.js';

export const FINALIZER = 'npuserve.io/artifacts';
const SPEC_HASH = 'npuserve.io/template-hash';

export interface World {
  models: Informer<NPUModel>;
  jobs: Informer<KubeObject & JobView>;
  deployments: Informer<KubeObject & DeploymentView>;
  services: Informer<KubeObject>;
  networkPolicies: Informer<KubeObject>;
  pods: Informer<KubeObject & PodView>;
}

export interface ReconcileResult {
  requeueAfterMs?: number;
}

export interface ReconcilerOptions {
  /** A pod placed on a node but not started after this long is stuck (a mount or image that fails); default never. */
  stuckAfterMs?: number;
  /** The clock (ms since the epoch); tests pass their own. */
  now?: () => number;
}


const hashOf = (v: unknown) => createHash('sha256').update(JSON.stringify(v)).digest('hex').slice(0, 16);

/** The value with object keys in sorted order: the API server returns fields in its own order. */
function sortedKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortedKeys);
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1)).map(([k, x]) => [k, sortedKeys(x)]));
}

function ownedBy(o: KubeObject, m: NPUModel): boolean {
  return (o.metadata.ownerReferences ?? []).some((r) => r.controller && r.uid === m.metadata.uid);
}

function observeConversion(m: NPUModel, result: string, seconds: number): void {
  conversionDuration.observe({ namespace: m.metadata.namespace ?? '', model: m.metadata.name, result }, seconds);
}

export class Reconciler {
  private readonly stuckAfterMs: number;
  private readonly now: () => number;

  constructor(
    private readonly kube: OperatorApi,
    private readonly world: World,
    private readonly cfg: OperatorConfig,
    private readonly events: EventRecorder,
    private readonly log: Logger,
    opts: ReconcilerOptions = {},
  ) {
    this.stuckAfterMs = opts.stuckAfterMs ?? Infinity;
    this.now = opts.now ?? Date.now;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const cached = this.world.models.get(key);
    if (!cached) {
      const [namespace, name] = key.split('/');
      forgetModel(namespace, name);
      return {};
    }
    const m = structuredClone(cached);
    if (m.metadata.deletionTimestamp) {
      forgetModel(m.metadata.namespace ?? '', m.metadata.name);
      return this.finalize(m);
    }
    const badName = modelNameProblem(m.metadata.name);
    if (badName) return this.refuse(m, 'InvalidName', badName);
    const rev = desiredRevision(m, this.cfg.sources);
    if (typeof rev === 'string') return this.refuse(m, 'InvalidSource', rev);
    if (!rev.prebuilt && !(m.metadata.finalizers ?? []).includes(FINALIZER)) {
      await this.kube.npumodels.mergePatch(m.metadata.namespace, m.metadata.name, { metadata: { finalizers: [...(m.metadata.finalizers ?? []), FINALIZER], resourceVersion: m.metadata.resourceVersion } });
      return {}; // the update event brings us back with the finalizer in place
    }

    let revisions = [...(m.status?.revisions ?? [])];
    let recorded = revisions.find((r) => r.name === rev.name);
    let conversion: ConversionOutcome | undefined;
    if (!recorded) {
      conversion = await this.convert(m, rev);
      if (conversion.state === 'succeeded') {
        // A prebuilt file's precision is what its header says (the inspection reports it), never the spec's.
        recorded = { name: rev.name, precision: conversion.precision ?? (rev.prebuilt ? UNKNOWN_PRECISION : rev.precision), artifact: rev.artifact, accuracy: conversion.accuracy, model: conversion.model, convertedAt: new Date(this.now()).toISOString() };
        revisions = [recorded, ...revisions];
      }
    }
    const serving = recorded ?? m.status?.currentRevision;
    const conflicts: string[] = [];
    let d: (KubeObject & DeploymentView) | undefined;
    let insufficientMemory: string | undefined;
    if (serving) {
      const servingRev: Revision = recorded ? rev : { ...rev, name: serving.name, precision: serving.precision as Revision['precision'], artifact: serving.artifact, prebuilt: false };
      const sizing = podSizing(m, serving.model, serving.name);
      insufficientMemory = sizing.insufficientMemory;
      d = await this.ensureDeployment(m, servingRev, sizing, conflicts);
      await this.ensureService(m, conflicts);
      if (this.cfg.networkPolicy.enabled) await this.ensureNetworkPolicy(m, conflicts);
    }
    const serverPods = this.world.pods.list((p) => p.metadata.namespace === m.metadata.namespace && p.metadata.labels?.[LABEL_INSTANCE] === m.metadata.name && p.metadata.labels?.[LABEL_COMPONENT] === 'server');
    const status = modelStatus({ model: m, revision: rev, revisions, recorded, conversion, deployment: d, serverPods, desiredReplicas: this.desiredReplicas(m), now: new Date(this.now()).toISOString(), stuckAfterMs: this.stuckAfterMs, conflicts, insufficientMemory });
    const rolledOut = status.currentRevision?.name && status.currentRevision.name !== m.status?.currentRevision?.name;
    if (rolledOut) status.revisions = await this.prune(m, status.revisions ?? [], status.currentRevision!.name);
    await this.writeStatus(m, status);
    exportModelState(m, status, this.desiredReplicas(m));
    // Events follow the status write that records them: a write lost to a conflict records nothing,
    // and the retry records each once.
    await this.recordTransitions(m, rev, status, conversion);
    if (status.phase !== m.status?.phase) this.log('phase', { model: `${m.metadata.namespace}/${m.metadata.name}`, from: m.status?.phase, to: status.phase });
    return conversion?.state === 'running' && !conversion.pending && Number.isFinite(this.stuckAfterMs) ? { requeueAfterMs: this.stuckAfterMs } : {};
  }

  /** Events for what changed between the stored status and the one just written. */
  private async recordTransitions(m: NPUModel, rev: Revision, status: NPUModelStatus, conversion: ConversionOutcome | undefined): Promise<void> {
    const before = condition(m.status?.conditions, 'Converted');
    const after = condition(status.conditions, 'Converted');
    if (conversion?.state === 'succeeded') {
      if (conversion.durationSeconds !== undefined) observeConversion(m, 'succeeded', conversion.durationSeconds);
      const r = status.revisions?.find((x) => x.name === rev.name);
      const cos = r?.accuracy?.cosineSimilarity;
      if (rev.prebuilt) await this.events.record(m, 'Normal', 'Inspected', `revision ${rev.name}: prebuilt ${rev.artifact} is ${r?.precision}`);
      else await this.events.record(m, 'Normal', 'Converted', `revision ${rev.name} converted to ${rev.precision}${cos !== undefined ? `, cosine similarity vs FP32 ${cos.toFixed(5)}` : ''}`);
      if (rev.prebuilt && r && r.precision !== rev.precision && r.precision !== UNKNOWN_PRECISION) await this.events.record(m, 'Warning', 'PrecisionMismatch', `spec.precision is ${rev.precision} but the prebuilt ${rev.artifact} is ${r.precision}; it serves as ${r.precision} (a prebuilt .npu is not converted)`);
    }
    if (conversion?.state === 'failed' && conversion.durationSeconds !== undefined && before?.reason !== after?.reason) observeConversion(m, conversion.reason, conversion.durationSeconds);
    if (after?.status === 'False' && after.reason !== 'Converting' && (before?.reason !== after.reason || before?.message !== after.message)) await this.events.record(m, 'Warning', after.reason ?? 'ConversionFailed', after.message ?? '');
    const degradedBefore = condition(m.status?.conditions, 'Degraded');
    const degraded = condition(status.conditions, 'Degraded');
    if (degraded?.reason === 'InsufficientMemory' && (degradedBefore?.reason !== degraded.reason || degradedBefore.message !== degraded.message)) await this.events.record(m, 'Warning', 'InsufficientMemory', degraded.message ?? '');
    const current = status.currentRevision;
    if (current?.name && current.name !== m.status?.currentRevision?.name) {
      const ready = status.readyReplicas ?? 0;
      const desired = this.desiredReplicas(m);
      await this.events.record(m, 'Normal', 'RolloutComplete', `revision ${current.name} (${current.precision}) serves ${ready === desired ? `all ${desired}` : `${ready} of ${desired}`} replicas`);
    }
  }

  /** A model the operator cannot act on: a condition and an event saying why, phase Failed, no children. */
  private async refuse(m: NPUModel, reason: 'InvalidName' | 'InvalidSource', message: string): Promise<ReconcileResult> {
    const now = new Date(this.now()).toISOString();
    const conditions = setCondition(m.status?.conditions ?? [], { type: 'Converted', status: 'False', reason, message, observedGeneration: m.metadata.generation }, now);
    const status = { ...m.status, observedGeneration: m.metadata.generation, phase: 'Failed' as const, conditions };
    exportModelState(m, status, 0);
    if (statusEqual(m.status, JSON.parse(JSON.stringify(status)))) return {};
    await this.writeStatus(m, status);
    await this.events.record(m, 'Warning', reason, message);
    return {};
  }

  /** Creates the revision's conversion (or inspection) Job if needed and reads where it stands. */
  private async convert(m: NPUModel, rev: Revision): Promise<ConversionOutcome> {
    const name = conversionJobName(m, rev);
    const job = this.world.jobs.get(`${m.metadata.namespace}/${name}`);
    const foreignJob = async (): Promise<ConversionOutcome> => {
      await this.events.record(m, 'Warning', 'ConflictingObject', `Job ${name} exists and is not controlled by this NPUModel; leaving it alone`);
      return { state: 'failed', reason: 'ConversionFailed', message: `Job ${name} exists and is not controlled by this NPUModel` };
    };
    if (!job) {
      const created = await this.createChild(this.kube.jobs, m, conversionJob(m, rev, this.cfg));
      if (!created) return foreignJob();
      if (created.fresh) await this.events.record(m, 'Normal', 'ConversionStarted', rev.prebuilt ? `inspecting prebuilt ${rev.artifact} (revision ${rev.name}) in Job ${name}` : `converting ${m.spec.source.uri} to ${rev.precision} (revision ${rev.name}) in Job ${name}`);
      return { state: 'running', message: `${rev.prebuilt ? 'inspection' : 'conversion'} Job ${name} created` };
    }
    if (!ownedBy(job, m)) return foreignJob();
    const pods = this.world.pods.list((p) => p.metadata.namespace === m.metadata.namespace && p.metadata.labels?.['job-name'] === name);
    const outcome = conversionOutcome(job, pods, this.now(), this.stuckAfterMs);
    if (outcome.state !== 'stuck') return outcome;
    // Suspending the Job deletes its pod, which frees the NPU; the annotation keeps the reason.
    const message = `${outcome.message}; Job ${name} is suspended to free its NPU: fix the cause, then delete the Job to retry`;
    await this.kube.jobs.mergePatch(m.metadata.namespace, name, { metadata: { annotations: { [STUCK_ANNOTATION]: message } }, spec: { suspend: true } });
    return { state: 'failed', reason: 'ConversionStuck', message };
  }

  /** Sum of free NPU allotments on nodes the model may use. */
  private async spareNpus(m: NPUModel): Promise<number> {
    const pl = placement(m, this.cfg);
    const nodes = await this.kube.nodes.list(null, { labelSelector: selectorString(pl.nodeSelector) });
    const names = new Set(nodes.items.filter((n) => !n.spec?.unschedulable).map((n) => n.metadata.name));
    let free = nodes.items.filter((n) => names.has(n.metadata.name)).reduce((s, n) => s + Number(n.status?.allocatable?.[pl.npuResourceName] ?? 0), 0);
    const pods = await this.kube.allPods.list(null, {
      fieldSelector: 'status.phase!=Succeeded,status.phase!=Failed',
    });
    for (const p of pods.items) {
      if (!p.spec?.nodeName || !names.has(p.spec.nodeName)) continue;
      for (const c of p.spec.containers) free -= Number(c.resources?.requests?.[pl.npuResourceName] ?? 0);
    }
    return free;
  }

  private desiredReplicas(m: NPUModel): number {
    // An autoscaled model starts at one replica even with minReplicas 0 (it goes to zero when idle).
    return m.spec.replicas ?? Math.max(1, m.spec.autoscaling?.minReplicas ?? 1);
  }

  /**
   * Creates a child. When one of its name exists that the cache has not shown (a create racing the
   * watch, or a foreign object without our labels), reads it: ours is returned, a foreign one is
   * undefined (the caller reports it).
   */
  private async createChild<T extends KubeObject>(res: { create(ns: string | undefined, obj: object): Promise<KubeObject>; get(ns: string | undefined, name: string): Promise<KubeObject> }, m: NPUModel, obj: { metadata: { name: string } }): Promise<{ obj: T; fresh: boolean } | undefined> {
    try {
      return { obj: (await res.create(m.metadata.namespace, obj)) as T, fresh: true };
    } catch (e) {
      if (!isAlreadyExists(e)) throw e;
      const existing = (await res.get(m.metadata.namespace, obj.metadata.name)) as T;
      return ownedBy(existing, m) ? { obj: existing, fresh: false } : undefined;
    }
  }

  /** A child of the model's name that another owner controls: left alone, reported as an event and in the status. */
  private async foreign(m: NPUModel, kind: string, conflicts: string[]): Promise<undefined> {
    const message = `${kind} ${m.metadata.name} exists and is not controlled by this NPUModel; leaving it alone`;
    conflicts.push(message);
    await this.events.record(m, 'Warning', 'ConflictingObject', message);
    return undefined;
  }

  /**
   * Creates or updates the serving Deployment. A template whose memory limit the model does not fit
   * is never applied: without a Deployment none is created, else the pods it runs keep serving (and
   * keep following spec.replicas).
   */
  private async ensureDeployment(m: NPUModel, rev: Revision, sizing: PodSizing, conflicts: string[]): Promise<(KubeObject & DeploymentView) | undefined> {
    const ns = m.metadata.namespace;
    const d = this.world.deployments.get(`${ns}/${m.metadata.name}`);
    const replicas = this.desiredReplicas(m);
    if (sizing.insufficientMemory) {
      if (!d) return undefined;
      if (!ownedBy(d, m)) return this.foreign(m, 'Deployment', conflicts);
      if (d.spec?.replicas === replicas) return d;
      const scaled = structuredClone(d);
      scaled.spec = { ...scaled.spec, replicas };
      return (await this.kube.deployments.replace(ns, m.metadata.name, scaled)) as KubeObject & DeploymentView;
    }
    const currentStrategy = (d?.spec as { strategy?: { rollingUpdate?: RolloutStrategy } } | undefined)?.strategy?.rollingUpdate;
    const build = (strategy: RolloutStrategy) => deployment(m, rev, this.cfg, replicas, strategy, sizing);
    const templateHash = hashOf(build({ maxSurge: 1, maxUnavailable: 0 }).spec.template);
    if (!d) {
      const obj = build({ maxSurge: 1, maxUnavailable: 0 });
      (obj.metadata as Record<string, unknown>).annotations = { [SPEC_HASH]: templateHash };
      const created = await this.createChild<KubeObject & DeploymentView>(this.kube.deployments, m, obj);
      return created ? created.obj : this.foreign(m, 'Deployment', conflicts);
    }
    if (!ownedBy(d, m)) return this.foreign(m, 'Deployment', conflicts);
    const templateChanged = d.metadata.annotations?.[SPEC_HASH] !== templateHash;
    if (!templateChanged && d.spec?.replicas === replicas) return d;
    let strategy: RolloutStrategy = { maxSurge: currentStrategy?.maxSurge ?? 1, maxUnavailable: currentStrategy?.maxUnavailable ?? 0 };
    if (templateChanged) {
      const pl = placement(m, this.cfg);
      const plan = planRollout(await this.spareNpus(m), pl.npusPerReplica, d.status?.readyReplicas ?? 0);
      strategy = plan.strategy;
      const from = d.spec?.template?.metadata?.labels?.[LABEL_REVISION];
      if (from !== rev.name) {
        await this.events.record(m, 'Normal', 'RolloutStarted', `rolling from revision ${from} to ${rev.name} (${rev.precision}) with maxSurge ${strategy.maxSurge}, maxUnavailable ${strategy.maxUnavailable}`);
        if (plan.pausesServing) await this.events.record(m, 'Warning', 'RolloutPausesServing', `no spare ${pl.npuResourceName} for a surge pod and only one replica: serving pauses while it is replaced`);
      }
    }
    const obj = build(strategy);
    const updated = { ...obj, metadata: { ...obj.metadata, resourceVersion: d.metadata.resourceVersion, annotations: { ...d.metadata.annotations, [SPEC_HASH]: templateHash } } };
    if (!templateChanged) updated.spec.strategy = { type: 'RollingUpdate', rollingUpdate: strategy };
    return (await this.kube.deployments.replace(ns, m.metadata.name, updated as KubeObject)) as KubeObject & DeploymentView;
  }

  /** The serving pods' NetworkPolicy: created, or its spec patched back when it drifted. */
  private async ensureNetworkPolicy(m: NPUModel, conflicts: string[]): Promise<void> {
    const ns = m.metadata.namespace;
    const want = networkPolicy(m, this.cfg);
    const have = this.world.networkPolicies.get(`${ns}/${m.metadata.name}`);
    if (!have) {
      if (!(await this.createChild(this.kube.networkpolicies, m, want))) await this.foreign(m, 'NetworkPolicy', conflicts);
      return;
    }
    if (!ownedBy(have, m)) return void (await this.foreign(m, 'NetworkPolicy', conflicts));
    if (hashOf(sortedKeys(have.spec)) !== hashOf(sortedKeys(want.spec))) await this.kube.networkpolicies.mergePatch(ns, m.metadata.name, { spec: want.spec });
  }

  private async ensureService(m: NPUModel, conflicts: string[]): Promise<void> {
    const ns = m.metadata.namespace;
    const want = service(m);
    const s = this.world.services.get(`${ns}/${m.metadata.name}`);
    if (!s) {
      if (!(await this.createChild(this.kube.services, m, want))) await this.foreign(m, 'Service', conflicts);
      return;
    }
    if (!ownedBy(s, m)) return void (await this.foreign(m, 'Service', conflicts));
    const spec = s.spec as { ports?: unknown; selector?: unknown };
    if (hashOf({ p: spec.ports, s: spec.selector }) !== hashOf({ p: want.spec.ports, s: want.spec.selector })) {
      const ports = want.spec.ports.map((p) => ({ ...p }));
      await this.kube.services.mergePatch(ns, m.metadata.name, { spec: { selector: want.spec.selector, ports } });
    }
  }

  /** Keeps the current revision and the newest `revisionHistoryLimit` others; deletes the rest's artifacts. */
  private async prune(m: NPUModel, revisions: RevisionStatus[], current: string): Promise<RevisionStatus[]> {
    const others = revisions.filter((r) => r.name !== current);
    const keep = [revisions.find((r) => r.name === current)!, ...others.slice(0, this.cfg.revisionHistoryLimit)].filter(Boolean);
    if (keep.length === revisions.length) return revisions;
    const names = keep.map((r) => r.name);
    const job = cleanupJob(m, this.cfg, names, hashOf(names).slice(0, 8));
    try {
      await this.kube.jobs.create(m.metadata.namespace, job as KubeObject);
      await this.events.record(m, 'Normal', 'ArtifactsPruned', `deleting artifacts of revisions ${revisions.filter((r) => !names.includes(r.name)).map((r) => r.name).join(', ')}`);
    } catch (e) {
      if (!isConflict(e)) throw e;
    }
    return keep;
  }

  /** Deletion: the artifacts live outside garbage collection, so a cleanup Job runs before the finalizer goes. */
  private async finalize(m: NPUModel): Promise<ReconcileResult> {
    if (!(m.metadata.finalizers ?? []).includes(FINALIZER)) return {};
    const ns = m.metadata.namespace;
    const converted = (m.status?.revisions ?? []).length > 0;
    if (converted) {
      // The model's uid in the name: a model deleted and created again under its name gets its own Job.
      const job = cleanupJob(m, this.cfg, [], `all-${(m.metadata.uid ?? '').slice(0, 8)}`);
      const existing = this.world.jobs.get(`${ns}/${job.metadata.name}`) as (KubeObject & JobView) | undefined;
      if (!existing) {
        try {
          await this.kube.jobs.create(ns, job as KubeObject);
        } catch (e) {
          if (!isConflict(e)) throw e;
        }
        return { requeueAfterMs: 2000 };
      }
      const s = existing.status ?? {};
      if (!s.succeeded && !(s.failed && s.failed > 2)) return { requeueAfterMs: 2000 };
      if (!s.succeeded) await this.events.record(m, 'Warning', 'CleanupFailed', `could not delete the artifacts of ${m.metadata.name}; remove them from claim ${this.cfg.artifactClaim} by hand`);
    }
    try {
      await this.kube.npumodels.mergePatch(m.metadata.namespace, m.metadata.name, { metadata: { finalizers: (m.metadata.finalizers ?? []).filter((f) => f !== FINALIZER), resourceVersion: m.metadata.resourceVersion } });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
    return {};
  }

  private async writeStatus(m: NPUModel, status: NPUModelStatus): Promise<void> {
    const clean = JSON.parse(JSON.stringify(status)) as NPUModelStatus;
    if (statusEqual(m.status, clean)) return;
    await this.kube.npumodelStatus.replace(m.metadata.namespace, m.metadata.name, { ...m, status: clean });
  }
}

