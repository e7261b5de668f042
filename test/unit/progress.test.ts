// The demo's waits say what they wait for, how long they have waited while it lasts, and how long it
// took (test/cluster/progress.ts, used by scripts/demo.ts and the local cluster's start).
import { afterEach, describe, expect, it, vi } from 'vitest';
import { waitingFor } from '../cluster/progress.js';

afterEach(() => {
  vi.useRealTimers();
});

describe('waitingFor', () => {
  it('names the wait, prints the elapsed time every interval with the current detail, and the total', async () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    let phase = 'Converting';
    let finish!: (v: string) => void;
    const work = new Promise<string>((resolve) => (finish = resolve));
    const waited = waitingFor('smollm2 to be Ready', work, { log: (l) => lines.push(l), everySeconds: 10, detail: () => `phase ${phase}` });
    await vi.advanceTimersByTimeAsync(10_000);
    phase = 'Deploying';
    await vi.advanceTimersByTimeAsync(10_000);
    await vi.advanceTimersByTimeAsync(3_000);
    finish('ready');
    expect(await waited).toBe('ready');
    expect(lines).toEqual([
      'waiting for smollm2 to be Ready ...',
      '  still waiting for smollm2 to be Ready (10 s; phase Converting)',
      '  still waiting for smollm2 to be Ready (20 s; phase Deploying)',
      '  smollm2 to be Ready: done after 23 s',
    ]);
  });

  it('says when the wait failed, after how long, and passes the error on', async () => {
    vi.useFakeTimers();
    const lines: string[] = [];
    let fail!: (e: Error) => void;
    const work = new Promise<never>((_, reject) => (fail = reject));
    const waited = waitingFor('helm --wait', work, { log: (l) => lines.push(l) });
    const outcome = expect(waited).rejects.toThrow(/timed out waiting for the condition/);
    await vi.advanceTimersByTimeAsync(4_000);
    fail(new Error('timed out waiting for the condition'));
    await outcome;
    expect(lines).toEqual(['waiting for helm --wait ...', '  helm --wait: failed after 4 s']);
  });
});
