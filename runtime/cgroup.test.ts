// The CPU quota and memory limit as read from cgroup v2, v1 and hybrid layouts written into a temp
// dir, with figures drawn fresh each run, and the default thread count that follows the quota.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { cgroupLimits, defaultThreads } from './cgroup.js';

const seed = Date.now() % 100_000;
console.log(`cgroup test seed ${seed}`);
let state = seed;
/** An integer in [lo, hi) from a small LCG, so a failure can be replayed from the printed seed. */
function draw(lo: number, hi: number): number {
  state = (state * 1103515245 + 12345) % 2 ** 31;
  return lo + (state % (hi - lo));
}

function tree(files: Record<string, string>): string {
  const root = mkdtempSync(join(tmpdir(), 'cgroup-'));
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), `${text}\n`);
  }
  return root;
}

describe('cgroup limits', () => {
  it('v2 in a container (its own cgroup namespace): cpu.max and memory.max at the root', () => {
    const period = draw(10_000, 200_000);
    const quota = draw(period / 4, period * 6);
    const memory = draw(64, 64_000) * 2 ** 20 + draw(1, 4096) * 4096;
    const root = tree({ 'cgroup.controllers': 'cpu memory', 'cpu.max': `${quota} ${period}`, 'memory.max': String(memory) });
    expect(cgroupLimits(root, '0::/')).toEqual({ cpuQuotaCores: quota / period, memoryLimitBytes: memory });
  });

  it('v2 without limits ("max") reports none', () => {
    const root = tree({ 'cgroup.controllers': 'cpu memory', 'cpu.max': `max ${draw(10_000, 200_000)}`, 'memory.max': 'max' });
    expect(cgroupLimits(root, '0::/')).toEqual({ cpuQuotaCores: undefined, memoryLimitBytes: undefined });
  });

  it('v2 on a host: the cgroup /proc/self/cgroup names, and the smallest limit of its parents', () => {
    const podMemory = draw(2048, 8192) * 2 ** 20;
    const containerMemory = podMemory - draw(1, 1024) * 2 ** 20;
    const podQuota = draw(100_000, 800_000);
    const root = tree({
      'cgroup.controllers': 'cpu memory',
      'cpu.max': 'max 100000',
      'kubepods.slice/pod1/cpu.max': `${podQuota} 100000`,
      'kubepods.slice/pod1/memory.max': String(podMemory),
      'kubepods.slice/pod1/server/cpu.max': 'max 100000',
      'kubepods.slice/pod1/server/memory.max': String(containerMemory),
      'kubepods.slice/other/memory.max': '4096',
    });
    expect(cgroupLimits(root, '0::/kubepods.slice/pod1/server\n')).toEqual({ cpuQuotaCores: podQuota / 100_000, memoryLimitBytes: containerMemory });
  });

  it('v2 where /proc/self/cgroup names a host path the container cannot see: its root', () => {
    const memory = draw(100, 9000) * 2 ** 20;
    const root = tree({ 'cgroup.controllers': 'memory', 'memory.max': String(memory), 'cpu.max': '50000 100000' });
    expect(cgroupLimits(root, '0::/docker/0123abcd')).toEqual({ cpuQuotaCores: 0.5, memoryLimitBytes: memory });
  });

  it('v1 and hybrid hosts: cpu.cfs_quota_us over cpu.cfs_period_us, memory.limit_in_bytes; -1 and the v1 "unlimited" are none', () => {
    const quota = draw(20_000, 900_000);
    const period = draw(50_000, 150_000);
    const memory = draw(256, 32_768) * 2 ** 20;
    const root = tree({
      'unified/cgroup.procs': '',
      'cpu/cpu.cfs_quota_us': '-1',
      'cpu/cpu.cfs_period_us': '100000',
      'cpu/ctr/cpu.cfs_quota_us': String(quota),
      'cpu/ctr/cpu.cfs_period_us': String(period),
      'memory/memory.limit_in_bytes': '9223372036854771712',
      'memory/process_api/abc/memory.limit_in_bytes': String(memory),
    });
    const procSelf = ['9:name=systemd:/', '4:memory:/process_api/abc', '2:cpuacct:/', '1:cpu:/ctr', '0::/'].join('\n');
    expect(cgroupLimits(root, procSelf)).toEqual({ cpuQuotaCores: quota / period, memoryLimitBytes: memory });
    expect(cgroupLimits(root, ['1:cpu:/', '4:memory:/'].join('\n'))).toEqual({ cpuQuotaCores: undefined, memoryLimitBytes: undefined });
  });

  it('v1 with cpu and cpuacct mounted together (cpu,cpuacct)', () => {
    const quota = draw(20_000, 900_000);
    const root = tree({ 'cpu,cpuacct/cpu.cfs_quota_us': String(quota), 'cpu,cpuacct/cpu.cfs_period_us': '100000' });
    expect(cgroupLimits(root, '3:cpu,cpuacct:/').cpuQuotaCores).toBe(quota / 100_000);
  });

  it('no cgroup filesystem: no limits', () => {
    expect(cgroupLimits(tree({}), '')).toEqual({ cpuQuotaCores: undefined, memoryLimitBytes: undefined });
  });
});

describe('default engine threads', () => {
  it.each([
    [8, 1.5, 2],
    [8, 4, 4],
    [2, 4, 2],
    [6, undefined, 6],
    [8, 0.1, 1],
    [16, 2.0001, 3],
  ])('%i CPUs and a quota of %s cores: %i threads', (cpus, quota, threads) => {
    expect(defaultThreads(cpus, quota)).toBe(threads);
  });
});
