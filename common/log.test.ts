// The logger: levels below the threshold dropped, JSON lines with time, level, message and fields,
// text lines that stay one line whatever a field holds.
import { describe, expect, it } from 'vitest';

import { createLogger, type LoggerOptions } from './log.js';

function capture(o: Omit<LoggerOptions, 'write'>) {
  const lines: string[] = [];
  return { log: createLogger({ ...o, write: (l) => lines.push(l) }), lines };
}

describe('logger', () => {
  it('writes a JSON object per line with level, message, base and own fields, dropping levels below the threshold', () => {
    const { log, lines } = capture({ format: 'json', level: 'warn', base: { component: 'operator' } });
    log('started');
    log.debug('detail');
    log.info('info');
    log.warn('lease update failed', { error: 'conflict' });
    log.child({ model: 'ns/a' }).error('reconcile failed', { attempt: 3 });
    expect(lines).toHaveLength(2);
    expect(lines.every((l) => l.endsWith('}\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    const [warn, error] = lines.map((l) => JSON.parse(l));
    expect(warn).toEqual({ time: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), level: 'warn', msg: 'lease update failed', component: 'operator', error: 'conflict' });
    expect(error).toMatchObject({ level: 'error', msg: 'reconcile failed', component: 'operator', model: 'ns/a', attempt: 3 });
  });

  it('writes text lines with key=value fields, quoting values with spaces or newlines', () => {
    const { log, lines } = capture({ format: 'text', level: 'debug' });
    log.debug('request', { method: 'GET', path: '/v1/models', status: 200, absent: undefined });
    log.error('internal error', { error: 'Error: boom\n    at f (x.js:1:1)' });
    expect(lines[0]).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z DEBUG request method=GET path=\/v1\/models status=200\n$/);
    expect(lines[1]).toMatch(/ ERROR internal error error="Error: boom\\n    at f \(x\.js:1:1\)"\n$/);
  });
});
