// Sampling: softmax in double over temperature-scaled logits, nucleus cut, one uniform draw.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace npu {

uint64_t Rng::next_u64() {  // splitmix64
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

double Rng::next_double() { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }

int argmax(const float* logits, int n) {
  int best = 0;
  for (int i = 1; i < n; i++)
    if (logits[i] > logits[best]) best = i;
  return best;
}

int sample_token(const float* logits, int n, const SamplingParams& p, Rng& rng) {
  if (p.temperature <= 0.f) return argmax(logits, n);
  double maxl = logits[argmax(logits, n)];
  std::vector<double> prob(n);
  double total = 0;
  for (int i = 0; i < n; i++) total += prob[i] = std::exp(((double)logits[i] - maxl) / p.temperature);
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  int keep = n;
  if (p.top_p < 1.f) {
    std::sort(order.begin(), order.end(), [&](int a, int b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
    double cum = 0, limit = p.top_p * total;
    keep = 0;
    while (keep < n && (keep == 0 || cum < limit)) cum += prob[order[keep++]];
    total = cum;
  }
  double r = rng.next_double() * total;
  for (int i = 0; i < keep; i++) {
    r -= prob[order[i]];
    if (r < 0) return order[i];
  }
  return order[keep - 1];
}

}  // namespace npu
