// The conversion Job of one revision: `npuserve convert` from the mounted (or downloaded) source to
// the revision's artifact on the artifact claim, gated on accuracy, on an NPU node; for a prebuilt
// .npu the same Job only inspects the file (`npuserve inspect`: its real precision, no NPU held);
// and the cleanup Job that deletes artifacts no longer kept.
import type { OperatorConfig } from '../config.js';
import { ARTIFACT_MOUNT, SOURCE_MOUNT, type Revision } from '../revision.js';
import type { NPUModel } from '../types.js';
import { childName, labels, npuResources, npuScheduling, ownerReference, placement, RESTRICTED_CONTAINER_SECURITY } from './common.js';

export const TERMINATION_LOG = '/dev/termination-log';

export function conversionJobName(m: NPUModel, rev: Revision): string {
  return childName(m.metadata.name, `${rev.prebuilt ? 'inspect' : 'convert'}-${rev.name}`);
}

function podVolumes(cfg: OperatorConfig, rev: Revision) {
  const volumes: Record<string, unknown>[] = [{ name: 'tmp', emptyDir: {} }];
  const mounts: Record<string, unknown>[] = [{ name: 'tmp', mountPath: '/tmp' }];
  if (!rev.prebuilt) {
    volumes.push({ name: 'artifacts', persistentVolumeClaim: { claimName: cfg.artifactClaim } });
    mounts.push({ name: 'artifacts', mountPath: ARTIFACT_MOUNT });
  }
  if (rev.source.volume) {
    volumes.push(rev.source.volume);
    mounts.push({ name: 'source', mountPath: rev.source.mountPath ?? SOURCE_MOUNT, readOnly: true });
  }
  return { volumes, mounts };
}

function convertArgs(m: NPUModel, rev: Revision, extra: string[]): string[] {
  const report = ['--json', '--termination-log', TERMINATION_LOG];
  if (rev.prebuilt) return ['inspect', '--model', rev.source.input, ...report];
  const gate = m.spec.conversion?.accuracyGate?.minCosineSimilarity ?? 0.99;
  return [
    'convert',
    '--input', rev.source.input,
    '--format', m.spec.source.format ?? 'auto',
    '--precision', rev.precision,
    '--optimize-level', String(rev.optimizeLevel),
    '--output', rev.artifact,
    '--min-cosine', String(gate),
    ...report,
    ...extra,
  ];
}

/**
 * Flags and environment of `convert` for an http(s) source: the hosts the admin allows, the size
 * cap, and the Authorization header from the model's Secret (the kubelet reads it; the operator never does).
 */
function downloadSettings(m: NPUModel, rev: Revision, cfg: OperatorConfig) {
  if (rev.source.volume !== null) return { args: [], env: [] };
  const { allowedHosts, maxDownloadSize } = cfg.sources;
  const ref = m.spec.source.authSecretRef;
  return {
    args: [...allowedHosts.flatMap((h) => ['--allow-host', h]), ...(maxDownloadSize ? ['--max-download-size', maxDownloadSize] : [])],
    env: ref ? [{ name: 'NPUSERVE_SOURCE_AUTHORIZATION', valueFrom: { secretKeyRef: { name: ref.name, key: ref.key } } }] : [],
  };
}

export function conversionJob(m: NPUModel, rev: Revision, cfg: OperatorConfig) {
  const { volumes, mounts } = podVolumes(cfg, rev);
  const lbl = labels(m, 'converter', rev.name);
  const pl = placement(m, cfg);
  const download = downloadSettings(m, rev, cfg);
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: conversionJobName(m, rev), namespace: m.metadata.namespace, labels: lbl, ownerReferences: [ownerReference(m)] },
    spec: {
      backoffLimit: 0,
      activeDeadlineSeconds: 6 * 3600,
      template: {
        metadata: { labels: lbl },
        spec: {
          restartPolicy: 'Never',
          ...(cfg.serviceAccountName ? { serviceAccountName: cfg.serviceAccountName } : {}),
          automountServiceAccountToken: false,
          ...npuScheduling(pl),
          containers: [
            {
              name: 'convert',
              image: cfg.image,
              imagePullPolicy: cfg.imagePullPolicy,
              args: convertArgs(m, rev, download.args),
              ...(download.env.length ? { env: download.env } : {}),
              terminationMessagePath: TERMINATION_LOG,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              securityContext: RESTRICTED_CONTAINER_SECURITY,
              // Inspecting a prebuilt file needs no NPU; it runs where the file is (the NPU nodes).
              resources: rev.prebuilt ? { requests: { cpu: '100m' }, limits: {} } : npuResources(pl),
              volumeMounts: mounts,
            },
          ],
          volumes,
        },
      },
    },
  };
}

/** Deletes every artifact of the model except `keep` (revision names); all of them when empty. */
export function cleanupJob(m: NPUModel, cfg: OperatorConfig, keep: string[], suffix: string) {
  const lbl = labels(m, 'cleanup');
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name: childName(m.metadata.name, `cleanup-${suffix}`), namespace: m.metadata.namespace, labels: lbl },
    spec: {
      backoffLimit: 2,
      ttlSecondsAfterFinished: 300,
      template: {
        metadata: { labels: lbl },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          containers: [
            {
              name: 'cleanup',
              image: cfg.image,
              imagePullPolicy: cfg.imagePullPolicy,
              args: ['prune-artifacts', '--dir', `${ARTIFACT_MOUNT}/${m.metadata.name}`, '--keep', keep.join(',')],
              securityContext: RESTRICTED_CONTAINER_SECURITY,
              volumeMounts: [{ name: 'artifacts', mountPath: ARTIFACT_MOUNT }],
            },
          ],
          volumes: [{ name: 'artifacts', persistentVolumeClaim: { claimName: cfg.artifactClaim } }],
        },
      },
    },
  };
}
