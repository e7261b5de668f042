// Chat templates rendered in a child process with a deadline and a heap limit. A template comes from
// the checkpoint, and Jinja can loop (`range(10**9)`) or allocate without bound: rendered on the event
// loop such a template froze the server for seconds or killed it with a V8 heap out-of-memory. Here a
// render past its deadline kills the child, a render past the heap limit ends it (V8 aborts the
// process that runs out of heap: a worker thread's resourceLimits did not always contain that, so the
// renderer is a process), the request gets a clear error, and the next render starts a fresh child.
import { fork, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';

import { ChatTemplateError, type ChatMessage, type TemplateSpec } from './chat.js';

export interface TemplateLimits {
  /** Longest a single render may take. */
  timeoutMs: number;
  /** The renderer's V8 old-generation heap limit. */
  heapMb: number;
}

export const DEFAULT_TEMPLATE_LIMITS: TemplateLimits = { timeoutMs: 1000, heapMb: 64 };

export interface RenderRequest {
  id: number;
  messages: readonly ChatMessage[];
  maxLength: number;
}

export type RenderReply = { id: number } | { id: number; text: string } | { id: number; tooLong: number } | { id: number; error: string; refused: boolean };

/** The template broke a limit (deadline or heap): the model's template, not the request's fields, is at fault. */
export class TemplateLimitError extends Error {
  constructor(
    message: string,
    readonly limit: 'timeout' | 'memory',
  ) {
    super(message);
    this.name = 'TemplateLimitError';
  }
}

/** The rendered prompt is longer than the caller's limit (in UTF-16 units). */
export class RenderedTooLongError extends Error {
  constructor(readonly length: number) {
    super(`the rendered prompt has ${length} characters`);
    this.name = 'RenderedTooLongError';
  }
}

interface Job {
  request: RenderRequest;
  resolve: (text: string) => void;
  reject: (e: Error) => void;
}

/** The renderer: compiled JavaScript, or the TypeScript module through tsx when running from source (tests, tsx scripts). */
function startChild(limits: TemplateLimits): ChildProcess {
  const fromSource = import.meta.url.endsWith('.ts');
  const path = fileURLToPath(new URL(fromSource ? './chat-render-child.ts' : './chat-render-child.js', import.meta.url));
  const execArgv = [...(fromSource ? ['--import', 'tsx'] : []), `--max-old-space-size=${limits.heapMb}`, '--max-semi-space-size=4'];
  const child = fork(path, [], { execArgv, serialization: 'advanced', stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
  // At the lowest CPU priority: a template that loops until its deadline must not take the core the
  // server's event loop (health probes, other requests) needs.
  try {
    if (child.pid !== undefined) setPriority(child.pid, 19);
  } catch {
    // Lowering one's own child's priority is always allowed on Linux; elsewhere it is best effort.
  }
  return child;
}

/**
 * Keeps the process alive while the renderer works for it (a CLI awaiting a render has nothing else
 * pending) and lets it exit while the renderer idles (a server's shutdown does not wait for it).
 */
function hold(live: Live, busy: boolean): void {
  if (busy) {
    live.child.ref();
    live.child.channel?.ref();
  } else {
    live.child.unref();
    live.child.channel?.unref();
  }
}

/** One live renderer and whether it has parsed its template. */
interface Live {
  child: ChildProcess;
  ready: Promise<void>;
}

export class SandboxedChatTemplate {
  private live: Live | null = null;
  private readonly queue: Job[] = [];
  private running: Job | null = null;
  private timer: NodeJS.Timeout | undefined;
  private nextId = 0;
  private closed = false;

  private constructor(
    private readonly spec: TemplateSpec,
    readonly limits: TemplateLimits,
  ) {}

  /** Starts the renderer; fails (with the parser's message) if the template does not parse. */
  static async start(spec: TemplateSpec, limits: TemplateLimits = DEFAULT_TEMPLATE_LIMITS): Promise<SandboxedChatTemplate> {
    const sandbox = new SandboxedChatTemplate(spec, limits);
    try {
      const live = sandbox.renderer();
      await live.ready;
      hold(live, false);
    } catch (e) {
      await sandbox.close();
      throw e;
    }
    return sandbox;
  }

  /**
   * The prompt text. Rejects with ChatTemplateError (no template, or the template refused the
   * messages), TemplateLimitError (deadline or heap limit), or RenderedTooLongError when the text is
   * longer than `maxLength`.
   */
  render(messages: readonly ChatMessage[], maxLength = Number.MAX_SAFE_INTEGER): Promise<string> {
    if (this.closed) return Promise.reject(new Error('the chat template renderer is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ request: { id: this.nextId++, messages, maxLength }, resolve, reject });
      this.pump();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    const live = this.live;
    this.live = null;
    if (live) this.discard(live);
  }

  private renderer(): Live {
    if (this.live) return this.live;
    const child = startChild(this.limits);
    // Its crash report is read only to name the cause: the pipe never keeps the process alive.
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4096)));
    (child.stderr as unknown as { unref?: () => void }).unref?.();
    const live: Live = { child, ready: Promise.resolve() };
    live.ready = new Promise<void>((resolve, reject) => {
      child.on('message', (reply: RenderReply) => {
        if (reply.id !== -1) return this.settle(reply);
        if ('error' in reply) reject(new Error(reply.error));
        else resolve();
      });
      child.on('error', (e) => {
        const err = new Error(`the chat template renderer failed: ${e.message}`);
        reject(err);
        this.lost(live, err);
      });
      // 'close' rather than 'exit': by then stderr (V8's out-of-memory report) has been read.
      child.on('close', (code, signal) => {
        const err = /heap out of memory|Reached heap limit/.test(stderr)
          ? new TemplateLimitError(`the model's chat template needed more than the ${this.limits.heapMb} MiB heap its renderer may use (a template that builds huge lists or strings); the server refuses chat requests it cannot render within that limit`, 'memory')
          : new Error(`the chat template renderer exited (${signal ?? `code ${code}`}): ${stderr.trim().split('\n').at(-1) ?? ''}`);
        reject(err);
        this.lost(live, err);
      });
    });
    // A start failure is reported through `ready` to whoever waits on it.
    live.ready.catch(() => {});
    child.send({ spec: this.spec });
    this.live = live;
    return live;
  }

  /** Sends the next job once the renderer is idle and has parsed its template. */
  private pump(): void {
    if (this.running || this.queue.length === 0 || this.closed) return;
    const job = this.queue.shift()!;
    this.running = job;
    const live = this.renderer();
    hold(live, true);
    live.ready.then(
      () => {
        if (this.running !== job || this.live !== live) return;
        this.timer = setTimeout(() => this.timeout(live, job), this.limits.timeoutMs);
        live.child.send(job.request);
      },
      (e: Error) => this.finish(job, () => job.reject(e)),
    );
  }

  private settle(reply: RenderReply): void {
    const job = this.running;
    if (!job || job.request.id !== reply.id) return;
    clearTimeout(this.timer);
    this.finish(job, () => {
      if ('text' in reply) job.resolve(reply.text);
      else if ('tooLong' in reply) job.reject(new RenderedTooLongError(reply.tooLong));
      else if ('error' in reply) job.reject(reply.refused ? new ChatTemplateError(reply.error) : new Error(reply.error));
    });
  }

  private timeout(live: Live, job: Job): void {
    if (this.running !== job) return;
    // Discarded first, so the next job (started by finish) gets a fresh renderer.
    this.discard(live);
    this.finish(job, () =>
      job.reject(new TemplateLimitError(`the model's chat template did not finish rendering within ${this.limits.timeoutMs} ms (a template that loops too long, e.g. over a huge range()); the server stopped it`, 'timeout')),
    );
  }

  /** The renderer died (heap limit, crash): the running job fails with the reason, the next starts a new one. */
  private lost(live: Live, err: Error): void {
    if (this.live !== live) return;
    this.live = null;
    clearTimeout(this.timer);
    const job = this.running;
    if (job) this.finish(job, () => job.reject(err));
  }

  private discard(live: Live): void {
    if (this.live === live) this.live = null;
    live.child.removeAllListeners();
    live.child.on('error', () => {});
    live.child.kill('SIGKILL');
  }

  private finish(job: Job, settle: () => void): void {
    if (this.running === job) this.running = null;
    settle();
    this.pump();
    if (!this.running && this.live) hold(this.live, false);
  }
}
