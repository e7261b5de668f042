// The HTTP application: health, readiness and metrics routes beside the OpenAI routes, the API key
// check in front of them when one is set, and the error handlers that answer everything else with
// OpenAI's error object.
import express, { type Express, type RequestHandler, Router } from 'express';

import type { Logger } from '../../common/log.js';
import type { ServerMetrics } from '../metrics.js';
import { accessLog } from './access-log.js';
import { requireApiKey } from './auth.js';
import { errorHandler, notFound, refuseOptions, sendError, unavailable } from './errors.js';
import { openaiRouter, type ServingState } from './openai.js';

export interface AppOptions {
  state: ServingState;
  metrics: ServerMetrics;
  bodyLimitBytes: number;
  /** When set, every route but /healthz and /readyz (and /metrics unless protectMetrics) needs `Authorization: Bearer apiKey`. */
  apiKey?: string;
  protectMetrics?: boolean;
  log: Logger;
}

export function createApp(o: AppOptions): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(accessLog(o.log));
  app.use(refuseOptions);
  if (o.apiKey) app.use(requireApiKey({ apiKey: o.apiKey, protectMetrics: o.protectMetrics ?? false }));
  app.use(healthRouter(o));
  app.use('/v1', countErrors(o.metrics), openaiRouter(o.state, o.bodyLimitBytes));
  app.use(notFound);
  app.use(errorHandler(o.log));
  return app;
}

/** Counts API answers with an HTTP error status (429s above all) once each response is sent. */
function countErrors(metrics: ServerMetrics): RequestHandler {
  return (_req, res, next) => {
    res.once('finish', () => {
      if (res.statusCode >= 400) metrics.errorResponse(res.statusCode);
    });
    next();
  };
}

/** Liveness answers while the process runs; readiness only once the model is loaded and warmed. */
function healthRouter({ state, metrics }: AppOptions): Router {
  const router = Router();
  router.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  router.get('/readyz', (_req, res) => {
    if (state.phase === 'ready') return void res.json({ status: 'ready' });
    sendError(res, unavailable(state.phase === 'draining' ? 'draining' : 'not_ready'));
  });
  router.get('/metrics', async (_req, res) => {
    res.set('Content-Type', metrics.contentType).send(await metrics.text());
  });
  return router;
}
