// The compute backend: weight descriptors in the layouts the converter writes, and the table of
// kernels chosen once at load by CPU feature. An NPU vendor SDK would be another Backend.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace npu {

enum class DType : int { F32 = 0, F16 = 1, I8 = 2 };

// RowMajor: [rows][cols]. Packed16: rows in groups of 16 (padded with zero rows); inside a group,
// F32/F16 store [k][16] and I8 stores [k/4][16][4] (cols padded to a multiple of 4), the layout
// VNNI's vpdpbusd and AMX's B tiles read without shuffles.
enum class Layout : int { RowMajor = 0, Packed16 = 1 };

constexpr int kPackRows = 16;
constexpr int kPackK = 4;

inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

struct Weight {
  DType dtype = DType::F32;
  Layout layout = Layout::RowMajor;
  int rows = 0;  // output channels (N)
  int cols = 0;  // input channels (K)
  const void* data = nullptr;
  const float* scales = nullptr;  // I8: per output channel, padded to the packed row count

  int padded_rows() const { return layout == Layout::Packed16 ? round_up(rows, kPackRows) : rows; }
  int padded_cols() const {
    return layout == Layout::Packed16 && dtype == DType::I8 ? round_up(cols, kPackK) : cols;
  }
};

size_t dtype_size(DType t);
size_t weight_data_bytes(DType t, Layout l, int rows, int cols);

// Activations quantized per token for I8 weights: q[t][k] = round(x[t][k] / scale[t]).
struct QuantizedActs {
  const int8_t* q;   // [T][ld] (ld >= padded cols, padding is zero)
  const float* scale;// [T]
  int ld;
};

// y[t][n] for n in [n0, n1): n0 and n1 are multiples of kPackRows except n1 == rows.
struct Kernels {
  const char* name;
  void (*gemm_f32)(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1);
  void (*gemm_f16)(const Weight& w, const float* x, int ldx, int T, float* y, int ldy, int n0, int n1);
  void (*gemm_i8)(const Weight& w, const QuantizedActs& x, int T, float* y, int ldy, int n0, int n1);
  // One token row of length k -> int8 q (padded with zeros to ld) and its scale.
  void (*quantize_row)(const float* x, int k, int ld, int8_t* q, float* scale);
  // Attention over n f32 KV rows of head_dim hd, ld floats apart (one KV block):
  // scores[j] = scale * (q . k_j), and out += sum_j w[j] v_j.
  void (*attn_scores)(const float* q, const float* k, size_t ld, int n, int hd, float scale, float* scores);
  void (*attn_values)(const float* w, const float* v, size_t ld, int n, int hd, float* out);
  // The same over an f16 KV cache.
  void (*attn_scores_f16)(const float* q, const uint16_t* k, size_t ld, int n, int hd, float scale, float* scores);
  void (*attn_values_f16)(const float* w, const uint16_t* v, size_t ld, int n, int hd, float* out);
};

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
  bool avx512bf16 = false, avx512fp16 = false, avxvnni = false;
  bool amx_tile = false, amx_int8 = false, amx_bf16 = false;
};

const CpuFeatures& cpu_features();

// The kernel set to use: the best the CPU supports, unless NPUSERVE_KERNEL (scalar | avx2) caps it.
const Kernels& select_kernels();
const Kernels& kernels_by_name(const std::string& name);  // throws for unknown/unsupported

extern const Kernels kRefKernels;
bool avx2_kernels_available();
extern const Kernels kAvx2Kernels;

}  // namespace npu
