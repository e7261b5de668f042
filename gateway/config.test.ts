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

  it('--backend: fixed servers per model, repeated for several replicas, IPv6 in brackets', () => {
    const c = parse('--backend', 'tiny=127.0.0.1:8001', '--backend', 'tiny=[::1]:8002', '--backend', 'org/big=server-3.lan:80');
    expect(c.backends).toEqual([
      { model: 'tiny', replica: '127.0.0.1:8001' },
      { model: 'tiny', replica: '[::1]:8002' },
      { model: 'org/big', replica: 'server-3.lan:80' },
    ]);
    expect(parse().backends).toEqual([]);
  });

  it('refuses a --backend without a model, a port 1-65535 or brackets around IPv6, and --backend with the cluster flags', () => {
    const address = "expected HOST:PORT after the '=', with a port 1-65535 and an IPv6 address in brackets ([::1]:8000)";
    expect(() => parse('--backend', '127.0.0.1:8001')).toThrow("--backend must be MODEL=HOST:PORT, got '127.0.0.1:8001'");
    expect(() => parse('--backend', '=127.0.0.1:8001')).toThrow("--backend must be MODEL=HOST:PORT, got '=127.0.0.1:8001'");
    expect(() => parse('--backend', 'tiny=127.0.0.1')).toThrow(`--backend 'tiny=127.0.0.1': ${address}`);
    expect(() => parse('--backend', 'tiny=127.0.0.1:0')).toThrow(`--backend 'tiny=127.0.0.1:0': ${address}`);
    expect(() => parse('--backend', 'tiny=127.0.0.1:65536')).toThrow(`--backend 'tiny=127.0.0.1:65536': ${address}`);
    expect(() => parse('--backend', 'tiny=::1:8000')).toThrow(`--backend 'tiny=::1:8000': ${address}`);
    expect(() => parse('--backend', 'tiny=[not-v6]:8000')).toThrow(`--backend 'tiny=[not-v6]:8000': ${address}`);
    expect(() => parse('--backend', 'tiny=127.0.0.1:8001', '--backend', 'tiny=127.0.0.1:8001')).toThrow('--backend tiny=127.0.0.1:8001 is given twice');
    expect(() => parse('--backend', 'tiny=127.0.0.1:8001', '--kubeconfig', '/k', '--namespaces', 'a')).toThrow('--backend serves fixed servers without Kubernetes; it cannot be combined with --kubeconfig, --namespaces (or $NPUSERVE_NAMESPACES)');
    expect(() => parse('--backend', 'tiny=127.0.0.1:8001', '--context', 'kind')).toThrow(/^--backend serves fixed servers without Kubernetes; it cannot be combined with --context$/);
  });
});
