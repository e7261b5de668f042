// The OpenAI-compatible routes: /v1/models, /v1/completions and /v1/chat/completions, answered in
// one piece or streamed as server-sent events in OpenAI's chunk shapes. Requests are validated here,
// chat templates rendered and prompts tokenized off the event loop (a prompt too long to fit is
// refused before any tokenizing), and handed to the scheduler; a client that goes away aborts its
// request, and requests still open at the drain deadline get an error before their connection closes.
import { randomInt, randomUUID } from 'node:crypto';

import { type Response, Router } from 'express';

import { ChatTemplateError, type ChatMessage } from '../chat.js';
import { RenderedTooLongError, TemplateLimitError, type SandboxedChatTemplate } from '../chat-sandbox.js';
import { QueueFullError, type GenerationResult, type Scheduler } from '../scheduler.js';
import type { Tokenizer } from '../tokenizer.js';
import type { PromptEncoder } from '../tokenizer/encoder.js';
import { ApiError, badRequest, contextLengthExceeded, modelNotFound, promptTooLong, queueFull, unavailable } from './errors.js';
import { jsonBody } from './json-body.js';
import { parseChatRequest, parseCompletionRequest, type SamplingRequest } from './requests.js';
import { StopTextAssembler } from './text.js';

/** What the routes need of the loaded model. */
export interface ServingModel {
  scheduler: Scheduler;
  tokenizer: Tokenizer;
  /** Encodes prompts on a worker thread. */
  encoder: PromptEncoder;
  /** Renders chat messages off the event loop, under a deadline and a heap limit. */
  chatTemplate: SandboxedChatTemplate;
  maxSeqLen: number;
  vocabSize: number;
}

export interface ServingState {
  servedModelName: string;
  /** Seconds since the epoch when the server started (the model's `created`). */
  createdSeconds: number;
  phase: 'loading' | 'ready' | 'draining';
  model?: ServingModel;
  /** How to end each request still being answered (resolves once the answer is written), for the drain deadline. */
  inFlight: Set<(err: ApiError) => Promise<void>>;
}

/** At the drain deadline: every open request gets the error (a streamed one as its last event), written before this resolves. */
export async function failInFlight(state: ServingState, err: ApiError): Promise<void> {
  await Promise.all([...state.inFlight].map((end) => end(err)));
}

/** OpenAI's default for the legacy completions route; chat defaults to the rest of the context. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export function openaiRouter(state: ServingState, bodyLimitBytes: number): Router {
  const router = Router();
  router.get('/models', (_req, res) => {
    res.json({
      object: 'list',
      data: [{ id: state.servedModelName, object: 'model', created: state.createdSeconds, owned_by: 'npuserve', max_model_len: state.model?.maxSeqLen ?? null }],
    });
  });
  router.get('/models/:id', (req, res) => {
    if (req.params.id !== state.servedModelName) throw modelNotFound(req.params.id, state.servedModelName);
    res.json({ id: state.servedModelName, object: 'model', created: state.createdSeconds, owned_by: 'npuserve' });
  });
  router.use(jsonBody(bodyLimitBytes));
  router.post('/completions', async (req, res) => {
    const m = servingModel(state);
    const params = parseCompletionRequest(req.body, m.vocabSize);
    checkModel(params.model, state.servedModelName);
    const prompt = typeof params.prompt === 'string' ? await encodePrompt(m, params.prompt, 'prompt') : params.prompt;
    if (clientGone(res)) return;
    const maxTokens = resolveMaxTokens(prompt.length, params, m.maxSeqLen, COMPLETIONS_DEFAULT_MAX_TOKENS);
    run(res, state, m, state.servedModelName, params, prompt, maxTokens, completionShape());
  });
  router.post('/chat/completions', async (req, res) => {
    const m = servingModel(state);
    const params = parseChatRequest(req.body);
    checkModel(params.model, state.servedModelName);
    const text = await renderChat(m, params.messages);
    if (clientGone(res)) return;
    const prompt = await encodePrompt(m, text, 'messages');
    if (clientGone(res)) return;
    const maxTokens = resolveMaxTokens(prompt.length, params, m.maxSeqLen);
    run(res, state, m, state.servedModelName, params, prompt, maxTokens, chatShape());
  });
  return router;
}

/** The chat prompt's text; the template's failures become 400 (its refusal) or 500 (its limits). */
async function renderChat(m: ServingModel, messages: ChatMessage[]): Promise<string> {
  const maxLength = (m.maxSeqLen - 1) * m.tokenizer.maxTokenBytes;
  // Templates write every message's text (and more) into the prompt: messages too long to fit are
  // refused before they cross to the renderer, as a text prompt is before tokenizing.
  const textLength = messages.reduce((n, msg) => n + msg.content.length, 0);
  if (textLength > maxLength) throw promptTooLong(textLength, m.tokenizer.maxTokenBytes, m.maxSeqLen, 'messages');
  try {
    return await m.chatTemplate.render(messages, maxLength);
  } catch (e) {
    if (e instanceof ChatTemplateError) throw badRequest(e.message, 'messages');
    // Each UTF-16 unit is at least one UTF-8 byte: the length is a lower bound of the bytes.
    if (e instanceof RenderedTooLongError) throw promptTooLong(e.length, m.tokenizer.maxTokenBytes, m.maxSeqLen, 'messages');
    if (e instanceof TemplateLimitError) throw new ApiError(500, e.message, 'server_error', 'messages', e.limit === 'timeout' ? 'chat_template_timeout' : 'chat_template_out_of_memory');
    throw e;
  }
}

/**
 * The prompt's tokens, encoded on the worker. A prompt longer than max-seq-len tokens of the longest
 * token the vocabulary has cannot fit whatever its tokens: it is refused at once, without tokenizing.
 */
async function encodePrompt(m: ServingModel, text: string, param: string): Promise<number[]> {
  const fits = (bytes: number) => Math.ceil(bytes / m.tokenizer.maxTokenBytes) + 1 <= m.maxSeqLen;
  // A string has at least as many UTF-8 bytes as UTF-16 units: the length refuses a huge prompt
  // without reading it; the exact byte count then refuses the rest.
  if (!fits(text.length)) throw promptTooLong(text.length, m.tokenizer.maxTokenBytes, m.maxSeqLen, param);
  const bytes = Buffer.byteLength(text, 'utf8');
  if (!fits(bytes)) throw promptTooLong(bytes, m.tokenizer.maxTokenBytes, m.maxSeqLen, param);
  const ids = await m.encoder.encode(text);
  if (ids.length === 0) throw badRequest(`'${param}' is empty and this model adds no BOS token, so there is nothing to continue from.`, param);
  return ids;
}

/** The client disconnected while its prompt was tokenized: nothing to answer. */
function clientGone(res: Response): boolean {
  return res.socket === null || res.socket.destroyed;
}

function servingModel(state: ServingState): ServingModel {
  if (state.phase === 'draining') throw unavailable('draining');
  if (state.phase === 'loading' || !state.model) throw unavailable('not_ready');
  return state.model;
}

function checkModel(requested: string, served: string): void {
  if (requested !== served) throw modelNotFound(requested, served);
}

/** The output limit: as asked (prompt + output must fit max-seq-len), else the default or the room left. */
function resolveMaxTokens(promptTokens: number, params: SamplingRequest, maxSeqLen: number, fallback?: number): number {
  if (params.maxTokens !== undefined) {
    if (promptTokens + params.maxTokens > maxSeqLen) throw contextLengthExceeded(promptTokens, params.maxTokens, maxSeqLen, params.maxTokensParam);
    return params.maxTokens;
  }
  const room = maxSeqLen - promptTokens;
  if (room < 1) throw contextLengthExceeded(promptTokens, 1, maxSeqLen, params.maxTokensParam);
  return fallback === undefined ? room : Math.min(fallback, room);
}

type ApiFinishReason = 'stop' | 'length';

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** How one route's responses look: a streamed chunk, and the whole response. */
interface ResponseShape {
  idPrefix: string;
  chunkObject: string;
  /** The chunk sent before any text (chat announces the assistant role), if any. */
  opening?: Record<string, unknown>;
  chunkChoice(text: string, finishReason: ApiFinishReason | null): Record<string, unknown>;
  object: string;
  choice(text: string, finishReason: ApiFinishReason): Record<string, unknown>;
}

function completionShape(): ResponseShape {
  return {
    idPrefix: 'cmpl-',
    chunkObject: 'text_completion',
    chunkChoice: (text, finishReason) => ({ index: 0, text, logprobs: null, finish_reason: finishReason }),
    object: 'text_completion',
    choice: (text, finishReason) => ({ index: 0, text, logprobs: null, finish_reason: finishReason }),
  };
}

function chatShape(): ResponseShape {
  return {
    idPrefix: 'chatcmpl-',
    chunkObject: 'chat.completion.chunk',
    opening: { index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null },
    chunkChoice: (text, finishReason) => ({ index: 0, delta: finishReason === null ? { content: text } : {}, logprobs: null, finish_reason: finishReason }),
    object: 'chat.completion',
    choice: (text, finishReason) => ({ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finishReason }),
  };
}

/** Submits the request and answers it, streamed or whole, as its tokens arrive. */
function run(res: Response, state: ServingState, m: ServingModel, model: string, params: SamplingRequest, prompt: number[], maxTokens: number, shape: ResponseShape): void {
  const id = `${shape.idPrefix}${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const text = new StopTextAssembler(m.tokenizer, params.stop);
  const output = params.stream ? new EventStream(res, { id, object: shape.chunkObject, created, model }, params.includeUsage) : undefined;
  let whole = '';
  const aborter = new AbortController();
  const usageOf = (r: GenerationResult): Usage => ({ prompt_tokens: r.promptTokens, completion_tokens: r.completionTokens, total_tokens: r.promptTokens + r.completionTokens });

  const onToken = (token: number): boolean => {
    const step = text.push(token);
    if (step.delta !== '') {
      if (output) output.send(shape.chunkChoice(step.delta, null));
      else whole += step.delta;
    }
    return step.stopped;
  };
  const onFinish = (r: GenerationResult): void => {
    if (r.reason === 'abort') return void res.end();
    if (r.reason === 'error') {
      const err = new ApiError(500, `The engine failed on this request: ${r.error?.message ?? 'unknown error'}.`, 'server_error');
      if (output) return output.fail(err);
      return void res.status(500).json(err.body());
    }
    const tail = r.reason === 'stop' ? { delta: '', stopped: true } : text.finish();
    const finishReason: ApiFinishReason = tail.stopped ? 'stop' : r.reason;
    if (output) {
      if (tail.delta !== '') output.send(shape.chunkChoice(tail.delta, null));
      output.send(shape.chunkChoice('', finishReason));
      output.end(usageOf(r));
      return;
    }
    res.json({ id, object: shape.object, created, model, choices: [shape.choice(whole + tail.delta, finishReason)], usage: usageOf(r) });
  };

  try {
    m.scheduler.submit({ prompt, maxTokens, temperature: params.temperature, topP: params.topP, seed: params.seed ?? randomInt(2 ** 47), signal: aborter.signal, onToken, onFinish });
  } catch (e) {
    if (e instanceof QueueFullError) throw queueFull(e.message, e.retryAfterSeconds);
    throw e;
  }
  // Tokens arrive only after an engine step, so the stream opens before the first one; a refused
  // request (429 above) still gets its JSON error.
  output?.open(shape.opening);
  const end = (err: ApiError): Promise<void> => {
    const written = new Promise<void>((resolve) => {
      if (res.writableFinished || res.destroyed) return resolve();
      res.once('finish', resolve).once('close', resolve);
    });
    if (output) output.fail(err);
    else if (!res.headersSent) res.status(err.status).set(err.headers).json(err.body());
    aborter.abort();
    return written;
  };
  state.inFlight.add(end);
  // The client went away before the answer was complete: free its batch slot.
  res.on('close', () => {
    state.inFlight.delete(end);
    if (!res.writableFinished) aborter.abort();
  });
}

/**
 * One response as server-sent events: `data: {chunk}` lines, an optional usage chunk, `data: [DONE]`.
 * Events are written at the end of the current tick: by then the scheduler has started the next
 * engine step, so socket writes overlap the engine's compute instead of delaying the next token.
 */
class EventStream {
  /** The chunk JSON around its choices, built once: `{"id":...,"choices":[` and `],"usage":null}`. */
  private readonly chunkStart: string;
  private readonly chunkEnd: string;
  private pending = '';
  private flushScheduled = false;

  constructor(
    private readonly res: Response,
    private readonly head: { id: string; object: string; created: number; model: string },
    private readonly includeUsage: boolean,
  ) {
    const json = JSON.stringify({ ...head, choices: [] });
    this.chunkStart = `data: ${json.slice(0, -3)}[`;
    this.chunkEnd = `]${includeUsage ? ',"usage":null' : ''}}\n\n`;
  }

  open(opening?: Record<string, unknown>): void {
    this.res.status(200).set({ 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    this.res.flushHeaders();
    if (opening) this.send(opening);
  }

  send(choice: Record<string, unknown>): void {
    this.enqueue(`${this.chunkStart}${JSON.stringify(choice)}${this.chunkEnd}`);
  }

  end(usage: Usage): void {
    if (this.includeUsage) this.enqueue(`data: ${JSON.stringify({ ...this.head, choices: [], usage })}\n\n`);
    this.res.end(`${this.take()}data: [DONE]\n\n`);
  }

  fail(err: ApiError): void {
    if (this.res.writableEnded) return;
    this.res.end(`${this.take()}data: ${JSON.stringify(err.body())}\n\ndata: [DONE]\n\n`);
  }

  private enqueue(event: string): void {
    this.pending += event;
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      if (this.pending !== '' && !this.res.writableEnded) this.res.write(this.take());
    });
  }

  private take(): string {
    const events = this.pending;
    this.pending = '';
    return events;
  }
}
