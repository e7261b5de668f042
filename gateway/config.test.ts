import { describe, expect, it } from 'vitest';

import { parseFlags } from '../common/flags.js';
import { gatewayConfig, GATEWAY_COMMAND } from './config.js';

const parse = (...argv: string[]) => gatewayConfig(parseFlags(GATEWAY_COMMAND, argv, {}), { HOSTNAME: 'host-1' });

describe('npuserve gateway flags', () => {
  it('defaults: all namespaces, load factor 1.25, 100 prefix characters, a 300 s hold, 8 MiB bodies', () => {
    const c = parse();
    expect(c).toMatchObject({ namespaces: [], port: 8000, loadFactor: 1.25, prefixChars: 100, holdTimeoutSeconds: 300, retryAfterSeconds: 30, bodyLimitBytes: 8 * 2 ** 20 });
    expect(c.identity).toMatch(/^host-1-\d+$/);
    expect(parse('--namespaces', 'a, b', '--identity', 'gw-0').namespaces).toEqual(['a', 'b']);
  });

  it('refuses a load factor below 1, which no set of replicas could satisfy', () => {
    expect(() => parse('--load-factor', '0.9')).toThrow('--load-factor must be at least 1 (1: perfectly even loads), got 0.9');
    expect(() => parse('--hold-timeout-seconds', '0')).toThrow("--hold-timeout-seconds must be an integer >= 1, got '0'");
  });
});
