// Quantize (I8: symmetric per row and group of kQuantGroup along K, scale = max|w| / 127 stored
// as f16) and pack weights.
#include "layout.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "half.h"

namespace npu {

// q is [rows][cols]; each group's values are divided by the f16-rounded scale the kernels will
// multiply by, so the stored scale is the one the values were quantized with.
static void quantize_groups(const float* src, const Weight& w, std::vector<int8_t>& q, std::vector<uint16_t>& scales) {
  q.resize((size_t)w.rows * w.cols);
  scales.assign(w.scale_count(), 0);
  for (int r = 0; r < w.rows; r++) {
    for (int g = 0; g < w.k_groups(); g++) {
      int c0 = g * kQuantGroup, c1 = std::min(w.cols, c0 + kQuantGroup);
      const float* v = src + (size_t)r * w.cols;
      float amax = 0.f;
      for (int c = c0; c < c1; c++) amax = std::max(amax, std::fabs(v[c]));
      uint16_t d = float_to_half(amax / 127.f);
      float scale = half_to_float(d);
      if (!std::isfinite(scale))
        throw std::runtime_error("packWeight: row " + std::to_string(r) + " has |w| = " + std::to_string(amax) +
                                 ", beyond the range of f16 INT8 scales (max 65504 * 127)");
      float inv = scale > 0.f ? 1.f / scale : 0.f;
      for (int c = c0; c < c1; c++) q[(size_t)r * w.cols + c] = (int8_t)std::clamp(std::nearbyint(v[c] * inv), -127.f, 127.f);
      scales[scale_index(w, r, g)] = d;
    }
  }
}

template <typename T>
static void pack16(const T* src, int rows, int cols, int padded_cols, int kgroup, T* dst) {
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
    if (packed) pack16(src, rows, cols, cols, 1, reinterpret_cast<float*>(out.data.data()));
    else std::memcpy(out.data.data(), src, out.data.size());
  } else if (dtype == DType::F16) {
    std::vector<uint16_t> h((size_t)rows * cols);
    for (size_t i = 0; i < h.size(); i++) h[i] = float_to_half(src[i]);
    if (packed) pack16(h.data(), rows, cols, cols, 1, reinterpret_cast<uint16_t*>(out.data.data()));
    else std::memcpy(out.data.data(), h.data(), out.data.size());
  } else {
    std::vector<int8_t> q;
    quantize_groups(src, shape, q, out.scales);
    if (packed) pack16(q.data(), rows, cols, shape.padded_cols(), kPackK, reinterpret_cast<int8_t*>(out.data.data()));
    else std::memcpy(out.data.data(), q.data(), out.data.size());
  }
  return out;
}

}  // namespace npu
