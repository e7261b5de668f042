// The bodies of the OpenAI generation routes, validated into typed values: every field the server
// reads is checked, and a bad one is refused with a 400 that names it. Fields of features the
// engine does not have (n > 1, logprobs, tools, penalties ...) are refused rather than ignored.
import type { ChatMessage, ChatRole } from '../chat.js';
import { badRequest } from './errors.js';

export interface SamplingRequest {
  model: string;
  /** As the client gave it; the route fills in its default. */
  maxTokens?: number;
  /** Which field the limit came from, for error messages. */
  maxTokensParam: 'max_tokens' | 'max_completion_tokens';
  temperature: number;
  topP: number;
  seed?: number;
  stop: string[];
  stream: boolean;
  includeUsage: boolean;
}

export interface CompletionRequest extends SamplingRequest {
  /** Text, or token ids. */
  prompt: string | number[];
}

export interface ChatRequest extends SamplingRequest {
  messages: ChatMessage[];
}

type Body = Record<string, unknown>;

const MAX_STOP_STRINGS = 16;

function asBody(body: unknown): Body {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw badRequest('The request body must be a JSON object (send Content-Type: application/json).', null);
  }
  return body as Body;
}

/** The field's value, with null meaning absent as OpenAI's clients send it. */
function field(body: Body, name: string): unknown {
  return body[name] ?? undefined;
}

function numberField(body: Body, name: string, min: number, max: number, minExclusive = false): number | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw badRequest(`'${name}' must be a number, got ${JSON.stringify(v)}.`, name);
  if (v > max || (minExclusive ? v <= min : v < min)) {
    throw badRequest(`'${name}' must be ${minExclusive ? 'greater than' : 'at least'} ${min} and at most ${max}, got ${v}.`, name);
  }
  return v;
}

function integerField(body: Body, name: string, min: number): number | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw badRequest(`'${name}' must be an integer, got ${JSON.stringify(v)}.`, name);
  if (v < min) throw badRequest(`'${name}' must be at least ${min}, got ${v}.`, name);
  return v;
}

function booleanField(body: Body, name: string): boolean | undefined {
  const v = field(body, name);
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw badRequest(`'${name}' must be true or false, got ${JSON.stringify(v)}.`, name);
  return v;
}

function stopField(body: Body): string[] {
  const v = field(body, 'stop');
  if (v === undefined) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw badRequest("'stop' must be a non-empty string or an array of non-empty strings.", 'stop');
  }
  if (list.length > MAX_STOP_STRINGS) throw badRequest(`'stop' may hold at most ${MAX_STOP_STRINGS} strings, got ${list.length}.`, 'stop');
  return list;
}

/** Fields the client may send only with their neutral value. */
const UNSUPPORTED: Array<[name: string, neutral: (v: unknown) => boolean, what: string]> = [
  ['n', (v) => v === 1, 'one choice per request (n = 1)'],
  ['best_of', (v) => v === 1, 'best_of = 1'],
  ['echo', (v) => v === false, 'echo = false'],
  ['logprobs', (v) => v === false, 'no logprobs'],
  ['top_logprobs', (v) => v === 0, 'no logprobs'],
  ['suffix', (v) => v === '', 'no suffix'],
  ['presence_penalty', (v) => v === 0, 'no presence penalty'],
  ['frequency_penalty', (v) => v === 0, 'no frequency penalty'],
  ['logit_bias', (v) => typeof v === 'object' && v !== null && Object.keys(v).length === 0, 'no logit bias'],
  ['tools', (v) => Array.isArray(v) && v.length === 0, 'no tools'],
  ['functions', (v) => Array.isArray(v) && v.length === 0, 'no functions'],
  ['response_format', (v) => typeof v === 'object' && v !== null && (v as Body).type === 'text', "response_format of type 'text'"],
];

function refuseUnsupported(body: Body): void {
  for (const [name, neutral, what] of UNSUPPORTED) {
    const v = field(body, name);
    if (v !== undefined && !neutral(v)) throw badRequest(`'${name}' = ${JSON.stringify(v)} is not supported: this server supports ${what}.`, name, 'unsupported_parameter');
  }
}

function samplingFields(body: Body, maxTokensParam: SamplingRequest['maxTokensParam']): SamplingRequest {
  const model = field(body, 'model');
  if (typeof model !== 'string' || model === '') throw badRequest("'model' is required and must be a string.", 'model');
  refuseUnsupported(body);
  const stream = booleanField(body, 'stream') ?? false;
  const options = field(body, 'stream_options');
  if (options !== undefined && !stream) throw badRequest("'stream_options' is only allowed when 'stream' is true.", 'stream_options');
  if (options !== undefined && (typeof options !== 'object' || Array.isArray(options))) throw badRequest("'stream_options' must be an object.", 'stream_options');
  const includeUsage = options === undefined ? false : (booleanField(options as Body, 'include_usage') ?? false);
  return {
    model,
    maxTokens: integerField(body, maxTokensParam, 1),
    maxTokensParam,
    temperature: numberField(body, 'temperature', 0, 2) ?? 1,
    topP: numberField(body, 'top_p', 0, 1, true) ?? 1,
    seed: integerField(body, 'seed', Number.MIN_SAFE_INTEGER),
    stop: stopField(body),
    stream,
    includeUsage,
  };
}

export function parseCompletionRequest(raw: unknown, vocabSize: number): CompletionRequest {
  const body = asBody(raw);
  const sampling = samplingFields(body, 'max_tokens');
  return { ...sampling, prompt: promptField(body, vocabSize) };
}

/** A string, or token ids; a list of one prompt is accepted (several would need n > 1 choices). */
function promptField(body: Body, vocabSize: number): string | number[] {
  let v = field(body, 'prompt');
  if (v === undefined) throw badRequest("'prompt' is required.", 'prompt');
  if (Array.isArray(v) && v.length === 1 && (typeof v[0] === 'string' || Array.isArray(v[0]))) v = v[0];
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && v.length > 0 && v.every((t) => Number.isInteger(t))) {
    const bad = (v as number[]).find((t) => t < 0 || t >= vocabSize);
    if (bad !== undefined) throw badRequest(`'prompt' token ${bad} is outside the vocabulary [0, ${vocabSize}).`, 'prompt');
    return v as number[];
  }
  if (Array.isArray(v) && v.length > 1) throw badRequest("'prompt' holds several prompts; send one prompt per request.", 'prompt');
  throw badRequest("'prompt' must be a string or a non-empty array of token ids.", 'prompt');
}

export function parseChatRequest(raw: unknown): ChatRequest {
  const body = asBody(raw);
  const param = field(body, 'max_completion_tokens') !== undefined ? 'max_completion_tokens' : 'max_tokens';
  const sampling = samplingFields(body, param);
  // max_completion_tokens wins over the deprecated max_tokens, but a bad max_tokens is still refused.
  if (param === 'max_completion_tokens') integerField(body, 'max_tokens', 1);
  const messages = field(body, 'messages');
  if (!Array.isArray(messages) || messages.length === 0) throw badRequest("'messages' must be a non-empty array.", 'messages');
  return { ...sampling, messages: messages.map((m, i) => chatMessage(m, i)) };
}

const ROLES: Record<string, ChatRole> = { system: 'system', developer: 'system', user: 'user', assistant: 'assistant' };

function chatMessage(m: unknown, i: number): ChatMessage {
  const param = `messages[${i}]`;
  if (typeof m !== 'object' || m === null || Array.isArray(m)) throw badRequest(`'${param}' must be an object with 'role' and 'content'.`, param);
  const { role, content } = m as Body;
  // Own keys only: `role in ROLES` would take 'constructor' or '__proto__' from Object's prototype.
  if (typeof role !== 'string' || !Object.hasOwn(ROLES, role)) {
    throw badRequest(`'${param}.role' must be one of system, developer, user or assistant, got ${JSON.stringify(role)}.`, `${param}.role`);
  }
  return { role: ROLES[role], content: messageText(content, `${param}.content`) };
}

/** A string, or an array of text parts ({type: 'text', text}). */
function messageText(content: unknown, param: string): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part, j) => {
        const p = part as Body;
        if (typeof p !== 'object' || p === null || p.type !== 'text' || typeof p.text !== 'string') {
          throw badRequest(`'${param}[${j}]' must be a text part ({"type": "text", "text": "..."}); other content types are not supported.`, `${param}[${j}]`);
        }
        return p.text;
      })
      .join('');
  }
  throw badRequest(`'${param}' must be a string or an array of text parts.`, param);
}
