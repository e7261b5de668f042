// The scalar activation quantizer, shared by the portable kernels and the SIMD ones' partial last
// group. In an anonymous namespace: each kernel file compiles it under its own ISA flags, and one
// copy must not stand in for another at link time.
#pragma once
#include <algorithm>
#include <cmath>

#include "backend.h"

namespace npu {
namespace {

// Groups of kQuantGroup from x[0 .. k) into q (zero-padded to ld) and ld / kQuantGroup scales:
// scale = max|x| / levels, q = round(x * (levels / max|x|)). Q is int8_t (levels 127) or int16_t (32767).
template <class Q>
void quantize_groups_scalar(const float* x, int k, int ld, Q* q, float* scales, float levels) {
  for (int g = 0; g < ld / kQuantGroup; g++) {
    int i0 = g * kQuantGroup, i1 = std::min(k, i0 + kQuantGroup);
    float amax = 0.f;
    for (int i = i0; i < i1; i++) amax = std::max(amax, std::fabs(x[i]));
    float inv = amax > 0.f ? levels / amax : 0.f;
    for (int i = i0; i < i1; i++) q[i] = (Q)std::nearbyint(x[i] * inv);
    scales[g] = amax / levels;
  }
  for (int i = k; i < ld; i++) q[i] = 0;
}

}  // namespace
}  // namespace npu
