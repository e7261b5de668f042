// CPU feature detection (cpuid + xgetbv, so features the OS has not enabled count as absent) and
// the one place that picks the kernel set.
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "backend.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace npu {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::I8: return 1;
  }
  return 0;
}

size_t weight_data_bytes(DType t, Layout l, int rows, int cols) {
  Weight w;
  w.dtype = t;
  w.layout = l;
  w.rows = rows;
  w.cols = cols;
  return (size_t)w.padded_rows() * (size_t)w.padded_cols() * dtype_size(t);
}

#if defined(__x86_64__) || defined(__i386__)
static uint64_t xgetbv0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

static CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  bool osxsave = c & (1u << 27);
  bool fma = c & (1u << 12), f16c = c & (1u << 29);
  uint64_t xcr0 = osxsave ? xgetbv0() : 0;
  bool ymm_ok = (xcr0 & 0x6) == 0x6;
  bool zmm_ok = (xcr0 & 0xe6) == 0xe6;
  bool amx_ok = (xcr0 & 0x60000) == 0x60000;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  f.avx2 = ymm_ok && (b & (1u << 5));
  f.fma = ymm_ok && fma;
  f.f16c = ymm_ok && f16c;
  f.avx512f = zmm_ok && (b & (1u << 16));
  f.avx512bw = zmm_ok && (b & (1u << 30));
  f.avx512vl = zmm_ok && (b & (1u << 31));
  f.avx512vnni = zmm_ok && (c & (1u << 11));
  f.avx512fp16 = zmm_ok && (d & (1u << 23));
  f.amx_bf16 = amx_ok && (d & (1u << 22));
  f.amx_tile = amx_ok && (d & (1u << 24));
  f.amx_int8 = amx_ok && (d & (1u << 25));
  unsigned a1, b1, c1, d1;
  if (__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) {
    f.avxvnni = ymm_ok && (a1 & (1u << 4));
    f.avx512bf16 = zmm_ok && (a1 & (1u << 5));
  }
  return f;
}
#else
static CpuFeatures detect() { return CpuFeatures{}; }
#endif

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

const Kernels& kernels_by_name(const std::string& name) {
  if (name == "scalar") return kRefKernels;
  if (name == "avx2") {
    if (!avx2_kernels_available()) throw std::runtime_error("kernel 'avx2' needs AVX2, FMA and F16C, which this CPU lacks");
    return kAvx2Kernels;
  }
  if (name == "avxvnni") {
    if (!avxvnni_kernels_available()) throw std::runtime_error("kernel 'avxvnni' needs AVX2, FMA, F16C and AVX-VNNI, which this CPU lacks");
    return avxvnni_kernels();
  }
  if (name == "avx512vnni") {
    if (!avx512vnni_kernels_available())
      throw std::runtime_error("kernel 'avx512vnni' needs AVX2, FMA, F16C and AVX-512 F/BW/VL/VNNI, which this CPU lacks");
    return avx512vnni_kernels();
  }
  throw std::runtime_error("unknown kernel '" + name + "': expected scalar, avx2, avxvnni or avx512vnni");
}

const Kernels& select_kernels() {
  const char* forced = std::getenv("NPUSERVE_KERNEL");
  if (forced && *forced) return kernels_by_name(forced);
  if (avx512vnni_kernels_available()) return avx512vnni_kernels();
  if (avxvnni_kernels_available()) return avxvnni_kernels();
  if (avx2_kernels_available()) return kAvx2Kernels;
  return kRefKernels;
}

}  // namespace npu
