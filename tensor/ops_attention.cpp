// Causal self-attention, three ways, forward and backward: argument checks
// and dispatch. The naive kernels (kernels/cpu/attention.h, the reference),
// the fused kernels (kernels/cpu/flash_attention.h: no (T, T) matrix), and
// attention as batched GEMMs around a masked softmax (below: tensor cores on
// the GPU, at the price of keeping the (B, NH, T, T) probabilities).
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/normalization.h"
#include "tensor/ops.h"
#include "tensor/ops_common.h"

namespace sg {
using namespace ops_detail;

namespace {

struct AttentionDims {
  int64_t B, T, C, NH;
};

AttentionDims attention_dims(std::string_view op, const Tensor& qkv, int64_t n_head) {
  check_float(op, qkv);
  check_replicated(op, qkv);
  SG_CHECK(qkv.dim() == 3 && qkv.size(2) % 3 == 0, op, ": qkv must be (B, T, 3C), got ", qkv.str());
  AttentionDims dims{qkv.size(0), qkv.size(1), qkv.size(2) / 3, n_head};
  SG_CHECK(n_head >= 1 && dims.C % n_head == 0, op, ": C = ", dims.C, " is not divisible into ", n_head, " heads");
  return dims;
}

// The backward of the forms that keep P: dout (B, T, C) and att (B, NH, T, T) must match qkv.
AttentionDims attention_backward_dims(std::string_view op, const Tensor& dout, const Tensor& qkv, const Tensor& att,
                                      int64_t n_head) {
  AttentionDims s = attention_dims(op, qkv, n_head);
  SG_CHECK((dout.shape() == Shape{s.B, s.T, s.C} && att.shape() == Shape{s.B, s.NH, s.T, s.T}), op, ": dout ",
           dout.str(), " / att ", att.str(), " do not match qkv ", qkv.str());
  return s;
}

}  // namespace

AttentionOutput attention(const Tensor& qkv, int64_t n_head) {
  check_inputs("attention", {&qkv});
  AttentionDims s = attention_dims("attention", qkv, n_head);
  DType compute = compute_dtype("attention", qkv, CudaTypes::kF32Only);
  Tensor in = prepare(qkv, compute);
  AttentionOutput result;
  TensorOptions options = TensorOptions().dtype(compute).device(qkv.device());
  result.out = Tensor::empty({s.B, s.T, s.C}, options);
  result.att = Tensor::empty({s.B, s.NH, s.T, s.T}, options);
  if (qkv.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::attention_forward(result.out.data<T>(), result.att.data<T>(), in.data<T>(), s.B, s.T, s.C,
                                              s.NH));
  } else {
    SG_ON_CUDA(cuda::attention_forward(result.out.data<float>(), result.att.data<float>(), in.data<float>(), s.B, s.T,
                                       s.C, s.NH, cuda_stream(qkv.device())));
  }
  result.out = result.out.to(qkv.dtype());
  return result;
}

Tensor attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& att, int64_t n_head) {
  check_inputs("attention_backward", {&dout, &qkv, &att});
  AttentionDims s = attention_backward_dims("attention_backward", dout, qkv, att, n_head);
  DType compute = compute_dtype("attention_backward", qkv, CudaTypes::kF32Only);
  Tensor d = prepare(dout, compute), in = prepare(qkv, compute), probabilities = prepare(att, compute);
  Tensor dqkv = Tensor::zeros(qkv.shape(), TensorOptions().dtype(compute).device(qkv.device()));
  if (qkv.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::attention_backward(dqkv.data<T>(), d.data<T>(), in.data<T>(), probabilities.data<T>(),
                                               s.B, s.T, s.C, s.NH));
  } else {
    SG_ON_CUDA(cuda::attention_backward(dqkv.data<float>(), d.data<float>(), in.data<float>(),
                                        probabilities.data<float>(), s.B, s.T, s.C, s.NH, cuda_stream(qkv.device())));
  }
  return dqkv.to(qkv.dtype());
}

bool fused_attention_on_tensor_cores(const Tensor& qkv, int64_t n_head) {
  if (!qkv.device().is_cuda() || qkv.dim() != 3 || n_head < 1 || qkv.size(2) % (3 * n_head) != 0) return false;
#ifdef SG_CUDA
  return cuda::flash_tensor_cores_apply(qkv.dtype(), qkv.size(2) / (3 * n_head));
#else
  return false;
#endif
}

FusedAttentionOutput fused_attention(const Tensor& qkv, int64_t n_head) {
  check_inputs("fused_attention", {&qkv});
  AttentionDims s = attention_dims("fused_attention", qkv, n_head);
  DType compute = compute_dtype("fused_attention", qkv, CudaTypes::kNative16);
  Tensor in = prepare(qkv, compute);
  FusedAttentionOutput result;
  result.out = Tensor::empty({s.B, s.T, s.C}, TensorOptions().dtype(compute).device(qkv.device()));
  result.lse = Tensor::empty({s.B, s.NH, s.T}, TensorOptions().dtype(stats_dtype(compute)).device(qkv.device()));
  if (qkv.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::flash_attention_forward(result.out.data<T>(), result.lse.data<T>(), in.data<T>(), s.B, s.T,
                                                    s.C, s.NH));
  } else {
    SG_ON_CUDA(cuda::flash_attention_forward(result.out.data_ptr(), result.lse.data<float>(), in.data_ptr(), s.B, s.T,
                                             s.C, s.NH, compute, cuda_stream(qkv.device())));
  }
  result.out = result.out.to(qkv.dtype());
  return result;
}

Tensor fused_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& out, const Tensor& lse,
                                int64_t n_head) {
  check_inputs("fused_attention_backward", {&dout, &qkv, &out, &lse});
  AttentionDims s = attention_dims("fused_attention_backward", qkv, n_head);
  SG_CHECK((dout.shape() == Shape{s.B, s.T, s.C} && out.shape() == dout.shape() &&
            lse.shape() == Shape{s.B, s.NH, s.T}),
           "fused_attention_backward: dout ", dout.str(), ", out ", out.str(), " and lse ", lse.str(),
           " do not match qkv ", qkv.str(), "; pass what fused_attention() returned");
  check_same_dtype("fused_attention_backward", dout, qkv);
  check_same_dtype("fused_attention_backward", out, qkv);
  DType compute = compute_dtype("fused_attention_backward", qkv, CudaTypes::kNative16);
  Tensor d = prepare(dout, compute), in = prepare(qkv, compute), o = prepare(out, compute);
  Tensor l = prepare(lse, stats_dtype(compute));
  if (qkv.device().is_cpu()) {
    // Accumulated in f32 (f64 for f64), rounded to the dtype at the end.
    Tensor dqkv = Tensor::zeros(qkv.shape(), TensorOptions().dtype(stats_dtype(compute)));
    SG_ON_CPU(compute, cpu::flash_attention_backward(dqkv.data<T>(), d.data<T>(), in.data<T>(), o.data<T>(),
                                                     l.data<T>(), s.B, s.T, s.C, s.NH));
    return dqkv.to(qkv.dtype());
  }
  // The kernels sum each element in f32 and write it once, rounded: the same
  // bits, without an f32 buffer to zero and cast (75 MB a layer for GPT-2).
  Tensor dqkv = empty_like(in, compute);
  Tensor row_dots = Tensor::empty({s.B, s.NH, s.T}, TensorOptions().device(qkv.device()));
  SG_ON_CUDA(cuda::flash_attention_backward(dqkv.data_ptr(), row_dots.data<float>(), d.data_ptr(), in.data_ptr(),
                                            o.data_ptr(), l.data<float>(), s.B, s.T, s.C, s.NH, compute,
                                            cuda_stream(qkv.device())));
  return dqkv.to(qkv.dtype());
}


Tensor causal_softmax(const Tensor& scores, double scale) {
  check_inputs("causal_softmax", {&scores});
  check_float("causal_softmax", scores);
  check_replicated("causal_softmax", scores);
  SG_CHECK(scores.dim() >= 2 && scores.size(-1) == scores.size(-2), "causal_softmax: scores must be (..., T, T), got ",
           scores.str());
  DType compute = compute_dtype("causal_softmax", scores, CudaTypes::kNative16);
  Tensor in = prepare(scores, compute);
  Tensor out = empty_like(in, compute);
  const int64_t keys = scores.size(-1), N = keys ? scores.numel() / keys : 0;
  if (scores.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::causal_softmax_forward(out.data<T>(), in.data<T>(), N, keys, T(scale)));
  } else {
    SG_ON_CUDA(cuda::causal_softmax_forward(out.data_ptr(), in.data_ptr(), N, keys, float(scale), compute,
                                            cuda_stream(scores.device())));
  }
  return out.to(scores.dtype());
}

Tensor causal_softmax_backward(const Tensor& probabilities, const Tensor& dprobabilities, double scale) {
  check_inputs("causal_softmax_backward", {&probabilities, &dprobabilities});
  check_replicated("causal_softmax_backward", probabilities);
  SG_CHECK(probabilities.shape() == dprobabilities.shape() && probabilities.dim() >= 2,
           "causal_softmax_backward: shapes differ: ", probabilities.str(), " vs ", dprobabilities.str());
  check_same_dtype("causal_softmax_backward", probabilities, dprobabilities);
  DType compute = compute_dtype("causal_softmax_backward", probabilities, CudaTypes::kNative16);
  Tensor y = prepare(probabilities, compute), dy = prepare(dprobabilities, compute);
  Tensor dx = empty_like(y, compute);  // written, not accumulated
  const int64_t keys = y.size(-1), N = keys ? y.numel() / keys : 0;
  if (y.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::causal_softmax_backward(dx.data<T>(), y.data<T>(), dy.data<T>(), N, keys, T(scale)));
  } else {
    SG_ON_CUDA(cuda::causal_softmax_backward(dx.data_ptr(), y.data_ptr(), dy.data_ptr(), N, keys, float(scale), compute,
                                             cuda_stream(y.device())));
  }
  return dx.to(probabilities.dtype());
}

namespace {

// Part 0 (q), 1 (k) or 2 (v) of every head, as (B, NH, T, HS), contiguous:
// the layout batched GEMMs take (one stride from one head to the next).
Tensor head_major(const Tensor& qkv, int64_t part, const AttentionDims& s) {
  const int64_t HS = s.C / s.NH;
  return qkv.view({s.B, s.T, 3, s.NH, HS})
      .slice(2, part, part + 1)  // (B, T, 1, NH, HS)
      .transpose(1, 3)           // (B, NH, 1, T, HS)
      .contiguous()
      .view({s.B, s.NH, s.T, HS});
}

// Writes x (B, NH, T, HS) into part `part` of dqkv (B, T, 3C).
void write_part(Tensor& dqkv, int64_t part, const Tensor& x, const AttentionDims& s) {
  const int64_t HS = s.C / s.NH;
  Tensor target = dqkv.view({s.B, s.T, 3, s.NH, HS}).slice(2, part, part + 1).transpose(1, 2);  // (B, 1, T, NH, HS)
  target.copy_(x.view({s.B, s.NH, s.T, 1, HS}).transpose(1, 3));                                  // (B, 1, T, NH, HS)
}

}  // namespace

AttentionOutput gemm_attention(const Tensor& qkv, int64_t n_head) {
  check_inputs("gemm_attention", {&qkv});
  AttentionDims s = attention_dims("gemm_attention", qkv, n_head);
  DType compute = compute_dtype("gemm_attention", qkv, CudaTypes::kNative16);
  Tensor in = prepare(qkv, compute);
  const double scale = 1.0 / std::sqrt(double(s.C / s.NH));
  Tensor q = head_major(in, 0, s), k = head_major(in, 1, s), v = head_major(in, 2, s);
  AttentionOutput result;
  result.att = causal_softmax(matmul(q, k.transpose(-1, -2)), scale);  // (B, NH, T, T)
  Tensor o = matmul(result.att, v);                                    // (B, NH, T, HS)
  result.out = o.transpose(1, 2).contiguous().view({s.B, s.T, s.C}).to(qkv.dtype());
  return result;
}

Tensor gemm_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& att, int64_t n_head) {
  check_inputs("gemm_attention_backward", {&dout, &qkv, &att});
  AttentionDims s = attention_backward_dims("gemm_attention_backward", dout, qkv, att, n_head);
  DType compute = compute_dtype("gemm_attention_backward", qkv, CudaTypes::kNative16);
  const int64_t HS = s.C / s.NH;
  const double scale = 1.0 / std::sqrt(double(HS));
  Tensor in = prepare(qkv, compute), p = prepare(att, compute);
  Tensor q = head_major(in, 0, s), k = head_major(in, 1, s), v = head_major(in, 2, s);
  Tensor d_o = prepare(dout, compute).view({s.B, s.T, s.NH, HS}).transpose(1, 2).contiguous();  // (B, NH, T, HS)
  // O = P V:  dV = P^T dO, dP = dO V^T;  P = softmax(scale S):  dS = scale P (dP - rowsum(dP P));
  // S = Q K^T:  dQ = dS K, dK = dS^T Q.
  Tensor dv = matmul(p.transpose(-1, -2), d_o);
  Tensor ds = causal_softmax_backward(p, matmul(d_o, v.transpose(-1, -2)), scale);
  Tensor dq = matmul(ds, k), dk = matmul(ds.transpose(-1, -2), q);
  Tensor dqkv = Tensor::empty(qkv.shape(), TensorOptions().dtype(compute).device(qkv.device()));
  write_part(dqkv, 0, dq, s);
  write_part(dqkv, 1, dk, s);
  write_part(dqkv, 2, dv, s);
  return dqkv.to(qkv.dtype());
}

}  // namespace sg
