// A small Kubernetes REST client for the local cluster's test code (node agent, service proxy, tests):
// JSON requests, patches, list-then-watch, authenticated with the client certificate of a kubeconfig.
import fs from 'node:fs';
import https from 'node:https';

export interface Credentials {
  server: string; // https://127.0.0.1:PORT
  caPem: string;
  certPem: string;
  keyPem: string;
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: Array<{ apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }>;
  finalizers?: string[];
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  [field: string]: unknown;
}

export interface KubeList<T> {
  metadata: { resourceVersion?: string; continue?: string };
  items: T[];
}

export type WatchEventType = 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
export interface WatchEvent<T> {
  type: WatchEventType;
  object: T;
}

export type PatchType = 'merge' | 'strategic' | 'json';
const patchContentTypes: Record<PatchType, string> = {
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  json: 'application/json-patch+json',
};

/** An API error with the server's HTTP status, reason and message. */
export class KubeError extends Error {
  constructor(
    readonly method: string,
    readonly path: string,
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(`${method} ${path}: ${status} ${reason}: ${message}`);
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeError && err.status === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof KubeError && err.status === 409;
}

interface KubeconfigFile {
  clusters: Array<{ name: string; cluster: { server: string; 'certificate-authority-data': string } }>;
  users: Array<{ name: string; user: { 'client-certificate-data': string; 'client-key-data': string } }>;
}

/** Reads the kubeconfig written by the local cluster (JSON, certificate data inline). */
export function loadCredentials(kubeconfigPath: string): Credentials {
  let config: KubeconfigFile;
  try {
    config = JSON.parse(fs.readFileSync(kubeconfigPath, 'utf8')) as KubeconfigFile;
  } catch (err) {
    throw new Error(`${kubeconfigPath}: not a kubeconfig written by the local cluster (${(err as Error).message})`);
  }
  const cluster = config.clusters[0]?.cluster;
  const user = config.users[0]?.user;
  if (!cluster || !user) throw new Error(`${kubeconfigPath}: kubeconfig has no cluster or user entry`);
  const decode = (b64: string) => Buffer.from(b64, 'base64').toString('utf8');
  return {
    server: cluster.server,
    caPem: decode(cluster['certificate-authority-data']),
    certPem: decode(user['client-certificate-data']),
    keyPem: decode(user['client-key-data']),
  };
}

export class KubeClient {
  private readonly agent: https.Agent;
  private readonly base: URL;

  constructor(readonly credentials: Credentials) {
    this.base = new URL(credentials.server);
    this.agent = new https.Agent({
      ca: credentials.caPem,
      cert: credentials.certPem,
      key: credentials.keyPem,
      keepAlive: true,
      maxSockets: 32,
    });
  }

  static fromKubeconfig(path: string): KubeClient {
    return new KubeClient(loadCredentials(path));
  }

  get<T = KubeObject>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }

  list<T = KubeObject>(path: string, query: Record<string, string> = {}): Promise<KubeList<T>> {
    return this.request<KubeList<T>>('GET', withQuery(path, query));
  }

  create<T = KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>('POST', path, body);
  }

  replace<T = KubeObject>(path: string, body: unknown): Promise<T> {
    return this.request<T>('PUT', path, body);
  }

  patch<T = KubeObject>(path: string, body: unknown, type: PatchType = 'merge'): Promise<T> {
    return this.request<T>('PATCH', path, body, patchContentTypes[type]);
  }

  delete(path: string, options: Record<string, unknown> = {}): Promise<KubeObject> {
    return this.request<KubeObject>('DELETE', path, { kind: 'DeleteOptions', apiVersion: 'v1', ...options });
  }

  /** GET that returns the body as text (for /readyz and friends). */
  raw(path: string): Promise<string> {
    return this.send('GET', path).then((r) => r.body);
  }

  async request<T>(method: string, path: string, body?: unknown, contentType = 'application/json'): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const res = await this.send(method, path, payload, contentType);
    return JSON.parse(res.body) as T;
  }

  private send(method: string, path: string, payload?: string, contentType = 'application/json') {
    return new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = https.request(
        new URL(path, this.base),
        {
          method,
          agent: this.agent,
          headers: {
            accept: 'application/json',
            ...(payload === undefined ? {} : { 'content-type': contentType, 'content-length': Buffer.byteLength(payload) }),
          },
          timeout: 30_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) return resolve({ status, body: text });
            reject(apiError(method, path, status, text));
          });
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer from ${this.base.origin} in 30 s`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /**
   * Streams watch events of `path` from `resourceVersion` until the server closes the stream, the
   * signal aborts, or an ERROR event arrives (returned, e.g. 410 Gone: the caller lists again).
   */
  watch<T>(
    path: string,
    query: Record<string, string>,
    onEvent: (event: WatchEvent<T>) => void,
    signal?: AbortSignal,
  ): Promise<WatchEvent<T> | undefined> {
    const url = new URL(withQuery(path, { ...query, watch: 'true', allowWatchBookmarks: 'true' }), this.base);
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method: 'GET', agent: this.agent, signal }, (res) => {
        if ((res.statusCode ?? 0) >= 300) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(apiError('WATCH', path, res.statusCode ?? 0, Buffer.concat(chunks).toString())));
          return;
        }
        let buffered = '';
        let errorEvent: WatchEvent<T> | undefined;
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buffered += chunk;
          let newline: number;
          while ((newline = buffered.indexOf('\n')) >= 0) {
            const line = buffered.slice(0, newline).trim();
            buffered = buffered.slice(newline + 1);
            if (!line) continue;
            const event = JSON.parse(line) as WatchEvent<T>;
            if (event.type === 'ERROR') {
              errorEvent = event;
              req.destroy();
              return resolve(errorEvent);
            }
            onEvent(event);
          }
        });
        res.on('end', () => resolve(errorEvent));
        res.on('error', (err) => (signal?.aborted ? resolve(undefined) : reject(err)));
      });
      req.on('error', (err) => (signal?.aborted ? resolve(undefined) : reject(err)));
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function withQuery(path: string, query: Record<string, string>): string {
  const params = new URLSearchParams(query).toString();
  if (!params) return path;
  return path + (path.includes('?') ? '&' : '?') + params;
}

function apiError(method: string, path: string, status: number, text: string): KubeError {
  try {
    const s = JSON.parse(text) as { reason?: string; message?: string };
    return new KubeError(method, path, status, s.reason ?? 'Unknown', s.message ?? text);
  } catch {
    return new KubeError(method, path, status, 'Unknown', text.slice(0, 500));
  }
}

/**
 * Keeps an in-memory view of a collection: lists, then watches from the list's resourceVersion, and
 * lists again when the watch ends or expires. `onChange` sees every add/update/delete. Runs until
 * the signal aborts. `onSynced` is called once, after the first list has been delivered.
 */
export async function informer<T extends KubeObject>(
  client: KubeClient,
  path: string,
  query: Record<string, string>,
  onChange: (type: 'ADDED' | 'MODIFIED' | 'DELETED', object: T) => void,
  signal: AbortSignal,
  onSynced?: () => void,
): Promise<void> {
  const known = new Map<string, T>();
  const key = (o: T) => `${o.metadata.namespace ?? ''}/${o.metadata.name ?? ''}`;
  while (!signal.aborted) {
    try {
      const list = await client.list<T>(path, query);
      const seen = new Set<string>();
      for (const item of list.items) {
        seen.add(key(item));
        const before = known.get(key(item));
        known.set(key(item), item);
        if (!before) onChange('ADDED', item);
        else if (before.metadata.resourceVersion !== item.metadata.resourceVersion) onChange('MODIFIED', item);
      }
      for (const [k, item] of known) {
        if (!seen.has(k)) {
          known.delete(k);
          onChange('DELETED', item);
        }
      }
      onSynced?.();
      onSynced = undefined;
      let resourceVersion = list.metadata.resourceVersion ?? '';
      while (!signal.aborted) {
        const watchStarted = Date.now();
        const error = await client.watch<T>(
          path,
          { ...query, resourceVersion, timeoutSeconds: '300' },
          (event) => {
            if (event.type === 'BOOKMARK') {
              resourceVersion = event.object.metadata.resourceVersion ?? resourceVersion;
              return;
            }
            if (event.type === 'ERROR') return;
            resourceVersion = event.object.metadata.resourceVersion ?? resourceVersion;
            if (event.type === 'DELETED') known.delete(key(event.object));
            else known.set(key(event.object), event.object);
            onChange(event.type, event.object);
          },
          signal,
        );
        // A watch that ends at once (server restarting, expired version) must not become a busy loop.
        if (Date.now() - watchStarted < 1000) await sleep(1000);
        if (error) break; // expired resourceVersion: list again
      }
    } catch (err) {
      if (signal.aborted) return;
      console.error(`informer ${path}: ${(err as Error).message}; retrying in 1 s`);
      await sleep(1000);
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value (not undefined), or throws naming what was awaited. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 60_000,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() > deadline) {
      const cause = lastError ? ` (last error: ${(lastError as Error).message})` : '';
      throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}${cause}`);
    }
    await sleep(intervalMs);
  }
}
