// Machine limits: streaming read bandwidth over several access patterns and buffer sizes, and the
// multiply-accumulate peak of each integer dot-product instruction the CPU has. Each is the best of what was measured, so it bounds what a kernel
// can reach: a decode streaming more bytes per second than the limit would mean the limit is wrong.
#include "membw.h"

#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <thread>
#include <vector>

#include "backend.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace npu {

namespace {

using Clock = std::chrono::steady_clock;

// Runs fn(thread index) on `threads` threads (this one included) and returns the wall seconds.
double timed_parallel(int threads, const std::function<void(int)>& fn) {
  auto t0 = Clock::now();
  std::vector<std::thread> ts;
  for (int t = 1; t < threads; t++) ts.emplace_back(fn, t);
  fn(0);
  for (auto& t : ts) t.join();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

#if defined(__x86_64__)
// Sum of n bytes from p (n a multiple of 64).
uint64_t sum_sse2(const uint8_t* p, size_t n) {
  __m128i s0 = _mm_setzero_si128(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i < n; i += 64) {
    const __m128i* v = reinterpret_cast<const __m128i*>(p + i);
    s0 = _mm_add_epi64(s0, _mm_load_si128(v));
    s1 = _mm_add_epi64(s1, _mm_load_si128(v + 1));
    s2 = _mm_add_epi64(s2, _mm_load_si128(v + 2));
    s3 = _mm_add_epi64(s3, _mm_load_si128(v + 3));
  }
  alignas(16) uint64_t out[2];
  _mm_store_si128(reinterpret_cast<__m128i*>(out), _mm_add_epi64(_mm_add_epi64(s0, s1), _mm_add_epi64(s2, s3)));
  return out[0] + out[1];
}

// Sum of n bytes from p cut into `streams` equal parts that are read in lockstep (n / streams is
// rounded down to 128 bytes).
__attribute__((target("avx2"))) uint64_t sum_avx2(const uint8_t* p, size_t n, int streams) {
  __m256i s[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  const size_t len = n / streams / 128 * 128;
  for (size_t i = 0; i < len; i += 128) {
    for (int k = 0; k < streams; k++) {
      const __m256i* v = reinterpret_cast<const __m256i*>(p + (size_t)k * len + i);
      s[0] = _mm256_add_epi64(s[0], _mm256_load_si256(v));
      s[1] = _mm256_add_epi64(s[1], _mm256_load_si256(v + 1));
      s[2] = _mm256_add_epi64(s[2], _mm256_load_si256(v + 2));
      s[3] = _mm256_add_epi64(s[3], _mm256_load_si256(v + 3));
    }
  }
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_add_epi64(_mm256_add_epi64(s[0], s[1]), _mm256_add_epi64(s[2], s[3])));
  return out[0] + out[1] + out[2] + out[3];
}
#else
uint64_t sum_portable(const uint8_t* p, size_t n) {
  const uint64_t* q = reinterpret_cast<const uint64_t*>(p);
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= n / 8; i += 8)
    for (int j = 0; j < 8; j++) s[j] += q[i + j];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
#endif

struct Pattern {
  const char* name;
  bool needs_avx2;
  // Reads its share of [buf, buf + bytes) as thread t of `threads`; returns a sum to keep.
  uint64_t (*read)(const uint8_t* buf, size_t bytes, int t, int threads);
};

constexpr size_t kChunk = 64 * 1024;

uint64_t slice_sse2(const uint8_t* buf, size_t bytes, int t, int threads) {
  size_t per = bytes / threads / kChunk * kChunk;
#if defined(__x86_64__)
  return sum_sse2(buf + per * t, per);
#else
  return sum_portable(buf + per * t, per);
#endif
}

#if defined(__x86_64__)
uint64_t slice_avx2(const uint8_t* buf, size_t bytes, int t, int threads) {
  size_t per = bytes / threads / kChunk * kChunk;
  return sum_avx2(buf + per * t, per, 1);
}

uint64_t streams4_avx2(const uint8_t* buf, size_t bytes, int t, int threads) {
  size_t per = bytes / threads / kChunk * kChunk;
  return sum_avx2(buf + per * t, per, 4);
}

// 64 KiB chunks dealt round-robin to the threads, as the GEMMs deal row chunks of one matrix.
uint64_t interleaved_avx2(const uint8_t* buf, size_t bytes, int t, int threads) {
  uint64_t s = 0;
  for (size_t off = (size_t)t * kChunk; off + kChunk <= bytes; off += (size_t)threads * kChunk) s += sum_avx2(buf + off, kChunk, 1);
  return s;
}
#endif

const Pattern kPatterns[] = {
    {"slice-per-thread, SSE2", false, slice_sse2},
#if defined(__x86_64__)
    {"slice-per-thread, AVX2", true, slice_avx2},
    {"4 streams per thread, AVX2", true, streams4_avx2},
    {"64 KiB chunks round-robin, AVX2", true, interleaved_avx2},
#endif
};

}  // namespace

std::vector<ReadMeasurement> read_bandwidth(size_t bytes, int threads, int repeats) {
  threads = std::max(1, threads);
  bytes = bytes / (kChunk * threads) * (kChunk * threads);
  if (bytes == 0) throw std::runtime_error("read_bandwidth: buffer smaller than one 64 KiB chunk per thread");
  // 2 MiB aligned and, where the kernel allows, backed by huge pages (fewer TLB misses).
  void* mem = std::aligned_alloc(2 << 20, (bytes + (2 << 20) - 1) / (2 << 20) * (2 << 20));
  if (!mem) throw std::runtime_error("read_bandwidth: cannot allocate " + std::to_string(bytes) + " bytes");
  madvise(mem, bytes, MADV_HUGEPAGE);
  uint8_t* buf = static_cast<uint8_t*>(mem);
  timed_parallel(threads, [&](int t) {
    size_t per = bytes / threads;
    for (size_t i = per * t; i < per * (t + 1); i++) buf[i] = (uint8_t)i;
  });
  std::vector<ReadMeasurement> out;
  std::vector<uint64_t> sinks((size_t)threads * 8);  // one cache line per thread
  for (const Pattern& p : kPatterns) {
    if (p.needs_avx2 && !cpu_features().avx2) continue;
    for (size_t size : {bytes, bytes / 2, bytes / 4}) {
      size = size / (kChunk * threads) * (kChunk * threads);
      double best = 0;
      for (int r = 0; r <= std::max(1, repeats); r++) {
        double s = timed_parallel(threads, [&](int t) { sinks[(size_t)t * 8] = p.read(buf, size, t, threads); });
        if (r > 0) best = std::max(best, (double)size / s);
      }
      out.push_back({p.name, size, best});
    }
  }
  std::free(mem);
  volatile uint64_t keep = sinks[0];
  (void)keep;
  return out;
}

#if defined(__x86_64__)
// Register-only chains of one multiply-accumulate instruction: 12 independent accumulators (enough
// to cover a 5-cycle latency at 2 instructions per cycle), `iters` rounds. The empty asm makes `a`
// opaque so the compiler cannot hoist the loop-invariant product.
#define NPU_MAC_CHAINS(Vec, zero, link)                                   \
  Vec c[12];                                                              \
  for (int i = 0; i < 12; i++) c[i] = zero;                               \
  for (long n = 0; n < iters; n++) {                                      \
    __asm__ volatile("" : "+v"(a));                                       \
    _Pragma("GCC unroll 12") for (int i = 0; i < 12; i++) c[i] = link;    \
  }                                                                       \
  for (int i = 1; i < 12; i++) c[0] = c[0] + c[i];                        \
  volatile long long keep = c[0][0];                                      \
  (void)keep;

// AVX2 int8: maddubs + madd + add, 32 multiply-accumulates per link.
__attribute__((target("avx2"))) static void macs_avx2_i8(long iters) {
  const __m256i b = _mm256_set1_epi8(3), ones = _mm256_set1_epi16(1);
  __m256i a = _mm256_set1_epi8(5);
  NPU_MAC_CHAINS(__m256i, _mm256_setzero_si256(), _mm256_add_epi32(c[i], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones)))
}

// AVX2 int16: madd + add, 16 per link.
__attribute__((target("avx2"))) static void macs_avx2_i16(long iters) {
  const __m256i b = _mm256_set1_epi16(3);
  __m256i a = _mm256_set1_epi16(5);
  NPU_MAC_CHAINS(__m256i, _mm256_setzero_si256(), _mm256_add_epi32(c[i], _mm256_madd_epi16(a, b)))
}

// AVX-VNNI vpdpbusd (int8, 32 per link) and vpdpwssd (int16, 16 per link) on 256 bits.
__attribute__((target("avx2,avxvnni"))) static void macs_avxvnni_i8(long iters) {
  const __m256i b = _mm256_set1_epi8(3);
  __m256i a = _mm256_set1_epi8(5);
  NPU_MAC_CHAINS(__m256i, _mm256_setzero_si256(), _mm256_dpbusd_avx_epi32(c[i], a, b))
}
__attribute__((target("avx2,avxvnni"))) static void macs_avxvnni_i16(long iters) {
  const __m256i b = _mm256_set1_epi16(3);
  __m256i a = _mm256_set1_epi16(5);
  NPU_MAC_CHAINS(__m256i, _mm256_setzero_si256(), _mm256_dpwssd_avx_epi32(c[i], a, b))
}

// AVX-512 VNNI vpdpbusd (int8, 64 per link) and vpdpwssd (int16, 32 per link) on 512 bits.
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void macs_avx512vnni_i8(long iters) {
  const __m512i b = _mm512_set1_epi8(3);
  __m512i a = _mm512_set1_epi8(5);
  NPU_MAC_CHAINS(__m512i, _mm512_setzero_si512(), _mm512_dpbusd_epi32(c[i], a, b))
}
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void macs_avx512vnni_i16(long iters) {
  const __m512i b = _mm512_set1_epi16(3);
  __m512i a = _mm512_set1_epi16(5);
  NPU_MAC_CHAINS(__m512i, _mm512_setzero_si512(), _mm512_dpwssd_epi32(c[i], a, b))
}
#undef NPU_MAC_CHAINS
#endif

std::vector<MacPeak> mac_peaks(int threads, int repeats) {
  threads = std::max(1, threads);
  std::vector<MacPeak> out;
#if defined(__x86_64__)
  const CpuFeatures& f = cpu_features();
  struct Candidate {
    const char* instruction;
    int activation_bits;
    int macs_per_link;
    bool available;
    void (*run)(long);
  };
  const bool avx512vnni = f.avx512f && f.avx512bw && f.avx512vnni;
  const Candidate candidates[] = {
      {"avx2 vpmaddubsw+vpmaddwd", 8, 32, f.avx2, macs_avx2_i8},
      {"avx2 vpmaddwd", 16, 16, f.avx2, macs_avx2_i16},
      {"avx-vnni vpdpbusd ymm", 8, 32, f.avx2 && f.avxvnni, macs_avxvnni_i8},
      {"avx-vnni vpdpwssd ymm", 16, 16, f.avx2 && f.avxvnni, macs_avxvnni_i16},
      {"avx512-vnni vpdpbusd zmm", 8, 64, avx512vnni, macs_avx512vnni_i8},
      {"avx512-vnni vpdpwssd zmm", 16, 32, avx512vnni, macs_avx512vnni_i16},
  };
  const long iters = 1'000'000;  // 12 x 1M instructions per thread: ~10-60 ms
  for (const Candidate& c : candidates) {
    if (!c.available) continue;
    const double macs = (double)iters * 12 * c.macs_per_link;
    // The cores are alike, so the machine's peak is at least one core's best times the cores; when
    // other processes share the cores, the all-thread run alone would understate it.
    double one = 0, all = 0;
    for (int r = 0; r < std::max(1, repeats); r++) {
      one = std::max(one, macs / timed_parallel(1, [&](int) { c.run(iters); }));
      all = std::max(all, macs * threads / timed_parallel(threads, [&](int) { c.run(iters); }));
    }
    out.push_back({c.instruction, c.activation_bits, std::max(one * threads, all)});
  }
#else
  (void)repeats;
#endif
  return out;
}

}  // namespace npu
