// Every failure the API returns, as OpenAI's error object ({error: {message, type, param, code}})
// with its HTTP status, and the express handlers that turn anything thrown (our errors, the JSON
// body parser's, unexpected ones) into it. The server never answers with an HTML error page, nor
// with Node's own bodiless 400/408/431 for requests it cannot parse.
import type { Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';

import type { ErrorRequestHandler, RequestHandler } from 'express';

import type { Logger } from '../../common/log.js';

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
    readonly headers: Readonly<Record<string, string>> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): ErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400: a request field is missing, has the wrong type or an unsupported value. */
export function badRequest(message: string, param: string | null, code: string | null = null): ApiError {
  return new ApiError(400, message, 'invalid_request_error', param, code);
}

export function modelNotFound(model: string, served: string): ApiError {
  return new ApiError(404, `The model '${model}' does not exist; this server serves '${served}'.`, 'invalid_request_error', 'model', 'model_not_found');
}

export function contextLengthExceeded(promptTokens: number, maxTokens: number, maxSeqLen: number, param: string): ApiError {
  return badRequest(
    `This model's maximum context length is ${maxSeqLen} tokens. However, you requested ${promptTokens + maxTokens} tokens (${promptTokens} in the prompt, ${maxTokens} for the completion). Please reduce the prompt or ${param}.`,
    param,
    'context_length_exceeded',
  );
}

/** Refused before tokenizing: no token covers more than `maxTokenBytes`, so the text needs too many. */
export function promptTooLong(minPromptBytes: number, maxTokenBytes: number, maxSeqLen: number, param: string): ApiError {
  const atLeast = Math.ceil(minPromptBytes / maxTokenBytes);
  return badRequest(
    `This model's maximum context length is ${maxSeqLen} tokens. However, your prompt is at least ${minPromptBytes} bytes and no token of this model covers more than ${maxTokenBytes} bytes, so it is at least ${atLeast} tokens. Please reduce the prompt.`,
    param,
    'context_length_exceeded',
  );
}

export function queueFull(message: string, retryAfterSeconds: number): ApiError {
  return new ApiError(429, message, 'rate_limit_error', null, 'queue_full', { 'Retry-After': String(retryAfterSeconds) });
}

// While draining, the connection closes after the 503 so a client's retry opens a new one, which
// reaches another replica (a kept-alive connection would stay pinned to this pod).
export function unavailable(reason: 'not_ready' | 'draining'): ApiError {
  const message = reason === 'draining' ? 'The server is shutting down and accepts no new requests.' : 'The model is still loading; retry shortly.';
  return new ApiError(503, message, 'service_unavailable', null, reason, reason === 'draining' ? { 'Retry-After': '5', Connection: 'close' } : { 'Retry-After': '1' });
}

export function sendError(res: Parameters<RequestHandler>[1], err: ApiError): void {
  res.status(err.status).set(err.headers).json(err.body());
}

/** The routes the server has and their methods: a known path with another method is a 405, not a 404. */
const ROUTES: ReadonlyArray<[path: RegExp, methods: string]> = [
  [/^\/(healthz|readyz|metrics)$/, 'GET, HEAD'],
  [/^\/v1\/models(\/[^/]+)?$/, 'GET, HEAD'],
  [/^\/v1\/(chat\/)?completions$/, 'POST'],
];

export const notFound: RequestHandler = (req, res) => {
  const allow = ROUTES.find(([path]) => path.test(req.path))?.[1];
  if (allow) {
    const err = new ApiError(405, `${req.method} is not allowed on ${req.path}; it answers ${allow}.`, 'invalid_request_error', null, 'method_not_allowed', { Allow: allow });
    return sendError(res, err);
  }
  sendError(res, new ApiError(404, `No route ${req.method} ${req.path}.`, 'invalid_request_error', null, 'not_found'));
};

/** This server answers no cross-origin preflight: OPTIONS is a 405 (with Allow) or a 404 like any other method. */
export const refuseOptions: RequestHandler = (req, res, next) => {
  if (req.method === 'OPTIONS') return notFound(req, res, next);
  next();
};

/**
 * Requests Node's HTTP parser refuses before express sees them (a header section too large, a bad
 * request line, a request or header timeout) get OpenAI's error object too, then the connection closes.
 */
export function answerClientErrors(server: Server): Server {
  server.on('clientError', (err: Error & { code?: string }, socket: Duplex) => {
    // A response already under way on this connection (pipelining) cannot be followed by another.
    const answering = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } })._httpMessage?.headersSent === true;
    if (err.code === 'ECONNRESET' || !socket.writable || answering) return void socket.destroy();
    const [status, message, code] =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'The request headers are larger than this server accepts.', 'request_header_fields_too_large']
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? [408, 'The request did not arrive in time.', 'request_timeout']
          : [400, `The request is not valid HTTP (${err.code ?? err.message}).`, 'bad_request'];
    const body = JSON.stringify(new ApiError(status, message, 'invalid_request_error', null, code).body());
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  return server;
}

/** Errors express's JSON parser raises carry a `type` and a `status`. */
interface BodyParserError extends Error {
  type?: string;
  status?: number;
  limit?: number;
}

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err: unknown, _req, res, next) => {
    if (res.headersSent) return next(err);
    sendError(res, toApiError(err, log));
  };
}

function toApiError(err: unknown, log: Logger): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as BodyParserError;
  if (e.type === 'entity.parse.failed') return badRequest(`The request body is not valid JSON: ${e.message}.`, null, 'invalid_json');
  if (e.type === 'entity.too.large') return new ApiError(413, `The request body is larger than the limit of ${e.limit} bytes.`, 'invalid_request_error', null, 'request_too_large');
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new ApiError(e.status, e.message, 'invalid_request_error');
  log.error('internal error', { error: e instanceof Error ? (e.stack ?? e.message) : String(err) });
  return new ApiError(500, 'The server failed to handle the request.', 'server_error');
}
