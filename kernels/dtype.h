// Element types shared by every layer: the DType tag, its size and name, and
// the two 16-bit float formats (bf16, f16) with exact host conversions.
//
// It lives in kernels/ (the bottom layer) so that kernels and tensor/ speak of
// dtypes with one enum. The conversions here are the CPU reference that the
// CUDA intrinsics (__float2bfloat16_rn, __float2half_rn) are tested against:
// both round to nearest, ties to even.
//
// Read next: kernels/error.h, then tensor/tensor.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace sg {

// f64 exists for checking: CPU kernels run it so that gradients can be compared
// with f64 finite differences. The CUDA kernels do not take it.
enum class DType : uint8_t { f32, bf16, f16, i32, i64, f64 };

constexpr int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::f32: return 4;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::f64: return 8;
  }
  return 0;
}

constexpr std::string_view dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::f64: return "f64";
  }
  return "?";
}

constexpr bool is_floating(DType dtype) {
  return dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16 || dtype == DType::f64;
}

inline uint32_t float_bits(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

inline float bits_to_float(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

// bfloat16: the top 16 bits of an IEEE f32 (1 sign, 8 exponent, 7 mantissa).
// Same range as f32, ~3 significant decimal digits.
struct bf16 {
  uint16_t bits = 0;
};

inline float to_float(bf16 value) { return bits_to_float(uint32_t(value.bits) << 16); }

inline bf16 to_bf16(float value) {
  uint32_t bits = float_bits(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return bf16{uint16_t((bits >> 16) | 0x40)};  // quiet NaN
  // Round to nearest even: add 0x7fff plus the lowest kept bit, then truncate.
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return bf16{uint16_t((bits + rounding) >> 16)};
}

// IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa. Max 65504, which is
// why fp16 training needs loss scaling and bf16 training does not.
struct f16 {
  uint16_t bits = 0;
};

inline float to_float(f16 value) {
  uint32_t sign = uint32_t(value.bits & 0x8000u) << 16;
  uint32_t exponent = (value.bits >> 10) & 0x1fu;
  uint32_t mantissa = value.bits & 0x3ffu;
  if (exponent == 0x1f) return bits_to_float(sign | 0x7f800000u | (mantissa << 13));  // inf/NaN
  if (exponent == 0) {
    // Zero or subnormal: mantissa * 2^-24, exact in f32.
    float magnitude = float(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  return bits_to_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline f16 to_f16(float value) {
  uint32_t bits = float_bits(value);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t magnitude = bits & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return f16{uint16_t(sign | 0x7e00u)};  // NaN
  if (magnitude >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // rounds to inf
  if (magnitude < 0x38800000u) {
    // Result is subnormal (or zero) in half: value / 2^-24 rounded to an integer,
    // ties to even. The product is exact in f32 and nearbyint rounds half-even.
    float scaled = bits_to_float(magnitude) * 16777216.0f;
    uint32_t integer = uint32_t(scaled);
    float remainder = scaled - float(integer);
    if (remainder > 0.5f || (remainder == 0.5f && (integer & 1u))) ++integer;
    return f16{uint16_t(sign | integer)};
  }
  // Normal: rebias the exponent, drop 13 mantissa bits with round-to-nearest-even.
  uint32_t rebased = magnitude - (112u << 23);
  uint32_t rounding = 0xfffu + ((rebased >> 13) & 1u);
  return f16{uint16_t(sign | ((rebased + rounding) >> 13))};
}

}  // namespace sg
