// Stop strings over streamed tokens: the stop text never shows, even split across tokens, and text
// that only looked like the start of a stop string is released.
import { describe, expect, it } from 'vitest';

import { mistralV3Tokenizer } from '../tokenizer/mistral-v3.js';
import { StopTextAssembler } from './text.js';

const tok = mistralV3Tokenizer();

function stream(text: string, stop: string[]): { shown: string[]; stopped: boolean } {
  const a = new StopTextAssembler(tok, stop);
  const shown: string[] = [];
  for (const id of tok.encode(text, { addSpecial: false })) {
    const step = a.push(id);
    if (step.delta) shown.push(step.delta);
    if (step.stopped) return { shown, stopped: true };
  }
  const end = a.finish();
  if (end.delta) shown.push(end.delta);
  return { shown, stopped: end.stopped };
}

describe('StopTextAssembler', () => {
  it('ends before a stop string that spans several tokens and never streams any part of it', () => {
    const r = stream('The answer is 42. END OF ANSWER and more', [' END OF']);
    expect(r.stopped).toBe(true);
    expect(r.shown.join('')).toBe('The answer is 42.');
    expect(r.shown.some((d) => d.includes('END'))).toBe(false);
  });

  it('releases held-back text that turned out not to be a stop string', () => {
    const r = stream('one two three', ['two four']);
    expect(r).toEqual({ shown: expect.any(Array), stopped: false });
    expect(r.shown.join('')).toBe('one two three');
  });

  it('picks the earliest of several stop strings and keeps multi-byte characters whole', () => {
    const r = stream('héllo wörld — fin', ['fin', 'wör']);
    expect(r.stopped).toBe(true);
    expect(r.shown.join('')).toBe('héllo ');
  });
});
