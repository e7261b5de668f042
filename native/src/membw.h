// The machine's limits that benchmarks divide by: the streaming read bandwidth (the bound of a
// batch-1 decode, which reads every weight once per token) and the integer multiply-accumulate
// peaks (the bound of an INT8 prefill). Both are the best over several ways of measuring them, so a
// workload cannot exceed them.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace npu {

struct ReadMeasurement {
  std::string pattern;  // how the threads walk the buffer, see membw.cc
  size_t bytes;         // buffer size (all above the last-level cache)
  double bytes_per_second;  // best of the repeats
};

// Every pattern at `bytes`, bytes / 2 and bytes / 4, with `threads` threads, best of `repeats`
// passes each (after one untimed pass that faults the buffer in).
std::vector<ReadMeasurement> read_bandwidth(size_t bytes, int threads, int repeats);

struct MacPeak {
  std::string instruction;  // e.g. "avx512-vnni vpdpwssd zmm"
  int activation_bits;      // 8: int8 x int8 (u8 x s8) products; 16: int16 x int16
  double macs_per_second;
};

// Multiply-accumulates per second of `threads` cores running register-only chains of each integer
// dot-product instruction this CPU has: the larger of one core's best times `threads` and the best
// run of `threads` threads together, over `repeats` runs each.
std::vector<MacPeak> mac_peaks(int threads, int repeats);

}  // namespace npu
