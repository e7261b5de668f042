import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

import { HELD_DEMAND_PREFIX, heldDemandKey, heldRequests } from '../common/demand.js';
import { Holds } from './hold.js';

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe('Holds', () => {
  it('releases every request held for a model when it gets a replica, and reports the count as it changes', async () => {
    const changes: Array<[string, number]> = [];
    const holds = new Holds((m, n) => changes.push([m, n]));
    const never = new AbortController().signal;
    const a = holds.hold('ns/a', 10_000, never);
    const b = holds.hold('ns/a', 10_000, never);
    const other = holds.hold('ns/b', 10_000, never);
    expect(holds.counts()).toEqual(new Map([['ns/a', 2], ['ns/b', 1]]));
    holds.release('ns/a');
    expect(await a).toBe('ready');
    expect(await b).toBe('ready');
    expect(holds.count('ns/a')).toBe(0);
    expect(holds.count('ns/b')).toBe(1);
    expect(changes).toEqual([['ns/a', 1], ['ns/a', 2], ['ns/b', 1], ['ns/a', 1], ['ns/a', 0]]);
    holds.release('ns/b');
    expect(await other).toBe('ready');
  });

  it('a request held past its deadline times out; one whose client leaves is aborted; neither counts afterwards', async () => {
    const holds = new Holds();
    const client = new AbortController();
    const late = holds.hold('m', 5000, new AbortController().signal);
    const gone = holds.hold('m', 60_000, client.signal);
    vi.advanceTimersByTime(4999);
    expect(holds.count('m')).toBe(2);
    client.abort();
    expect(await gone).toBe('aborted');
    vi.advanceTimersByTime(1);
    expect(await late).toBe('timeout');
    expect(holds.count('m')).toBe(0);
    holds.release('m'); // nothing left to release
    expect(await holds.hold('m', 1000, client.signal)).toBe('aborted');
  });
});

describe('held demand annotations (common/demand.ts)', () => {
  const now = Date.parse('2026-12-03T12:00:00Z');
  const entry = (requests: number, agoSeconds: number) => JSON.stringify({ requests, time: new Date(now - agoSeconds * 1000).toISOString() });

  it('sums the fresh entries of every gateway; stale, malformed and foreign ones are no demand', () => {
    expect(heldRequests({
      [`${HELD_DEMAND_PREFIX}gw-1`]: entry(3, 5),
      [`${HELD_DEMAND_PREFIX}gw-2`]: entry(2, 29),
      [`${HELD_DEMAND_PREFIX}gw-dead`]: entry(9, 31),
      [`${HELD_DEMAND_PREFIX}gw-bad`]: 'three',
      [`${HELD_DEMAND_PREFIX}gw-neg`]: entry(-1, 1),
      'example.com/other': entry(5, 1),
    }, now)).toBe(5);
    expect(heldRequests(undefined, now)).toBe(0);
  });

  it("a gateway's key is a valid annotation key: its pod name, cut with a hash beyond 63 characters", () => {
    expect(heldDemandKey('npuserve-gateway-7d9f-abcde', () => 'x')).toBe(`${HELD_DEMAND_PREFIX}npuserve-gateway-7d9f-abcde`);
    const long = heldDemandKey('g'.repeat(80), () => '0123456789abcdef');
    expect(long.slice(HELD_DEMAND_PREFIX.length)).toHaveLength(63);
    expect(long.endsWith('-01234567')).toBe(true);
  });
});
