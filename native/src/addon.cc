// Node-API bindings: loadModel() builds a Model off the JS thread and resolves to an Engine; each
// Engine.step() runs one batched forward pass in an AsyncWorker. Plus the converter's packWeight()
// and a gemm() entry that runs one kernel set directly (for kernel tests and benchmarks).
#include <napi.h>

#include <cmath>
#include <limits>
#include <memory>
#include <stdexcept>

#include "layout.h"
#include "membw.h"
#include "model.h"

namespace npu {
namespace {

DType parse_dtype(const std::string& s) {
  if (s == "f32") return DType::F32;
  if (s == "f16") return DType::F16;
  if (s == "i8") return DType::I8;
  throw std::runtime_error("unknown dtype '" + s + "': expected f32, f16 or i8");
}

Layout parse_layout(const std::string& s) {
  if (s == "row-major") return Layout::RowMajor;
  if (s == "packed16") return Layout::Packed16;
  throw std::runtime_error("unknown layout '" + s + "': expected row-major or packed16");
}

double num(const Napi::Object& o, const char* key, double fallback = NAN) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) {
    if (std::isnan(fallback)) throw std::runtime_error(std::string("missing number '") + key + "'");
    return fallback;
  }
  if (!v.IsNumber()) throw std::runtime_error(std::string("'") + key + "' must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int int_in(const Napi::Object& o, const char* key, int lo, int hi, double fallback = NAN) {
  double d = num(o, key, fallback);
  if (d != (double)(int64_t)d || d < lo || d > hi)
    throw std::runtime_error(std::string("'") + key + "' must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + std::to_string(d));
  return (int)d;
}

bool flag(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return false;
  if (!v.IsBoolean()) throw std::runtime_error(std::string("'") + key + "' must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

Config parse_config(const Napi::Object& o) {
  Config c;
  c.dim = int_in(o, "dim", 1, 1 << 20);
  c.n_layers = int_in(o, "nLayers", 1, 1024);
  c.n_heads = int_in(o, "nHeads", 1, 4096);
  c.n_kv_heads = int_in(o, "nKvHeads", 1, 4096);
  c.head_dim = int_in(o, "headDim", 2, 4096);
  c.hidden_dim = int_in(o, "hiddenDim", 1, 1 << 20);
  c.vocab_size = int_in(o, "vocabSize", 1, 1 << 24);
  c.sliding_window = int_in(o, "slidingWindow", 0, 1 << 30, 0);
  c.norm_eps = (float)num(o, "normEps");
  c.attention_bias = flag(o, "attentionBias");
  c.attention_output_bias = flag(o, "attentionOutputBias");
  if (c.n_heads % c.n_kv_heads != 0)
    throw std::runtime_error("nHeads " + std::to_string(c.n_heads) + " is not a multiple of nKvHeads " + std::to_string(c.n_kv_heads));
  if (c.head_dim % 2 != 0) throw std::runtime_error("headDim must be even for RoPE, got " + std::to_string(c.head_dim));
  if (!(c.norm_eps > 0)) throw std::runtime_error("normEps must be positive");
  Napi::Value inv = o.Get("ropeInvFreq");
  if (!inv.IsArray() || inv.As<Napi::Array>().Length() != (uint32_t)c.head_dim / 2)
    throw std::runtime_error("'ropeInvFreq' must be an array of headDim / 2 = " + std::to_string(c.head_dim / 2) + " numbers");
  Napi::Array a = inv.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value v = a.Get(i);
    double f = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : NAN;
    if (!(f > 0) || !std::isfinite(f)) throw std::runtime_error("'ropeInvFreq' [" + std::to_string(i) + "] must be a positive finite number");
    c.rope_inv_freq.push_back((float)f);
  }
  return c;
}

// A non-negative integer that a double holds exactly (at most 2^53 - 1).
uint64_t whole(const Napi::Object& o, const char* key, const std::string& what) {
  double d = num(o, key);
  if (!(d >= 0 && d <= 9007199254740991.0 && d == std::floor(d)))
    throw std::runtime_error(what + ": '" + key + "' must be a non-negative integer, got " + std::to_string(d));
  return (uint64_t)d;
}

std::vector<TensorDesc> parse_tensors(const Napi::Array& a) {
  std::vector<TensorDesc> out;
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Object o = a.Get(i).As<Napi::Object>();
    TensorDesc t;
    t.name = o.Get("name").As<Napi::String>().Utf8Value();
    t.dtype = parse_dtype(o.Get("dtype").As<Napi::String>().Utf8Value());
    t.layout = parse_layout(o.Get("layout").As<Napi::String>().Utf8Value());
    Napi::Array shape = o.Get("shape").As<Napi::Array>();
    for (uint32_t j = 0; j < shape.Length(); j++) t.shape.push_back((int64_t)shape.Get(j).As<Napi::Number>().DoubleValue());
    t.offset = whole(o, "offset", "tensor '" + t.name + "'");
    t.bytes = whole(o, "bytes", "tensor '" + t.name + "'");
    out.push_back(std::move(t));
  }
  return out;
}

// The activation bits an I8 gemm of the kernel tests uses: "int8Activations" int8 or int16 (default).
int activation_bits(const Napi::Object& o) {
  Napi::Value v = o.Get("int8Activations");
  if (!v.IsString()) return 16;
  std::string a = v.As<Napi::String>().Utf8Value();
  if (a != "int8" && a != "int16") throw std::runtime_error("int8Activations '" + a + "': expected int8 or int16");
  return a == "int8" ? 8 : 16;
}

EngineOptions parse_options(const Napi::Object& o) {
  EngineOptions e;
  e.threads = int_in(o, "threads", 1, 1024, 1);
  e.max_seq_len = int_in(o, "maxSeqLen", 1, 1 << 22, 2048);
  e.kv_cache_tokens = int_in(o, "kvCacheTokens", 1, 1 << 26, 8192);
  e.kv_block_tokens = int_in(o, "kvBlockTokens", 1, 1024, 16);
  if (!o.Get("memoryBudgetBytes").IsUndefined()) e.memory_budget_bytes = whole(o, "memoryBudgetBytes", "options");
  Napi::Value k = o.Get("kernel");
  if (k.IsString()) e.kernel = k.As<Napi::String>().Utf8Value();
  Napi::Value kv = o.Get("kvCacheDtype");
  if (kv.IsString()) {
    std::string d = kv.As<Napi::String>().Utf8Value();
    if (d != "f32" && d != "f16") throw std::runtime_error("kvCacheDtype '" + d + "': expected f32 or f16");
    e.kv_f16 = d == "f16";
  }
  e.int8_activation_bits = activation_bits(o);
  Napi::Value pc = o.Get("prefixCaching");
  if (!pc.IsUndefined() && !pc.IsBoolean()) throw std::runtime_error("prefixCaching must be a boolean");
  e.prefix_caching = pc.IsBoolean() && pc.As<Napi::Boolean>().Value();
  Napi::Value id = o.Get("modelIdentity");
  if (id.IsString()) e.model_identity = id.As<Napi::String>().Utf8Value();
  return e;
}

// What one instance of the addon (the main thread, or each worker_thread that loads it) keeps:
// its own constructor reference, since a JS function belongs to one environment.
struct AddonData {
  Napi::FunctionReference engine_ctor;
};

// Token ids from an array of integers or an Int32Array (`what` names the argument in errors).
std::vector<int32_t> parse_tokens(const Napi::Value& toks, const char* what);

class Engine : public Napi::ObjectWrap<Engine> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "Engine", {
      InstanceMethod<&Engine::CreateSequence>("createSequence"),
      InstanceMethod<&Engine::ReleaseSequence>("releaseSequence"),
      InstanceMethod<&Engine::SequenceLength>("sequenceLength"),
      InstanceMethod<&Engine::EntryProblems>("entryProblems"),
      InstanceMethod<&Engine::Step>("step"),
      InstanceMethod<&Engine::Info>("info"),
    });
  }

  explicit Engine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Engine>(info) {
    if (info.Length() != 1 || !info[0].IsExternal())
      throw Napi::TypeError::New(info.Env(), "Engine is created by loadModel(), not with new");
    auto* holder = info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
    model_ = *holder;
    delete holder;
  }

 private:
  // createSequence(seed?, promptTokens?): with prefix caching, the sequence starts with the cached
  // run of the prompt's full blocks; sequenceLength() says how many tokens that is.
  Napi::Value CreateSequence(const Napi::CallbackInfo& info) {
    uint64_t seed = 0;
    if (info.Length() > 0 && info[0].IsNumber()) seed = (uint64_t)info[0].As<Napi::Number>().Int64Value();
    else if (info.Length() > 0 && info[0].IsBigInt()) {
      bool lossless;
      seed = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
    }
    int id = 0;
    wrap(info.Env(), [&] {
      std::vector<int32_t> prompt;
      if (info.Length() > 1 && !info[1].IsUndefined()) prompt = parse_tokens(info[1], "promptTokens");
      id = model_->create_sequence(seed, prompt);
    });
    return Napi::Number::New(info.Env(), id);
  }

  Napi::Value ReleaseSequence(const Napi::CallbackInfo& info) {
    wrap(info.Env(), [&] { model_->release_sequence(seq_arg(info)); });
    return info.Env().Undefined();
  }

  Napi::Value SequenceLength(const Napi::CallbackInfo& info) {
    int n = 0;
    wrap(info.Env(), [&] { n = model_->sequence_length(seq_arg(info)); });
    return Napi::Number::New(info.Env(), n);
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("kernel", model_->kernels().name);
    o.Set("threads", model_->threads());
    o.Set("weightBytes", (double)model_->weight_bytes());
    o.Set("kvCacheBytes", (double)model_->kv_cache_bytes());
    o.Set("kvCacheDtype", model_->kv_f16() ? "f16" : "f32");
    o.Set("int8Activations", model_->options().int8_activation_bits == 8 ? "int8" : "int16");
    o.Set("kvBlockTokens", model_->kv_block_tokens());
    o.Set("kvBlocksTotal", model_->total_kv_blocks());
    o.Set("kvBlocksFree", model_->free_kv_blocks());
    o.Set("kvBlocksCached", model_->cached_kv_blocks());
    o.Set("maxSeqLen", model_->options().max_seq_len);
    o.Set("prefixCaching", model_->options().prefix_caching);
    return o;
  }

  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value EntryProblems(const Napi::CallbackInfo& info);

  int seq_arg(const Napi::CallbackInfo& info) {
    if (info.Length() < 1 || !info[0].IsNumber()) throw std::runtime_error("sequence id must be a number");
    return info[0].As<Napi::Number>().Int32Value();
  }

  template <typename F>
  static void wrap(Napi::Env env, F&& f) {
    try {
      f();
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  std::shared_ptr<Model> model_;
};

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, std::shared_ptr<Model> model, std::vector<StepEntry> entries, PreparedStep prepared)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(std::move(model)), entries_(std::move(entries)),
        prepared_(std::move(prepared)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      results_ = model_->step(entries_, prepared_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  // The step ends on the JS thread, when its promise settles: until then a second step is refused
  // (whatever the worker's speed) and released sequences wait for this step's results.
  void OnOK() override {
    model_->end_step(entries_, prepared_, true);
    Napi::Env env = Env();
    Napi::Array out = Napi::Array::New(env, results_.size());
    for (size_t i = 0; i < results_.size(); i++) {
      StepResult& r = results_[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("sequence", r.seq_id);
      o.Set("token", r.token);
      if (r.logit_rows > 0) {
        Napi::Float32Array logits = Napi::Float32Array::New(env, r.logits.size());
        std::copy(r.logits.begin(), r.logits.end(), logits.Data());
        o.Set("logits", logits);
      }
      out.Set(i, o);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override {
    model_->end_step(entries_, prepared_, false);
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  std::vector<StepEntry> entries_;
  PreparedStep prepared_;
  std::vector<StepResult> results_;
};

std::vector<int32_t> parse_tokens(const Napi::Value& toks, const char* what) {
  std::vector<int32_t> out;
  if (toks.IsTypedArray() && toks.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
    Napi::Int32Array a = toks.As<Napi::Int32Array>();
    out.assign(a.Data(), a.Data() + a.ElementLength());
  } else if (toks.IsArray()) {
    Napi::Array a = toks.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++) {
      Napi::Value t = a.Get(i);
      if (!t.IsNumber()) throw std::runtime_error(std::string(what) + " must be integers");
      double d = t.As<Napi::Number>().DoubleValue();
      if (d != (double)(int32_t)d) throw std::runtime_error(std::string(what) + " must be integers, got " + std::to_string(d));
      out.push_back((int32_t)d);
    }
  } else {
    throw std::runtime_error("'" + std::string(what) + "' must be an array of integers or an Int32Array");
  }
  return out;
}

StepEntry parse_entry(const Napi::Value& v) {
  if (!v.IsObject()) throw std::runtime_error("each step entry must be an object");
  Napi::Object o = v.As<Napi::Object>();
  StepEntry e;
  e.seq_id = int_in(o, "sequence", 0, INT32_MAX);
  e.tokens = parse_tokens(o.Get("tokens"), "tokens");
  Napi::Value lg = o.Get("logits");
  if (lg.IsString()) {
    std::string m = lg.As<Napi::String>().Utf8Value();
    if (m == "none") e.logits = LogitsMode::None;
    else if (m == "last") e.logits = LogitsMode::Last;
    else if (m == "all") e.logits = LogitsMode::All;
    else throw std::runtime_error("'logits' must be none, last or all, got '" + m + "'");
  }
  Napi::Value sample = o.Get("sample");
  e.sample = sample.IsUndefined() ? true : sample.ToBoolean().Value();
  e.sampling.temperature = (float)num(o, "temperature", 0.0);
  e.sampling.top_p = (float)num(o, "topP", 1.0);
  if (!(e.sampling.temperature >= 0)) throw std::runtime_error("'temperature' must be >= 0");
  if (!(e.sampling.top_p > 0 && e.sampling.top_p <= 1)) throw std::runtime_error("'topP' must be in (0, 1]");
  return e;
}

std::vector<StepEntry> parse_entries(const Napi::CallbackInfo& info, const char* method) {
  if (info.Length() < 1 || !info[0].IsArray()) throw std::runtime_error(std::string(method) + "() takes an array of entries");
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<StepEntry> entries;
  for (uint32_t i = 0; i < a.Length(); i++) entries.push_back(parse_entry(a.Get(i)));
  return entries;
}

// entryProblems(entries) -> (string | null)[]: what is wrong with each entry alone.
Napi::Value Engine::EntryProblems(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<std::string> problems;
  wrap(env, [&] { problems = model_->entry_problems(parse_entries(info, "entryProblems")); });
  Napi::Array out = Napi::Array::New(env, problems.size());
  for (size_t i = 0; i < problems.size(); i++) out.Set(i, problems[i].empty() ? env.Null() : Napi::String::New(env, problems[i]));
  return out;
}

Napi::Value Engine::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::vector<StepEntry> entries;
  PreparedStep prepared;
  wrap(env, [&] {
    entries = parse_entries(info, "step");
    prepared = model_->begin_step(entries);
  });
  auto* worker = new StepWorker(env, model_, std::move(entries), std::move(prepared));
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

class LoadWorker : public Napi::AsyncWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, Config cfg, std::vector<TensorDesc> tensors, EngineOptions opt)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)), cfg_(cfg),
        tensors_(std::move(tensors)), opt_(std::move(opt)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      model_ = std::make_shared<Model>(path_, cfg_, tensors_, opt_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    auto* holder = new std::shared_ptr<Model>(model_);
    deferred_.Resolve(Env().GetInstanceData<AddonData>()->engine_ctor.New({Napi::External<std::shared_ptr<Model>>::New(Env(), holder)}));
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  Config cfg_;
  std::vector<TensorDesc> tensors_;
  EngineOptions opt_;
  std::shared_ptr<Model> model_;
};

template <typename F>
Napi::Value guarded(Napi::Env env, F&& f) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// loadModel(path, { config, tensors }, options) -> Promise<Engine>
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    if (info.Length() < 3 || !info[0].IsString() || !info[1].IsObject() || !info[2].IsObject())
      throw std::runtime_error("loadModel(path, descriptor, options)");
    Napi::Object desc = info[1].As<Napi::Object>();
    auto* w = new LoadWorker(env, info[0].As<Napi::String>().Utf8Value(), parse_config(desc.Get("config").As<Napi::Object>()),
                             parse_tensors(desc.Get("tensors").As<Napi::Array>()), parse_options(info[2].As<Napi::Object>()));
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  });
}

Napi::Float32Array float_arg(const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
    throw std::runtime_error(std::string(what) + " must be a Float32Array");
  return v.As<Napi::Float32Array>();
}

// packWeight(Float32Array (rows x cols), rows, cols, dtype, layout) -> { data: Uint8Array, scales? }
// (scales: i8 only, Uint16Array of f16 bits in the kernels' order, see Weight::scales)
Napi::Value PackWeight(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Float32Array src = float_arg(info[0], "weights");
    int rows = info[1].As<Napi::Number>().Int32Value(), cols = info[2].As<Napi::Number>().Int32Value();
    if (rows <= 0 || cols <= 0 || (size_t)rows * cols != src.ElementLength())
      throw std::runtime_error("packWeight: " + std::to_string(rows) + "x" + std::to_string(cols) + " does not match " + std::to_string(src.ElementLength()) + " values");
    PackedWeight p = pack_weight(src.Data(), rows, cols, parse_dtype(info[3].As<Napi::String>()), parse_layout(info[4].As<Napi::String>()));
    Napi::Object o = Napi::Object::New(env);
    Napi::Uint8Array data = Napi::Uint8Array::New(env, p.data.size());
    std::copy(p.data.begin(), p.data.end(), data.Data());
    o.Set("data", data);
    if (!p.scales.empty()) {
      Napi::Uint16Array s = Napi::Uint16Array::New(env, p.scales.size());
      std::copy(p.scales.begin(), p.scales.end(), s.Data());
      o.Set("scales", s);
    }
    return o;
  });
}

// gemm({ kernel, dtype, layout, rows, cols, data, scales?, x, tokens }) -> Float32Array (tokens x rows)
Napi::Value Gemm(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    const Kernels& k = kernels_by_name(o.Get("kernel").As<Napi::String>().Utf8Value());
    Weight w;
    w.dtype = parse_dtype(o.Get("dtype").As<Napi::String>());
    w.layout = parse_layout(o.Get("layout").As<Napi::String>());
    w.rows = int_in(o, "rows", 1, 1 << 24);
    w.cols = int_in(o, "cols", 1, 1 << 24);
    int T = int_in(o, "tokens", 1, 1 << 20);
    Napi::Uint8Array data = o.Get("data").As<Napi::Uint8Array>();
    if (data.ByteLength() != weight_data_bytes(w.dtype, w.layout, w.rows, w.cols)) throw std::runtime_error("gemm: data size does not match shape");
    w.data = data.Data();
    Napi::Float32Array x = float_arg(o.Get("x"), "x");
    if (x.ElementLength() != (size_t)T * w.cols) throw std::runtime_error("gemm: x must hold tokens x cols values");
    if (w.dtype == DType::I8) {
      Napi::Value sv = o.Get("scales");
      if (!sv.IsTypedArray() || sv.As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array)
        throw std::runtime_error("gemm: scales must be a Uint16Array (f16 bits)");
      Napi::Uint16Array s = sv.As<Napi::Uint16Array>();
      if (s.ElementLength() != w.scale_count())
        throw std::runtime_error("gemm: scales hold " + std::to_string(s.ElementLength()) + " values, the weight needs " + std::to_string(w.scale_count()));
      w.scales = s.Data();
    }
    Napi::Float32Array y = Napi::Float32Array::New(env, (size_t)T * w.rows);
    const int ld = round_up(w.padded_cols(), 64), sld = ld / kQuantGroup;
    if (w.dtype == DType::I8 && activation_bits(o) == 16) {
      std::vector<int16_t> q((size_t)T * ld);
      std::vector<float> qs((size_t)T * sld);
      for (int t = 0; t < T; t++) k.quantize_row_i16(x.Data() + (size_t)t * w.cols, w.cols, ld, q.data() + (size_t)t * ld, qs.data() + (size_t)t * sld);
      k.gemm_i8_a16(w, QuantizedActs16{q.data(), qs.data(), ld}, T, y.Data(), w.rows, 0, w.rows);
    } else if (w.dtype == DType::I8) {
      std::vector<int8_t> q((size_t)T * ld);
      std::vector<float> qs((size_t)T * sld);
      for (int t = 0; t < T; t++) k.quantize_row(x.Data() + (size_t)t * w.cols, w.cols, ld, q.data() + (size_t)t * ld, qs.data() + (size_t)t * sld);
      k.gemm_i8(w, QuantizedActs{q.data(), qs.data(), ld}, T, y.Data(), w.rows, 0, w.rows);
    } else {
      (w.dtype == DType::F16 ? k.gemm_f16 : k.gemm_f32)(w, x.Data(), w.cols, T, y.Data(), w.rows, 0, w.rows);
    }
    return y;
  });
}

// attention({ kernel, hd, q, qpos, k, v, kvDtype, window, blockTokens, scale }) -> Float32Array (nq x hd):
// the attention of nq queries over nk key/value rows (key j at position j) through one kernel set,
// fed block by block as the model feeds it (for kernel tests).
Napi::Value Attention(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    const Kernels& kern = kernels_by_name(o.Get("kernel").As<Napi::String>().Utf8Value());
    const int hd = int_in(o, "hd", 1, 4096);
    const int window = int_in(o, "window", 0, 1 << 30, 0);
    const int bt = int_in(o, "blockTokens", 1, 4096);
    const float scale = (float)o.Get("scale").As<Napi::Number>().DoubleValue();
    Napi::Float32Array q = float_arg(o.Get("q"), "q");
    Napi::Value qposv = o.Get("qpos");
    if (!qposv.IsTypedArray() || qposv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw std::runtime_error("qpos must be an Int32Array");
    Napi::Int32Array qpos = qposv.As<Napi::Int32Array>();
    const int real = (int)qpos.ElementLength();
    if (real < 1 || q.ElementLength() != (size_t)real * hd) throw std::runtime_error("attention: q must hold qpos.length x hd values");
    const bool f16 = o.Get("kvDtype").As<Napi::String>().Utf8Value() == "f16";
    Napi::TypedArray k = o.Get("k").As<Napi::TypedArray>(), v = o.Get("v").As<Napi::TypedArray>();
    napi_typedarray_type want = f16 ? napi_uint16_array : napi_float32_array;
    if (k.TypedArrayType() != want || v.TypedArrayType() != want) throw std::runtime_error("attention: k and v must match kvDtype");
    const int nk = (int)(k.ElementLength() / hd);
    if (nk < 1 || k.ElementLength() != (size_t)nk * hd || v.ElementLength() != k.ElementLength())
      throw std::runtime_error("attention: k and v must hold nk x hd values");
    for (int i = 0; i < real; i++)
      if (qpos[i] < 0 || qpos[i] >= nk) throw std::runtime_error("attention: qpos must be key positions");
    const int nq = round_up(real, 8);
    std::vector<float> qt((size_t)hd * nq), m(nq, -std::numeric_limits<float>::infinity()), l(nq, 0.f), out((size_t)nq * hd, 0.f);
    std::vector<float> work(attn_scratch_floats(nq, hd, bt));
    std::vector<int> pos(nq);
    for (int i = 0; i < nq; i++) {
      int r = std::min(i, real - 1);
      for (int d = 0; d < hd; d++) qt[(size_t)d * nq + i] = q[(size_t)r * hd + d] * scale;
      pos[i] = qpos[r];
    }
    AttnQueries a{qt.data(), pos.data(), nq, hd, real, window, m.data(), l.data(), out.data(), work.data()};
    const size_t elem = f16 ? 2 : 4;
    const uint8_t* kb = static_cast<const uint8_t*>(k.ArrayBuffer().Data()) + k.ByteOffset();
    const uint8_t* vb = static_cast<const uint8_t*>(v.ArrayBuffer().Data()) + v.ByteOffset();
    for (int j = 0; j < nk; j += bt) {
      int n = std::min(bt, nk - j);
      kern.attn_block(a, kb + (size_t)j * hd * elem, vb + (size_t)j * hd * elem, f16, hd, n, j);
    }
    Napi::Float32Array y = Napi::Float32Array::New(env, (size_t)real * hd);
    for (int i = 0; i < real; i++)
      for (int d = 0; d < hd; d++) y[(size_t)i * hd + d] = out[(size_t)i * hd + d] / l[i];
    return y;
  });
}

// rowOp({ kernel, op: 'silu_mul' | 'to_f16', x, u? }) -> Float32Array | Uint16Array: one kernel set's
// element-wise row operation (for kernel tests).
Napi::Value RowOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    const Kernels& kern = kernels_by_name(o.Get("kernel").As<Napi::String>().Utf8Value());
    const std::string op = o.Get("op").As<Napi::String>().Utf8Value();
    Napi::Float32Array x = float_arg(o.Get("x"), "x");
    const int n = (int)x.ElementLength();
    if (op == "to_f16") {
      Napi::Uint16Array out = Napi::Uint16Array::New(env, n);
      kern.to_f16(x.Data(), n, out.Data());
      return out;
    }
    if (op == "silu_mul") {
      Napi::Float32Array u = float_arg(o.Get("u"), "u");
      if ((int)u.ElementLength() != n) throw std::runtime_error("rowOp: u must be as long as x");
      Napi::Float32Array g = Napi::Float32Array::New(env, n);
      std::copy(x.Data(), x.Data() + n, g.Data());
      kern.silu_mul(g.Data(), u.Data(), n);
      return g;
    }
    throw std::runtime_error("rowOp: op must be silu_mul or to_f16, got '" + op + "'");
  });
}

// machineLimits({ bytes, threads, repeats }) -> { readBytesPerSecond, reads: [{ pattern, bytes,
// bytesPerSecond }], macPeaks: [{ instruction, activationBits, macsPerSecond }], int8MacsPerSecond,
// int16MacsPerSecond }: the limits benchmarks divide by, best of all measured.
Napi::Value MachineLimits(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return guarded(env, [&]() -> Napi::Value {
    Napi::Object o = info[0].As<Napi::Object>();
    double bytes = o.Get("bytes").As<Napi::Number>().DoubleValue();
    if (!(bytes >= 1 << 20 && bytes <= 64.0 * (1ull << 30))) throw std::runtime_error("machineLimits: bytes must be between 1 MiB and 64 GiB");
    int threads = int_in(o, "threads", 1, 1024);
    int repeats = int_in(o, "repeats", 1, 100);
    std::vector<ReadMeasurement> reads = read_bandwidth((size_t)bytes, threads, repeats);
    Napi::Array arr = Napi::Array::New(env, reads.size());
    double best = 0;
    for (size_t i = 0; i < reads.size(); i++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("pattern", reads[i].pattern);
      r.Set("bytes", (double)reads[i].bytes);
      r.Set("bytesPerSecond", reads[i].bytes_per_second);
      arr.Set((uint32_t)i, r);
      best = std::max(best, reads[i].bytes_per_second);
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("readBytesPerSecond", best);
    out.Set("reads", arr);
    Napi::Array macs = Napi::Array::New(env);
    double best8 = 0, best16 = 0;
    for (const MacPeak& m : mac_peaks(threads, repeats)) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("instruction", m.instruction);
      p.Set("activationBits", m.activation_bits);
      p.Set("macsPerSecond", m.macs_per_second);
      macs.Set(macs.Length(), p);
      (m.activation_bits == 8 ? best8 : best16) = std::max(m.activation_bits == 8 ? best8 : best16, m.macs_per_second);
    }
    out.Set("macPeaks", macs);
    out.Set("int8MacsPerSecond", best8);
    out.Set("int16MacsPerSecond", best16);
    return out;
  });
}

Napi::Value CpuFeaturesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const CpuFeatures& f = cpu_features();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", f.avx2); o.Set("fma", f.fma); o.Set("f16c", f.f16c);
  o.Set("avx512f", f.avx512f); o.Set("avx512bw", f.avx512bw); o.Set("avx512vl", f.avx512vl);
  o.Set("avx512vnni", f.avx512vnni); o.Set("avx512bf16", f.avx512bf16); o.Set("avx512fp16", f.avx512fp16);
  o.Set("avxvnni", f.avxvnni); o.Set("amxTile", f.amx_tile); o.Set("amxInt8", f.amx_int8); o.Set("amxBf16", f.amx_bf16);
  return guarded(env, [&]() -> Napi::Value {
    o.Set("selectedKernel", select_kernels().name);
    Napi::Array avail = Napi::Array::New(env);
    avail.Set((uint32_t)0, "scalar");
    if (avx2_kernels_available()) avail.Set(avail.Length(), "avx2");
    if (avxvnni_kernels_available()) avail.Set(avail.Length(), "avxvnni");
    if (avx512vnni_kernels_available()) avail.Set(avail.Length(), "avx512vnni");
    o.Set("availableKernels", avail);
    return o;
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function engine = Engine::Init(env);
  auto* data = new AddonData();
  data->engine_ctor = Napi::Persistent(engine);
  env.SetInstanceData(data);  // deleted with the environment
  exports.Set("Engine", engine);
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("packWeight", Napi::Function::New(env, PackWeight));
  exports.Set("gemm", Napi::Function::New(env, Gemm));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("rowOp", Napi::Function::New(env, RowOp));
  exports.Set("cpuFeatures", Napi::Function::New(env, CpuFeaturesJs));
  exports.Set("machineLimits", Napi::Function::New(env, MachineLimits));
  return exports;
}

}  // namespace
}  // namespace npu

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return npu::Init(env, exports); }

NODE_API_MODULE(npuserve, InitAddon)
