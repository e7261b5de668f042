// What the operator may pass to `npuserve serve` from spec.runtime, serve accepts: every bound the
// CRD allows is a valid flag value (a spec the API server admits must not crash its serving pods).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { describe, expect, it } from 'vitest';

import { parseFlags } from '../common/flags.js';
import { serve, serveConfig } from './serve.js';

interface Bounds {
  minimum: number;
  maximum: number;
  enum?: string[];
  default?: unknown;
}

const crd = load(readFileSync(join(import.meta.dirname, '..', 'crds', 'npuserve.io_npumodels.yaml'), 'utf8')) as {
  spec: { versions: Array<{ schema: { openAPIV3Schema: { properties: { spec: { properties: { runtime: { properties: Record<string, Bounds> } } } } } } }> };
};
const runtime = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec.properties.runtime.properties;
/** Numeric spec.runtime fields and the serve flag the operator passes each as. */
const FLAGS: Record<string, string> = { maxBatchSize: 'max-batch-size', maxSeqLen: 'max-seq-len', maxWaitingRequests: 'max-waiting-requests', threads: 'threads' };
/** kvCacheDtype is an enum (checked below); resources becomes the container's resources, not a flag. */
const NOT_FLAGS = ['kvCacheDtype', 'resources'];

describe('serve flags against spec.runtime', () => {
  it('has a flag for every spec.runtime field', () => {
    expect(Object.keys(runtime).sort()).toEqual([...Object.keys(FLAGS), ...NOT_FLAGS].sort());
  });

  it.each(['minimum', 'maximum'] as const)("accepts every spec.runtime field at the CRD's %s", (bound) => {
    const argv = ['--model', 'x.npu', ...Object.entries(FLAGS).flatMap(([field, flag]) => [`--${flag}`, String(runtime[field][bound])])];
    const config = serveConfig(parseFlags(serve.spec, argv, {}));
    expect(config.maxBatchSize).toBe(runtime.maxBatchSize[bound]);
    expect(config.maxSeqLen).toBe(runtime.maxSeqLen[bound]);
    expect(config.maxWaitingRequests).toBe(runtime.maxWaitingRequests[bound]);
    expect(config.threads).toBe(runtime.threads[bound]);
  });

  it('accepts every KV cache dtype the CRD allows as --kv-cache-dtype, defaulting to the same one', () => {
    for (const dtype of runtime.kvCacheDtype.enum!) expect(serveConfig(parseFlags(serve.spec, ['--model', 'x.npu', '--kv-cache-dtype', dtype], {})).kvCacheDtype).toBe(dtype);
    expect(serveConfig(parseFlags(serve.spec, ['--model', 'x.npu'], {})).kvCacheDtype).toBe(runtime.kvCacheDtype.default);
    expect(() => serveConfig(parseFlags(serve.spec, ['--model', 'x.npu', '--kv-cache-dtype', 'bf16'], {}))).toThrow(/kv-cache-dtype/);
  });
});

describe('--enable-prefix-caching', () => {
  const config = (...args: string[]) => serveConfig(parseFlags(serve.spec, ['--model', 'm.npu', ...args], {}));
  it('is on by default, off with --no-enable-prefix-caching, and refuses both at once', () => {
    expect(config().prefixCaching).toBe(true);
    expect(config('--enable-prefix-caching').prefixCaching).toBe(true);
    expect(config('--no-enable-prefix-caching').prefixCaching).toBe(false);
    expect(() => config('--enable-prefix-caching', '--no-enable-prefix-caching')).toThrow(/--enable-prefix-caching and --no-enable-prefix-caching contradict each other/);
  });
});
