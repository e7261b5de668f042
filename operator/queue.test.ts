// Work queue semantics the controller relies on: one worker per key, re-run after a change during
// processing, de-duplication, and per-key backoff.
import { describe, expect, it } from 'vitest';

import { WorkQueue } from './queue.js';

describe('WorkQueue', () => {
  it('hands a key to one worker at a time and runs it again if it changed meanwhile', async () => {
    const q = new WorkQueue();
    q.add('ns/a');
    q.add('ns/a');
    const first = await q.get();
    expect(first).toBe('ns/a');
    q.add('ns/a'); // changed while processing
    expect(q.depth).toBe(0);
    const second = q.get();
    q.done('ns/a');
    expect(await second).toBe('ns/a');
    q.done('ns/a');
    expect(q.depth).toBe(0);
    q.shutDown();
    expect(await q.get()).toBeNull();
  });

  it('backs off a failing key exponentially and forgets it on success', async () => {
    const q = new WorkQueue(20, 1000);
    const times: number[] = [];
    const t0 = Date.now();
    q.add('k');
    for (let i = 0; i < 4; i++) {
      const k = await q.get();
      times.push(Date.now() - t0);
      q.addRateLimited(k!);
      q.done(k!);
    }
    q.shutDown();
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(gaps[0]).toBeGreaterThanOrEqual(18);
    expect(gaps[2]).toBeGreaterThanOrEqual(75);
    expect(gaps[2]).toBeGreaterThan(gaps[0]);
  });
});
