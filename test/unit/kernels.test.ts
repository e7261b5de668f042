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

const GROUP = 32;

/**
 * Activations: per group of 32, scale = max|x| / L and q = round(x * (L / max|x|)), in float32, with
 * L = 127 for int8 activations and 32767 for int16.
 */
function quantizeActs(x: Float32Array, levels: number): { q: Int32Array; scales: number[] } {
  const q = new Int32Array(x.length);
  const scales: number[] = [];
  for (let g0 = 0; g0 < x.length; g0 += GROUP) {
    const group = x.subarray(g0, g0 + GROUP);
    const amax = Math.max(...group.map(Math.abs));
    const inv = amax > 0 ? f(levels / amax) : 0;
    group.forEach((v, i) => (q[g0 + i] = roundEven(f(v * inv))));
    scales.push(f(amax / levels));
  }
  return { q, scales };
}

/** Weights: per group of 32, the scale max|w| / 127 rounded to f16, q = round(w / that scale). */
function quantizeWeights(w: Float32Array): { q: Int8Array; scales: number[] } {
  const q = new Int8Array(w.length);
  const scales: number[] = [];
  for (let g0 = 0; g0 < w.length; g0 += GROUP) {
    const group = w.subarray(g0, g0 + GROUP);
    const scale = f16ToF32(f32ToF16(f(Math.max(...group.map(Math.abs)) / 127)));
    const inv = scale > 0 ? f(1 / scale) : 0;
    group.forEach((v, i) => (q[g0 + i] = Math.max(-127, Math.min(127, roundEven(f(v * inv))))));
    scales.push(scale);
  }
  return { q, scales };
}

type Activations = 'int8' | 'int16';

function reference(dtype: string, w: Float32Array, rows: number, cols: number, x: Float32Array, T: number, activations: Activations): Float64Array {
  const y = new Float64Array(T * rows);
  const wq = dtype === 'i8' ? Array.from({ length: rows }, (_, r) => quantizeWeights(w.subarray(r * cols, (r + 1) * cols))) : [];
  for (let t = 0; t < T; t++) {
    const xt = x.subarray(t * cols, (t + 1) * cols);
    const xq = dtype === 'i8' ? quantizeActs(xt, activations === 'int8' ? 127 : 32767) : undefined;
    for (let n = 0; n < rows; n++) {
      let s = 0;
      for (let k = 0; k < cols; k++) {
        if (dtype === 'i8') s += xq!.q[k] * wq[n].q[k] * xq!.scales[Math.floor(k / GROUP)] * wq[n].scales[Math.floor(k / GROUP)];
        else s += xt[k] * (dtype === 'f16' ? f16ToF32(f32ToF16(w[n * cols + k])) : w[n * cols + k]);
      }
      y[t * rows + n] = s;
    }
  }
  return y;
}

describe('GEMM kernels vs float64', () => {
  const kernels = native().cpuFeatures().availableKernels;
  // The prefix cache and chunked prefill rely on it: a row gives the same bits alone or among others.
  it.each(kernels)('kernel set %s: a token row gives bit-identical results whatever the number of rows', (kernel) => {
    const next = rng(freshSeed(`gemm batch invariance ${kernel}`));
    const rows = 37;
    for (const cols of [31, 96, 147]) {
      const T = 11;
      const w = Float32Array.from({ length: rows * cols }, () => next() * 2 - 1);
      const x = Float32Array.from({ length: T * cols }, () => next() * 2 - 1);
      for (const [dtype, int8Activations] of [['f32', 'int16'], ['f16', 'int16'], ['i8', 'int8'], ['i8', 'int16']] as const) {
        for (const layout of ['row-major', 'packed16']) {
          const packed = native().packWeight(w, rows, cols, dtype, layout);
          const gemm = (xs: Float32Array, tokens: number) => native().gemm({ kernel, dtype, layout, rows, cols, data: packed.data, scales: packed.scales, x: xs, tokens, int8Activations });
          const all = gemm(x, T);
          for (const [t0, n] of [[0, 1], [3, 1], [10, 1], [2, 2], [4, 3], [1, 4], [5, 6]]) {
            const part = gemm(x.slice(t0 * cols, (t0 + n) * cols), n);
            expect(part, `${dtype} ${int8Activations} ${layout} cols ${cols} rows ${t0}..${t0 + n}`).toEqual(all.slice(t0 * rows, (t0 + n) * rows));
          }
        }
      }
    }
  });
  it.each(kernels)('kernel set %s, every dtype and layout, odd sizes', (kernel) => {
    const next = rng(freshSeed(`gemm ${kernel}`));
    for (let trial = 0; trial < 12; trial++) {
      const rows = 1 + Math.floor(next() * 45);
      // Several k groups of 32 and a partial last one (zero-padded in packed16).
      const cols = 1 + Math.floor(next() * 150);
      const T = 1 + Math.floor(next() * 9);
      const w = Float32Array.from({ length: rows * cols }, () => next() * 2 - 1);
      // Activations with an outlier channel, as real models have (peak/RMS ~ 40).
      const outlier = Math.floor(next() * cols);
      const x = Float32Array.from({ length: T * cols }, (_, i) => (next() * 2 - 1) * (i % cols === outlier ? 120 : 3));
      const cases: Array<[string, Activations]> = [['f32', 'int16'], ['f16', 'int16'], ['i8', 'int8'], ['i8', 'int16']];
      for (const [dtype, int8Activations] of cases) {
        for (const layout of ['row-major', 'packed16']) {
          const packed = native().packWeight(w, rows, cols, dtype, layout);
          const y = native().gemm({ kernel, dtype, layout, rows, cols, data: packed.data, scales: packed.scales, x, tokens: T, int8Activations });
          const want = reference(dtype, w, rows, cols, x, T, int8Activations);
          const scale = Math.max(1, ...want.map(Math.abs));
          const what = `${dtype}${dtype === 'i8' ? ` (${int8Activations} activations)` : ''} ${layout} ${rows}x${cols} T=${T}`;
          for (let i = 0; i < want.length; i++) expect(Math.abs(y[i] - want[i]) / scale, `${what} at ${i}`).toBeLessThan(1e-5);
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

/** Attention in float64: query i (position qpos[i]) over keys 0..qpos[i] (inside the window). */
function attentionReference(q: Float32Array, qpos: Int32Array, k: Float64Array, v: Float64Array, hd: number, window: number, scale: number): Float64Array {
  const out = new Float64Array(qpos.length * hd);
  for (let i = 0; i < qpos.length; i++) {
    const seen: number[] = [];
    for (let j = 0; j <= qpos[i]; j++) if (window === 0 || qpos[i] - j < window) seen.push(j);
    const s = seen.map((j) => {
      let dot = 0;
      for (let d = 0; d < hd; d++) dot += q[i * hd + d] * k[j * hd + d];
      return dot * scale;
    });
    const mx = Math.max(...s);
    const p = s.map((x) => Math.exp(x - mx));
    const sum = p.reduce((a, b) => a + b, 0);
    seen.forEach((j, n) => {
      for (let d = 0; d < hd; d++) out[i * hd + d] += (p[n] / sum) * v[j * hd + d];
    });
  }
  return out;
}

describe('attention kernels vs float64', () => {
  const kernels = native().cpuFeatures().availableKernels;
  it.each(kernels)('kernel set %s: causal and sliding-window attention over f32 and f16 KV blocks, odd sizes', (kernel) => {
    const next = rng(freshSeed(`attention ${kernel}`));
    for (let trial = 0; trial < 16; trial++) {
      const hd = 1 + Math.floor(next() * 70);
      const nk = 1 + Math.floor(next() * 60);
      const nq = 1 + Math.floor(next() * 40);
      const blockTokens = 1 + Math.floor(next() * 20);
      const window = next() < 0.5 ? 0 : 1 + Math.floor(next() * nk);
      const kvDtype = next() < 0.5 ? 'f16' : 'f32';
      const scale = 1 / Math.sqrt(hd);
      // Scores large enough that the softmax is far from uniform.
      const q = Float32Array.from({ length: nq * hd }, () => (next() * 2 - 1) * 4);
      const qpos = Int32Array.from({ length: nq }, () => Math.floor(next() * nk));
      const kf = Float32Array.from({ length: nk * hd }, () => next() * 2 - 1);
      const vf = Float32Array.from({ length: nk * hd }, () => next() * 2 - 1);
      const k = kvDtype === 'f16' ? Uint16Array.from(kf, f32ToF16) : kf;
      const v = kvDtype === 'f16' ? Uint16Array.from(vf, f32ToF16) : vf;
      const asF64 = (a: Float32Array | Uint16Array) => Float64Array.from(a as ArrayLike<number>, (x) => (kvDtype === 'f16' ? f16ToF32(x) : x));
      const want = attentionReference(q, qpos, asF64(k), asF64(v), hd, window, scale);
      const got = native().attention({ kernel, hd, q, qpos, k, v, kvDtype, window, blockTokens, scale });
      expect(got.length).toBe(want.length);
      const label = `hd=${hd} nk=${nk} nq=${nq} block=${blockTokens} window=${window} ${kvDtype}`;
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i]), `${label} at ${i}`).toBeLessThan(2e-5);
    }
  });

  it('refuses queries at positions with no keys', () => {
    expect(() => native().attention({ kernel: 'scalar', hd: 4, q: new Float32Array(4), qpos: Int32Array.of(3), k: new Float32Array(8), v: new Float32Array(8), kvDtype: 'f32', window: 0, blockTokens: 4, scale: 1 }))
      .toThrow(/qpos must be key positions/);
  });
});

describe('element-wise kernels vs float64', () => {
  const kernels = native().cpuFeatures().availableKernels;
  it.each(kernels)('kernel set %s: SwiGLU silu(g) * u and f16 stores, odd lengths and extreme values', (kernel) => {
    const next = rng(freshSeed(`rowops ${kernel}`));
    for (let trial = 0; trial < 8; trial++) {
      const n = 1 + Math.floor(next() * 100);
      // Mostly ordinary activations, some far outside exp's range, zeros and f16 edge cases.
      const special = [0, -0, 100, -100, 65504, 70000, -70000, 6e-8, 1e-5];
      const x = Float32Array.from({ length: n }, () => (next() < 0.15 ? special[Math.floor(next() * special.length)] : (next() * 2 - 1) * 12));
      const u = Float32Array.from({ length: n }, () => (next() * 2 - 1) * 3);
      const g = native().rowOp({ kernel, op: 'silu_mul', x, u }) as Float32Array;
      for (let i = 0; i < n; i++) {
        const want = (x[i] / (1 + Math.exp(-x[i]))) * u[i];
        expect(Math.abs(g[i] - want), `silu_mul x=${x[i]} u=${u[i]}`).toBeLessThanOrEqual(2e-6 * Math.max(1, Math.abs(want)));
      }
      const h = native().rowOp({ kernel, op: 'to_f16', x }) as Uint16Array;
      for (let i = 0; i < n; i++) expect(h[i], `to_f16 ${x[i]}`).toBe(f32ToF16(x[i]));
    }
  });

  it('names an unknown operation', () => {
    expect(() => native().rowOp({ kernel: 'scalar', op: 'gelu', x: new Float32Array(2) })).toThrow(/op must be silu_mul or to_f16, got 'gelu'/);
  });
});
