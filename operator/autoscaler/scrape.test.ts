// The Prometheus text parser on hand-written edge cases (test/unit/metrics-contract.test.ts reads the serving pod's own output).
import { describe, expect, it } from 'vitest';

import { parsePrometheusText, podMetrics } from './scrape.js';

describe('Prometheus text parser', () => {
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
