// KvCache block bookkeeping and the prefix cache over it.
#include "kv_cache.h"

#include <algorithm>
#include <cstring>

namespace npu {

// splitmix64's finalizer: every input bit affects every output bit.
static inline uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint64_t hash_string(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return mix64(h);
}

KvCache::KvCache(int layers, int kv_dim, int block_tokens, int blocks, bool f16)
    : layers_(layers), kv_dim_(kv_dim), block_tokens_(block_tokens), blocks_((size_t)blocks), f16_(f16) {
  elems_ = (size_t)layers * blocks * block_tokens * kv_dim;
  k_.assign(elems_ * (f16 ? 2 : 4), 0);
  v_.assign(elems_ * (f16 ? 2 : 4), 0);
  free_.reserve(blocks);
  for (int b = blocks - 1; b >= 0; b--) free_.push_back(b);
  meta_.resize(blocks);
  tokens_.resize((size_t)blocks * block_tokens);
}

uint64_t KvCache::chain_hash(uint64_t parent, const int32_t* tokens) const {
  uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
  for (int i = 0; i < block_tokens_; i++) h = mix64(h ^ (uint32_t)tokens[i]);
  return h;
}

bool KvCache::same_tokens(int block, const int32_t* tokens) const {
  return std::memcmp(tokens_.data() + (size_t)block * block_tokens_, tokens, sizeof(int32_t) * block_tokens_) == 0;
}

void KvCache::unregister(int block) {
  BlockMeta& m = meta_[block];
  auto it = cached_.find(m.hash);
  if (it != cached_.end() && it->second == block) cached_.erase(it);
  m.serial = 0;
}

int KvCache::take_block() {
  if (!free_.empty()) {
    int b = free_.back();
    free_.pop_back();
    return b;
  }
  int b = lru_.front();
  lru_.pop_front();
  meta_[b].in_lru = false;
  unregister(b);
  return b;
}

bool KvCache::reserve(std::vector<int>& table, int tokens) {
  int need = blocks_for(tokens) - (int)table.size();
  if (need <= 0) return true;
  if (need > free_blocks()) return false;
  for (int i = 0; i < need; i++) {
    int b = take_block();
    meta_[b].refs = 1;
    table.push_back(b);
  }
  return true;
}

void KvCache::release(std::vector<int>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    BlockMeta& m = meta_[*it];
    if (--m.refs > 0) continue;
    if (m.serial != 0) {
      m.lru = lru_.insert(lru_.end(), *it);
      m.in_lru = true;
    } else {
      free_.push_back(*it);
    }
  }
  table.clear();
}

int KvCache::match(PrefixLink root, const int32_t* tokens, int max_blocks, std::vector<int>& table, std::vector<PrefixLink>& chain) {
  PrefixLink parent = chain.empty() ? root : chain.back();
  int matched = 0;
  for (; matched < max_blocks; matched++) {
    const int32_t* t = tokens + (size_t)matched * block_tokens_;
    uint64_t h = chain_hash(parent.hash, t);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    int b = it->second;
    BlockMeta& m = meta_[b];
    if (m.parent_serial != parent.serial || !same_tokens(b, t)) break;
    if (m.in_lru) {
      lru_.erase(m.lru);
      m.in_lru = false;
    }
    m.refs++;
    table.push_back(b);
    parent = {h, m.serial};
    chain.push_back(parent);
  }
  return matched;
}

bool KvCache::register_block(PrefixLink parent, int block, const int32_t* tokens, PrefixLink& link) {
  uint64_t h = chain_hash(parent.hash, tokens);
  auto it = cached_.find(h);
  if (it != cached_.end()) {
    const BlockMeta& m = meta_[it->second];
    if (m.parent_serial != parent.serial || !same_tokens(it->second, tokens)) return false;
    link = {h, m.serial};
    return true;
  }
  BlockMeta& m = meta_[block];
  m.serial = next_serial_++;
  m.hash = h;
  m.parent_serial = parent.serial;
  std::copy(tokens, tokens + block_tokens_, tokens_.begin() + (size_t)block * block_tokens_);
  cached_.emplace(h, block);
  link = {h, m.serial};
  return true;
}

}  // namespace npu
