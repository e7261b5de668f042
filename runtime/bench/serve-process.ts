// `npuserve serve` processes for the benchmarks (the built bin/npuserve.js on 127.0.0.1), a static
// `npuserve gateway` in front of one, and the model they serve by default.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';

import { convert } from '../convert/convert.js';
import { makeTestModel, PRESETS } from '../testmodel.js';

/** bin/npuserve.js of this checkout, whether this module runs compiled (dist/runtime/bench) or from source (tsx). */
function npuserveBin(): string {
  for (let dir = import.meta.dirname; dirname(dir) !== dir; dir = dirname(dir)) {
    const bin = join(dir, 'bin', 'npuserve.js');
    if (existsSync(bin)) return bin;
  }
  throw new Error(`bin/npuserve.js not found above ${import.meta.dirname}`);
}

const BIN = npuserveBin();

export interface Server {
  url: string;
  proc: ChildProcess;
}

export function startServer(modelPath: string, args: string[]): Promise<Server> {
  return startProcess(['serve', '--model', modelPath, '--host', '127.0.0.1', '--port', '0', '--served-model-name', 'bench', ...args]);
}

/** `npuserve gateway` in static mode in front of `server`, which it serves as the model `bench`; stopped with stopServer. */
export function startGateway(server: Server, args: string[] = []): Promise<Server> {
  return startProcess(['gateway', '--host', '127.0.0.1', '--port', '0', '--backend', `bench=${new URL(server.url).host}`, ...args]);
}

/** Runs `npuserve ARGS` and waits for the address it logs and its /readyz. */
async function startProcess(args: string[]): Promise<Server> {
  const command = `npuserve ${args[0]}`;
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
    if (proc.exitCode !== null) throw new Error(`${command} exited with ${proc.exitCode}:\n${out}`);
    const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
    if (url && (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200) return { url, proc };
  }
  proc.kill();
  throw new Error(`${command} did not become ready:\n${out}`);
}

export async function stopServer(s: Server): Promise<void> {
  const exited = new Promise((resolve) => s.proc.once('exit', resolve));
  s.proc.kill('SIGTERM');
  await exited;
}

/** The 100m-parameter test model at INT8, made once in the user's cache. */
export async function defaultModel(): Promise<string> {
  const dir = join(homedir(), '.cache', 'npuserve', 'bench');
  const output = join(dir, 'test-100m.int8.npu');
  if (!existsSync(output)) {
    mkdirSync(dir, { recursive: true });
    console.error(`making the 100m test model in ${dir}`);
    makeTestModel(join(dir, 'test-100m'), PRESETS['100m']);
    await convert({ input: join(dir, 'test-100m'), output, precision: 'INT8', optimizeLevel: 2 });
  }
  return output;
}
