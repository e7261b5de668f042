// The forward pass, llama2.c style: embed, then per layer RMSNorm -> QKV (+ biases) -> RoPE -> attention over
// the paged KV cache -> output projection, RMSNorm -> SwiGLU FFN, each with a residual; final
// RMSNorm and the LM head on the rows whose logits are needed.
#include "model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <set>
#include <functional>
#include <stdexcept>

#include "half.h"

namespace npu {

static std::runtime_error err(const std::string& msg) { return std::runtime_error(msg); }

WeightFile::WeightFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer (and ignore SIGTERM).
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) throw err(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw err(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw err(path + ": not a regular file (a model must be a .npu file, not a FIFO, device or directory)");
  }
  size_ = (uint64_t)st.st_size;
  if (size_ == 0) {
    ::close(fd);
    throw err(path + ": file is empty");
  }
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    int e = errno;
    ::close(fd);
    throw err(path + ": cannot allocate " + std::to_string(size_) + " bytes for the weights: " + std::strerror(e));
  }
  data_ = static_cast<uint8_t*>(p);
  uint64_t done = 0;
  while (done < size_) {
    size_t chunk = (size_t)std::min<uint64_t>(size_ - done, 64ull << 20);
    ssize_t n = pread(fd, data_ + done, chunk, (off_t)done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = n < 0 ? errno : 0;
      ::close(fd);
      munmap(data_, size_);
      data_ = nullptr;
      throw err(path + ": read " + std::to_string(done) + " of " + std::to_string(size_) + " bytes: " +
                (e ? std::strerror(e) : "the file was truncated while loading"));
    }
    done += (uint64_t)n;
  }
  ::close(fd);
  mprotect(data_, size_, PROT_READ);
}

WeightFile::~WeightFile() {
  if (data_) munmap(data_, size_);
}

static const TensorDesc& find(const std::map<std::string, const TensorDesc*>& by_name, const std::string& name) {
  auto it = by_name.find(name);
  if (it == by_name.end()) throw err("tensor '" + name + "' is missing from the model file");
  return *it->second;
}

static std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); i++) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

Model::Model(const std::string& path, const Config& cfg, const std::vector<TensorDesc>& tensors, const EngineOptions& opt)
    : cfg_(cfg),
      opt_(opt),
      file_(path),
      kernels_(opt.kernel.empty() ? &select_kernels() : &kernels_by_name(opt.kernel)),
      pool_(std::max(1, opt.threads)) {
  bind_weights(tensors);
  check_memory_budget();
  kv_ = std::make_unique<KvCache>(cfg.n_layers, cfg.n_kv_heads * cfg.head_dim, opt.kv_block_tokens,
                                  (opt.kv_cache_tokens + opt.kv_block_tokens - 1) / opt.kv_block_tokens, opt.kv_f16);
  int half = cfg_.head_dim / 2;
  rope_cos_.resize((size_t)opt_.max_seq_len * half);
  rope_sin_.resize((size_t)opt_.max_seq_len * half);
  for (int p = 0; p < opt_.max_seq_len; p++) {
    for (int i = 0; i < half; i++) {
      // As HF: inv_freq (scaling applied by the caller) in float32, angle = position * inv_freq.
      float angle = (float)p * cfg_.rope_inv_freq[i];
      rope_cos_[(size_t)p * half + i] = std::cos(angle);
      rope_sin_[(size_t)p * half + i] = std::sin(angle);
    }
  }
  attn_scratch_.resize(pool_.size());
  prefix_root_ = KvCache::root(hash_string(opt_.model_identity));
}

static std::string mib(double bytes) { return std::to_string((int64_t)std::ceil(bytes / (1 << 20))) + " MiB"; }

void Model::check_memory_budget() const {
  const double blocks = std::ceil((double)opt_.kv_cache_tokens / opt_.kv_block_tokens);
  const double kv = 2.0 * cfg_.n_layers * blocks * opt_.kv_block_tokens * cfg_.n_kv_heads * cfg_.head_dim * (opt_.kv_f16 ? 2 : 4);
  const double rope = 2.0 * opt_.max_seq_len * (cfg_.head_dim / 2) * sizeof(float);
  if (kv + rope > (double)opt_.memory_budget_bytes)
    throw err("the KV cache (" + std::to_string(opt_.kv_cache_tokens) + " tokens x " + std::to_string(cfg_.n_layers) + " layers x " +
              std::to_string(cfg_.n_kv_heads * cfg_.head_dim) + " KV dims x 2 x " + (opt_.kv_f16 ? "f16" : "f32") + " = " + mib(kv) +
              ") and RoPE tables (" + mib(rope) + ") need more than the memory budget of " + mib((double)opt_.memory_budget_bytes) +
              ": lower the KV cache tokens or max seq len, use an f16 KV cache, or raise the budget");
}

void Model::bind_weights(const std::vector<TensorDesc>& tensors) {
  std::map<std::string, const TensorDesc*> by_name;
  for (const auto& t : tensors) {
    if (t.offset % 64 != 0) throw err("tensor '" + t.name + "' starts at byte " + std::to_string(t.offset) + ", not 64-byte aligned");
    if (t.offset > file_.size() || t.bytes > file_.size() - t.offset)
      throw err("tensor '" + t.name + "' ends at byte " + std::to_string(t.offset + t.bytes) + ", file has " + std::to_string(file_.size()));
    if (!by_name.emplace(t.name, &t).second) throw err("tensor '" + t.name + "' is listed twice");
    weight_bytes_ += t.bytes;
  }
  const uint8_t* base = file_.data();
  std::set<std::string> used;  // every tensor of the file must be one the config asks for
  auto find_used = [&](const std::string& name) -> const TensorDesc& {
    const TensorDesc& t = find(by_name, name);
    used.insert(name);
    return t;
  };
  auto vec = [&](const std::string& name, int64_t n) -> const float* {
    const TensorDesc& t = find_used(name);
    if (t.dtype != DType::F32 || t.shape != std::vector<int64_t>{n} || t.bytes != (uint64_t)n * 4)
      throw err("tensor '" + name + "' must be f32 " + shape_str({n}) + ", file has shape " + shape_str(t.shape));
    return reinterpret_cast<const float*>(base + t.offset);
  };
  auto i8_scales = [&](const std::string& name, size_t n) -> const uint16_t* {
    const TensorDesc& t = find_used(name);
    if (t.dtype != DType::F16 || t.shape != std::vector<int64_t>{(int64_t)n} || t.bytes != (uint64_t)n * 2)
      throw err("tensor '" + name + "' must be f16 " + shape_str({(int64_t)n}) + " (one scale per row and group of " +
                std::to_string(kQuantGroup) + "), file has shape " + shape_str(t.shape));
    return reinterpret_cast<const uint16_t*>(base + t.offset);
  };
  auto mat = [&](const std::string& name, int rows, int cols) {
    const TensorDesc& t = find_used(name);
    if (t.shape != std::vector<int64_t>{rows, cols})
      throw err("tensor '" + name + "' has shape " + shape_str(t.shape) + ", expected " + shape_str({rows, cols}));
    Weight w;
    w.dtype = t.dtype;
    w.layout = t.layout;
    w.rows = rows;
    w.cols = cols;
    uint64_t expect = weight_data_bytes(t.dtype, t.layout, rows, cols);
    if (t.bytes != expect)
      throw err("tensor '" + name + "' has " + std::to_string(t.bytes) + " bytes, its dtype and layout need " + std::to_string(expect));
    w.data = base + t.offset;
    if (t.dtype == DType::I8) w.scales = i8_scales(name + ".scale", w.scale_count());
    return w;
  };
  const Config& c = cfg_;
  int q_dim = c.n_heads * c.head_dim, kv_dim = c.n_kv_heads * c.head_dim;
  tok_embeddings_ = mat("tok_embeddings", c.vocab_size, c.dim);
  if (tok_embeddings_.layout != Layout::RowMajor) throw err("tensor 'tok_embeddings' must be row-major");
  layers_.resize(c.n_layers);
  for (int l = 0; l < c.n_layers; l++) {
    std::string p = "layers." + std::to_string(l) + ".";
    Layer& L = layers_[l];
    L.attn_norm = vec(p + "attn_norm", c.dim);
    L.ffn_norm = vec(p + "ffn_norm", c.dim);
    L.fused_qkv = by_name.count(p + "wqkv") > 0;
    if (L.fused_qkv) {
      L.wqkv = mat(p + "wqkv", q_dim + 2 * kv_dim, c.dim);
    } else {
      L.wq = mat(p + "wq", q_dim, c.dim);
      L.wk = mat(p + "wk", kv_dim, c.dim);
      L.wv = mat(p + "wv", kv_dim, c.dim);
    }
    // The converter fuses the biases exactly when it fuses the weights.
    bool has_bias = by_name.count(p + (L.fused_qkv ? "bqkv" : "bq")) > 0;
    if (has_bias != c.attention_bias)
      throw err("layer " + std::to_string(l) + (c.attention_bias ? ": the config has attention biases, the file has no q/k/v bias tensors"
                                                               : ": the file has q/k/v bias tensors, the config has no attention biases"));
    if (has_bias && L.fused_qkv) {
      L.bq = vec(p + "bqkv", q_dim + 2 * kv_dim);
      L.bk = L.bq + q_dim;
      L.bv = L.bk + kv_dim;
    } else if (has_bias) {
      L.bq = vec(p + "bq", q_dim);
      L.bk = vec(p + "bk", kv_dim);
      L.bv = vec(p + "bv", kv_dim);
    }
    L.wo = mat(p + "wo", c.dim, q_dim);
    if (by_name.count(p + "bo") != (c.attention_output_bias ? 1u : 0u))
      throw err("layer " + std::to_string(l) + (c.attention_output_bias ? ": the config has an output projection bias, the file has no tensor 'bo'"
                                                                      : ": the file has an output projection bias 'bo', the config has none"));
    if (c.attention_output_bias) L.bo = vec(p + "bo", c.dim);
    L.fused_gate_up = by_name.count(p + "w_gate_up") > 0;
    if (L.fused_gate_up) {
      L.w_gate_up = mat(p + "w_gate_up", 2 * c.hidden_dim, c.dim);
    } else {
      L.w_gate = mat(p + "w_gate", c.hidden_dim, c.dim);
      L.w_up = mat(p + "w_up", c.hidden_dim, c.dim);
    }
    L.w_down = mat(p + "w_down", c.dim, c.hidden_dim);
  }
  norm_ = vec("norm", c.dim);
  lm_head_ = by_name.count("lm_head") ? mat("lm_head", c.vocab_size, c.dim) : tok_embeddings_;
  for (const auto& t : tensors)
    if (!used.count(t.name))
      throw err("tensor '" + t.name + "' is not part of a " + std::to_string(c.n_layers) + "-layer model of this config (is the config or the tensor table wrong?)");
}

int Model::create_sequence(uint64_t seed, const std::vector<int32_t>& prompt) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  int id = next_seq_id_++;
  auto s = std::make_unique<Sequence>();
  s->id = id;
  s->rng = Rng(seed);
  if (opt_.prefix_caching && !prompt.empty()) {
    // Matched blocks are only read, never written (the sequence writes from its length on, past
    // them), and a step running now writes only into blocks it reserved, none of them registered.
    const int bt = kv_->block_tokens();
    int max_blocks = std::min((int)prompt.size() - 1, opt_.max_seq_len) / bt;
    int matched = kv_->match(prefix_root_, prompt.data(), max_blocks, s->blocks, s->chain);
    s->length = matched * bt;
    s->tokens.assign(prompt.begin(), prompt.begin() + s->length);
  }
  seqs_[id] = std::move(s);
  return id;
}

void Model::release_sequence(int id) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) throw err("unknown sequence " + std::to_string(id));
  if (stepping_) {
    pending_release_.push_back(id);
    return;
  }
  kv_->release(it->second->blocks);
  seqs_.erase(it);
}

int Model::sequence_length(int id) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  auto it = seqs_.find(id);
  if (it == seqs_.end()) throw err("unknown sequence " + std::to_string(id));
  return it->second->length;
}

int Model::free_kv_blocks() {
  std::lock_guard<std::mutex> lock(seq_mu_);
  return kv_->free_blocks();
}

int Model::cached_kv_blocks() {
  std::lock_guard<std::mutex> lock(seq_mu_);
  return kv_->cached_blocks();
}

void Model::register_full_blocks(Sequence& s) {
  const int bt = kv_->block_tokens();
  while (!s.chain_broken && (int)s.chain.size() < s.length / bt) {
    size_t i = s.chain.size();
    PrefixLink parent = i == 0 ? prefix_root_ : s.chain.back(), link;
    if (kv_->register_block(parent, s.blocks[i], s.tokens.data() + i * bt, link)) s.chain.push_back(link);
    else s.chain_broken = true;
  }
}

std::string Model::entry_problem(const StepEntry& e) const {
  auto it = seqs_.find(e.seq_id);
  if (it == seqs_.end()) return "unknown sequence " + std::to_string(e.seq_id);
  if (std::find(pending_release_.begin(), pending_release_.end(), e.seq_id) != pending_release_.end())
    return "sequence " + std::to_string(e.seq_id) + " was released";
  if (e.tokens.empty()) return "sequence " + std::to_string(e.seq_id) + ": no tokens given";
  for (int32_t t : e.tokens)
    if (t < 0 || t >= cfg_.vocab_size)
      return "sequence " + std::to_string(e.seq_id) + ": token " + std::to_string(t) + " is outside the vocabulary [0, " + std::to_string(cfg_.vocab_size) + ")";
  int64_t len = (int64_t)it->second->length + (int64_t)e.tokens.size();
  if (len > opt_.max_seq_len)
    return "sequence " + std::to_string(e.seq_id) + ": " + std::to_string(len) + " tokens exceed maxSeqLen " + std::to_string(opt_.max_seq_len);
  return "";
}

std::vector<std::string> Model::entry_problems(const std::vector<StepEntry>& entries) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  std::vector<std::string> out;
  for (const auto& e : entries) out.push_back(entry_problem(e));
  return out;
}

PreparedStep Model::begin_step(const std::vector<StepEntry>& entries) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  if (stepping_) throw err("engine busy: a step is already running (steps must be awaited one at a time)");
  if (entries.empty()) throw err("step needs at least one entry");
  std::vector<int> seen;
  int blocks_needed = 0;
  for (const auto& e : entries) {
    std::string problem = entry_problem(e);
    if (!problem.empty()) throw err(problem);
    if (std::find(seen.begin(), seen.end(), e.seq_id) != seen.end())
      throw err("sequence " + std::to_string(e.seq_id) + " appears twice in one step");
    seen.push_back(e.seq_id);
    const Sequence& s = *seqs_.at(e.seq_id);
    blocks_needed += std::max(0, kv_->blocks_for(s.length + (int)e.tokens.size()) - (int)s.blocks.size());
  }
  if (blocks_needed > kv_->free_blocks())
    throw err("KV cache full: the step needs " + std::to_string(blocks_needed) + " more blocks, " + std::to_string(kv_->free_blocks()) + " are free");
  PreparedStep p;
  for (const auto& e : entries) {
    Sequence* s = seqs_.at(e.seq_id).get();
    kv_->reserve(s->blocks, s->length + (int)e.tokens.size());  // fits: counted above
    p.seqs.push_back(s);
    p.start.push_back(s->length);
  }
  stepping_ = true;
  return p;
}

void Model::end_step(const std::vector<StepEntry>& entries, const PreparedStep& prepared, bool ran) {
  std::lock_guard<std::mutex> lock(seq_mu_);
  stepping_ = false;
  if (ran) {
    for (size_t i = 0; i < entries.size(); i++) {
      Sequence& s = *prepared.seqs[i];
      s.length = prepared.start[i] + (int)entries[i].tokens.size();
      s.tokens.insert(s.tokens.end(), entries[i].tokens.begin(), entries[i].tokens.end());
      // Blocks this step filled (prompt or generated tokens) now hold final KV: register them.
      if (opt_.prefix_caching) register_full_blocks(s);
    }
  }
  for (int id : pending_release_) {
    auto it = seqs_.find(id);
    if (it == seqs_.end()) continue;
    kv_->release(it->second->blocks);
    seqs_.erase(it);
  }
  pending_release_.clear();
}

void Model::for_tokens(int T, const std::function<void(int, int)>& fn) {
  // Per-token work (norms, quantization, RoPE, residuals) is spread over the pool only when there
  // are enough tokens to pay for the hand-off; a decode step runs it on this thread.
  constexpr int kMinTokens = 16;
  if (T < kMinTokens || pool_.size() == 1) {
    fn(0, T);
    return;
  }
  int tasks = std::min(pool_.size() * 4, T / (kMinTokens / 2));
  int chunk = (T + tasks - 1) / tasks;
  pool_.parallel_for((T + chunk - 1) / chunk, [&](int task, int) { fn(task * chunk, std::min(T, (task + 1) * chunk)); });
}

void Model::matmul(const Weight& w, const float* x, int T, int ldx, float* y, int ldy) {
  const Kernels& k = *kernels_;
  int chunks_wanted = pool_.size() * 4;
  int chunk = std::max(kPackRows, round_up((w.rows + chunks_wanted - 1) / chunks_wanted, kPackRows));
  int tasks = (w.rows + chunk - 1) / chunk;
  // Activations quantized per token (int8 into xq_ or int16 into xq16_), then the int8 GEMM.
  auto quantized = [&](auto& xq, auto quantize_row, auto gemm_i8) {
    using Q = typename std::decay_t<decltype(xq)>::value_type;
    const int ld = round_up(w.padded_cols(), 64), sld = ld / kQuantGroup;
    if (xq.size() < (size_t)T * ld) xq.resize((size_t)T * ld);
    if (xq_scale_.size() < (size_t)T * sld) xq_scale_.resize((size_t)T * sld);
    for_tokens(T, [&](int t0, int t1) {
      for (int t = t0; t < t1; t++) quantize_row(x + (size_t)t * ldx, w.cols, ld, xq.data() + (size_t)t * ld, xq_scale_.data() + (size_t)t * sld);
    });
    QuantizedActsOf<Q> qa{xq.data(), xq_scale_.data(), ld};
    pool_.parallel_for(tasks, [&](int task, int) {
      int n0 = task * chunk, n1 = std::min(w.rows, n0 + chunk);
      gemm_i8(w, qa, T, y, ldy, n0, n1);
    });
  };
  if (w.dtype == DType::I8 && opt_.int8_activation_bits == 16) return quantized(xq16_, k.quantize_row_i16, k.gemm_i8_a16);
  if (w.dtype == DType::I8) return quantized(xq_, k.quantize_row, k.gemm_i8);
  auto gemm = w.dtype == DType::F16 ? k.gemm_f16 : k.gemm_f32;
  pool_.parallel_for(tasks, [&](int task, int) {
    int n0 = task * chunk, n1 = std::min(w.rows, n0 + chunk);
    gemm(w, x, ldx, T, y, ldy, n0, n1);
  });
}

void Model::rmsnorm(const float* x, const float* weight, int T, float* out) {
  const int D = cfg_.dim;
  for (int t = 0; t < T; t++) {
    const float* xt = x + (size_t)t * D;
    double ss = 0;
    for (int i = 0; i < D; i++) ss += (double)xt[i] * xt[i];
    float inv = (float)(1.0 / std::sqrt(ss / D + cfg_.norm_eps));
    float* ot = out + (size_t)t * D;
    for (int i = 0; i < D; i++) ot[i] = weight[i] * (xt[i] * inv);
  }
}

void Model::embed(const std::vector<int32_t>& tokens, float* out) {
  const Weight& e = tok_embeddings_;
  const int D = cfg_.dim;
  for (size_t t = 0; t < tokens.size(); t++) {
    size_t row = (size_t)tokens[t] * D;
    float* o = out + t * D;
    if (e.dtype == DType::F32) {
      std::memcpy(o, static_cast<const float*>(e.data) + row, sizeof(float) * D);
    } else if (e.dtype == DType::F16) {
      for (int i = 0; i < D; i++) o[i] = half_to_float(static_cast<const uint16_t*>(e.data)[row + i]);
    } else {
      const int8_t* q = static_cast<const int8_t*>(e.data) + row;
      for (int i = 0; i < D; i++) o[i] = half_to_float(e.scales[scale_index(e, tokens[t], i / kQuantGroup)]) * q[i];
    }
  }
}

// Rows [t0, t1) of qkv_ (q | k | v per token) gain the projections' biases, before RoPE as in HF.
void Model::add_qkv_bias(const Layer& L, int t0, int t1) {
  const int q_dim = cfg_.n_heads * cfg_.head_dim, kv_dim = cfg_.n_kv_heads * cfg_.head_dim, ld = q_dim + 2 * kv_dim;
  for (int t = t0; t < t1; t++) {
    float* q = qkv_.data() + (size_t)t * ld;
    float* k = q + q_dim;
    float* v = k + kv_dim;
    for (int i = 0; i < q_dim; i++) q[i] += L.bq[i];
    for (int i = 0; i < kv_dim; i++) k[i] += L.bk[i];
    for (int i = 0; i < kv_dim; i++) v[i] += L.bv[i];
  }
}

// HF rotate_half pairing: dimension i rotates with i + head_dim / 2.
void Model::rope(float* v, int heads, const std::vector<int>& pos, int t0, int t1, int ld) {
  const int hd = cfg_.head_dim, half = hd / 2;
  for (int t = t0; t < t1; t++) {
    const float* c = rope_cos_.data() + (size_t)pos[t] * half;
    const float* s = rope_sin_.data() + (size_t)pos[t] * half;
    for (int h = 0; h < heads; h++) {
      float* x = v + (size_t)t * ld + h * hd;
      for (int i = 0; i < half; i++) {
        float x1 = x[i], x2 = x[i + half];
        x[i] = x1 * c[i] - x2 * s[i];
        x[i + half] = x2 * c[i] + x1 * s[i];
      }
    }
  }
}

void Model::attention(int layer, int T, const std::vector<Sequence*>& tok_seq, const std::vector<int>& pos) {
  const Config& c = cfg_;
  const int hd = c.head_dim, H = c.n_heads, KVH = c.n_kv_heads, group = H / KVH;
  const int q_dim = H * hd, kv_dim = KVH * hd, ld = q_dim + 2 * kv_dim;
  const int bt = kv_->block_tokens();
  const float scale = 1.f / std::sqrt((float)hd);
  const Kernels& kern = *kernels_;
  const bool f16 = kv_->f16();
  const size_t kv_elem = f16 ? 2 : 4;
  // Tiles: runs of consecutive positions of one sequence (a prompt chunk; a decode token is a run of
  // one), cut so one tile holds about 32 queries of a KV head: each KV block is then read (and
  // converted from f16) once for all of them.
  const int tile_tokens = std::max(1, 32 / group);
  tiles_.clear();
  for (int t = 0; t < T;) {
    int e = t + 1;
    while (e < T && e - t < tile_tokens && tok_seq[e] == tok_seq[t] && pos[e] == pos[e - 1] + 1) e++;
    tiles_.push_back({t, e - t});
    t = e;
  }
  // A decode step's attention is microseconds of work: handing it to the pool would cost a worker
  // wake-up (tens of microseconds) per layer, so below ~1M multiply-adds it runs on this thread.
  int64_t macs = 0;
  for (int t = 0; t < T; t++) macs += (int64_t)(pos[t] + 1) * H * hd * 2;
  auto body = [&](int task, int thread) {
    const AttnTile& tile = tiles_[task / KVH];
    const int kvh = task % KVH;
    const int real = tile.n * group, nq = round_up(real, 8);
    const Sequence* s = tok_seq[tile.t0];
    const int p_first = pos[tile.t0], p_last = pos[tile.t0 + tile.n - 1];
    AttnScratch& w = attn_scratch_[thread];
    w.qt.resize((size_t)hd * nq);
    w.qpos.resize(nq);
    w.m.assign(nq, -std::numeric_limits<float>::infinity());
    w.l.assign(nq, 0.f);
    w.o.assign((size_t)nq * hd, 0.f);
    w.work.resize(attn_scratch_floats(nq, hd, bt));
    // Query i is head kvh * group + i % group of token tile.t0 + i / group; padding repeats the last.
    for (int i = 0; i < nq; i++) {
      int r = std::min(i, real - 1);
      int t = tile.t0 + r / group, h = kvh * group + r % group;
      const float* q = qkv_.data() + (size_t)t * ld + h * hd;
      for (int d = 0; d < hd; d++) w.qt[(size_t)d * nq + i] = q[d] * scale;
      w.qpos[i] = pos[t];
    }
    AttnQueries a{w.qt.data(), w.qpos.data(), nq, hd, real, c.sliding_window, w.m.data(), w.l.data(), w.o.data(), w.work.data()};
    // Mistral's sliding window: position p sees keys j with p - j < window. The first key read is
    // aligned down to its block (the kernel masks keys outside each query's window), so every
    // query's keys are folded in the same block-sized segments whichever tile it is in: a token's
    // result does not depend on how the prompt was chunked or batched.
    int lo = c.sliding_window > 0 ? std::max(0, p_first - c.sliding_window + 1) / bt * bt : 0;
    for (int j = lo; j <= p_last;) {
      int n = std::min(bt - j % bt, p_last + 1 - j);
      int block = s->blocks[j / bt];
      const uint8_t* k = static_cast<const uint8_t*>(kv_->k(layer, block, j % bt)) + (size_t)kvh * hd * kv_elem;
      const uint8_t* v = static_cast<const uint8_t*>(kv_->v(layer, block, j % bt)) + (size_t)kvh * hd * kv_elem;
      kern.attn_block(a, k, v, f16, kv_dim, n, j);
      j += n;
    }
    for (int i = 0; i < real; i++) {
      int t = tile.t0 + i / group, h = kvh * group + i % group;
      float* out = attn_.data() + (size_t)t * q_dim + h * hd;
      const float* o = w.o.data() + (size_t)i * hd;
      float inv = 1.f / w.l[i];
      for (int d = 0; d < hd; d++) out[d] = o[d] * inv;
    }
  };
  const int tasks = (int)tiles_.size() * KVH;
  if (macs < (1 << 20)) {
    for (int i = 0; i < tasks; i++) body(i, 0);
  } else {
    pool_.parallel_for(tasks, body);
  }
}

void Model::store_kv(void* dst, const float* src, int n) {
  if (!kv_->f16()) {
    std::memcpy(dst, src, sizeof(float) * n);
    return;
  }
  kernels_->to_f16(src, n, static_cast<uint16_t*>(dst));
}

template <typename T>
static void ensure(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

std::vector<StepResult> Model::step(const std::vector<StepEntry>& entries, const PreparedStep& prepared) {
  const Config& c = cfg_;
  const int D = c.dim, hd = c.head_dim;
  const int q_dim = c.n_heads * hd, kv_dim = c.n_kv_heads * hd, ld_qkv = q_dim + 2 * kv_dim;
  const int F = c.hidden_dim;

  // Flatten the batch: one row per token, remembering its sequence and position.
  const std::vector<Sequence*>& seqs = prepared.seqs;
  std::vector<int32_t> tokens;
  std::vector<Sequence*> tok_seq;
  std::vector<int> pos;
  for (size_t i = 0; i < entries.size(); i++) {
    for (size_t j = 0; j < entries[i].tokens.size(); j++) {
      tokens.push_back(entries[i].tokens[j]);
      tok_seq.push_back(seqs[i]);
      pos.push_back(prepared.start[i] + (int)j);
    }
  }
  const int T = (int)tokens.size();
  ensure(x_, (size_t)T * D);
  ensure(xn_, (size_t)T * D);
  ensure(qkv_, (size_t)T * ld_qkv);
  ensure(attn_, (size_t)T * q_dim);
  ensure(ffn_, (size_t)T * 2 * F);
  ensure(ffn_out_, (size_t)T * D);

  embed(tokens, x_.data());
  const int bt = kv_->block_tokens();
  for (int l = 0; l < c.n_layers; l++) {
    const Layer& L = layers_[l];
    for_tokens(T, [&](int t0, int t1) { rmsnorm(x_.data() + (size_t)t0 * D, L.attn_norm, t1 - t0, xn_.data() + (size_t)t0 * D); });
    if (L.fused_qkv) {
      matmul(L.wqkv, xn_.data(), T, D, qkv_.data(), ld_qkv);
    } else {
      matmul(L.wq, xn_.data(), T, D, qkv_.data(), ld_qkv);
      matmul(L.wk, xn_.data(), T, D, qkv_.data() + q_dim, ld_qkv);
      matmul(L.wv, xn_.data(), T, D, qkv_.data() + q_dim + kv_dim, ld_qkv);
    }
    for_tokens(T, [&](int t0, int t1) {
      if (L.bq) add_qkv_bias(L, t0, t1);
      rope(qkv_.data(), c.n_heads, pos, t0, t1, ld_qkv);
      rope(qkv_.data() + q_dim, c.n_kv_heads, pos, t0, t1, ld_qkv);
      for (int t = t0; t < t1; t++) {
        const Sequence* s = tok_seq[t];
        int block = s->blocks[pos[t] / bt], slot = pos[t] % bt;
        const float* row = qkv_.data() + (size_t)t * ld_qkv;
        store_kv(kv_->k(l, block, slot), row + q_dim, kv_dim);
        store_kv(kv_->v(l, block, slot), row + q_dim + kv_dim, kv_dim);
      }
    });
    attention(l, T, tok_seq, pos);
    matmul(L.wo, attn_.data(), T, q_dim, ffn_out_.data(), D);
    // Output bias and residual add, then the FFN's RMSNorm of the same rows.
    for_tokens(T, [&](int t0, int t1) {
      if (L.bo)
        for (int t = t0; t < t1; t++)
          for (int i = 0; i < D; i++) ffn_out_[(size_t)t * D + i] += L.bo[i];
      for (size_t i = (size_t)t0 * D; i < (size_t)t1 * D; i++) x_[i] += ffn_out_[i];
      rmsnorm(x_.data() + (size_t)t0 * D, L.ffn_norm, t1 - t0, xn_.data() + (size_t)t0 * D);
    });
    if (L.fused_gate_up) {
      matmul(L.w_gate_up, xn_.data(), T, D, ffn_.data(), 2 * F);
    } else {
      matmul(L.w_gate, xn_.data(), T, D, ffn_.data(), 2 * F);
      matmul(L.w_up, xn_.data(), T, D, ffn_.data() + F, 2 * F);
    }
    for_tokens(T, [&](int t0, int t1) {
      for (int t = t0; t < t1; t++) {  // SwiGLU in place: h = silu(gate) * up
        float* g = ffn_.data() + (size_t)t * 2 * F;
        kernels_->silu_mul(g, g + F, F);
      }
    });
    matmul(L.w_down, ffn_.data(), T, 2 * F, ffn_out_.data(), D);
    for_tokens(T, [&](int t0, int t1) {
      for (size_t i = (size_t)t0 * D; i < (size_t)t1 * D; i++) x_[i] += ffn_out_[i];
    });
  }
  // Logits only for the rows that need them: all rows of LogitsMode::All, else the last row.
  std::vector<int> rows;
  std::vector<int> first_row(entries.size());
  int row_start = 0;
  for (size_t i = 0; i < entries.size(); i++) {
    int n = (int)entries[i].tokens.size();
    bool want = entries[i].sample || entries[i].logits != LogitsMode::None;
    first_row[i] = (int)rows.size();
    if (entries[i].logits == LogitsMode::All) {
      for (int j = 0; j < n; j++) rows.push_back(row_start + j);
    } else if (want) {
      rows.push_back(row_start + n - 1);
    }
    row_start += n;
  }
  const int R = (int)rows.size(), V = c.vocab_size;
  ensure(logits_in_, (size_t)R * D);
  ensure(logits_, (size_t)R * V);
  for (int r = 0; r < R; r++) rmsnorm(x_.data() + (size_t)rows[r] * D, norm_, 1, logits_in_.data() + (size_t)r * D);
  if (R > 0) matmul(lm_head_, logits_in_.data(), R, D, logits_.data(), V);

  std::vector<StepResult> results(entries.size());
  for (size_t i = 0; i < entries.size(); i++) {
    const StepEntry& e = entries[i];
    StepResult& out = results[i];
    out.seq_id = e.seq_id;
    int n_rows = e.logits == LogitsMode::All ? (int)e.tokens.size() : 1;
    int last = first_row[i] + n_rows - 1;
    if (e.sample) out.token = sample_token(logits_.data() + (size_t)last * V, V, e.sampling, seqs[i]->rng);
    if (e.logits != LogitsMode::None) {
      out.logit_rows = n_rows;
      const float* src = logits_.data() + (size_t)first_row[i] * V;
      out.logits.assign(src, src + (size_t)n_rows * V);
    }
  }
  return results;
}

}  // namespace npu
