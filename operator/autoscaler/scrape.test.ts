// The Prometheus text parser against the serving pod's own /metrics output and hand-written edge cases.
import { describe, expect, it } from 'vitest';

import { ServerMetrics } from '../../runtime/metrics.js';
import { parsePrometheusText, podMetrics } from './scrape.js';

describe('Prometheus text parser', () => {
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

  it('handles escaped label values, timestamps, +Inf and lines without labels', () => {
    const samples = parsePrometheusText([
      '# HELP x a help line with {braces}',
      'a_total{path="C:\\\\dir",msg="say \\"hi\\"\\n"} 3 1700000000000',
      'b 2.5',
      'c_bucket{le="+Inf"} 7',
    ].join('\n'));
    expect(samples).toEqual([
      { name: 'a_total', labels: { path: 'C:\\dir', msg: 'say "hi"\n' }, value: 3 },
      { name: 'b', labels: {}, value: 2.5 },
      { name: 'c_bucket', labels: { le: '+Inf' }, value: 7 },
    ]);
  });

  it('rejects malformed lines and non-npuserve targets with a message naming the problem', () => {
    expect(() => parsePrometheusText('a{b="c} 1')).toThrow(/unterminated label value of 'b'/);
    expect(() => parsePrometheusText('a{b="c"} x')).toThrow(/value 'x' is not a number/);
    expect(() => podMetrics(parsePrometheusText('process_cpu_seconds_total 1'))).toThrow(/no npuserve_generation_tokens_total/);
  });
});
