// Float-array checks for tests. Vitest's toEqual walks a typed array element by element through its
// generic equality (4 s for one model's logits, 1.3M floats): expectIdenticalFloats compares the
// bytes and, on a difference, names the first element that differs.
import { createHash } from 'node:crypto';

import { expect } from 'vitest';

export function expectIdenticalFloats(got: Float32Array, want: Float32Array, what = 'values'): void {
  expect(got.length, `${what}: length`).toBe(want.length);
  const a = Buffer.from(got.buffer, got.byteOffset, got.byteLength);
  const b = Buffer.from(want.buffer, want.byteOffset, want.byteLength);
  if (a.equals(b)) return;
  const [x, y] = [new Uint32Array(got.buffer, got.byteOffset, got.length), new Uint32Array(want.buffer, want.byteOffset, want.length)];
  const i = x.findIndex((bits, k) => bits !== y[k]);
  expect.fail(`${what} differ first at element ${i}: ${got[i]} vs ${want[i]}`);
}

/** How many distinct rows a row-major matrix of `rows` rows holds. */
export function distinctRows(data: Float32Array, rows: number): number {
  const cols = data.length / rows;
  const seen = new Set<string>();
  for (let r = 0; r < rows; r++) seen.add(createHash('sha1').update(data.subarray(r * cols, (r + 1) * cols)).digest('hex'));
  return seen.size;
}
