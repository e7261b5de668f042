// IEEE 754 binary16 <-> binary32 conversion in portable C++ (the reference path; SIMD kernels use
// F16C/AVX-512 conversions that give identical results for finite values).
#pragma once
#include <cstdint>
#include <cstring>

namespace npu {

inline float half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      int e = -1;
      do { mant <<= 1; e++; } while ((mant & 0x400) == 0);
      bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000 | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even, as F16C's vcvtps2ph with rounding mode 0.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000 ? 0x200 : 0));
  if (absx >= 0x477ff000) return (uint16_t)(sign | 0x7c00);  // overflows to inf after rounding
  if (absx < 0x38800000) {  // subnormal or zero in half
    if (absx < 0x33000000) return (uint16_t)sign;
    uint32_t mant = (absx & 0x7fffff) | 0x800000;
    int shift = 126 - (int)(absx >> 23);  // 14 + (113 - e) - 1
    uint32_t rounded = mant >> (shift);
    uint32_t rem = mant & ((1u << shift) - 1);
    uint32_t halfway = 1u << (shift - 1);
    if (rem > halfway || (rem == halfway && (rounded & 1))) rounded++;
    return (uint16_t)(sign | rounded);
  }
  uint32_t bits = absx - 0x38000000;  // rebias exponent 127 -> 15
  uint32_t rounded = bits >> 13;
  uint32_t rem = bits & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (rounded & 1))) rounded++;
  return (uint16_t)(sign | rounded);
}

}  // namespace npu
