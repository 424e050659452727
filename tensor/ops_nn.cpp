// The neural-network ops: GELU, softmax, LayerNorm, attention, embedding and
// cross-entropy, forward and backward. Argument checks and dispatch only; the
// math is documented beside each kernel in kernels/cpu/.
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/normalization.h"
#include "kernels/cuda/sum_output.h"
#include "tensor/ops.h"
#include "tensor/ops_common.h"

namespace sg {
using namespace ops_detail;

namespace {

Shape leading_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

void check_same_shape(std::string_view op, const Tensor& a, const Tensor& b) {
  SG_CHECK(a.shape() == b.shape(), op, ": shapes differ: ", a.str(), " vs ", b.str());
}

}  // namespace

Tensor gelu(const Tensor& x) {
  check_inputs("gelu", {&x});
  check_float("gelu", x);
  DType compute = compute_dtype("gelu", x, CudaTypes::kNative16);
  Tensor in = prepare(x, compute);
  Tensor out = empty_like(in, compute);
  int64_t n = in.layout().local_numel();
  if (x.device().is_cpu()) SG_ON_CPU(compute, cpu::gelu_forward(out.data<T>(), in.data<T>(), n));
  else SG_ON_CUDA(cuda::gelu_forward(out.data_ptr(), in.data_ptr(), n, compute, cuda_stream(x.device())));
  return out.to(x.dtype());
}

Tensor gelu_backward(const Tensor& x, const Tensor& dout) {
  check_inputs("gelu_backward", {&x, &dout});
  check_float("gelu_backward", x);
  SG_CHECK(x.layout() == dout.layout(), "gelu_backward: layouts differ: ", x.str(), " vs ", dout.str());
  check_same_dtype("gelu_backward", x, dout);
  DType compute = compute_dtype("gelu_backward", x, CudaTypes::kNative16);
  Tensor in = prepare(x, compute), d = prepare(dout, compute);
  int64_t n = in.layout().local_numel();
  if (x.device().is_cpu()) {
    Tensor dx = zeros_like(in, compute);
    SG_ON_CPU(compute, cpu::gelu_backward(dx.data<T>(), in.data<T>(), d.data<T>(), n));
    return dx.to(x.dtype());
  }
  Tensor dx = empty_like(in, compute);  // the CUDA kernel writes every element
  SG_ON_CUDA(cuda::gelu_backward(dx.data_ptr(), in.data_ptr(), d.data_ptr(), n, compute, cuda_stream(x.device())));
  return dx;
}

Tensor bias_gelu_(Tensor& pre, const Tensor& bias) {
  check_inputs("bias_gelu_", {&pre, &bias});
  check_same_dtype("bias_gelu_", pre, bias);
  SG_CHECK(bias.dim() == 1 && pre.dim() >= 1 && pre.size(-1) == bias.size(0), "bias_gelu_: bias ", bias.str(),
           " does not match the last dimension of ", pre.str());
  if (pre.device().is_cuda() && pre.is_contiguous() && !pre.is_sharded()) {
    Tensor b = prepare(bias, pre.dtype());
    Tensor y = empty_like(pre, pre.dtype());
    [[maybe_unused]] const int64_t cols = bias.size(0), rows = cols ? pre.numel() / cols : 0;
    SG_ON_CUDA(cuda::bias_gelu_forward(y.data_ptr(), pre.data_ptr(), b.data_ptr(), rows, cols, pre.dtype(),
                                       cuda_stream(pre.device())));
    return y;
  }
  if (!(pre.device().is_cpu() && pre.dtype() == DType::f32 && pre.is_contiguous() && !pre.is_sharded())) {
    add_bias_(pre, bias);  // the ops one after the other (f64 checks, 16-bit on the CPU)
    return gelu(pre);
  }
  Tensor b = prepare(bias, DType::f32);
  Tensor y = empty_like(pre, DType::f32);
  const int64_t cols = bias.size(0), rows = cols ? pre.numel() / cols : 0;
  cpu::bias_gelu_forward(y.data<float>(), pre.data<float>(), b.data<float>(), rows, cols);
  return y;
}

BiasGeluGrads bias_gelu_backward(const Tensor& h, const Tensor& dy, const Destination& dbias) {
  check_inputs("bias_gelu_backward", {&h, &dy});
  SG_CHECK(h.layout() == dy.layout() && h.dim() >= 1, "bias_gelu_backward: layouts differ: ", h.str(), " vs ",
           dy.str());
  const int64_t cols = h.size(-1);
  if (dbias.defined()) check_destination("bias_gelu_backward", dbias, {cols}, dy);
  const DType dtype = h.dtype();
  if (h.device().is_cuda() && dy.dtype() == dtype && h.is_contiguous() && !h.is_sharded() &&
      (dtype == DType::f32 || dtype == DType::bf16 || dtype == DType::f16)) {
    // One pass: dh and the column sums of dh (the bias's gradient) together.
    [[maybe_unused]] const int64_t rows = cols ? h.numel() / cols : 0;
    Tensor dh = empty_like(h, dtype);
    Tensor fresh = dbias.defined() ? Tensor() : Tensor::empty({cols}, TensorOptions().dtype(dtype).device(h.device()));
    [[maybe_unused]] const Destination into = dbias.defined() ? dbias : Destination{fresh, false};
    Tensor partials = Tensor::empty({cuda::kColumnSumChunks, cols}, TensorOptions().device(h.device()));
    SG_ON_CUDA(cuda::gelu_bias_backward(dh.data_ptr(), {into.tensor.data_ptr(), into.tensor.dtype(), into.add},
                                        partials.data<float>(), h.data_ptr(), dy.data_ptr(), rows, cols, dtype,
                                        cuda_stream(h.device())));
    return {dh, fresh};
  }
  Tensor dh;
  if (!(h.device().is_cpu() && h.dtype() == DType::f32 && dy.dtype() == DType::f32 && !h.is_sharded())) {
    dh = gelu_backward(h, dy);
  } else {
    Tensor x = prepare(h, DType::f32), d = prepare(dy, DType::f32);
    dh = empty_like(x, DType::f32);
    cpu::bias_gelu_backward(dh.data<float>(), x.data<float>(), d.data<float>(), x.numel());
  }
  if (!dbias.defined()) return {dh, bias_backward(dh)};
  bias_backward_into(dbias, dh);
  return {dh, Tensor()};
}

Tensor softmax(const Tensor& x) {
  check_inputs("softmax", {&x});
  check_float("softmax", x);
  check_replicated("softmax", x);
  SG_CHECK(x.dim() >= 1, "softmax: needs at least one dimension, got ", x.str());
  DType compute = compute_dtype("softmax", x, CudaTypes::kNative16);
  Tensor in = prepare(x, compute);
  Tensor out = empty_like(in, compute);
  int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
  if (x.device().is_cpu()) SG_ON_CPU(compute, cpu::softmax_forward(out.data<T>(), in.data<T>(), N, C));
  else SG_ON_CUDA(cuda::softmax_forward(out.data_ptr(), in.data_ptr(), N, C, compute, cuda_stream(x.device())));
  return out.to(x.dtype());
}

Tensor softmax_backward(const Tensor& y, const Tensor& dy) {
  check_inputs("softmax_backward", {&y, &dy});
  check_replicated("softmax_backward", y);
  check_same_shape("softmax_backward", y, dy);
  check_same_dtype("softmax_backward", y, dy);
  DType compute = compute_dtype("softmax_backward", y, CudaTypes::kF32Only);
  Tensor out = prepare(y, compute), d = prepare(dy, compute);
  Tensor dx = zeros_like(out, compute);
  int64_t C = y.size(-1), N = C ? y.numel() / C : 0;
  if (y.device().is_cpu()) SG_ON_CPU(compute, cpu::softmax_backward(dx.data<T>(), out.data<T>(), d.data<T>(), N, C));
  else SG_ON_CUDA(cuda::softmax_backward(dx.data<float>(), out.data<float>(), d.data<float>(), N, C, cuda_stream(y.device())));
  return dx.to(y.dtype());
}

LayerNormOutput layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_inputs("layernorm", {&x, &weight, &bias});
  check_float("layernorm", x);
  check_same_dtype("layernorm", x, weight);
  check_same_dtype("layernorm", x, bias);
  check_replicated("layernorm", x);
  SG_CHECK(x.dim() >= 1 && weight.shape() == Shape{x.size(-1)} && bias.shape() == Shape{x.size(-1)},
           "layernorm: weight ", weight.str(), " and bias ", bias.str(), " must be (C) with C = the last dimension of ",
           x.str());
  DType compute = compute_dtype("layernorm", x, CudaTypes::kNative16);
  Tensor in = prepare(x, compute), w = prepare(weight, compute), b = prepare(bias, compute);
  int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
  TensorOptions stats = TensorOptions().dtype(stats_dtype(compute)).device(x.device());
  LayerNormOutput result;
  result.out = empty_like(in, compute);
  result.mean = Tensor::empty(leading_shape(x), stats);
  result.rstd = Tensor::empty(leading_shape(x), stats);
  if (x.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::layernorm_forward(result.out.data<T>(), result.mean.data<T>(), result.rstd.data<T>(),
                                              in.data<T>(), w.data<T>(), b.data<T>(), N, C));
  } else {
    SG_ON_CUDA(cuda::layernorm_forward(result.out.data_ptr(), result.mean.data<float>(), result.rstd.data<float>(),
                                       in.data_ptr(), w.data_ptr(), b.data_ptr(), N, C, compute,
                                       cuda_stream(x.device())));
  }
  result.out = result.out.to(x.dtype());
  return result;
}

AddLayerNormOutput add_layernorm(const Tensor& x, const Tensor& y, const Tensor& weight, const Tensor& bias) {
  check_inputs("add_layernorm", {&x, &y, &weight, &bias});
  check_same_shape("add_layernorm", x, y);
  check_same_dtype("add_layernorm", x, y);
  if (x.device().is_cpu() || x.dtype() == DType::f64) {
    Tensor sum = add(x, y);
    return {sum, layernorm(sum, weight, bias)};
  }
  check_float("add_layernorm", x);
  check_replicated("add_layernorm", x);
  check_same_dtype("add_layernorm", x, weight);
  check_same_dtype("add_layernorm", x, bias);
  SG_CHECK(weight.shape() == Shape{x.size(-1)} && bias.shape() == Shape{x.size(-1)}, "add_layernorm: weight ",
           weight.str(), " and bias ", bias.str(), " must be (C) with C = the last dimension of ", x.str());
  DType compute = compute_dtype("add_layernorm", x, CudaTypes::kNative16);
  Tensor a = prepare(x, compute), b = prepare(y, compute), w = prepare(weight, compute), c = prepare(bias, compute);
  [[maybe_unused]] const int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
  const TensorOptions stats = TensorOptions().device(x.device());
  AddLayerNormOutput result;
  result.sum = empty_like(a, compute);
  result.norm.out = empty_like(a, compute);
  result.norm.mean = Tensor::empty(leading_shape(x), stats);
  result.norm.rstd = Tensor::empty(leading_shape(x), stats);
  SG_ON_CUDA(cuda::add_layernorm_forward(result.sum.data_ptr(), result.norm.out.data_ptr(),
                                         result.norm.mean.data<float>(), result.norm.rstd.data<float>(), a.data_ptr(),
                                         b.data_ptr(), w.data_ptr(), c.data_ptr(), N, C, compute,
                                         cuda_stream(x.device())));
  return result;
}

LayerNormGrads layernorm_backward(const Tensor& dout, const Tensor& x, const Tensor& weight, const Tensor& mean,
                                  const Tensor& rstd, const Tensor& add_to_dx, const Destination& dweight_into,
                                  const Destination& dbias_into) {
  check_inputs("layernorm_backward", {&dout, &x, &weight, &mean, &rstd});
  if (add_to_dx.defined()) {
    check_inputs("layernorm_backward", {&x, &add_to_dx});
    check_same_shape("layernorm_backward", add_to_dx, x);
    check_same_dtype("layernorm_backward", add_to_dx, x);
  }
  check_replicated("layernorm_backward", x);
  check_same_shape("layernorm_backward", dout, x);
  int64_t C = x.size(-1), N = C ? x.numel() / C : 0;
  SG_CHECK(weight.shape() == Shape{C} && mean.numel() == N && rstd.numel() == N,
           "layernorm_backward: weight/mean/rstd do not match ", x.str(), "; pass what layernorm() returned");
  if (dweight_into.defined()) check_destination("layernorm_backward", dweight_into, {C}, weight);
  if (dbias_into.defined()) check_destination("layernorm_backward", dbias_into, {C}, weight);
  DType compute = compute_dtype("layernorm_backward", x, CudaTypes::kNative16);
  DType stats = stats_dtype(compute);
  Tensor d = prepare(dout, compute), in = prepare(x, compute), w = prepare(weight, compute);
  Tensor m = prepare(mean, stats), s = prepare(rstd, stats);
  LayerNormGrads grads;
  if (x.device().is_cpu()) {
    // The kernel adds into dweight and dbias: a destination written is
    // summed into directly (cleared first); one added to gets the whole sum
    // after, as the CUDA kernel adds it.
    auto sums_for = [&](const Destination& into) {
      Tensor target = into.defined() && !into.add ? into.tensor : Tensor::zeros({C}, TensorOptions().dtype(stats));
      if (into.defined() && !into.add) target.fill_(0.0);
      return target;
    };
    grads.dweight = sums_for(dweight_into);
    grads.dbias = sums_for(dbias_into);
    // The kernel accumulates into dx, so it starts as add_to_dx, or zeros.
    if (add_to_dx.defined()) {
      grads.dx = empty_like(in, compute);
      grads.dx.copy_(add_to_dx);
    } else {
      grads.dx = zeros_like(in, compute);
    }
    SG_ON_CPU(compute, cpu::layernorm_backward(grads.dx.data<T>(), grads.dweight.data<T>(), grads.dbias.data<T>(),
                                               d.data<T>(), in.data<T>(), w.data<T>(), m.data<T>(), s.data<T>(), N, C));
    for (auto [sums, into] : {std::pair{&grads.dweight, &dweight_into}, std::pair{&grads.dbias, &dbias_into}}) {
      if (!into->defined()) continue;
      Tensor target = into->tensor;
      if (into->add) axpy_(target, 1.0, *sums);
      *sums = Tensor();  // the gradient is in the destination
    }
  } else {
    grads.dx = empty_like(in, compute);  // written by the kernel
    // dweight and dbias are written (or added) by the last kernel in their
    // destination's dtype, or fresh in the compute dtype: no zero-fill, no cast.
    auto target = [&](const Destination& into, Tensor& fresh) {
      if (into.defined()) return into;
      fresh = Tensor::empty({C}, TensorOptions().dtype(compute).device(x.device()));
      return Destination{fresh, false};
    };
    [[maybe_unused]] const Destination dw = target(dweight_into, grads.dweight), db = target(dbias_into, grads.dbias);
    Tensor partials = Tensor::empty({2 * cuda::kColumnSumChunks, C}, TensorOptions().device(x.device()));
    Tensor extra = add_to_dx.defined() ? prepare(add_to_dx, compute) : Tensor();
    SG_ON_CUDA(cuda::layernorm_backward(grads.dx.data_ptr(), {dw.tensor.data_ptr(), dw.tensor.dtype(), dw.add},
                                        {db.tensor.data_ptr(), db.tensor.dtype(), db.add}, partials.data<float>(),
                                        d.data_ptr(), in.data_ptr(), w.data_ptr(), m.data<float>(), s.data<float>(), N,
                                        C, compute, cuda_stream(x.device()), extra.defined() ? extra.data_ptr() : nullptr));
  }
  grads.dx = grads.dx.to(x.dtype());
  if (grads.dweight.defined()) grads.dweight = grads.dweight.to(weight.dtype());
  if (grads.dbias.defined()) grads.dbias = grads.dbias.to(weight.dtype());
  return grads;
}

}  // namespace sg
