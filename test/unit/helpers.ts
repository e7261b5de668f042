// Shared test fixtures: tiny test models made and converted once per configuration in a temp folder.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { afterAll } from 'vitest';

import { convert } from '../../runtime/convert/convert.js';
import { SafetensorsFile } from '../../runtime/convert/safetensors.js';
import type { Precision } from '../../runtime/format.js';
import { makeTestModel, type TestModel, type TestModelOptions } from '../../runtime/testmodel.js';

export const workDir = mkdtempSync(join(tmpdir(), 'npuserve-test-'));
// Registered while the importing test file is collected, so it runs after that file's tests: each
// file's models (hundreds of MB) leave with it.
afterAll(() => rmSync(workDir, { recursive: true, force: true }));

const models = new Map<string, TestModel>();

export function testModel(name: string, opts: Partial<TestModelOptions> = {}): TestModel {
  let m = models.get(name);
  if (!m) {
    m = makeTestModel(join(workDir, name), opts);
    models.set(name, m);
  }
  return m;
}

const converted = new Map<string, Promise<string>>();

/**
 * The model converted at this precision/level (cached per test file run). The accuracy gate runs only
 * when asked: the tests that use these files check the engine against references of their own.
 */
export function convertedModel(model: TestModel, precision: Precision, level: 0 | 1 | 2, opts: { accuracyGate?: boolean } = {}): Promise<string> {
  const accuracyGate = opts.accuracyGate ?? false;
  const key = `${model.dir}:${precision}:${level}:${accuracyGate}`;
  let p = converted.get(key);
  if (!p) {
    const output = `${model.dir}.${precision}.o${level}${accuracyGate ? '.gated' : ''}.npu`;
    p = convert({ input: model.dir, output, precision, optimizeLevel: level, accuracyGate }).then(() => output);
    converted.set(key, p);
  }
  return p;
}

/** The float32 weights of a test model by HF name. */
export function hfWeights(model: TestModel): (name: string) => Float32Array {
  const file = new SafetensorsFile(join(model.dir, 'model.safetensors'));
  const cache = new Map<string, Float32Array>();
  return (name) => {
    let t = cache.get(name);
    if (!t) {
      t = file.readF32(name);
      cache.set(name, t);
    }
    return t;
  };
}
