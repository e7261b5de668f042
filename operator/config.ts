// The operator's flags (the one definition its --help and docs/operations.md's table are made from)
// and its configuration, parsed once from them and the environment into a typed object.
import { posix } from 'node:path';

import { UsageError } from '../common/errors.js';
import { choiceFlag, type CommandSpec, type FlagValues, intFlag, parseFlags, stringFlag } from '../common/flags.js';
import { logFlags, logFormatOf, type LogFormat, type LogLevel, logLevelOf } from '../common/log.js';
import { DEFAULT_MAX_DOWNLOAD_BYTES, parseByteSize } from '../common/source-policy.js';

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
  /** Kubeconfig file; absent: $KUBECONFIG, else the in-cluster service account, else ~/.kube/config. */
  kubeconfig?: string;
  /** Kubeconfig context; absent: the file's current context. */
  context?: string;
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
  /** A conversion or serving pod placed on a node but not started after this long is reported (and a conversion Job suspended). */
  podStartTimeoutSeconds: number;
  sources: SourcePolicy;
  /** A NetworkPolicy per model admitting its namespace, the operator's pods and these namespaces. */
  networkPolicy: { enabled: boolean; operatorNamespace: string; ingressNamespaces: string[] };
  log: { format: LogFormat; level: LogLevel };
}

export const OPERATOR_COMMAND: CommandSpec = {
  name: 'npuserve operator',
  summary: 'Runs the NPUModel operator: converts models, rolls out serving pods, autoscales them, serves /metrics, /healthz and /readyz.',
  flags: [
    { name: 'kubeconfig', value: 'PATH', defaultText: '$KUBECONFIG, else in-cluster, else ~/.kube/config', description: 'kubeconfig file of the cluster to manage' },
    { name: 'context', value: 'NAME', defaultText: "the kubeconfig's current context", description: 'kubeconfig context to use' },
    { name: 'namespaces', value: 'A,B', env: 'NPUSERVE_NAMESPACES', defaultText: 'all', description: 'namespaces whose NPUModels the operator manages' },
    { name: 'image', value: 'IMAGE', env: 'NPUSERVE_IMAGE', default: 'npuserve:0.1.0', description: 'image of conversion Jobs and serving pods' },
    { name: 'image-pull-policy', value: 'POLICY', env: 'NPUSERVE_IMAGE_PULL_POLICY', default: 'IfNotPresent', description: 'Always, IfNotPresent or Never' },
    { name: 'artifact-claim', value: 'PVC', env: 'NPUSERVE_ARTIFACT_CLAIM', default: 'npuserve-artifacts', description: "PersistentVolumeClaim (in each model's namespace) holding converted models" },
    { name: 'npu-resource-name', value: 'NAME', env: 'NPUSERVE_NPU_RESOURCE', default: 'huawei.com/Ascend910', description: 'extended resource of one NPU, as the device plugin advertises it' },
    { name: 'npu-node-selector', value: 'K=V,...', env: 'NPUSERVE_NPU_NODE_SELECTOR', default: 'accelerator=huawei-Ascend910', description: 'labels of the nodes with NPUs' },
    { name: 'revision-history-limit', value: 'N', default: '2', description: 'converted revisions kept per model besides the current one' },
    { name: 'service-account', value: 'NAME', defaultText: "the namespace's default", description: 'service account of conversion Jobs and serving pods' },
    { name: 'leader-elect', value: 'true|false', default: 'true', description: 'take a Lease so that one of several replicas acts' },
    { name: 'leader-election-namespace', value: 'NS', env: 'POD_NAMESPACE', default: 'default', description: 'namespace of the Lease' },
    { name: 'lease-name', value: 'NAME', default: 'npuserve-operator', description: 'name of the Lease' },
    { name: 'lease-duration-seconds', value: 'N', default: '15', description: 'how long a leader holds the Lease without renewing it (renewal at 2/3, retries at 1/5)' },
    { name: 'metrics-port', value: 'N', default: '8080', description: 'port of /metrics, /healthz and /readyz (0: none)' },
    { name: 'workers', value: 'N', default: '4', description: 'NPUModels reconciled in parallel' },
    { name: 'scrape-interval-seconds', value: 'N', default: '5', description: "how often the autoscaler reads the serving pods' /metrics" },
    { name: 'pod-start-timeout-seconds', value: 'N', default: '300', description: 'a conversion or serving pod placed on a node but not started after this long is reported (ConversionStuck, ServerFailing); a stuck conversion Job is suspended to free its NPU' },
    { name: 'source-host-paths', value: 'P,Q', env: 'NPUSERVE_SOURCE_HOST_PATHS', default: '/models', description: 'node path prefixes a file:// source may name (empty: none)' },
    { name: 'source-allowed-hosts', value: 'H,I', env: 'NPUSERVE_SOURCE_ALLOWED_HOSTS', defaultText: 'none', description: 'internal hosts an http(s) source may name nevertheless' },
    { name: 'source-max-download-size', value: 'SIZE', env: 'NPUSERVE_SOURCE_MAX_DOWNLOAD_SIZE', defaultText: `convert's ${DEFAULT_MAX_DOWNLOAD_BYTES / 2 ** 30}Gi`, description: 'largest http(s) download of a conversion Job (bytes, or with Ki, Mi, Gi, Ti)' },
    { name: 'network-policy', value: 'true|false', default: 'true', description: "a NetworkPolicy per model admitting its namespace, the operator's pods and --network-policy-namespaces" },
    { name: 'network-policy-namespaces', value: 'A,B', defaultText: 'none', description: "namespaces besides a model's own whose pods may call it" },
    ...logFlags('json'),
  ],
};

function list(v: string): string[] {
  return v.split(',').map((s) => s.trim()).filter(Boolean);
}

function hostPathPrefixes(v: string): string[] {
  return list(v).map((p) => {
    if (!p.startsWith('/') || p.split('/').includes('..')) throw new UsageError(`--source-host-paths: '${p}' must be an absolute path without '..'`);
    return posix.normalize(p).replace(/(.)\/$/, '$1');
  });
}

function sourcePolicy(f: FlagValues): SourcePolicy {
  const size = stringFlag(f, 'source-max-download-size') ?? '';
  if (size !== '' && parseByteSize(size) === null) throw new UsageError(`--source-max-download-size must be a size in bytes, or with Ki, Mi, Gi or Ti, got '${size}'`);
  return {
    hostPathPrefixes: hostPathPrefixes(stringFlag(f, 'source-host-paths')!),
    allowedHosts: list(stringFlag(f, 'source-allowed-hosts') ?? '').map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1')),
    maxDownloadSize: size || null,
  };
}

function labels(spec: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of spec.split(',').filter(Boolean)) {
    const [k, v] = part.split('=');
    if (!k || v === undefined) throw new UsageError(`--npu-node-selector: '${part}' is not key=value`);
    out[k.trim()] = v.trim();
  }
  return out;
}

/** The configuration from parsed flags (OPERATOR_COMMAND's) and the pod's environment. */
export function operatorConfig(f: FlagValues, env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  const leaseDuration = intFlag(f, 'lease-duration-seconds', 2)!;
  return {
    kubeconfig: stringFlag(f, 'kubeconfig'),
    context: stringFlag(f, 'context'),
    namespaces: list(stringFlag(f, 'namespaces') ?? ''),
    image: stringFlag(f, 'image')!,
    imagePullPolicy: choiceFlag(f, 'image-pull-policy', ['Always', 'IfNotPresent', 'Never'] as const)!,
    artifactClaim: stringFlag(f, 'artifact-claim')!,
    npuResourceName: stringFlag(f, 'npu-resource-name')!,
    npuNodeSelector: labels(stringFlag(f, 'npu-node-selector')!),
    revisionHistoryLimit: intFlag(f, 'revision-history-limit', 0)!,
    serviceAccountName: stringFlag(f, 'service-account') ?? null,
    leaderElection: {
      enabled: choiceFlag(f, 'leader-elect', ['true', 'false'] as const) === 'true',
      namespace: stringFlag(f, 'leader-election-namespace')!,
      leaseName: stringFlag(f, 'lease-name')!,
      identity: env.POD_NAME ?? `${env.HOSTNAME ?? 'operator'}-${process.pid}`,
      leaseDurationSeconds: leaseDuration,
      renewDeadlineSeconds: Math.max(1, Math.floor((leaseDuration * 2) / 3)),
      retryPeriodSeconds: Math.max(1, Math.floor(leaseDuration / 5)),
    },
    metricsPort: intFlag(f, 'metrics-port', 0)!,
    workers: intFlag(f, 'workers', 1)!,
    scrapeIntervalSeconds: intFlag(f, 'scrape-interval-seconds', 1)!,
    podStartTimeoutSeconds: intFlag(f, 'pod-start-timeout-seconds', 1)!,
    sources: sourcePolicy(f),
    networkPolicy: {
      enabled: choiceFlag(f, 'network-policy', ['true', 'false'] as const) === 'true',
      // The operator's own namespace, which the pod knows; the Lease's otherwise.
      operatorNamespace: env.POD_NAMESPACE ?? stringFlag(f, 'leader-election-namespace')!,
      ingressNamespaces: list(stringFlag(f, 'network-policy-namespaces') ?? ''),
    },
    log: { format: logFormatOf(stringFlag(f, 'log-format')!), level: logLevelOf(stringFlag(f, 'log-level')!) },
  };
}

/** Flags and environment to configuration in one step (tests, and callers without a parsed command line). */
export function parseOperatorConfig(argv: string[], env: NodeJS.ProcessEnv = process.env): OperatorConfig {
  return operatorConfig(parseFlags(OPERATOR_COMMAND, argv, env), env);
}
