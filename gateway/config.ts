// `npuserve gateway`: its flags as data (help and docs are made from them) and the configuration
// parsed from them once.
import { isIPv6 } from 'node:net';

import { UsageError } from '../common/errors.js';
import { intFlag, numberFlag, stringFlag, type CommandSpec, type FlagValues } from '../common/flags.js';
import { logFlags, logFormatOf, logLevelOf, type LogFormat, type LogLevel } from '../common/log.js';
import { DEFAULT_PREFIX_CHARS } from './prefix.js';
import { DEFAULT_LOAD_FACTOR } from './ring.js';

/** A fixed server of one model (`--backend`): routed to as a ready replica, no Kubernetes involved. */
export interface StaticBackend {
  model: string;
  /** `host:port`, an IPv6 address in brackets. */
  replica: string;
}

export interface GatewayConfig {
  /** Fixed servers to route to instead of the cluster's NPUModels; empty: watch Kubernetes. */
  backends: StaticBackend[];
  kubeconfig?: string;
  context?: string;
  /** Namespaces whose NPUModels are served; empty: all. */
  namespaces: string[];
  host: string;
  port: number;
  loadFactor: number;
  prefixChars: number;
  holdTimeoutSeconds: number;
  /** Retry-After of the 503 a request held past its deadline gets. */
  retryAfterSeconds: number;
  scrapeIntervalSeconds: number;
  bodyLimitBytes: number;
  /** Names this gateway's held-requests annotation (the pod name in a cluster). */
  identity: string;
  log: { format: LogFormat; level: LogLevel };
}

export const GATEWAY_COMMAND: CommandSpec = {
  name: 'npuserve gateway',
  summary: 'One OpenAI-compatible endpoint for every NPUModel: routes each request to its model by prefix-aware consistent hashing with bounded loads, and holds requests for models at zero replicas until one is ready.',
  flags: [
    { name: 'backend', value: 'MODEL=HOST:PORT', multiple: true, description: 'static mode: serve MODEL from the server at HOST:PORT (IPv6 in brackets) instead of watching Kubernetes; repeat the model name for several replicas' },
    { name: 'kubeconfig', value: 'PATH', defaultText: '$KUBECONFIG, else in-cluster, else ~/.kube/config', description: 'kubeconfig file of the cluster' },
    { name: 'context', value: 'NAME', defaultText: "the kubeconfig's current context", description: 'kubeconfig context to use' },
    { name: 'namespaces', value: 'A,B', env: 'NPUSERVE_NAMESPACES', defaultText: 'all', description: 'namespaces whose NPUModels the gateway serves' },
    { name: 'port', value: 'N', default: '8000', description: 'listen port (0: any free port)' },
    { name: 'host', value: 'ADDR', env: 'NPUSERVE_BIND_ADDRESS', default: '0.0.0.0', description: 'listen address' },
    { name: 'load-factor', value: 'X', default: String(DEFAULT_LOAD_FACTOR), description: 'a replica takes at most ceil(X x the average in-flight requests) before requests for its prefixes go to the next replica on the ring under that bound (at least 1)' },
    { name: 'prefix-chars', value: 'N', default: String(DEFAULT_PREFIX_CHARS), description: 'characters of the prompt (chat: roles and contents in order) that pick the replica' },
    { name: 'hold-timeout-seconds', value: 'N', default: '300', description: 'longest a request waits for its model to have a ready replica (from zero replicas) before a 503' },
    { name: 'retry-after-seconds', value: 'N', default: '30', description: 'Retry-After of that 503' },
    { name: 'scrape-interval-seconds', value: 'N', default: '2', description: "how often the replicas' /metrics (queue, KV cache usage) are read for the fallback choice" },
    { name: 'max-body-bytes', value: 'N', default: String(8 * 2 ** 20), description: 'largest request body, as the servers take; more get 413' },
    { name: 'identity', value: 'NAME', env: 'POD_NAME', defaultText: 'hostname-pid', description: "this gateway's name in the held-requests annotation it writes on NPUModels" },
    ...logFlags('json'),
  ],
};

export function gatewayConfig(f: FlagValues, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const loadFactor = numberFlag(f, 'load-factor')!;
  if (loadFactor < 1) throw new UsageError(`--load-factor must be at least 1 (1: perfectly even loads), got ${loadFactor}`);
  const port = intFlag(f, 'port', 0)!;
  if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const backends = staticBackends(f);
  const clusterFlags = ['kubeconfig', 'context', 'namespaces'].filter((name) => stringFlag(f, name) !== undefined);
  if (backends.length && clusterFlags.length) throw new UsageError(`--backend serves fixed servers without Kubernetes; it cannot be combined with ${clusterFlags.map((name) => `--${name}`).join(', ')}${clusterFlags.includes('namespaces') ? ' (or $NPUSERVE_NAMESPACES)' : ''}`);
  return {
    backends,
    kubeconfig: stringFlag(f, 'kubeconfig'),
    context: stringFlag(f, 'context'),
    namespaces: (stringFlag(f, 'namespaces') ?? '').split(',').map((s) => s.trim()).filter(Boolean),
    host: stringFlag(f, 'host')!,
    port,
    loadFactor,
    prefixChars: intFlag(f, 'prefix-chars', 1)!,
    holdTimeoutSeconds: intFlag(f, 'hold-timeout-seconds', 1)!,
    retryAfterSeconds: intFlag(f, 'retry-after-seconds', 1)!,
    scrapeIntervalSeconds: intFlag(f, 'scrape-interval-seconds', 1)!,
    bodyLimitBytes: intFlag(f, 'max-body-bytes', 1024)!,
    identity: stringFlag(f, 'identity') ?? `${env.HOSTNAME ?? 'gateway'}-${process.pid}`,
    log: { format: logFormatOf(stringFlag(f, 'log-format')!), level: logLevelOf(stringFlag(f, 'log-level')!) },
  };
}

/** The `--backend MODEL=HOST:PORT` values, each checked. */
function staticBackends(f: FlagValues): StaticBackend[] {
  const values = (f.backend as string[] | undefined) ?? [];
  const seen = new Set<string>();
  return values.map((v) => {
    const at = v.indexOf('=');
    const model = at < 0 ? '' : v.slice(0, at).trim();
    if (!model) throw new UsageError(`--backend must be MODEL=HOST:PORT, got '${v}'`);
    const replica = hostPort(v.slice(at + 1));
    if (!replica) throw new UsageError(`--backend '${v}': expected HOST:PORT after the '=', with a port 1-65535 and an IPv6 address in brackets ([::1]:8000)`);
    if (seen.has(`${model}=${replica}`)) throw new UsageError(`--backend ${model}=${replica} is given twice`);
    seen.add(`${model}=${replica}`);
    return { model, replica };
  });
}

/** `host:port` as the proxy dials it, or undefined when `s` is not a hostname, IPv4 or bracketed IPv6 address with a port 1-65535. */
function hostPort(s: string): string | undefined {
  const m = /^(?:\[([^\]]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  const port = Number(m?.[3]);
  if (!m || port < 1 || port > 65535 || (m[1] !== undefined && !isIPv6(m[1]))) return undefined;
  return m[1] !== undefined ? `[${m[1]}]:${port}` : `${m[2]}:${port}`;
}
