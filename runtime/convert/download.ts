// Downloads an http(s) source (one GGUF file) for `npuserve convert`, as a tenant's URL must be
// fetched: redirects followed by hand (at most MAX_REDIRECTS), each hop's resolved address checked
// against common/source-policy.ts unless the admin allowed the host, the Authorization header sent
// to the first origin only, the GGUF magic checked on the first bytes, the size capped, and no byte
// of what a server sent ever put in an error message.
import { createWriteStream } from 'node:fs';
import { STATUS_CODES, request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

import { blockedAddress, DEFAULT_MAX_DOWNLOAD_BYTES, hostOf } from '../../common/source-policy.js';

const MAX_REDIRECTS = 5;
const GGUF_MAGIC = Buffer.from('GGUF', 'latin1');
const DEFAULT_IDLE_TIMEOUT_MS = 60_000;

export interface DownloadOptions {
  /** Hosts (names or IP literals) that may resolve to loopback, link-local or private addresses. */
  allowHosts?: readonly string[];
  /** Refuse a response larger than this (Content-Length up front, counted bytes while streaming). */
  maxBytes?: number;
  /** The Authorization header value, sent to the URL's own origin and never across a redirect to another. */
  authorization?: string;
  /** Give up when the connection is silent this long. */
  idleTimeoutMs?: number;
  onProgress?: (stage: string, done: number, total: number) => void;
}

export class DownloadError extends Error {
  constructor(url: URL | string, detail: string) {
    super(`download of ${typeof url === 'string' ? url : shown(url)}: ${detail}`);
    this.name = 'DownloadError';
  }
}

/** A URL as messages show it: no credentials, no query (signed URLs carry tokens there). */
function shown(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** The resolver the socket connects with: the address checked is the address used (no rebinding window). */
function guardedLookup(url: URL): LookupFunction {
  return (hostname, options, callback) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
      if (err) return callback(err, '', 0);
      const bad = addresses.map((a) => [a.address, blockedAddress(a.address)] as const).find(([, why]) => why);
      if (bad) return callback(new DownloadError(url, `${hostname} resolves to ${bad[0]}, ${bad[1]}; ask the cluster admin to allow this host (--allow-host) if it is trusted`), '', 0);
      if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
      return callback(null, addresses[0].address, addresses[0].family);
    });
  };
}

function checkTarget(url: URL, allowHosts: readonly string[]): boolean {
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DownloadError(url, `${url.protocol} is not http: or https:`);
  if (url.username || url.password) throw new DownloadError(url, 'credentials in the URL are not supported; pass an Authorization header through --header-env (spec.source.authSecretRef)');
  const host = hostOf(url);
  if (allowHosts.includes(host)) return true;
  const blocked = isIP(host) ? blockedAddress(host) : null;
  if (blocked) throw new DownloadError(url, `${host} is ${blocked}; ask the cluster admin to allow this host (--allow-host) if it is trusted`);
  return false;
}

function get(url: URL, allowed: boolean, authorization: string | undefined, idleTimeoutMs: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    const req = send(url, {
      headers: { 'user-agent': 'npuserve-convert', 'accept-encoding': 'identity', ...(authorization ? { authorization } : {}) },
      ...(allowed ? {} : { lookup: guardedLookup(url) }),
      timeout: idleTimeoutMs,
    });
    req.on('timeout', () => req.destroy(new DownloadError(url, `no data for ${idleTimeoutMs / 1000} s`)));
    req.on('response', resolve);
    req.on('error', reject);
    req.end();
  });
}

/** Follows redirects by hand, checking each hop; returns the final 200 response. */
async function open(start: URL, opts: DownloadOptions): Promise<{ res: IncomingMessage; url: URL }> {
  let url = start;
  let authorization = opts.authorization;
  for (let hop = 0; ; hop++) {
    const allowed = checkTarget(url, opts.allowHosts ?? []);
    const res = await get(url, allowed, authorization, opts.idleTimeoutMs ?? DEFAULT_IDLE_TIMEOUT_MS);
    const status = res.statusCode ?? 0;
    if (status === 200) return { res, url };
    res.destroy();
    const location = res.headers.location;
    if (status >= 300 && status < 400 && location) {
      if (hop >= MAX_REDIRECTS) throw new DownloadError(start, `more than ${MAX_REDIRECTS} redirects`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new DownloadError(url, `HTTP ${status} redirect to an invalid URL`);
      }
      if (url.protocol === 'https:' && next.protocol === 'http:') throw new DownloadError(url, `HTTP ${status} redirect from https to http (${next.host})`);
      if (next.origin !== url.origin) authorization = undefined;
      url = next;
      continue;
    }
    throw new DownloadError(url, `HTTP ${status} ${STATUS_CODES[status] ?? ''}`.trim());
  }
}

/** Passes bytes through while checking the GGUF magic on the first four and the running size. */
function guard(url: URL, maxBytes: number, total: number, onProgress?: DownloadOptions['onProgress']): Transform {
  let seen = 0;
  let head = Buffer.alloc(0);
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      if (head.length < GGUF_MAGIC.length) {
        head = Buffer.concat([head, chunk.subarray(0, GGUF_MAGIC.length - head.length)]);
        if (head.length === GGUF_MAGIC.length && !head.equals(GGUF_MAGIC))
          return done(new DownloadError(url, 'the response is not a GGUF file (its first 4 bytes are not "GGUF"); an http(s) source must be a single .gguf file'));
      }
      seen += chunk.length;
      if (seen > maxBytes) return done(new DownloadError(url, `the response exceeds the ${maxBytes}-byte limit (--max-download-size)`));
      onProgress?.('downloading', seen, total);
      done(null, chunk);
    },
    flush(done) {
      done(head.length < GGUF_MAGIC.length ? new DownloadError(url, `the response ends after ${seen} bytes, too short for a GGUF file`) : null);
    },
  });
}

/** A safe local name: the URL's file name when it is a plain `*.gguf`, else model.gguf. */
function localName(url: URL): string {
  const base = url.pathname.split('/').pop() ?? '';
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.gguf$/.test(base) ? base : 'model.gguf';
}

/** Downloads `source` into `dir`; returns the file's path. */
export async function downloadGguf(source: string, dir: string, opts: DownloadOptions = {}): Promise<string> {
  let url: URL;
  try {
    url = new URL(source);
  } catch {
    throw new DownloadError('the source', `${JSON.stringify(source.slice(0, 200))} is not a valid URL`);
  }
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES;
  try {
    return await fetchTo(url, dir, maxBytes, opts);
  } catch (e) {
    if (e instanceof DownloadError) throw e;
    throw new DownloadError(url, (e as Error).message);
  }
}

async function fetchTo(url: URL, dir: string, maxBytes: number, opts: DownloadOptions): Promise<string> {
  const { res, url: final } = await open(url, opts);
  const length = Number(res.headers['content-length'] ?? NaN);
  if (length > maxBytes) {
    res.destroy();
    throw new DownloadError(final, `Content-Length ${length} exceeds the ${maxBytes}-byte limit (--max-download-size)`);
  }
  const path = join(dir, localName(url));
  await pipeline(res, guard(final, maxBytes, Number.isFinite(length) ? length : 0, opts.onProgress), createWriteStream(path));
  return path;
}
