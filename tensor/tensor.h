// Tensor: a cheap, shared handle to a strided view of a Storage.
//
// Copying a Tensor copies a shared_ptr, never the data, like torch.Tensor.
// What it holds:
//   layout   global shape + placement (Replicated or Sharded; tensor/layout.h)
//   strides  elements to step along each dimension of the local view
//   offset   element offset of the view's first element in the storage
//   dtype    f32, bf16, f16, i32, i64, and f64 for gradient checks (kernels/dtype.h)
//   storage  the bytes, on one device, counted under a MemoryCategory
//
// Views (reshape, transpose, permute, slice) share storage and only change
// shape/strides/offset. Sharded tensors hold just this rank's slice of the
// flattened global range: they report their global shape, refuse views, and
// refuse element access outside their shard with an error that says which
// rank holds the element. local() gives the shard itself as a 1-D tensor.
//
// Read next: tensor/ops.h (what you can compute), tensor/rng.h (how weights
// are filled), docs/tensor.md (the chapter that teaches this layer).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "kernels/dtype.h"
#include "kernels/error.h"
#include "tensor/allocator.h"
#include "tensor/device.h"
#include "tensor/layout.h"

namespace sg {

// How to create a tensor: dtype, device and memory category, as a builder.
//   TensorOptions().dtype(DType::bf16).device(Device::cuda()).category(MemoryCategory::parameter)
class TensorOptions {
 public:
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }
  bool pinned() const { return pinned_; }
  TensorOptions dtype(DType dtype) const { TensorOptions o = *this; o.dtype_ = dtype; return o; }
  TensorOptions device(Device device) const { TensorOptions o = *this; o.device_ = device; return o; }
  TensorOptions category(MemoryCategory c) const { TensorOptions o = *this; o.category_ = c; return o; }
  // Page-locked host memory (CPU tensors only) for staging transfers to and
  // from GPUs; plain host memory where no GPU is visible.
  TensorOptions pinned(bool pinned) const { TensorOptions o = *this; o.pinned_ = pinned; return o; }

 private:
  DType dtype_ = DType::f32;
  Device device_ = Device::cpu();
  MemoryCategory category_ = MemoryCategory::activation;
  bool pinned_ = false;
};

template <typename T>
constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::f32; }
template <> constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <> constexpr DType dtype_of<f16>() { return DType::f16; }
template <> constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <> constexpr DType dtype_of<double>() { return DType::f64; }

class Tensor {
 public:
  Tensor() = default;  // an undefined tensor; defined() is false

  // ---- creation ----------------------------------------------------------
  static Tensor empty(const Shape& shape, const TensorOptions& options = {});
  static Tensor zeros(const Shape& shape, const TensorOptions& options = {});
  static Tensor full(const Shape& shape, double value, const TensorOptions& options = {});
  static Tensor ones(const Shape& shape, const TensorOptions& options = {}) {
    return full(shape, 1.0, options);
  }
  // 0, 1, ..., n - 1
  static Tensor arange(int64_t n, const TensorOptions& options = {});
  // From host values (converted to options.dtype(), copied to options.device()).
  template <typename T>
  static Tensor from_vector(const std::vector<T>& values, const Shape& shape,
                            const TensorOptions& options = TensorOptions().dtype(dtype_of<T>()));
  // A contiguous tensor of any layout: the shard's elements when it is sharded.
  // Contents are uninitialized.
  static Tensor empty_with(const Layout& layout, const TensorOptions& options = {});
  // This rank's shard of a tensor of `global_shape` (zero-filled, padding included).
  static Tensor empty_sharded(const Shape& global_shape, int rank, int world,
                              const TensorOptions& options = {}, int64_t align = 1);

  // ---- what it is --------------------------------------------------------
  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return layout_.global_shape(); }  // global, also when sharded
  int64_t dim() const { return int64_t(shape().size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return layout_.global_numel(); }
  const std::vector<int64_t>& strides() const { return strides_; }
  int64_t offset() const { return offset_; }
  DType dtype() const { return dtype_; }
  Device device() const;
  MemoryCategory category() const;
  bool is_pinned() const;  // page-locked host memory (TensorOptions::pinned)
  const Layout& layout() const { return layout_; }
  bool is_sharded() const { return layout_.is_sharded(); }
  bool is_contiguous() const;
  int64_t element_size() const { return dtype_size(dtype_); }
  int64_t nbytes() const { return layout_.local_numel() * element_size(); }  // bytes held here
  const std::shared_ptr<Storage>& storage() const { return storage_; }

  // Pointer to the first element of the local view. data<T>() checks T.
  void* data_ptr() const;
  template <typename T>
  T* data() const {
    SG_CHECK(dtype_ == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a ", str(),
             " tensor; convert it first with .to(DType::", dtype_name(dtype_of<T>()), ")");
    return static_cast<T*>(data_ptr());
  }

  // ---- views (share storage) ---------------------------------------------
  Tensor view(const Shape& shape) const;     // contiguous tensors only; one size may be -1
  Tensor reshape(const Shape& shape) const;  // a view when possible, else a contiguous copy
  Tensor transpose(int64_t dim0, int64_t dim1) const;
  Tensor permute(const std::vector<int64_t>& dims) const;
  Tensor slice(int64_t dim, int64_t start, int64_t end) const;  // [start, end) along dim
  Tensor local() const;  // this rank's shard as a 1-D replicated tensor (shard_size elements)

  // ---- copies ------------------------------------------------------------
  Tensor contiguous() const;  // itself when already contiguous
  Tensor clone() const;       // always a fresh copy
  Tensor to(Device device) const;
  // non_blocking (PyTorch's): from pinned memory to a GPU, return before the
  // copy has run (it runs in stream order); the caller must not write the
  // source until the GPU has caught up. Otherwise the same as to(device).
  Tensor to(Device device, bool non_blocking) const;
  Tensor to(DType dtype) const;
  Tensor with_category(MemoryCategory category) const;  // a copy counted under `category`
  void copy_(const Tensor& source);  // same shape; converts dtype and device as needed
  void fill_(double value);
  void zero_() { fill_(0.0); }

  // ---- reading values (tests, printing, logging; not for hot loops) -------
  double item() const;  // the one element of a tensor with numel() == 1
  double at(std::initializer_list<int64_t> index) const;  // global index; checks the shard
  template <typename T>
  std::vector<T> to_vector() const;  // every element, converted to T (replicated tensors)

  // "f32[2, 3]", "bf16[2304@dp/4, 768] cuda:0"
  std::string str() const;
  // str() plus the values, abbreviated past `max_values`.
  std::string values_str(int64_t max_values = 16) const;

 private:
  friend Tensor make_view(const Tensor& base, Layout layout, std::vector<int64_t> strides, int64_t offset);
  void check_defined(const char* what) const;
  void check_not_sharded(const char* what) const;

  std::shared_ptr<Storage> storage_;
  Layout layout_;
  std::vector<int64_t> strides_;
  int64_t offset_ = 0;
  DType dtype_ = DType::f32;
};

std::ostream& operator<<(std::ostream& out, const Tensor& tensor);

// Contiguous (row-major) strides for a shape.
std::vector<int64_t> contiguous_strides(const Shape& shape);

}  // namespace sg
