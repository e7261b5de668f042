// The gateway's HTTP application: /v1/models lists every model it serves; /v1/completions and
// /v1/chat/completions go to the model named in the body's `model` (an unknown one gets OpenAI's 404
// naming what exists), to the replica its prompt prefix picks; a model without a ready replica holds
// the request until one is ready or the hold deadline passes (503 with Retry-After). A replica that
// answers 503 (draining, loading) or refuses the connection gets the request again elsewhere, once,
// as long as nothing has reached the client. Errors keep the servers' OpenAI shape and routes.
import express, { Router, type Express, type Request, type RequestHandler, type Response } from 'express';

import type { Logger } from '../common/log.js';
import { accessLog } from '../runtime/server/access-log.js';
import { ApiError, badRequest, errorHandler, notFound, refuseOptions, sendError } from '../runtime/server/errors.js';
import { jsonBody } from '../runtime/server/json-body.js';
import type { GatewayConfig } from './config.js';
import type { Holds } from './hold.js';
import type { GatewayMetrics } from './metrics.js';
import { prefixChain } from './affinity.js';
import { prefixKey } from './prefix.js';
import { attempt, forwardedHeaders, pipeAnswer, sendBuffered } from './proxy.js';
import type { Routing } from './routing.js';
import type { ModelEntry } from './table.js';

export interface GatewayState {
  routing: Routing;
  holds: Holds;
  metrics: GatewayMetrics;
  /** The NPUModel and EndpointSlice caches have synced. */
  ready: () => boolean;
}

type GatewayOptions = Pick<GatewayConfig, 'prefixChars' | 'holdTimeoutSeconds' | 'retryAfterSeconds' | 'bodyLimitBytes'>;

export function createGatewayApp(state: GatewayState, cfg: GatewayOptions, log: Logger): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(accessLog(log));
  app.use(refuseOptions);
  app.get('/healthz', (_req, res) => void res.json({ status: 'ok' }));
  app.get('/readyz', (_req, res) => {
    if (state.ready()) return void res.json({ status: 'ready' });
    sendError(res, new ApiError(503, 'The gateway has not read the NPUModels and their endpoints yet.', 'service_unavailable', null, 'not_ready', { 'Retry-After': '1' }));
  });
  app.get('/metrics', async (_req, res) => {
    res.set('Content-Type', state.metrics.registry.contentType).send(await state.metrics.registry.metrics());
  });
  app.use('/v1', modelsRouter(state, cfg, log));
  app.use(notFound);
  app.use(errorHandler(log));
  return app;
}

function modelObject(e: ModelEntry) {
  // A static backend has no namespace: owned as `npuserve serve` says of itself.
  return { id: e.id, object: 'model', created: e.createdSeconds, owned_by: e.namespace || 'npuserve' };
}

function unknownModel(state: GatewayState, model: string): ApiError {
  const ambiguous = state.routing.table.candidates(model);
  const known = state.routing.table.entries.map((e) => `'${e.id}'`).join(', ') || 'none';
  const message = ambiguous.length > 1
    ? `The model '${model}' is in several namespaces; name one of ${ambiguous.map((k) => `'${k}'`).join(', ')}.`
    : `The model '${model}' does not exist; this gateway serves ${known}.`;
  return new ApiError(404, message, 'invalid_request_error', 'model', 'model_not_found');
}

function modelsRouter(state: GatewayState, cfg: GatewayOptions, log: Logger): Router {
  const router = Router();
  router.get('/models', (_req, res) => {
    res.json({ object: 'list', data: state.routing.table.entries.map(modelObject) });
  });
  router.get('/models/*id', (req, res) => {
    const id = (req.params as { id: string[] }).id.join('/');
    const e = state.routing.table.resolve(id);
    if (!e) throw unknownModel(state, id);
    res.json(modelObject(e));
  });
  // The body's bytes are kept to forward unchanged; the parsed body picks the model and the prefix.
  const [raw, parse] = jsonBody(cfg.bodyLimitBytes);
  const keepBytes: RequestHandler = (req, _res, next) => {
    if (Buffer.isBuffer(req.body)) (req as Request & { rawBody?: Buffer }).rawBody = req.body;
    next();
  };
  const forward: RequestHandler = (req, res) => forwardRequest(state, cfg, log, req, res);
  router.post(['/completions', '/chat/completions'], raw!, keepBytes, parse!, forward);
  return router;
}

async function forwardRequest(state: GatewayState, cfg: GatewayOptions, log: Logger, req: Request, res: Response): Promise<void> {
  const rawBody = (req as Request & { rawBody?: Buffer }).rawBody;
  const body = req.body as { model?: unknown } | undefined;
  if (!rawBody || !body || typeof body !== 'object' || Array.isArray(body)) throw badRequest("The request body must be a JSON object (Content-Type: application/json).", null);
  if (typeof body.model !== 'string') throw badRequest("'model' is required and must be a string.", 'model');
  const entry = state.routing.table.resolve(body.model);
  if (!entry) {
    state.metrics.requests.inc({ model: '', code: '404' });
    throw unknownModel(state, body.model);
  }
  // The pods serve the model under its bare name: a qualified `namespace/name` is rewritten.
  const bytes = body.model === entry.name ? rawBody : Buffer.from(JSON.stringify({ ...body, model: entry.name }));
  const key = prefixKey(body, cfg.prefixChars);
  const chain = prefixChain(entry.key, body);
  // The replica logs the request under the id the gateway's access log gave it.
  const headers = { ...forwardedHeaders(req.headers, req.socket.remoteAddress), 'x-request-id': String(res.getHeader('X-Request-Id')) };
  const client = new AbortController();
  res.once('close', () => client.abort());
  const deadlineMs = Date.now() + cfg.holdTimeoutSeconds * 1000;
  const tried = new Set<string>();
  const count = (code: number) => state.metrics.requests.inc({ model: entry.key, code: String(code) });

  for (let retried = false; ;) {
    const choice = state.routing.choose(entry.key, key, chain, tried);
    if (!choice) {
      const outcome = await hold(state, entry.key, deadlineMs - Date.now(), client.signal);
      if (outcome === 'aborted') return;
      if (outcome === 'timeout') {
        count(503);
        const why = entry.namespace ? `it is starting from zero replicas or cannot start; kubectl describe npum ${entry.name} -n ${entry.namespace}` : `its servers, ${state.routing.replicasOf(entry.key).join(', ')}, did not take it`;
        return sendError(res, new ApiError(503, `The model '${entry.id}' has no ready replica after ${cfg.holdTimeoutSeconds} s (${why}). Retry later.`, 'service_unavailable', 'model', 'no_ready_replica', { 'Retry-After': String(cfg.retryAfterSeconds) }));
      }
      continue;
    }
    state.metrics.routing.inc({ model: entry.key, decision: choice.decision });
    state.routing.started(choice.replica);
    try {
      const a = await attempt(choice.replica, req.originalUrl, req.method, headers, bytes, client.signal);
      if (a.kind === 'aborted') return;
      if (a.kind === 'answer') {
        if (client.signal.aborted) return void a.upstream.destroy();
        count(a.upstream.statusCode ?? 502);
        return await pipeAnswer(res, a.upstream);
      }
      if (!retried) {
        retried = true;
        tried.add(choice.replica);
        state.metrics.retries.inc({ model: entry.key, reason: a.reason });
        log.info('retrying on another replica', { model: entry.key, replica: choice.replica, reason: a.reason, error: a.error });
        continue;
      }
      if (a.status) {
        count(a.status);
        return sendBuffered(res, a.status, a.headers ?? {}, a.body ?? Buffer.alloc(0));
      }
      count(502);
      return sendError(res, new ApiError(502, `The model '${entry.id}' could not be reached: ${a.error}.`, 'server_error', null, 'upstream_unreachable'));
    } finally {
      state.routing.finished(choice.replica);
    }
  }
}

async function hold(state: GatewayState, model: string, timeoutMs: number, signal: AbortSignal) {
  const started = Date.now();
  const outcome = timeoutMs > 0 ? await state.holds.hold(model, timeoutMs, signal) : 'timeout';
  state.metrics.holdSeconds.observe({ model, outcome }, (Date.now() - started) / 1000);
  return outcome;
}
