// read_bandwidth: one buffer, one slice per thread, independent vector sums per thread so the loop
// is bound by memory rather than by an add chain.
#include "membw.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace npu {

#if defined(__x86_64__)
// SSE2 (baseline x86-64): 64 bytes per round into four accumulators, so one core can outrun memory.
static uint64_t sum_slice(const uint64_t* p, size_t n) {
  __m128i s0 = _mm_setzero_si128(), s1 = s0, s2 = s0, s3 = s0;
  const __m128i* v = reinterpret_cast<const __m128i*>(p);
  for (size_t i = 0; i + 4 <= n / 2; i += 4) {
    s0 = _mm_add_epi64(s0, _mm_load_si128(v + i));
    s1 = _mm_add_epi64(s1, _mm_load_si128(v + i + 1));
    s2 = _mm_add_epi64(s2, _mm_load_si128(v + i + 2));
    s3 = _mm_add_epi64(s3, _mm_load_si128(v + i + 3));
  }
  alignas(16) uint64_t out[2];
  _mm_store_si128(reinterpret_cast<__m128i*>(out), _mm_add_epi64(_mm_add_epi64(s0, s1), _mm_add_epi64(s2, s3)));
  return out[0] + out[1];
}
#else
static uint64_t sum_slice(const uint64_t* p, size_t n) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
#endif

double read_bandwidth(size_t bytes, int threads, int repeats) {
  threads = std::max(1, threads);
  size_t per_thread = bytes / threads / 4096 * 4096 / sizeof(uint64_t);
  std::vector<uint64_t> buf(per_thread * threads);
  for (size_t i = 0; i < buf.size(); i++) buf[i] = i;
  std::vector<uint64_t> sinks(threads * 8);  // one cache line per thread
  double best = 0;
  for (int r = 0; r <= std::max(1, repeats); r++) {
    auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ts;
    for (int t = 1; t < threads; t++)
      ts.emplace_back([&, t] { sinks[t * 8] = sum_slice(buf.data() + per_thread * t, per_thread); });
    sinks[0] = sum_slice(buf.data(), per_thread);
    for (auto& t : ts) t.join();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, (double)(per_thread * threads * sizeof(uint64_t)) / s);
  }
  volatile uint64_t keep = sinks[0];
  (void)keep;
  return best;
}

}  // namespace npu
