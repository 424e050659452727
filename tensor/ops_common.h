// Internal to tensor/ops*.cpp: the checks and conversions every op shares.
#pragma once

#include <string_view>

#include "tensor/dispatch.h"
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
  SG_CHECK(is_floating(x.dtype()), op, ": expected a floating tensor (f32, bf16 or f16), got ", x.str());
}

inline void check_same_dtype(std::string_view op, const Tensor& a, const Tensor& b) {
  SG_CHECK(a.dtype() == b.dtype(), op, ": dtypes differ: ", a.str(), " vs ", b.str(),
           "; convert one with .to(DType::", dtype_name(a.dtype()), ")");
}

inline void check_replicated(std::string_view op, const Tensor& x) {
  SG_CHECK(!x.is_sharded(), op, " needs whole tensors, but ", x.str(),
           " is sharded; gather it first (or apply the op to .local() when it is elementwise)");
}

// A contiguous f32 copy (or the tensor itself when it already is one).
inline Tensor as_f32(const Tensor& x) { return x.to(DType::f32).contiguous(); }

// Index tensors (ids, targets) as contiguous i32, the kernels' index type.
inline Tensor as_indices(std::string_view op, const Tensor& ids) {
  SG_CHECK(ids.dtype() == DType::i32 || ids.dtype() == DType::i64, op, ": indices must be i32 or i64, got ",
           ids.str());
  check_replicated(op, ids);
  return ids.to(DType::i32).contiguous();
}

// Whether a CUDA kernel family with native 16-bit support takes x as it is.
inline bool runs_natively(const Tensor& x) { return x.device().is_cuda() || x.dtype() == DType::f32; }

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
