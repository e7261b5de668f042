// A real `npuserve serve` process on 127.0.0.1 (the built bin/npuserve.js) for tests: started on a
// free port, awaited until ready, its output kept for failure messages, and read through /metrics.
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { expect } from 'vitest';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');

export interface ServerProcess {
  url: string;
  proc: ChildProcess;
  /** Everything the process printed so far. */
  output(): string;
  /** Resolves with the exit code once the process has exited. */
  exited: Promise<number | null>;
  metrics(): Promise<string>;
  stop(): Promise<number | null>;
}

export async function startServer(model: string, args: string[] = [], readyTimeoutMs = 60_000): Promise<ServerProcess> {
  const proc = spawn(process.execPath, [bin, 'serve', '--model', model, '--host', '127.0.0.1', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  proc.stderr!.on('data', (b) => (out += b));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + readyTimeoutMs;
  let url: string | undefined;
  while (!url) {
    url = /listening on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
    if (proc.exitCode !== null) throw new Error(`npuserve serve exited with ${proc.exitCode}:\n${out}`);
    if (Date.now() > deadline) throw new Error(`npuserve serve did not listen within ${readyTimeoutMs} ms:\n${out}`);
    await sleep(20);
  }
  while ((await fetch(`${url}/readyz`).catch(() => undefined))?.status !== 200) {
    if (proc.exitCode !== null || Date.now() > deadline) throw new Error(`npuserve serve did not become ready:\n${out}`);
    await sleep(20);
  }
  const base = url;
  return {
    url: base,
    proc,
    output: () => out,
    exited,
    metrics: async () => (await fetch(`${base}/metrics`)).text(),
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}

/** Sum of the samples of one metric whose labels include the given ones. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** Polls until `check` holds, failing with `what` after timeoutMs. */
export async function eventually(what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(20);
  }
}

/** Polls /healthz every 5 ms while `work` runs; returns its result and the slowest health answer. */
export async function whileHealthy<T>(server: ServerProcess, work: () => Promise<T>): Promise<{ result: T; healthMaxMs: number; polls: number }> {
  let polling = true;
  const healthMs: number[] = [];
  const poll = (async () => {
    while (polling) {
      const t0 = performance.now();
      expect((await fetch(`${server.url}/healthz`)).status).toBe(200);
      healthMs.push(performance.now() - t0);
      await new Promise((r) => setTimeout(r, 5));
    }
  })();
  try {
    return { result: await work(), healthMaxMs: Math.max(...healthMs), polls: healthMs.length };
  } finally {
    polling = false;
    await poll;
  }
}

/**
 * whileHealthy up to `attempts` times, stopping at the first whose slowest /healthz answer is under
 * `boundMs`, and returning the best: on the shared 2-core machine one attempt can lose the CPU to
 * other test files for a while, whereas a blocked event loop fails every attempt.
 */
export async function whileHealthyBestOf<T>(server: ServerProcess, attempts: number, boundMs: number, work: () => Promise<T>): Promise<{ result: T; healthMaxMs: number; polls: number; attempts: number[] }> {
  let best: { result: T; healthMaxMs: number; polls: number } | undefined;
  const maxima: number[] = [];
  for (let i = 0; i < attempts && !(best && best.healthMaxMs < boundMs); i++) {
    const r = await whileHealthy(server, work);
    maxima.push(r.healthMaxMs);
    if (!best || r.healthMaxMs < best.healthMaxMs) best = r;
  }
  return { ...best!, attempts: maxima };
}
