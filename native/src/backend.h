// The compute backend: weight descriptors in the layouts the converter writes, and the table of
// kernels chosen once at load by CPU feature. An NPU vendor SDK would be another Backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace npu {

enum class DType : int { F32 = 0, F16 = 1, I8 = 2 };

// RowMajor: [rows][cols]. Packed16: rows in groups of 16 (padded with zero rows); inside a group,
// F32/F16 store [k][16] and I8 stores [k/4][16][4] (cols padded with zeros to a multiple of the
// quantization group), the layout VNNI's vpdpbusd and AMX's B tiles read without shuffles.
enum class Layout : int { RowMajor = 0, Packed16 = 1 };

constexpr int kPackRows = 16;
constexpr int kPackK = 4;
// I8 weights and activations keep one scale per kQuantGroup consecutive values along K (as
// llama.cpp's Q8_0): outlier channels then cost precision only in their own group.
constexpr int kQuantGroup = 32;

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

struct Weight {
  DType dtype = DType::F32;
  Layout layout = Layout::RowMajor;
  int rows = 0;  // output channels (N)
  int cols = 0;  // input channels (K)
  const void* data = nullptr;
  // I8: f16 bits of one scale per (row, group of kQuantGroup along K): w = q * scale. RowMajor
  // stores [rows][k_groups()]; Packed16 [padded_rows / 16][k_groups()][16], so the kernel reads the
  // 16 scales of a row group and k group with one load. Padding rows have scale 0.
  const uint16_t* scales = nullptr;

  int padded_rows() const { return layout == Layout::Packed16 ? round_up(rows, kPackRows) : rows; }
  int padded_cols() const {
    return layout == Layout::Packed16 && dtype == DType::I8 ? round_up(cols, kQuantGroup) : cols;
  }
  int k_groups() const { return (cols + kQuantGroup - 1) / kQuantGroup; }
  size_t scale_count() const { return (size_t)padded_rows() * k_groups(); }
};

// Position of the scale of (row n, k group g) among an I8 weight's scales.
inline size_t scale_index(const Weight& w, int n, int g) {
  if (w.layout == Layout::RowMajor) return (size_t)n * w.k_groups() + g;
  return ((size_t)(n / kPackRows) * w.k_groups() + g) * kPackRows + n % kPackRows;
}

size_t dtype_size(DType t);
size_t weight_data_bytes(DType t, Layout l, int rows, int cols);

// Activations quantized per token and group of kQuantGroup for I8 weights:
// q[t][k] = round(x[t][k] / scale[t][k / kQuantGroup]), in [-L, L]: int8 (L = 127), or int16
// (L = 32767, W8A16: real models' near-tied logits flip under 8-bit activations).
template <class Q>
struct QuantizedActsOf {
  const Q* q;         // [T][ld] (ld a multiple of kQuantGroup, >= padded cols; padding is zero)
  const float* scale; // [T][ld / kQuantGroup]
  int ld;
  int scales_ld() const { return ld / kQuantGroup; }
};
using QuantizedActs = QuantizedActsOf<int8_t>;
using QuantizedActs16 = QuantizedActsOf<int16_t>;

// Attention of nq queries against one KV head, one KV block at a time with an online softmax (as
// flash attention), so a block's keys and values are converted once for all nq queries. nq is a
// multiple of 8 (padding queries repeat a real query's position and are discarded).
struct AttnQueries {
  const float* qt;   // [hd][nq]: queries transposed and already multiplied by 1/sqrt(hd)
  const int* qpos;   // [nq]: positions; the key at position kp is seen iff kp <= qpos
  int nq, hd;
  int real;          // queries [real, nq) are padding: their outputs may be left untouched
  int window;        // sliding window (0: none): also requires qpos - kp < window
  float* m;          // [nq] running max of the scores (start at -inf)
  float* l;          // [nq] running sum of exp(score - m) (start at 0)
  float* o;          // [nq][hd] output, not yet divided by l (start at 0)
  float* scratch;    // attn_scratch_floats(nq, hd, n) floats for the kernel's own use
};

// Scores [n][nq], one rescale factor per query, and f32 copies of the block's keys and values.
inline size_t attn_scratch_floats(int nq, int hd, int n) { return (size_t)n * nq + (size_t)nq + 2 * (size_t)n * hd; }

// y[t][n] for n in [n0, n1): n0 and n1 are multiples of kPackRows except n1 == rows.
struct Kernels {
  const char* name;
  void (*gemm_f32)(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1);
  void (*gemm_f16)(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1);
  void (*gemm_i8)(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1);
  // One token row of length k -> int8 q (padded with zeros to ld, a multiple of kQuantGroup) and
  // ld / kQuantGroup scales (0 for groups past k): scale = max|x| / 127 over the group.
  void (*quantize_row)(const float* x, int k, int ld, int8_t* q, float* scales);
  // I8 weights times int16 activations: the same group scheme, each group's dot products exact in int32.
  void (*gemm_i8_a16)(const Weight& w, const QuantizedActs16& x, int T, float* y, int ldy, int n0, int n1);
  // quantize_row to int16: scale = max|x| / 32767 over the group.
  void (*quantize_row_i16)(const float* x, int k, int ld, int16_t* q, float* scales);
  // One KV block: n key and value rows ld elements apart (f32, or f16 bits when f16), the first at
  // position kpos0, folded into the queries' running softmax state.
  void (*attn_block)(const AttnQueries& a, const void* k, const void* v, bool f16, size_t ld, int n, int kpos0);
  // SwiGLU of one row: g[i] = silu(g[i]) * u[i].
  void (*silu_mul)(float* g, const float* u, int n);
  // float -> IEEE binary16 bits, round to nearest even (KV cache stores).
  void (*to_f16)(const float* x, int n, uint16_t* out);
};

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
  bool avx512bf16 = false, avx512fp16 = false, avxvnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();

// The kernel set to use: the best the CPU supports, unless NPUSERVE_KERNEL (scalar | avx2 | avxvnni |
// avx512vnni) caps it.
const Kernels& select_kernels();
const Kernels& kernels_by_name(const std::string& name);  // throws for unknown/unsupported

extern const Kernels kRefKernels;
bool avx2_kernels_available();
extern const Kernels kAvx2Kernels;
// The AVX2 set with AVX-VNNI's vpdpbusd in the packed int8 GEMM.
bool avxvnni_kernels_available();
const Kernels& avxvnni_kernels();
// The AVX-VNNI (or AVX2) set with the W8A16 packed GEMM in AVX-512 VNNI.
bool avx512vnni_kernels_available();
const Kernels& avx512vnni_kernels();

}  // namespace npu
