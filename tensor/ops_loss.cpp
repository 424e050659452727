// Embedding and cross-entropy, forward and backward: argument checks and
// dispatch; the math is beside the kernels (kernels/cpu/loss.h).
#include <vector>

#include "kernels/cpu/loss.h"
#include "tensor/ops.h"
#include "tensor/ops_common.h"

namespace sg {
using namespace ops_detail;

namespace {

Shape leading_shape(const Tensor& x) { return Shape(x.shape().begin(), x.shape().end() - 1); }

}  // namespace

namespace {

// Ids out of range would read or write outside the table: a clear error
// instead. Checked on the host, so only for CPU tensors (a CUDA check would
// cost a device sync per call).
void check_id_range(std::string_view op, const Tensor& ids, int64_t limit, bool allow_negative) {
  if (!ids.device().is_cpu()) return;
  const int32_t* p = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    SG_CHECK(p[i] < limit && (p[i] >= 0 || allow_negative), op, ": index ", p[i], " at position ", i,
             " is outside [0, ", limit, ")", allow_negative ? " (negative indices are ignored)" : "");
  }
}

}  // namespace

Tensor embedding(const Tensor& table, const Tensor& ids) {
  check_inputs("embedding", {&table, &ids});
  check_float("embedding", table);
  check_replicated("embedding", table);
  SG_CHECK(table.dim() == 2, "embedding: the table must be (V, C), got ", table.str());
  Tensor index = as_indices("embedding", ids);
  check_id_range("embedding", index, table.size(0), false);
  DType compute = compute_dtype("embedding", table, CudaTypes::kNative16);
  Tensor t = prepare(table, compute);
  int64_t C = table.size(1), N = ids.numel();
  Shape out_shape = ids.shape();
  out_shape.push_back(C);
  Tensor out = Tensor::empty(out_shape, TensorOptions().dtype(compute).device(table.device()));
  if (table.device().is_cpu()) SG_ON_CPU(compute, cpu::embedding_forward(out.data<T>(), t.data<T>(), index.data<int32_t>(), N, C));
  else SG_ON_CUDA(cuda::embedding_forward(out.data_ptr(), t.data_ptr(), index.data<int32_t>(), N, C, compute, cuda_stream(table.device())));
  return out.to(table.dtype());
}

namespace {

// dtable[ids[j]] += dout[j] for every position j, in position order, into
// dtable (V, C) of the sums' dtype; dtable is not cleared here.
void embedding_sums(Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  check_inputs("embedding_backward", {&dout, &ids});
  const int64_t V = dtable.size(0);
  Tensor index = as_indices("embedding_backward", ids);
  check_id_range("embedding_backward", index, V, false);
  Shape expected = ids.shape();
  SG_CHECK(dout.dim() == ids.dim() + 1, "embedding_backward: dout ", dout.str(), " must be ids' shape plus C");
  expected.push_back(dout.size(-1));
  SG_CHECK(dout.shape() == expected, "embedding_backward: dout ", dout.str(), " does not match ids ", ids.str());
  check_float("embedding_backward", dout);
  const DType compute = compute_dtype("embedding_backward", dout, CudaTypes::kNative16);
  Tensor d = prepare(dout, compute);
  const int64_t C = dout.size(-1), N = ids.numel();
  if (dout.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::embedding_backward(dtable.data<T>(), d.data<T>(), index.data<int32_t>(), N, C));
  } else {
    SG_ON_CUDA(cuda::embedding_backward(dtable.data<float>(), d.data_ptr(), index.data<int32_t>(), N, C, V, compute,
                                        cuda_stream(dout.device())));
  }
}

}  // namespace

Tensor embedding_backward(const Tensor& dout, const Tensor& ids, int64_t vocab_size) {
  SG_CHECK(dout.defined() && dout.dim() >= 1, "embedding_backward: dout must have at least one dimension");
  Tensor dtable = Tensor::zeros({vocab_size, dout.size(-1)},
                                TensorOptions().dtype(stats_dtype(dout.dtype())).device(dout.device()));
  embedding_sums(dtable, dout, ids);
  return dtable.to(dout.dtype());
}

// Into the buffer the rows are added where ids point: a row no id names is
// not touched at all (when adding), and a stale buffer is cleared first.
void embedding_backward_into(const Destination& dtable, const Tensor& dout, const Tensor& ids) {
  SG_CHECK(dout.defined() && dout.dim() >= 1 && dtable.defined() && dtable.tensor.dim() == 2,
           "embedding_backward_into: needs dout (..., C) and a (V, C) destination");
  check_destination("embedding_backward_into", dtable, {dtable.tensor.size(0), dout.size(-1)}, dout);
  Tensor table = dtable.tensor;
  if (!dtable.add) table.fill_(0.0);
  embedding_sums(table, dout, ids);
}

CrossEntropyOutput cross_entropy(const Tensor& logits, const Tensor& targets) {
  check_inputs("cross_entropy", {&logits, &targets});
  check_float("cross_entropy", logits);
  check_replicated("cross_entropy", logits);
  SG_CHECK(logits.dim() >= 1 && leading_shape(logits) == targets.shape(), "cross_entropy: logits ", logits.str(),
           " must be targets' shape ", shape_str(targets.shape()), " plus the vocabulary");
  Tensor index = as_indices("cross_entropy", targets);
  int64_t V = logits.size(-1), N = targets.numel();
  check_id_range("cross_entropy", index, V, true);
  DType compute = compute_dtype("cross_entropy", logits, CudaTypes::kNative16);
  Tensor x = prepare(logits, compute);
  CrossEntropyOutput result;
  const TensorOptions stats = TensorOptions().dtype(stats_dtype(compute)).device(logits.device());
  result.losses = Tensor::empty(targets.shape(), stats);
  result.lse = Tensor::empty(targets.shape(), stats);
  if (logits.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::cross_entropy_forward(result.losses.data<T>(), result.lse.data<T>(), x.data<T>(),
                                                  index.data<int32_t>(), N, V));
  } else {
    SG_ON_CUDA(cuda::cross_entropy_forward(result.losses.data<float>(), result.lse.data<float>(), x.data_ptr(),
                                           index.data<int32_t>(), N, V, compute, cuda_stream(logits.device())));
  }
  return result;
}

namespace {

void check_cross_entropy_backward(const Tensor& logits, const Tensor& lse, const Tensor& targets) {
  check_replicated("cross_entropy_backward", logits);
  SG_CHECK(logits.dim() >= 1 && leading_shape(logits) == targets.shape() && lse.shape() == targets.shape(),
           "cross_entropy_backward: lse ", lse.str(), " and targets ", shape_str(targets.shape()),
           " must be logits' ", logits.str(), " shape without the vocabulary");
}

// dlogits from per-row scales (dlosses) or, on CUDA, from the mean's dloss
// and count read on the device (dlosses a scalar, count not null).
Tensor cross_entropy_grad(const Tensor& dlosses, const Tensor* count, const Tensor& logits, const Tensor& lse,
                          const Tensor& targets, bool overwrite_logits) {
  Tensor index = as_indices("cross_entropy_backward", targets);
  int64_t V = logits.size(-1), N = targets.numel();
  check_id_range("cross_entropy_backward", index, V, true);
  DType compute = compute_dtype("cross_entropy_backward", logits, CudaTypes::kNative16);
  DType stats = stats_dtype(compute);
  Tensor d = prepare(dlosses, stats), x = prepare(logits, compute), l = prepare(lse, stats);
  // Over the logits themselves when the caller gives them up (x is then
  // either they or a private converted copy); every element is written.
  Tensor dlogits = overwrite_logits ? x : empty_like(x, compute);
  if (logits.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::cross_entropy_backward(dlogits.data<T>(), d.data<T>(), x.data<T>(), l.data<T>(),
                                                   index.data<int32_t>(), N, V));
    return dlogits.to(logits.dtype());
  }
  Tensor c = count ? prepare(*count, DType::f32) : Tensor();
  SG_ON_CUDA(cuda::cross_entropy_backward(dlogits.data_ptr(), d.data<float>(), count ? c.data<float>() : nullptr,
                                          x.data_ptr(), l.data<float>(), index.data<int32_t>(), N, V, compute,
                                          cuda_stream(logits.device())));
  return dlogits;
}

}  // namespace

Tensor cross_entropy_backward(const Tensor& dlosses, const Tensor& logits, const Tensor& lse, const Tensor& targets) {
  check_inputs("cross_entropy_backward", {&dlosses, &logits, &lse, &targets});
  check_cross_entropy_backward(logits, lse, targets);
  SG_CHECK(dlosses.shape() == targets.shape(), "cross_entropy_backward: dlosses ", dlosses.str(),
           " must have targets' shape ", shape_str(targets.shape()));
  return cross_entropy_grad(dlosses, nullptr, logits, lse, targets, false);
}

CrossEntropyMean cross_entropy_mean(const Tensor& losses, const Tensor& targets) {
  check_inputs("cross_entropy_mean", {&losses, &targets});
  SG_CHECK(losses.shape() == targets.shape(), "cross_entropy_mean: losses ", losses.str(), " and targets ",
           targets.str(), " must have one shape");
  Tensor index = as_indices("cross_entropy_mean", targets);
  Tensor l = prepare(losses, stats_dtype(compute_dtype("cross_entropy_mean", losses, CudaTypes::kF32Only)));
  const TensorOptions options = TensorOptions().dtype(l.dtype()).device(losses.device());
  CrossEntropyMean result{Tensor::empty({}, options), Tensor::empty({}, options)};
  if (losses.device().is_cpu()) {
    // Summed in order in double (the CPU reference); CUDA sums in f32 in a tree.
    double sum = 0.0;
    int64_t counted = 0;
    std::vector<double> values = l.to_vector<double>();
    const int32_t* t = index.data<int32_t>();
    for (size_t n = 0; n < values.size(); ++n) {
      if (t[n] < 0) continue;
      sum += values[n];
      ++counted;
    }
    SG_CHECK(counted > 0, "cross_entropy: every target is ignored (negative), so the mean is undefined");
    result.loss.fill_(sum / double(counted));
    result.count.fill_(double(counted));
  } else {
    SG_ON_CUDA(cuda::cross_entropy_mean(result.loss.data<float>(), result.count.data<float>(), l.data<float>(),
                                        index.data<int32_t>(), l.numel(), cuda_stream(losses.device())));
  }
  return result;
}

Tensor cross_entropy_mean_backward(const Tensor& dloss, const Tensor& count, const Tensor& logits, const Tensor& lse,
                                   const Tensor& targets, bool overwrite_logits) {
  check_inputs("cross_entropy_mean_backward", {&dloss, &count, &logits, &lse, &targets});
  check_cross_entropy_backward(logits, lse, targets);
  SG_CHECK(dloss.numel() == 1 && count.numel() == 1, "cross_entropy_mean_backward: dloss ", dloss.str(),
           " and count ", count.str(), " must be single numbers (what cross_entropy_mean returned)");
  if (logits.device().is_cpu()) {
    Tensor dlosses = Tensor::full(targets.shape(), dloss.item() / count.item(),
                                  TensorOptions().dtype(logits.dtype() == DType::f64 ? DType::f64 : DType::f32));
    return cross_entropy_grad(dlosses, nullptr, logits, lse, targets, overwrite_logits);
  }
  Tensor scalar = dloss.view({1});
  return cross_entropy_grad(scalar, &count, logits, lse, targets, overwrite_logits);
}

CrossEntropyWithGrad cross_entropy_with_grad(const Tensor& logits, const Tensor& targets) {
  check_inputs("cross_entropy_with_grad", {&logits, &targets});
  check_float("cross_entropy_with_grad", logits);
  check_replicated("cross_entropy_with_grad", logits);
  SG_CHECK(logits.dim() >= 1 && leading_shape(logits) == targets.shape(), "cross_entropy_with_grad: logits ",
           logits.str(), " must be targets' shape ", shape_str(targets.shape()), " plus the vocabulary");
  if (logits.device().is_cpu()) {  // the CUDA kernel's twin: the two passes, every row's dloss 1
    CrossEntropyOutput out = cross_entropy(logits, targets);
    Tensor ones = Tensor::ones(targets.shape(), TensorOptions().dtype(out.losses.dtype()));
    return {out.losses, cross_entropy_grad(ones, nullptr, logits, out.lse, targets, true)};
  }
  Tensor index = as_indices("cross_entropy_with_grad", targets);
  const int64_t V = logits.size(-1);
  check_id_range("cross_entropy_with_grad", index, V, true);
  const DType compute = compute_dtype("cross_entropy_with_grad", logits, CudaTypes::kNative16);
  Tensor x = prepare(logits, compute);  // the logits themselves when they are contiguous in `compute`
  CrossEntropyWithGrad result{Tensor::empty(targets.shape(), TensorOptions().device(logits.device())), x};
  SG_ON_CUDA(cuda::cross_entropy_with_grad(result.losses.data<float>(), x.data_ptr(), index.data<int32_t>(),
                                           targets.numel(), V, compute, cuda_stream(logits.device())));
  return result;
}

Tensor scale_by_quotient(const Tensor& x, const Tensor& numerator, const Tensor& denominator) {
  check_inputs("scale_by_quotient", {&x, &numerator, &denominator});
  check_float("scale_by_quotient", x);
  SG_CHECK(numerator.numel() == 1 && denominator.numel() == 1, "scale_by_quotient: numerator ", numerator.str(),
           " and denominator ", denominator.str(), " must be single numbers");
  if (x.device().is_cpu()) {
    const double d = denominator.item();
    return scale(x, d == 0.0 ? 0.0 : numerator.item() / d);
  }
  const DType compute = compute_dtype("scale_by_quotient", x, CudaTypes::kNative16);
  Tensor in = prepare(x, compute), n = prepare(numerator, DType::f32), d = prepare(denominator, DType::f32);
  Tensor out = empty_like(in, compute);
  SG_ON_CUDA(cuda::scale_by_quotient(out.data_ptr(), in.data_ptr(), n.data<float>(), d.data<float>(), in.numel(),
                                     compute, cuda_stream(x.device())));
  return out;
}

void scale_by_quotient_(Tensor& x, const Tensor& numerator, const Tensor& denominator) {
  check_inputs("scale_by_quotient_", {&x, &numerator, &denominator});
  check_float("scale_by_quotient_", x);
  SG_CHECK(numerator.numel() == 1 && denominator.numel() == 1, "scale_by_quotient_: numerator ", numerator.str(),
           " and denominator ", denominator.str(), " must be single numbers");
  SG_CHECK(x.is_contiguous() && !x.is_sharded(), "scale_by_quotient_: ", x.str(), " must be whole and contiguous");
  if (x.device().is_cpu()) {
    const double d = denominator.item();
    scale_(x, d == 0.0 ? 0.0 : numerator.item() / d);
    return;
  }
  const DType compute = compute_dtype("scale_by_quotient_", x, CudaTypes::kNative16);
  SG_CHECK(compute == x.dtype(), "scale_by_quotient_: ", x.str(), " has no CUDA kernel of its dtype in place");
  Tensor n = prepare(numerator, DType::f32), d = prepare(denominator, DType::f32);
  // The kernel reads and writes each element at the same index: in place is safe.
  SG_ON_CUDA(cuda::scale_by_quotient(x.data_ptr(), x.data_ptr(), n.data<float>(), d.data<float>(), x.numel(), compute,
                                     cuda_stream(x.device())));
}
}  // namespace sg
