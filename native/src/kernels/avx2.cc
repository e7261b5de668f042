// AVX2 + FMA + F16C kernels. Tokens are processed four at a time so every weight load feeds four
// dot products; packed layouts give 16 output channels per load pair.
#include "backend.h"

#if !defined(NPUSERVE_NO_X86)
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

namespace npu {

static constexpr int kTokenBlock = 4;

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

// Packed16: per group of 16 channels, per k one broadcast of x against 16 weights. TB tokens share
// each weight load; with one token, two k steps run in separate accumulators so the loop is not
// bound by the FMA latency of a single dependency chain.
template <bool kHalf, int TB>
static inline void packed_group(const void* wd, size_t base, int K, const float* x, int ldx, int t0, float* y, int ldy,
                                int g0, int valid) {
  constexpr int kChains = TB == 1 ? 2 : 1;
  __m256 acc[kChains][TB][2];
  for (int c = 0; c < kChains; c++)
    for (int j = 0; j < TB; j++) acc[c][j][0] = acc[c][j][1] = _mm256_setzero_ps();
  const float* xr[TB];
  for (int j = 0; j < TB; j++) xr[j] = x + (size_t)(t0 + j) * ldx;
  int k = 0;
  for (; k + kChains <= K; k += kChains) {
    for (int c = 0; c < kChains; c++) {
      __m256 w0 = load8<kHalf>(wd, base + (size_t)(k + c) * kPackRows);
      __m256 w1 = load8<kHalf>(wd, base + (size_t)(k + c) * kPackRows + 8);
      for (int j = 0; j < TB; j++) {
        __m256 xb = _mm256_broadcast_ss(xr[j] + k + c);
        acc[c][j][0] = _mm256_fmadd_ps(xb, w0, acc[c][j][0]);
        acc[c][j][1] = _mm256_fmadd_ps(xb, w1, acc[c][j][1]);
      }
    }
  }
  for (; k < K; k++) {
    __m256 w0 = load8<kHalf>(wd, base + (size_t)k * kPackRows);
    __m256 w1 = load8<kHalf>(wd, base + (size_t)k * kPackRows + 8);
    for (int j = 0; j < TB; j++) {
      __m256 xb = _mm256_broadcast_ss(xr[j] + k);
      acc[0][j][0] = _mm256_fmadd_ps(xb, w0, acc[0][j][0]);
      acc[0][j][1] = _mm256_fmadd_ps(xb, w1, acc[0][j][1]);
    }
  }
  for (int j = 0; j < TB; j++) {
    for (int c = 1; c < kChains; c++) {
      acc[0][j][0] = _mm256_add_ps(acc[0][j][0], acc[c][j][0]);
      acc[0][j][1] = _mm256_add_ps(acc[0][j][1], acc[c][j][1]);
    }
    float* yt = y + (size_t)(t0 + j) * ldy + g0;
    if (valid == kPackRows) {
      _mm256_storeu_ps(yt, acc[0][j][0]);
      _mm256_storeu_ps(yt + 8, acc[0][j][1]);
    } else {
      alignas(32) float tmp[kPackRows];
      _mm256_store_ps(tmp, acc[0][j][0]);
      _mm256_store_ps(tmp + 8, acc[0][j][1]);
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

// s8 x s8 -> s32 on AVX2: |x| (u8) times w with x's sign moved onto it. Quantized values are in
// [-127, 127], so the pairwise i16 sums of maddubs cannot saturate.
static inline __m256i dot_s8(__m256i xv, __m256i wv, __m256i acc) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p16 = _mm256_maddubs_epi16(_mm256_abs_epi8(xv), _mm256_sign_epi8(wv, xv));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
}

static void gemm_i8_rowmajor(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  const int K = w.cols, K32 = K & ~31;
  const int8_t* data = static_cast<const int8_t*>(w.data);
  for (int n = n0; n < n1; n++) {
    const int8_t* wr = data + (size_t)n * K;
    for (int t0 = 0; t0 < T; t0 += kTokenBlock) {
      int tb = std::min(kTokenBlock, T - t0);
      __m256i acc[kTokenBlock] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
      for (int k = 0; k < K32; k += 32) {
        __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wr + k));
        for (int j = 0; j < tb; j++) {
          __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q + (size_t)(t0 + j) * x.ld + k));
          acc[j] = dot_s8(xv, wv, acc[j]);
        }
      }
      for (int j = 0; j < tb; j++) {
        int32_t s = hsum_i32(acc[j]);
        const int8_t* qt = x.q + (size_t)(t0 + j) * x.ld;
        for (int k = K32; k < K; k++) s += (int32_t)qt[k] * wr[k];
        y[(size_t)(t0 + j) * ldy + n] = (float)s * x.scale[t0 + j] * w.scales[n];
      }
    }
  }
}

// One group of 16 channels against TB tokens; TB is a template argument so the 2 x TB accumulators
// stay in registers (a runtime token count made the compiler keep them in memory).
template <int TB>
static inline void i8_group(const int8_t* wg, int K4, const QuantizedActs& x, int t0, __m256 s0, __m256 s1, float* y,
                            int ldy, int g0, int valid) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i acc[TB][2];
  for (int j = 0; j < TB; j++) acc[j][0] = acc[j][1] = _mm256_setzero_si256();
  const int8_t* xr[TB];
  for (int j = 0; j < TB; j++) xr[j] = x.q + (size_t)(t0 + j) * x.ld;
  for (int k4 = 0; k4 < K4; k4++) {
    __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + (size_t)k4 * 64));
    __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + (size_t)k4 * 64 + 32));
    // |w| (u8) times x with w's sign moved onto it: the abs is shared by the TB tokens.
    __m256i aw0 = _mm256_abs_epi8(w0), aw1 = _mm256_abs_epi8(w1);
    for (int j = 0; j < TB; j++) {
      int32_t xs;
      std::memcpy(&xs, xr[j] + k4 * kPackK, 4);
      __m256i xv = _mm256_set1_epi32(xs);
      acc[j][0] = _mm256_add_epi32(acc[j][0], _mm256_madd_epi16(_mm256_maddubs_epi16(aw0, _mm256_sign_epi8(xv, w0)), ones));
      acc[j][1] = _mm256_add_epi32(acc[j][1], _mm256_madd_epi16(_mm256_maddubs_epi16(aw1, _mm256_sign_epi8(xv, w1)), ones));
    }
  }
  for (int j = 0; j < TB; j++) {
    __m256 xs = _mm256_set1_ps(x.scale[t0 + j]);
    __m256 y0 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[j][0]), xs), s0);
    __m256 y1 = _mm256_mul_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc[j][1]), xs), s1);
    float* yt = y + (size_t)(t0 + j) * ldy + g0;
    if (valid == kPackRows) {
      _mm256_storeu_ps(yt, y0);
      _mm256_storeu_ps(yt + 8, y1);
    } else {
      alignas(32) float tmp[kPackRows];
      _mm256_store_ps(tmp, y0);
      _mm256_store_ps(tmp + 8, y1);
      std::memcpy(yt, tmp, sizeof(float) * valid);
    }
  }
}

static void gemm_i8_packed(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  const int K4 = w.padded_cols() / kPackK;
  const int8_t* data = static_cast<const int8_t*>(w.data);
  for (int g0 = n0; g0 < n1; g0 += kPackRows) {
    const int8_t* wg = data + (size_t)(g0 / kPackRows) * K4 * kPackRows * kPackK;
    int valid = std::min(kPackRows, n1 - g0);
    __m256 s0 = _mm256_loadu_ps(w.scales + g0), s1 = _mm256_loadu_ps(w.scales + g0 + 8);
    int t0 = 0;
    for (; t0 + kTokenBlock <= T; t0 += kTokenBlock) i8_group<kTokenBlock>(wg, K4, x, t0, s0, s1, y, ldy, g0, valid);
    switch (T - t0) {
      case 3: i8_group<3>(wg, K4, x, t0, s0, s1, y, ldy, g0, valid); break;
      case 2: i8_group<2>(wg, K4, x, t0, s0, s1, y, ldy, g0, valid); break;
      case 1: i8_group<1>(wg, K4, x, t0, s0, s1, y, ldy, g0, valid); break;
      default: break;
    }
  }
}

static void avx2_gemm_i8(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_i8_packed(w, x, T, y, ldy, n0, n1);
  else gemm_i8_rowmajor(w, x, T, y, ldy, n0, n1);
}

static void avx2_quantize_row(const float* x, int k, int ld, int8_t* q, float* scale) {
  const __m256 sign_mask = _mm256_set1_ps(-0.f);
  __m256 vmax = _mm256_setzero_ps();
  int k8 = k & ~7;
  for (int i = 0; i < k8; i += 8) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign_mask, _mm256_loadu_ps(x + i)));
  alignas(32) float m[8];
  _mm256_store_ps(m, vmax);
  float amax = 0.f;
  for (int i = 0; i < 8; i++) amax = std::max(amax, m[i]);
  for (int i = k8; i < k; i++) amax = std::max(amax, std::fabs(x[i]));
  float inv = amax > 0.f ? 127.f / amax : 0.f;
  __m256 vinv = _mm256_set1_ps(inv);
  for (int i = 0; i < k8; i += 8) {
    __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    alignas(32) int32_t tmp[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), v);
    for (int j = 0; j < 8; j++) q[i + j] = (int8_t)tmp[j];
  }
  for (int i = k8; i < k; i++) q[i] = (int8_t)std::nearbyint(x[i] * inv);
  for (int i = k; i < ld; i++) q[i] = 0;
  *scale = amax / 127.f;
}

template <bool kHalf>
static inline float dot_kv(const float* a, const void* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), load8<kHalf>(b, i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * load1<kHalf>(b, i);
  return s;
}

// Four keys at a time: four independent FMA chains, then one combined horizontal reduction.
// k points at f32 (kHalf false) or f16 (kHalf true) rows ld elements apart.
template <bool kHalf>
static void attn_scores(const float* q, const void* k, size_t ld, int n, int hd, float scale, float* scores) {
  int j = 0;
  if (hd % 8 == 0) {
    for (; j + 4 <= n; j += 4) {
      size_t r = (size_t)j * ld;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int i = 0; i < hd; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, load8<kHalf>(k, r + i), a0);
        a1 = _mm256_fmadd_ps(qv, load8<kHalf>(k, r + ld + i), a1);
        a2 = _mm256_fmadd_ps(qv, load8<kHalf>(k, r + 2 * ld + i), a2);
        a3 = _mm256_fmadd_ps(qv, load8<kHalf>(k, r + 3 * ld + i), a3);
      }
      __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
      __m256 h = _mm256_hadd_ps(h01, h23);  // per 128-bit half: s0 s1 s2 s3
      __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
      _mm_storeu_ps(scores + j, _mm_mul_ps(s4, _mm_set1_ps(scale)));
    }
  }
  for (; j < n; j++) {
    const void* kj = kHalf ? (const void*)(static_cast<const uint16_t*>(k) + j * ld) : (const void*)(static_cast<const float*>(k) + j * ld);
    scores[j] = dot_kv<kHalf>(q, kj, hd) * scale;
  }
}

// out stays in registers across the block's rows for head_dim 64 and 128.
template <bool kHalf, int kVecs>
static void attn_values_fixed(const float* w, const void* v, size_t ld, int n, float* out) {
  __m256 acc[kVecs];
  for (int i = 0; i < kVecs; i++) acc[i] = _mm256_loadu_ps(out + 8 * i);
  for (int j = 0; j < n; j++) {
    __m256 wv = _mm256_set1_ps(w[j]);
    for (int i = 0; i < kVecs; i++) acc[i] = _mm256_fmadd_ps(wv, load8<kHalf>(v, j * ld + 8 * i), acc[i]);
  }
  for (int i = 0; i < kVecs; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

template <bool kHalf>
static void attn_values(const float* w, const void* v, size_t ld, int n, int hd, float* out) {
  if (hd == 64) return attn_values_fixed<kHalf, 8>(w, v, ld, n, out);
  if (hd == 128) return attn_values_fixed<kHalf, 16>(w, v, ld, n, out);
  for (int j = 0; j < n; j++) {
    __m256 wv = _mm256_set1_ps(w[j]);
    size_t r = (size_t)j * ld;
    int i = 0;
    for (; i + 8 <= hd; i += 8) _mm256_storeu_ps(out + i, _mm256_fmadd_ps(wv, load8<kHalf>(v, r + i), _mm256_loadu_ps(out + i)));
    for (; i < hd; i++) out[i] += w[j] * load1<kHalf>(v, r + i);
  }
}

static void avx2_attn_scores(const float* q, const float* k, size_t ld, int n, int hd, float scale, float* scores) {
  attn_scores<false>(q, k, ld, n, hd, scale, scores);
}
static void avx2_attn_values(const float* w, const float* v, size_t ld, int n, int hd, float* out) {
  attn_values<false>(w, v, ld, n, hd, out);
}
static void avx2_attn_scores_f16(const float* q, const uint16_t* k, size_t ld, int n, int hd, float scale, float* scores) {
  attn_scores<true>(q, k, ld, n, hd, scale, scores);
}
static void avx2_attn_values_f16(const float* w, const uint16_t* v, size_t ld, int n, int hd, float* out) {
  attn_values<true>(w, v, ld, n, hd, out);
}

bool avx2_kernels_available() {
  const CpuFeatures& f = cpu_features();
  return f.avx2 && f.fma && f.f16c;
}

const Kernels kAvx2Kernels = {"avx2", avx2_gemm_f32, avx2_gemm_f16, avx2_gemm_i8, avx2_quantize_row, avx2_attn_scores, avx2_attn_values,
                               avx2_attn_scores_f16, avx2_attn_values_f16};

}  // namespace npu

#else

namespace npu {
static inline float dot_f32(const float* a, const float* b, int n) {
  __m256 acc = _mm256_setzero_ps();
  int i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  float s = hsum(acc);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// Four keys at a time: four independent FMA chains, then one combined horizontal reduction.
static void avx2_attn_scores(const float* q, const float* k, size_t ld, int n, int hd, float scale, float* scores) {
  int j = 0;
  if (hd % 8 == 0) {
    for (; j + 4 <= n; j += 4) {
      const float* k0 = k + j * ld;
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int i = 0; i < hd; i += 8) {
        __m256 qv = _mm256_loadu_ps(q + i);
        a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + i), a0);
        a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + ld + i), a1);
        a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * ld + i), a2);
        a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * ld + i), a3);
      }
      __m256 h01 = _mm256_hadd_ps(a0, a1), h23 = _mm256_hadd_ps(a2, a3);
      __m256 h = _mm256_hadd_ps(h01, h23);  // per 128-bit half: s0 s1 s2 s3
      __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
      _mm_storeu_ps(scores + j, _mm_mul_ps(s4, _mm_set1_ps(scale)));
    }
  }
  for (; j < n; j++) scores[j] = dot_f32(q, k + j * ld, hd) * scale;
}

// out stays in registers across the block's rows for head_dim 64 and 128.
template <int kVecs>
static void attn_values_fixed(const float* w, const float* v, size_t ld, int n, float* out) {
  __m256 acc[kVecs];
  for (int i = 0; i < kVecs; i++) acc[i] = _mm256_loadu_ps(out + 8 * i);
  for (int j = 0; j < n; j++) {
    __m256 wv = _mm256_set1_ps(w[j]);
    const float* vj = v + j * ld;
    for (int i = 0; i < kVecs; i++) acc[i] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(vj + 8 * i), acc[i]);
  }
  for (int i = 0; i < kVecs; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

static void avx2_attn_values(const float* w, const float* v, size_t ld, int n, int hd, float* out) {
  if (hd == 64) return attn_values_fixed<8>(w, v, ld, n, out);
  if (hd == 128) return attn_values_fixed<16>(w, v, ld, n, out);
  for (int j = 0; j < n; j++) {
    __m256 wv = _mm256_set1_ps(w[j]);
    const float* vj = v + j * ld;
    int i = 0;
    for (; i + 8 <= hd; i += 8) _mm256_storeu_ps(out + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(vj + i), _mm256_loadu_ps(out + i)));
    for (; i < hd; i++) out[i] += w[j] * vj[i];
  }
}

bool avx2_kernels_available() { return false; }
const Kernels kAvx2Kernels = kRefKernels;
}  // namespace npu

#endif
