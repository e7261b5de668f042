import { describe, expect, it } from 'vitest';

import { runClosedLoop, type BenchTarget, type RequestSpec, type RequestTiming } from './workload.js';

/** A target that takes `ms` per request and records how many requests it held at once. */
function slowTarget(ms: (spec: RequestSpec) => number) {
  let inFlight = 0;
  const seen = { maxInFlight: 0, order: [] as number[] };
  const target: BenchTarget = {
    label: 'fake',
    async run(spec): Promise<RequestTiming> {
      inFlight++;
      seen.maxInFlight = Math.max(seen.maxInFlight, inFlight);
      const startMs = performance.now();
      await new Promise((resolve) => setTimeout(resolve, ms(spec)));
      inFlight--;
      seen.order.push(spec.seed);
      const endMs = performance.now();
      return { promptTokens: spec.prompt.length, outputTokens: spec.maxTokens, startMs, firstTokenMs: endMs, endMs, tokenGapsMs: [] };
    },
  };
  return { target, seen };
}

describe('runClosedLoop', () => {
  it('keeps exactly `concurrency` requests in flight until every spec ran once', async () => {
    const specs = Array.from({ length: 11 }, (_, i) => ({ prompt: [1, 2, 3], maxTokens: 4 + i, seed: i }));
    // Uneven durations: a client that finishes early takes the next spec at once.
    const { target, seen } = slowTarget((s) => 5 + ((s.seed * 7) % 5) * 4);
    const summary = await runClosedLoop(target, specs, 3);
    expect(seen.maxInFlight).toBe(3);
    expect([...seen.order].sort((a, b) => a - b)).toEqual(specs.map((s) => s.seed));
    expect(summary.requests).toBe(11);
    expect(summary.outputTokens).toBe(specs.reduce((n, s) => n + s.maxTokens, 0));
  });
});
