// Paged KV cache: fixed-size blocks of tokens in one pool per layer, a free list, and a block table
// per sequence, so memory is shared by sequences of any length without fragmentation. Full blocks
// can be registered in a prefix cache (as vLLM's automatic prefix caching): reference-counted and
// shared by every sequence whose prompt starts with the same tokens, and kept after their last user
// is released until the space is needed (least recently used first).
#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

namespace npu {

// Where a run of full blocks stands in the prefix cache: the hash chain's value after its last block
// (the lookup key of the next one) and the registration serial of that block (0: the root). Serials
// are never reused, so a block matches only under the exact block it was registered after: even a
// 64-bit hash collision cannot attach KV computed after other tokens.
struct PrefixLink {
  uint64_t hash = 0;
  uint64_t serial = 0;
};

// Rows are f32, or f16 (half the memory and half the bytes attention reads, at f16 precision).
class KvCache {
 public:
  KvCache(int layers, int kv_dim, int block_tokens, int blocks, bool f16);

  int block_tokens() const { return block_tokens_; }
  int total_blocks() const { return (int)blocks_; }
  // Blocks a reservation can take: free ones and cached ones nobody uses (evicted on demand).
  int free_blocks() const { return (int)(free_.size() + lru_.size()); }
  int cached_blocks() const { return (int)cached_.size(); }
  bool f16() const { return f16_; }
  size_t bytes() const { return 2 * elems_ * (f16_ ? 2 : 4); }
  int blocks_for(int tokens) const { return (tokens + block_tokens_ - 1) / block_tokens_; }

  // Grows a block table to hold `tokens` tokens; false (and no change) when the pool is short.
  bool reserve(std::vector<int>& table, int tokens);
  // Drops the table's references: a block nobody uses returns to the free list, or, if registered,
  // stays cached. Released last to first, so a sequence's tail is evicted before its shared head.
  void release(std::vector<int>& table);

  // The chain's root for a model: caches of different models never share a hash chain.
  static PrefixLink root(uint64_t model_hash) { return {model_hash, 0}; }
  // Appends to `table` (taking a reference on each) the longest run of registered blocks holding
  // tokens[0, max_blocks * block_tokens) after `chain`'s last link (or the root when empty), and the
  // run's links to `chain`. Returns the number of blocks matched.
  int match(PrefixLink root, const int32_t* tokens, int max_blocks, std::vector<int>& table, std::vector<PrefixLink>& chain);
  // Registers a full block of the table whose block_tokens() tokens follow `parent`. When an
  // identical block is already registered, that one stays the cached copy and `block` remains
  // private. Returns the link the next block continues from, or false when the key is taken by
  // other tokens (a hash collision: the chain stops being cached there).
  bool register_block(PrefixLink parent, int block, const int32_t* tokens, PrefixLink& link);

  // (kv_dim) values for one token of one layer: float, or uint16_t f16 bits when f16().
  void* k(int layer, int block, int slot) { return at(k_, layer, block, slot); }
  void* v(int layer, int block, int slot) { return at(v_, layer, block, slot); }

 private:
  struct BlockMeta {
    int refs = 0;
    uint64_t serial = 0;         // 0: not registered
    uint64_t hash = 0;           // chain value after this block, when registered
    uint64_t parent_serial = 0;  // the block it was registered after (0: the root)
    bool in_lru = false;
    std::list<int>::iterator lru;
  };
  size_t offset(int layer, int block, int slot) const {
    return (((size_t)layer * blocks_ + block) * block_tokens_ + slot) * kv_dim_;
  }
  void* at(std::vector<uint8_t>& pool, int layer, int block, int slot) {
    return pool.data() + offset(layer, block, slot) * (f16_ ? 2 : 4);
  }
  uint64_t chain_hash(uint64_t parent, const int32_t* tokens) const;
  bool same_tokens(int block, const int32_t* tokens) const;
  int take_block();  // a free block, else the least recently used cached one, unregistered
  void unregister(int block);

  int layers_, kv_dim_, block_tokens_;
  size_t blocks_;
  bool f16_;
  size_t elems_;
  std::vector<uint8_t> k_, v_;  // (layers, blocks, block_tokens, kv_dim) of f32 or f16
  std::vector<int> free_;
  std::vector<BlockMeta> meta_;                 // (blocks)
  std::vector<int32_t> tokens_;                 // (blocks, block_tokens): a registered block's tokens
  std::unordered_map<uint64_t, int> cached_;    // chain hash -> registered block
  std::list<int> lru_;                          // registered blocks nobody uses, least recent first
  uint64_t next_serial_ = 1;
};

// A 64-bit hash of a string (FNV-1a, then mixed): the prefix chain's root for a model identity.
uint64_t hash_string(const std::string& s);

}  // namespace npu
