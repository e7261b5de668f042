// Portable reference kernels: every layout and dtype, plain loops. Each SIMD kernel is tested
// against these on random inputs.
#include <algorithm>
#include <cmath>
#include <limits>

#include "backend.h"
#include "half.h"
#include "quantize_groups.h"

namespace npu {

// Offset of element (n, k) in a weight's data, in elements.
static inline size_t elem_index(const Weight& w, int n, int k) {
  if (w.layout == Layout::RowMajor) return (size_t)n * w.cols + k;
  size_t group = (size_t)(n / kPackRows) * (size_t)w.padded_cols() * kPackRows;
  if (w.dtype == DType::I8) return group + (size_t)(k / kPackK) * kPackRows * kPackK + (n % kPackRows) * kPackK + k % kPackK;
  return group + (size_t)k * kPackRows + n % kPackRows;
}

static void ref_gemm_f32(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  const float* data = static_cast<const float*>(w.data);
  for (int t = 0; t < T; t++) {
    const float* xt = x + (size_t)t * ldx;
    for (int n = n0; n < n1; n++) {
      float acc = 0.f;
      for (int k = 0; k < w.cols; k++) acc += xt[k] * data[elem_index(w, n, k)];
      y[(size_t)t * ldy + n] = acc;
    }
  }
}

static void ref_gemm_f16(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  const uint16_t* data = static_cast<const uint16_t*>(w.data);
  for (int t = 0; t < T; t++) {
    const float* xt = x + (size_t)t * ldx;
    for (int n = n0; n < n1; n++) {
      float acc = 0.f;
      for (int k = 0; k < w.cols; k++) acc += xt[k] * half_to_float(data[elem_index(w, n, k)]);
      y[(size_t)t * ldy + n] = acc;
    }
  }
}

// Per k group: an exact int32 dot product, then scaled by the weight's and the token's group scale
// and summed in float, in group order.
// int8 or int16 activations, the same group scheme.
template <class Q>
static void ref_gemm_i8_groups(const Weight& w, const QuantizedActsOf<Q>& x, int T, float* y, int ldy, int n0, int n1) {
  const int8_t* data = static_cast<const int8_t*>(w.data);
  for (int t = 0; t < T; t++) {
    const Q* qt = x.q + (size_t)t * x.ld;
    const float* st = x.scale + (size_t)t * x.scales_ld();
    for (int n = n0; n < n1; n++) {
      float acc = 0.f;
      for (int g = 0; g < w.k_groups(); g++) {
        int32_t dot = 0;
        for (int k = g * kQuantGroup; k < std::min(w.cols, (g + 1) * kQuantGroup); k++) dot += (int32_t)qt[k] * (int32_t)data[elem_index(w, n, k)];
        acc += (float)dot * (half_to_float(w.scales[scale_index(w, n, g)]) * st[g]);
      }
      y[(size_t)t * ldy + n] = acc;
    }
  }
}

static void ref_gemm_i8(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  ref_gemm_i8_groups(w, x, T, y, ldy, n0, n1);
}

static void ref_gemm_i8_a16(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1) {
  ref_gemm_i8_groups(w, x, T, y, ldy, n0, n1);
}

static void ref_quantize_row(const float* x, int k, int ld, int8_t* q, float* scales) { quantize_groups_scalar(x, k, ld, q, scales, 127.f); }

static void ref_quantize_row_i16(const float* x, int k, int ld, int16_t* q, float* scales) { quantize_groups_scalar(x, k, ld, q, scales, 32767.f); }

static inline float kv_at(const void* p, bool f16, size_t i) {
  return f16 ? half_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

static void ref_attn_block(const AttnQueries& a, const void* k, const void* v, bool f16, size_t ld, int n, int kpos0) {
  const float neg_inf = -std::numeric_limits<float>::infinity();
  float* s = a.scratch;  // [n] scores of one query
  for (int i = 0; i < a.real; i++) {
    const int qp = a.qpos[i];
    float mx = neg_inf;
    for (int j = 0; j < n; j++) {
      int kp = kpos0 + j;
      if (kp > qp || (a.window > 0 && qp - kp >= a.window)) {
        s[j] = neg_inf;
        continue;
      }
      float acc = 0.f;
      for (int d = 0; d < a.hd; d++) acc += a.qt[(size_t)d * a.nq + i] * kv_at(k, f16, (size_t)j * ld + d);
      s[j] = acc;
      mx = std::max(mx, acc);
    }
    float m_new = std::max(a.m[i], mx);
    if (m_new == neg_inf) continue;  // nothing seen yet
    float alpha = std::exp(a.m[i] - m_new);
    float* o = a.o + (size_t)i * a.hd;
    for (int d = 0; d < a.hd; d++) o[d] *= alpha;
    float sum = 0.f;
    for (int j = 0; j < n; j++) {
      if (s[j] == neg_inf) continue;
      float p = std::exp(s[j] - m_new);
      sum += p;
      for (int d = 0; d < a.hd; d++) o[d] += p * kv_at(v, f16, (size_t)j * ld + d);
    }
    a.l[i] = a.l[i] * alpha + sum;
    a.m[i] = m_new;
  }
}

static void ref_silu_mul(float* g, const float* u, int n) {
  for (int i = 0; i < n; i++) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

static void ref_to_f16(const float* x, int n, uint16_t* out) {
  for (int i = 0; i < n; i++) out[i] = float_to_half(x[i]);
}

const Kernels kRefKernels = {"scalar",           ref_gemm_f32,         ref_gemm_f16,   ref_gemm_i8,  ref_quantize_row,
                             ref_gemm_i8_a16,    ref_quantize_row_i16, ref_attn_block, ref_silu_mul, ref_to_f16};

}  // namespace npu
