// One NPUModel, level-triggered: read the model and its children from the informer caches,
// converge the children (conversion Job, Deployment, Service, NetworkPolicy, cleanup Jobs), write
// status last.
// Running it twice changes nothing; no state lives only in memory.
import { createHash } from 'node:crypto';

import type { OperatorConfig } from './config.js';
import type { EventRecorder } from './events.js';
import type { Informer } from './informer.js';
import { isConflict, isNotFound } from './kube/client.js';
import type { OperatorApi } from './kube/operator-api.js';
import { cleanupJob, conversionJob, conversionJobName } from './resources/job.js';
import { LABEL_INSTANCE, LABEL_REVISION, placement, selectorString, serverSelector } from './resources/common.js';
import { deployment, endpoint, service, type RolloutStrategy } from './resources/deployment.js';
import { networkPolicy } from './resources/network-policy.js';
import { desiredRevision, type Revision } from './revision.js';
import { conversionOutcome, planRollout, rolloutComplete, unschedulable, type ConversionOutcome, type DeploymentView, type JobView, type PodView } from './rollout.js';
import { setCondition, statusEqual } from './status.js';
import type { KubeObject, NPUModel, NPUModelStatus, Phase, RevisionStatus } from './types.js';

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

type Log = (msg: string, fields?: Record<string, unknown>) => void;

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

export class Reconciler {
  constructor(
    private readonly kube: OperatorApi,
    private readonly world: World,
    private readonly cfg: OperatorConfig,
    private readonly events: EventRecorder,
    private readonly log: Log,
  ) {}

  async reconcile(key: string): Promise<ReconcileResult> {
    const cached = this.world.models.get(key);
    if (!cached) return {};
    const m = structuredClone(cached);
    if (m.metadata.deletionTimestamp) return this.finalize(m);
    const rev = desiredRevision(m, this.cfg.sources);
    if (typeof rev === 'string') return this.invalidSource(m, rev);
    if (!rev.prebuilt && !(m.metadata.finalizers ?? []).includes(FINALIZER)) {
      await this.kube.npumodels.mergePatch(m.metadata.namespace, m.metadata.name, { metadata: { finalizers: [...(m.metadata.finalizers ?? []), FINALIZER], resourceVersion: m.metadata.resourceVersion } });
      return {}; // the update event brings us back with the finalizer in place
    }

    let revisions = [...(m.status?.revisions ?? [])];
    let recorded: RevisionStatus | undefined = rev.prebuilt ? { name: rev.name, precision: rev.precision, artifact: rev.artifact } : revisions.find((r) => r.name === rev.name);
    let conversion: ConversionOutcome | undefined;
    if (!recorded) {
      conversion = await this.convert(m, rev);
      if (conversion.state === 'succeeded') {
        recorded = { name: rev.name, precision: rev.precision, artifact: rev.artifact, accuracy: conversion.accuracy, convertedAt: new Date().toISOString() };
        revisions = [recorded, ...revisions];
        const cos = conversion.accuracy?.cosineSimilarity;
        await this.events.record(m, 'Normal', 'Converted', `revision ${rev.name} converted to ${rev.precision}${cos !== undefined ? `, cosine similarity vs FP32 ${cos.toFixed(5)}` : ''}`);
      }
    }
    const serving = recorded ?? m.status?.currentRevision;
    let d = this.world.deployments.get(`${m.metadata.namespace}/${m.metadata.name}`);
    if (serving) {
      const servingRev: Revision = recorded ? rev : { ...rev, name: serving.name, precision: serving.precision as Revision['precision'], artifact: serving.artifact, prebuilt: false };
      d = await this.ensureDeployment(m, servingRev, d);
      await this.ensureService(m);
      if (this.cfg.networkPolicy.enabled) await this.ensureNetworkPolicy(m);
    }
    const status = this.status(m, rev, revisions, recorded, conversion, d);
    if (status.currentRevision?.name && status.currentRevision.name !== m.status?.currentRevision?.name) {
      await this.events.record(m, 'Normal', 'RolloutComplete', `revision ${status.currentRevision.name} (${status.currentRevision.precision}) serves all ${status.readyReplicas} replicas`);
      status.revisions = await this.prune(m, status.revisions ?? [], status.currentRevision.name);
    }
    await this.writeStatus(m, status);
    if (status.phase !== m.status?.phase) this.log('phase', { model: `${m.metadata.namespace}/${m.metadata.name}`, from: m.status?.phase, to: status.phase });
    return {};
  }

  private async invalidSource(m: NPUModel, message: string): Promise<ReconcileResult> {
    const now = new Date().toISOString();
    await this.events.record(m, 'Warning', 'InvalidSource', message);
    const conditions = setCondition(m.status?.conditions ?? [], { type: 'Converted', status: 'False', reason: 'InvalidSource', message, observedGeneration: m.metadata.generation }, now);
    await this.writeStatus(m, { ...m.status, observedGeneration: m.metadata.generation, phase: 'Failed', conditions });
    return {};
  }

  /** Creates the revision's conversion Job if needed and reads where it stands. */
  private async convert(m: NPUModel, rev: Revision): Promise<ConversionOutcome> {
    const name = conversionJobName(m, rev);
    const job = this.world.jobs.get(`${m.metadata.namespace}/${name}`);
    if (!job) {
      try {
        await this.kube.jobs.create(m.metadata.namespace, conversionJob(m, rev, this.cfg));
        await this.events.record(m, 'Normal', 'ConversionStarted', `converting ${m.spec.source.uri} to ${rev.precision} (revision ${rev.name}) in Job ${name}`);
      } catch (e) {
        if (!isConflict(e)) throw e; // already created (cache lag): read it next time
      }
      return { state: 'running', message: `conversion Job ${name} created` };
    }
    if (!ownedBy(job, m)) {
      await this.events.record(m, 'Warning', 'ConflictingObject', `Job ${name} exists and is not controlled by this NPUModel; leaving it alone`);
      return { state: 'failed', reason: 'ConversionFailed', message: `Job ${name} exists and is not controlled by this NPUModel` };
    }
    const pods = this.world.pods.list((p) => p.metadata.namespace === m.metadata.namespace && p.metadata.labels?.['job-name'] === name);
    const outcome = conversionOutcome(job, pods);
    if (outcome.state === 'failed') await this.events.record(m, 'Warning', outcome.reason, `revision ${rev.name}: ${outcome.message}`);
    return outcome;
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
    return m.spec.replicas ?? m.spec.autoscaling?.minReplicas ?? 1;
  }

  private async ensureDeployment(m: NPUModel, rev: Revision, d: (KubeObject & DeploymentView) | undefined) {
    const ns = m.metadata.namespace;
    const replicas = this.desiredReplicas(m);
    const currentStrategy = (d?.spec as { strategy?: { rollingUpdate?: RolloutStrategy } } | undefined)?.strategy?.rollingUpdate;
    const build = (strategy: RolloutStrategy) => deployment(m, rev, this.cfg, replicas, strategy);
    const templateHash = hashOf(build({ maxSurge: 1, maxUnavailable: 0 }).spec.template);
    if (!d) {
      const obj = build({ maxSurge: 1, maxUnavailable: 0 });
      (obj.metadata as Record<string, unknown>).annotations = { [SPEC_HASH]: templateHash };
      return (await this.kube.deployments.create(ns, obj as KubeObject)) as KubeObject & DeploymentView;
    }
    if (!ownedBy(d, m)) {
      await this.events.record(m, 'Warning', 'ConflictingObject', `Deployment ${m.metadata.name} exists and is not controlled by this NPUModel; leaving it alone`);
      return d;
    }
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
  private async ensureNetworkPolicy(m: NPUModel): Promise<void> {
    const ns = m.metadata.namespace;
    const want = networkPolicy(m, this.cfg);
    const have = this.world.networkPolicies.get(`${ns}/${m.metadata.name}`);
    if (!have) {
      try {
        await this.kube.networkpolicies.create(ns, want as KubeObject);
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
      return;
    }
    if (!ownedBy(have, m)) {
      await this.events.record(m, 'Warning', 'ConflictingObject', `NetworkPolicy ${m.metadata.name} exists and is not controlled by this NPUModel; leaving it alone`);
      return;
    }
    if (hashOf(sortedKeys(have.spec)) !== hashOf(sortedKeys(want.spec))) await this.kube.networkpolicies.mergePatch(ns, m.metadata.name, { spec: want.spec });
  }

  private async ensureService(m: NPUModel): Promise<void> {
    const ns = m.metadata.namespace;
    const want = service(m);
    const s = this.world.services.get(`${ns}/${m.metadata.name}`);
    if (!s) {
      try {
        await this.kube.services.create(ns, want as KubeObject);
      } catch (e) {
        if (!isConflict(e)) throw e;
      }
      return;
    }
    if (!ownedBy(s, m)) {
      await this.events.record(m, 'Warning', 'ConflictingObject', `Service ${m.metadata.name} exists and is not controlled by this NPUModel; leaving it alone`);
      return;
    }
    const spec = s.spec as { ports?: unknown; selector?: unknown };
    if (hashOf({ p: spec.ports, s: spec.selector }) !== hashOf({ p: want.spec.ports, s: want.spec.selector })) {
      const ports = want.spec.ports.map((p) => ({ ...p }));
      await this.kube.services.mergePatch(ns, m.metadata.name, { spec: { selector: want.spec.selector, ports } });
    }
  }

  private status(
    m: NPUModel,
    rev: Revision,
    revisions: RevisionStatus[],
    recorded: RevisionStatus | undefined,
    conversion: ConversionOutcome | undefined,
    d: (KubeObject & DeploymentView) | undefined,
  ): NPUModelStatus {
    const now = new Date().toISOString();
    const gen = m.metadata.generation;
    const desired = this.desiredReplicas(m);
    const ready = d?.status?.readyReplicas ?? 0;
    const servingName = d?.spec?.template?.metadata?.labels?.[LABEL_REVISION];
    const complete = !!d && !!recorded && servingName === recorded.name && rolloutComplete(d);
    const current = complete ? recorded : m.status?.currentRevision;
    const target = current?.name === rev.name ? undefined : { name: rev.name, precision: rev.precision, artifact: rev.artifact };
    const serverPods = this.world.pods.list((p) => p.metadata.namespace === m.metadata.namespace && p.metadata.labels?.[LABEL_INSTANCE] === m.metadata.name && !p.metadata.labels?.['job-name']);
    const pendingReason = serverPods.map(unschedulable).find(Boolean);
    const failed = conversion?.state === 'failed' ? conversion : undefined;

    let conditions = m.status?.conditions ?? [];
    conditions = setCondition(conditions, recorded
      ? { type: 'Converted', status: 'True', reason: rev.prebuilt ? 'Prebuilt' : 'Converted', message: `revision ${rev.name} (${rev.precision}) at ${rev.artifact}`, observedGeneration: gen }
      : failed
        ? { type: 'Converted', status: 'False', reason: failed.reason, message: `revision ${rev.name}: ${failed.message}${current ? `; revision ${current.name} keeps serving` : ''}`, observedGeneration: gen }
        : { type: 'Converted', status: 'False', reason: 'Converting', message: conversion?.state === 'running' ? conversion.message : 'waiting for conversion', observedGeneration: gen }, now);
    conditions = setCondition(conditions, ready > 0
      ? { type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable', message: `${ready} of ${desired} replicas ready`, observedGeneration: gen }
      : { type: 'Available', status: 'False', reason: pendingReason ? 'Unschedulable' : 'NoReadyReplicas', message: pendingReason ?? (d ? 'no serving pod is ready yet' : 'nothing to serve until a revision is converted'), observedGeneration: gen }, now);
    const rolling = !!d && !!recorded && !complete;
    conditions = setCondition(conditions, !recorded && !failed
      ? { type: 'Progressing', status: 'True', reason: 'Converting', message: `converting revision ${rev.name}`, observedGeneration: gen }
      : rolling
        ? { type: 'Progressing', status: 'True', reason: 'RollingOut', message: `rolling out revision ${recorded!.name}: ${d!.status?.updatedReplicas ?? 0} of ${desired} updated`, observedGeneration: gen }
        : { type: 'Progressing', status: 'False', reason: failed ? failed.reason : 'RolloutComplete', message: failed ? 'the new revision failed; nothing rolls' : `revision ${current?.name} is rolled out`, observedGeneration: gen }, now);
    const degraded = failed ? failed.message : ready > 0 && ready < desired && !rolling ? `${ready} of ${desired} replicas ready` : '';
    conditions = setCondition(conditions, degraded
      ? { type: 'Degraded', status: 'True', reason: failed ? failed.reason : 'ReplicasUnavailable', message: degraded, observedGeneration: gen }
      : { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '', observedGeneration: gen }, now);

    let phase: Phase;
    if (!current && !recorded) phase = failed ? 'Failed' : conversion?.state === 'running' && conversion.message.includes('pending') ? 'Pending' : 'Converting';
    else if (ready === 0) phase = pendingReason ? 'Pending' : 'Deploying';
    else phase = degraded ? 'Degraded' : 'Ready';

    return {
      observedGeneration: gen,
      phase,
      conditions,
      currentRevision: current,
      targetRevision: target,
      revisions,
      replicas: d?.status?.replicas ?? 0,
      readyReplicas: ready,
      selector: selectorString(serverSelector(m)),
      endpoint: d ? endpoint(m) : undefined,
      autoscaler: m.status?.autoscaler,
    };
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
      const job = cleanupJob(m, this.cfg, [], 'all');
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

