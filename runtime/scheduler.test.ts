// The admission decision alone (planStep is a pure function): batch-size, token-budget and KV limits,
// chunked prefill that keeps decoders advancing, FCFS order, and the fixed-batch baseline; and, on a
// fake engine, where the Scheduler starts a prefill after a cached prefix.
import { describe, expect, it } from 'vitest';

import type { Engine, EngineInfo, StepEntry, StepResult } from './engine.js';
import {
  kvBlocksFor,
  planStep,
  Scheduler,
  type PlanRequest,
  type QueueState,
  type SchedulerLimits,
  type SchedulerObserver,
  type SchedulerPolicy,
  type StepPlan,
} from './scheduler.js';

const LIMITS: SchedulerLimits = { maxBatchSize: 4, maxNumBatchedTokens: 64, kvBlockTokens: 16, kvBlocksTotal: 100, batchTimeoutMs: 50 };

let nextId = 1;
function req(promptTokens: number, maxTokens: number, extra: Partial<PlanRequest> = {}): PlanRequest {
  return { id: nextId++, promptTokens, maxTokens, prefilled: 0, arrivalMs: 0, ...extra };
}
const decoding = (promptTokens: number, maxTokens: number) => req(promptTokens, maxTokens, { prefilled: promptTokens });

function plan(running: PlanRequest[], waiting: PlanRequest[], limits: Partial<SchedulerLimits> = {}, policy: SchedulerPolicy = 'continuous', nowMs = 0): StepPlan {
  return planStep({ policy, running, waiting, limits: { ...LIMITS, ...limits }, nowMs });
}

const tokensOf = (p: StepPlan) => p.entries.reduce((n, e) => n + Math.max(1, e.promptChunk), 0);

describe('continuous admission', () => {
  it('decodes every running sequence, then admits waiting requests in arrival order up to max-batch-size', () => {
    const running = [decoding(10, 20), decoding(5, 20)];
    const waiting = [req(8, 8), req(4, 4), req(3, 3)];
    const p = plan(running, waiting);
    expect(p.admit).toEqual([waiting[0].id, waiting[1].id]);
    expect(p.entries).toEqual([
      { id: running[0].id, promptChunk: 0 },
      { id: running[1].id, promptChunk: 0 },
      { id: waiting[0].id, promptChunk: 8 },
      { id: waiting[1].id, promptChunk: 4 },
    ]);
  });

  it('splits a long prompt over steps within the token budget while decoders keep their token', () => {
    const running = [decoding(10, 100), decoding(10, 100)];
    const long = req(200, 10);
    const first = plan(running, [long]);
    expect(first.admit).toEqual([long.id]);
    expect(first.entries.find((e) => e.id === long.id)?.promptChunk).toBe(62);
    expect(tokensOf(first)).toBe(64);

    long.prefilled = 62;
    const second = plan([...running, long], []);
    expect(second.entries).toEqual([
      { id: running[0].id, promptChunk: 0 },
      { id: running[1].id, promptChunk: 0 },
      { id: long.id, promptChunk: 62 },
    ]);
  });

  it('admits nothing new once the token budget is spent on running prompts', () => {
    const prefilling = req(500, 10, { prefilled: 100 });
    const p = plan([prefilling], [req(4, 4)]);
    expect(p.admit).toEqual([]);
    expect(p.entries).toEqual([{ id: prefilling.id, promptChunk: 64 }]);
  });

  it('reserves KV blocks for prompt + max_tokens and stops admission at the first request that does not fit', () => {
    const running = [decoding(16 * 40, 16 * 10)]; // 50 blocks reserved
    const big = req(16 * 30, 16 * 30); // 60 blocks: does not fit in the 50 left
    const small = req(4, 4);
    const p = plan(running, [big, small]);
    expect(kvBlocksFor(big, 16)).toBe(60);
    expect(p.admit).toEqual([]);
    expect(plan([], [big, small], { maxNumBatchedTokens: 1024 }).admit).toEqual([big.id, small.id]);
  });

  it('runs the remaining prompt chunks of admitted requests before admitting newer ones (FCFS)', () => {
    const a = req(100, 4, { prefilled: 64 });
    const b = req(10, 4);
    const p = plan([a], [b], { maxNumBatchedTokens: 40 });
    expect(p.entries).toEqual([{ id: a.id, promptChunk: 36 }, { id: b.id, promptChunk: 4 }]);
  });
});

describe('fixed-batch baseline (the seed study)', () => {
  it('waits for a full batch or the timeout, then admits a batch and nothing else until it is done', () => {
    const waiting = [req(8, 4, { arrivalMs: 0 }), req(8, 4, { arrivalMs: 10 })];
    const early = plan([], waiting, {}, 'fixed', 20);
    expect(early.admit).toEqual([]);
    expect(early.retryInMs).toBe(30);

    const late = plan([], waiting, {}, 'fixed', 50);
    expect(late.admit).toEqual(waiting.map((w) => w.id));

    const full = [1, 2, 3, 4, 5].map(() => req(8, 4));
    expect(plan([], full, {}, 'fixed', 0).admit).toEqual(full.slice(0, 4).map((w) => w.id));

    const running = [decoding(8, 4)];
    const busy = plan(running, full, {}, 'fixed', 1000);
    expect(busy.admit).toEqual([]);
    expect(busy.entries).toEqual([{ id: running[0].id, promptChunk: 0 }]);
  });
});

/** Plays plans forward: prefill advances, each sampled token counts, finished requests leave. */
function simulate(policy: SchedulerPolicy, arrivals: PlanRequest[], limits: SchedulerLimits, check: (p: StepPlan, s: QueueState) => void): number {
  const waiting = [...arrivals];
  let running: PlanRequest[] = [];
  const generated = new Map<number, number>();
  let steps = 0;
  for (let now = 0; (waiting.length > 0 || running.length > 0) && steps < 10_000; now += 10) {
    const state: QueueState = { policy, running, waiting: waiting.filter((w) => w.arrivalMs <= now), limits, nowMs: now };
    const p = planStep(state);
    check(p, state);
    for (const id of p.admit) running.push(waiting.splice(waiting.findIndex((w) => w.id === id), 1)[0]);
    for (const e of p.entries) {
      const r = running.find((x) => x.id === e.id)!;
      r.prefilled += e.promptChunk;
      if (r.prefilled === r.promptTokens) generated.set(r.id, (generated.get(r.id) ?? 0) + 1);
    }
    running = running.filter((r) => (generated.get(r.id) ?? 0) < r.maxTokens);
    if (p.entries.length > 0) steps++;
  }
  return steps;
}

describe('random workloads', () => {
  it.each(['continuous', 'fixed'] as const)('%s: every step respects the limits and every request finishes', (policy) => {
    const seed = Date.now() % 100_000;
    console.log(`scheduler random workload seed ${seed}`);
    let s = seed;
    const rand = (n: number) => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s % n;
    };
    const arrivals = Array.from({ length: 40 }, (_, i) => req(1 + rand(300), 1 + rand(40), { arrivalMs: i * 15 }));
    const limits: SchedulerLimits = { ...LIMITS, kvBlocksTotal: 60 };
    let lastAdmitted = 0;
    simulate(policy, arrivals, limits, (p, state) => {
      expect(p.entries.length).toBeLessThanOrEqual(limits.maxBatchSize);
      if (policy === 'continuous') expect(tokensOf(p)).toBeLessThanOrEqual(limits.maxNumBatchedTokens);
      const admitted = state.waiting.filter((w) => p.admit.includes(w.id));
      const reserved = [...state.running, ...admitted].reduce((n, r) => n + kvBlocksFor(r, limits.kvBlockTokens), 0);
      expect(reserved).toBeLessThanOrEqual(limits.kvBlocksTotal);
      for (const id of p.admit) {
        expect(id).toBeGreaterThan(lastAdmitted); // FCFS: arrival order is id order
        lastAdmitted = id;
      }
    });
    expect(arrivals.every((r) => r.prefilled === r.promptTokens)).toBe(true);
  });

  it('continuous batching finishes the same mixed load in fewer engine steps than fixed batches', () => {
    const load = () => Array.from({ length: 24 }, (_, i) => req(20 + ((i * 37) % 200), 4 + ((i * 13) % 60), { arrivalMs: i * 20 }));
    const continuous = simulate('continuous', load(), LIMITS, () => {});
    const fixed = simulate('fixed', load(), LIMITS, () => {});
    expect(continuous).toBeLessThan(fixed);
  });
});

/** An engine that records the entries it is given and reports `cachedTokens` matched for every prompt. */
function fakeEngine(cachedTokens: number, prefixCaching: boolean) {
  const steps: StepEntry[][] = [];
  const created: Array<{ seed: number; prompt?: readonly number[] | Int32Array }> = [];
  const lengths = new Map<number, number>();
  const info: Partial<EngineInfo> = { kvBlockTokens: 16, kvBlocksTotal: 100, kvBlocksFree: 100, prefixCaching };
  const engine = {
    info,
    metadata: { tokenizer: { endOfGenerationIds: [0] } },
    createSequence(seed: number, prompt?: readonly number[] | Int32Array) {
      created.push({ seed, prompt });
      lengths.set(created.length, prompt ? cachedTokens : 0);
      return created.length;
    },
    sequenceLength: (id: number) => lengths.get(id)!,
    releaseSequence: () => {},
    entryProblems: (entries: StepEntry[]) => entries.map(() => null),
    async step(entries: StepEntry[]): Promise<StepResult[]> {
      steps.push(entries);
      return entries.map((e) => ({ sequence: e.sequence, token: 7 }));
    },
  };
  return { engine: engine as unknown as Engine, steps, created };
}

const silentObserver = (prefix: Array<{ queriedTokens: number; hitTokens: number }>): SchedulerObserver => ({
  step: () => {},
  state: () => {},
  firstToken: () => {},
  interToken: () => {},
  finished: () => {},
  prefixCache: (s) => prefix.push(s),
});

describe('the Scheduler and the prefix cache', () => {
  it.each(['continuous', 'fixed'] as const)('%s: a prefill starts after the cached prefix, in chunks of what remains', async (policy) => {
    const { engine, steps, created } = fakeEngine(32, true);
    const prefix: Array<{ queriedTokens: number; hitTokens: number }> = [];
    const s = new Scheduler(engine, { policy, maxBatchSize: 4, maxNumBatchedTokens: 6, maxWaitingRequests: 4, batchTimeoutMs: 0, observer: silentObserver(prefix) });
    const prompt = Array.from({ length: 45 }, (_, i) => 100 + i);
    const result = new Promise((resolve) => s.submit({ prompt, maxTokens: 2, temperature: 1, topP: 1, seed: 3, onToken: () => false, onFinish: resolve }));
    expect(await result).toMatchObject({ reason: 'length', promptTokens: 45, completionTokens: 2 });
    expect(created).toEqual([{ seed: 3, prompt }]);
    expect(prefix).toEqual([{ queriedTokens: 45, hitTokens: 32 }]);
    // 13 prompt tokens left: 6 + 6 + 1, the last one sampled; then one decode step.
    expect(steps.map((e) => e[0].tokens)).toEqual([prompt.slice(32, 38), prompt.slice(38, 44), prompt.slice(44), [7]]);
    expect(steps.map((e) => e[0].sample)).toEqual([false, false, true, true]);
  });

  it('without prefix caching the prompt is not looked up and is fed whole', async () => {
    const { engine, steps, created } = fakeEngine(32, false);
    const prefix: Array<{ queriedTokens: number; hitTokens: number }> = [];
    const s = new Scheduler(engine, { policy: 'continuous', maxBatchSize: 4, maxNumBatchedTokens: 64, maxWaitingRequests: 4, batchTimeoutMs: 0, observer: silentObserver(prefix) });
    const prompt = Array.from({ length: 45 }, (_, i) => 100 + i);
    await new Promise((resolve) => s.submit({ prompt, maxTokens: 1, temperature: 1, topP: 1, seed: 3, onToken: () => false, onFinish: resolve }));
    expect(created).toEqual([{ seed: 3, prompt: undefined }]);
    expect(prefix).toEqual([]);
    expect(steps[0][0].tokens).toEqual(prompt);
  });
});
