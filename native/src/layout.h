// Weight layouts decided at conversion time: quantization of a row-major float matrix to the
// stored dtype and packing into the layout the kernels read. The converter calls these through the
// addon, so the engine and the files it reads agree by construction.
#pragma once
#include <cstdint>
#include <vector>

#include "backend.h"

namespace npu {

struct PackedWeight {
  std::vector<uint8_t> data;     // weight_data_bytes(dtype, layout, rows, cols)
  std::vector<uint16_t> scales;  // I8 only: f16 bits, Weight::scale_count() in scale_index order
};

// src is [rows][cols] float32, row-major. Throws for an I8 weight whose scales exceed f16's range.
PackedWeight pack_weight(const float* src, int rows, int cols, DType dtype, Layout layout);

}  // namespace npu
