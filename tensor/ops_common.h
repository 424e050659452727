// Internal to tensor/ops*.cpp: the checks, compute dtypes and conversions
// every op shares.
#pragma once

#include <string_view>

#include "tensor/dispatch.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

namespace sg::ops_detail {

// The op's inputs must be defined and live on one device.
inline void check_inputs(std::string_view op, std::initializer_list<const Tensor*> tensors) {
  const Tensor* first = nullptr;
  for (const Tensor* t : tensors) {
    SG_CHECK(t->defined(), op, ": an input tensor is undefined");
    if (!first) first = t;
    SG_CHECK(t->device() == first->device(), op, ": inputs are on different devices (", first->str(), " and ",
             t->str(), "); move them with .to(device)");
  }
}

inline void check_float(std::string_view op, const Tensor& x) {
  SG_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor (f32, bf16, f16 or f64), got ", x.str());
}

inline void check_same_dtype(std::string_view op, const Tensor& a, const Tensor& b) {
  SG_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", a.str(), " vs ", b.str(),
           "; convert one with .to(DType::", dtype_name(a.dtype()), ")");
}

inline void check_replicated(std::string_view op, const Tensor& x) {
  SG_CHECK(!x.is_sharded(), op, " needs whole tensors, but ", x.str(),
           " is sharded; gather it first (or apply the op to .local() when it is elementwise)");
}

// Whether a CUDA kernel family reads and writes bf16/f16 itself (kNative16)
// or needs f32 (kF32Only). CPU kernels always compute in f32 or f64.
enum class CudaTypes { kNative16, kF32Only };

// The dtype an op's kernel runs in for a floating input x:
//   CPU:  f64 stays f64 (for f64 gradient checks); f32, bf16 and f16 compute in f32.
//   CUDA: kNative16 kernels take f32/bf16/f16 as they are, the others f32; no f64.
inline DType compute_dtype(std::string_view op, const Tensor& x, CudaTypes cuda_types) {
  if (x.device().is_cpu()) return x.dtype() == DType::f64 ? DType::f64 : DType::f32;
  SG_CHECK(x.dtype() != DType::f64, op, ": f64 tensors are CPU-only (they exist for gradient checks); got ", x.str());
  return cuda_types == CudaTypes::kNative16 ? x.dtype() : DType::f32;
}

// Statistics saved for backward (LayerNorm mean/rstd, logsumexp): f64 for f64, else f32.
inline DType stats_dtype(DType compute) { return compute == DType::f64 ? DType::f64 : DType::f32; }

// Runs fn(T{}) with T = double for f64 and float otherwise.
template <typename Fn>
void with_cpu_type(DType compute, Fn&& fn) {
  if (compute == DType::f64) fn(double{});
  else fn(float{});
}

// Calls a CPU kernel with T bound to the compute type:
//   SG_ON_CPU(compute, cpu::gelu_forward(out.data<T>(), in.data<T>(), n));
#define SG_ON_CPU(compute, ...) \
  ::sg::ops_detail::with_cpu_type((compute), [&](auto zero_) { using T = decltype(zero_); __VA_ARGS__; })

// x converted to `dtype` and made contiguous (itself when it already is both).
inline Tensor prepare(const Tensor& x, DType dtype) { return x.to(dtype).contiguous(); }

// Index tensors (ids, targets) as contiguous i32, the kernels' index type.
inline Tensor as_indices(std::string_view op, const Tensor& ids) {
  SG_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, op, ": indices must be i32 or i64, got ",
           ids.str());
  check_replicated(op, ids);
  return prepare(ids, DType::i32);
}

// A destination for a `shape` result of `input`: a whole contiguous tensor
// in the dtype sums of input's values are kept in (stats_dtype: f64 for
// f64, else f32), on the input's device.
inline void check_destination(std::string_view op, const Destination& out, const Shape& shape, const Tensor& input) {
  SG_CHECK(out.defined(), op, ": the destination is undefined");
  const Tensor& t = out.tensor;
  SG_CHECK(!t.is_sharded() && t.is_contiguous() && t.shape() == shape, op, ": the destination ", t.str(),
           " must be a whole contiguous tensor of shape ", shape_str(shape));
  SG_CHECK(t.dtype() == stats_dtype(input.dtype()), op, ": sums of ", dtype_name(input.dtype()), " values go into ",
           dtype_name(stats_dtype(input.dtype())), ", got ", t.str());
  SG_CHECK(t.device() == input.device(), op, ": the destination ", t.str(), " is not on ", input.str(), "'s device");
}

// A fresh tensor with x's layout and device.
inline Tensor empty_like(const Tensor& x, DType dtype) {
  return Tensor::empty_with(x.layout(), TensorOptions().dtype(dtype).device(x.device()));
}
inline Tensor zeros_like(const Tensor& x, DType dtype) {
  Tensor out = empty_like(x, dtype);
  out.fill_(0.0);
  return out;
}

}  // namespace sg::ops_detail
