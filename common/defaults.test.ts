// The spec defaults the code uses are the ones the CRD declares (the API server fills them in).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { load } from 'js-yaml';
import { describe, expect, it } from 'vitest';

import { SPEC_DEFAULTS } from './defaults.js';

interface Schema {
  type?: string;
  default?: unknown;
  properties?: Record<string, Schema>;
}

/** Every scalar default in a schema, by its dotted path (object defaults `{}` only make the API server descend). */
function schemaDefaults(s: Schema, path: string, out: Record<string, unknown>): Record<string, unknown> {
  if (s.default !== undefined && s.type !== 'object') out[path] = s.default;
  for (const [k, child] of Object.entries(s.properties ?? {})) schemaDefaults(child, path ? `${path}.${k}` : k, out);
  return out;
}

function flatten(o: object, path = '', out: Record<string, unknown> = {}): Record<string, unknown> {
  for (const [k, v] of Object.entries(o)) {
    const p = path ? `${path}.${k}` : k;
    if (typeof v === 'object' && v !== null) flatten(v, p, out);
    else out[p] = v;
  }
  return out;
}

describe('spec defaults', () => {
  it("are exactly the CRD schema's defaults", () => {
    const crd = load(readFileSync(join(import.meta.dirname, '..', 'crds', 'npuserve.io_npumodels.yaml'), 'utf8')) as {
      spec: { versions: Array<{ schema: { openAPIV3Schema: { properties: { spec: Schema } } } }> };
    };
    const spec = crd.spec.versions[0].schema.openAPIV3Schema.properties.spec;
    const declared = schemaDefaults(spec, '', {});
    expect(Object.keys(declared).length).toBeGreaterThan(10);
    expect(flatten(SPEC_DEFAULTS)).toEqual(declared);
  });
});
