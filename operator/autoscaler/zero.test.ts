import { describe, expect, it } from 'vitest';

import type { PodMetrics, ScrapeRound } from './policy.js';
import { requestsSeen, zeroDecision, type ZeroInput } from './zero.js';

const t0 = Date.parse('2026-12-03T12:00:00Z');
const base: ZeroInput = { minReplicas: 0, maxReplicas: 4, maxBatchSize: 4, scaleToZeroAfterSeconds: 300, heldRequests: 0, requestsSeen: false, lastRequestMs: t0, nowMs: t0 };

describe('zeroDecision', () => {
  it('keeps one replica until the model has been idle for scaleToZeroAfterSeconds, then zero', () => {
    expect(zeroDecision({ ...base, nowMs: t0 + 299_000 })).toEqual({ floor: 1, idle: false, lastRequestMs: t0 });
    const idle = zeroDecision({ ...base, nowMs: t0 + 300_000 });
    expect(idle).toMatchObject({ floor: 0, idle: true, lastRequestMs: t0 });
    expect(idle.reason).toBe('no requests for 300 s (scaleToZeroAfterSeconds 300): scaled to zero');
  });

  it('a request seen restarts the idle time; so does a model the autoscaler sees for the first time', () => {
    expect(zeroDecision({ ...base, requestsSeen: true, nowMs: t0 + 400_000 })).toEqual({ floor: 1, idle: false, lastRequestMs: t0 + 400_000 });
    expect(zeroDecision({ ...base, lastRequestMs: undefined, nowMs: t0 + 400_000 })).toEqual({ floor: 1, idle: false, lastRequestMs: t0 + 400_000 });
  });

  it('held requests wake the model: one replica per maxBatchSize held, within maxReplicas, whatever the idle time', () => {
    expect(zeroDecision({ ...base, heldRequests: 1, nowMs: t0 + 900_000 })).toMatchObject({ floor: 1, idle: false, lastRequestMs: t0 + 900_000, reason: '1 requests held by the gateway need 1 replicas' });
    expect(zeroDecision({ ...base, heldRequests: 9 }).floor).toBe(3);
    expect(zeroDecision({ ...base, heldRequests: 100 }).floor).toBe(4);
    expect(zeroDecision({ ...base, minReplicas: 2, heldRequests: 1 }).floor).toBe(2);
  });

  it('minReplicas above zero never scales to zero', () => {
    expect(zeroDecision({ ...base, minReplicas: 2, nowMs: t0 + 10 ** 9 })).toEqual({ floor: 2, idle: false, lastRequestMs: t0 });
  });
});

describe('requestsSeen', () => {
  const metrics = (m: Partial<PodMetrics>): PodMetrics => ({ generationTokens: 0, requests: 0, ttftBuckets: [], waiting: 0, running: 0, ...m });
  const round = (...pods: ScrapeRound['pods']): ScrapeRound => ({ timeMs: t0, pods });

  it('sees requests running or waiting, finished since the last round, or on a new pod; not on an idle pod', () => {
    const idle = round({ name: 'a', metrics: metrics({ requests: 5 }) });
    expect(requestsSeen(idle, idle)).toBe(false);
    expect(requestsSeen(idle, round({ name: 'a', metrics: metrics({ requests: 6 }) }))).toBe(true);
    expect(requestsSeen(idle, round({ name: 'a', metrics: metrics({ requests: 5, running: 1 }) }))).toBe(true);
    expect(requestsSeen(idle, round({ name: 'a', metrics: metrics({ requests: 5, waiting: 2 }) }))).toBe(true);
    expect(requestsSeen(idle, round({ name: 'b', metrics: metrics({ requests: 1 }) }))).toBe(true);
    expect(requestsSeen(undefined, round({ name: 'b', metrics: metrics({}) }))).toBe(false);
    expect(requestsSeen(undefined, round())).toBe(false);
  });

  it('a pod whose metrics could not be read counts as busy', () => {
    expect(requestsSeen(undefined, round({ name: 'a' }))).toBe(true);
  });
});
