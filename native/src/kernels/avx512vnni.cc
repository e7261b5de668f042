// AVX-512 VNNI kernels (Zen 4, Ice Lake and later): the best narrower set, with the packed int8
// GEMMs in 512-bit registers: W8A16 (int16 activations; each weight widened to int16 serves 4
// tokens, vpdpwssd adds 32 products per instruction) and W8A8 (vpdpbusd, 64 per instruction).
// Everything else comes from the AVX-VNNI (or AVX2) set.
#include "backend.h"

#if !defined(NPUSERVE_NO_X86)
// GCC 12's avx512fintrin.h builds some results from _mm512_undefined_*(), which -Wmaybe-uninitialized
// reports at every inlined use (_mm512_cvtph_ps, _mm512_srli_epi64): a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "i8_packed.h"

namespace npu {

static constexpr int kTokenBlock = 4;

// One group of 16 channels against TB tokens. A k4 block of 16 rows x 4 k (64 bytes) widens to two
// registers of 8 rows x 2 k pairs; the token's 4 values broadcast as 2 pairs match them. After a k
// group, each row's 2 pair lanes are summed (the odd lane shifted onto the even one) and the even
// lanes of both registers gathered in row order.
template <int TB>
static inline void a16_group(const int8_t* wg, const uint16_t* sg, int G, const QuantizedActs16& x, int t0, float* y, int ldy,
                             int g0, int valid) {
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  __m512 facc[TB];
#pragma GCC unroll 4
  for (int j = 0; j < TB; j++) facc[j] = _mm512_setzero_ps();
  const TokenRows<int16_t, TB> rows(x, t0);
  const int16_t* const* xr = rows.q;
  const float* const* xs = rows.scale;
  for (int g = 0; g < G; g++) {
    const int8_t* wk = wg + (size_t)g * kQuantGroup * kPackRows;
    // Even and odd k4 blocks in separate accumulators when few tokens leave few dependency chains.
    constexpr int kChains = TB <= 2 ? 2 : 1;
    __m512i acc[TB][2 * kChains];
#pragma GCC unroll 4
    for (int j = 0; j < TB; j++)
      for (int c = 0; c < 2 * kChains; c++) acc[j][c] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int k4 = 0; k4 < kQuantGroup / kPackK; k4++) {
      const int c = 2 * (k4 % kChains);
      __m512i w0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + k4 * 64)));
      __m512i w1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk + k4 * 64 + 32)));
#pragma GCC unroll 4
      for (int j = 0; j < TB; j++) {
        int64_t xq4;
        std::memcpy(&xq4, xr[j] + g * kQuantGroup + k4 * kPackK, 8);
        __m512i xv = _mm512_set1_epi64(xq4);
        acc[j][c] = _mm512_dpwssd_epi32(acc[j][c], w0, xv);
        acc[j][c + 1] = _mm512_dpwssd_epi32(acc[j][c + 1], w1, xv);
      }
    }
    for (int c = 2; c < 2 * kChains; c++)
      for (int j = 0; j < TB; j++) acc[j][c % 2] = _mm512_add_epi32(acc[j][c % 2], acc[j][c]);
    __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sg + (size_t)g * kPackRows)));
#pragma GCC unroll 4
    for (int j = 0; j < TB; j++) {
      __m512i s0 = _mm512_add_epi32(acc[j][0], _mm512_srli_epi64(acc[j][0], 32));
      __m512i s1 = _mm512_add_epi32(acc[j][1], _mm512_srli_epi64(acc[j][1], 32));
      __m512i rows = _mm512_permutex2var_epi32(s0, evens, s1);
      facc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(rows), _mm512_mul_ps(ws, _mm512_set1_ps(xs[j][g])), facc[j]);
    }
  }
  const __mmask16 mask = (__mmask16)((1u << valid) - 1);
  for (int j = 0; j < TB; j++) _mm512_mask_storeu_ps(y + (size_t)(t0 + j) * ldy + g0, mask, facc[j]);
}

// The same against int8 activations (W8A8): a k4 block of 16 rows x 4 k is one register in row
// order, and vpdpbusd adds 64 products per instruction. vpdpbusd multiplies u8 by s8, and AVX-512
// has no vpsignb for the AVX2 kernels' sign trick, so each activation byte is offset by 128 (an xor
// of the broadcast word) and 128 x the group's weight sum (one more vpdpbusd per k4 block, shared by
// the tokens) is taken off after the group: sum((x + 128) w) - 128 sum(w) = sum(x w), exactly.
template <int TB>
static inline void a8_group(const int8_t* wg, const uint16_t* sg, int G, const QuantizedActs& x, int t0, float* y, int ldy,
                            int g0, int valid) {
  const __m512i ones = _mm512_set1_epi8(1);
  __m512 facc[TB];
#pragma GCC unroll 4
  for (int j = 0; j < TB; j++) facc[j] = _mm512_setzero_ps();
  const TokenRows<int8_t, TB> rows(x, t0);
  const int8_t* const* xr = rows.q;
  const float* const* xs = rows.scale;
  for (int g = 0; g < G; g++) {
    const int8_t* wk = wg + (size_t)g * kQuantGroup * kPackRows;
    // Even and odd k4 blocks in separate accumulators when few tokens leave few dependency chains.
    constexpr int kChains = TB <= 2 ? 2 : 1;
    __m512i acc[TB][kChains], wsum = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int j = 0; j < TB; j++)
      for (int c = 0; c < kChains; c++) acc[j][c] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (int k4 = 0; k4 < kQuantGroup / kPackK; k4++) {
      const int c = k4 % kChains;
      __m512i w = _mm512_loadu_si512(wk + k4 * 64);
      wsum = _mm512_dpbusd_epi32(wsum, ones, w);
#pragma GCC unroll 4
      for (int j = 0; j < TB; j++) {
        uint32_t xq4;
        std::memcpy(&xq4, xr[j] + g * kQuantGroup + k4 * kPackK, 4);
        acc[j][c] = _mm512_dpbusd_epi32(acc[j][c], _mm512_set1_epi32((int)(xq4 ^ 0x80808080u)), w);
      }
    }
    const __m512i offset = _mm512_slli_epi32(wsum, 7);
    __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sg + (size_t)g * kPackRows)));
#pragma GCC unroll 4
    for (int j = 0; j < TB; j++) {
      __m512i dot = kChains == 2 ? _mm512_add_epi32(acc[j][0], acc[j][kChains - 1]) : acc[j][0];
      dot = _mm512_sub_epi32(dot, offset);
      facc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws, _mm512_set1_ps(xs[j][g])), facc[j]);
    }
  }
  const __mmask16 mask = (__mmask16)((1u << valid) - 1);
  for (int j = 0; j < TB; j++) _mm512_mask_storeu_ps(y + (size_t)(t0 + j) * ldy + g0, mask, facc[j]);
}

static void avx512vnni_gemm_i8(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout != Layout::Packed16) {
    kAvx2Kernels.gemm_i8(w, x, T, y, ldy, n0, n1);
    return;
  }
  for_packed_groups<kTokenBlock>(w, T, n0, n1, [&](auto tb, const int8_t* wg, const uint16_t* sg, int t0, int g0, int valid) {
    a8_group<decltype(tb)::value>(wg, sg, w.k_groups(), x, t0, y, ldy, g0, valid);
  });
}

static void avx512vnni_gemm_i8_a16(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1) {
  static_assert(kPackRows == 16 && kPackK == 4, "a16_group reads 16 rows x 4 k per k4 block");
  if (w.layout != Layout::Packed16) {
    kAvx2Kernels.gemm_i8_a16(w, x, T, y, ldy, n0, n1);
    return;
  }
  for_packed_groups<kTokenBlock>(w, T, n0, n1, [&](auto tb, const int8_t* wg, const uint16_t* sg, int t0, int g0, int valid) {
    a16_group<decltype(tb)::value>(wg, sg, w.k_groups(), x, t0, y, ldy, g0, valid);
  });
}

bool avx512vnni_kernels_available() {
  const CpuFeatures& f = cpu_features();
  return avx2_kernels_available() && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
}

const Kernels& avx512vnni_kernels() {
  static const Kernels k = [] {
    Kernels v = avxvnni_kernels_available() ? avxvnni_kernels() : kAvx2Kernels;
    v.name = "avx512vnni";
    v.gemm_i8 = avx512vnni_gemm_i8;
    v.gemm_i8_a16 = avx512vnni_gemm_i8_a16;
    return v;
  }();
  return k;
}

}  // namespace npu

#else

namespace npu {
bool avx512vnni_kernels_available() { return false; }
const Kernels& avx512vnni_kernels() { return kAvx2Kernels; }
}  // namespace npu

#endif
