// CPU elementwise kernels. Simple loops the compiler vectorizes (-O3
// -march=native), split across threads with OpenMP when large enough to pay.
#include "kernels/cpu/elementwise.h"

#include "kernels/copy_plan.h"

#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

namespace sg::cpu {
namespace {

constexpr int64_t kParallelGrain = 1 << 15;  // below this, threads cost more than they save
constexpr double kGeluScale = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluCubic = 0.044715;

// Converts through float for floating outputs (so f32 -> bf16 rounds once) and
// through a truncating integer conversion for integer outputs.
template <typename In, typename Out>
void convert_all(Out* out, const In* in, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<In, bf16> || std::is_same_v<In, f16>) {
      float value = to_float(in[i]);
      if constexpr (std::is_same_v<Out, bf16>) out[i] = to_bf16(value);
      else if constexpr (std::is_same_v<Out, f16>) out[i] = to_f16(value);
      else out[i] = Out(value);
    } else {
      if constexpr (std::is_same_v<Out, bf16>) out[i] = to_bf16(float(in[i]));  // f64 rounds twice: a 1-ulp tie risk accepted
      else if constexpr (std::is_same_v<Out, f16>) out[i] = to_f16(float(in[i]));
      else out[i] = Out(in[i]);
    }
  }
}

template <typename In>
void cast_from(void* out, DType out_dtype, const In* in, int64_t n) {
  switch (out_dtype) {
    case DType::f32: convert_all(static_cast<float*>(out), in, n); break;
    case DType::bf16: convert_all(static_cast<bf16*>(out), in, n); break;
    case DType::f16: convert_all(static_cast<f16*>(out), in, n); break;
    case DType::i32: convert_all(static_cast<int32_t*>(out), in, n); break;
    case DType::i64: convert_all(static_cast<int64_t*>(out), in, n); break;
    case DType::f64: convert_all(static_cast<double*>(out), in, n); break;
  }
}

// Below this many bytes a copy stays on one thread; a contiguous run is
// shared out in pieces of kCopyPiece bytes.
constexpr int64_t kParallelBytes = int64_t(4) * kParallelGrain;
constexpr int64_t kCopyPiece = int64_t(1) << 16;

// count words of Word bytes, in_stride and out_stride words apart; the
// fixed-size memcpy compiles to one load and one store.
template <int64_t Word>
void copy_words(char* out, int64_t out_stride, const char* in, int64_t in_stride, int64_t count) {
  for (int64_t i = 0; i < count; ++i) std::memcpy(out + i * out_stride * Word, in + i * in_stride * Word, Word);
}

void copy_strided_row(char* out, int64_t out_stride, const char* in, int64_t in_stride, int64_t count, int64_t word) {
  switch (word) {
    case 1: copy_words<1>(out, out_stride, in, in_stride, count); break;
    case 2: copy_words<2>(out, out_stride, in, in_stride, count); break;
    case 4: copy_words<4>(out, out_stride, in, in_stride, count); break;
    case 8: copy_words<8>(out, out_stride, in, in_stride, count); break;
    default:
      for (int64_t i = 0; i < count; ++i) std::memcpy(out + i * out_stride * word, in + i * in_stride * word, size_t(word));
  }
}

// The general case, for views of more dimensions than a plan holds: each
// element's offsets unravelled from its index, last dimension fastest.
void copy_each_element(char* dst, const int64_t* out_strides, const char* src, const int64_t* in_strides,
                       const int64_t* shape, int ndim, int64_t element_size) {
  int64_t n = 1;
  for (int d = 0; d < ndim; ++d) n *= shape[d];
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    int64_t rest = i, in_offset = 0, out_offset = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const int64_t coordinate = rest % shape[d];
      in_offset += coordinate * in_strides[d];
      out_offset += coordinate * out_strides[d];
      rest /= shape[d];
    }
    std::memcpy(dst + out_offset * element_size, src + in_offset * element_size, size_t(element_size));
  }
}

}  // namespace

template <typename T>
void add_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

template <typename T>
void mul_forward(T* out, const T* a, const T* b, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

template <typename T>
void scale_forward(T* out, const T* in, T scale, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) out[i] = scale * in[i];
}

template <typename T>
void axpy(T* y, T alpha, const T* x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Runs fn(begin, end) over [0, n) in chunks, split across threads when n is
// large enough to pay.
template <typename Fn>
void in_chunks(int64_t n, Fn fn) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t c = 0; c < chunks; ++c) fn(c * kChunk, std::min(n, (c + 1) * kChunk));
}

// f32 GELU runs 16 lanes at a time (AVX-512) through Eigen's vectorized exp
// instead of libm's scalar tanhf, which took a fifth of a CPU training step
// (docs/performance.md). It uses 0.5 (1 + tanh(u)) = sigmoid(2u), so
//   y = x / (1 + exp(-2u)),   dy/dx = s + 2 x s (1 - s) du/dx,  s = sigmoid(2u),
// which also avoids the cancellation in 1 + tanh(u) for negative x (where
// tanh(u) is within a few ulp of -1 and y is tiny). f64 (the gradient
// checks) keeps the tanh form.
template <typename T>
void gelu_forward(T* out, const T* in, int64_t n) {
  const T scale = T(kGeluScale), cubic = T(kGeluCubic);
  if constexpr (std::is_same_v<T, float>) {
    in_chunks(n, [&](int64_t begin, int64_t end) {
      Eigen::Map<const Eigen::ArrayXf> x(in + begin, end - begin);
      Eigen::Map<Eigen::ArrayXf>(out + begin, end - begin) = x / (1.0f + (-2.0f * scale * (x + cubic * x.cube())).exp());
    });
    return;
  }
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T x = in[i];
    T u = scale * (x + cubic * x * x * x);
    out[i] = T(0.5) * x * (T(1) + std::tanh(u));
  }
}

template <typename T>
void gelu_backward(T* din, const T* in, const T* dout, int64_t n) {
  const T scale = T(kGeluScale), cubic = T(kGeluCubic);
  if constexpr (std::is_same_v<T, float>) {
    in_chunks(n, [&](int64_t begin, int64_t end) {
      const int64_t m = end - begin;
      Eigen::Map<const Eigen::ArrayXf> x(in + begin, m), dy(dout + begin, m);
      const Eigen::ArrayXf s = 1.0f / (1.0f + (-2.0f * scale * (x + cubic * x.cube())).exp());
      const Eigen::ArrayXf du_dx = scale * (1.0f + 3.0f * cubic * x.square());
      Eigen::Map<Eigen::ArrayXf>(din + begin, m) += dy * (s + 2.0f * x * s * (1.0f - s) * du_dx);
    });
    return;
  }
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    T x = in[i];
    T u = scale * (x + cubic * x * x * x);
    T t = std::tanh(u);
    T du_dx = scale * (T(1) + T(3) * cubic * x * x);
    T dy_dx = T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du_dx;
    din[i] += dout[i] * dy_dx;
  }
}

void bias_gelu_forward(float* y, float* h, const float* bias, int64_t rows, int64_t cols) {
  const float scale = float(kGeluScale), cubic = float(kGeluCubic);
  Eigen::Map<const Eigen::ArrayXf> b(bias, cols);
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    Eigen::Map<Eigen::ArrayXf> x(h + r * cols, cols);
    x += b;
    Eigen::Map<Eigen::ArrayXf>(y + r * cols, cols) = x / (1.0f + (-2.0f * scale * (x + cubic * x.cube())).exp());
  }
}

void bias_gelu_backward(float* dh, const float* h, const float* dy, int64_t n) {
  const float scale = float(kGeluScale), cubic = float(kGeluCubic);
  in_chunks(n, [&](int64_t begin, int64_t end) {
    const int64_t m = end - begin;
    Eigen::Map<const Eigen::ArrayXf> x(h + begin, m), d(dy + begin, m);
    const Eigen::ArrayXf s = 1.0f / (1.0f + (-2.0f * scale * (x + cubic * x.cube())).exp());
    const Eigen::ArrayXf du_dx = scale * (1.0f + 3.0f * cubic * x.square());
    Eigen::Map<Eigen::ArrayXf>(dh + begin, m) = d * (s + 2.0f * x * s * (1.0f - s) * du_dx);
  });
}

#define SG_INSTANTIATE(T)                                                             \
  template void add_forward<T>(T*, const T*, const T*, int64_t);                      \
  template void mul_forward<T>(T*, const T*, const T*, int64_t);                      \
  template void scale_forward<T>(T*, const T*, T, int64_t);                           \
  template void axpy<T>(T*, T, const T*, int64_t);                                    \
  template void gelu_forward<T>(T*, const T*, int64_t);                               \
  template void gelu_backward<T>(T*, const T*, const T*, int64_t);
SG_INSTANTIATE(float)
SG_INSTANTIATE(double)
#undef SG_INSTANTIATE

void cast(void* out, DType out_dtype, const void* in, DType in_dtype, int64_t n) {
  if (out_dtype == in_dtype) {
    std::memcpy(out, in, size_t(n * dtype_size(in_dtype)));
    return;
  }
  switch (in_dtype) {
    case DType::f32: cast_from(out, out_dtype, static_cast<const float*>(in), n); break;
    case DType::bf16: cast_from(out, out_dtype, static_cast<const bf16*>(in), n); break;
    case DType::f16: cast_from(out, out_dtype, static_cast<const f16*>(in), n); break;
    case DType::i32: cast_from(out, out_dtype, static_cast<const int32_t*>(in), n); break;
    case DType::i64: cast_from(out, out_dtype, static_cast<const int64_t*>(in), n); break;
    case DType::f64: cast_from(out, out_dtype, static_cast<const double*>(in), n); break;
  }
}

void strided_copy(void* out, const int64_t* out_strides, const void* in, const int64_t* in_strides,
                  const int64_t* shape, int ndim, int64_t element_size) {
  char* dst = static_cast<char*>(out);
  const char* src = static_cast<const char*>(in);
  if (ndim > CopyPlan::kMaxDims) {
    copy_each_element(dst, out_strides, src, in_strides, shape, ndim, element_size);
    return;
  }
  // kernels/copy_plan.h merges what is contiguous on both sides, so a dense
  // tensor is one run and a view is rows of runs.
  const CopyPlan plan = plan_copy(shape, in_strides, out_strides, ndim, element_size, reinterpret_cast<uintptr_t>(in),
                                  reinterpret_cast<uintptr_t>(out));
  if (plan.words == 0) return;
  const int64_t word = plan.word_bytes;
  if (plan.contiguous) {  // one run, in fixed pieces the threads share
    const int64_t bytes = plan.bytes(), pieces = (bytes + kCopyPiece - 1) / kCopyPiece;
#pragma omp parallel for schedule(static) if (bytes > kParallelBytes)
    for (int64_t p = 0; p < pieces; ++p) {
      std::memcpy(dst + p * kCopyPiece, src + p * kCopyPiece, size_t(std::min(kCopyPiece, bytes - p * kCopyPiece)));
    }
    return;
  }
  // Rows of the innermost dimension: one memcpy each where both sides are
  // contiguous along it, else word by word at its strides.
  const int last = plan.ndim - 1;
  const int64_t row = plan.shape[last], rows = plan.words / row;
  const bool dense_rows = plan.in_strides[last] == 1 && plan.out_strides[last] == 1;
#pragma omp parallel for schedule(static) if (plan.bytes() > kParallelBytes)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r, in_offset = 0, out_offset = 0;
    for (int d = last - 1; d >= 0; --d) {
      const int64_t coordinate = rest % plan.shape[d];
      in_offset += coordinate * plan.in_strides[d];
      out_offset += coordinate * plan.out_strides[d];
      rest /= plan.shape[d];
    }
    char* to = dst + out_offset * word;
    const char* from = src + in_offset * word;
    if (dense_rows) std::memcpy(to, from, size_t(row * word));
    else copy_strided_row(to, plan.out_strides[last], from, plan.in_strides[last], row, word);
  }
}

void fill(void* out, DType dtype, double value, int64_t n) {
  // Convert the value once (integers straight from double, so large i64 values
  // survive), then replicate its bytes.
  char element[8];
  if (dtype == DType::f64) {
    std::memcpy(element, &value, 8);
  } else if (dtype == DType::i64) {
    int64_t v = int64_t(value);
    std::memcpy(element, &v, 8);
  } else if (dtype == DType::i32) {
    int32_t v = int32_t(value);
    std::memcpy(element, &v, 4);
  } else {
    float as_float = float(value);
    cast(element, dtype, &as_float, DType::f32, 1);
  }
  const int64_t size = dtype_size(dtype);
  char* dst = static_cast<char*>(out);
  // Zeros (most fills) are a memset; other values are stored a word at a
  // time (a memcpy of a size known only at run time would be a call per element).
  if (std::all_of(element, element + size, [](char byte) { return byte == 0; })) {
    const int64_t bytes = n * size, pieces = (bytes + kCopyPiece - 1) / kCopyPiece;
#pragma omp parallel for schedule(static) if (bytes > kParallelBytes)
    for (int64_t p = 0; p < pieces; ++p) {
      std::memset(dst + p * kCopyPiece, 0, size_t(std::min(kCopyPiece, bytes - p * kCopyPiece)));
    }
    return;
  }
  auto store = [&](auto word) {
    std::memcpy(&word, element, sizeof(word));
    constexpr size_t kSize = sizeof(word);
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) std::memcpy(dst + i * int64_t(kSize), &word, kSize);
  };
  switch (size) {
    case 1: store(uint8_t{}); break;
    case 2: store(uint16_t{}); break;
    case 4: store(uint32_t{}); break;
    default: store(uint64_t{}); break;
  }
}

}  // namespace sg::cpu
