// Paged KV cache: fixed-size blocks of tokens in one pool per layer, a free list, and a block table
// per sequence, so memory is shared by sequences of any length without fragmentation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace npu {

// Rows are f32, or f16 (half the memory and half the bytes attention reads, at f16 precision).
class KvCache {
 public:
  KvCache(int layers, int kv_dim, int block_tokens, int blocks, bool f16);

  int block_tokens() const { return block_tokens_; }
  int total_blocks() const { return (int)blocks_; }
  int free_blocks() const { return (int)free_.size(); }
  bool f16() const { return f16_; }
  size_t bytes() const { return 2 * elems_ * (f16_ ? 2 : 4); }
  int blocks_for(int tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Grows a block table to hold `tokens` tokens; false (and no change) when the pool is short.
  bool reserve(std::vector<int>& table, int tokens);
  void release(std::vector<int>& table);

  // (kv_dim) values for one token of one layer: float, or uint16_t f16 bits when f16().
  void* k(int layer, int block, int slot) { return at(k_, layer, block, slot); }
  void* v(int layer, int block, int slot) { return at(v_, layer, block, slot); }

 private:
  size_t offset(int layer, int block, int slot) const {
    return (((size_t)layer * blocks_ + block) * block_tokens_ + slot) * kv_dim_;
  }
  void* at(std::vector<uint8_t>& pool, int layer, int block, int slot) {
    return pool.data() + offset(layer, block, slot) * (f16_ ? 2 : 4);
  }
  int layers_, kv_dim_, block_tokens_;
  size_t blocks_;
  bool f16_;
  size_t elems_;
  std::vector<uint8_t> k_, v_;  // (layers, blocks, block_tokens, kv_dim) of f32 or f16
  std::vector<int> free_;
};

}  // namespace npu
