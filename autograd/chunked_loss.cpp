// The LM head and its loss a chunk of rows at a time.
//
// linear_cross_entropy holds the logits of every row, (N, V), from its
// forward to its backward: for GPT-2 at micro-batch 32 (N = 32768 tokens,
// V = 50304) that is 3.1 GiB in bf16, a quarter of a step's activations
// (docs/zero.md). Everything backward needs from them can be made as soon
// as a chunk of rows has its losses, because the gradient of the mean is
//
//   dlogits = s g,  g = softmax(logits) - onehot(target),  s = dloss / n
//   dx = s (g W)            (N, C)
//   dW = s (g^T x)          (V, C), a sum over the rows
//
// and s is the only thing backward brings. So the forward runs, for rows
// [r, r + chunk):  logits = x_r W^T;  g and the losses in one pass over
// them (cross_entropy_with_grad, over the logits' buffer);  dx_r = g W;
// dW += g^T x_r (f32 sums, in order: the same bits every run). The chunk's
// (chunk, V) block is then free for the next. Backward scales dx and dW by
// s. It keeps dx (N, C) and dW's (V, C) sums instead of (N, V), and does
// the same three GEMMs (smaller, the dW one adding into its sums), one
// extra pass over dW to scale it, and no read of W in backward (at ZeRO
// stage 3, no gather of the tied embedding there). Same loss; gradients
// equal up to rounding (s applied after the products, as CUDA's fused
// loss already does).
#include "autograd/functions.h"

#include <algorithm>

#include "tensor/ops.h"

namespace sg {

Variable chunked_linear_cross_entropy(const Variable& x, const Variable& weight, const Tensor& targets,
                                      int64_t chunk_rows) {
  const Tensor input = x.value();
  SG_CHECK(input.dim() >= 1 && weight.shape().size() == 2 && input.size(-1) == weight.shape()[1],
           "chunked_linear_cross_entropy: x ", input.str(), " does not match the weight (V, C) ",
           shape_str(weight.shape()));
  const int64_t C = input.size(-1), N = C ? input.numel() / C : 0;
  if (chunk_rows <= 0 || chunk_rows >= N) return linear_cross_entropy(x, weight, targets);
  SG_CHECK(targets.numel() == N, "chunked_linear_cross_entropy: ", targets.numel(), " targets for ", N, " rows");
  const Tensor w = weight.value();  // (V, C), read once: at stage 3 the gather of the tied embedding
  const Tensor rows = input.contiguous().reshape({N, C});
  const Tensor row_targets = targets.contiguous().reshape({N});
  Tensor losses, dx, dw;  // (N) and (N, C) in the dtypes the first chunk gives; dW's (V, C) sums in f32
  for (int64_t first = 0; first < N; first += chunk_rows) {
    const int64_t end = std::min(N, first + chunk_rows);
    const Tensor x_chunk = rows.slice(0, first, end);
    CrossEntropyWithGrad out = cross_entropy_with_grad(matmul(x_chunk, w.transpose(0, 1)),
                                                       row_targets.slice(0, first, end));
    const Tensor dx_chunk = matmul(out.grad, w);
    if (!losses.defined()) {
      losses = Tensor::empty({N}, TensorOptions().dtype(out.losses.dtype()).device(input.device()));
      dx = Tensor::empty({N, C}, TensorOptions().dtype(dx_chunk.dtype()).device(input.device()));
      const DType sums = out.grad.dtype() == DType::f64 ? DType::f64 : DType::f32;
      dw = Tensor::empty({w.size(0), C}, TensorOptions().dtype(sums).device(input.device()));
    }
    losses.slice(0, first, end).copy_(out.losses);
    dx.slice(0, first, end).copy_(dx_chunk);
    matmul_into({dw, first > 0}, out.grad.transpose(0, 1), x_chunk);
  }
  CrossEntropyMean mean = cross_entropy_mean(losses.reshape(targets.shape()), targets);
  const Shape x_shape = input.shape();
  const DType w_dtype = w.dtype();
  // Unless the graph is kept for another backward, dx and dW's sums are
  // scaled where they are (no second buffer of either).
  auto backward = [weight, dx, dw, count = mean.count, x_shape, w_dtype](const Tensor& dloss) {
    Tensor dx_scaled = dx, dw_scaled = dw;
    if (backward_frees_saved_tensors()) {
      scale_by_quotient_(dx_scaled, dloss, count);
      scale_by_quotient_(dw_scaled, dloss, count);
    } else {
      dx_scaled = scale_by_quotient(dx, dloss, count), dw_scaled = scale_by_quotient(dw, dloss, count);
    }
    dx_scaled = dx_scaled.reshape(x_shape);
    const Destination into = claim_leaf_grad(weight, w_dtype);
    if (!into.defined()) return std::vector<Tensor>{dx_scaled, dw_scaled.to(w_dtype)};
    Tensor buffer = into.tensor;
    if (into.add) {
      axpy_(buffer, 1.0, dw_scaled);
    } else {
      buffer.copy_(dw_scaled);
    }
    return std::vector<Tensor>{dx_scaled, Tensor()};
  };
  return make_result(mean.loss, "chunked_linear_cross_entropy", {x, weight}, backward);
}

}  // namespace sg
