// The `npuserve` command as a user runs it (the built bin/npuserve.js): make-test-model, convert
// with --json and the accuracy gate, generate, chat, and the errors bad input gets.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { readNpuFile } from '../../runtime/format.js';
import { workDir } from './helpers.js';

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
    [['convert', '--bogus'], 2, /Unknown option '--bogus'/],
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
