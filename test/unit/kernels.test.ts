// Every kernel set (the portable one and each SIMD one this CPU has) against a float64 reference on
// fresh random inputs, for every dtype and layout, with sizes that are not multiples of the tile or
// vector widths.
import { describe, expect, it } from 'vitest';

import { native } from '../../runtime/engine.js';
import { f16ToF32, f32ToF16 } from '../../runtime/convert/tensors.js';
import { freshSeed, rng } from './random.js';

const f = Math.fround;

/** nearbyint in round-half-even mode, as the kernels' default rounding. */
function roundEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The int8 quantization of a row exactly as float32 code computes it: q and the scale. */
function quantizeRow(x: Float32Array): { q: Int8Array; scale: number } {
  let amax = 0;
  for (const v of x) amax = Math.max(amax, Math.abs(v));
  const inv = amax > 0 ? f(127 / amax) : 0;
  return { q: Int8Array.from(x, (v) => roundEven(f(v * inv))), scale: f(amax / 127) };
}

function reference(dtype: string, w: Float32Array, rows: number, cols: number, x: Float32Array, T: number): Float64Array {
  const y = new Float64Array(T * rows);
  const wq = dtype === 'i8' ? Array.from({ length: rows }, (_, r) => quantizeRow(w.subarray(r * cols, (r + 1) * cols))) : [];
  for (let t = 0; t < T; t++) {
    const xt = x.subarray(t * cols, (t + 1) * cols);
    const xq = dtype === 'i8' ? quantizeRow(xt) : undefined;
    for (let n = 0; n < rows; n++) {
      let s = 0;
      for (let k = 0; k < cols; k++) {
        if (dtype === 'i8') s += xq!.q[k] * wq[n].q[k];
        else s += xt[k] * (dtype === 'f16' ? f16ToF32(f32ToF16(w[n * cols + k])) : w[n * cols + k]);
      }
      y[t * rows + n] = dtype === 'i8' ? s * xq!.scale * wq[n].scale : s;
    }
  }
  return y;
}

describe('GEMM kernels vs float64', () => {
  const kernels = native().cpuFeatures().availableKernels;
  it.each(kernels)('kernel set %s, every dtype and layout, odd sizes', (kernel) => {
    const next = rng(freshSeed(`gemm ${kernel}`));
    for (let trial = 0; trial < 12; trial++) {
      const rows = 1 + Math.floor(next() * 45);
      const cols = 1 + Math.floor(next() * 90);
      const T = 1 + Math.floor(next() * 9);
      const w = Float32Array.from({ length: rows * cols }, () => next() * 2 - 1);
      const x = Float32Array.from({ length: T * cols }, () => (next() * 2 - 1) * 3);
      for (const dtype of ['f32', 'f16', 'i8']) {
        for (const layout of ['row-major', 'packed16']) {
          const packed = native().packWeight(w, rows, cols, dtype, layout);
          const y = native().gemm({ kernel, dtype, layout, rows, cols, data: packed.data, scales: packed.scales, x, tokens: T });
          const want = reference(dtype, w, rows, cols, x, T);
          const scale = Math.max(1, ...want.map(Math.abs));
          for (let i = 0; i < want.length; i++) {
            expect(Math.abs(y[i] - want[i]) / scale, `${dtype} ${layout} ${rows}x${cols} T=${T} at ${i}`).toBeLessThan(1e-5);
          }
        }
      }
    }
  });

  it('names the CPU features it found and the kernel it chose', () => {
    const f = native().cpuFeatures();
    expect(f.availableKernels).toContain('scalar');
    expect(f.availableKernels).toContain(f.selectedKernel);
    expect(typeof f.avx2).toBe('boolean');
  });
});
