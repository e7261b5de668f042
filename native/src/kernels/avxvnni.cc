// AVX-VNNI kernels (Zen 4 and later, Alder Lake and later): the AVX2 set with the packed int8 GEMM's
// per-lane dot products done by vpdpbusd, one instruction for AVX2's vpmaddubsw + vpmaddwd + vpaddd
// (and without the i16 intermediate, so nothing can saturate).
#include "backend.h"

#if !defined(NPUSERVE_NO_X86)
#include <immintrin.h>

#include "i8_packed.h"

namespace npu {

// Measured as the AVX2 set's (3 tokens per weight load).
static constexpr int kI8TokenBlock = 3;
static constexpr int kI8A16TokenBlock = 1;

struct VnniDot {
  static inline __m256i acc(__m256i acc, __m256i abs_w, __m256i signed_x) { return _mm256_dpbusd_avx_epi32(acc, abs_w, signed_x); }
};

struct VnniDot16 {
  static inline __m256i acc(__m256i acc, __m256i w16, __m256i x16) { return _mm256_dpwssd_avx_epi32(acc, w16, x16); }
};

static void avxvnni_gemm_i8_a16(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_i8_a16_packed<VnniDot16, kI8A16TokenBlock>(w, x, T, y, ldy, n0, n1);
  else kAvx2Kernels.gemm_i8_a16(w, x, T, y, ldy, n0, n1);
}

static void avxvnni_gemm_i8(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1) {
  if (w.layout == Layout::Packed16) gemm_i8_packed<VnniDot, kI8TokenBlock>(w, x, T, y, ldy, n0, n1);
  else kAvx2Kernels.gemm_i8(w, x, T, y, ldy, n0, n1);
}

bool avxvnni_kernels_available() { return avx2_kernels_available() && cpu_features().avxvnni; }

const Kernels& avxvnni_kernels() {
  static const Kernels k = [] {
    Kernels v = kAvx2Kernels;
    v.name = "avxvnni";
    v.gemm_i8 = avxvnni_gemm_i8;
    v.gemm_i8_a16 = avxvnni_gemm_i8_a16;
    return v;
  }();
  return k;
}

}  // namespace npu

#else

namespace npu {
bool avxvnni_kernels_available() { return false; }
const Kernels& avxvnni_kernels() { return kAvx2Kernels; }
}  // namespace npu

#endif
