// Checkpoints a tenant controls, through `convert`: NaN and infinite weights are refused naming the
// tensor (they would convert and then serve token 0 forever), files that lead out of the checkpoint
// folder by symlink are refused naming the file, a FIFO is refused instead of blocking, no error
// quotes a byte of a file that is not a checkpoint, and an http(s) source on loopback converts only
// with the admin's --allow-host.
import { execFile, execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { convert } from '../../runtime/convert/convert.js';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../runtime/convert/safetensors.js';
import { testModel, workDir } from './helpers.js';

const SMALL = { layers: 2, hidden: 32, heads: 2, kvHeads: 1, intermediate: 48 };
const SECRET = 'root:$6$s3cr3t-hash:19000:0:99999:7:::\n';
const secretFile = join(workDir, 'outside-secret');
writeFileSync(secretFile, SECRET.repeat(4));

/** A copy of the small test model (one file or `shards` files) under a new name. */
function copyModel(name: string, shards = 1): string {
  const dir = join(workDir, name);
  cpSync(testModel(`untrusted-base-${shards}`, { ...SMALL, shards }).dir, dir, { recursive: true });
  return dir;
}

/** Rewrites model.safetensors with one value of one tensor replaced. */
function poison(dir: string, tensor: string, index: number, value: number): void {
  const path = join(dir, 'model.safetensors');
  const f = new SafetensorsFile(path);
  const tensors: TensorToWrite[] = [...f.tensors.values()].map((t) => {
    const data = f.readF32(t.name).slice();
    if (t.name === tensor) data[index] = value;
    return { name: t.name, dtype: 'F32', shape: t.shape, data };
  });
  f.close();
  writeSafetensors(path, tensors);
}

const run = (input: string) => convert({ input, output: `${input}.npu`, precision: 'INT8', optimizeLevel: 2, minCosine: 0.99 });

/** The error `convert` fails with, after checking it left no output. */
async function failure(input: string): Promise<string> {
  const error = await run(input).then(
    () => null,
    (e: Error) => e,
  );
  expect(error, 'convert should have failed').toBeInstanceOf(Error);
  expect(existsSync(`${input}.npu`)).toBe(false);
  return (error as Error).message;
}

function expectNoSecret(message: string): void {
  expect(message).not.toContain('root');
  expect(message).not.toContain('s3cr3t');
  // The first 8 bytes as a little-endian length (how main echoed them) are not there either.
  expect(message).not.toContain(Buffer.from(SECRET).readBigUInt64LE(0).toString());
}

describe('non-finite weights', () => {
  it.each([
    ['NaN in a norm', 'model.layers.1.input_layernorm.weight', 5, NaN, /tensor 'model\.layers\.1\.input_layernorm\.weight' holds NaN at element 5; weights must be finite numbers/],
    ['+Infinity in a matrix', 'model.layers.0.mlp.down_proj.weight', 77, Infinity, /tensor 'model\.layers\.0\.mlp\.down_proj\.weight' holds Infinity at element 77/],
    ['-Infinity in the embedding', 'model.embed_tokens.weight', 3, -Infinity, /tensor 'model\.embed_tokens\.weight' holds -Infinity at element 3/],
  ])('refuses %s, naming the tensor', async (name, tensor, index, value, message) => {
    const dir = copyModel(`nonfinite-${name.replace(/\W+/g, '-')}`);
    poison(dir, tensor, index, value);
    expect(await failure(dir)).toMatch(message);
  });
});

describe('files that leave the checkpoint folder', () => {
  it('refuses a shard symlinked to a file outside, naming the shard and not quoting the file', async () => {
    const dir = copyModel('symlinked-shard', 2);
    const shard = readdirSync(dir).find((f) => f.endsWith('-of-00002.safetensors'))!;
    rmSync(join(dir, shard));
    symlinkSync(secretFile, join(dir, shard));
    const message = await failure(dir);
    expect(message).toContain(join(dir, shard));
    expect(message).toMatch(/is a symlink to a file outside the checkpoint folder/);
    expectNoSecret(message);
  });

  it.each(['config.json', 'tokenizer.json', 'model.safetensors'])('refuses %s symlinked outside the folder', async (file) => {
    const dir = copyModel(`symlinked-${file}`);
    rmSync(join(dir, file));
    symlinkSync(secretFile, join(dir, file));
    const message = await failure(dir);
    expect(message).toMatch(new RegExp(`${file.replace('.', '\\.')}: is a symlink to a file outside the checkpoint folder`));
    expectNoSecret(message);
  });

  it('still follows a symlink that stays inside the folder', async () => {
    const dir = copyModel('symlink-inside');
    mkdirSync(join(dir, 'blobs'));
    cpSync(join(dir, 'model.safetensors'), join(dir, 'blobs', 'weights'));
    rmSync(join(dir, 'model.safetensors'));
    symlinkSync(join('blobs', 'weights'), join(dir, 'model.safetensors'));
    expect((await run(dir)).accuracy?.cosineSimilarity).toBeGreaterThan(0.99);
  });

  it("converts a Hugging Face cache snapshot, whose files are symlinks into the repository's blobs, and nothing further out", async () => {
    const repo = join(workDir, 'hf-cache', 'models--org--tiny');
    const snapshot = join(repo, 'snapshots', 'abc123');
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    cpSync(copyModel('hf-cache-source'), snapshot, { recursive: true });
    cpSync(join(snapshot, 'model.safetensors'), join(repo, 'blobs', 'f00d'));
    rmSync(join(snapshot, 'model.safetensors'));
    symlinkSync(join('..', '..', 'blobs', 'f00d'), join(snapshot, 'model.safetensors'));
    expect((await run(snapshot)).accuracy?.cosineSimilarity).toBeGreaterThan(0.99);
    rmSync(`${snapshot}.npu`);
    // The repository folder bounds it: a symlink to the cache's other repositories is refused.
    rmSync(join(snapshot, 'config.json'));
    mkdirSync(join(workDir, 'hf-cache', 'models--other--repo'), { recursive: true });
    cpSync(join(copyModel('hf-cache-other'), 'config.json'), join(workDir, 'hf-cache', 'models--other--repo', 'config.json'));
    symlinkSync(join('..', '..', '..', 'models--other--repo', 'config.json'), join(snapshot, 'config.json'));
    expect(await failure(snapshot)).toMatch(/config\.json: is a symlink to a file outside the checkpoint folder/);
  });

  it('refuses a FIFO in place of the weights instead of blocking on it', async () => {
    const dir = copyModel('fifo-weights');
    rmSync(join(dir, 'model.safetensors'));
    execFileSync('mkfifo', [join(dir, 'model.safetensors')]);
    expect(await failure(dir)).toMatch(/model\.safetensors: is not a regular file/);
  });
});

describe('files that are not checkpoints', () => {
  it.each([
    ['model.safetensors', /model\.safetensors: not a safetensors file/],
    ['config.json', /config\.json: not valid JSON/],
    ['tokenizer.json', /tokenizer\.json: not valid JSON/],
  ])('%s holding some other file: the message does not quote it', async (file, pattern) => {
    const dir = copyModel(`not-a-${file}`);
    writeFileSync(join(dir, file), SECRET);
    const message = await failure(dir);
    expect(message).toMatch(pattern);
    expectNoSecret(message);
  });

  it('a .gguf that is not GGUF: the message does not quote its first bytes', async () => {
    const path = join(workDir, 'not-really.gguf');
    writeFileSync(path, SECRET);
    const message = await failure(path);
    expect(message).toMatch(/not-really\.gguf: not a GGUF file: its first 4 bytes are not "GGUF"/);
    expectNoSecret(message);
    // 'root' as bytes, as main printed them.
    expect(message).not.toMatch(/72 6f 6f 74/);
  });
});

describe('an http(s) source through the CLI', () => {
  const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');
  const npuserve = (env: Record<string, string>, ...args: string[]) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, timeout: 120_000 }, (e, stdout, stderr) => resolve({ code: e ? ((e as { code?: number }).code ?? 1) : 0, stdout, stderr }));
    });

  it('refuses a loopback URL, converts it with --allow-host, and sends the token from --header-env', async () => {
    const gguf = readFileSync(join(testModel('untrusted-gguf', { ...SMALL, architecture: 'llama', gguf: 'F32' }).dir, 'model.gguf'));
    const authorizations: Array<string | undefined> = [];
    const server = createServer((req, res) => {
      authorizations.push(req.headers.authorization);
      res.writeHead(200, { 'content-length': gguf.length }).end(gguf);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/tiny.gguf`;
      const output = join(workDir, 'from-http.npu');
      const args = ['convert', '--input', url, '--precision', 'FP16', '--output', output, '--json'];
      const refused = await npuserve({}, ...args);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toMatch(/download of http:\/\/127\.0\.0\.1:\d+\/tiny\.gguf: 127\.0\.0\.1 is a loopback address/);
      expect(authorizations).toEqual([]);
      const converted = await npuserve({ HUB_TOKEN: 'hf_abc' }, ...args, '--allow-host', '127.0.0.1', '--header-env', 'HUB_TOKEN');
      expect(converted.code, converted.stderr).toBe(0);
      expect(JSON.parse(converted.stdout)).toMatchObject({ sourceFormat: 'gguf', output });
      expect(authorizations).toEqual(['Bearer hf_abc']);
      const capped = await npuserve({}, ...args, '--allow-host', '127.0.0.1', '--max-download-size', '1Ki');
      expect(capped.stderr).toMatch(/Content-Length \d+ exceeds the 1024-byte limit \(--max-download-size\)/);
    } finally {
      server.close();
    }
  });
});
