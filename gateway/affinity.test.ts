import { describe, expect, it } from 'vitest';

import { freshSeed, rng } from '../test/unit/random.js';
import { AffinityMemory, prefixChain } from './affinity.js';

const chatBody = (...contents: string[]) => ({ model: 'm', messages: contents.map((content, i) => ({ role: i === 0 ? 'system' : i % 2 ? 'user' : 'assistant', content })) });

function randomText(next: () => number, n: number): string {
  return Array.from({ length: n }, () => 'abcdefghij klmnop'[Math.floor(next() * 17)]).join('');
}

describe('prefixChain', () => {
  it('hashes every prefix of two messages and more; a conversation\'s next turn extends its last turn\'s chain', () => {
    const next = rng(freshSeed('affinity chain'));
    const [sys, u1, a1, u2] = Array.from({ length: 4 }, () => randomText(next, 50 + Math.floor(next() * 200)));
    const turn1 = prefixChain('ns/m', chatBody(sys!, u1!));
    const turn2 = prefixChain('ns/m', chatBody(sys!, u1!, a1!, u2!));
    expect(turn1).toHaveLength(1);
    expect(turn2).toHaveLength(3);
    expect(turn2[0]).toBe(turn1[0]);
    expect(new Set(turn2).size).toBe(3);
    // Another model, another role, another earlier message: no shared entry.
    expect(prefixChain('ns/other', chatBody(sys!, u1!))[0]).not.toBe(turn1[0]);
    expect(prefixChain('ns/m', { messages: [{ role: 'user', content: sys }, { role: 'user', content: u1 }] })[0]).not.toBe(turn1[0]);
    const edited = prefixChain('ns/m', chatBody(`${sys} `, u1!, a1!, u2!));
    expect(edited.filter((h) => turn2.includes(h))).toEqual([]);
    // Text parts count as the text they carry.
    expect(prefixChain('ns/m', { messages: [{ role: 'system', content: sys }, { role: 'user', content: [{ type: 'text', text: u1 }] }] })).toEqual(turn1);
    expect(prefixChain('ns/m', chatBody(sys!))).toEqual([]);
    expect(prefixChain('ns/m', null)).toEqual([]);
    expect(prefixChain('ns/m', { messages: 'not a list' })).toEqual([]);
  });

  it('cuts a completions prompt into pieces (256 characters, 64 token ids), so a longer prompt extends a shorter one\'s chain', () => {
    const next = rng(freshSeed('affinity prompt'));
    const text = randomText(next, 1000);
    const short = prefixChain('m', { prompt: text.slice(0, 600) });
    const long = prefixChain('m', { prompt: text });
    expect(short).toHaveLength(2); // pieces of 256, 256, 88: prefixes of 2 and 3 pieces
    expect(long).toHaveLength(3);
    expect(long[0]).toBe(short[0]);
    expect(long[1]).not.toBe(short[1]); // the third piece differs (88 vs 256 characters)
    expect(prefixChain('m', { prompt: [text, 'other'] })).toEqual(long);
    const ids = Array.from({ length: 200 }, () => Math.floor(next() * 50000));
    expect(prefixChain('m', { prompt: ids })).toHaveLength(3);
    expect(prefixChain('m', { prompt: [ids] })).toEqual(prefixChain('m', { prompt: ids }));
    expect(prefixChain('m', { prompt: ids.slice(0, 130) })[0]).toBe(prefixChain('m', { prompt: ids })[0]);
  });
});

describe('AffinityMemory', () => {
  it('names the replicas that took a prefix, longest prefix first, each once', () => {
    const m = new AffinityMemory();
    m.remember(['h1', 'h2'], 'a');
    m.remember(['h1', 'h2', 'h3', 'h4'], 'b');
    expect(m.candidates(['h1', 'h2', 'h3', 'h4', 'h5'])).toEqual(['b']);
    m.remember(['h1'], 'c');
    expect(m.candidates(['h1', 'h2', 'h3'])).toEqual(['b', 'c']);
    expect(m.candidates(['x', 'y'])).toEqual([]);
  });

  it('forgets the least recently used prefixes beyond its capacity', () => {
    const m = new AffinityMemory(3);
    m.remember(['h1', 'h2'], 'a');
    m.remember(['h3'], 'b');
    m.remember(['h1'], 'a'); // h1 used again: h2 is now the oldest
    m.remember(['h4'], 'c');
    expect(m.size).toBe(3);
    expect(m.candidates(['h2'])).toEqual([]);
    expect(m.candidates(['h1', 'h3', 'h4'])).toEqual(['c', 'b', 'a']);
  });
});
