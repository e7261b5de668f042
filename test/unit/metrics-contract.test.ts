// The contract between the serving pod's /metrics (runtime/metrics.ts) and the autoscaler's scrape
// (operator/autoscaler/scrape.ts): what the server exposes, the operator reads back.
import { describe, expect, it } from 'vitest';

import { parsePrometheusText, podMetrics } from '../../operator/autoscaler/scrape.js';
import { ServerMetrics } from '../../runtime/metrics.js';

describe("the serving pod's metrics as the autoscaler reads them", () => {
  it("reads the serving pod's exposition: tokens, finished requests, queue gauges and TTFT buckets", async () => {
    const m = new ServerMetrics('tiny');
    m.step({ batchSize: 2, promptTokens: 10, generationTokens: 42 });
    m.state({ running: 2, waiting: 3, kvUsageRatio: 0.5 });
    m.firstToken(0.3);
    m.firstToken(1.5);
    m.finished('stop', 2);
    m.finished('length', 2);
    m.finished('abort', 1);
    const got = podMetrics(parsePrometheusText(await m.text()));
    expect(got).toMatchObject({ generationTokens: 42, requests: 3, running: 2, waiting: 3 });
    expect(got.ttftBuckets.find(([le]) => le === 0.25)?.[1]).toBe(0);
    expect(got.ttftBuckets.find(([le]) => le === 0.5)?.[1]).toBe(1);
    expect(got.ttftBuckets.find(([le]) => le === 2.5)?.[1]).toBe(2);
    expect(got.ttftBuckets.at(-1)).toEqual([Infinity, 2]);
  });

});
