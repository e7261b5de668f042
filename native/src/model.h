// The Mistral/Llama/Qwen2 decoder: configuration, weights mapped from a .npu file, sequences with their
// KV block tables, and the batched step that runs prefill chunks and decode tokens together.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "backend.h"
#include "kv_cache.h"
#include "sampler.h"
#include "threadpool.h"

namespace npu {

struct Config {
  int dim = 0;            // hidden size
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
  int hidden_dim = 0;     // FFN intermediate size
  int vocab_size = 0;
  int sliding_window = 0; // 0: full attention
  float norm_eps = 1e-5f;
  bool attention_bias = false;        // q/k/v biases (qwen2, llama attention_bias)
  bool attention_output_bias = false; // output projection bias (llama attention_bias)
  std::vector<float> rope_inv_freq; // (head_dim / 2) RoPE inverse frequencies, scaling applied
};

// One tensor of the file as described by its metadata (validated against the mapping).
struct TensorDesc {
  std::string name;
  DType dtype = DType::F32;
  Layout layout = Layout::RowMajor;
  std::vector<int64_t> shape;
  uint64_t offset = 0;  // absolute byte offset in the file
  uint64_t bytes = 0;
};

struct EngineOptions {
  int threads = 1;
  int max_seq_len = 2048;
  int kv_cache_tokens = 8192;
  int kv_block_tokens = 16;
  std::string kernel;  // empty: best for this CPU
  bool kv_f16 = false; // KV cache rows in f16 instead of f32
  // Full KV blocks are kept and shared between sequences whose prompts start with the same tokens.
  bool prefix_caching = false;
  // The prefix cache's hash chains start from a hash of this: the loaded file's identity (engine.ts
  // passes a digest of the .npu metadata, which names the source digest and converter version).
  std::string model_identity;
  // Activations of INT8 weights quantized to 16 bits (W8A16; default) or 8 (W8A8: faster prefill,
  // but it flips near-tied logits of real models).
  int int8_activation_bits = 16;
  // What the engine may allocate besides the weights and the step scratch (KV cache, RoPE tables):
  // checked after the file is validated and before either is allocated.
  uint64_t memory_budget_bytes = 1ull << 30;
};

// The model file read into private anonymous memory: what the engine computes with cannot change or
// vanish (SIGBUS) when the file on disk is truncated or rewritten while it serves. Only a regular
// file is accepted (a FIFO or device would block the open or the read).
class WeightFile {
 public:
  explicit WeightFile(const std::string& path);
  ~WeightFile();
  WeightFile(const WeightFile&) = delete;
  WeightFile& operator=(const WeightFile&) = delete;
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

struct Layer {
  const float* attn_norm = nullptr;  // (dim)
  bool fused_qkv = false;
  Weight wqkv, wq, wk, wv;           // fused: (q_dim + 2 kv_dim, dim); else (q_dim|kv_dim, dim)
  const float *bq = nullptr, *bk = nullptr, *bv = nullptr;  // (q_dim), (kv_dim), (kv_dim); null without biases
  Weight wo;                         // (dim, q_dim)
  const float* bo = nullptr;         // (dim) output projection bias; null without
  const float* ffn_norm = nullptr;   // (dim)
  bool fused_gate_up = false;
  Weight w_gate_up, w_gate, w_up;    // fused: (2 hidden, dim), gate rows first
  Weight w_down;                     // (dim, hidden)
};

struct Sequence {
  int id = 0;
  int length = 0;             // tokens in the KV cache
  std::vector<int> blocks;    // KV block table
  std::vector<int32_t> tokens;  // (length) the tokens whose KV the blocks hold
  // Links of the leading full blocks already registered in (or matched from) the prefix cache.
  std::vector<PrefixLink> chain;
  bool chain_broken = false;  // a hash collision stopped registering this sequence's blocks
  Rng rng{0};
};

enum class LogitsMode : int { None = 0, Last = 1, All = 2 };

struct StepEntry {
  int seq_id = 0;
  std::vector<int32_t> tokens;
  LogitsMode logits = LogitsMode::None;
  bool sample = true;
  SamplingParams sampling;
};

// What the JS thread decided for a step before handing it to a worker: each entry's sequence, its
// first position (the sequence's length before the step), with KV blocks already reserved. The worker
// reads only this and the sequences' block tables, which nothing changes while the step runs.
struct PreparedStep {
  std::vector<Sequence*> seqs;
  std::vector<int> start;
};

struct StepResult {
  int seq_id = 0;
  int token = -1;
  int logit_rows = 0;
  std::vector<float> logits;  // (logit_rows, vocab)
};

class Model {
 public:
  // Validates every tensor against the config, then checks the memory budget, then allocates.
  Model(const std::string& path, const Config& cfg, const std::vector<TensorDesc>& tensors, const EngineOptions& opt);

  const Config& config() const { return cfg_; }
  const Kernels& kernels() const { return *kernels_; }
  int threads() const { return pool_.size(); }
  uint64_t weight_bytes() const { return weight_bytes_; }
  const EngineOptions& options() const { return opt_; }

  // Sequence table: called on the JS thread, guarded against a step on a worker thread.
  // With prefix caching and a prompt, the new sequence starts with the longest cached run of full
  // blocks of the prompt (never all of it: the last prompt token is left to compute, so there are
  // logits to sample from); sequence_length() is then the number of tokens matched.
  int create_sequence(uint64_t seed, const std::vector<int32_t>& prompt = {});
  void release_sequence(int id);  // deferred while a step runs
  int sequence_length(int id);
  int free_kv_blocks();  // cached blocks nobody uses count as free: they are evicted on demand
  int cached_kv_blocks();
  int total_kv_blocks() const { return kv_->total_blocks(); }
  size_t kv_cache_bytes() const { return kv_->bytes(); }
  bool kv_f16() const { return kv_->f16(); }
  int kv_block_tokens() const { return kv_->block_tokens(); }

  // Per entry, what is wrong with it alone (unknown or released sequence, no tokens, a token outside
  // the vocabulary, too long), or "" when it may run: the caller can drop only the offenders.
  std::vector<std::string> entry_problems(const std::vector<StepEntry>& entries);
  // JS thread: validates the batch (throws std::runtime_error naming the problem, with nothing
  // changed), marks the engine stepping and reserves the KV blocks the step writes.
  PreparedStep begin_step(const std::vector<StepEntry>& entries);
  // Runs one batched forward pass. Called off the JS thread; one at a time.
  std::vector<StepResult> step(const std::vector<StepEntry>& entries, const PreparedStep& prepared);
  // JS thread, when the step's promise settles: publishes the new lengths (if it ran) and performs
  // the releases deferred while it ran.
  void end_step(const std::vector<StepEntry>& entries, const PreparedStep& prepared, bool ran);

 private:
  void bind_weights(const std::vector<TensorDesc>& tensors);
  void check_memory_budget() const;
  std::string entry_problem(const StepEntry& e) const;  // seq_mu_ held
  void matmul(const Weight& w, const float* x, int T, int ldx, float* y, int ldy);
  void rmsnorm(const float* x, const float* weight, int T, float* out);
  void embed(const std::vector<int32_t>& tokens, float* out);
  void add_qkv_bias(const Layer& L, int t0, int t1);
  void rope(float* v, int heads, const std::vector<int>& pos, int t0, int t1, int ld);
  // fn(t0, t1) over token ranges covering [0, T): on the pool for prefill-sized T, else inline.
  void for_tokens(int T, const std::function<void(int, int)>& fn);
  void store_kv(void* dst, const float* src, int n);
  void register_full_blocks(Sequence& s);  // seq_mu_ held
  void attention(int layer, int T, const std::vector<Sequence*>& tok_seq, const std::vector<int>& pos);

  Config cfg_;
  EngineOptions opt_;
  WeightFile file_;
  const Kernels* kernels_;
  ThreadPool pool_;
  std::unique_ptr<KvCache> kv_;  // allocated last, once the file and the budget are checked
  PrefixLink prefix_root_;
  uint64_t weight_bytes_ = 0;

  Weight tok_embeddings_;  // (vocab, dim), row-major
  std::vector<Layer> layers_;
  const float* norm_ = nullptr;
  Weight lm_head_;         // (vocab, dim)
  std::vector<float> rope_cos_, rope_sin_;  // (max_seq_len, head_dim / 2)

  std::mutex seq_mu_;
  std::map<int, std::unique_ptr<Sequence>> seqs_;
  std::vector<int> pending_release_;
  bool stepping_ = false;
  int next_seq_id_ = 1;

  // Scratch reused across steps, sized for the largest step so far.
  std::vector<float> x_, xn_, qkv_, attn_, ffn_, ffn_out_, logits_in_, logits_;
  std::vector<int8_t> xq_;
  std::vector<float> xq_scale_;
  std::vector<int16_t> xq16_;
  struct AttnTile {
    int t0, n;  // tokens [t0, t0 + n) of one sequence at consecutive positions
  };
  struct AttnScratch {
    std::vector<float> qt, m, l, o, work;
    std::vector<int> qpos;
  };
  std::vector<AttnTile> tiles_;
  std::vector<AttnScratch> attn_scratch_;  // per thread
};

}  // namespace npu
