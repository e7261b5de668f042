import { describe, expect, it } from 'vitest';

import { freshSeed, rng } from '../test/unit/random.js';
import { prefixKey } from './prefix.js';
import { HashRing, loadBound, route, type ReplicaLoad } from './ring.js';

function randomKeys(next: () => number, n: number): string[] {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz ,.';
  return Array.from({ length: n }, () => Array.from({ length: 20 + Math.floor(next() * 80) }, () => alphabet[Math.floor(next() * alphabet.length)]).join(''));
}

const idle = (replicas: string[]): Map<string, ReplicaLoad> => new Map(replicas.map((r) => [r, { inFlight: 0, waiting: 0, kvUsage: 0, batchSize: 0 }]));
const pods = (n: number) => Array.from({ length: n }, (_, i) => `10.0.${i >> 8}.${i & 255}:8000`);

describe('HashRing', () => {
  it('spreads fresh random keys evenly over the replicas', () => {
    const next = rng(freshSeed('ring distribution'));
    const replicas = pods(5);
    const ring = new HashRing(replicas);
    const counts = new Map<string, number>();
    const keys = randomKeys(next, 20_000);
    for (const k of keys) counts.set(ring.walk(k)[0]!, (counts.get(ring.walk(k)[0]!) ?? 0) + 1);
    expect(counts.size).toBe(5);
    // 160 virtual nodes each: every replica owns its fifth of the ring within about a quarter.
    for (const c of counts.values()) expect(Math.abs(c / keys.length - 0.2)).toBeLessThan(0.05);
  });

  it('moves only the keys of a replica that joins or leaves (about 1/n)', () => {
    const next = rng(freshSeed('ring stability'));
    const replicas = pods(8);
    const before = new HashRing(replicas);
    const joined = new HashRing([...replicas, '10.0.9.9:8000']);
    const left = new HashRing(replicas.filter((r) => r !== replicas[3]));
    const keys = randomKeys(next, 10_000);
    let movedOnJoin = 0;
    let movedOnLeave = 0;
    for (const k of keys) {
      const owner = before.walk(k)[0]!;
      const afterJoin = joined.walk(k)[0]!;
      if (afterJoin !== owner) {
        movedOnJoin++;
        expect(afterJoin).toBe('10.0.9.9:8000'); // keys move only to the newcomer
      }
      const afterLeave = left.walk(k)[0]!;
      if (afterLeave !== owner) {
        movedOnLeave++;
        expect(owner).toBe(replicas[3]); // only the leaver's keys move
      }
    }
    expect(movedOnJoin / keys.length).toBeGreaterThan(0.06);
    expect(movedOnJoin / keys.length).toBeLessThan(0.17); // 1/9 = 0.11
    expect(movedOnLeave / keys.length).toBeGreaterThan(0.07);
    expect(movedOnLeave / keys.length).toBeLessThan(0.19); // 1/8 = 0.125
  });

  it('is the same ring whatever order the replicas are listed in', () => {
    const a = new HashRing(['a', 'b', 'c']);
    const b = new HashRing(['c', 'a', 'b']);
    for (const k of ['x', 'hello', 'system\nYou are']) expect(a.walk(k)).toEqual(b.walk(k));
    expect(new HashRing([]).walk('x')).toEqual([]);
  });
});

describe('route: consistent hashing with bounded loads', () => {
  it('sends a key to its owner while the owner is under ceil(1.25 x average)', () => {
    const ring = new HashRing(pods(3));
    const loads = idle(pods(3));
    const owner = ring.walk('key')[0]!;
    expect(route(ring, 'key', loads)).toEqual({ replica: owner, decision: 'preferred' });
    loads.get(owner)!.inFlight = 1; // bound with 1 in flight: ceil(1.25 x 2 / 3) = 1
    const r = route(ring, 'key', loads)!;
    expect(r.decision).toBe('fallback');
    expect(r.replica).not.toBe(owner);
  });

  it('never lets a replica exceed the bound, all requests on one hot key (random arrivals and completions)', () => {
    const next = rng(freshSeed('bounded loads'));
    const replicas = pods(4);
    const ring = new HashRing(replicas);
    const loads = idle(replicas);
    let preferred = 0;
    for (let step = 0; step < 5000; step++) {
      const total = [...loads.values()].reduce((s, l) => s + l.inFlight, 0);
      if (total > 0 && next() < 0.45) {
        const busy = replicas.filter((r) => loads.get(r)!.inFlight > 0);
        loads.get(busy[Math.floor(next() * busy.length)]!)!.inFlight--;
        continue;
      }
      const r = route(ring, 'the same system prompt', loads, 1.25)!;
      const bound = loadBound(total, replicas.length, 1.25);
      expect(loads.get(r.replica)!.inFlight + 1).toBeLessThanOrEqual(bound);
      loads.get(r.replica)!.inFlight++;
      if (r.decision === 'preferred') preferred++;
    }
    // The hot key's owner takes its bounded share; the rest spills to the others.
    expect(preferred).toBeGreaterThan(0);
    for (const l of loads.values()) expect(l.inFlight).toBeGreaterThanOrEqual(0);
  });

  it('falls back along the ring: the next replica under the bound with an empty queue, the same one for every request of the key', () => {
    const replicas = ['a', 'b', 'c', 'd'];
    const ring = new HashRing(replicas);
    const [owner, second, third, fourth] = ring.walk('k') as [string, string, string, string];
    const loads = idle(replicas);
    loads.get(owner)!.inFlight = 2; // bound with 2 in flight: ceil(1.25 x 3 / 4) = 1
    expect(route(ring, 'k', loads)).toEqual({ replica: second, decision: 'fallback' });
    expect(route(ring, 'k', loads)).toEqual({ replica: second, decision: 'fallback' });
    loads.get(second)!.waiting = 3; // busy with other clients' requests: skipped
    expect(route(ring, 'k', loads)).toEqual({ replica: third, decision: 'fallback' });
    // Every replica under the bound has a queue: the least loaded (queue, then KV usage).
    loads.get(third)!.waiting = 2;
    loads.get(fourth)!.waiting = 2;
    loads.get(third)!.kvUsage = 0.9;
    expect(route(ring, 'k', loads)).toEqual({ replica: fourth, decision: 'fallback' });
    loads.get(fourth)!.waiting = 5;
    expect(route(ring, 'k', loads)).toEqual({ replica: third, decision: 'fallback' });
  });

  it('sends a request to the first remembered replica under the bound (affinity), else as the ring would', () => {
    const replicas = ['a', 'b', 'c', 'd'];
    const ring = new HashRing(replicas);
    const [owner, second, third] = ring.walk('k') as [string, string, string];
    const loads = idle(replicas);
    expect(route(ring, 'k', loads, 1.25, [third, second])).toEqual({ replica: third, decision: 'affinity' });
    loads.get(third)!.inFlight = 2; // bound with 2 in flight: ceil(1.25 x 3 / 4) = 1
    expect(route(ring, 'k', loads, 1.25, [third, second])).toEqual({ replica: second, decision: 'affinity' });
    loads.get(second)!.inFlight = 1; // bound with 3 in flight: ceil(1.25 x 4 / 4) = 2
    expect(route(ring, 'k', loads, 1.25, [third, second])).toEqual({ replica: second, decision: 'affinity' });
    loads.get(second)!.inFlight = 2; // bound with 4: ceil(1.25 x 5 / 4) = 2, both remembered ones full
    expect(route(ring, 'k', loads, 1.25, [third, second])).toEqual({ replica: owner, decision: 'preferred' });
    // A remembered replica that is not ready (no load entry) is skipped.
    expect(route(ring, 'k', idle([owner, second]), 1.25, ['gone', second])).toEqual({ replica: second, decision: 'affinity' });
  });

  it('keeps a conversation on its replica above the bound while that replica has batch room and no queue', () => {
    const replicas = ['a', 'b', 'c', 'd'];
    const ring = new HashRing(replicas);
    const [owner, second] = ring.walk('k') as [string, string];
    const loads = idle(replicas);
    for (const r of replicas) loads.get(r)!.batchSize = 4;
    // 3 in flight, all on `second`: the bound is ceil(1.25 x 4 / 4) = 2, its batch has room for a 4th.
    loads.get(second)!.inFlight = 3;
    expect(route(ring, 'k', loads, 1.25, [second])).toEqual({ replica: second, decision: 'affinity' });
    // A prompt no replica has seen still goes by the bound: not to the busy replica.
    expect(route(ring, 'k', loads, 1.25)).toEqual({ replica: owner, decision: 'preferred' });
    // Its batch is full: the conversation moves.
    loads.get(second)!.inFlight = 4;
    expect(route(ring, 'k', loads, 1.25, [second])).toEqual({ replica: owner, decision: 'preferred' });
    // Batch room, but requests wait there (other clients fill it): the conversation moves too.
    loads.get(second)!.inFlight = 3;
    loads.get(second)!.waiting = 1;
    expect(route(ring, 'k', loads, 1.25, [second])).toEqual({ replica: owner, decision: 'preferred' });
    // Its batch size unknown (not scraped yet): the bound alone.
    loads.get(second)!.waiting = 0;
    loads.get(second)!.batchSize = 0;
    expect(route(ring, 'k', loads, 1.25, [second])).toEqual({ replica: owner, decision: 'preferred' });
  });

  it('never puts more on a replica than max(bound, its batch size), conversations on random replicas (random arrivals and completions)', () => {
    const next = rng(freshSeed('affinity room'));
    const replicas = pods(4);
    const ring = new HashRing(replicas);
    const loads = idle(replicas);
    const batch = [2, 3, 4, 6];
    replicas.forEach((r, i) => (loads.get(r)!.batchSize = batch[i]!));
    let kept = 0;
    for (let step = 0; step < 5000; step++) {
      const total = [...loads.values()].reduce((s, l) => s + l.inFlight, 0);
      if (total > 0 && next() < 0.45) {
        const busy = replicas.filter((r) => loads.get(r)!.inFlight > 0);
        loads.get(busy[Math.floor(next() * busy.length)]!)!.inFlight--;
        continue;
      }
      const remembered = [replicas[Math.floor(next() * replicas.length)]!];
      const r = route(ring, `conversation ${Math.floor(next() * 50)}`, loads, 1.25, remembered)!;
      const l = loads.get(r.replica)!;
      const bound = loadBound(total, replicas.length, 1.25);
      expect(l.inFlight + 1).toBeLessThanOrEqual(r.decision === 'affinity' ? Math.max(bound, l.batchSize) : bound);
      if (r.decision === 'affinity' && l.inFlight + 1 > bound) kept++;
      l.inFlight++;
    }
    // The batch room was used: some conversations stayed above the bound.
    expect(kept).toBeGreaterThan(0);
  });

  it('routes only to replicas that have a load entry (ready ones), and to none when there are none', () => {
    const ring = new HashRing(['a', 'b']);
    expect(route(ring, 'k', idle(['b']))?.replica).toBe('b');
    expect(route(ring, 'k', new Map())).toBeNull();
  });
});

describe('prefixKey', () => {
  it('chat: roles and text contents in order, cut at N characters', () => {
    const body = { model: 'm', messages: [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: [{ type: 'text', text: 'Hi' }, { type: 'text', text: ' there' }] }] };
    expect(prefixKey(body, 1000)).toBe('system\nYou are terse.\nuser\nHi there\n');
    expect(prefixKey(body, 10)).toBe('system\nYou');
  });

  it('completions: the prompt string, the first of a list, token ids; nothing usable gives an empty key', () => {
    expect(prefixKey({ prompt: 'Once upon a time' }, 4)).toBe('Once');
    expect(prefixKey({ prompt: ['first', 'second'] })).toBe('first');
    expect(prefixKey({ prompt: [1, 2, 3] })).toBe('1,2,3');
    expect(prefixKey({ prompt: [[7, 8]] })).toBe('7,8');
    expect(prefixKey(null)).toBe('');
    expect(prefixKey({ model: 'm' })).toBe('');
  });
});
