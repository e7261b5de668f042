// The simulator's cost model on requests small enough to compute by hand: prefill and decode cost,
// the bounded batch, the KV cache that makes requests wait, a cold start held by the gateway; and the
// bench's traces replayed twice give the same figures.
import { describe, expect, it } from 'vitest';

import { decide, type AutoscalingTargets, type PolicyInput } from './policy.js';
import { simulate, summary, type PodModel, type Policy, type Request } from './simulator.js';
import { buildTrace, runTrace, trace, TRACE_SPECS } from './traces.js';

const targets: AutoscalingTargets = { minReplicas: 1, maxReplicas: 4, targetTokensPerSecondPerReplica: 400, ttftP95TargetMs: 800, scaleDownStabilizationSeconds: 60, maxBatchSize: 16 };
const pod: PodModel = { tokenMs: 2, minStepMs: 10, prefillChunkTokens: 256, kvCacheTokens: 100_000, startupSeconds: 10 };

/** A policy that holds replicas and records every input it was given. */
function recorder(): { policy: Policy; inputs: PolicyInput[] } {
  const inputs: PolicyInput[] = [];
  return { inputs, policy: (i) => (inputs.push(i), { desiredReplicas: i.currentReplicas, history: i.history }) };
}

const at = (second: number, requests: Request[]) => (s: number) => (s === second ? requests : []);

describe('simulator cost model', () => {
  it('a 512-token prompt costs 2 chunks of 256 x 2 ms before its first token, its 63 further tokens 63 steps of at least 10 ms', () => {
    const seconds = simulate({ requests: at(0, [{ arrivalMs: 0, promptTokens: 512, outputTokens: 64 }]), durationSeconds: 3, initialReplicas: 1, targets, pod, policy: recorder().policy, scrapeIntervalSeconds: 1 });
    // Prefill: 2 x 256 x 2 ms = 1024 ms (8x the 64 x 2 ms its answer costs in a batch); the step ending
    // at 1024 ms started in second 0, which counts its first token.
    expect(seconds[0]!.ttftSeconds).toBeCloseTo(1.024, 6);
    // 63 further tokens, the last at 1024 + 63 x 10 = 1654 ms.
    expect(seconds.map((s) => s.servedTokensPerSecond)).toEqual([1, 63, 0]);
    expect(seconds[1]!.ttftSeconds).toBe(0);
    expect(seconds[0]!.demandPodSeconds).toBeCloseTo((512 + 64) * 0.002, 9);
  });

  it('a full batch of 16 decodes 16 tokens per step of max(10 ms, 16 x 2 ms): 500 tokens/s', () => {
    const requests = Array.from({ length: 16 }, () => ({ arrivalMs: 0, promptTokens: 1, outputTokens: 1000 }));
    const seconds = simulate({ requests: at(0, requests), durationSeconds: 4, initialReplicas: 1, targets, pod, policy: recorder().policy, scrapeIntervalSeconds: 1 });
    // Each request holds 1001 tokens of KV cache (16 fit in 100 000); one step prefills the 16 one-token
    // prompts, then steps of 32 ms decode 16 tokens each: 31 or 32 steps start in a second.
    expect(seconds[2]!.servedTokensPerSecond).toBeGreaterThanOrEqual(496);
    expect(seconds[2]!.servedTokensPerSecond).toBeLessThanOrEqual(512);
  });

  it('the batch is bounded by maxBatchSize: the 17th and 18th requests wait', () => {
    const requests = Array.from({ length: 18 }, () => ({ arrivalMs: 0, promptTokens: 1, outputTokens: 1000 }));
    const r = recorder();
    simulate({ requests: at(0, requests), durationSeconds: 2, initialReplicas: 1, targets, pod, policy: r.policy, scrapeIntervalSeconds: 1 });
    expect(r.inputs[1]!.rounds.at(-1)!.pods[0]!.metrics).toMatchObject({ running: 16, waiting: 2 });
  });

  it('a full KV cache makes requests wait though batch slots are free, until a finished request frees its tokens', () => {
    // 1000 tokens of KV cache, each request holds 100 + 400: two fit.
    const requests = Array.from({ length: 3 }, () => ({ arrivalMs: 0, promptTokens: 100, outputTokens: 400 }));
    const r = recorder();
    const seconds = simulate({ requests: at(0, requests), durationSeconds: 8, initialReplicas: 1, targets, pod: { ...pod, kvCacheTokens: 1000 }, policy: r.policy, scrapeIntervalSeconds: 1 });
    expect(r.inputs[1]!.rounds.at(-1)!.pods[0]!.metrics).toMatchObject({ running: 2, waiting: 1 });
    // Prefill of both: 200 tokens x 2 ms = 400 ms; 399 decode steps of 10 ms: done at 4390 ms; then the third.
    expect(r.inputs[4]!.rounds.at(-1)!.pods[0]!.metrics).toMatchObject({ running: 2, waiting: 1 });
    expect(r.inputs[5]!.rounds.at(-1)!.pods[0]!.metrics).toMatchObject({ running: 1, waiting: 0 });
    // The third request's first token: 4390 ms + 100 x 2 ms.
    expect(seconds[4]!.ttftSeconds).toBeCloseTo(4.59, 6);
  });

  it('from zero replicas, requests are held until a pod is ready; their TTFT counts the start-up', () => {
    const r = recorder();
    const seconds = simulate({
      requests: at(2, [{ arrivalMs: 2000, promptTokens: 10, outputTokens: 5 }]),
      durationSeconds: 20,
      initialReplicas: 0,
      targets: { ...targets, minReplicas: 0 },
      pod,
      policy: (i) => r.policy(i),
      scrapeIntervalSeconds: 1,
    });
    // Held at second 2, seen by the scrape at second 3 (one replica), ready at 13; first token 20 ms later.
    expect(seconds.find((s) => s.replicas > 0)!.second).toBe(3);
    expect(seconds[13]!.ttftSeconds).toBeCloseTo(11.02, 6);
  });
});

describe('bench traces', () => {
  it('each trace is the same list of requests every time it is built, and replays to the same figures', () => {
    for (const spec of TRACE_SPECS) {
      const [a, b] = [buildTrace(spec), buildTrace(spec)];
      expect(a.requests).toEqual(b.requests);
      expect(a.requests.flat().length).toBeGreaterThan(100);
    }
    const t = trace('bursts');
    const once = summary(runTrace(t, decide), 0.8);
    expect(summary(runTrace(t, decide), 0.8)).toEqual(once);
  });
});
