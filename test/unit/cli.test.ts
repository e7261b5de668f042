// The `npuserve` command as a user runs it (the built bin/npuserve.js): make-test-model, convert
// with --json and the accuracy gate, generate, chat, the errors bad input gets, per-command help,
// --version, and the logs of `serve` (JSON or text, an access line per request without the prompt).
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { readNpuFile } from '../../runtime/format.js';
import { convertedModel, testModel, workDir } from './helpers.js';
import { eventually, startServer } from './server-process.js';

const bin = join(import.meta.dirname, '..', '..', 'bin', 'npuserve.js');

function npuserve(...args: string[]) {
  return npuserveWithInput('', ...args);
}

function npuserveWithInput(input: string, ...args: string[]) {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: 120_000, input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('npuserve CLI', () => {
  const model = join(workDir, 'cli-model');
  const out = join(workDir, 'cli-model.int8.npu');

  it('makes a test model, converts it to INT8 with a JSON summary, and generates from it', () => {
    const made = npuserve('make-test-model', '--out', model, '--layers', '1', '--hidden', '64', '--heads', '2', '--kv-heads', '1', '--intermediate', '96');
    expect(made.code, made.stderr).toBe(0);
    expect(readdirSync(model).sort()).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);

    const conv = npuserve('convert', '--input', model, '--precision', 'INT8', '--optimize-level', '2', '--output', out, '--min-cosine', '0.98', '--json');
    expect(conv.code, conv.stderr).toBe(0);
    const summary = JSON.parse(conv.stdout);
    expect(summary.precision).toBe('INT8');
    expect(summary.outputBytes).toBeGreaterThan(0);
    // INT8 weights take a quarter of the F32 ones (the metadata, with the tokenizer, is on top).
    expect(readNpuFile(out).header.dataBytes).toBeLessThan(summary.sourceBytes / 3);
    expect(summary.accuracy.cosineSimilarity).toBeGreaterThanOrEqual(0.98);
    expect(summary.accuracy.top1Agreement).toBeGreaterThan(0);
    expect(summary.accuracy.prompts).toBeGreaterThan(0);

    const gen = npuserve('generate', '--model', out, '--prompt-tokens', '1,415,6233', '--max-tokens', '5', '--json');
    expect(gen.code, gen.stderr).toBe(0);
    const g = JSON.parse(gen.stdout);
    expect(g.promptTokens).toEqual([1, 415, 6233]);
    expect(g.tokens).toHaveLength(5);
    expect(typeof g.text).toBe('string');
    // Greedy generation is deterministic.
    expect(JSON.parse(npuserve('generate', '--model', out, '--prompt-tokens', '1,415,6233', '--max-tokens', '5', '--json').stdout).tokens).toEqual(g.tokens);

    const text = npuserve('generate', '--model', out, '--prompt', 'Hello', '--max-tokens', '4');
    expect(text.code, text.stderr).toBe(0);
  });

  it("chats from piped stdin with the model's template, one answer line per message, keeping the conversation", () => {
    const args = ['chat', '--model', out, '--max-tokens', '6'];
    const two = npuserveWithInput('Hi\nTell me more\n', ...args);
    expect(two.code, two.stderr).toBe(0);
    const answers = two.stdout.split('\n');
    expect(answers).toHaveLength(3);
    expect(answers[2]).toBe('');
    // The first answer is what a fresh conversation gets; the second depends on the first exchange.
    const first = npuserveWithInput('Hi\n', ...args);
    expect(first.stdout).toBe(`${answers[0]}\n`);
    const alone = npuserveWithInput('Tell me more\n', ...args);
    expect(alone.stdout).not.toBe(`${answers[1]}\n`);
  });

  it("refuses a checkpoint whose tokenizer has more tokens than the model's vocabulary", () => {
    const small = join(workDir, 'small-vocab-model');
    npuserve('make-test-model', '--out', small, '--layers', '1', '--hidden', '32', '--heads', '2', '--kv-heads', '1', '--intermediate', '48');
    const config = JSON.parse(readFileSync(join(small, 'config.json'), 'utf8'));
    writeFileSync(join(small, 'config.json'), JSON.stringify({ ...config, vocab_size: 32000 }));
    const r = npuserve('convert', '--input', small, '--precision', 'FP32', '--output', join(workDir, 'small.npu'));
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/the tokenizer has 32768 tokens \(ids 0\.\.32767\); the model's vocabulary \(embedding rows\) has only 32000/);
  });

  it('fails the accuracy gate with exit code 3 and leaves no output file behind', () => {
    const gated = join(workDir, 'gated.npu');
    const r = npuserve('convert', '--input', model, '--precision', 'INT8', '--output', gated, '--min-cosine', '0.99999999');
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/accuracy gate failed: cosine similarity 0\.\d+ vs FP32 is below the minimum 0\.99999999/);
    expect(existsSync(gated)).toBe(false);
    expect(readdirSync(workDir).filter((f) => f.startsWith('gated'))).toEqual([]);
  });

  it.each([
    [['convert', '--input', '/nonexistent', '--precision', 'INT8', '--output', '/tmp/x.npu'], 2, /input \/nonexistent does not exist/],
    [['convert', '--input', '.', '--precision', 'INT4', '--output', '/tmp/x.npu'], 2, /--precision must be INT8, FP16 or FP32, got 'INT4'/],
    [['convert', '--precision', 'INT8'], 2, /--input is required/],
    [['convert', '--bogus'], 2, /unknown option '--bogus'/],
    [['generate', '--model', '/nonexistent.npu', '--prompt', 'x'], 1, /nonexistent\.npu/],
    [['frobnicate'], 2, /unknown command 'frobnicate'/],
  ])('%j exits %i with a message naming the problem', (args, code, message) => {
    const r = npuserve(...(args as string[]));
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(message as RegExp);
  });

  it('refuses a corrupt checkpoint with a message naming the file', () => {
    const bad = join(workDir, 'bad-model');
    npuserve('make-test-model', '--out', bad, '--layers', '1', '--hidden', '32', '--heads', '2', '--kv-heads', '1', '--intermediate', '48');
    writeFileSync(join(bad, 'model.safetensors'), Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 123, 125]));
    const r = npuserve('convert', '--input', bad, '--precision', 'FP16', '--output', join(workDir, 'bad.npu'));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/model\.safetensors: not a safetensors file, or truncated: the header length \(first 8 bytes\) runs past the end of the file \(10 bytes\)/);
    expect(existsSync(join(workDir, 'bad.npu'))).toBe(false);
  });
});

describe('npuserve CLI conventions', () => {
  const pkg = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };

  it("prints one command's flags for --help, -h and `help COMMAND`, and the command list for --help alone", () => {
    const serve = npuserve('serve', '--help');
    expect(serve.code).toBe(0);
    expect(serve.stdout).toMatch(/^usage: npuserve serve --model X\.npu \[flags\]\n/);
    expect(serve.stdout).toContain('--max-batch-size N');
    expect(serve.stdout).toMatch(/--max-batch-size N +sequences decoded together in one step \(default: 16\)/);
    expect(serve.stdout).not.toContain('--precision');
    expect(npuserve('serve', '-h').stdout).toBe(serve.stdout);
    expect(npuserve('help', 'serve').stdout).toBe(serve.stdout);
    // Help wins over missing required flags and over other flags' values.
    expect(npuserve('serve', '--port', '1', '--help').stdout).toBe(serve.stdout);

    const convert = npuserve('convert', '-h');
    expect(convert.code).toBe(0);
    expect(convert.stdout).toMatch(/^usage: npuserve convert --input DIR\|FILE\|URL --precision INT8\|FP16\|FP32 --output X\.npu \[flags\]/);
    expect(convert.stdout).not.toContain('--max-batch-size');

    const all = npuserve('--help');
    expect(all.code).toBe(0);
    for (const c of ['convert', 'generate', 'chat', 'serve', 'bench', 'operator', 'prune-artifacts', 'make-test-model']) expect(all.stdout).toMatch(new RegExp(`\\n  ${c} +[A-Z]`));
    expect(all.stdout).not.toContain('--max-batch-size');
    const none = npuserve();
    expect(none.code).toBe(2);
    expect(none.stderr).toBe(all.stdout);
  });

  it('lists every operator flag in its help, --kubeconfig and --context among them', () => {
    const r = npuserve('operator', '--help');
    expect(r.code).toBe(0);
    const flags = [...r.stdout.matchAll(/^ {2}--([\w-]+)/gm)].map((m) => m[1]);
    expect(flags).toEqual(expect.arrayContaining(['kubeconfig', 'context', 'namespaces', 'image', 'image-pull-policy', 'artifact-claim', 'npu-resource-name', 'npu-node-selector',
      'revision-history-limit', 'service-account', 'leader-elect', 'leader-election-namespace', 'lease-name', 'lease-duration-seconds', 'metrics-port', 'workers',
      'scrape-interval-seconds', 'source-host-paths', 'source-allowed-hosts', 'source-max-download-size', 'network-policy', 'network-policy-namespaces', 'log-format', 'log-level']));
    expect(r.stdout).toMatch(/^ {2}-h, --help +print this help/m);
  });

  it('prints the package version for --version', () => {
    const r = npuserve('--version');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  });

  it('takes --flag=value as --flag value', () => {
    const dir = join(workDir, 'cli-equals-model');
    const made = npuserve('make-test-model', `--out=${dir}`, '--layers=1', '--hidden=32', '--heads=2', '--kv-heads=1', '--intermediate=48');
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/1 layers, hidden 32/);
    const port = npuserve('serve', '--model=x.npu', '--port=70000');
    expect(port.code).toBe(2);
    expect(port.stderr).toBe('npuserve serve: --port must be at most 65535, got 70000\n');
    const workers = npuserve('operator', '--workers=0');
    expect(workers.code).toBe(2);
    expect(workers.stderr).toBe("npuserve operator: --workers must be an integer >= 1, got '0'\n");
    // --kubeconfig=PATH is a flag like the others: the run gets as far as reading the file.
    const kubeconfig = npuserve('operator', `--kubeconfig=${join(workDir, 'no-such-kubeconfig')}`, '--context=dev', '--metrics-port=0');
    expect(kubeconfig.code).toBe(1);
    expect(kubeconfig.stderr).toMatch(/no-such-kubeconfig/);
    expect(kubeconfig.stderr).not.toMatch(/unknown option/);
  });

  it.each(['serve', 'convert', 'operator'])('%s: an unknown option exits 2 with one line naming it, then the usage of that command, no stack trace', (command) => {
    const r = npuserve(command, '--bogus-flag=1');
    expect(r.code).toBe(2);
    const [first, blank, usage] = r.stderr.split('\n');
    expect(first).toBe(`npuserve ${command}: unknown option '--bogus-flag'`);
    expect(blank).toBe('');
    expect(usage).toMatch(new RegExp(`^usage: npuserve ${command} `));
    expect(r.stderr).toBe(`${first}\n\n${npuserve(command, '--help').stdout}`);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(r.stdout).toBe('');
  });

  it.each([
    [['operator', '--leader-elect', 'maybe'], "npuserve operator: --leader-elect must be true or false, got 'maybe'"],
    [['operator', '--log-level', 'loud'], "npuserve operator: --log-level must be one of debug, info, warn, error, got 'loud'"],
    [['operator', '--source-host-paths', 'models'], "npuserve operator: --source-host-paths: 'models' must be an absolute path without '..'"],
    [['serve', '--model', 'x.npu', '--log-format', 'yaml'], "npuserve serve: --log-format must be json or text, got 'yaml'"],
    [['serve', '--model'], 'npuserve serve: --model needs a value'],
    [['serve', 'x.npu'], "npuserve serve: unexpected argument 'x.npu' (every value follows its flag: --flag VALUE or --flag=VALUE)"],
  ])('%j is a usage error: exit 2 and one line', (args, line) => {
    const r = npuserve(...args);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')[0]).toBe(line);
  });

  it('serve --log-format json logs parseable lines with a level, and one access line per request without the prompt', async () => {
    const model = await logModel();
    const server = await startServer(model, ['--log-format', 'json', '--served-model-name', 'test']);
    const prompt = 'the secret prompt 7f3a9c';
    try {
      const done = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'req-42' }, body: JSON.stringify({ model: 'test', prompt, max_tokens: 3 }) });
      expect(done.status).toBe(200);
      expect(done.headers.get('x-request-id')).toBe('req-42');
      const body = await done.text();
      const streamed = await fetch(`${server.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'test', prompt, max_tokens: 3, stream: true }) });
      const streamedBody = await streamed.text();
      expect((await fetch(`${server.url}/v1/nothing-here?prompt=x`)).status).toBe(404);
      await new Promise((r) => setTimeout(r, 200));
      const lines = server.output().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      for (const l of lines) {
        expect(['debug', 'info', 'warn', 'error']).toContain(l.level);
        expect(typeof l.msg).toBe('string');
        expect(Number.isNaN(Date.parse(l.time as string))).toBe(false);
      }
      const requests = lines.filter((l) => l.msg === 'request');
      expect(requests).toHaveLength(3);
      expect(requests[0]).toMatchObject({ level: 'info', method: 'POST', path: '/v1/completions', status: 200, bytes: Buffer.byteLength(body), model: 'test', requestId: 'req-42' });
      expect(requests[1]).toMatchObject({ method: 'POST', path: '/v1/completions', status: 200, bytes: Buffer.byteLength(streamedBody), model: 'test' });
      expect(requests[1].requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(requests[2]).toMatchObject({ method: 'GET', path: '/v1/nothing-here', status: 404 });
      for (const r of requests) expect(r.durationMs).toBeGreaterThan(0);
      expect(server.output()).not.toContain('secret prompt');
    } finally {
      await server.stop();
    }
  });

  it('serve logs text lines by default, and --log-level warn leaves out the info lines', async () => {
    const model = await logModel();
    const text = await startServer(model);
    try {
      await fetch(`${text.url}/v1/models`);
      await new Promise((r) => setTimeout(r, 200));
      expect(text.output()).toMatch(/^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  listening on http:\/\//m);
      expect(text.output()).toMatch(/ INFO  request method=GET path=\/v1\/models status=200 durationMs=[\d.]+ bytes=\d+ requestId=[0-9a-f-]{36}$/m);
    } finally {
      await text.stop();
    }
    // Without the info line that names the address, the test picks the port.
    const port = await new Promise<number>((resolve) => {
      const s = createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const quiet = spawn(process.execPath, [bin, 'serve', '--model', model, '--host', '127.0.0.1', '--port', String(port), '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    quiet.stdout!.on('data', (b) => (out += b));
    quiet.stderr!.on('data', (b) => (out += b));
    const exited = new Promise((resolve) => quiet.once('exit', resolve));
    try {
      await eventually('the quiet server is ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined))?.status === 200, 60_000);
      expect((await fetch(`http://127.0.0.1:${port}/v1/models`)).status).toBe(200);
    } finally {
      quiet.kill('SIGTERM');
      await exited;
    }
    expect(out).toBe('');
  });
});

/** A small FP16 model for the server's log tests. */
function logModel(): Promise<string> {
  return convertedModel(testModel('cli-log-model', { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 }), 'FP16', 2);
}
