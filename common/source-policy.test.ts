// The address policy of model sources: every non-public range is named, public addresses (also as
// IPv4-mapped IPv6) pass, and sizes parse with binary suffixes only.
import { describe, expect, it } from 'vitest';

import { blockedAddress, parseByteSize } from './source-policy.js';

describe('source address policy', () => {
  it.each([
    ['127.0.0.1', 'a loopback address'],
    ['127.255.0.9', 'a loopback address'],
    ['::1', 'a loopback address'],
    ['::ffff:127.0.0.1', 'a loopback address'],
    ['169.254.169.254', 'a link-local address (cloud metadata lives there)'],
    ['fe80::1', 'a link-local address (cloud metadata lives there)'],
    ['10.1.2.3', 'a private address'],
    ['172.31.255.255', 'a private address'],
    ['192.168.1.1', 'a private address'],
    ['fd12:3456::1', 'a private address'],
    ['100.100.100.200', 'a shared (carrier-grade NAT) address'],
    ['0.0.0.0', 'an unspecified or IPv4-compatible address'],
    ['::', 'an unspecified or IPv4-compatible address'],
    ['224.0.0.251', 'a multicast or reserved address'],
    ['255.255.255.255', 'a multicast or reserved address'],
    ['ff02::1', 'a multicast or reserved address'],
  ])('refuses %s as %s', (address, what) => {
    expect(blockedAddress(address)).toBe(what);
  });

  it.each(['8.8.8.8', '172.32.0.1', '100.128.0.1', '::ffff:8.8.8.8', '2606:4700:4700::1111', 'huggingface.co'])('lets %s through', (address) => {
    expect(blockedAddress(address)).toBeNull();
  });

  it('parses sizes in bytes or with Ki, Mi, Gi, Ti', () => {
    expect(parseByteSize('64Gi')).toBe(64 * 2 ** 30);
    expect(parseByteSize('1048576')).toBe(2 ** 20);
    for (const bad of ['0', '-1', '1.5Gi', '64GB', '', 'Gi']) expect(parseByteSize(bad)).toBeNull();
  });
});
