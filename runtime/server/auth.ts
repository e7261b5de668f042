// The API key (`--api-key` / NPUSERVE_API_KEY): as the OpenAI API and vLLM's --api-key, every request
// carries `Authorization: Bearer KEY`, else it gets a 401 OpenAI error. Liveness and readiness stay
// open for the kubelet's probes, and /metrics for the autoscaler's scrape unless protectMetrics.
import { createHash, timingSafeEqual } from 'node:crypto';

import type { RequestHandler } from 'express';

import { ApiError, sendError } from './errors.js';

export interface ApiKeyOptions {
  apiKey: string;
  protectMetrics: boolean;
}

// Comparing digests of equal length keeps the comparison's time independent of where the keys
// differ and of the key's length.
const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

export function requireApiKey({ apiKey, protectMetrics }: ApiKeyOptions): RequestHandler {
  const expected = digest(apiKey);
  const open = new Set(['/healthz', '/readyz', ...(protectMetrics ? [] : ['/metrics'])]);
  return (req, res, next) => {
    if (open.has(req.path)) return next();
    const header = req.get('authorization') ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (m && timingSafeEqual(digest(m[1]), expected)) return next();
    const message = header === '' ? "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'." : 'Incorrect API key provided.';
    sendError(res, new ApiError(401, message, 'invalid_request_error', null, 'invalid_api_key', { 'WWW-Authenticate': 'Bearer' }));
  };
}
