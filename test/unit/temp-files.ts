// A temporary folder per test file for tests that write files: numbered paths (a name may repeat),
// removed after the file's tests.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export function tempFiles(prefix: string): { dir: string; tempPath: (name: string) => string; writeTemp: (name: string, bytes: Uint8Array) => string } {
  const dir = mkdtempSync(join(tmpdir(), `npuserve-${prefix}-`));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  let counter = 0;
  const tempPath = (name: string) => join(dir, `${counter++}-${name}`);
  const writeTemp = (name: string, bytes: Uint8Array) => {
    const path = tempPath(name);
    writeFileSync(path, bytes);
    return path;
  };
  return { dir, tempPath, writeTemp };
}
