// `npuserve inspect`'s reading of a .npu file: the precision the file holds, and a
// missing path or a folder named as such.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

import { tempFiles } from '../../test/unit/temp-files.js';
import { makeTestModel } from '../testmodel.js';
import { convert } from './convert.js';
import { inspectNpu } from './inspect.js';

const { dir, tempPath } = tempFiles('inspect');

describe('inspectNpu', () => {
  it('reports the precision and optimize level an INT8 file was converted with', async () => {
    const src = join(dir, 'src');
    makeTestModel(src, { layers: 1, hidden: 64, heads: 2, kvHeads: 1, intermediate: 96 });
    const out = tempPath('tiny.int8.npu');
    await convert({ input: src, output: out, precision: 'INT8', optimizeLevel: 1 });
    expect(inspectNpu(out)).toMatchObject({ input: out, precision: 'INT8', optimizeLevel: 1, architecture: 'mistral' });
  }, 60_000);

  it('says a missing path does not exist and refuses a folder', () => {
    const missing = join(dir, 'nothing', 'model.npu');
    expect(() => inspectNpu(missing)).toThrow(`input ${missing} does not exist`);
    expect(() => inspectNpu(dir)).toThrow(/is a directory; a model is one .npu file/);
  });
});
