// An NPUModel's status as a pure function of what the reconciler observed (the model, the desired
// revision, the conversion's outcome, the Deployment and the serving pods): phase, the four standard
// conditions with a reason and a message a user can act on, and the revision bookkeeping. Also the
// condition helpers and the comparison that keeps status writes to real changes.
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
    const mismatch = rev.prebuilt && recorded.precision !== rev.precision ? `; spec.precision ${rev.precision} does not apply to a prebuilt .npu, it serves as converted (${recorded.precision})` : '';
    return { type: 'Converted', status: 'True', reason: rev.prebuilt ? 'Prebuilt' : 'Converted', message: `revision ${rev.name} (${recorded.precision}) at ${recorded.artifact}${mismatch}` };
  }
  if (conversion?.state === 'failed') return { type: 'Converted', status: 'False', reason: conversion.reason, message: `revision ${rev.name}: ${conversion.message}${current ? `; revision ${current.name} keeps serving` : ''}` };
  return { type: 'Converted', status: 'False', reason: 'Converting', message: conversion?.state === 'running' ? conversion.message : 'waiting for conversion' };
}

/** The status the observed world implies; `i.model.status` supplies the previous conditions and current revision. */
export function modelStatus(i: StatusInputs): NPUModelStatus {
  const { model: m, revision: rev, recorded, conversion, deployment: d, desiredReplicas: desired, now } = i;
  const gen = m.metadata.generation;
  const ready = d?.status?.readyReplicas ?? 0;
  const complete = !!d && !!recorded && rolledOut(d, recorded.name);
  const current = complete ? recorded : m.status?.currentRevision;
  const failed = conversion?.state === 'failed' ? conversion : undefined;
  const converting = !recorded && !failed;
  const rolling = !!d && !!recorded && !complete;
  const pending = i.serverPods.filter((p) => !p.metadata.deletionTimestamp).map(unschedulable).filter((x): x is string => !!x);
  const crashing = i.serverPods.map(failing).find(Boolean) ?? i.serverPods.map((p) => stuckPod(p, Date.parse(now), i.stuckAfterMs ?? Infinity)).find(Boolean);
  const unplaced = pending.length ? `${pending.length} of ${desired} replicas cannot be scheduled: ${pending[0]}` : '';

  const set = (cs: Condition[], c: NewCondition) => setCondition(cs, { ...c, observedGeneration: gen }, now);
  let conditions = set(m.status?.conditions ?? [], convertedCondition(i, current));
  conditions = set(conditions, ready > 0
    ? { type: 'Available', status: 'True', reason: 'MinimumReplicasAvailable', message: `${ready} of ${desired} replicas ready` }
    : pending.length
      ? { type: 'Available', status: 'False', reason: 'Unschedulable', message: unplaced }
      : crashing
        ? { type: 'Available', status: 'False', reason: 'ServerFailing', message: crashing }
        : { type: 'Available', status: 'False', reason: 'NoReadyReplicas', message: d ? 'no serving pod is ready yet' : 'nothing to serve until a revision is converted' });
  const updated = `${d?.status?.updatedReplicas ?? 0} of ${desired} updated`;
  conditions = set(conditions, converting
    ? { type: 'Progressing', status: 'True', reason: 'Converting', message: `converting revision ${rev.name}` }
    : rolling
      ? { type: 'Progressing', status: 'True', reason: pending.length ? 'Unschedulable' : 'RollingOut', message: `rolling out revision ${recorded!.name}: ${updated}${pending.length ? `; ${unplaced}` : ''}` }
      : { type: 'Progressing', status: 'False', reason: failed ? failed.reason : 'RolloutComplete', message: failed ? 'the new revision failed; nothing rolls' : `revision ${current?.name} is rolled out` });
  const replacing = !!d && !!recorded && !onlyRevision(d, recorded.name);
  const short = !replacing && ready < desired && (ready > 0 || !!current);
  const degraded: NewCondition | undefined = failed
    ? { type: 'Degraded', status: 'True', reason: failed.reason, message: failed.message }
    : !short
      ? undefined
      : pending.length
        ? { type: 'Degraded', status: 'True', reason: 'Unschedulable', message: unplaced }
        : crashing
          ? { type: 'Degraded', status: 'True', reason: 'ServerFailing', message: `${ready} of ${desired} replicas ready; ${crashing}` }
          : ready > 0
            ? { type: 'Degraded', status: 'True', reason: 'ReplicasUnavailable', message: `${ready} of ${desired} replicas ready` }
            : undefined;
  conditions = set(conditions, degraded ?? { type: 'Degraded', status: 'False', reason: 'AsExpected', message: '' });

  let phase: Phase;
  if (!current && !recorded) phase = failed ? 'Failed' : conversion?.state === 'running' && conversion.pending ? 'Pending' : 'Converting';
  else if (ready === 0) phase = pending.length ? 'Pending' : 'Deploying';
  else phase = degraded ? 'Degraded' : 'Ready';

  return {
    observedGeneration: gen,
    phase,
    conditions,
    currentRevision: current,
    targetRevision: current?.name === rev.name ? undefined : (recorded ?? { name: rev.name, precision: rev.prebuilt ? 'unknown' : rev.precision, artifact: rev.artifact }),
    revisions: i.revisions,
    replicas: d?.status?.replicas ?? 0,
    readyReplicas: ready,
    selector: selectorString(serverSelector(m)),
    endpoint: d ? endpoint(m) : undefined,
    autoscaler: m.status?.autoscaler,
  };
}
