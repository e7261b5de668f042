// Token sampling from logits: greedy at temperature 0, otherwise temperature + top-p (nucleus)
// with a per-sequence RNG, so a seed gives the same tokens whatever else shares the batch.
#pragma once
#include <cstdint>

namespace npu {

struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next_u64();
  double next_double();  // [0, 1)
};

struct SamplingParams {
  float temperature = 0.f;
  float top_p = 1.f;
};

int argmax(const float* logits, int n);
int sample_token(const float* logits, int n, const SamplingParams& p, Rng& rng);

}  // namespace npu
