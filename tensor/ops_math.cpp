// Elementwise arithmetic, matmul, bias, reductions and AdamW: argument checks
// and dispatch to kernels/cpu or kernels/cuda. See tensor/ops.h.
#include <algorithm>
#include <type_traits>

#include "kernels/cpu/adamw.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/reduce.h"
#include "kernels/cuda/sum_output.h"
#include "tensor/ops.h"
#include "tensor/ops_common.h"

namespace sg {
using namespace ops_detail;

namespace {

// The shared path of add/mul/scale: same layout, computed on the local
// elements (so equal shards work). `cuda_fn(out, x, y, n)` is the CUDA call.
template <typename CpuFn, typename CudaFn>
Tensor elementwise(std::string_view op, const Tensor& a, const Tensor* b, CpuFn cpu_fn, CudaFn cuda_fn) {
  check_inputs(op, {&a, b ? b : &a});
  check_float(op, a);
  if (b) {
    check_same_dtype(op, a, *b);
    SG_CHECK(a.layout() == b->layout(), op, ": shapes or placements differ: ", a.str(), " vs ", b->str());
  }
  DType compute = compute_dtype(op, a, CudaTypes::kNative16);
  Tensor x = prepare(a, compute);
  Tensor y = b ? prepare(*b, compute) : x;
  Tensor out = empty_like(x, compute);
  int64_t n = x.layout().local_numel();
  if (x.device().is_cpu()) SG_ON_CPU(compute, cpu_fn(out.data<T>(), x.data<T>(), y.data<T>(), n));
  else cuda_fn(out, x, y, n);
  return out.to(a.dtype());
}

// How a matrix operand is read by the GEMM: in place, possibly as a transpose.
struct MatrixOperand {
  Tensor tensor;       // what the GEMM reads (maybe a contiguous copy)
  bool trans = false;  // stored as the transpose of the logical matrix
  int64_t ld = 0;      // row stride of the stored matrix
  int64_t batch_stride = 0;
};

// x is (batch, rows, cols) after folding; picks the no-copy reading when the
// strides allow, else falls back to a contiguous copy.
MatrixOperand matrix_operand(const Tensor& x) {
  const int64_t nd = x.dim();
  const int64_t rows = x.size(-2), cols = x.size(-1);
  const auto& st = x.strides();
  // Leading (batch) dims must be one uniform stride, as GEMM batching needs.
  bool batch_uniform = true;
  for (int64_t d = 0; d < nd - 3; ++d) {
    batch_uniform &= st[size_t(d)] == st[size_t(d + 1)] * x.size(d + 1);
  }
  int64_t batch_stride = nd > 2 ? st[size_t(nd - 3)] : rows * cols;
  if (batch_uniform && st[size_t(nd - 1)] == 1 && st[size_t(nd - 2)] >= std::max<int64_t>(cols, 1)) {
    return {x, false, st[size_t(nd - 2)], batch_stride};
  }
  if (batch_uniform && st[size_t(nd - 2)] == 1 && st[size_t(nd - 1)] >= std::max<int64_t>(rows, 1)) {
    return {x, true, st[size_t(nd - 1)], batch_stride};
  }
  Tensor copy = x.contiguous();
  return {copy, false, cols, rows * cols};
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) {
  auto cpu_fn = [](auto* out, const auto* x, const auto* y, int64_t n) { cpu::add_forward(out, x, y, n); };
  return elementwise("add", a, &b, cpu_fn, [](Tensor& out, const Tensor& x, const Tensor& y, int64_t n) {
    SG_ON_CUDA(cuda::add_forward(out.data_ptr(), x.data_ptr(), y.data_ptr(), n, x.dtype(), cuda_stream(x.device())));
  });
}

Tensor mul(const Tensor& a, const Tensor& b) {
  auto cpu_fn = [](auto* out, const auto* x, const auto* y, int64_t n) { cpu::mul_forward(out, x, y, n); };
  return elementwise("mul", a, &b, cpu_fn, [](Tensor& out, const Tensor& x, const Tensor& y, int64_t n) {
    SG_ON_CUDA(cuda::mul_forward(out.data_ptr(), x.data_ptr(), y.data_ptr(), n, x.dtype(), cuda_stream(x.device())));
  });
}

Tensor scale(const Tensor& x, double factor) {
  auto cpu_fn = [factor](auto* out, const auto* in, const auto*, int64_t n) {
    using T = std::remove_pointer_t<decltype(out)>;
    cpu::scale_forward(out, in, T(factor), n);
  };
  return elementwise("scale", x, nullptr, cpu_fn, [factor](Tensor& out, const Tensor& in, const Tensor&, int64_t n) {
    SG_ON_CUDA(cuda::scale_forward(out.data_ptr(), in.data_ptr(), float(factor), n, in.dtype(), cuda_stream(in.device())));
  });
}

void scale_(Tensor& y, double factor) {
  check_inputs("scale_", {&y});
  check_float("scale_", y);
  const DType compute = compute_dtype("scale_", y, CudaTypes::kNative16);
  if (compute != y.dtype() || !y.is_contiguous()) {
    y.copy_(scale(y, factor));  // bf16 on the CPU, or a strided view: through a copy
    return;
  }
  const int64_t n = y.layout().local_numel();  // elementwise: reading and writing one buffer is safe
  if (y.device().is_cpu()) SG_ON_CPU(compute, cpu::scale_forward(y.data<T>(), y.data<T>(), T(factor), n));
  else SG_ON_CUDA(cuda::scale_forward(y.data_ptr(), y.data_ptr(), float(factor), n, y.dtype(), cuda_stream(y.device())));
}

// x may have another float dtype than y: a bf16/f16 gradient accumulating
// into f32. On CUDA the kernel reads it as it is (no f32 copy of it), on the
// CPU it goes through a copy in y's dtype. Widening to f32 is exact, so both
// give the bits of axpy_(y, alpha, x.to(f32)).
void axpy_(Tensor& y, double alpha, const Tensor& x) {
  check_inputs("axpy_", {&y, &x});
  SG_CHECK((y.dtype() == DType::f32 || y.dtype() == DType::f64) && is_floating(x.dtype()),
           "axpy_: accumulates a float tensor into an f32 (or f64) buffer, got ", y.str(), " += ", x.str());
  DType compute = compute_dtype("axpy_", y, CudaTypes::kF32Only);
  SG_CHECK(y.layout() == x.layout(), "axpy_: shapes or placements differ: ", y.str(), " vs ", x.str());
  SG_CHECK(y.is_contiguous(), "axpy_: the destination ", y.str(), " must be contiguous (it is updated in place)");
  int64_t n = y.layout().local_numel();
  if (y.device().is_cpu()) {
    Tensor source = x.to(y.dtype()).contiguous();
    SG_ON_CPU(compute, cpu::axpy(y.data<T>(), T(alpha), source.data<T>(), n));
  } else {
    Tensor source = x.contiguous();
    SG_ON_CUDA(
        cuda::axpy(y.data<float>(), float(alpha), source.data_ptr(), source.dtype(), n, cuda_stream(y.device())));
  }
}

namespace {

// matmul, and on CUDA with the bias (n) added in the GEMM's epilogue.
Tensor matmul_impl(const Tensor& a, const Tensor& b, const Tensor* bias) {
  check_inputs("matmul", {&a, &b});
  check_float("matmul", a);
  check_same_dtype("matmul", a, b);
  check_replicated("matmul", a);
  check_replicated("matmul", b);
  SG_CHECK(a.dim() >= 2 && b.dim() >= 2, "matmul: both operands need at least 2 dimensions, got ", a.str(), " @ ",
           b.str());
  SG_CHECK(a.size(-1) == b.size(-2), "matmul: inner dimensions differ: ", a.str(), " @ ", b.str());
  DType compute = compute_dtype("matmul", a, CudaTypes::kNative16);
  Tensor left = a.to(compute), right = b.to(compute);  // views stay views when no conversion is needed

  // (..., M, K) @ (K, N): fold the leading dims into M, one plain GEMM.
  if (right.dim() == 2 && left.dim() > 2) {
    Shape out_shape(a.shape().begin(), a.shape().end() - 1);
    out_shape.push_back(b.size(-1));
    return matmul_impl(left.reshape({-1, a.size(-1)}), right, bias).view(out_shape).to(a.dtype());
  }
  SG_CHECK(left.dim() == right.dim(), "matmul: batched operands need the same number of dimensions: ", a.str(),
           " @ ", b.str());
  Shape out_shape(a.shape().begin(), a.shape().end() - 2);
  for (int64_t d = 0; d + 2 < a.dim(); ++d) {
    SG_CHECK(a.size(d) == b.size(d), "matmul: batch dimensions differ: ", a.str(), " @ ", b.str());
  }
  out_shape.push_back(a.size(-2));
  out_shape.push_back(b.size(-1));

  MatrixOperand A = matrix_operand(left), B = matrix_operand(right);
  GemmShape shape;
  shape.m = a.size(-2), shape.n = b.size(-1), shape.k = a.size(-1);
  shape.trans_a = A.trans, shape.trans_b = B.trans;
  shape.lda = A.ld, shape.ldb = B.ld, shape.ldc = shape.n;
  shape.batch = shape_numel(out_shape) / std::max<int64_t>(shape.m * shape.n, 1);
  if (shape.m * shape.n == 0) shape.batch = 0;
  shape.stride_a = A.batch_stride, shape.stride_b = B.batch_stride, shape.stride_c = shape.m * shape.n;
  Tensor out = Tensor::empty(out_shape, TensorOptions().dtype(compute).device(a.device()));
  if (shape.batch == 0) return out.to(a.dtype());
  if (a.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::matmul_forward(out.data<T>(), A.tensor.data<T>(), B.tensor.data<T>(), shape));
    if (bias) add_bias_(out, bias->to(compute));  // in place into the fresh output
  } else if (bias) {
    Tensor b16 = prepare(*bias, compute);
    SG_ON_CUDA(cuda::matmul_bias_forward(out.data_ptr(), A.tensor.data_ptr(), B.tensor.data_ptr(), b16.data_ptr(), shape,
                                         compute, cuda_stream(a.device())));
  } else {
    SG_ON_CUDA(cuda::matmul_forward(out.data_ptr(), A.tensor.data_ptr(), B.tensor.data_ptr(), shape, compute,
                                    cuda_stream(a.device())));
  }
  return out.to(a.dtype());
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) { return matmul_impl(a, b, nullptr); }

Tensor matmul_bias(const Tensor& a, const Tensor& b, const Tensor& bias) {
  check_inputs("matmul_bias", {&a, &b, &bias});
  check_same_dtype("matmul_bias", a, bias);
  SG_CHECK(bias.dim() == 1 && b.dim() >= 1 && bias.size(0) == b.size(-1), "matmul_bias: bias ", bias.str(),
           " must be (n) with n = the last dimension of ", b.str());
  return matmul_impl(a, b, &bias);
}

namespace {

// a (.., K) @ b (K, N) with GELU in the GEMM's epilogue (CUDA, cuBLASLt):
// forward (bias given), out = gelu(a b + bias) and aux = a b + bias, both
// fresh; backward, out = (a b) * gelu'(aux). False when the kernels
// decline (the switch, no algorithm): the caller takes the separate ops.
bool gelu_epilogue_gemm(Tensor& out, Tensor& aux, const Tensor& a, const Tensor& b, const Tensor* bias) {
  if (!a.device().is_cuda() || b.dim() != 2 || a.dim() < 2 || a.size(-1) != b.size(0)) return false;
  const DType compute = compute_dtype("matmul (GELU epilogue)", a, CudaTypes::kNative16);
  const int64_t K = b.size(0), N = b.size(1);
  const Tensor left = a.to(compute).reshape({-1, K});
  const MatrixOperand A = matrix_operand(left), B = matrix_operand(b.to(compute));
  GemmShape shape;
  shape.m = left.size(0), shape.n = N, shape.k = K;
  shape.trans_a = A.trans, shape.trans_b = B.trans;
  shape.lda = A.ld, shape.ldb = B.ld, shape.ldc = N;
  shape.stride_a = A.batch_stride, shape.stride_b = B.batch_stride, shape.stride_c = shape.m * N;
  Shape out_shape(a.shape().begin(), a.shape().end() - 1);
  out_shape.push_back(N);
  const TensorOptions options = TensorOptions().dtype(compute).device(a.device());
  Tensor result = Tensor::empty(out_shape, options);
  bool done = false;
  if (bias != nullptr) {
    Tensor h = Tensor::empty(out_shape, options), b16 = prepare(*bias, compute);
    SG_ON_CUDA(done = cuda::matmul_bias_gelu_forward(result.data_ptr(), h.data_ptr(), A.tensor.data_ptr(),
                                                     B.tensor.data_ptr(), b16.data_ptr(), shape, compute,
                                                     cuda_stream(a.device())));
    if (done) aux = h.to(a.dtype());
  } else {
    const Tensor h = prepare(aux, compute);
    SG_ON_CUDA(done = cuda::matmul_gelu_backward(result.data_ptr(), A.tensor.data_ptr(), B.tensor.data_ptr(),
                                                 h.data_ptr(), shape, compute, cuda_stream(a.device())));
  }
  if (done) out = result.to(a.dtype());
  return done;
}

}  // namespace

LinearGeluOutput matmul_bias_gelu(const Tensor& a, const Tensor& b, const Tensor& bias) {
  check_inputs("matmul_bias_gelu", {&a, &b, &bias});
  check_float("matmul_bias_gelu", a);
  check_same_dtype("matmul_bias_gelu", a, b);
  check_same_dtype("matmul_bias_gelu", a, bias);
  check_replicated("matmul_bias_gelu", a);
  check_replicated("matmul_bias_gelu", b);
  SG_CHECK(b.dim() == 2 && bias.dim() == 1 && bias.size(0) == b.size(1), "matmul_bias_gelu: needs b (K, N) and bias ",
           "(N), got ", b.str(), " and ", bias.str());
  LinearGeluOutput out;
  if (gelu_epilogue_gemm(out.y, out.h, a, b, &bias)) return out;
  if (a.device().is_cuda()) {
    out.h = matmul_bias(a, b, bias);
    out.y = gelu(out.h);
  } else {
    out.h = matmul(a, b);
    out.y = bias_gelu_(out.h, bias);  // h becomes a b + bias
  }
  return out;
}

Tensor matmul_gelu_backward(const Tensor& dy, const Tensor& b, const Tensor& h) {
  check_inputs("matmul_gelu_backward", {&dy, &b, &h});
  check_same_dtype("matmul_gelu_backward", dy, b);
  check_same_dtype("matmul_gelu_backward", dy, h);
  check_replicated("matmul_gelu_backward", dy);
  check_replicated("matmul_gelu_backward", b);
  SG_CHECK(b.dim() == 2 && dy.dim() >= 2 && dy.size(-1) == b.size(0) && h.dim() == dy.dim() &&
               h.size(-1) == b.size(1) &&
               h.numel() / std::max<int64_t>(h.size(-1), 1) == dy.numel() / std::max<int64_t>(dy.size(-1), 1),
           "matmul_gelu_backward: needs dy (.., K), b (K, N) and h (.., N), got ", dy.str(), ", ", b.str(), ", ",
           h.str());
  Tensor dh, aux = h;
  gelu_epilogue_gemm(dh, aux, dy, b, nullptr);
  return dh;
}

namespace {

// matmul_into, and with row_sums the sums of a's rows written there by the
// same GEMM (CUDA only), or false with nothing done where it cannot.
bool matmul_into_impl(const Destination& out, const Tensor& a, const Tensor& b, const Destination* row_sums) {
  check_inputs("matmul_into", {&a, &b});
  check_float("matmul_into", a);
  check_same_dtype("matmul_into", a, b);
  check_replicated("matmul_into", a);
  check_replicated("matmul_into", b);
  SG_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0), "matmul_into: needs (M, K) @ (K, N), got ",
           a.str(), " @ ", b.str());
  check_destination("matmul_into", out, {a.size(0), b.size(1)}, a);
  if (row_sums != nullptr) {
    check_destination("matmul_into_with_row_sums", *row_sums, {a.size(0)}, a);
    // The GEMM writes the sums in its output's dtype, and only writes them.
    const Tensor& sums = row_sums->tensor;
    if (!a.device().is_cuda() || row_sums->add || sums.dtype() != out.tensor.dtype() || !sums.is_contiguous() ||
        a.size(1) == 0) {
      return false;
    }
  }
  const DType compute = compute_dtype("matmul_into", a, CudaTypes::kNative16);
  MatrixOperand A = matrix_operand(a.to(compute)), B = matrix_operand(b.to(compute));
  GemmShape shape;
  shape.m = a.size(0), shape.n = b.size(1), shape.k = a.size(1);
  shape.trans_a = A.trans, shape.trans_b = B.trans;
  shape.lda = A.ld, shape.ldb = B.ld, shape.ldc = shape.n;
  shape.stride_a = A.batch_stride, shape.stride_b = B.batch_stride, shape.stride_c = shape.m * shape.n;
  shape.beta = out.add ? 1.0f : 0.0f;
  Tensor c = out.tensor;  // a handle: writes land in the destination
  if (row_sums != nullptr) {
    Tensor sums = row_sums->tensor;
    bool done = false;
    SG_ON_CUDA(done = cuda::matmul_forward_with_row_sums(c.data_ptr(), c.dtype(), sums.data_ptr(), A.tensor.data_ptr(),
                                                         B.tensor.data_ptr(), shape, compute, cuda_stream(a.device())));
    return done;
  }
  if (shape.m * shape.n == 0) return true;
  if (shape.k == 0) {  // an empty sum: the GEMM libraries may not be asked for it
    if (!out.add) c.fill_(0.0);
    return true;
  }
  if (a.device().is_cpu()) {
    SG_ON_CPU(compute, cpu::matmul_forward(c.data<T>(), A.tensor.data<T>(), B.tensor.data<T>(), shape));
  } else {
    SG_ON_CUDA(cuda::matmul_forward(c.data_ptr(), c.dtype(), A.tensor.data_ptr(), B.tensor.data_ptr(), shape, compute,
                                    cuda_stream(a.device())));
  }
  return true;
}

}  // namespace

void matmul_into(const Destination& out, const Tensor& a, const Tensor& b) { matmul_into_impl(out, a, b, nullptr); }

bool matmul_into_with_row_sums(const Destination& out, const Tensor& a, const Tensor& b, const Destination& row_sums) {
  return matmul_into_impl(out, a, b, &row_sums);
}

Tensor add_bias(const Tensor& x, const Tensor& bias) {
  check_inputs("add_bias", {&x, &bias});
  check_float("add_bias", x);
  check_same_dtype("add_bias", x, bias);
  check_replicated("add_bias", x);
  SG_CHECK(bias.dim() == 1 && x.dim() >= 1 && x.size(-1) == bias.size(0), "add_bias: bias ", bias.str(),
           " does not match the last dimension of ", x.str());
  DType compute = compute_dtype("add_bias", x, CudaTypes::kNative16);
  Tensor out = x.to(compute).clone();  // one fresh contiguous copy, then += bias in place
  Tensor b = prepare(bias, compute);
  int64_t cols = bias.size(0), rows = cols ? x.numel() / cols : 0;
  if (x.device().is_cpu()) SG_ON_CPU(compute, cpu::bias_add_forward(out.data<T>(), b.data<T>(), rows, cols));
  else SG_ON_CUDA(cuda::bias_add_forward(out.data_ptr(), b.data_ptr(), rows, cols, out.dtype(), cuda_stream(x.device())));
  return out.to(x.dtype());
}

void add_bias_(Tensor& x, const Tensor& bias) {
  check_inputs("add_bias_", {&x, &bias});
  check_same_dtype("add_bias_", x, bias);
  SG_CHECK(bias.dim() == 1 && x.dim() >= 1 && x.size(-1) == bias.size(0), "add_bias_: bias ", bias.str(),
           " does not match the last dimension of ", x.str());
  const DType compute = compute_dtype("add_bias_", x, CudaTypes::kNative16);
  if (compute != x.dtype() || !x.is_contiguous() || x.is_sharded()) {
    x = add_bias(x, bias);  // (bf16 on the CPU computes in f32: no saving to make)
    return;
  }
  Tensor b = prepare(bias, compute);
  int64_t cols = bias.size(0), rows = cols ? x.numel() / cols : 0;
  if (x.device().is_cpu()) SG_ON_CPU(compute, cpu::bias_add_forward(x.data<T>(), b.data<T>(), rows, cols));
  else SG_ON_CUDA(cuda::bias_add_forward(x.data_ptr(), b.data_ptr(), rows, cols, x.dtype(), cuda_stream(x.device())));
}

namespace {

// dbias = the column sums of dout, into `out` (written or added to).
void bias_sums(const Destination& out, const Tensor& dout) {
  check_inputs("bias_backward", {&dout});
  check_float("bias_backward", dout);
  check_replicated("bias_backward", dout);
  SG_CHECK(dout.dim() >= 1, "bias_backward: needs at least one dimension, got ", dout.str());
  const DType compute = compute_dtype("bias_backward", dout, CudaTypes::kNative16);
  Tensor d = prepare(dout, compute);
  const int64_t cols = dout.size(-1), rows = cols ? dout.numel() / cols : 0;
  if (dout.device().is_cpu()) {
    // The kernel adds into dbias: a destination written is summed into
    // directly (cleared first); one added to gets the whole sum after, as the
    // CUDA kernel adds it. (The destination is in the sums' dtype.)
    Tensor target = out.tensor;
    Tensor sums = out.add ? Tensor::zeros({cols}, TensorOptions().dtype(stats_dtype(compute))) : target;
    if (!out.add) target.fill_(0.0);
    SG_ON_CPU(compute, cpu::bias_add_backward(sums.data<T>(), d.data<T>(), rows, cols));
    if (out.add) axpy_(target, 1.0, sums);
    return;
  }
  // Summed in f32 and written (or added) in the destination's dtype by the last kernel: no fill, no cast.
  Tensor partials = Tensor::empty({cuda::kColumnSumChunks, cols}, TensorOptions().device(dout.device()));
  SG_ON_CUDA(cuda::bias_add_backward({out.tensor.data_ptr(), out.tensor.dtype(), out.add}, partials.data<float>(),
                                     d.data_ptr(), rows, cols, compute, cuda_stream(d.device())));
}

}  // namespace

// A fresh dbias in dout's dtype (the column sums' only rounding).
Tensor bias_backward(const Tensor& dout) {
  SG_CHECK(dout.defined() && dout.dim() >= 1, "bias_backward: needs a tensor of at least one dimension, got ",
           dout.str());
  const DType dtype = dout.device().is_cpu() ? stats_dtype(dout.dtype()) : dout.dtype();
  Tensor dbias = Tensor::empty({dout.size(-1)}, TensorOptions().dtype(dtype).device(dout.device()));
  bias_sums({dbias, false}, dout);
  return dbias.to(dout.dtype());
}

void bias_backward_into(const Destination& dbias, const Tensor& dout) {
  SG_CHECK(dout.defined() && dout.dim() >= 1, "bias_backward_into: needs a tensor of at least one dimension, got ",
           dout.str());
  check_destination("bias_backward_into", dbias, {dout.size(-1)}, dout);
  bias_sums(dbias, dout);
}

namespace {

// Scratch for the first stage of a CUDA reduction (kernels/cuda/reduce.h).
#ifdef SG_CUDA
constexpr int64_t kCudaReducePartials = cuda::kReducePartials;
int64_t cuda_total_partials(int64_t count) { return cuda::reduce_total_partials(count); }
#else
int64_t cuda_total_partials(int64_t) { return 1; }
constexpr int64_t kCudaReducePartials = 1;  // never allocated: no CUDA tensors in this build
#endif

// A whole-tensor reduction to a 0-d tensor: f64 for f64 input, else f32.
template <typename CpuFn, typename CudaFn>
Tensor reduce(std::string_view op, const Tensor& x, CpuFn cpu_fn, CudaFn cuda_fn) {
  check_inputs(op, {&x});
  check_float(op, x);
  check_replicated(op, x);
  DType compute = compute_dtype(op, x, CudaTypes::kF32Only);
  Tensor in = prepare(x, compute);
  Tensor out = Tensor::empty({}, TensorOptions().dtype(compute).device(x.device()));
  if (x.device().is_cpu()) {
    SG_ON_CPU(compute, cpu_fn(out.data<T>(), in.data<T>(), in.numel()));
  } else {
    // The first stage's per-block results (kernels/cuda/reduce.cu).
    Tensor partials = Tensor::empty({kCudaReducePartials}, TensorOptions().dtype(DType::f64).device(x.device()));
    cuda_fn(out.data<float>(), partials.data<double>(), in.data<float>(), in.numel(), x.device());
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) {
  return reduce("sum", x, [](auto* out, const auto* in, int64_t n) { cpu::sum_forward(out, in, n); },
                [](float* out, double* partials, const float* in, int64_t n, Device device) {
    SG_ON_CUDA(cuda::sum_forward(out, partials, in, n, cuda_stream(device)));
  });
}

Tensor mean(const Tensor& x) {
  SG_CHECK(x.numel() > 0, "mean of an empty tensor ", x.str(), " is undefined");
  return scale(sum(x), 1.0 / double(x.numel()));
}

Tensor max(const Tensor& x) {
  return reduce("max", x, [](auto* out, const auto* in, int64_t n) { cpu::max_forward(out, in, n); },
                [](float* out, double* partials, const float* in, int64_t n, Device device) {
    SG_ON_CUDA(cuda::max_forward(out, partials, in, n, cuda_stream(device)));
  });
}

Tensor squared_norm(const Tensor& x) {
  return reduce("squared_norm", x, [](auto* out, const auto* in, int64_t n) { cpu::squared_norm_forward(out, in, n); },
                [](float* out, double* partials, const float* in, int64_t n, Device device) {
    SG_ON_CUDA(cuda::squared_norm_forward(out, partials, in, n, cuda_stream(device)));
  });
}

Tensor squared_norm_total(const std::vector<Tensor>& xs) {
  SG_CHECK(!xs.empty(), "squared_norm_total: no tensors (the sum of none would not say which device it is on)");
  std::vector<Tensor> in;
  for (const Tensor& x : xs) {
    check_inputs("squared_norm_total", {&xs.front(), &x});
    check_float("squared_norm_total", x);
    check_replicated("squared_norm_total", x);
    SG_CHECK(x.dtype() == xs.front().dtype(), "squared_norm_total: dtypes differ: ", xs.front().str(), " vs ", x.str());
    in.push_back(prepare(x, compute_dtype("squared_norm_total", x, CudaTypes::kF32Only)));
  }
  const DType compute = in.front().dtype();
  const Device device = xs.front().device();
  Tensor out = Tensor::empty({}, TensorOptions().dtype(compute).device(device));
  if (device.is_cpu()) {
    double total = 0.0;
    for (const Tensor& x : in) SG_ON_CPU(compute, total += cpu::squared_sum(x.data<T>(), x.numel()));
    SG_ON_CPU(compute, *out.data<T>() = T(total));
    return out;
  }
  std::vector<const float*> pointers;
  std::vector<int64_t> sizes;
  for (const Tensor& x : in) pointers.push_back(x.data<float>()), sizes.push_back(x.numel());
  [[maybe_unused]] Tensor partials =
      Tensor::empty({cuda_total_partials(int64_t(in.size()))}, TensorOptions().dtype(DType::f64).device(device));
  SG_ON_CUDA(cuda::squared_norm_total(out.data<float>(), partials.data<double>(), pointers.data(), sizes.data(),
                                      int(in.size()), cuda_stream(device)));
  return out;
}

Tensor clip_grad_factor(const Tensor& squares, double max_norm, double loss_scale, bool skip_on_overflow) {
  const bool f32_or_cpu_f64 =
      squares.dtype() == DType::f32 || (squares.device().is_cpu() && squares.dtype() == DType::f64);
  SG_CHECK(squares.numel() == 1 && f32_or_cpu_f64, "clip_grad_factor: expected one sum of squares, f32 (f64 on the "
           "CPU), as squared_norm_total gives; got ", squares.str());
  Tensor factor = Tensor::empty({}, TensorOptions().device(squares.device()));
  if (squares.device().is_cpu()) {
    const double s = squares.item();
    *factor.data<float>() = float(skip_on_overflow ? clip_grad_factor_or_skip(s, loss_scale, max_norm)
                                                   : clip_grad_factor(s, loss_scale, max_norm));
    return factor;
  }
  SG_ON_CUDA(cuda::clip_grad_factor(factor.data<float>(), squares.data<float>(), loss_scale, max_norm,
                                    skip_on_overflow, cuda_stream(squares.device())));
  return factor;
}

void adamw_update_(Tensor& param, Tensor& m, Tensor& v, const Tensor& grad, const AdamWParams& hp, Tensor* copy) {
  check_inputs("adamw_update_", {&param, &m, &v, &grad});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &m, &v, &grad}) {
    SG_CHECK(t->dtype() == DType::f32, "adamw_update_: parameters, moments and gradients are f32 (master "
             "weights), got ", t->str());
    SG_CHECK(t->layout() == param.layout(), "adamw_update_: layouts differ: ", t->str(), " vs ", param.str());
  }
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &m, &v}) {
    SG_CHECK(t->is_contiguous(), "adamw_update_: ", t->str(), " is updated in place and must be contiguous");
  }
  SG_CHECK(hp.step >= 1, "adamw_update_: step counts from 1, got ", hp.step);
  int64_t n = param.layout().local_numel();
  if (copy) {
    SG_CHECK((copy->dtype() == DType::bf16 || copy->dtype() == DType::f16) && copy->device() == param.device() &&
                 copy->is_contiguous() && copy->layout().local_numel() == n,
             "adamw_update_: the 16-bit copy ", copy->str(), " must be a contiguous bf16/f16 buffer of ", n,
             " elements on ", param.device().str());
  }
  void* copy_data = copy ? copy->data_ptr() : nullptr;
  const DType copy_dtype = copy ? copy->dtype() : DType::bf16;
  Tensor g = grad.contiguous();
  if (param.device().is_cpu()) {
    cpu::adamw_update(param.data<float>(), m.data<float>(), v.data<float>(), g.data<float>(), n, hp, copy_data,
                      copy_dtype);
  } else {
    SG_ON_CUDA(cuda::adamw_update(param.data<float>(), m.data<float>(), v.data<float>(), g.data<float>(), n, hp,
                                  cuda_stream(param.device()), copy_data, copy_dtype));
  }
}

}  // namespace sg
