// An NPUModel's status as a pure function of what the reconciler observed (the model, the desired
// revision, the conversion's outcome, the Deployment and the serving pods): phase, the four standard
// conditions with a reason and a message a user can act on, and the revision bookkeeping. Also the
// condition helpers and the comparison that keeps status writes to real changes.
import { SPEC_DEFAULTS } from '../common/defaults.js';
import { LABEL_REVISION, selectorString, serverSelector } from './resources/common.js';
import { endpoint } from './resources/deployment.js';
import { failing, stuckPod, unschedulable, type ConversionOutcome, type DeploymentView, type PodView } from './rollout.js';
import type { Condition, NPUModel, NPUModelStatus, Phase, RevisionStatus } from './types.js';

export type ConditionType = 'Converted' | 'Available' | 'Progressing' | 'Degraded';

export function setCondition(conditions: Condition[], c: Omit<Condition, 'lastTransitionTime'>, now: string): Condition[] {
  const old = conditions.find((x) => x.type === c.type);
  const lastTransitionTime = old && old.status === c.status ? old.lastTransitionTime : now;
  return [...conditions.filter((x) => x.type !== c.type), { ...c, lastTransitionTime }].sort((a, b) => a.type.localeCompare(b.type));
}

export function condition(conditions: Condition[] | undefined, type: ConditionType): Condition | undefined {
  return conditions?.find((c) => c.type === type);
}

function stable(v: unknown): string {
  return JSON.stringify(v, (_k, val) => (val && typeof val === 'object' && !Array.isArray(val) ? Object.fromEntries(Object.entries(val).sort(([a], [b]) => a.localeCompare(b))) : val));
}

export function statusEqual(a: NPUModelStatus | undefined, b: NPUModelStatus): boolean {
  return stable(a ?? {}) === stable(b);
}

/** A prebuilt file's precision before (or without) an inspection that read it. */
export const UNKNOWN_PRECISION = 'unknown';

/** What the reconciler observed; everything the status is computed from. */
export interface StatusInputs {
  model: NPUModel;
  /** The revision the spec asks for (precision as the spec says; a prebuilt's real one is in `recorded`). */
  revision: { name: string; precision: string; artifact: string; prebuilt: boolean };
  /** Converted (or inspected) revisions, newest first. */
  revisions: RevisionStatus[];
  /** The desired revision's entry in `revisions` once it is converted (or inspected). */
  recorded?: RevisionStatus;
  /** Where the desired revision's Job stands, when it has not been recorded before this reconcile. */
  conversion?: ConversionOutcome;
  deployment?: DeploymentView;
  /** Pods of the serving Deployment (all revisions). */
  serverPods: PodView[];
  desiredReplicas: number;
  now: string;
  /** A placed serving pod not started after this long is reported (ServerFailing); default never. */
  stuckAfterMs?: number;
  /** Children of the model's name that another owner controls (`Service tiny exists and is not controlled ...`). */
  conflicts?: string[];
  /** The serving pod's memory limit is below what the model needs, so no pod was rolled (reason InsufficientMemory). */
  insufficientMemory?: string;
}

/** The Deployment runs `revision` only: its template is observed and no pod of another revision is left. */
function onlyRevision(d: DeploymentView, revision: string): boolean {
  const s = d.status ?? {};
  return d.spec?.template?.metadata?.labels?.[LABEL_REVISION] === revision && (s.observedGeneration ?? 0) >= (d.metadata.generation ?? 0) && (s.updatedReplicas ?? 0) === (s.replicas ?? 0);
}

/** `revision` serves: only its pods are left and one is available (or none is wanted). */
function rolledOut(d: DeploymentView, revision: string): boolean {
  return onlyRevision(d, revision) && ((d.status?.availableReplicas ?? 0) > 0 || (d.spec?.replicas ?? 1) === 0);
}

type NewCondition = Omit<Condition, 'lastTransitionTime' | 'observedGeneration'>;

function convertedCondition(i: StatusInputs, current: RevisionStatus | undefined): NewCondition {
  const { revision: rev, recorded, conversion } = i;
  if (recorded) {
    const mismatch = rev.prebuilt && recorded.precision !== rev.precision && recorded.precision !== UNKNOWN_PRECISION ? `; spec.precision ${rev.precision} does not apply to a prebuilt .npu, it serves as converted (${recorded.precision})` : '';
    return { type: 'Converted', status: 'True', reason: rev.prebuilt ? 'Prebuilt' : 'Converted', message: `revision ${rev.name} (${recorded.precision}) at ${recorded.artifact}${mismatch}` };
  }
  if (conversion?.state === 'failed') return { type: 'Converted', status: 'False', reason: conversion.reason, message: `revision ${rev.name}: ${conversion.message}${current ? `; revision ${current.name} keeps serving` : ''}` };
  return { type: 'Converted', status: 'False', reason: 'Converting', message: conversion?.state === 'running' ? conversion.message : 'waiting for conversion' };
}

/** What the conditions and the phase are decided from, computed once from the inputs. */
interface Seen {
  ready: number;
  desired: number;
  current?: RevisionStatus;
  failed?: Extract<ConversionOutcome, { state: 'failed' }>;
  /** A rollout replaces pods of another revision. */
  rolling: boolean;
  /** Serving replicas are missing with no rollout to explain it. */
  short: boolean;
  /** `N of M replicas cannot be scheduled: <the scheduler's reason>`, or ''. */
  unplaced: string;
  /** A serving pod that cannot run, or ''. */
  crashing: string;
  /** Children held by another owner, or ''. */
  conflict: string;
  /** Why the pod template was not applied (the memory limit), or ''. */
  insufficient: string;
}

function observe(i: StatusInputs): Seen {
  const { recorded, deployment: d, desiredReplicas: desired } = i;
  const ready = d?.status?.readyReplicas ?? 0;
  const complete = !!d && !!recorded && rolledOut(d, recorded.name);
  const current = complete ? recorded : i.model.status?.currentRevision;
  const pending = i.serverPods.filter((p) => !p.metadata.deletionTimestamp).map(unschedulable).filter((x): x is string => !!x);
  const stuck = (p: PodView) => stuckPod(p, Date.parse(i.now), i.stuckAfterMs ?? Infinity);
  const replacing = !!d && !!recorded && !onlyRevision(d, recorded.name);
  return {
    ready,
    desired,
    current,
    failed: i.conversion?.state === 'failed' ? i.conversion : undefined,
    rolling: !!d && !!recorded && !complete && !i.insufficientMemory,
    short: !replacing && ready < desired && (ready > 0 || !!current),
    unplaced: pending.length ? `${pending.length} of ${desired} replicas cannot be scheduled: ${pending[0]}` : '',
    crashing: i.serverPods.map(failing).find(Boolean) ?? i.serverPods.map(stuck).find(Boolean) ?? '',
    conflict: (i.conflicts ?? []).join('; '),
    insufficient: i.insufficientMemory ?? '',
  };
}

function availableCondition(i: StatusInputs, o: Seen): NewCondition {
  const no = (reason: string, message: string): NewCondition => ({ type: 'Available', status: 'False', reason, message });
  if (o.ready > 0) return { type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable', message: `${o.ready} of ${o.desired} replicas ready` };
  if (o.conflict) return no('ConflictingObject', o.conflict);
  if (o.insufficient) return no('InsufficientMemory', o.insufficient);
  if (o.unplaced) return no('Unschedulable', o.unplaced);
  if (o.crashing) return no('ServerFailing', o.crashing);
  if (o.desired === 0 && o.current) return no('ScaledToZero', scaledToZeroMessage(i.model, o.current));
  return no('NoReadyReplicas', i.deployment ? 'no serving pod is ready yet' : 'nothing to serve until a revision is converted');
}

/** Why a converted model has no replica: its autoscaler found it idle, or spec.replicas is 0. */
function scaledToZeroMessage(m: NPUModel, current: RevisionStatus): string {
  const a = m.spec.autoscaling;
  const why = a && (a.minReplicas ?? 1) === 0 ? `no requests for ${a.scaleToZeroAfterSeconds ?? SPEC_DEFAULTS.autoscaling.scaleToZeroAfterSeconds} s (autoscaling.scaleToZeroAfterSeconds)` : 'spec.replicas is 0';
  return `scaled to zero replicas: ${why}; revision ${current.name} stays converted, and a request through the gateway starts a replica`;
}

function progressingCondition(i: StatusInputs, o: Seen): NewCondition {
  if (!i.recorded && !o.failed) return { type: 'Progressing', status: 'True', reason: 'Converting', message: `converting revision ${i.revision.name}` };
  if (o.insufficient) return { type: 'Progressing', status: 'False', reason: 'InsufficientMemory', message: 'the pod template is not rolled out: its memory limit is below what the model needs' };
  if (o.rolling) {
    const updated = `${i.deployment?.status?.updatedReplicas ?? 0} of ${o.desired} updated`;
    return { type: 'Progressing', status: 'True', reason: o.unplaced ? 'Unschedulable' : 'RollingOut', message: `rolling out revision ${i.recorded!.name}: ${updated}${o.unplaced ? `; ${o.unplaced}` : ''}` };
  }
  if (o.failed) return { type: 'Progressing', status: 'False', reason: o.failed.reason, message: 'the new revision failed; nothing rolls' };
  return { type: 'Progressing', status: 'False', reason: 'RolloutComplete', message: `revision ${o.current?.name} is rolled out` };
}

/** Degraded=True with the most pressing reason, or undefined when nothing is wrong. */
function degradedCondition(o: Seen): NewCondition | undefined {
  const yes = (reason: string, message: string): NewCondition => ({ type: 'Degraded', status: 'True', reason, message });
  if (o.conflict) return yes('ConflictingObject', o.conflict);
  if (o.insufficient) return yes('InsufficientMemory', o.ready > 0 ? `${o.insufficient}; ${o.ready} of ${o.desired} replicas keep serving as they were` : o.insufficient);
  if (o.failed) return yes(o.failed.reason, o.failed.message);
  if (!o.short) return undefined;
  if (o.unplaced) return yes('Unschedulable', o.unplaced);
  if (o.crashing) return yes('ServerFailing', `${o.ready} of ${o.desired} replicas ready; ${o.crashing}`);
  if (o.ready > 0) return yes('ReplicasUnavailable', `${o.ready} of ${o.desired} replicas ready`);
  return undefined;
}

function phaseOf(i: StatusInputs, o: Seen, degraded: boolean): Phase {
  if (o.conflict || (o.insufficient && o.ready === 0)) return 'Failed';
  if (!o.current && !i.recorded) return o.failed ? 'Failed' : i.conversion?.state === 'running' && i.conversion.pending ? 'Pending' : 'Converting';
  // Scaled to zero: converted and servable on demand (the gateway wakes it), as Knative keeps a revision Ready at zero.
  if (o.ready === 0 && o.desired === 0 && o.current && !o.crashing) return 'Ready';
  if (o.ready === 0) return o.unplaced ? 'Pending' : 'Deploying';
  return degraded ? 'Degraded' : 'Ready';
}

/** The status the observed world implies; `i.model.status` supplies the previous conditions and current revision. */
export function modelStatus(i: StatusInputs): NPUModelStatus {
  const { model: m, revision: rev, recorded, deployment: d } = i;
  const o = observe(i);
  const set = (cs: Condition[], c: NewCondition) => setCondition(cs, { ...c, observedGeneration: m.metadata.generation }, i.now);
  const degraded = degradedCondition(o);
  let conditions = set(m.status?.conditions ?? [], convertedCondition(i, o.current));
  conditions = set(conditions, availableCondition(i, o));
  conditions = set(conditions, progressingCondition(i, o));
  conditions = set(conditions, degraded ?? { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' });
  return {
    observedGeneration: m.metadata.generation,
    phase: phaseOf(i, o, !!degraded),
    conditions,
    currentRevision: o.current,
    // A prebuilt file's precision is known once inspected, never from the spec.
    targetRevision: o.current?.name === rev.name ? undefined : (recorded ?? { name: rev.name, precision: rev.prebuilt ? UNKNOWN_PRECISION : rev.precision, artifact: rev.artifact }),
    revisions: i.revisions,
    replicas: d?.status?.replicas ?? 0,
    readyReplicas: o.ready,
    selector: selectorString(serverSelector(m)),
    endpoint: d ? endpoint(m) : undefined,
    autoscaler: m.status?.autoscaler,
  };
}
