// Iteration-level (continuous) batching over one Engine, as vLLM and llama.cpp's server do: before
// every engine step, waiting requests join the running batch within the batch-size, token and KV
// limits, and long prompts are split into chunks so running sequences keep decoding. The seed
// study's fixed-size batching is a second policy here only so benchmarks can compare the two.
//
// The admission decision (`planStep`) is a pure function of the queue's state; `Scheduler` applies
// its plans to the engine and streams each sampled token to its request.
import type { Engine, StepEntry } from './engine.js';

export type SchedulerPolicy = 'continuous' | 'fixed';

export type FinishReason = 'stop' | 'length' | 'abort' | 'error';

export interface SchedulerLimits {
  maxBatchSize: number;
  /** Tokens one step may feed the engine: decode tokens plus prompt chunks. */
  maxNumBatchedTokens: number;
  kvBlockTokens: number;
  kvBlocksTotal: number;
  /** Fixed policy: a partial batch starts once its oldest request has waited this long. */
  batchTimeoutMs: number;
}

/** What planning knows of a request. */
export interface PlanRequest {
  id: number;
  promptTokens: number;
  maxTokens: number;
  /**
   * Prompt tokens already in the engine (fed, or found in the prefix cache at admission); equal to
   * promptTokens once decoding.
   */
  prefilled: number;
  arrivalMs: number;
}

/** One engine entry: a chunk of the prompt, or (promptChunk 0) the last sampled token. */
export interface PlannedEntry {
  id: number;
  promptChunk: number;
}

export interface StepPlan {
  /** Waiting requests that join the running batch this step, in queue order. */
  admit: number[];
  entries: PlannedEntry[];
  /** Fixed policy, nothing to run yet: plan again after this long (or when a request arrives). */
  retryInMs?: number;
}

export interface QueueState {
  policy: SchedulerPolicy;
  /** In admission order. */
  running: readonly PlanRequest[];
  /** In arrival order (FCFS). */
  waiting: readonly PlanRequest[];
  limits: SchedulerLimits;
  nowMs: number;
}

/**
 * KV blocks a request may use: prompt and output tokens, reserved whole at admission. With prefix
 * caching this stays an upper bound (a shared block is counted by each of its users), and the engine
 * counts cached blocks nobody uses as free: a plan within the reservations never finds the cache full.
 */
export function kvBlocksFor(r: Pick<PlanRequest, 'promptTokens' | 'maxTokens'>, blockTokens: number): number {
  return Math.ceil((r.promptTokens + r.maxTokens) / blockTokens);
}

export function planStep(state: QueueState): StepPlan {
  return state.policy === 'continuous' ? planContinuous(state) : planFixed(state);
}

/** Decode tokens of running sequences first, then the next chunks of their prompts, in admission order. */
function runningEntries(running: readonly PlanRequest[], budget: number): { entries: PlannedEntry[]; budget: number } {
  const entries: PlannedEntry[] = [];
  for (const r of running) {
    if (r.prefilled < r.promptTokens) continue;
    entries.push({ id: r.id, promptChunk: 0 });
    budget--;
  }
  for (const r of running) {
    if (r.prefilled >= r.promptTokens || budget <= 0) continue;
    const n = Math.min(budget, r.promptTokens - r.prefilled);
    entries.push({ id: r.id, promptChunk: n });
    budget -= n;
  }
  return { entries, budget };
}

/**
 * The running batch's entries, then new requests in arrival order while the batch, the token budget
 * and KV reservations allow. Admission stops at the first request that does not fit, so a large
 * request is not overtaken forever.
 */
function planContinuous({ running, waiting, limits }: QueueState): StepPlan {
  const planned = runningEntries(running, limits.maxNumBatchedTokens);
  const entries = planned.entries;
  let budget = planned.budget;
  let reservedBlocks = running.reduce((sum, r) => sum + kvBlocksFor(r, limits.kvBlockTokens), 0);
  const admit: number[] = [];
  for (const w of waiting) {
    if (running.length + admit.length >= limits.maxBatchSize || budget <= 0) break;
    const blocks = kvBlocksFor(w, limits.kvBlockTokens);
    if (reservedBlocks + blocks > limits.kvBlocksTotal) break;
    reservedBlocks += blocks;
    admit.push(w.id);
    const n = Math.min(budget, w.promptTokens);
    entries.push({ id: w.id, promptChunk: n });
    budget -= n;
  }
  return { admit, entries };
}

/**
 * The seed's DynamicBatchScheduler: a batch starts when max-batch-size requests wait (or the oldest
 * has waited batchTimeoutMs) and runs until every member is done; nothing joins a running batch.
 * Prompts are chunked with the same token budget as the continuous policy, so comparing the two
 * measures admission alone.
 */
function planFixed({ running, waiting, limits, nowMs }: QueueState): StepPlan {
  if (running.length > 0) return { admit: [], entries: runningEntries(running, limits.maxNumBatchedTokens).entries };
  if (waiting.length === 0) return { admit: [], entries: [] };
  const waitedMs = nowMs - waiting[0].arrivalMs;
  if (waiting.length < limits.maxBatchSize && waitedMs < limits.batchTimeoutMs) {
    return { admit: [], entries: [], retryInMs: limits.batchTimeoutMs - waitedMs };
  }
  let reservedBlocks = 0;
  const batch: PlanRequest[] = [];
  for (const w of waiting.slice(0, limits.maxBatchSize)) {
    const blocks = kvBlocksFor(w, limits.kvBlockTokens);
    if (reservedBlocks + blocks > limits.kvBlocksTotal) break;
    reservedBlocks += blocks;
    batch.push(w);
  }
  return { admit: batch.map((w) => w.id), entries: runningEntries(batch, limits.maxNumBatchedTokens).entries };
}

export interface GenerationRequest {
  prompt: readonly number[];
  maxTokens: number;
  temperature: number;
  topP: number;
  /** Drives this request's sampling RNG: the same seed gives the same tokens in any batch. */
  seed: number;
  /** Aborting frees the request's batch slot at the next step. */
  signal?: AbortSignal;
  /** A sampled token (EOS excluded); return true to finish here with reason 'stop' (a stop string). */
  onToken(token: number): boolean;
  onFinish(result: GenerationResult): void;
}

export interface GenerationResult {
  reason: FinishReason;
  promptTokens: number;
  /** Tokens sampled for this request, EOS included. */
  completionTokens: number;
  error?: Error;
}

/** What the scheduler reports as it runs (implemented by the metrics module). */
export interface SchedulerObserver {
  step(s: { batchSize: number; promptTokens: number; generationTokens: number }): void;
  /** At admission, with prefix caching: the prompt's tokens looked up, and those found cached. */
  prefixCache(s: { queriedTokens: number; hitTokens: number }): void;
  /** After every step and queue change; kvUsageRatio is the fraction of KV blocks in use. */
  state(s: { running: number; waiting: number; kvUsageRatio: number }): void;
  firstToken(secondsSinceArrival: number): void;
  interToken(seconds: number): void;
  finished(reason: FinishReason, e2eSeconds: number): void;
}

export class QueueFullError extends Error {
  constructor(
    readonly waiting: number,
    readonly retryAfterSeconds: number,
  ) {
    super(`the server is at capacity: ${waiting} requests are already waiting; retry in ${retryAfterSeconds} s`);
    this.name = 'QueueFullError';
  }
}

export interface SchedulerOptions {
  policy: SchedulerPolicy;
  maxBatchSize: number;
  maxNumBatchedTokens: number;
  maxWaitingRequests: number;
  batchTimeoutMs: number;
  observer?: SchedulerObserver;
}

interface Tracked extends PlanRequest {
  req: GenerationRequest;
  sequence: number;
  generated: number;
  /** The last sampled token, fed to the engine at the next decode step. */
  nextInput: number;
  lastTokenMs: number;
  aborted: boolean;
}

export class Scheduler {
  private readonly waiting: Tracked[] = [];
  private running: Tracked[] = [];
  private nextId = 1;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Moving average of request latency, for the Retry-After of a refused request. */
  private e2eSecondsAverage = 1;
  private readonly limits: SchedulerLimits;
  /** The model's end-of-generation tokens (EOS, EOT, <|im_end|> ...). */
  private readonly endOfGeneration: ReadonlySet<number>;
  private readonly prefixCaching: boolean;

  constructor(
    private readonly engine: Engine,
    private readonly options: SchedulerOptions,
  ) {
    const info = engine.info;
    this.limits = {
      maxBatchSize: options.maxBatchSize,
      maxNumBatchedTokens: options.maxNumBatchedTokens,
      kvBlockTokens: info.kvBlockTokens,
      kvBlocksTotal: info.kvBlocksTotal,
      batchTimeoutMs: options.batchTimeoutMs,
    };
    this.endOfGeneration = new Set(engine.metadata.tokenizer.endOfGenerationIds);
    this.prefixCaching = info.prefixCaching;
  }

  get runningCount(): number {
    return this.running.length;
  }

  get waitingCount(): number {
    return this.waiting.length;
  }

  /** Queues a request (FCFS); throws QueueFullError when max-waiting-requests are already queued. */
  submit(req: GenerationRequest): void {
    const blocks = kvBlocksFor({ promptTokens: req.prompt.length, maxTokens: req.maxTokens }, this.limits.kvBlockTokens);
    if (req.prompt.length === 0) throw new Error('a request needs at least one prompt token');
    if (blocks > this.limits.kvBlocksTotal) {
      throw new Error(`a request of ${req.prompt.length} prompt + ${req.maxTokens} output tokens needs ${blocks} KV blocks, the cache has ${this.limits.kvBlocksTotal}`);
    }
    if (this.waiting.length >= this.options.maxWaitingRequests) {
      const rounds = Math.ceil((this.waiting.length + 1) / this.options.maxBatchSize);
      throw new QueueFullError(this.waiting.length, Math.max(1, Math.ceil(rounds * this.e2eSecondsAverage)));
    }
    const t: Tracked = {
      id: this.nextId++,
      promptTokens: req.prompt.length,
      maxTokens: req.maxTokens,
      prefilled: 0,
      arrivalMs: performance.now(),
      req,
      sequence: -1,
      generated: 0,
      nextInput: -1,
      lastTokenMs: 0,
      aborted: false,
    };
    if (req.signal?.aborted) {
      this.finish(t, 'abort');
      return;
    }
    req.signal?.addEventListener('abort', () => this.abort(t), { once: true });
    this.waiting.push(t);
    this.reportState();
    this.kick();
  }

  /** Resolves once nothing is running or waiting (for draining). */
  idle(): Promise<void> {
    if (this.running.length === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private kick(): void {
    if (this.wake) {
      this.wake();
      this.wake = undefined;
    }
    this.loop ??= this.run()
      .catch((e: Error) => this.failAll(e))
      .finally(() => {
        this.loop = undefined;
        if (this.waiting.length > 0) this.kick();
      });
  }

  /** A bug surfaced in the loop: fail every request rather than leave clients waiting forever. */
  private failAll(error: Error): void {
    const all = [...this.running, ...this.waiting];
    this.running = [];
    this.waiting.length = 0;
    for (const t of all) this.finish(t, 'error', error);
    this.reportState();
    this.notifyIfIdle();
  }

  private abort(t: Tracked): void {
    if (t.aborted) return;
    t.aborted = true;
    const queued = this.waiting.indexOf(t);
    if (queued >= 0) {
      this.waiting.splice(queued, 1);
      this.finish(t, 'abort');
      this.reportState();
      this.notifyIfIdle();
    }
    // A running request is finished by the loop before its next step (the engine may be mid-step).
  }

  private async run(): Promise<void> {
    while (this.running.length > 0 || this.waiting.length > 0) {
      this.reapAborted();
      const plan = planStep({ policy: this.options.policy, running: this.running, waiting: this.waiting, limits: this.limits, nowMs: performance.now() });
      if (plan.entries.length === 0) {
        if (this.running.length === 0 && this.waiting.length === 0) break;
        await new Promise<void>((resolve) => {
          const timer = plan.retryInMs === undefined ? undefined : setTimeout(resolve, plan.retryInMs);
          this.wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.wake = undefined;
        continue;
      }
      this.admit(plan.admit);
      await this.step(plan.entries);
    }
    this.notifyIfIdle();
  }

  private reapAborted(): void {
    const aborted = this.running.filter((t) => t.aborted);
    if (aborted.length === 0) return;
    this.running = this.running.filter((t) => !t.aborted);
    for (const t of aborted) this.finish(t, 'abort');
    this.reportState();
  }

  private admit(ids: readonly number[]): void {
    for (const id of ids) {
      const i = this.waiting.findIndex((w) => w.id === id);
      const [t] = this.waiting.splice(i, 1);
      if (this.prefixCaching) {
        // The prefill starts after the cached prefix the engine attached (never the whole prompt).
        t.sequence = this.engine.createSequence(t.req.seed, t.req.prompt);
        t.prefilled = this.engine.sequenceLength(t.sequence);
        this.options.observer?.prefixCache({ queriedTokens: t.promptTokens, hitTokens: t.prefilled });
      } else {
        t.sequence = this.engine.createSequence(t.req.seed);
      }
      this.running.push(t);
    }
    if (ids.length > 0) this.reportState();
  }

  private async step(planned: readonly PlannedEntry[]): Promise<void> {
    const byId = new Map(this.running.map((t) => [t.id, t]));
    // A request admitted by this plan was planned from its first prompt token: its chunk is clamped
    // to what the prefix cache left of its prompt.
    let batch = planned.map((p) => {
      const t = byId.get(p.id)!;
      return { t, promptChunk: Math.min(p.promptChunk, t.promptTokens - t.prefilled) };
    });
    let entries: StepEntry[] = batch.map(({ t, promptChunk }) => {
      const tokens = promptChunk > 0 ? t.req.prompt.slice(t.prefilled, t.prefilled + promptChunk) : [t.nextInput];
      const sample = promptChunk === 0 || t.prefilled + promptChunk === t.promptTokens;
      return { sequence: t.sequence, tokens, sample, temperature: t.req.temperature, topP: t.req.topP };
    });
    // A request the engine would refuse (a token outside the vocabulary, too long) fails alone, with
    // its own problem only; the rest of the batch steps without it.
    const problems = this.engine.entryProblems(entries);
    if (problems.some((p) => p !== null)) {
      batch.forEach(({ t }, i) => {
        if (problems[i] !== null) this.finish(t, 'error', new Error(`the engine refused this request: ${problems[i]}`));
      });
      this.running = this.running.filter((t) => t.sequence !== -1);
      entries = entries.filter((_, i) => problems[i] === null);
      batch = batch.filter((_, i) => problems[i] === null);
      this.reportState();
      if (batch.length === 0) return;
    }
    let results;
    try {
      results = await this.engine.step(entries);
    } catch (e) {
      // Not expected (plans respect every engine limit, entries were checked): fail this step's
      // requests with the step's own error (no entry's data: those were checked above), keep serving.
      const error = new Error(`the engine step this request was batched in failed: ${(e as Error).message}`);
      for (const { t } of batch) this.finish(t, 'error', error);
      this.running = this.running.filter((t) => !batch.some((b) => b.t === t));
      this.reportState();
      return;
    }
    const nowMs = performance.now();
    let promptTokens = 0;
    let generationTokens = 0;
    batch.forEach(({ t, promptChunk }, i) => {
      t.prefilled += promptChunk;
      promptTokens += promptChunk;
      if (!entries[i].sample) return;
      generationTokens++;
      this.accept(t, results[i].token, nowMs);
    });
    const done = this.running.some((t) => t.sequence === -1);
    if (done) this.running = this.running.filter((t) => t.sequence !== -1);
    this.options.observer?.step({ batchSize: entries.length, promptTokens, generationTokens });
    this.reportState();
  }

  /** A sampled token: record its timing, then finish the request or keep it for the next step. */
  private accept(t: Tracked, token: number, nowMs: number): void {
    t.generated++;
    if (t.generated === 1) this.options.observer?.firstToken((nowMs - t.arrivalMs) / 1000);
    else this.options.observer?.interToken((nowMs - t.lastTokenMs) / 1000);
    t.lastTokenMs = nowMs;
    if (t.aborted) return this.finish(t, 'abort');
    if (this.endOfGeneration.has(token)) return this.finish(t, 'stop');
    if (t.req.onToken(token)) return this.finish(t, 'stop');
    if (t.generated >= t.maxTokens) return this.finish(t, 'length');
    t.nextInput = token;
  }

  /** Releases the request's sequence (marking it -1 so the loop drops it) and reports the result. */
  private finish(t: Tracked, reason: FinishReason, error?: Error): void {
    if (t.sequence !== -1) {
      this.engine.releaseSequence(t.sequence);
      t.sequence = -1;
    }
    const e2eSeconds = (performance.now() - t.arrivalMs) / 1000;
    if (reason !== 'abort') this.e2eSecondsAverage = 0.9 * this.e2eSecondsAverage + 0.1 * e2eSeconds;
    this.options.observer?.finished(reason, e2eSeconds);
    t.req.onFinish({ reason, promptTokens: t.promptTokens, completionTokens: t.generated, error });
  }

  private reportState(): void {
    if (!this.options.observer) return;
    const info = this.engine.info;
    this.options.observer.state({ running: this.running.length, waiting: this.waiting.length, kvUsageRatio: 1 - info.kvBlocksFree / info.kvBlocksTotal });
  }

  private notifyIfIdle(): void {
    if (this.running.length > 0 || this.waiting.length > 0) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }
}
