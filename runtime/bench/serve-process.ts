// `npuserve serve` processes for the benchmarks (the built bin/npuserve.js on 127.0.0.1), and the
// model they serve by default.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

import { convert } from '../convert/convert.js';
import { makeTestModel, PRESETS } from '../testmodel.js';

const BIN = join(import.meta.dirname, '..', '..', '..', 'bin', 'npuserve.js');

export interface Server {
  url: string;
  proc: ChildProcess;
}

export async function startServer(modelPath: string, args: string[]): Promise<Server> {
  const proc = spawn(process.execPath, [BIN, 'serve', '--model', modelPath, '--host', '127.0.0.1', '--port', '0', '--served-model-name', 'bench', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout!.on('data', (b) => (out += b));
  for (const deadline = Date.now() + 120_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 50))) {
    if (proc.exitCode !== null) throw new Error(`npuserve serve exited with ${proc.exitCode}:\n${out}`);
    const url = /listening on (http:\/\/[\d.]+:\d+)/.exec(out)?.[1];
    if (url && (await fetch(`${url}/readyz`).catch(() => undefined))?.status === 200) return { url, proc };
  }
  proc.kill();
  throw new Error(`npuserve serve did not become ready:\n${out}`);
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
