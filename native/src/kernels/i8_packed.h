// The packed16 int8 GEMMs with group scales (int8 and int16 activations), shared by the AVX2 and
// AVX-VNNI kernel sets: each includes it under its own compiler flags with its own Dot, the
// instruction(s) that add the dot products of 4-value lanes of |w| (u8) and x carrying w's sign (s8)
// to int32 accumulators, and Dot16, the same for 2-value lanes of int16. In an anonymous namespace,
// so each translation unit keeps its own instantiation.
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "backend.h"

namespace npu {
namespace {

// The activation rows and group scales of tokens t0 .. t0 + TB - 1.
template <class Q, int TB>
struct TokenRows {
  const Q* q[TB];
  const float* scale[TB];
  TokenRows(const QuantizedActsOf<Q>& x, int t0) {
    for (int j = 0; j < TB; j++) {
      q[j] = x.q + (size_t)(t0 + j) * x.ld;
      scale[j] = x.scale + (size_t)(t0 + j) * x.scales_ld();
    }
  }
};

// One group of 16 channels against TB tokens; TB is a template argument so the accumulators stay
// in registers (a runtime token count made the compiler keep them in memory). Per k group of 32:
// exact int32 dot products, converted once to float, times the weight scales (16 f16, one load)
// and the token's group scale, accumulated in float.
template <class Dot, int TB>
inline void i8_group(const int8_t* wg, const uint16_t* sg, int G, const QuantizedActs& x, int t0, float* y, int ldy,
                            int g0, int valid) {
  __m256 facc[TB][2];
#pragma GCC unroll 8
  for (int j = 0; j < TB; j++) facc[j][0] = facc[j][1] = _mm256_setzero_ps();
  const TokenRows<int8_t, TB> rows(x, t0);
  const int8_t* const* xr = rows.q;
  const float* const* xs = rows.scale;
  for (int g = 0; g < G; g++) {
    const int8_t* wk = wg + (size_t)g * kQuantGroup * kPackRows;
    __m256i acc[TB][2];
#pragma GCC unroll 8
    for (int j = 0; j < TB; j++) acc[j][0] = acc[j][1] = _mm256_setzero_si256();
    // Not unrolled: fully unrolled, GCC computed all 8 steps' products first and spilled them.
#pragma GCC unroll 1
    for (int k4 = 0; k4 < kQuantGroup / kPackK; k4++) {
      __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + k4 * 64));
      __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + k4 * 64 + 32));
      // |w| (u8) times x with w's sign moved onto it: the abs is shared by the TB tokens.
      __m256i aw0 = _mm256_abs_epi8(w0), aw1 = _mm256_abs_epi8(w1);
#pragma GCC unroll 8
      for (int j = 0; j < TB; j++) {
        int32_t xq4;
        std::memcpy(&xq4, xr[j] + g * kQuantGroup + k4 * kPackK, 4);
        __m256i xv = _mm256_set1_epi32(xq4);
        acc[j][0] = Dot::acc(acc[j][0], aw0, _mm256_sign_epi8(xv, w0));
        acc[j][1] = Dot::acc(acc[j][1], aw1, _mm256_sign_epi8(xv, w1));
      }
    }
    __m256 ws0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + (size_t)g * kPackRows)));
    __m256 ws1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + (size_t)g * kPackRows + 8)));
#pragma GCC unroll 8
    for (int j = 0; j < TB; j++) {
      __m256 xsg = _mm256_broadcast_ss(xs[j] + g);
      facc[j][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j][0]), _mm256_mul_ps(ws0, xsg), facc[j][0]);
      facc[j][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j][1]), _mm256_mul_ps(ws1, xsg), facc[j][1]);
    }
  }
  for (int j = 0; j < TB; j++) {
    float* yt = y + (size_t)(t0 + j) * ldy + g0;
    if (valid == kPackRows) {
      _mm256_storeu_ps(yt, facc[j][0]);
      _mm256_storeu_ps(yt + 8, facc[j][1]);
    } else {
      alignas(32) float tmp[kPackRows];
      _mm256_store_ps(tmp, facc[j][0]);
      _mm256_store_ps(tmp + 8, facc[j][1]);
      std::memcpy(yt, tmp, sizeof(float) * valid);
    }
  }
}

// Every 16-row group of [n0, n1) against the tokens in blocks of kTokenBlock (and a last block of 1
// to 3): group(std::integral_constant<int, TB>, wg, sg, t0, g0, valid) with the group's weights wg,
// its scales sg, the first token t0, the first row g0 and the rows in range (valid).
template <int kTokenBlock, class Group>
inline void for_packed_groups(const Weight& w, int T, int n0, int n1, Group group) {
  static_assert(kTokenBlock <= 4, "the remainder cases below cover 1 to 3 tokens");
  const int G = w.k_groups();
  const int8_t* data = static_cast<const int8_t*>(w.data);
  for (int g0 = n0; g0 < n1; g0 += kPackRows) {
    const int8_t* wg = data + (size_t)(g0 / kPackRows) * w.padded_cols() * kPackRows;
    const uint16_t* sg = w.scales + (size_t)(g0 / kPackRows) * G * kPackRows;
    int valid = std::min(kPackRows, n1 - g0);
    int t0 = 0;
    for (; t0 + kTokenBlock <= T; t0 += kTokenBlock) group(std::integral_constant<int, kTokenBlock>{}, wg, sg, t0, g0, valid);
    switch (T - t0) {
      case 3: group(std::integral_constant<int, 3>{}, wg, sg, t0, g0, valid); break;
      case 2: group(std::integral_constant<int, 2>{}, wg, sg, t0, g0, valid); break;
      case 1: group(std::integral_constant<int, 1>{}, wg, sg, t0, g0, valid); break;
      default: break;
    }
  }
}

template <class Dot, int kTokenBlock>
void gemm_i8_packed(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  for_packed_groups<kTokenBlock>(w, T, n0, n1, [&](auto tb, const int8_t* wg, const uint16_t* sg, int t0, int g0, int valid) {
    i8_group<Dot, decltype(tb)::value>(wg, sg, w.k_groups(), x, t0, y, ldy, g0, valid);
  });
}

// int16 activations against the same packed int8 weights: 4 rows x 4 k of a k4 block (16 bytes)
// widened to int16 make 8 lanes of (row, k pair); the token's 4 values broadcast as 2 pairs match
// them. After a k group, hadd sums each row's 2 pair lanes, leaving rows in the order
// 0 1 4 5 2 3 6 7 within 8: the float accumulators and scales keep that order until the store.
template <class Dot16, int TB>
inline void i8_a16_group(const int8_t* wg, const uint16_t* sg, int G, const QuantizedActs16& x, int t0, float* y, int ldy,
                         int g0, int valid) {
  const __m256i order = _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);  // its own inverse
  __m256 facc[TB][2];
#pragma GCC unroll 8
  for (int j = 0; j < TB; j++) facc[j][0] = facc[j][1] = _mm256_setzero_ps();
  const TokenRows<int16_t, TB> rows(x, t0);
  const int16_t* const* xr = rows.q;
  const float* const* xs = rows.scale;
  for (int g = 0; g < G; g++) {
    const int8_t* wk = wg + (size_t)g * kQuantGroup * kPackRows;
    __m256i acc[TB][4];
#pragma GCC unroll 8
    for (int j = 0; j < TB; j++) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = _mm256_setzero_si256();
#pragma GCC unroll 1
    for (int k4 = 0; k4 < kQuantGroup / kPackK; k4++) {
      __m256i w[4];
#pragma GCC unroll 4
      for (int i = 0; i < 4; i++) w[i] = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wk + k4 * 64 + 16 * i)));
#pragma GCC unroll 8
      for (int j = 0; j < TB; j++) {
        int64_t xq4;
        std::memcpy(&xq4, xr[j] + g * kQuantGroup + k4 * kPackK, 8);
        __m256i xv = _mm256_set1_epi64x(xq4);
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) acc[j][i] = Dot16::acc(acc[j][i], w[i], xv);
      }
    }
    __m256 ws0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + (size_t)g * kPackRows)));
    __m256 ws1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + (size_t)g * kPackRows + 8)));
    ws0 = _mm256_permutevar8x32_ps(ws0, order);
    ws1 = _mm256_permutevar8x32_ps(ws1, order);
#pragma GCC unroll 8
    for (int j = 0; j < TB; j++) {
      __m256 xsg = _mm256_broadcast_ss(xs[j] + g);
      __m256i r0 = _mm256_hadd_epi32(acc[j][0], acc[j][1]), r1 = _mm256_hadd_epi32(acc[j][2], acc[j][3]);
      facc[j][0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(r0), _mm256_mul_ps(ws0, xsg), facc[j][0]);
      facc[j][1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(r1), _mm256_mul_ps(ws1, xsg), facc[j][1]);
    }
  }
  for (int j = 0; j < TB; j++) {
    float* yt = y + (size_t)(t0 + j) * ldy + g0;
    __m256 out0 = _mm256_permutevar8x32_ps(facc[j][0], order), out1 = _mm256_permutevar8x32_ps(facc[j][1], order);
    if (valid == kPackRows) {
      _mm256_storeu_ps(yt, out0);
      _mm256_storeu_ps(yt + 8, out1);
    } else {
      alignas(32) float tmp[kPackRows];
      _mm256_store_ps(tmp, out0);
      _mm256_store_ps(tmp + 8, out1);
      std::memcpy(yt, tmp, sizeof(float) * valid);
    }
  }
}

template <class Dot16, int kTokenBlock>
void gemm_i8_a16_packed(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1) {
  for_packed_groups<kTokenBlock>(w, T, n0, n1, [&](auto tb, const int8_t* wg, const uint16_t* sg, int t0, int g0, int valid) {
    i8_a16_group<Dot16, decltype(tb)::value>(wg, sg, w.k_groups(), x, t0, y, ldy, g0, valid);
  });
}

}  // namespace
}  // namespace npu
