// Forwarding one request to one replica: the client's method, headers (its Authorization too: each
// model's pods check their own API key) and body bytes go upstream; the answer comes back as it
// arrives (server-sent events are piped chunk by chunk, never buffered). Before anything reaches the
// client, an answer that says "not here" (a draining or still-loading replica's 503) or a connection
// that fails is reported instead, so the caller can try another replica.
import { Agent, request, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';

import type { Response } from 'express';

/** Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'content-length', 'expect']);

const agent = new Agent({ keepAlive: true, maxSockets: 1024 });

export type Attempt =
  /** The upstream's answer, headers received: the caller pipes it (`pipeAnswer`). */
  | { kind: 'answer'; upstream: IncomingMessage }
  /** Nothing reached the client and the replica did not take the request: another may. */
  | { kind: 'retry'; reason: 'unavailable' | 'connect'; status?: number; headers?: IncomingHttpHeaders; body?: Buffer; error?: string }
  | { kind: 'aborted' };

export function forwardedHeaders(headers: IncomingHttpHeaders, remote: string | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !NOT_FORWARDED.has(k)) out[k] = v;
  if (remote) out['x-forwarded-for'] = headers['x-forwarded-for'] ? `${headers['x-forwarded-for']}, ${remote}` : remote;
  return out;
}

/** Sends the request to `replica` (`ip:port`); a 503 answer's body is read (it is small) so the caller may retry or pass it on. */
export function attempt(replica: string, path: string, method: string, headers: Record<string, string | string[]>, body: Buffer, signal: AbortSignal): Promise<Attempt> {
  const at = replica.lastIndexOf(':');
  const host = replica.slice(0, at).replace(/^\[|\]$/g, '');
  return new Promise((resolve) => {
    if (signal.aborted) return resolve({ kind: 'aborted' });
    const req = request({ host, port: Number(replica.slice(at + 1)), path, method, agent, headers: { ...headers, 'content-length': String(body.length) } });
    const onAbort = () => req.destroy();
    signal.addEventListener('abort', onAbort, { once: true });
    req.on('error', (e) => {
      signal.removeEventListener('abort', onAbort);
      resolve(signal.aborted ? { kind: 'aborted' } : { kind: 'retry', reason: 'connect', error: (e as Error).message });
    });
    req.on('response', (upstream) => {
      if (upstream.statusCode !== 503) {
        // From here the caller owns the answer; the client's going away ends it (pipeAnswer).
        signal.removeEventListener('abort', onAbort);
        return resolve({ kind: 'answer', upstream });
      }
      const chunks: Buffer[] = [];
      upstream.on('data', (c: Buffer) => chunks.push(c));
      upstream.on('end', () => {
        signal.removeEventListener('abort', onAbort);
        resolve({ kind: 'retry', reason: 'unavailable', status: 503, headers: upstream.headers, body: Buffer.concat(chunks) });
      });
      upstream.on('error', () => resolve(signal.aborted ? { kind: 'aborted' } : { kind: 'retry', reason: 'connect', error: 'the 503 answer broke off' }));
    });
    req.end(body);
  });
}

function copyHeaders(res: Response, headers: IncomingHttpHeaders): void {
  for (const [k, v] of Object.entries(headers)) if (v !== undefined && !NOT_FORWARDED.has(k) && k !== 'x-request-id') res.setHeader(k, v);
}

/** Pipes the upstream's answer to the client as it arrives; resolves when it ends or either side goes away. */
export function pipeAnswer(res: Response, upstream: IncomingMessage): Promise<void> {
  res.status(upstream.statusCode ?? 502);
  copyHeaders(res, upstream.headers);
  res.flushHeaders();
  return new Promise((resolve) => {
    const done = () => resolve();
    // The client left: stop the upstream request (its server frees the batch slot).
    res.once('close', () => {
      if (!upstream.complete) upstream.destroy();
      done();
    });
    upstream.once('error', () => res.destroy());
    upstream.once('aborted', () => res.destroy());
    upstream.pipe(res);
  });
}

/** A buffered upstream answer (a 503 not retried) as is. */
export function sendBuffered(res: Response, status: number, headers: IncomingHttpHeaders, body: Buffer): void {
  res.status(status);
  copyHeaders(res, headers);
  res.removeHeader('content-length');
  res.end(body);
}
