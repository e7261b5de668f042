// What the kernel lets this process use, read from its cgroup (v2, or v1 and hybrid hosts): the CPU
// quota, which sets the engine's default thread count, and the memory limit, which `serve` checks the
// model against. In a container the process's own cgroup is the root of /sys/fs/cgroup; on a host
// /proc/self/cgroup names it. A limit set on a parent cgroup binds too, so each is the smallest along
// the path. The readers take the cgroup root and the /proc/self/cgroup text, so tests run on a temp dir.
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism, totalmem } from 'node:os';
import { join, posix } from 'node:path';

export interface CgroupLimits {
  /** CPU quota over period (e.g. 1.5), undefined when unlimited. */
  cpuQuotaCores?: number;
  memoryLimitBytes?: number;
}

/** v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything this large is none. */
const V1_UNLIMITED_BYTES = 2 ** 60;

function read(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** `base + path`, then each parent up to `base`; only `base` when the path is not visible (a container without its own cgroup namespace). */
function chain(base: string, path: string | undefined): string[] {
  if (!existsSync(base)) return [];
  if (path === undefined || !existsSync(join(base, path))) return [base];
  const dirs: string[] = [];
  for (let p = posix.normalize(path); ; p = posix.dirname(p)) {
    dirs.push(join(base, p));
    if (p === '/' || p === '.') return dirs;
  }
}

/** The cgroup path of each v1 controller and of the v2 hierarchy (key ''), from /proc/self/cgroup. */
function ownPaths(procSelfCgroup: string): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of procSelfCgroup.split('\n')) {
    const m = /^\d+:([^:]*):(.*)$/.exec(line.trim());
    if (!m) continue;
    if (m[1] === '') paths.set('', m[2]);
    for (const c of m[1].split(',')) if (c) paths.set(c, m[2]);
  }
  return paths;
}

const min = (values: number[]) => (values.length ? Math.min(...values) : undefined);

function cpuQuota(root: string, paths: Map<string, string>): number | undefined {
  const quotas: number[] = [];
  const v2 = existsSync(join(root, 'cgroup.controllers')) ? root : join(root, 'unified');
  for (const dir of chain(v2, paths.get(''))) {
    const [quota, period] = (read(join(dir, 'cpu.max')) ?? '').split(/\s+/);
    if (quota && quota !== 'max' && Number(period) > 0) quotas.push(Number(quota) / Number(period));
  }
  for (const dir of chain(join(root, existsSync(join(root, 'cpu')) ? 'cpu' : 'cpu,cpuacct'), paths.get('cpu'))) {
    const quota = Number(read(join(dir, 'cpu.cfs_quota_us')));
    const period = Number(read(join(dir, 'cpu.cfs_period_us')));
    if (quota > 0 && period > 0) quotas.push(quota / period);
  }
  return min(quotas.filter((q) => Number.isFinite(q) && q > 0));
}

function memoryLimit(root: string, paths: Map<string, string>): number | undefined {
  const limits: number[] = [];
  const v2 = existsSync(join(root, 'cgroup.controllers')) ? root : join(root, 'unified');
  for (const dir of chain(v2, paths.get(''))) {
    const text = read(join(dir, 'memory.max'));
    if (text && text !== 'max') limits.push(Number(text));
  }
  for (const dir of chain(join(root, 'memory'), paths.get('memory'))) {
    const limit = Number(read(join(dir, 'memory.limit_in_bytes')));
    if (limit < V1_UNLIMITED_BYTES) limits.push(limit);
  }
  return min(limits.filter((l) => Number.isSafeInteger(l) && l > 0));
}

export function cgroupLimits(root = '/sys/fs/cgroup', procSelfCgroup = read('/proc/self/cgroup') ?? ''): CgroupLimits {
  const paths = ownPaths(procSelfCgroup);
  return { cpuQuotaCores: cpuQuota(root, paths), memoryLimitBytes: memoryLimit(root, paths) };
}

/** Engine threads when none are asked for: the CPUs this process may run on, at most its CPU quota rounded up, at least 1. */
export function defaultThreads(availableCpus = availableParallelism(), cpuQuotaCores = cgroupLimits().cpuQuotaCores): number {
  return Math.max(1, Math.min(availableCpus, Math.ceil(cpuQuotaCores ?? Infinity)));
}

/** Memory this process may use: its cgroup's limit when it has one below physical RAM, else RAM. */
export function availableMemoryBytes(limits: CgroupLimits = cgroupLimits()): number {
  return Math.min(limits.memoryLimitBytes ?? Infinity, totalmem());
}
