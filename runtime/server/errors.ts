// Every failure the API returns, as OpenAI's error object ({error: {message, type, param, code}})
// with its HTTP status, and the express handlers that turn anything thrown (our errors, the JSON
// body parser's, unexpected ones) into it. The server never answers with an HTML error page.
import type { ErrorRequestHandler, RequestHandler } from 'express';

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

export const notFound: RequestHandler = (req, res) => {
  sendError(res, new ApiError(404, `No route ${req.method} ${req.path}.`, 'invalid_request_error', null, 'not_found'));
};

/** Errors express's JSON parser raises carry a `type` and a `status`. */
interface BodyParserError extends Error {
  type?: string;
  status?: number;
  limit?: number;
}

export function errorHandler(log: (line: string) => void): ErrorRequestHandler {
  return (err: unknown, _req, res, next) => {
    if (res.headersSent) return next(err);
    sendError(res, toApiError(err, log));
  };
}

function toApiError(err: unknown, log: (line: string) => void): ApiError {
  if (err instanceof ApiError) return err;
  const e = err as BodyParserError;
  if (e.type === 'entity.parse.failed') return badRequest(`The request body is not valid JSON: ${e.message}.`, null, 'invalid_json');
  if (e.type === 'entity.too.large') return new ApiError(413, `The request body is larger than the limit of ${e.limit} bytes.`, 'invalid_request_error', null, 'request_too_large');
  if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) return new ApiError(e.status, e.message, 'invalid_request_error');
  log(`internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(err)}`);
  return new ApiError(500, 'The server failed to handle the request.', 'server_error');
}
