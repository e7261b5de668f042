// The docs say what the code does: the URI forms in the CRD's validation message and the operator's
// InvalidSource message agree (no NODE part a file:// URI does not have), docs/precision-change.md
// shows the phase staying Ready through a precision change, and the README's Limitations section
// names the Backend seam that exists in native/src.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';

import { sourceVolume } from '../../operator/revision.js';

const root = join(import.meta.dirname, '..', '..');
const read = (file: string) => readFileSync(join(root, file), 'utf8');

/** The x-kubernetes-validations message on spec.source of the CRD. */
function crdSourceMessage(): string {
  type Schema = { properties?: Record<string, Schema>; 'x-kubernetes-validations'?: Array<{ message: string }> };
  const crd = parseYaml(read('crds/npuserve.io_npumodels.yaml')) as { spec: { versions: Array<{ schema: { openAPIV3Schema: Schema } }> } };
  const source = crd.spec.versions[0].schema.openAPIV3Schema.properties!.spec.properties!.source;
  return source['x-kubernetes-validations']![0].message;
}

const uriForms = (text: string) => [...text.matchAll(/(pvc|file|http\(s\)):\/\/\/?[A-Z/]+/g)].map((m) => m[0]);

describe('docs match behaviour', () => {
  it('the CRD message and the operator name the same source URI forms, with no NODE in file:// URIs', () => {
    const crd = crdSourceMessage();
    const operator = sourceVolume('s3://bucket/model', { hostPathPrefixes: ['/models'], allowedHosts: [], maxDownloadSize: null });
    expect(typeof operator).toBe('string');
    expect(uriForms(crd)).toEqual(['pvc://CLAIM/PATH', 'file:///PATH', 'http(s)://URL']);
    expect(uriForms(operator as string)).toEqual(uriForms(crd));
    expect(read('docs/crd-reference.md')).toContain(crd);
    expect(read('charts/npuserve/crds/npuserve.io_npumodels.yaml')).toContain(crd);
  });

  it('docs/precision-change.md shows phase Ready through every step of a precision change', () => {
    const doc = read('docs/precision-change.md');
    const table = doc.slice(doc.indexOf('| step | phase |'), doc.indexOf('\n\n', doc.indexOf('| step | phase |')));
    const phases = table.split('\n').slice(2).map((row) => row.split('|')[2].trim());
    expect(phases).toEqual(['`Ready`', '`Ready`', '`Ready`']);
    const watchRows = doc.split('\n').filter((l) => /^smollm2\s+(FP16|INT8)\s+\S+\s+\d/.test(l));
    expect(watchRows.length).toBeGreaterThan(2);
    for (const row of watchRows) expect(row.split(/\s+/)[2]).toBe('Ready');
    expect(doc).not.toMatch(/phase stays `Ready` on the previous revision/); // a failed revision makes it Degraded
  });

  it('the README has a Limitations section naming the Backend seam and the supported architectures', () => {
    const readme = read('README.md');
    const start = readme.indexOf('## Limitations');
    expect(start).toBeGreaterThan(readme.indexOf('```sh\nnpm run demo')); // the two commands stay first
    const section = readme.slice(start, readme.indexOf('\n## ', start + 1));
    expect(section).toContain('[native/src/backend.h](native/src/backend.h)');
    const backend = read('native/src/backend.h');
    for (const name of ['Kernels', 'select_kernels()', 'Layout']) {
      expect(section).toContain(`\`${name}\``);
      expect(backend).toContain(name.replace('()', ''));
    }
    for (const arch of ['`llama`', '`mistral`', '`qwen2`']) expect(section).toContain(arch);
    expect(section).toContain('[docs/supported-models.md](docs/supported-models.md)');
  });
});
