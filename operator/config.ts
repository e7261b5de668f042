// The operator's configuration, parsed once from flags and environment into a typed object.
import { posix } from 'node:path';
import { parseArgs } from 'node:util';

import { parseByteSize } from '../runtime/source-policy.js';

/** What the cluster admin lets an NPUModel's spec.source reach. */
export interface SourcePolicy {
  /** Node path prefixes a file:// source may name (normalised, no trailing slash); empty: no file:// sources. */
  hostPathPrefixes: string[];
  /** Hosts an http(s) source may name even when they are internal (passed to conversion Jobs as --allow-host). */
  allowedHosts: string[];
  /** Cap on an http(s) download (`--max-download-size` of conversion Jobs), or null for convert's default. */
  maxDownloadSize: string | null;
}

export interface OperatorConfig {
  /** Namespaces to watch; empty means all. */
  namespaces: string[];
  /** Container image of conversion Jobs and serving pods (`npuserve convert` / `npuserve serve`). */
  image: string;
  imagePullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** PersistentVolumeClaim (in each model's namespace) holding converted artifacts. */
  artifactClaim: string;
  npuResourceName: string;
  npuNodeSelector: Record<string, string>;
  /** Converted revisions kept per model besides the current one. */
  revisionHistoryLimit: number;
  serviceAccountName: string | null;
  leaderElection: { enabled: boolean; namespace: string; leaseName: string; identity: string; leaseDurationSeconds: number; renewDeadlineSeconds: number; retryPeriodSeconds: number };
  metricsPort: number;
  workers: number;
  scrapeIntervalSeconds: number;
  sources: SourcePolicy;
  /** A NetworkPolicy per model admitting its namespace, the operator's pods and these namespaces. */
  networkPolicy: { enabled: boolean; operatorNamespace: string; ingressNamespaces: string[] };
}

function list(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

function hostPathPrefixes(v: string): string[] {
  return list(v).map((p) => {
    if (!p.startsWith('/') || p.split('/').includes('..')) throw new Error(`--source-host-paths: '${p}' must be an absolute path without '..'`);
    return posix.normalize(p).replace(/(.)\/$/, '$1');
  });
}

function sourcePolicy(f: Record<string, string | undefined>, env: NodeJS.ProcessEnv): SourcePolicy {
  const size = f['source-max-download-size'] ?? env.NPUSERVE_SOURCE_MAX_DOWNLOAD_SIZE ?? '';
  if (size !== '' && parseByteSize(size) === null) throw new Error(`--source-max-download-size must be a size in bytes, or with Ki, Mi, Gi or Ti, got '${size}'`);
  return {
    hostPathPrefixes: hostPathPrefixes(f['source-host-paths'] ?? env.NPUSERVE_SOURCE_HOST_PATHS ?? '/models'),
    allowedHosts: list(f['source-allowed-hosts'] ?? env.NPUSERVE_SOURCE_ALLOWED_HOSTS ?? '').map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1')),
    maxDownloadSize: size || null,
  };
}

function labels(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of spec.split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    if (!k || v === undefined) throw new Error(`--npu-node-selector: '${part}' is not key=value`);
    out[k.trim()] = v.trim();
  }
  return out;
}

function int(name: string, v: string | undefined, fallback: number, min: number): number {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

export function parseOperatorConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const { values: f } = parseArgs({
    args: argv,
    strict: true,
    options: {
      namespaces: { type: 'string' },
      image: { type: 'string' },
      'image-pull-policy': { type: 'string' },
      'artifact-claim': { type: 'string' },
      'npu-resource-name': { type: 'string' },
      'npu-node-selector': { type: 'string' },
      'revision-history-limit': { type: 'string' },
      'service-account': { type: 'string' },
      'leader-elect': { type: 'string' },
      'leader-election-namespace': { type: 'string' },
      'lease-name': { type: 'string' },
      'lease-duration-seconds': { type: 'string' },
      'metrics-port': { type: 'string' },
      workers: { type: 'string' },
      'scrape-interval-seconds': { type: 'string' },
      'source-host-paths': { type: 'string' },
      'source-allowed-hosts': { type: 'string' },
      'source-max-download-size': { type: 'string' },
      'network-policy': { type: 'string' },
      'network-policy-namespaces': { type: 'string' },
    },
  });
  const pullPolicy = f['image-pull-policy'] ?? env.NPUSERVE_IMAGE_PULL_POLICY ?? 'IfNotPresent';
  if (pullPolicy !== 'Always' && pullPolicy !== 'IfNotPresent' && pullPolicy !== 'Never') throw new Error(`--image-pull-policy must be Always, IfNotPresent or Never, got '${pullPolicy}'`);
  const networkPolicy = f['network-policy'] ?? 'true';
  if (networkPolicy !== 'true' && networkPolicy !== 'false') throw new Error(`--network-policy must be true or false, got '${networkPolicy}'`);
  const leaseDuration = int('lease-duration-seconds', f['lease-duration-seconds'], 15, 2);
  return {
    namespaces: (f.namespaces ?? env.NPUSERVE_NAMESPACES ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    image: f.image ?? env.NPUSERVE_IMAGE ?? 'npuserve:0.1.0',
    imagePullPolicy: pullPolicy,
    artifactClaim: f['artifact-claim'] ?? env.NPUSERVE_ARTIFACT_CLAIM ?? 'npuserve-artifacts',
    npuResourceName: f['npu-resource-name'] ?? env.NPUSERVE_NPU_RESOURCE ?? 'huawei.com/Ascend910',
    npuNodeSelector: labels(f['npu-node-selector'] ?? env.NPUSERVE_NPU_NODE_SELECTOR ?? 'accelerator=huawei-Ascend910'),
    revisionHistoryLimit: int('revision-history-limit', f['revision-history-limit'], 2, 0),
    serviceAccountName: f['service-account'] ?? null,
    leaderElection: {
      enabled: (f['leader-elect'] ?? 'true') !== 'false',
      namespace: f['leader-election-namespace'] ?? env.POD_NAMESPACE ?? 'default',
      leaseName: f['lease-name'] ?? 'npuserve-operator',
      identity: env.POD_NAME ?? `${env.HOSTNAME ?? 'operator'}-${process.pid}`,
      leaseDurationSeconds: leaseDuration,
      renewDeadlineSeconds: Math.max(1, Math.floor((leaseDuration * 2) / 3)),
      retryPeriodSeconds: Math.max(1, Math.floor(leaseDuration / 5)),
    },
    metricsPort: int('metrics-port', f['metrics-port'], 8080, 0),
    workers: int('workers', f.workers, 4, 1),
    scrapeIntervalSeconds: int('scrape-interval-seconds', f['scrape-interval-seconds'], 5, 1),
    sources: sourcePolicy(f, env),
    networkPolicy: {
      enabled: networkPolicy === 'true',
      operatorNamespace: env.POD_NAMESPACE ?? f['leader-election-namespace'] ?? 'default',
      ingressNamespaces: (f['network-policy-namespaces'] ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    },
  };
}
