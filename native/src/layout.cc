// Quantize (I8: symmetric per output channel, scale = max|w| / 127) and pack weights.
#include "layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "half.h"

namespace npu {

static void quantize_rows(const float* src, int rows, int cols, std::vector<int8_t>& q, std::vector<float>& scales) {
  q.resize((size_t)rows * cols);
  for (int r = 0; r < rows; r++) {
    const float* row = src + (size_t)r * cols;
    float amax = 0.f;
    for (int c = 0; c < cols; c++) amax = std::max(amax, std::fabs(row[c]));
    float inv = amax > 0.f ? 127.f / amax : 0.f;
    for (int c = 0; c < cols; c++) q[(size_t)r * cols + c] = (int8_t)std::nearbyint(row[c] * inv);
    scales[r] = amax / 127.f;
  }
}

template <typename T>
static void pack16(const T* src, int rows, int cols, int kgroup, T* dst) {
  int padded_cols = round_up(cols, kgroup);
  for (int r = 0; r < rows; r++) {
    size_t group = (size_t)(r / kPackRows) * padded_cols * kPackRows;
    for (int c = 0; c < cols; c++) {
      size_t idx = group + (size_t)(c / kgroup) * kPackRows * kgroup + (r % kPackRows) * kgroup + c % kgroup;
      dst[idx] = src[(size_t)r * cols + c];
    }
  }
}

PackedWeight pack_weight(const float* src, int rows, int cols, DType dtype, Layout layout) {
  PackedWeight out;
  Weight shape;
  shape.dtype = dtype;
  shape.layout = layout;
  shape.rows = rows;
  shape.cols = cols;
  out.data.assign(weight_data_bytes(dtype, layout, rows, cols), 0);
  bool packed = layout == Layout::Packed16;
  if (dtype == DType::F32) {
    if (packed) pack16(src, rows, cols, 1, reinterpret_cast<float*>(out.data.data()));
    else std::memcpy(out.data.data(), src, out.data.size());
  } else if (dtype == DType::F16) {
    std::vector<uint16_t> h((size_t)rows * cols);
    for (size_t i = 0; i < h.size(); i++) h[i] = float_to_half(src[i]);
    if (packed) pack16(h.data(), rows, cols, 1, reinterpret_cast<uint16_t*>(out.data.data()));
    else std::memcpy(out.data.data(), h.data(), out.data.size());
  } else {
    std::vector<int8_t> q;
    out.scales.assign(shape.padded_rows(), 0.f);
    quantize_rows(src, rows, cols, q, out.scales);
    if (packed) pack16(q.data(), rows, cols, kPackK, reinterpret_cast<int8_t*>(out.data.data()));
    else std::memcpy(out.data.data(), q.data(), out.data.size());
  }
  return out;
}

}  // namespace npu
