// read_bandwidth: one buffer, one slice per thread, eight independent 64-bit sums per thread so the
// loop is bound by memory rather than by an add chain.
#include "membw.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace npu {

static uint64_t sum_slice(const uint64_t* p, size_t n) {
  uint64_t s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (size_t i = 0; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) s[j] += p[i + j];
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

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
