// The status a user reads (`kubectl get npum`, `kubectl describe npum`) for each situation a model
// goes through, computed by the pure modelStatus(): one row per situation.
import { describe, expect, it } from 'vitest';

import type { ConversionOutcome, DeploymentView, PodView } from './rollout.js';
import { condition, modelStatus, type StatusInputs } from './status.js';
import type { NPUModel, NPUModelStatus, RevisionStatus } from './types.js';

const NOW = '2026-03-01T12:00:00.000Z';
const r1: RevisionStatus = { name: 'r1111111111', precision: 'FP16', artifact: '/artifacts/tiny/r1111111111.npu', convertedAt: '2026-03-01T10:00:00.000Z' };
const r2: RevisionStatus = { name: 'r2222222222', precision: 'INT8', artifact: '/artifacts/tiny/r2222222222.npu', accuracy: { cosineSimilarity: 0.995 }, convertedAt: '2026-03-01T11:00:00.000Z' };

function model(status?: NPUModelStatus, replicas = 2): NPUModel {
  return {
    apiVersion: 'npuserve.io/v1alpha1',
    kind: 'NPUModel',
    metadata: { name: 'tiny', namespace: 'ml', uid: 'u1', generation: 3 },
    spec: { source: { uri: 'file:///models/tiny' }, precision: 'INT8', replicas },
    status,
  };
}

/** A Deployment on `revision` with the given status counts (observed at its generation). */
function deployment(revision: string, s: { replicas: number; updated: number; ready: number }, want = 2): DeploymentView {
  return {
    metadata: { generation: 5 },
    spec: { replicas: want, template: { metadata: { labels: { 'npuserve.io/revision': revision } } } },
    status: { observedGeneration: 5, replicas: s.replicas, updatedReplicas: s.updated, readyReplicas: s.ready, availableReplicas: s.ready },
  };
}

const unschedulablePod = (name: string): PodView => ({
  metadata: { name },
  status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/1 nodes are available: 1 Insufficient huawei.com/Ascend910.' }] },
});

const crashingPod: PodView = {
  metadata: { name: 'tiny-5d8f-abcde' },
  status: {
    phase: 'Running',
    containerStatuses: [{ ready: false, state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 40s restarting failed container' } }, lastState: { terminated: { exitCode: 1, message: 'npuserve serve: /artifacts/tiny/r2222222222.npu: file is truncated' } } }],
  },
};

const MEMORY_MESSAGE =
  'spec.runtime.resources.limits.memory 256Mi (256 MiB) is below the 467 MiB revision r2222222222 needs per pod: weights 19 MiB + KV cache 64 MiB (...) + RoPE tables 1 MiB + runtime 384 MiB = 467 MiB; a pod would be killed for memory at every start, so none is started';

/** What `npuserve serve` writes to its termination log under too small a cgroup memory limit. */
const oomRefusingPod: PodView = {
  metadata: { name: 'tiny-5d8f-fghij' },
  status: {
    phase: 'Running',
    containerStatuses: [{ ready: false, state: { waiting: { reason: 'CrashLoopBackOff', message: 'back-off 10s restarting failed container' } }, lastState: { terminated: { exitCode: 1, message: 'the memory limit of 256 MiB (cgroup) is below what serving /artifacts/tiny/r2222222222.npu needs: weights 19 MiB + KV cache 64 MiB' } } }],
  },
};

const running: ConversionOutcome = { state: 'running', message: 'conversion Job running' };
const failed: ConversionOutcome = { state: 'failed', reason: 'ConversionFailed', message: 'input /source/models/tiny does not exist' };

function inputs(over: Partial<StatusInputs>): StatusInputs {
  return { model: model(), revision: { name: r2.name, precision: 'INT8', artifact: r2.artifact, prebuilt: false }, revisions: [], serverPods: [], desiredReplicas: 2, now: NOW, ...over };
}

interface Row {
  situation: string;
  in: Partial<StatusInputs>;
  phase: string;
  /** type -> [status, reason, message pattern] */
  conditions: Record<string, [string, string, RegExp?]>;
  current?: string;
  target?: string;
}

const servingR1 = { currentRevision: r1, revisions: [r1] };

const rows: Row[] = [
  {
    situation: 'converting, nothing served yet',
    in: { conversion: running },
    phase: 'Converting',
    conditions: { Converted: ['False', 'Converting', /conversion Job running/], Progressing: ['True', 'Converting'], Available: ['False', 'NoReadyReplicas', /nothing to serve until a revision is converted/], Degraded: ['False', 'AsExpected'] },
    target: r2.name,
  },
  {
    situation: 'conversion pod waiting for an NPU',
    in: { conversion: { state: 'running', pending: true, message: 'conversion pod pending: Unschedulable: 0/1 nodes are available' } },
    phase: 'Pending',
    conditions: { Converted: ['False', 'Converting', /conversion pod pending: Unschedulable/] },
  },
  {
    situation: 'conversion failed, nothing served',
    in: { conversion: failed },
    phase: 'Failed',
    conditions: { Converted: ['False', 'ConversionFailed', /^revision r2222222222: input \/source\/models\/tiny does not exist$/], Degraded: ['True', 'ConversionFailed'], Progressing: ['False', 'ConversionFailed'] },
  },
  {
    situation: 'conversion stuck (pod never started), nothing served',
    in: { conversion: { state: 'failed', reason: 'ConversionStuck', message: 'pod p on node n has not started in 301 s (ContainerCreating); Job j is suspended to free its NPU' } },
    phase: 'Failed',
    conditions: { Converted: ['False', 'ConversionStuck', /has not started in 301 s/], Degraded: ['True', 'ConversionStuck'] },
  },
  {
    situation: 'conversion of a new revision failed while r1 serves',
    in: { model: model(servingR1), revisions: [r1], conversion: failed, deployment: deployment(r1.name, { replicas: 2, updated: 2, ready: 2 }) },
    phase: 'Degraded',
    conditions: { Converted: ['False', 'ConversionFailed', /does not exist; revision r1111111111 keeps serving$/], Available: ['True', 'MinimumReplicasAvailable', /^2 of 2 replicas ready$/] },
    current: r1.name,
    target: r2.name,
  },
  {
    situation: 'converted, first pods starting',
    in: { revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 0 }) },
    phase: 'Deploying',
    conditions: { Converted: ['True', 'Converted', /revision r2222222222 \(INT8\)/], Available: ['False', 'NoReadyReplicas', /no serving pod is ready yet/], Progressing: ['True', 'RollingOut', /0 of 2 updated|2 of 2 updated/] },
  },
  {
    situation: 'scaled to zero by the autoscaler (minReplicas 0, idle)',
    in: {
      model: { ...model({ currentRevision: r2, revisions: [r2] }, 0), spec: { source: { uri: 'file:///models/tiny' }, replicas: 0, autoscaling: { minReplicas: 0, maxReplicas: 2, scaleToZeroAfterSeconds: 120 } } },
      revisions: [r2], recorded: r2, desiredReplicas: 0, deployment: deployment(r2.name, { replicas: 0, updated: 0, ready: 0 }, 0),
    },
    phase: 'Ready',
    conditions: { Available: ['False', 'ScaledToZero', /^scaled to zero replicas: no requests for 120 s \(autoscaling.scaleToZeroAfterSeconds\); revision r2222222222 stays converted, and a request through the gateway starts a replica$/], Progressing: ['False', 'RolloutComplete'], Degraded: ['False', 'AsExpected'] },
    current: r2.name,
  },
  {
    situation: 'woken from zero: a replica starting',
    in: { model: model({ currentRevision: r2, revisions: [r2] }, 1), revisions: [r2], recorded: r2, desiredReplicas: 1, deployment: deployment(r2.name, { replicas: 1, updated: 1, ready: 0 }, 1) },
    phase: 'Deploying',
    conditions: { Available: ['False', 'NoReadyReplicas', /no serving pod is ready yet/], Degraded: ['False', 'AsExpected'] },
    current: r2.name,
  },
  {
    situation: 'ready',
    in: { model: model({ currentRevision: r2, revisions: [r2] }), revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 2 }) },
    phase: 'Ready',
    conditions: { Available: ['True', 'MinimumReplicasAvailable', /^2 of 2 replicas ready$/], Progressing: ['False', 'RolloutComplete'], Degraded: ['False', 'AsExpected'] },
    current: r2.name,
  },
  {
    situation: 'rolling out r2 over r1 (phase stays Ready)',
    in: { model: model(servingR1), revisions: [r2, r1], recorded: r2, deployment: deployment(r2.name, { replicas: 3, updated: 1, ready: 2 }) },
    phase: 'Ready',
    conditions: { Progressing: ['True', 'RollingOut', /rolling out revision r2222222222: 1 of 2 updated$/], Degraded: ['False', 'AsExpected'] },
    current: r1.name,
    target: r2.name,
  },
  {
    situation: 'a rollout whose surge pod cannot be placed',
    in: { model: model(servingR1), revisions: [r2, r1], recorded: r2, deployment: deployment(r2.name, { replicas: 3, updated: 1, ready: 2 }), serverPods: [unschedulablePod('tiny-new-1')] },
    phase: 'Ready',
    conditions: { Progressing: ['True', 'Unschedulable', /1 of 2 updated; 1 of 2 replicas cannot be scheduled: Unschedulable: 0\/1 nodes are available/] },
    current: r1.name,
  },
  {
    situation: 'degraded: a replica lost, nothing pending',
    in: { model: model({ currentRevision: r2, revisions: [r2] }), revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 1 }) },
    phase: 'Degraded',
    conditions: { Degraded: ['True', 'ReplicasUnavailable', /^1 of 2 replicas ready$/], Available: ['True', 'MinimumReplicasAvailable'] },
    current: r2.name,
  },
  {
    situation: '9 replicas with room for 7',
    in: {
      model: model({ currentRevision: r2, revisions: [r2] }, 9),
      desiredReplicas: 9,
      revisions: [r2],
      recorded: r2,
      deployment: deployment(r2.name, { replicas: 9, updated: 9, ready: 7 }, 9),
      serverPods: [unschedulablePod('tiny-a'), unschedulablePod('tiny-b')],
    },
    phase: 'Degraded',
    conditions: { Available: ['True', 'MinimumReplicasAvailable', /^7 of 9 replicas ready$/], Degraded: ['True', 'Unschedulable', /^2 of 9 replicas cannot be scheduled: Unschedulable: 0\/1 nodes are available: 1 Insufficient huawei.com\/Ascend910.$/], Progressing: ['False', 'RolloutComplete'] },
    current: r2.name,
  },
  {
    situation: 'first deployment, no replica can be placed',
    in: { revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 0 }), serverPods: [unschedulablePod('tiny-a'), unschedulablePod('tiny-b')] },
    phase: 'Pending',
    conditions: { Available: ['False', 'Unschedulable', /^2 of 2 replicas cannot be scheduled/] },
  },
  {
    situation: 'serving pod crash-looping, none ready',
    in: { model: model({ currentRevision: r2, revisions: [r2] }), revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 0 }), serverPods: [crashingPod] },
    phase: 'Deploying',
    conditions: { Available: ['False', 'ServerFailing', /pod tiny-5d8f-abcde: CrashLoopBackOff: back-off 40s restarting failed container; last exit code 1: npuserve serve: .* file is truncated/], Degraded: ['True', 'ServerFailing'] },
    current: r2.name,
  },
  {
    situation: 'serving pod placed but not started for 10 minutes (a mount that fails)',
    in: {
      model: model({ currentRevision: r2, revisions: [r2] }),
      revisions: [r2],
      recorded: r2,
      deployment: deployment(r2.name, { replicas: 1, updated: 1, ready: 0 }, 1),
      desiredReplicas: 1,
      stuckAfterMs: 300_000,
      serverPods: [{ metadata: { name: 'tiny-5d8f-abcde', creationTimestamp: '2026-03-01T11:50:00.000Z' }, spec: { nodeName: 'npu-0' }, status: { phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'True', lastTransitionTime: '2026-03-01T11:50:00.000Z' }] } }],
    },
    phase: 'Deploying',
    conditions: { Available: ['False', 'ServerFailing', /^pod tiny-5d8f-abcde on node npu-0 has not started in 600 s \(ContainerCreating\)$/] },
    current: r2.name,
  },
  {
    situation: 'a foreign Service holds the model name',
    in: { model: model({ currentRevision: r2, revisions: [r2] }), revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 2 }), conflicts: ['Service tiny exists and is not controlled by this NPUModel; leaving it alone'] },
    phase: 'Failed',
    conditions: { Degraded: ['True', 'ConflictingObject', /^Service tiny exists and is not controlled by this NPUModel; leaving it alone$/], Available: ['True', 'MinimumReplicasAvailable'] },
    current: r2.name,
  },
  {
    situation: 'a foreign Deployment holds the model name',
    in: { revisions: [r2], recorded: r2, conflicts: ['Deployment tiny exists and is not controlled by this NPUModel; leaving it alone'] },
    phase: 'Failed',
    conditions: { Available: ['False', 'ConflictingObject', /^Deployment tiny exists/], Degraded: ['True', 'ConflictingObject'] },
  },
  {
    situation: 'memory limit below the need, nothing serving: no pod, Failed',
    in: { revisions: [r2], recorded: r2, insufficientMemory: MEMORY_MESSAGE },
    phase: 'Failed',
    conditions: {
      Available: ['False', 'InsufficientMemory', /^spec.runtime.resources.limits.memory 256Mi \(256 MiB\) is below the 467 MiB/],
      Degraded: ['True', 'InsufficientMemory', /^spec.runtime.resources.limits.memory 256Mi .*none is started$/],
      Progressing: ['False', 'InsufficientMemory', /not rolled out/],
      Converted: ['True', 'Converted'],
    },
  },
  {
    situation: 'a new revision needs more memory than the limit: the old pods keep serving',
    in: { model: model(servingR1), revisions: [r2, r1], recorded: r2, deployment: deployment(r1.name, { replicas: 2, updated: 2, ready: 2 }), insufficientMemory: MEMORY_MESSAGE },
    phase: 'Degraded',
    conditions: {
      Available: ['True', 'MinimumReplicasAvailable'],
      Degraded: ['True', 'InsufficientMemory', /below the 467 MiB.*; 2 of 2 replicas keep serving as they were$/],
      Progressing: ['False', 'InsufficientMemory'],
    },
    current: r1.name,
    target: r2.name,
  },
  {
    situation: 'the server refuses its cgroup memory limit: its message reaches ServerFailing',
    in: { model: model({ currentRevision: r2, revisions: [r2] }), revisions: [r2], recorded: r2, deployment: deployment(r2.name, { replicas: 2, updated: 2, ready: 0 }), serverPods: [oomRefusingPod] },
    phase: 'Deploying',
    conditions: { Available: ['False', 'ServerFailing', /CrashLoopBackOff.*last exit code 1: the memory limit of 256 MiB \(cgroup\) is below what serving \/artifacts\/tiny\/r2222222222.npu needs: weights 19 MiB/] },
    current: r2.name,
  },
  {
    situation: 'prebuilt INT8 file while the spec says FP16',
    in: {
      revision: { name: 'r3333333333', precision: 'FP16', artifact: '/source/models/tiny.npu', prebuilt: true },
      revisions: [{ name: 'r3333333333', precision: 'INT8', artifact: '/source/models/tiny.npu' }],
      recorded: { name: 'r3333333333', precision: 'INT8', artifact: '/source/models/tiny.npu' },
      deployment: deployment('r3333333333', { replicas: 2, updated: 2, ready: 2 }),
    },
    phase: 'Ready',
    conditions: { Converted: ['True', 'Prebuilt', /^revision r3333333333 \(INT8\) at \/source\/models\/tiny.npu; spec.precision FP16 does not apply to a prebuilt .npu, it serves as converted \(INT8\)$/] },
    current: 'r3333333333',
  },
  {
    situation: 'prebuilt file being inspected',
    in: { revision: { name: 'r3333333333', precision: 'FP16', artifact: '/source/models/tiny.npu', prebuilt: true }, conversion: { state: 'running', message: 'inspection Job tiny-inspect-r3333333333 created' } },
    phase: 'Converting',
    conditions: { Converted: ['False', 'Converting', /inspection Job/] },
    target: 'r3333333333',
  },
];

describe('modelStatus', () => {
  it.each(rows)('$situation', (row) => {
    const s = modelStatus(inputs(row.in));
    expect(s.phase).toBe(row.phase);
    for (const [type, [status, reason, message]] of Object.entries(row.conditions)) {
      const c = condition(s.conditions, type as 'Converted');
      expect(c, type).toMatchObject({ status, reason, observedGeneration: 3 });
      if (message) expect(c!.message, type).toMatch(message);
    }
    expect(s.currentRevision?.name).toBe(row.current);
    if (row.target) expect(s.targetRevision?.name).toBe(row.target);
    expect(s.observedGeneration).toBe(3);
  });

  it('reports what a prebuilt file really is, never the spec, as the target while it is inspected', () => {
    const s = modelStatus(inputs(rows.find((r) => r.situation === 'prebuilt file being inspected')!.in));
    expect(s.targetRevision).toEqual({ name: 'r3333333333', precision: 'unknown', artifact: '/source/models/tiny.npu' });
  });

  it('keeps lastTransitionTime while a condition keeps its status, and moves it when the status flips', () => {
    const first = modelStatus(inputs({ conversion: running }));
    const later = modelStatus(inputs({ model: model(first), conversion: { state: 'running', message: 'conversion Job running' }, now: '2026-03-01T12:05:00.000Z' }));
    expect(condition(later.conditions, 'Converted')!.lastTransitionTime).toBe(NOW);
    const done = modelStatus(inputs({ model: model(later), revisions: [r2], recorded: r2, now: '2026-03-01T12:09:00.000Z' }));
    expect(condition(done.conditions, 'Converted')).toMatchObject({ status: 'True', lastTransitionTime: '2026-03-01T12:09:00.000Z' });
  });
});
