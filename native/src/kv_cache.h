// Paged KV cache: fixed-size blocks of tokens in one pool per layer, a free list, and a block table
// per sequence, so memory is shared by sequences of any length without fragmentation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace npu {

class KvCache {
 public:
  KvCache(int layers, int kv_dim, int block_tokens, int blocks);

  int block_tokens() const { return block_tokens_; }
  int total_blocks() const { return (int)blocks_; }
  int free_blocks() const { return (int)free_.size(); }
  size_t bytes() const { return (k_.size() + v_.size()) * sizeof(float); }
  int blocks_for(int tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Grows a block table to hold `tokens` tokens; false (and no change) when the pool is short.
  bool reserve(std::vector<int>& table, int tokens);
  void release(std::vector<int>& table);

  // (kv_dim) floats for one token of one layer.
  float* k(int layer, int block, int slot) { return k_.data() + offset(layer, block, slot); }
  float* v(int layer, int block, int slot) { return v_.data() + offset(layer, block, slot); }

 private:
  size_t offset(int layer, int block, int slot) const {
    return (((size_t)layer * blocks_ + block) * block_tokens_ + slot) * kv_dim_;
  }
  int layers_, kv_dim_, block_tokens_;
  size_t blocks_;
  std::vector<float> k_, v_;  // (layers, blocks, block_tokens, kv_dim)
  std::vector<int> free_;
};

}  // namespace npu
