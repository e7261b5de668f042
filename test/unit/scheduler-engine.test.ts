// The Scheduler driving a real (tiny) engine: a request arriving mid-run joins at the next step with
// continuous batching but waits for the whole batch with the fixed policy; the fixed policy's batch
// timeout; aborts while queued; the bounded queue; a request the engine refuses fails alone.
import { describe, expect, it } from 'vitest';

import { Engine } from '../../runtime/engine.js';
import { QueueFullError, Scheduler, type GenerationResult, type SchedulerPolicy } from '../../runtime/scheduler.js';
import { convertedModel, testModel } from './helpers.js';

async function scheduler(policy: SchedulerPolicy, overrides: { maxWaitingRequests?: number; batchTimeoutMs?: number } = {}) {
  const engine = await Engine.load(await convertedModel(testModel('scheduler'), 'INT8', 2), { threads: 1, maxSeqLen: 512, kvCacheTokens: 4 * 512 });
  return new Scheduler(engine, { policy, maxBatchSize: 4, maxNumBatchedTokens: 64, maxWaitingRequests: overrides.maxWaitingRequests ?? 16, batchTimeoutMs: overrides.batchTimeoutMs ?? 30 });
}

interface Timeline {
  submittedMs: number;
  firstTokenMs?: number;
  result: Promise<GenerationResult & { endMs: number }>;
}

/** Submits (throwing as submit does) and returns the request's timeline. */
function submit(s: Scheduler, maxTokens: number, signal?: AbortSignal, prompt: readonly number[] = [1, 415, 6233, 1117]): Timeline {
  let done!: (r: GenerationResult & { endMs: number }) => void;
  const t: Timeline = { submittedMs: performance.now(), result: new Promise((resolve) => (done = resolve)) };
  s.submit({
    prompt,
    maxTokens,
    temperature: 1,
    topP: 1,
    seed: 7, // sampled, so the tiny model does not reach EOS early
    signal,
    onToken: () => {
      t.firstTokenMs ??= performance.now();
      return false;
    },
    onFinish: (r) => done({ ...r, endMs: performance.now() }),
  });
  return t;
}

describe('Scheduler on an engine', () => {
  it.each([
    ['continuous', true],
    ['fixed', false],
  ] as const)('%s: a request arriving mid-run starts before the running batch ends: %s', async (policy, joinsEarly) => {
    const s = await scheduler(policy);
    const first = [submit(s, 400), submit(s, 400)];
    while (first[0].firstTokenMs === undefined) await new Promise((resolve) => setTimeout(resolve, 1));
    const late = submit(s, 4); // the batch has hundreds of steps to go
    const [a, b, c] = await Promise.all([...first.map((t) => t.result), late.result]);
    expect([a.reason, b.reason, c.reason]).toEqual(['length', 'length', 'length']);
    expect(c.completionTokens).toBe(4);
    const batchEndMs = Math.min(a.endMs, b.endMs);
    expect(late.firstTokenMs! < batchEndMs).toBe(joinsEarly);
    await s.idle();
    expect([s.runningCount, s.waitingCount]).toEqual([0, 0]);
  });

  it('fixed: a partial batch starts once its oldest request has waited the batch timeout', async () => {
    const s = await scheduler('fixed', { batchTimeoutMs: 200 });
    const t = submit(s, 2);
    await t.result;
    expect(t.firstTokenMs! - t.submittedMs).toBeGreaterThanOrEqual(190);
  });

  it('finishes a request aborted while queued without running it, and refuses requests beyond the queue', async () => {
    const s = await scheduler('continuous', { maxWaitingRequests: 2 });
    const running = submit(s, 200); // admitted at once: the loop starts its first step synchronously
    const aborter = new AbortController();
    const queued = submit(s, 200, aborter.signal);
    const next = submit(s, 200);
    expect(() => submit(s, 200)).toThrow(QueueFullError);
    aborter.abort();
    expect(await queued.result).toMatchObject({ reason: 'abort', completionTokens: 0 });
    expect(queued.firstTokenMs).toBeUndefined();
    expect((await running.result).reason).toBe('length');
    expect((await next.result).reason).toBe('length');
    await s.idle();
  });

  it('fails only the request the engine would refuse, with its own problem and nothing of the others', async () => {
    const s = await scheduler('continuous');
    const before = submit(s, 6);
    const outsideVocabulary = submit(s, 6, undefined, [1, 415, 32768, 1117]); // the test vocabulary has 32768 tokens
    const tooLong = submit(s, 6, undefined, Array.from({ length: 520 }, (_, i) => 1 + i)); // maxSeqLen 512
    const after = submit(s, 6, undefined, [1, 6233, 415]);
    const [a, v, l, b] = await Promise.all([before.result, outsideVocabulary.result, tooLong.result, after.result]);
    expect([a.reason, a.completionTokens, a.error]).toEqual(['length', 6, undefined]);
    expect([b.reason, b.completionTokens, b.error]).toEqual(['length', 6, undefined]);
    expect(v.reason).toBe('error');
    expect(v.error?.message).toMatch(/^the engine refused this request: sequence \d+: token 32768 is outside the vocabulary \[0, 32768\)$/);
    expect(l.reason).toBe('error');
    expect(l.error?.message).toMatch(/^the engine refused this request: sequence \d+: 5\d\d tokens exceed maxSeqLen 512$/);
    await s.idle();
    expect([s.runningCount, s.waitingCount]).toEqual([0, 0]);
  });
});

describe('Scheduler on an engine with prefix caching', () => {
  // Blocks of 4 and a 16-block cache: two requests of 20 + 8 tokens (7 blocks each) run at a time,
  // so the cached blocks of finished requests are evicted again and again under a full reservation.
  async function run(prefixCaching: boolean, prompts: number[][]) {
    const engine = await Engine.load(await convertedModel(testModel('scheduler'), 'INT8', 2), {
      threads: 1,
      maxSeqLen: 32,
      kvCacheTokens: 64,
      kvBlockTokens: 4,
      prefixCaching,
    });
    const hits: number[] = [];
    const s = new Scheduler(engine, {
      policy: 'continuous',
      maxBatchSize: 4,
      maxNumBatchedTokens: 16,
      maxWaitingRequests: 64,
      batchTimeoutMs: 0,
      observer: { step: () => {}, state: () => {}, firstToken: () => {}, interToken: () => {}, finished: () => {}, prefixCache: (p) => hits.push(p.hitTokens) },
    });
    const results = prompts.map((prompt, i) => {
      const tokens: number[] = [];
      return new Promise<{ reason: string; tokens: number[] }>((resolve) =>
        s.submit({ prompt, maxTokens: 8, temperature: 1, topP: 1, seed: i, onToken: (t) => (tokens.push(t), false), onFinish: (r) => resolve({ reason: r.reason, tokens }) }),
      );
    });
    const out = await Promise.all(results);
    await s.idle();
    expect(engine.info.kvBlocksFree).toBe(engine.info.kvBlocksTotal);
    return { out, hits };
  }

  it('gives the same tokens as without the cache, reuses shared prefixes, and never finds the KV cache full', async () => {
    const systems = [[1, 415, 6233, 1117, 28705, 9, 77, 301, 4242, 12], [1, 5, 6, 7, 8, 9, 10, 11, 12, 13]];
    const prompts = Array.from({ length: 12 }, (_, i) => [...systems[i % 2], ...Array.from({ length: 10 }, (_, j) => 100 + ((i * 31 + j * 7) % 3000))]);
    const cold = await run(false, prompts);
    const warm = await run(true, prompts);
    expect(warm.out).toEqual(cold.out);
    expect(warm.out.every((r) => r.reason === 'length' || r.reason === 'stop')).toBe(true);
    expect(cold.hits).toEqual([]);
    expect(warm.hits.filter((h) => h >= 8).length).toBeGreaterThan(0);
  });
});
