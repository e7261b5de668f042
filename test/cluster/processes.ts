// Background processes of the local cluster: started detached in their own process group with output
// to a log file, so they outlive `cluster:up`, and stopped by group (SIGTERM, then SIGKILL).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { sleep } from './kube.js';

export interface ManagedProcess {
  name: string;
  pid: number;
  log: string;
}

export interface Started extends ManagedProcess {
  /** Rejects if the process exits before `stopWatching` is called. */
  exited: Promise<never>;
  stopWatching: () => void;
}

export function startProcess(name: string, command: string, args: string[], log: string, env: NodeJS.ProcessEnv = process.env, cwd?: string): Started {
  const fd = fs.openSync(log, 'a');
  const child = spawn(command, args, { detached: true, stdio: ['ignore', fd, fd], env, cwd });
  fs.closeSync(fd);
  if (child.pid === undefined) throw new Error(`${name}: could not start ${command}`);
  let watching = true;
  const exited = new Promise<never>((_, reject) => {
    child.on('exit', (code, signal) => {
      if (watching) reject(new Error(`${name} exited (${signal ?? `code ${code}`}) while starting; last lines of ${log}:\n${tail(log, 25)}`));
    });
    child.on('error', (err) => reject(new Error(`${name}: cannot run ${command}: ${err.message}`)));
  });
  exited.catch(() => undefined);
  child.unref();
  return {
    name,
    pid: child.pid,
    log,
    exited,
    stopWatching: () => {
      watching = false;
    },
  };
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Signals a process group led by `pid` (or the process alone when it leads none); quiet if gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Stops a process group: SIGTERM, then SIGKILL after `graceMs`. Returns when the leader is gone. */
export async function stopProcessGroup(pid: number, graceMs = 10_000): Promise<void> {
  if (!isAlive(pid)) return;
  signalGroup(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (isAlive(pid) && Date.now() < deadline) await sleep(100);
  signalGroup(pid, 'SIGKILL');
  while (isAlive(pid) && Date.now() < deadline + 5000) await sleep(50);
}

export function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** A TCP port on 127.0.0.1 that is free right now. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, host, () => {
      const address = server.address() as net.AddressInfo;
      server.close(() => resolve(address.port));
    });
  });
}
