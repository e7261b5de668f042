// AVX2 + FMA + F16C kernels. Tokens are processed four at a time so every weight load feeds four
// dot products; packed layouts give 16 output channels per load pair.
#include "backend.h"

#if !defined(NPUSERVE_NO_X86)
#include <immintrin.h>

#include "i8_packed.h"
#include "quantize_groups.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

namespace npu {

static constexpr int kTokenBlock = 4;
// The int8 GEMM shares each weight load among 3 tokens (with group scales, 4 tokens measured the
// same within noise, 2 tokens 10-15% slower).
static constexpr int kI8TokenBlock = 3;
// With int16 activations each token needs 4 accumulators per 16 rows: 2 tokens fill the 16 registers.
static constexpr int kI8A16TokenBlock = 2;

static inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

static inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

template <bool kHalf>
static inline __m256 load8(const void* p, size_t i) {
  if constexpr (kHalf) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  } else {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  }
}

template <bool kHalf>
static inline float load1(const void* p, size_t i) {
  if constexpr (kHalf) {
    return _cvtsh_ss(static_cast<const uint16_t*>(p)[i]);
  } else {
    return static_cast<const float*>(p)[i];
  }
}

// Row-major: one output channel at a time, dot products of up to four tokens sharing each load.
template <bool kHalf>
static void gemm_rowmajor(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  const int K = w.cols, K8 = K & ~7;
  for (int n = n0; n < n1; n++) {
    size_t row = (size_t)n * K;
    for (int t0 = 0; t0 < T; t0 += kTokenBlock) {
      int tb = std::min(kTokenBlock, T - t0);
      __m256 acc[kTokenBlock] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int k = 0; k < K8; k += 8) {
        __m256 wv = load8<kHalf>(w.data, row + k);
        for (int j = 0; j < tb; j++) acc[j] = _mm256_fmadd_ps(_mm256_loadu_ps(x + (size_t)(t0 + j) * ldx + k), wv, acc[j]);
      }
      for (int j = 0; j < tb; j++) {
        float s = hsum(acc[j]);
        const float* xt = x + (size_t)(t0 + j) * ldx;
        for (int k = K8; k < K; k++) s += xt[k] * load1<kHalf>(w.data, row + k);
        y[(size_t)(t0 + j) * ldy + n] = s;
      }
    }
  }
}

// acc[j] (16 channels in two vectors) = the dot products of token row xr[j] with the group's weights
// over k in [k0, k1), one FMA chain per vector in k order.
template <bool kHalf, int TB>
static inline void packed_chain(const void* wd, size_t base, const float* const* xr, int k0, int k1, __m256 (&acc)[TB][2]) {
#pragma GCC unroll 8
  for (int j = 0; j < TB; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
  for (int k = k0; k < k1; k++) {
    __m256 w0 = load8<kHalf>(wd, base + (size_t)k * kPackRows);
    __m256 w1 = load8<kHalf>(wd, base + (size_t)k * kPackRows + 8);
#pragma GCC unroll 8
    for (int j = 0; j < TB; j++) {
      __m256 xb = _mm256_broadcast_ss(xr[j] + k);
      acc[j][0] = _mm256_fmadd_ps(xb, w0, acc[j][0]);
      acc[j][1] = _mm256_fmadd_ps(xb, w1, acc[j][1]);
    }
  }
}

// Packed16: per group of 16 channels, per k one broadcast of x against 16 weights; TB tokens share
// each weight load. Every token row is summed the same way whatever TB is, so a row's result does not
// depend on how many tokens the step has or where the row sits among them (batch invariance: a
// prompt fed in chunks, or after a cached prefix, gives bit-identical logits): the first half of K in
// one chain, the second half in another, then their sum. With one token the two halves run
// interleaved, so the loop is not bound by the FMA latency of a single dependency chain; with more,
// the tokens' chains already overlap and the halves run one after the other.
template <bool kHalf, int TB>
static inline void packed_group(const void* wd, size_t base, int K, const float* x, int ldx, int t0, float* y, int ldy,
                                int g0, int valid) {
  const int half = K / 2;
  const float* xr[TB];
#pragma GCC unroll 8
  for (int j = 0; j < TB; j++) xr[j] = x + (size_t)(t0 + j) * ldx;
  __m256 lo[TB][2], hi[TB][2];
  if constexpr (TB == 1) {
    lo[0][0] = lo[0][1] = hi[0][0] = hi[0][1] = _mm256_setzero_ps();
    for (int k = 0; k < half; k++) {
      const size_t a = base + (size_t)k * kPackRows, b = base + (size_t)(half + k) * kPackRows;
      __m256 xa = _mm256_broadcast_ss(xr[0] + k), xb = _mm256_broadcast_ss(xr[0] + half + k);
      lo[0][0] = _mm256_fmadd_ps(xa, load8<kHalf>(wd, a), lo[0][0]);
      lo[0][1] = _mm256_fmadd_ps(xa, load8<kHalf>(wd, a + 8), lo[0][1]);
      hi[0][0] = _mm256_fmadd_ps(xb, load8<kHalf>(wd, b), hi[0][0]);
      hi[0][1] = _mm256_fmadd_ps(xb, load8<kHalf>(wd, b + 8), hi[0][1]);
    }
    if (K % 2) {  // the second half has the odd k, last
      const size_t b = base + (size_t)(K - 1) * kPackRows;
      __m256 xb = _mm256_broadcast_ss(xr[0] + K - 1);
      hi[0][0] = _mm256_fmadd_ps(xb, load8<kHalf>(wd, b), hi[0][0]);
      hi[0][1] = _mm256_fmadd_ps(xb, load8<kHalf>(wd, b + 8), hi[0][1]);
    }
  } else {
    packed_chain<kHalf, TB>(wd, base, xr, 0, half, lo);
    packed_chain<kHalf, TB>(wd, base, xr, half, K, hi);
  }
#pragma GCC unroll 8
  for (int j = 0; j < TB; j++) {
    __m256 s0 = _mm256_add_ps(lo[j][0], hi[j][0]), s1 = _mm256_add_ps(lo[j][1], hi[j][1]);
    float* yt = y + (size_t)(t0 + j) * ldy + g0;
    if (valid == kPackRows) {
      _mm256_storeu_ps(yt, s0);
      _mm256_storeu_ps(yt + 8, s1);
    } else {
      alignas(32) float tmp[kPackRows];
      _mm256_store_ps(tmp, s0);
      _mm256_store_ps(tmp + 8, s1);
      std::memcpy(yt, tmp, sizeof(float) * valid);
    }
  }
}

template <bool kHalf>
static void gemm_packed(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  const int K = w.cols;
  for (int g0 = n0; g0 < n1; g0 += kPackRows) {
    size_t base = (size_t)(g0 / kPackRows) * K * kPackRows;
    int valid = std::min(kPackRows, n1 - g0);
    int t0 = 0;
    for (; t0 + kTokenBlock <= T; t0 += kTokenBlock) packed_group<kHalf, kTokenBlock>(w.data, base, K, x, ldx, t0, y, ldy, g0, valid);
    switch (T - t0) {
      case 3: packed_group<kHalf, 3>(w.data, base, K, x, ldx, t0, y, ldy, g0, valid); break;
      case 2: packed_group<kHalf, 2>(w.data, base, K, x, ldx, t0, y, ldy, g0, valid); break;
      case 1: packed_group<kHalf, 1>(w.data, base, K, x, ldx, t0, y, ldy, g0, valid); break;
      default: break;
    }
  }
}

static void avx2_gemm_f32(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_packed<false>(w, x, ldx, T, y, ldy, n0, n1);
  else gemm_rowmajor<false>(w, x, ldx, T, y, ldy, n0, n1);
}

static void avx2_gemm_f16(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_packed<true>(w, x, ldx, T, y, ldy, n0, n1);
  else gemm_rowmajor<true>(w, x, ldx, T, y, ldy, n0, n1);
}

// One k group of 32 activations of a token in registers, and their int32 dot products (8 lanes to
// sum) with 32 int8 weights. int8: maddubs multiplies |x| (u8) by w with x's sign moved onto it (no
// i16 saturation in [-127, 127]), madd sums pairs; int16: the weights widened, madd.
template <class Q>
struct GroupActs;

template <>
struct GroupActs<int8_t> {
  __m256i xv, ax;
  explicit GroupActs(const int8_t* xg) : xv(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg))), ax(_mm256_abs_epi8(xv)) {}
  __m256i dot(const int8_t* wg) const {
    __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg));
    return _mm256_madd_epi16(_mm256_maddubs_epi16(ax, _mm256_sign_epi8(wv, xv)), _mm256_set1_epi16(1));
  }
};

template <>
struct GroupActs<int16_t> {
  __m256i x0, x1;
  explicit GroupActs(const int16_t* xg)
      : x0(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg))), x1(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(xg + 16))) {}
  __m256i dot(const int8_t* wg) const {
    __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wg)));
    __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wg + 16)));
    return _mm256_add_epi32(_mm256_madd_epi16(w0, x0), _mm256_madd_epi16(w1, x1));
  }
};

// Row-major, one token against RB output channels: the group's activations are loaded once for the
// RB rows, whose accumulators are independent chains. Per full k group: exact int32 dots, then one
// FMA by w_scale * x_scale; a partial last group (the row is not padded) is summed in scalar.
template <class Q, int RB>
static inline void i8_rows(const Weight& w, const QuantizedActsOf<Q>& x, int t, int n, float* y) {
  const int K = w.cols, G = w.k_groups(), full = K / kQuantGroup;
  const Q* xq = x.q + (size_t)t * x.ld;
  const float* xs = x.scale + (size_t)t * x.scales_ld();
  const int8_t* wr[RB];
  const uint16_t* ws[RB];
  __m256 acc[RB];
#pragma GCC unroll 8
  for (int r = 0; r < RB; r++) {
    wr[r] = static_cast<const int8_t*>(w.data) + (size_t)(n + r) * K;
    ws[r] = w.scales + (size_t)(n + r) * G;
    acc[r] = _mm256_setzero_ps();
  }
  for (int g = 0; g < full; g++) {
    const GroupActs<Q> xg(xq + g * kQuantGroup);
#pragma GCC unroll 8
    for (int r = 0; r < RB; r++) {
      __m256i dot = xg.dot(wr[r] + g * kQuantGroup);
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(_cvtsh_ss(ws[r][g]) * xs[g]), acc[r]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < RB; r++) {
    float sum = hsum(acc[r]);
    if (full < G) {
      int32_t dot = 0;
      for (int k = full * kQuantGroup; k < K; k++) dot += (int32_t)xq[k] * wr[r][k];
      sum += (float)dot * (_cvtsh_ss(ws[r][full]) * xs[full]);
    }
    y[n + r] = sum;
  }
}

template <class Q>
static void gemm_i8_rowmajor(const Weight& w, const QuantizedActsOf<Q>& x, int T, float* y, int ldy, int n0, int n1) {
  constexpr int kRows = 4;
  for (int t = 0; t < T; t++) {
    float* yt = y + (size_t)t * ldy;
    int n = n0;
    for (; n + kRows <= n1; n += kRows) i8_rows<Q, kRows>(w, x, t, n, yt);
    for (; n < n1; n++) i8_rows<Q, 1>(w, x, t, n, yt);
  }
}

// AVX2's s8 x s8 dot of 4-value lanes: maddubs multiplies |w| (u8) by x with w's sign moved onto
// it and sums pairs (values in [-127, 127]: no i16 saturation), madd sums the pairs' pairs.
struct MaddubsDot {
  static inline __m256i acc(__m256i acc, __m256i abs_w, __m256i signed_x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, signed_x), _mm256_set1_epi16(1)));
  }
};

static void avx2_gemm_i8(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_i8_packed<MaddubsDot, kI8TokenBlock>(w, x, T, y, ldy, n0, n1);
  else gemm_i8_rowmajor(w, x, T, y, ldy, n0, n1);
}

// AVX2's s16 x s16 dot of 2-value lanes added to int32 accumulators.
struct MaddDot16 {
  static inline __m256i acc(__m256i acc, __m256i w16, __m256i x16) { return _mm256_add_epi32(acc, _mm256_madd_epi16(w16, x16)); }
};

static void avx2_gemm_i8_a16(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_i8_a16_packed<MaddDot16, kI8A16TokenBlock>(w, x, T, y, ldy, n0, n1);
  else gemm_i8_rowmajor(w, x, T, y, ldy, n0, n1);
}

static inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Full groups of 32 in vectors (the same float operations as the scalar kernel, so the same q and
// scales); a partial last group in scalar. Q is int8_t (levels 127) or int16_t (levels 32767).
template <class Q>
static void avx2_quantize_groups(const float* x, int k, int ld, Q* q, float* scales) {
  constexpr float levels = sizeof(Q) == 1 ? 127.f : 32767.f;
  const __m256 sign_mask = _mm256_set1_ps(-0.f);
  const int full = k / kQuantGroup;
  for (int g = 0; g < full; g++) {
    const float* xg = x + g * kQuantGroup;
    __m256 v[4], vmax = _mm256_setzero_ps();
    for (int i = 0; i < 4; i++) {
      v[i] = _mm256_loadu_ps(xg + 8 * i);
      vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_mask, v[i]));
    }
    float amax = hmax(vmax);
    __m256 inv = _mm256_set1_ps(amax > 0.f ? levels / amax : 0.f);
    __m256i i[4];
    for (int j = 0; j < 4; j++) i[j] = _mm256_cvtps_epi32(_mm256_mul_ps(v[j], inv));
    // The packs interleave 128-bit lanes; the permutes restore element order.
    if constexpr (sizeof(Q) == 1) {
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
      p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * kQuantGroup), p);
    } else {
      for (int h = 0; h < 2; h++) {
        __m256i p = _mm256_permute4x64_epi64(_mm256_packs_epi32(i[2 * h], i[2 * h + 1]), 0xD8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + g * kQuantGroup + 16 * h), p);
      }
    }
    scales[g] = amax / levels;
  }
  const int done = full * kQuantGroup;
  quantize_groups_scalar(x + done, k - done, ld - done, q + done, scales + full, levels);
}

static void avx2_quantize_row(const float* x, int k, int ld, int8_t* q, float* scales) { avx2_quantize_groups(x, k, ld, q, scales); }

static void avx2_quantize_row_i16(const float* x, int k, int ld, int16_t* q, float* scales) { avx2_quantize_groups(x, k, ld, q, scales); }

// exp(x) in float: Cephes' expf (range reduction by ln 2 in two parts, degree-5 polynomial), about
// 1 ulp; -inf and anything below the float range give 0.
static inline __m256 exp_ps(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365448f), hi = _mm256_set1_ps(88.3762626f);
  __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

// Scores of QV x 8 queries (lanes) against JB keys: per head dimension, QV loads of the transposed
// queries and JB broadcasts of key elements feed QV x JB FMAs; no horizontal sums.
template <int QV, int JB>
static inline void attn_scores_tile(const AttnQueries& a, int q0, const float* kb, size_t kld, int j0, float* st) {
  __m256 acc[QV][JB];
  #pragma GCC unroll 16
  for (int v = 0; v < QV; v++)
    #pragma GCC unroll 16
    for (int j = 0; j < JB; j++) acc[v][j] = _mm256_setzero_ps();
  const float* kr[JB];
  #pragma GCC unroll 16
  for (int j = 0; j < JB; j++) kr[j] = kb + (size_t)(j0 + j) * kld;
  for (int d = 0; d < a.hd; d++) {
    const float* qd = a.qt + (size_t)d * a.nq + q0;
    __m256 qv[QV];
    #pragma GCC unroll 16
    for (int v = 0; v < QV; v++) qv[v] = _mm256_loadu_ps(qd + 8 * v);
    #pragma GCC unroll 16
    for (int j = 0; j < JB; j++) {
      __m256 kv = _mm256_broadcast_ss(kr[j] + d);
      #pragma GCC unroll 16
      for (int v = 0; v < QV; v++) acc[v][j] = _mm256_fmadd_ps(qv[v], kv, acc[v][j]);
    }
  }
  #pragma GCC unroll 16
  for (int j = 0; j < JB; j++)
    #pragma GCC unroll 16
    for (int v = 0; v < QV; v++) _mm256_storeu_ps(st + (size_t)(j0 + j) * a.nq + q0 + 8 * v, acc[v][j]);
}

template <int QV>
static void attn_scores_rows(const AttnQueries& a, int q0, const float* kb, size_t kld, int n, float* st) {
  int j = 0;
  for (; j + 4 <= n; j += 4) attn_scores_tile<QV, 4>(a, q0, kb, kld, j, st);
  switch (n - j) {
    case 3: attn_scores_tile<QV, 3>(a, q0, kb, kld, j, st); break;
    case 2: attn_scores_tile<QV, 2>(a, q0, kb, kld, j, st); break;
    case 1: attn_scores_tile<QV, 1>(a, q0, kb, kld, j, st); break;
    default: break;
  }
}

// o[i] += sum_j p[j][i] v[j] for two queries, CV vectors of head dimensions from d0: each value load
// serves both queries.
template <bool kHalf, int CV>
static inline void attn_values_tile(const AttnQueries& a, int i0, const void* vb, size_t vld, int n, const float* st, int d0) {
  __m256 acc[2][CV];
  float* o0 = a.o + (size_t)i0 * a.hd + d0;
  float* o1 = o0 + a.hd;
  #pragma GCC unroll 16
  for (int c = 0; c < CV; c++) {
    acc[0][c] = _mm256_loadu_ps(o0 + 8 * c);
    acc[1][c] = _mm256_loadu_ps(o1 + 8 * c);
  }
  for (int j = 0; j < n; j++) {
    __m256 p0 = _mm256_broadcast_ss(st + (size_t)j * a.nq + i0), p1 = _mm256_broadcast_ss(st + (size_t)j * a.nq + i0 + 1);
    const size_t vr = (size_t)j * vld + d0;
    #pragma GCC unroll 16
    for (int c = 0; c < CV; c++) {
      __m256 vv = load8<kHalf>(vb, vr + 8 * c);
      acc[0][c] = _mm256_fmadd_ps(p0, vv, acc[0][c]);
      acc[1][c] = _mm256_fmadd_ps(p1, vv, acc[1][c]);
    }
  }
  #pragma GCC unroll 16
  for (int c = 0; c < CV; c++) {
    _mm256_storeu_ps(o0 + 8 * c, acc[0][c]);
    _mm256_storeu_ps(o1 + 8 * c, acc[1][c]);
  }
}

// n f16 rows ld elements apart -> n contiguous f32 rows of hd.
static void f16_rows_to_f32(const void* src, size_t ld, int n, int hd, float* dst) {
  for (int j = 0; j < n; j++) {
    const uint16_t* in = static_cast<const uint16_t*>(src) + (size_t)j * ld;
    float* out = dst + (size_t)j * hd;
    int d = 0;
    for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(out + d, load8<true>(in, d));
    for (; d < hd; d++) out[d] = _cvtsh_ss(in[d]);
  }
}

static void avx2_attn_block(const AttnQueries& a, const void* k, const void* v, bool f16, size_t ld, int n, int kpos0) {
  const int hd = a.hd, nq = a.nq;
  // f16 keys are converted once here for all nq queries (the scores broadcast single elements);
  // f16 values too when more than one pair of queries reads them. f32 rows are read in place.
  const int nv = std::min(nq, round_up(a.real, 2));
  const float* kb = static_cast<const float*>(k);
  const void* vb = v;
  size_t kld = ld, vld = ld;
  bool v_half = f16;
  float* st = a.scratch;                   // [n][nq] scores, then probabilities
  float* alpha = st + (size_t)n * nq;      // [nq]
  if (f16) {
    float* kf = alpha + nq;
    f16_rows_to_f32(k, ld, n, hd, kf);
    kb = kf;
    kld = hd;
    if (nv > 4) {
      float* vf = kf + (size_t)n * hd;
      f16_rows_to_f32(v, ld, n, hd, vf);
      vb = vf;
      vld = hd;
      v_half = false;
    }
  }
  int q0 = 0;
  for (; q0 + 16 <= nq; q0 += 16) attn_scores_rows<2>(a, q0, kb, kld, n, st);
  for (; q0 < nq; q0 += 8) attn_scores_rows<1>(a, q0, kb, kld, n, st);

  // Mask, then the online softmax for 8 queries at a time (all vertical: lanes are queries).
  const __m256 neg_inf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  for (int q = 0; q < nq; q += 8) {
    __m256i qp = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.qpos + q));
    __m256 mx = neg_inf;
    for (int j = 0; j < n; j++) {
      __m256i kp = _mm256_set1_epi32(kpos0 + j);
      __m256i hidden = _mm256_cmpgt_epi32(kp, qp);  // key after the query
      if (a.window > 0)  // qpos - kp >= window  <=>  qpos > kp + window - 1
        hidden = _mm256_or_si256(hidden, _mm256_cmpgt_epi32(qp, _mm256_add_epi32(kp, _mm256_set1_epi32(a.window - 1))));
      float* sj = st + (size_t)j * nq + q;
      __m256 sv = _mm256_blendv_ps(_mm256_loadu_ps(sj), neg_inf, _mm256_castsi256_ps(hidden));
      _mm256_storeu_ps(sj, sv);
      mx = _mm256_max_ps(mx, sv);
    }
    __m256 m_old = _mm256_loadu_ps(a.m + q);
    __m256 m_new = _mm256_max_ps(m_old, mx);
    // Queries that have seen nothing yet keep m = -inf; subtracting 0 keeps their exp() at 0.
    __m256 m_sub = _mm256_blendv_ps(m_new, _mm256_setzero_ps(), _mm256_cmp_ps(m_new, neg_inf, _CMP_EQ_OQ));
    __m256 al = exp_ps(_mm256_sub_ps(m_old, m_sub));
    __m256 sum = _mm256_setzero_ps();
    for (int j = 0; j < n; j++) {
      float* sj = st + (size_t)j * nq + q;
      __m256 p = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(sj), m_sub));
      _mm256_storeu_ps(sj, p);
      sum = _mm256_add_ps(sum, p);
    }
    _mm256_storeu_ps(a.l + q, _mm256_fmadd_ps(_mm256_loadu_ps(a.l + q), al, sum));
    _mm256_storeu_ps(a.m + q, m_new);
    _mm256_storeu_ps(alpha + q, al);
  }

  // Rescale each output by its alpha, then add this block's values (real queries only, in pairs).
  for (int i = 0; i < nv; i++) {
    float* o = a.o + (size_t)i * hd;
    __m256 al = _mm256_set1_ps(alpha[i]);
    int d = 0;
    for (; d + 8 <= hd; d += 8) _mm256_storeu_ps(o + d, _mm256_mul_ps(_mm256_loadu_ps(o + d), al));
    for (; d < hd; d++) o[d] *= alpha[i];
  }
  for (int i = 0; i < nv; i += 2) {
    int d = 0;
    if (v_half) {
      for (; d + 32 <= hd; d += 32) attn_values_tile<true, 4>(a, i, vb, vld, n, st, d);
      for (; d + 8 <= hd; d += 8) attn_values_tile<true, 1>(a, i, vb, vld, n, st, d);
    } else {
      for (; d + 32 <= hd; d += 32) attn_values_tile<false, 4>(a, i, vb, vld, n, st, d);
      for (; d + 8 <= hd; d += 8) attn_values_tile<false, 1>(a, i, vb, vld, n, st, d);
    }
    for (; d < hd; d++) {
      float s0 = 0.f, s1 = 0.f;
      for (int j = 0; j < n; j++) {
        float vv = v_half ? load1<true>(vb, (size_t)j * vld + d) : static_cast<const float*>(vb)[(size_t)j * vld + d];
        s0 += st[(size_t)j * nq + i] * vv;
        s1 += st[(size_t)j * nq + i + 1] * vv;
      }
      a.o[(size_t)i * hd + d] += s0;
      a.o[(size_t)(i + 1) * hd + d] += s1;
    }
  }
}

static void avx2_silu_mul(float* g, const float* u, int n) {
  const __m256 one = _mm256_set1_ps(1.f), sign = _mm256_set1_ps(-0.f);
  int i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 x = _mm256_loadu_ps(g + i);
    __m256 e = exp_ps(_mm256_xor_ps(x, sign));  // exp(-x); 0 below the float range, so silu -> x
    _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(x, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; i++) g[i] = g[i] / (1.f + std::exp(-g[i])) * u[i];
}

static void avx2_to_f16(const float* x, int n, uint16_t* out) {
  int i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) out[i] = _cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT);
}

bool avx2_kernels_available() {
  const CpuFeatures& f = cpu_features();
  return f.avx2 && f.fma && f.f16c;
}

const Kernels kAvx2Kernels = {"avx2",           avx2_gemm_f32,         avx2_gemm_f16,   avx2_gemm_i8,  avx2_quantize_row,
                              avx2_gemm_i8_a16, avx2_quantize_row_i16, avx2_attn_block, avx2_silu_mul, avx2_to_f16};

}  // namespace npu

#else

namespace npu {
bool avx2_kernels_available() { return false; }
const Kernels kAvx2Kernels = {"avx2", nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
}  // namespace npu

#endif
