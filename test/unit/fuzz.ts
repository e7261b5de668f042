// The loop every parser fuzz test runs: write each mutated file, parse it, and fail on anything but
// a clean accept or a FormatError (checked by `exercise`), or on an input that takes over a second.
// Also the check the parser tests share for one bad file's error.
import { writeFileSync } from 'node:fs';
import { expect } from 'vitest';

import { FormatError } from '../../runtime/errors.js';

/** open() throws a FormatError whose message starts with the file's path and matches pattern. */
export function expectFormatError(open: () => unknown, path: string, pattern: RegExp): void {
  let error: unknown;
  try {
    open();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(FormatError);
  const message = (error as Error).message;
  expect(message.startsWith(`${path}: `), message).toBe(true);
  expect(message).toMatch(pattern);
}

export interface FuzzRun<S> {
  label: string;
  seed: number;
  seeds: S[];
  path: string;
  mutate: (seed: S) => { bytes: Uint8Array; steps: string[] };
  /** Parses the file: true when accepted, false when rejected with a FormatError; throws otherwise. */
  exercise: (path: string) => boolean;
}

export function fuzzFiles<S>(run: FuzzRun<S>): void {
  let accepted = 0;
  const iterations = Number(process.env.NPUSERVE_FUZZ_ITERATIONS ?? 2500);
  for (let n = 0; n < iterations; n++) {
    const { bytes, steps } = run.mutate(run.seeds[n % run.seeds.length]);
    writeFileSync(run.path, bytes);
    const started = performance.now();
    try {
      if (run.exercise(run.path)) accepted++;
    } catch (e) {
      expect.fail(`seed ${run.seed}, iteration ${n} (${steps.join('; ')}): ${(e as Error).stack}`);
    }
    const ms = performance.now() - started;
    if (ms > 1000) expect.fail(`seed ${run.seed}, iteration ${n} (${steps.join('; ')}): took ${ms.toFixed(0)} ms`);
  }
  console.log(`${run.label} fuzz: ${iterations} mutated files, ${accepted} accepted, ${iterations - accepted} rejected with a FormatError`);
  expect(accepted).toBeGreaterThan(0);
  expect(accepted).toBeLessThan(iterations);
}

/** The format-blind mutations: 0 flips a bit, 1 overwrites a few bytes, 2 truncates. */
export function byteMutation(kind: 0 | 1 | 2, input: Uint8Array, rand: () => number): { bytes: Uint8Array; step: string } {
  const at = (n: number) => Math.floor(rand() * n);
  if (kind === 2) {
    const n = at(input.length + 1);
    return { bytes: input.slice(0, n), step: `truncate to ${n}` };
  }
  const bytes = input;
  const i = at(bytes.length);
  if (kind === 0) {
    bytes[i] ^= 1 << at(8);
    return { bytes, step: `flip bit at ${i}` };
  }
  for (let j = i; j < Math.min(bytes.length, i + 1 + at(8)); j++) bytes[j] = at(256);
  return { bytes, step: `random bytes at ${i}` };
}
