// The only file that talks to the API server: credentials from a kubeconfig or the in-cluster
// service account, JSON requests, merge patches, and watch streams.
import { readFileSync } from 'node:fs';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest } from 'node:http';

import { parse as parseYaml } from 'yaml';

import type { KubeObject } from './types.js';

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
export const isGone = (e: unknown): boolean => e instanceof ApiError && e.status === 410;

export interface KubeList<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

export interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T;
}

interface Credentials {
  server: URL;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  token?: () => string;
  insecure?: boolean;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

function fileOrData(data: string | undefined, file: string | undefined): Buffer | undefined {
  if (data) return Buffer.from(data, 'base64');
  if (file) return readFileSync(file);
  return undefined;
}

function fromKubeconfig(path: string, contextName?: string): Credentials {
  const doc = parseYaml(readFileSync(path, 'utf8')) as Record<string, any>;
  const ctxName = contextName ?? doc['current-context'];
  const ctx = (doc.contexts ?? []).find((c: any) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`${path}: context '${ctxName}' not found`);
  const cluster = (doc.clusters ?? []).find((c: any) => c.name === ctx.cluster)?.cluster;
  const user = (doc.users ?? []).find((u: any) => u.name === ctx.user)?.user ?? {};
  if (!cluster?.server) throw new Error(`${path}: cluster '${ctx.cluster}' has no server`);
  const token = user.token ?? (user.tokenFile ? readFileSync(user.tokenFile, 'utf8').trim() : undefined);
  return {
    server: new URL(cluster.server),
    ca: fileOrData(cluster['certificate-authority-data'], cluster['certificate-authority']),
    cert: fileOrData(user['client-certificate-data'], user['client-certificate']),
    key: fileOrData(user['client-key-data'], user['client-key']),
    token: token ? () => token : undefined,
    insecure: cluster['insecure-skip-tls-verify'] === true,
  };
}

function inCluster(saDir: string): Credentials {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const port = process.env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!host) throw new Error('no kubeconfig given (--kubeconfig or KUBECONFIG) and not running in a cluster (KUBERNETES_SERVICE_HOST unset)');
  // The token is re-read on each request: the kubelet rotates projected tokens.
  return { server: new URL(`https://${host.includes(':') ? `[${host}]` : host}:${port}`), ca: readFileSync(`${saDir}/ca.crt`), token: () => readFileSync(`${saDir}/token`, 'utf8').trim() };
}

export interface RequestOpts {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class Kube {
  constructor(private readonly creds: Credentials) {}

  /** --kubeconfig / KUBECONFIG, else the in-cluster service account (NPUSERVE_SERVICE_ACCOUNT_DIR overrides its folder). */
  static fromEnvironment(kubeconfig?: string): Kube {
    const path = kubeconfig ?? process.env.KUBECONFIG;
    return new Kube(path ? fromKubeconfig(path) : inCluster(process.env.NPUSERVE_SERVICE_ACCOUNT_DIR ?? SA_DIR));
  }

  private options(method: string, path: string, opts: RequestOpts): RequestOptions & { url: URL } {
    const url = new URL(path, this.creds.server);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.body !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
    const token = this.creds.token?.();
    if (token) headers.authorization = `Bearer ${token}`;
    return { url, method, headers, ca: this.creds.ca, cert: this.creds.cert, key: this.creds.key, rejectUnauthorized: !this.creds.insecure, signal: opts.signal };
  }

  private send(method: string, path: string, opts: RequestOpts): Promise<import('node:http').IncomingMessage> {
    const o = this.options(method, path, opts);
    const doRequest = o.url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = doRequest(o.url, o, resolve);
      req.on('error', reject);
      if (opts.timeoutMs) req.setTimeout(opts.timeoutMs, () => req.destroy(new Error(`${method} ${path}: timed out after ${opts.timeoutMs} ms`)));
      if (opts.body !== undefined) req.write(typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body));
      req.end();
    });
  }

  async request<T>(method: string, path: string, opts: RequestOpts = {}): Promise<T> {
    const res = await this.send(method, path, { timeoutMs: 30_000, ...opts });
    const chunks: Buffer[] = [];
    for await (const c of res) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const status = res.statusCode ?? 0;
    if (status >= 400) {
      let reason = '';
      let message = text;
      try {
        const s = JSON.parse(text);
        reason = s.reason ?? '';
        message = s.message ?? text;
      } catch {
        // not a Status object
      }
      throw new ApiError(status, reason, `${method} ${path}: ${status} ${message}`);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T extends KubeObject>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  async list<T>(path: string, query: RequestOpts['query'] = {}): Promise<KubeList<T>> {
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

  mergePatch<T>(path: string, patch: unknown): Promise<T> {
    return this.request<T>('PATCH', path, { body: patch, contentType: 'application/merge-patch+json' });
  }

  delete(path: string, query: RequestOpts['query'] = {}): Promise<unknown> {
    return this.request('DELETE', path, { query, body: { propagationPolicy: 'Background' } });
  }

  /**
   * Streams watch events from `resourceVersion` until the server ends the stream or `signal`
   * aborts. An expired resourceVersion surfaces as ApiError 410 (as HTTP status or ERROR event).
   */
  async watch<T>(path: string, resourceVersion: string, query: RequestOpts['query'], onEvent: (e: WatchEvent<T>) => void, signal: AbortSignal): Promise<void> {
    const res = await this.send('GET', path, { query: { ...query, watch: 1, resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 300 }, signal });
    if ((res.statusCode ?? 0) >= 400) {
      res.resume();
      throw new ApiError(res.statusCode ?? 0, '', `watch ${path}: ${res.statusCode}`);
    }
    let buffered = '';
    try {
      for await (const chunk of res) {
        buffered += (chunk as Buffer).toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl).trim();
          buffered = buffered.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line) as WatchEvent<T>;
          if (ev.type === 'ERROR') {
            const s = ev.object as unknown as { code?: number; reason?: string; message?: string };
            throw new ApiError(s.code ?? 500, s.reason ?? '', `watch ${path}: ${s.message ?? 'error event'}`);
          }
          onEvent(ev);
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      throw e;
    }
  }
}
