// Tokenizing off the event loop: a worker thread holds its own copy of the model's tokenizer and
// encodes prompts in order, so a long prompt costs the server's HTTP thread nothing (/healthz and
// streaming answers keep flowing while it is encoded).
import { Worker } from 'node:worker_threads';

import type { TokenizerSpec } from '../tokenizer.js';

export interface EncodeRequest {
  id: number;
  text: string;
  addSpecial: boolean;
}

export type EncodeReply = { id: number; ids: Int32Array } | { id: number; error: string };

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (e: Error) => void;
}

/** The worker's module: compiled JavaScript, or TypeScript through tsx when running from source (tests, tsx scripts). */
function workerUrl(): { url: URL; execArgv?: string[] } {
  const fromSource = import.meta.url.endsWith('.ts');
  return { url: new URL(fromSource ? './encode-worker.ts' : './encode-worker.js', import.meta.url), execArgv: fromSource ? ['--import', 'tsx'] : undefined };
}

export class PromptEncoder {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private failure: Error | null = null;
  /** Resolves once the worker has built its tokenizer. */
  readonly ready: Promise<void>;

  constructor(spec: TokenizerSpec) {
    const { url, execArgv } = workerUrl();
    this.worker = new Worker(url, { workerData: spec, execArgv });
    this.worker.unref();
    let started: () => void = () => {};
    let failedToStart: (e: Error) => void = () => {};
    this.ready = new Promise<void>((resolve, reject) => {
      started = resolve;
      failedToStart = reject;
    });
    this.worker.on('message', (reply: EncodeReply) => {
      if (reply.id === -1) return started();
      const p = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if ('error' in reply) p?.reject(new Error(`tokenizing the prompt failed: ${reply.error}`));
      else p?.resolve(Array.from(reply.ids));
    });
    const fail = (e: Error) => {
      this.failure = new Error(`the tokenizer worker stopped: ${e.message}`);
      failedToStart(this.failure);
      for (const p of this.pending.values()) p.reject(this.failure);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`exit code ${code}`)));
  }

  /** The text's ids; `addSpecial` adds BOS/EOS as the model asks. */
  encode(text: string, addSpecial = true): Promise<number[]> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, text, addSpecial } satisfies EncodeRequest);
    });
  }

  async close(): Promise<void> {
    this.worker.removeAllListeners('exit');
    await this.worker.terminate();
  }
}
