// One log line per HTTP request when its response ends: method, path (no query string), status,
// duration, body bytes sent, the requested model and a request id (the client's X-Request-Id, else
// a new one, echoed in the response). Never the prompt or any other part of the body. Probes and
// scrapes (/healthz, /readyz, /metrics), which arrive every few seconds, are logged at debug.
import { randomUUID } from 'node:crypto';

import type { RequestHandler } from 'express';

import type { Logger } from '../../common/log.js';

const PROBE_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/** A client's request id is kept when it is short and plain (it goes into logs), else replaced. */
function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === 'string' && /^[\w.:-]{1,128}$/.test(header) ? header : randomUUID();
}

export function accessLog(log: Logger): RequestHandler {
  return (req, res, next) => {
    const started = process.hrtime.bigint();
    const requestId = requestIdOf(req.headers['x-request-id']);
    res.setHeader('X-Request-Id', requestId);
    let bytes = 0;
    // Counted as written, so streamed (chunked) answers have a size too.
    const write = res.write.bind(res) as (...args: unknown[]) => boolean;
    const end = res.end.bind(res) as (...args: unknown[]) => typeof res;
    const count = (chunk: unknown) => {
      if (typeof chunk === 'string') bytes += Buffer.byteLength(chunk);
      else if (chunk instanceof Uint8Array) bytes += chunk.byteLength;
    };
    res.write = ((chunk: unknown, ...rest: unknown[]) => (count(chunk), write(chunk, ...rest))) as typeof res.write;
    res.end = ((chunk?: unknown, ...rest: unknown[]) => (typeof chunk !== 'function' && count(chunk), end(chunk, ...rest))) as typeof res.end;
    res.once('close', () => {
      const model = (req.body as { model?: unknown } | undefined)?.model;
      const path = req.originalUrl.split('?')[0].slice(0, 512);
      (PROBE_PATHS.has(path) ? log.debug : log.info)('request', {
        method: req.method,
        path,
        status: res.statusCode,
        durationMs: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
        bytes,
        model: typeof model === 'string' ? model.slice(0, 256) : undefined,
        requestId,
        ...(res.writableFinished ? {} : { aborted: true }),
      });
    });
    next();
  };
}
