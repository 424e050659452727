#include "tensor/rng.h"

#include "kernels/cpu/rng.h"
#include "tensor/dispatch.h"

namespace sg {
namespace {

// Fills `tensor` through `fill(out, n, first_index, device)` on an f32 buffer
// of the elements it holds, then converts into the tensor's dtype.
template <typename Fill>
void fill_held_elements(Tensor& tensor, std::string_view what, Fill fill) {
  SG_CHECK(tensor.defined(), what, " on an undefined tensor");
  SG_CHECK(is_floating(tensor.dtype()), what, ": random values need a floating tensor, got ", tensor.str());
  SG_CHECK(tensor.is_contiguous(), what, ": fill a contiguous tensor (", tensor.str(),
           " is a strided view), or fill a fresh tensor and copy_ it in");
  int64_t first = 0, count = tensor.numel();
  if (tensor.is_sharded()) {
    first = tensor.layout().shard().begin;
    count = tensor.layout().shard().end - first;
  }
  Tensor target = tensor.is_sharded() ? tensor.local() : tensor.view({tensor.numel()});
  Tensor values = Tensor::zeros({target.numel()}, TensorOptions().device(tensor.device()));
  fill(values.data<float>(), count, first, tensor.device());  // the padding tail stays 0
  target.copy_(values);
}

}  // namespace

uint64_t rng_stream(std::string_view name) {
  uint64_t hash = 0xcbf29ce484222325ull;  // FNV offset basis
  for (char c : name) {
    hash ^= uint8_t(c);
    hash *= 0x100000001b3ull;  // FNV prime
  }
  return hash;
}

void fill_uniform_(Tensor& tensor, uint64_t seed, std::string_view name, double low, double high) {
  uint64_t stream = rng_stream(name);
  fill_held_elements(tensor, "fill_uniform_", [&](float* out, int64_t n, int64_t first, Device device) {
    if (device.is_cpu()) cpu::uniform_fill(out, n, first, seed, stream, float(low), float(high));
    else SG_ON_CUDA(cuda::uniform_fill(out, n, first, seed, stream, float(low), float(high), cuda_stream(device)));
  });
}

void fill_normal_(Tensor& tensor, uint64_t seed, std::string_view name, double mean, double std) {
  uint64_t stream = rng_stream(name);
  fill_held_elements(tensor, "fill_normal_", [&](float* out, int64_t n, int64_t first, Device device) {
    if (device.is_cpu()) cpu::normal_fill(out, n, first, seed, stream, float(mean), float(std));
    else SG_ON_CUDA(cuda::normal_fill(out, n, first, seed, stream, float(mean), float(std), cuda_stream(device)));
  });
}

void fill_normal_range_(Tensor& values, uint64_t seed, std::string_view name, int64_t first_index, double mean,
                        double std) {
  SG_CHECK(values.defined() && values.dtype() == DType::f32 && values.dim() == 1 && values.is_contiguous() &&
               !values.is_sharded(),
           "fill_normal_range_: needs a 1-D contiguous f32 buffer, got ", values.str());
  SG_CHECK(first_index >= 0, "fill_normal_range_: first_index must be >= 0, got ", first_index);
  const uint64_t stream = rng_stream(name);
  const int64_t n = values.numel();
  Device device = values.device();
  if (device.is_cpu()) cpu::normal_fill(values.data<float>(), n, first_index, seed, stream, float(mean), float(std));
  else SG_ON_CUDA(cuda::normal_fill(values.data<float>(), n, first_index, seed, stream, float(mean), float(std), cuda_stream(device)));
}

}  // namespace sg
