// Request bodies as JSON without holding the event loop: express reads (and inflates) the bytes up to
// the body limit; a small body, or a large one that is mostly a long string, is parsed here, one of
// many objects and arrays on a worker thread; either is refused when nested too deep or made of too
// many objects and arrays. JSON.parse of an 8 MiB body of tiny objects takes over 100 ms, and
// cloning such a value across threads as long again, so the worker sends back only values within
// those bounds.
import { Worker } from 'node:worker_threads';

import express, { type RequestHandler } from 'express';

import { badRequest } from './errors.js';

/** Deeper than any OpenAI request (content parts sit at depth 4). */
export const MAX_JSON_DEPTH = 32;
/** Objects and arrays in one body: room for 4096 messages with content parts; more costs the event loop tens of ms to clone and check. */
export const MAX_JSON_CONTAINERS = 16_384;
/** Bodies up to this size are parsed on the event loop (well under a millisecond). */
const INLINE_PARSE_BYTES = 64 * 1024;
/** Larger bodies with at most this many '{' and '[' bytes are too: a long string parses at memory speed. */
const INLINE_PARSE_BRACKETS = 4096;

/** Whether the body has at most `limit` '{' and '[' bytes (counted natively, stopping at the limit). */
function fewBrackets(bytes: Buffer, limit: number): boolean {
  let count = 0;
  for (const byte of [0x7b, 0x5b]) {
    for (let at = bytes.indexOf(byte); at >= 0; at = bytes.indexOf(byte, at + 1)) if (++count > limit) return false;
  }
  return true;
}

/** Why the value is refused, or null: an iterative walk, so depth costs no stack. */
export function jsonShapeProblem(value: unknown): string | null {
  const stack: Array<[unknown, number]> = [[value, 1]];
  let containers = 0;
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (++containers > MAX_JSON_CONTAINERS) return `The request body holds more than ${MAX_JSON_CONTAINERS} JSON objects and arrays; this server accepts at most that many.`;
    if (depth > MAX_JSON_DEPTH) return `The request body nests JSON objects and arrays deeper than ${MAX_JSON_DEPTH} levels; this server accepts at most that depth.`;
    for (const child of Array.isArray(v) ? v : Object.values(v)) if (typeof child === 'object' && child !== null) stack.push([child, depth + 1]);
  }
  return null;
}

export type ParseReply = { id: number; value: unknown } | { id: number; error: string; invalidJson: boolean };

/** Parses `text`: the value, or the reason it is refused (not JSON, or too deep / too many containers). */
export function parseJson(text: string): { value: unknown } | { error: string; invalidJson: boolean } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return { error: `The request body is not valid JSON: ${(e as Error).message}.`, invalidJson: true };
  }
  const problem = jsonShapeProblem(value);
  return problem ? { error: problem, invalidJson: false } : { value };
}

function startWorker(): Worker {
  if (!import.meta.url.endsWith('.ts')) return new Worker(new URL('./json-worker.js', import.meta.url));
  // From source (tests), the TypeScript module through tsx's loader, registered inside the worker.
  const source = JSON.stringify(new URL('./json-worker.ts', import.meta.url).href);
  return new Worker(`import('tsx/esm/api').then((tsx) => { tsx.register(); return import(${source}); })`, { eval: true });
}

/** The worker that parses large bodies, started at the first one and restarted if it dies. */
class JsonWorker {
  private worker: Worker | null = null;

  /** Started ahead of the first large body, whose answer should not wait for a thread to boot. */
  constructor() {
    this.live();
  }

  private readonly pending = new Map<number, (reply: ParseReply) => void>();
  private nextId = 0;

  parse(bytes: Buffer): Promise<ParseReply> {
    const worker = this.live();
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      worker.postMessage({ id, bytes }, [bytes.buffer as ArrayBuffer]);
    });
  }

  private live(): Worker {
    if (this.worker) return this.worker;
    const worker = startWorker();
    worker.on('message', (reply: ParseReply) => {
      this.pending.get(reply.id)?.(reply);
      this.pending.delete(reply.id);
    });
    const lost = (why: string) => {
      if (this.worker === worker) this.worker = null;
      for (const [id, resolve] of this.pending) resolve({ id, error: `The request body could not be parsed: ${why}.`, invalidJson: false });
      this.pending.clear();
    };
    worker.on('error', (e) => lost(e.message));
    worker.on('exit', (code) => lost(`the JSON parser exited with code ${code}`));
    // After the listeners: adding a 'message' listener refs the worker's port again.
    worker.unref();
    this.worker = worker;
    return worker;
  }
}

/** `req.body` as parsed JSON for `Content-Type: application/json` requests, refused with a 400 naming the problem. */
export function jsonBody(limitBytes: number): RequestHandler[] {
  const worker = new JsonWorker();
  const parse: RequestHandler = (req, _res, next) => {
    if (!Buffer.isBuffer(req.body)) return next();
    const bytes = req.body;
    const inline = bytes.length <= INLINE_PARSE_BYTES || fewBrackets(bytes, INLINE_PARSE_BRACKETS);
    // The worker gets a copy it owns: the request's buffer may be a view into a shared pool.
    const reply = inline ? Promise.resolve({ id: -1, ...parseJson(bytes.toString('utf8')) }) : worker.parse(Buffer.from(bytes));
    reply.then((r) => {
      if ('error' in r) return next(badRequest(r.error, null, r.invalidJson ? 'invalid_json' : 'request_too_complex'));
      req.body = r.value;
      next();
    }, next);
  };
  return [express.raw({ type: 'application/json', limit: limitBytes }), parse];
}
