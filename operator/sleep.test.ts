// The operator's loops sleep on one stop signal for as long as it runs: each sleep must leave no
// listener behind.
import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';

import { sleep } from './sleep.js';

describe('sleep', () => {
  it('leaves no abort listener behind after 150 turns, and ends at once on abort', async () => {
    const stop = new AbortController();
    for (let i = 0; i < 150; i++) await sleep(1, stop.signal);
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
    const t0 = Date.now();
    const long = sleep(60_000, stop.signal);
    stop.abort();
    await long;
    expect(Date.now() - t0).toBeLessThan(1000);
  });
});
