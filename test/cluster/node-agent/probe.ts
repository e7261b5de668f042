// Runs one container probe (httpGet, tcpSocket or exec) against the pod's loopback address, as the
// kubelet's prober does: HTTP 200-399, a TCP connect, or exit code 0 within timeoutSeconds.
import { spawn } from 'node:child_process';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import type { Container, Probe } from './types.js';

export interface ProbeTarget {
  podIP: string;
  container: Container;
  /** Runs an exec probe's command (resolved like the container's command). */
  exec: (command: string[]) => { executable: string; args: string[]; env: NodeJS.ProcessEnv; cwd: string };
}

export function probePort(container: Container, port: number | string): number {
  if (typeof port === 'number') return port;
  if (/^\d+$/.test(port)) return Number(port);
  const named = container.ports?.find((p) => p.name === port);
  if (!named) throw new Error(`container '${container.name}' has no port named '${port}'`);
  return named.containerPort;
}

function httpProbe(probe: NonNullable<Probe['httpGet']>, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const lib = probe.scheme?.toUpperCase() === 'HTTPS' ? https : http;
    const req = lib.get(
      {
        host: probe.host || target.podIP,
        port: probePort(target.container, probe.port),
        path: probe.path ?? '/',
        timeout: timeoutMs,
        rejectUnauthorized: false,
        headers: { 'user-agent': 'kube-probe/npuserve-local' },
      },
      (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        resolve(status >= 200 && status < 400);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

function tcpProbe(probe: NonNullable<Probe['tcpSocket']>, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: probe.host || target.podIP, port: probePort(target.container, probe.port) });
    socket.setTimeout(timeoutMs, () => socket.destroy());
    socket.on('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.on('error', () => resolve(false));
    socket.on('close', () => resolve(false));
  });
}

function execProbe(probe: NonNullable<Probe['exec']>, target: ProbeTarget, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let cmd: ReturnType<ProbeTarget['exec']>;
    try {
      cmd = target.exec(probe.command);
    } catch {
      return resolve(false);
    }
    const child = spawn(cmd.executable, cmd.args, { env: cmd.env, cwd: cmd.cwd, stdio: 'ignore', timeout: timeoutMs });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
  });
}

export function runProbe(probe: Probe, target: ProbeTarget): Promise<boolean> {
  const timeoutMs = (probe.timeoutSeconds ?? 1) * 1000;
  try {
    if (probe.httpGet) return httpProbe(probe.httpGet, target, timeoutMs);
    if (probe.tcpSocket) return tcpProbe(probe.tcpSocket, target, timeoutMs);
    if (probe.exec) return execProbe(probe.exec, target, timeoutMs);
  } catch {
    return Promise.resolve(false);
  }
  return Promise.resolve(true); // a probe with no handler (e.g. grpc) is not checked here
}
