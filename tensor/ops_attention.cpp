// Causal self-attention, three ways, forward and backward: argument checks
// and dispatch. The naive kernels (kernels/cpu/attention.h, the reference),
// the fused kernels (kernels/cpu/flash_attention.h: no (T, T) matrix), and
// attention as batched GEMMs around a masked softmax (below: tensor cores on
// the GPU, at the price of keeping the (B, NH, T, T) probabilities).
#include <cmath>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/flash_attention.h"
#include "kernels/cpu/matmul.h"
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
  // The fused dQ's partials (SG_FLASH_FUSED_DQ=1): f32, one (64, HS) block
  // per causal pair of a query tile and a key block, 214 MB for GPT-2 at
  // micro-batch 8; none otherwise.
  Tensor partials;
  int64_t partial_floats = 0;
  SG_ON_CUDA(partial_floats = cuda::flash_attention_backward_scratch(s.B, s.T, s.C, s.NH, compute));
  if (partial_floats > 0) partials = Tensor::empty({partial_floats}, TensorOptions().device(qkv.device()));
  SG_ON_CUDA(cuda::flash_attention_backward(dqkv.data_ptr(), row_dots.data<float>(), d.data_ptr(), in.data_ptr(),
                                            o.data_ptr(), l.data<float>(), s.B, s.T, s.C, s.NH, compute,
                                            cuda_stream(qkv.device()),
                                            partials.defined() ? partials.data<float>() : nullptr));
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

// A (B, NH) grid of matrices in one buffer: matrix (b, h) starts at element
// first + b * b_stride + h * h_stride, its rows ld apart, stored transposed
// when trans. q, k and v are such grids inside qkv (B, T, 3C): rows 3C
// apart, heads HS apart; so is the output (B, T, C), rows C apart.
struct HeadGrid {
  const Tensor& tensor;
  int64_t first, b_stride, h_stride, ld;
  bool trans = false;

  void* at(int64_t offset) const {
    return static_cast<char*>(tensor.data_ptr()) + (first + offset) * int64_t(tensor.element_size());
  }
};

// C(b, h) = op(A(b, h)) op(B(b, h)), (m, k) by (k, n), for every batch row
// and head, reading q, k and v where they lie in qkv and writing O and dq,
// dk, dv where they belong: that saves the eleven head-major copies per
// layer an (B * NH)-batched strided GEMM needs (4.3 ms of a 33.3 ms GPT-2
// step on an H100, docs/performance.md). No single batch stride steps
// through a (batch row, head) grid, so on CUDA one pointer-array batched
// GEMM takes all B * NH products (cuda::matmul_grid; 2 launches where
// strided batches took one GEMM per batch row: 48 for a layer of GPT-2 at
// micro-batch 8). The CPU, and CUDA when cuBLAS refuses the pointer arrays
// (or SG_GEMM_POINTER_ARRAYS=0), make one strided-batched GEMM per batch row
// or per head (heads batched HS apart, or batch rows batched), whichever is
// fewer.
void gemm_each_head(const HeadGrid& c, const HeadGrid& a, const HeadGrid& b, int64_t m, int64_t n, int64_t k,
                    const AttentionDims& s, DType compute) {
  GemmShape g;
  g.m = m, g.n = n, g.k = k, g.trans_a = a.trans, g.trans_b = b.trans, g.lda = a.ld, g.ldb = b.ld, g.ldc = c.ld;
  const Device device = c.tensor.device();
  if (device.is_cuda()) {
    [[maybe_unused]] Tensor pointers = Tensor::empty({3 * s.B * s.NH}, TensorOptions().dtype(DType::i64).device(device));
    bool done = false;
    SG_ON_CUDA(done = cuda::matmul_grid({c.at(0), c.b_stride, c.h_stride}, {a.at(0), a.b_stride, a.h_stride},
                                        {b.at(0), b.b_stride, b.h_stride}, s.B, s.NH, g, compute,
                                        static_cast<void**>(pointers.data_ptr()), cuda_stream(device)));
    if (done) return;
  }
  const bool by_batch_row = s.B <= s.NH;
  g.batch = by_batch_row ? s.NH : s.B;
  g.stride_a = by_batch_row ? a.h_stride : a.b_stride;
  g.stride_b = by_batch_row ? b.h_stride : b.b_stride;
  g.stride_c = by_batch_row ? c.h_stride : c.b_stride;
  for (int64_t outer = 0; outer < (by_batch_row ? s.B : s.NH); ++outer) {
    auto offset = [&](const HeadGrid& x) { return outer * (by_batch_row ? x.b_stride : x.h_stride); };
    void* out = c.at(offset(c));
    const void *left = a.at(offset(a)), *right = b.at(offset(b));
    if (device.is_cpu()) {
      SG_ON_CPU(compute, cpu::matmul_forward(static_cast<T*>(out), static_cast<const T*>(left),
                                             static_cast<const T*>(right), g));
    } else {
      SG_ON_CUDA(cuda::matmul_forward(out, left, right, g, compute, cuda_stream(device)));
    }
  }
}

}  // namespace

AttentionOutput gemm_attention(const Tensor& qkv, int64_t n_head) {
  check_inputs("gemm_attention", {&qkv});
  AttentionDims s = attention_dims("gemm_attention", qkv, n_head);
  DType compute = compute_dtype("gemm_attention", qkv, CudaTypes::kNative16);
  Tensor in = prepare(qkv, compute);
  const int64_t HS = s.C / s.NH, T = s.T, C = s.C;
  const double scale = 1.0 / std::sqrt(double(HS));
  const TensorOptions options = TensorOptions().dtype(compute).device(qkv.device());
  const HeadGrid q{in, 0, T * 3 * C, HS, 3 * C}, v{in, 2 * C, T * 3 * C, HS, 3 * C};
  const HeadGrid k_t{in, C, T * 3 * C, HS, 3 * C, true};
  Tensor scores = Tensor::empty({s.B, s.NH, T, T}, options);
  gemm_each_head({scores, 0, s.NH * T * T, T * T, T}, q, k_t, T, T, HS, s, compute);  // S = Q K^T
  AttentionOutput result;
  result.att = causal_softmax(scores, scale);  // (B, NH, T, T)
  scores = Tensor();
  Tensor out = Tensor::empty({s.B, T, C}, options);
  gemm_each_head({out, 0, T * C, HS, C}, {result.att, 0, s.NH * T * T, T * T, T}, v, T, HS, T, s, compute);  // O = P V
  result.out = out.to(qkv.dtype());
  return result;
}

Tensor gemm_attention_backward(const Tensor& dout, const Tensor& qkv, const Tensor& att, int64_t n_head) {
  check_inputs("gemm_attention_backward", {&dout, &qkv, &att});
  AttentionDims s = attention_backward_dims("gemm_attention_backward", dout, qkv, att, n_head);
  DType compute = compute_dtype("gemm_attention_backward", qkv, CudaTypes::kNative16);
  const int64_t HS = s.C / s.NH, T = s.T, C = s.C;
  const double scale = 1.0 / std::sqrt(double(HS));
  const TensorOptions options = TensorOptions().dtype(compute).device(qkv.device());
  Tensor in = prepare(qkv, compute), p = prepare(att, compute), d_o = prepare(dout, compute);
  Tensor dqkv = Tensor::empty(qkv.shape(), options);  // every element written: dq, dk and dv each cover a third
  const int64_t row3 = T * 3 * C, square = T * T;
  const HeadGrid q{in, 0, row3, HS, 3 * C}, k{in, C, row3, HS, 3 * C}, v_t{in, 2 * C, row3, HS, 3 * C, true};
  const HeadGrid d_o_heads{d_o, 0, T * C, HS, C}, p_t{p, 0, s.NH * square, square, T, true};
  // O = P V:  dV = P^T dO, dP = dO V^T;  P = softmax(scale S):  dS = scale P (dP - rowsum(dP P));
  // S = Q K^T:  dQ = dS K, dK = dS^T Q.
  gemm_each_head({dqkv, 2 * C, row3, HS, 3 * C}, p_t, d_o_heads, T, HS, T, s, compute);
  Tensor dp = Tensor::empty({s.B, s.NH, T, T}, options);
  gemm_each_head({dp, 0, s.NH * square, square, T}, d_o_heads, v_t, T, T, HS, s, compute);
  Tensor ds = causal_softmax_backward(p, dp, scale);
  dp = Tensor();
  const HeadGrid ds_heads{ds, 0, s.NH * square, square, T}, ds_t{ds, 0, s.NH * square, square, T, true};
  gemm_each_head({dqkv, 0, row3, HS, 3 * C}, ds_heads, k, T, HS, T, s, compute);
  gemm_each_head({dqkv, C, row3, HS, 3 * C}, ds_t, q, T, HS, T, s, compute);
  return dqkv.to(qkv.dtype());
}

}  // namespace sg
