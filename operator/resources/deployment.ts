// The serving Deployment and its Service: `npuserve serve` on the revision's artifact, probes for a
// slow model load and draining, NPU placement, CPU and memory sized for the model, a restricted
// security context, the API key from the model's Secret, and the rolling update strategy the rollout
// planner chose.
import type { OperatorConfig } from '../config.js';
import { ARTIFACT_MOUNT, SOURCE_MOUNT, type Revision } from '../revision.js';
import type { NPUModel } from '../types.js';
import { labels, npuResources, npuScheduling, ownerReference, placement, RESTRICTED_CONTAINER_SECURITY, serverSelector } from './common.js';
import { TERMINATION_LOG } from './job.js';
import { servingSettings, type PodSizing } from './sizing.js';

export interface RolloutStrategy {
  maxSurge: number;
  maxUnavailable: number;
}

export function servicePort(m: NPUModel): number {
  return m.spec.service?.port ?? 8000;
}

export function endpoint(m: NPUModel): string {
  return `http://${m.metadata.name}.${m.metadata.namespace}.svc:${servicePort(m)}/v1`;
}

function modelVolumes(cfg: OperatorConfig, rev: Revision) {
  if (rev.prebuilt) {
    return {
      volumes: [rev.source.volume!, { name: 'tmp', emptyDir: {} }],
      mounts: [{ name: 'source', mountPath: rev.source.mountPath ?? SOURCE_MOUNT, readOnly: true }, { name: 'tmp', mountPath: '/tmp' }],
    };
  }
  return {
    volumes: [{ name: 'artifacts', persistentVolumeClaim: { claimName: cfg.artifactClaim, readOnly: true } }, { name: 'tmp', emptyDir: {} }],
    mounts: [{ name: 'artifacts', mountPath: ARTIFACT_MOUNT, readOnly: true }, { name: 'tmp', mountPath: '/tmp' }],
  };
}

/** NPUSERVE_API_KEY from the Secret the model names; the server then requires it (probes and /metrics stay open). */
function apiKeyEnv(m: NPUModel) {
  const ref = m.spec.service?.apiKeySecretRef;
  if (!ref) return [];
  return [{ name: 'NPUSERVE_API_KEY', valueFrom: { secretKeyRef: { name: ref.name, key: ref.key ?? 'api-key' } } }];
}

/** The container's resources: its NPUs, and the CPU and memory the sizing derived. */
function containerResources(npus: ReturnType<typeof npuResources>, sizing: PodSizing) {
  return { requests: { ...npus.requests, ...sizing.requests }, limits: { ...npus.limits, ...sizing.limits } };
}

export function deployment(m: NPUModel, rev: Revision, cfg: OperatorConfig, replicas: number, strategy: RolloutStrategy, sizing: PodSizing) {
  const port = servicePort(m);
  const rt = m.spec.runtime ?? {};
  const settings = servingSettings(m);
  const pl = placement(m, cfg);
  const { volumes, mounts } = modelVolumes(cfg, rev);
  const probe = (path: string) => ({ httpGet: { path, port: 'http' } });
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: m.metadata.name, namespace: m.metadata.namespace, labels: labels(m, 'server'), ownerReferences: [ownerReference(m)] },
    spec: {
      replicas,
      revisionHistoryLimit: 3,
      selector: { matchLabels: serverSelector(m) },
      strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: strategy.maxSurge, maxUnavailable: strategy.maxUnavailable } },
      template: {
        metadata: { labels: labels(m, 'server', rev.name) },
        spec: {
          ...(cfg.serviceAccountName ? { serviceAccountName: cfg.serviceAccountName } : {}),
          automountServiceAccountToken: false,
          terminationGracePeriodSeconds: 60,
          ...npuScheduling(pl),
          containers: [
            {
              name: 'server',
              image: cfg.image,
              imagePullPolicy: cfg.imagePullPolicy,
              args: [
                'serve',
                '--model', rev.artifact,
                '--port', String(port),
                '--served-model-name', m.metadata.name,
                '--max-batch-size', String(settings.maxBatchSize),
                '--max-seq-len', String(settings.maxSeqLen),
                '--max-waiting-requests', String(rt.maxWaitingRequests ?? 256),
                '--kv-cache-dtype', settings.kvCacheDtype,
                // Without the flag the engine runs as many threads as the CPU limit's quota allows.
                ...(sizing.threadsFromSpec ? ['--threads', String(sizing.threads)] : []),
                '--drain-timeout-seconds', '45',
                '--termination-log', TERMINATION_LOG,
              ],
              // Why a server stopped (a memory limit too small, a bad artifact) reaches the ServerFailing condition.
              terminationMessagePath: TERMINATION_LOG,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              env: apiKeyEnv(m),
              ports: [{ name: 'http', containerPort: port, protocol: 'TCP' }],
              // A 7B model maps and warms for minutes: the startup probe allows 30 minutes.
              startupProbe: { ...probe('/healthz'), periodSeconds: 5, failureThreshold: 360 },
              readinessProbe: { ...probe('/readyz'), periodSeconds: 2, failureThreshold: 2 },
              livenessProbe: { ...probe('/healthz'), periodSeconds: 10, failureThreshold: 6, timeoutSeconds: 5 },
              // Endpoints drop the pod before SIGTERM makes the server drain its in-flight requests.
              lifecycle: { preStop: { sleep: { seconds: 5 } } },
              resources: containerResources(npuResources(pl), sizing),
              securityContext: RESTRICTED_CONTAINER_SECURITY,
              volumeMounts: mounts,
            },
          ],
          volumes,
        },
      },
    },
  };
}

export function service(m: NPUModel) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: m.metadata.name, namespace: m.metadata.namespace, labels: labels(m, 'server'), ownerReferences: [ownerReference(m)] },
    spec: {
      type: 'ClusterIP',
      selector: serverSelector(m),
      ports: [{ name: 'http', port: servicePort(m), targetPort: 'http', protocol: 'TCP' }],
    },
  };
}
