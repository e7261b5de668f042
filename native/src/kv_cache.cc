// KvCache block bookkeeping.
#include "kv_cache.h"

namespace npu {

KvCache::KvCache(int layers, int kv_dim, int block_tokens, int blocks, bool f16)
    : layers_(layers), kv_dim_(kv_dim), block_tokens_(block_tokens), blocks_((size_t)blocks), f16_(f16) {
  elems_ = (size_t)layers * blocks * block_tokens * kv_dim;
  k_.assign(elems_ * (f16 ? 2 : 4), 0);
  v_.assign(elems_ * (f16 ? 2 : 4), 0);
  free_.reserve(blocks);
  for (int b = blocks - 1; b >= 0; b--) free_.push_back(b);
}

bool KvCache::reserve(std::vector<int>& table, int tokens) {
  int need = blocks_for(tokens) - (int)table.size();
  if (need <= 0) return true;
  if (need > (int)free_.size()) return false;
  for (int i = 0; i < need; i++) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvCache::release(std::vector<int>& table) {
  for (int b : table) free_.push_back(b);
  table.clear();
}

}  // namespace npu
