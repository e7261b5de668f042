// Streaming read bandwidth of this machine, measured the way a batch-1 decode reads weights: every
// thread sums its own contiguous slice of one large buffer.
#pragma once
#include <cstddef>

namespace npu {

// Bytes per second read over `bytes` (rounded down to 4 KiB per thread) by `threads` threads, the
// best of `repeats` passes after one untimed pass that faults the buffer in.
double read_bandwidth(size_t bytes, int threads, int repeats);

}  // namespace npu
