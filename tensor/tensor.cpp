// Tensor: creation, views, copies and element access. Arithmetic lives in
// tensor/ops.cpp; this file only moves and reinterprets memory.
#include "tensor/tensor.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <ostream>
#include <sstream>

#include "kernels/cpu/elementwise.h"
#include "tensor/copy_bytes.h"
#include "tensor/dispatch.h"

namespace sg {
namespace {

int64_t normalize_dim(int64_t d, int64_t ndim, const char* what) {
  int64_t wrapped = d < 0 ? d + ndim : d;
  SG_CHECK(wrapped >= 0 && wrapped < ndim, what, ": dimension ", d, " is out of range for a tensor with ",
           ndim, " dimensions");
  return wrapped;
}

// Resolves one -1 in `shape` so it holds `numel` elements.
Shape infer_shape(Shape shape, int64_t numel, const Shape& from) {
  int64_t known = 1, infer_at = -1;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == -1) {
      SG_CHECK(infer_at < 0, "view/reshape: only one size may be -1, got ", shape_str(shape));
      infer_at = int64_t(d);
    } else {
      SG_CHECK(shape[d] >= 0, "view/reshape: negative size in ", shape_str(shape));
      known *= shape[d];
    }
  }
  if (infer_at >= 0) {
    SG_CHECK(known > 0 && numel % known == 0, "view/reshape: cannot infer -1 in ", shape_str(shape), " for ",
             numel, " elements of ", shape_str(from));
    shape[size_t(infer_at)] = numel / known;
  }
  SG_CHECK(shape_numel(shape) == numel, "view/reshape: ", shape_str(shape), " holds ", shape_numel(shape),
           " elements but the tensor ", shape_str(from), " has ", numel);
  return shape;
}

// Reads the element at `pointer` (on `device`) as a double.
double read_element(const void* pointer, DType dtype, Device device) {
  unsigned char bytes[8];
  copy_bytes(bytes, Device::cpu(), pointer, device, dtype_size(dtype));
  switch (dtype) {
    case DType::f32: { float v; std::memcpy(&v, bytes, 4); return v; }
    case DType::bf16: { bf16 v; std::memcpy(&v, bytes, 2); return to_float(v); }
    case DType::f16: { f16 v; std::memcpy(&v, bytes, 2); return to_float(v); }
    case DType::i32: { int32_t v; std::memcpy(&v, bytes, 4); return v; }
    case DType::i64: { int64_t v; std::memcpy(&v, bytes, 8); return double(v); }
    case DType::f64: { double v; std::memcpy(&v, bytes, 8); return v; }
  }
  return 0.0;
}

}  // namespace

std::vector<int64_t> contiguous_strides(const Shape& shape) {
  std::vector<int64_t> strides(shape.size());
  int64_t stride = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= shape[d];
  }
  return strides;
}

Tensor make_view(const Tensor& base, Layout layout, std::vector<int64_t> strides, int64_t offset) {
  Tensor view = base;
  view.layout_ = std::move(layout);
  view.strides_ = std::move(strides);
  view.offset_ = offset;
  return view;
}

// ---- creation ---------------------------------------------------------------

Tensor Tensor::empty(const Shape& shape, const TensorOptions& options) {
  return empty_with(Layout::replicated(shape), options);
}

Tensor Tensor::empty_with(const Layout& layout, const TensorOptions& options) {
  Tensor tensor;
  tensor.layout_ = layout;
  tensor.strides_ = contiguous_strides(layout.global_shape());
  tensor.dtype_ = options.dtype();
  tensor.storage_ = Storage::allocate(layout.local_numel() * dtype_size(options.dtype()), options.device(),
                                      options.category(), options.pinned());
  return tensor;
}

Tensor Tensor::zeros(const Shape& shape, const TensorOptions& options) { return full(shape, 0.0, options); }

Tensor Tensor::full(const Shape& shape, double value, const TensorOptions& options) {
  Tensor tensor = empty(shape, options);
  tensor.fill_(value);
  return tensor;
}

Tensor Tensor::arange(int64_t n, const TensorOptions& options) {
  SG_CHECK(n >= 0, "arange: n must be >= 0, got ", n);
  std::vector<int64_t> values(static_cast<size_t>(n));
  std::iota(values.begin(), values.end(), int64_t(0));
  return from_vector(values, {n}, options);
}

template <typename T>
Tensor Tensor::from_vector(const std::vector<T>& values, const Shape& shape, const TensorOptions& options) {
  SG_CHECK(int64_t(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
           " values cannot fill shape ", shape_str(shape), " (", shape_numel(shape), " elements)");
  Tensor host = empty(shape, TensorOptions().dtype(dtype_of<T>()).category(options.category()));
  std::memcpy(host.data_ptr(), values.data(), values.size() * sizeof(T));
  Tensor converted = host.to(options.dtype());
  return converted.device() == options.device() ? converted : converted.to(options.device());
}
template Tensor Tensor::from_vector(const std::vector<float>&, const Shape&, const TensorOptions&);
template Tensor Tensor::from_vector(const std::vector<bf16>&, const Shape&, const TensorOptions&);
template Tensor Tensor::from_vector(const std::vector<f16>&, const Shape&, const TensorOptions&);
template Tensor Tensor::from_vector(const std::vector<int32_t>&, const Shape&, const TensorOptions&);
template Tensor Tensor::from_vector(const std::vector<int64_t>&, const Shape&, const TensorOptions&);
template Tensor Tensor::from_vector(const std::vector<double>&, const Shape&, const TensorOptions&);

Tensor Tensor::empty_sharded(const Shape& global_shape, int rank, int world, const TensorOptions& options,
                             int64_t align) {
  Tensor tensor = empty_with(Layout::sharded(global_shape, rank, world, align), options);
  tensor.local().zero_();  // padding must be zero: it takes part in reductions
  return tensor;
}

// ---- what it is -------------------------------------------------------------

int64_t Tensor::size(int64_t d) const { return shape()[size_t(normalize_dim(d, dim(), "size"))]; }

Device Tensor::device() const {
  check_defined("device()");
  return storage_->device();
}

MemoryCategory Tensor::category() const {
  check_defined("category()");
  return storage_->category();
}

bool Tensor::is_pinned() const { return storage_ != nullptr && storage_->pinned(); }

bool Tensor::is_contiguous() const {
  if (is_sharded()) return true;  // a shard is one flat run of memory
  return strides_ == contiguous_strides(shape()) || numel() <= 1;
}

void* Tensor::data_ptr() const {
  check_defined("data_ptr()");
  return static_cast<char*>(storage_->data()) + offset_ * element_size();
}

void Tensor::check_defined(const char* what) const {
  SG_CHECK(defined(), what, " on an undefined tensor (default-constructed); create it with Tensor::empty or "
           "Tensor::zeros first");
}

void Tensor::check_not_sharded(const char* what) const {
  SG_CHECK(!is_sharded(), what, " needs the whole tensor, but ", str(), " is sharded (rank ",
           layout_.shard().rank, " holds elements [", layout_.shard().begin, ", ", layout_.shard().end,
           ")); gather it first, or work on local()");
}

// ---- views ------------------------------------------------------------------

Tensor Tensor::view(const Shape& new_shape) const {
  check_defined("view");
  check_not_sharded("view");
  SG_CHECK(is_contiguous(), "view ", shape_str(new_shape), " of the non-contiguous ", str(),
           ": call .contiguous() first, or use reshape() which copies when it must");
  Shape resolved = infer_shape(new_shape, numel(), shape());
  return make_view(*this, Layout::replicated(resolved), contiguous_strides(resolved), offset_);
}

Tensor Tensor::reshape(const Shape& new_shape) const {
  return is_contiguous() ? view(new_shape) : contiguous().view(new_shape);
}

Tensor Tensor::transpose(int64_t dim0, int64_t dim1) const {
  check_defined("transpose");
  std::vector<int64_t> dims(static_cast<size_t>(dim()));
  std::iota(dims.begin(), dims.end(), int64_t(0));
  std::swap(dims[size_t(normalize_dim(dim0, dim(), "transpose"))], dims[size_t(normalize_dim(dim1, dim(), "transpose"))]);
  return permute(dims);
}

Tensor Tensor::permute(const std::vector<int64_t>& dims) const {
  check_defined("permute");
  check_not_sharded("permute");
  SG_CHECK(int64_t(dims.size()) == dim(), "permute: got ", dims.size(), " dimensions for a tensor with ", dim());
  Shape new_shape(dims.size());
  std::vector<int64_t> new_strides(dims.size());
  std::vector<bool> seen(dims.size(), false);
  for (size_t i = 0; i < dims.size(); ++i) {
    int64_t d = normalize_dim(dims[i], dim(), "permute");
    SG_CHECK(!seen[size_t(d)], "permute: dimension ", d, " appears twice");
    seen[size_t(d)] = true;
    new_shape[i] = shape()[size_t(d)];
    new_strides[i] = strides_[size_t(d)];
  }
  return make_view(*this, Layout::replicated(new_shape), new_strides, offset_);
}

Tensor Tensor::slice(int64_t d, int64_t start, int64_t end) const {
  check_defined("slice");
  check_not_sharded("slice");
  int64_t axis = normalize_dim(d, dim(), "slice");
  int64_t extent = shape()[size_t(axis)];
  SG_CHECK(0 <= start && start <= end && end <= extent, "slice: [", start, ", ", end,
           ") is not a range inside dimension ", axis, " of ", str(), " (size ", extent, ")");
  Shape new_shape = shape();
  new_shape[size_t(axis)] = end - start;
  return make_view(*this, Layout::replicated(new_shape), strides_, offset_ + start * strides_[size_t(axis)]);
}

Tensor Tensor::local() const {
  check_defined("local");
  if (!is_sharded()) return is_contiguous() ? view({numel()}) : contiguous().view({numel()});
  int64_t size = layout_.shard().shard_size();
  return make_view(*this, Layout::replicated({size}), {1}, offset_);
}

// ---- copies -----------------------------------------------------------------

Tensor Tensor::contiguous() const {
  check_defined("contiguous");
  return is_contiguous() ? *this : clone();
}

Tensor Tensor::clone() const {
  check_defined("clone");
  Tensor copy = empty_with(layout_, TensorOptions().dtype(dtype_).device(device()).category(category()));
  if (is_sharded()) copy.local().copy_(local());
  else copy.copy_(*this);
  return copy;
}

Tensor Tensor::with_category(MemoryCategory new_category) const {
  check_defined("with_category");
  Tensor copy = empty_with(layout_, TensorOptions().dtype(dtype_).device(device()).category(new_category));
  if (is_sharded()) copy.local().copy_(local());
  else copy.copy_(*this);
  return copy;
}

Tensor Tensor::to(Device target) const { return to(target, false); }

Tensor Tensor::to(Device target, bool non_blocking) const {
  check_defined("to(device)");
  if (target == device()) return *this;
  Tensor source = contiguous();
  Tensor moved = empty_with(layout_, TensorOptions().dtype(dtype_).device(target).category(category()));
  if (non_blocking && target.is_cuda() && source.is_pinned()) {
    // From pinned memory the upload runs in stream order without a wait; the
    // runtime holds the source's storage until the copy is done.
    SG_ON_CUDA(cuda::copy_host_to_device_async(moved.data_ptr(), source.data_ptr(), nbytes(), target.index,
                                               source.storage_));
    return moved;
  }
  copy_bytes(moved.data_ptr(), target, source.data_ptr(), device(), nbytes());
  return moved;
}

Tensor Tensor::to(DType target) const {
  check_defined("to(dtype)");
  if (target == dtype_) return *this;
  Tensor source = contiguous();
  Tensor converted = empty_with(layout_, TensorOptions().dtype(target).device(device()).category(category()));
  int64_t n = layout_.local_numel();
  if (device().is_cpu()) cpu::cast(converted.data_ptr(), target, source.data_ptr(), dtype_, n);
  else SG_ON_CUDA(cuda::cast(converted.data_ptr(), target, source.data_ptr(), dtype_, n, cuda_stream(device())));
  return converted;
}

void Tensor::copy_(const Tensor& source) {
  check_defined("copy_");
  source.check_defined("copy_ (source)");
  SG_CHECK(shape() == source.shape() && layout_.placement() == source.layout_.placement(), "copy_: cannot copy ",
           source.str(), " into ", str(), "; shapes and placements must match");
  // Between devices, two contiguous buffers of one dtype take one transfer
  // (into pinned staging memory, say, without a pageable copy in between).
  if (device() != source.device() && dtype_ == source.dtype_ && is_contiguous() && source.is_contiguous()) {
    copy_bytes(data_ptr(), device(), source.data_ptr(), source.device(), nbytes());
    return;
  }
  // A cast between two contiguous buffers on one device writes straight into
  // this one (the engine's first gradient of a bf16 parameter into its f32
  // slot, say), without a converted temporary and a second pass.
  if (device() == source.device() && dtype_ != source.dtype_ && is_contiguous() && source.is_contiguous()) {
    const int64_t n = layout_.local_numel();
    if (device().is_cpu()) cpu::cast(data_ptr(), dtype_, source.data_ptr(), source.dtype_, n);
    else SG_ON_CUDA(cuda::cast(data_ptr(), dtype_, source.data_ptr(), source.dtype_, n, cuda_stream(device())));
    return;
  }
  // Else bring the source to our device and dtype (each a no-op when already
  // so), then one strided copy handles any view on either side.
  Tensor ready = source.to(dtype_).to(device());
  int64_t ndim = is_sharded() ? 1 : dim();
  Shape extent = is_sharded() ? Shape{layout_.local_numel()} : shape();
  std::vector<int64_t> out_strides = is_sharded() ? std::vector<int64_t>{1} : strides_;
  std::vector<int64_t> in_strides = is_sharded() ? std::vector<int64_t>{1} : ready.strides_;
  if (device().is_cpu()) {
    cpu::strided_copy(data_ptr(), out_strides.data(), ready.data_ptr(), in_strides.data(), extent.data(), int(ndim),
                      element_size());
  } else {
    SG_ON_CUDA(cuda::strided_copy(data_ptr(), out_strides.data(), ready.data_ptr(), in_strides.data(),
                                  extent.data(), int(ndim), element_size(), cuda_stream(device())));
  }
}

void Tensor::fill_(double value) {
  check_defined("fill_");
  if (!is_contiguous()) {
    copy_(full(shape(), value, TensorOptions().dtype(dtype_).device(device())));
    return;
  }
  int64_t n = layout_.local_numel();
  if (device().is_cpu()) cpu::fill(data_ptr(), dtype_, value, n);
  else SG_ON_CUDA(cuda::fill(data_ptr(), dtype_, value, n, cuda_stream(device())));
}

// ---- reading values ---------------------------------------------------------

double Tensor::item() const {
  check_defined("item");
  SG_CHECK(numel() == 1, "item() needs a tensor with one element, got ", str());
  SG_CHECK(layout_.holds(0), "item(): the element of ", str(), " lives on rank 0; read it there");
  return read_element(data_ptr(), dtype_, device());
}

double Tensor::at(std::initializer_list<int64_t> index) const {
  check_defined("at");
  SG_CHECK(int64_t(index.size()) == dim(), "at: ", index.size(), " indices for ", str());
  int64_t flat = 0, storage_offset = offset_;
  const int64_t* coordinate = index.begin();
  for (int64_t d = 0; d < dim(); ++d) {
    int64_t i = coordinate[d];
    SG_CHECK(i >= 0 && i < shape()[size_t(d)], "at: index ", i, " is out of range for dimension ", d, " of ", str());
    flat = flat * shape()[size_t(d)] + i;
    storage_offset += i * strides_[size_t(d)];
  }
  if (is_sharded()) {
    const Sharded& shard = layout_.shard();
    SG_CHECK(!layout_.is_released(), "at: ", str(), " is a released ZeRO-3 parameter: its values live in its shard ",
             "group, gathered only inside forward and backward; read them there, or gather the group");
    SG_CHECK(layout_.holds(flat), "at: element (flat index ", flat, ") of ", str(), " lives on rank ",
             flat / shard.shard_size(), ", but this is rank ", shard.rank, ", which holds [", shard.begin, ", ",
             shard.end, "); gather the tensor or read it on its owner");
    storage_offset = offset_ + (flat - shard.begin);
  }
  return read_element(static_cast<const char*>(storage_->data()) + storage_offset * element_size(), dtype_,
                      device());
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  check_defined("to_vector");
  check_not_sharded("to_vector");
  Tensor host = contiguous().to(Device::cpu()).to(dtype_of<T>());
  std::vector<T> values(static_cast<size_t>(numel()));
  std::memcpy(values.data(), host.data_ptr(), values.size() * sizeof(T));
  return values;
}
template std::vector<float> Tensor::to_vector() const;
template std::vector<bf16> Tensor::to_vector() const;
template std::vector<f16> Tensor::to_vector() const;
template std::vector<int32_t> Tensor::to_vector() const;
template std::vector<int64_t> Tensor::to_vector() const;
template std::vector<double> Tensor::to_vector() const;

std::string Tensor::str() const {
  if (!defined()) return "Tensor(undefined)";
  std::string text = layout_.str(dtype_);
  if (device().is_cuda()) text.append(" ").append(device().str());
  return text;
}

std::string Tensor::values_str(int64_t max_values) const {
  std::ostringstream out;
  out << str() << " {";
  Tensor flat = is_sharded() ? local() : contiguous().view({numel()});
  std::vector<float> values = flat.to_vector<float>();
  int64_t shown = std::min<int64_t>(int64_t(values.size()), max_values);
  for (int64_t i = 0; i < shown; ++i) out << (i ? ", " : "") << values[size_t(i)];
  if (shown < int64_t(values.size())) out << ", ... (" << values.size() << " values)";
  out << "}";
  return out.str();
}

std::ostream& operator<<(std::ostream& out, const Tensor& tensor) { return out << tensor.str(); }

}  // namespace sg
