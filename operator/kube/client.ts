// The one way npuserve talks to a Kubernetes API server, for the operator, the test harness and the
// scripts: @kubernetes/client-node loads the credentials (KUBECONFIG=a:b merging, paths relative to
// each kubeconfig's folder, exec credential plugins, token files and refresh, proxy-url,
// tls-server-name, impersonation, the in-cluster service account) and carries every request over its
// own HTTP layer and Watch. Objects stay plain JSON as the API server sends them: client-node's
// generated models would turn timestamps into Dates, drop fields they do not know and rename some
// (a NetworkPolicy rule's `from` is `_from` there, so a plain object's `from` would be dropped and
// the policy would admit everyone).
import { existsSync, readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';
import { homedir } from 'node:os';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';

import { load as loadYaml } from 'js-yaml';
import { HttpMethod, IsomorphicFetchHttpLibrary, KubeConfig, RequestContext, Watch } from '@kubernetes/client-node';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const isNotFound = (e: unknown): boolean => e instanceof ApiError && e.status === 404;
export const isConflict = (e: unknown): boolean => e instanceof ApiError && e.status === 409;
export const isAlreadyExists = (e: unknown): boolean => e instanceof ApiError && e.status === 409 && e.reason === 'AlreadyExists';
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.status === 410;

export interface KubeList<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK';
  object: T;
}

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export interface ConnectOptions {
  /** A kubeconfig file; without it $KUBECONFIG (a:b merged), then ~/.kube/config, then the in-cluster service account. */
  kubeconfig?: string;
  /** A context of the kubeconfig other than its current-context. */
  context?: string;
}

const http = new IsomorphicFetchHttpLibrary();
const methods: Record<string, HttpMethod> = { GET: HttpMethod.GET, POST: HttpMethod.POST, PUT: HttpMethod.PUT, PATCH: HttpMethod.PATCH, DELETE: HttpMethod.DELETE };

export class KubeApi {
  constructor(readonly config: KubeConfig) {
    if (!config.getCurrentCluster()) throw new Error(`kubeconfig: context '${config.getCurrentContext()}' names no cluster`);
  }

  /**
   * --kubeconfig PATH, else $KUBECONFIG (files joined by ':' merged as kubectl merges them: the
   * first file to set a name or the current-context wins), else ~/.kube/config, else the in-cluster
   * service account (its folder overridable by NPUSERVE_SERVICE_ACCOUNT_DIR, for runtimes that
   * relocate volume mounts).
   */
  static fromEnvironment(opts: ConnectOptions = {}): KubeApi {
    const files = opts.kubeconfig ? [opts.kubeconfig] : (process.env.KUBECONFIG ?? '').split(delimiter).filter(Boolean);
    const home = join(homedir(), '.kube', 'config');
    if (files.length === 0 && !process.env.KUBERNETES_SERVICE_HOST && existsSync(home)) files.push(home);
    const kc = files.length > 0 ? mergeKubeconfigs(files) : inCluster(process.env.NPUSERVE_SERVICE_ACCOUNT_DIR ?? '/var/run/secrets/kubernetes.io/serviceaccount');
    if (opts.context) {
      if (!kc.getContextObject(opts.context)) throw new Error(`kubeconfig: no context '${opts.context}' (have: ${kc.getContexts().map((c) => c.name).join(', ') || 'none'})`);
      kc.setCurrentContext(opts.context);
    }
    return new KubeApi(kc);
  }

  static fromFile(path: string): KubeApi {
    return KubeApi.fromEnvironment({ kubeconfig: path });
  }

  get server(): string {
    return this.config.getCurrentCluster()!.server;
  }

  private async context(method: string, path: string, opts: RequestOptions): Promise<RequestContext> {
    const url = new URL(this.server.replace(/\/$/, '') + path);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const ctx = new RequestContext(url.toString(), methods[method]);
    ctx.setHeaderParam('Accept', 'application/json');
    if (opts.body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? 'application/json');
      ctx.setBody(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
    }
    await this.config.applySecurityAuthentication(ctx);
    return ctx;
  }

  /** One request; answers >= 400 become ApiError with the Status object's reason and message. */
  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const text = await this.requestText(method, path, opts);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  async requestText(method: string, path: string, opts: RequestOptions = {}): Promise<string> {
    const ctx = await this.context(method, path, opts);
    const timeoutMs = opts.timeoutMs ?? 30_000;
    const timeout = AbortSignal.timeout(timeoutMs);
    ctx.setSignal(opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout);
    let res;
    try {
      res = await http.send(ctx).toPromise();
    } catch (e) {
      if (timeout.aborted) throw new Error(`${method} ${path}: no answer from ${this.server} in ${timeoutMs / 1000} s`);
      throw new Error(`${method} ${path}: ${(e as Error).message}`);
    }
    const text = await res.body.text();
    if (res.httpStatusCode >= 400) throw apiError(method, path, res.httpStatusCode, text);
    return text;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  /** Every page of a collection (limit 500 per request). */
  async list<T>(path: string, query: Query = {}): Promise<KubeList<T>> {
    const items: T[] = [];
    let cont: string | undefined;
    let rv: string | undefined;
    do {
      const page = await this.request<KubeList<T>>('GET', path, { query: { ...query, limit: 500, continue: cont } });
      items.push(...page.items);
      cont = page.metadata.continue || undefined;
      rv = page.metadata.resourceVersion;
    } while (cont);
    return { metadata: { resourceVersion: rv }, items };
  }

  create<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, { body });
  }

  replace<T>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, { body });
  }

  patch<T>(path: string, patch: unknown, type: 'merge' | 'strategic' | 'json' = 'merge'): Promise<T> {
    return this.request<T>('PATCH', path, { body: patch, contentType: patchContentTypes[type] });
  }

  mergePatch<T>(path: string, patch: unknown): Promise<T> {
    return this.patch<T>(path, patch, 'merge');
  }

  /** Deletes with background propagation unless `options` says otherwise (DeleteOptions fields). */
  delete(path: string, options: Record<string, unknown> = {}): Promise<unknown> {
    return this.request('DELETE', path, { body: { kind: 'DeleteOptions', apiVersion: 'v1', propagationPolicy: 'Background', ...options } });
  }

  /**
   * Streams watch events of a collection from `resourceVersion` until the server ends the stream
   * (resolves) or `signal` aborts (resolves). An expired resourceVersion rejects with ApiError 410,
   * other failures with their error.
   */
  watch<T>(path: string, resourceVersion: string, query: Query, onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    const params: Record<string, string> = { allowWatchBookmarks: 'true', timeoutSeconds: '300' };
    for (const [k, v] of Object.entries(query)) if (v !== undefined) params[k] = String(v);
    if (resourceVersion) params.resourceVersion = resourceVersion;
    return new Promise<void>((resolve, reject) => {
      let controller: AbortController | undefined;
      let failed: Error | undefined;
      const onAbort = () => controller?.abort();
      signal.addEventListener('abort', onAbort, { once: true });
      const finish = (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) return resolve();
        const e = failed ?? (err ? watchError(path, err) : undefined);
        if (e) reject(e);
        else resolve();
      };
      new Watch(this.config)
        .watch(path, params, (type: string, object: unknown) => {
          if (failed) return;
          if (type === 'ERROR') {
            const s = object as { code?: number; reason?: string; message?: string };
            failed = new ApiError(s.code ?? 500, s.reason ?? '', `watch ${path}: ${s.message ?? 'error event'}`);
            controller?.abort();
            return;
          }
          onEvent({ type: type as WatchEvent<T>['type'], object: object as T });
        }, finish)
        .then((c) => {
          controller = c;
          if (signal.aborted || failed) c.abort();
        }, finish);
    });
  }
}

const patchContentTypes = { merge: 'application/merge-patch+json', strategic: 'application/strategic-merge-patch+json', json: 'application/json-patch+json' } as const;

function apiError(method: string, path: string, status: number, text: string): ApiError {
  try {
    const s = JSON.parse(text) as { reason?: string; message?: string };
    return new ApiError(status, s.reason ?? '', `${method} ${path}: ${status} ${s.message ?? text}`);
  } catch {
    return new ApiError(status, '', `${method} ${path}: ${status} ${text.slice(0, 500)}`);
  }
}

function watchError(path: string, err: unknown): Error {
  const e = err as Error & { statusCode?: number };
  if (typeof e.statusCode === 'number') return new ApiError(e.statusCode, '', `watch ${path}: ${e.statusCode} ${e.message}`);
  return new Error(`watch ${path}: ${e.message ?? String(err)}`);
}

function mergeKubeconfigs(files: string[]): KubeConfig {
  const merged = new KubeConfig();
  let current = '';
  for (const file of files) {
    if (!existsSync(file)) {
      if (files.length === 1) throw new Error(`kubeconfig ${file} does not exist`);
      continue; // kubectl skips missing entries of KUBECONFIG
    }
    const kc = new KubeConfig();
    kc.loadFromFile(file); // resolves the file's relative certificate paths against its folder
    const raw = (loadYaml(readFileSync(file, 'utf8')) ?? {}) as { users?: Array<{ name: string; user?: { tokenFile?: string } }> };
    for (const u of kc.getUsers()) {
      // As kubectl: an exec plugin's relative command with a '/' is relative to the kubeconfig's folder.
      const command = u.exec?.command as string | undefined;
      if (command?.includes('/') && !isAbsolute(command)) u.exec.command = resolve(dirname(file), command);
      // kubectl's `tokenFile` (client-node reads only `token-file`, once): re-read every minute, as client-go does.
      const tokenFile = raw.users?.find((r) => r.name === u.name)?.user?.tokenFile;
      if (tokenFile && !u.token && !u.authProvider) Object.assign(u, { authProvider: { name: 'tokenFile', config: { tokenFile: resolve(dirname(file), tokenFile) } } });
    }
    for (const c of kc.getClusters()) if (!merged.getCluster(c.name)) merged.addCluster(c);
    for (const u of kc.getUsers()) if (!merged.getUser(u.name)) merged.addUser(u);
    for (const c of kc.getContexts()) if (!merged.getContextObject(c.name)) merged.addContext(c);
    current ||= kc.getCurrentContext() ?? '';
  }
  if (merged.getContexts().length === 0) throw new Error(`kubeconfig ${files.join(delimiter)}: no contexts`);
  merged.setCurrentContext(current || merged.getContexts()[0].name);
  return merged;
}

function inCluster(saDir: string): KubeConfig {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new Error('no kubeconfig given (--kubeconfig or KUBECONFIG), no ~/.kube/config, and not running in a cluster (KUBERNETES_SERVICE_HOST unset)');
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: 'in-cluster', server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`, caFile: join(saDir, 'ca.crt'), skipTLSVerify: false }],
    // client-node's tokenFile provider re-reads the file: the kubelet rotates projected tokens.
    users: [{ name: 'service-account', authProvider: { name: 'tokenFile', config: { tokenFile: join(saDir, 'token') } } }],
    contexts: [{ name: 'in-cluster', cluster: 'in-cluster', user: 'service-account' }],
    currentContext: 'in-cluster',
  });
  return kc;
}
