// The gradient ops that write into a destination (tensor/ops.h, Destination):
// a parameter's gradient summed in f32 straight into its f32 buffer,
// written or added to, against the CPU twin doing the same. The CPU sums
// 16-bit inputs in f32 too, so both hold the same unrounded f32 sums (a
// 16-bit result would differ by up to 2^-8 relative). Each destination is
// one element into its storage, as a ZeRO flat buffer places a parameter,
// and starts as NaN: a write must never read it.
#include <cmath>
#include <cstdlib>

#include "kernels/cuda/matmul_lt.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using namespace test;  // gpu, random_tensor, same_as_cpu, kF32, kBf16
using CudaDestinations = CudaTest;

// A NaN-filled (n) destination view one element into a buffer, on the CPU and the GPU.
struct Buffers {
  Tensor cpu, cuda;
  explicit Buffers(const Shape& shape) {
    const int64_t n = shape_numel(shape);
    const Tensor flat = Tensor::full({n + 1}, std::nan(""));
    cpu = flat.slice(0, 1, n + 1).view(shape);
    cuda = gpu(flat).slice(0, 1, n + 1).view(shape);
  }
};

// dy^T x (dy (N, M), x (N, K), in dtype) written into an (M, K) f32
// destination, then added to it, on the CPU and the GPU: the same sums, and
// twice the product after the add.
void expect_matmul_into_matches_cpu(const Tensor& dy, const Tensor& x, DType dtype) {
  const Tensor a = dy.to(dtype).transpose(0, 1), b = x.to(dtype);  // A read transposed
  const Tensor ga = gpu(dy.to(dtype)).transpose(0, 1), gb = gpu(x.to(dtype));
  Buffers out({a.size(0), b.size(1)});
  matmul_into({out.cpu, /*add=*/false}, a, b);
  matmul_into({out.cuda, false}, ga, gb);
  EXPECT_TRUE(same_as_cpu(out.cuda, out.cpu, kF32, 1e-5));
  matmul_into({out.cpu, /*add=*/true}, a, b);
  matmul_into({out.cuda, true}, ga, gb);
  EXPECT_TRUE(same_as_cpu(out.cuda, out.cpu, kF32, 1e-5));
  EXPECT_TRUE(same_as_cpu(out.cuda, scale(matmul(a.to(DType::f32), b.to(DType::f32)), 2.0), kF32, 1e-5))
      << "the product added once";
}

TEST_F(CudaDestinations, MatmulIntoF32BufferMatchesCpu) {
  Tensor dy = random_tensor({45, 24}, "dy"), x = random_tensor({45, 40}, "x");
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dtype));
    expect_matmul_into_matches_cpu(dy, x, dtype);  // (24, 45) @ (45, 40)
  }
  Tensor bf16_out = gpu(Tensor::zeros({24, 40})).to(DType::bf16);
  EXPECT_THROW(matmul_into({bf16_out, false}, gpu(dy.to(DType::bf16)).transpose(0, 1), gpu(x.to(DType::bf16))),
               Error);  // sums go into f32
}

// SG_GEMM_AUTOTUNE=N times the heuristic's first N algorithms on a new
// shape's first call (kernels/cuda/matmul_lt.cu). Those trials run on the
// call's own operands: written into the output when the call writes it,
// but never into a buffer the call adds to, whose sum must gain the
// product once. Shapes no other test here uses, so their plans are new.
TEST_F(CudaDestinations, AutotunedGemmsWriteOnceAndAddOnce) {
  setenv("SG_GEMM_AUTOTUNE", "3", 1);
  const int tuned_before = cuda::lt_plans_autotuned();
  const Tensor dy = random_tensor({37, 20}, "dy"), x = random_tensor({37, 28}, "x"), w = random_tensor({28, 12}, "w");
  const Tensor bias = random_tensor({12}, "bias");
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    expect_matmul_into_matches_cpu(dy, x, dtype);  // (20, 37) @ (37, 28): the adding GEMM's trials add nothing
    const Tensor b = x.to(dtype), gb = gpu(b);
    const Tensor xw = matmul(b, w.to(dtype)), gxw = matmul(gb, gpu(w.to(dtype)));
    EXPECT_TRUE(same_as_cpu(gxw, xw, dtype == DType::f32 ? kF32 : kBf16, 1e-5));
    const Tensor xwb = matmul_bias(b, w.to(dtype), bias.to(dtype));
    EXPECT_TRUE(same_as_cpu(matmul_bias(gb, gpu(w.to(dtype)), gpu(bias.to(dtype))), xwb,
                            dtype == DType::f32 ? kF32 : kBf16, 1e-5));
  }
  // Eight new plans (two dtypes x written, added, product, with bias); a plan is timed only where the
  // heuristic offers two answers or more (the emulator offers three; a GPU may offer fewer for exact f32).
  EXPECT_GT(cuda::lt_plans_autotuned(), tuned_before) << "no plan was timed";
  setenv("SG_GEMM_AUTOTUNE", "many", 1);
  EXPECT_THROW(matmul(gpu(random_tensor({3, 5}, "p")), gpu(random_tensor({5, 7}, "q"))), Error);
  unsetenv("SG_GEMM_AUTOTUNE");
}

// The setting is read at each call (bench_gpt --variants times both sides in
// one process): a shape first planned without it gets a timed plan of its
// own once it is on, and the untimed one again once it is off.
TEST_F(CudaDestinations, AutotuneIsReadAtEachCall) {
  unsetenv("SG_GEMM_AUTOTUNE");
  const Tensor a = gpu(random_tensor({41, 19}, "a")), b = gpu(random_tensor({19, 23}, "b"));
  const Tensor untimed = matmul(a, b);
  const int tuned_before = cuda::lt_plans_autotuned();
  setenv("SG_GEMM_AUTOTUNE", "3", 1);
  const Tensor timed = matmul(a, b);
  EXPECT_EQ(cuda::lt_plans_autotuned(), tuned_before + 1) << "the shape's untimed plan was taken";
  unsetenv("SG_GEMM_AUTOTUNE");
  EXPECT_TRUE(same_as_cpu(matmul(a, b), untimed.to(Device::cpu()), 0.0, 0.0)) << "the untimed plan again";
  EXPECT_EQ(cuda::lt_plans_autotuned(), tuned_before + 1);
  EXPECT_TRUE(same_as_cpu(timed, untimed.to(Device::cpu()), kF32, 1e-5));
}

TEST_F(CudaDestinations, BiasGradientIntoF32BufferMatchesCpu) {
  const Tensor dy = random_tensor({70, 33}, "dy");
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor d = dy.to(dtype);
    Buffers out({33});
    bias_backward_into({out.cpu, false}, d);
    bias_backward_into({out.cuda, false}, gpu(d));
    EXPECT_TRUE(same_as_cpu(out.cuda, out.cpu, kF32, 1e-5));
    bias_backward_into({out.cpu, true}, d);
    bias_backward_into({out.cuda, true}, gpu(d));
    EXPECT_TRUE(same_as_cpu(out.cuda, out.cpu, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(out.cuda, scale(bias_backward(d.to(DType::f32)), 2.0), kF32, 1e-5));
    // linear_gelu's bias: dh's column sums into the destination, none returned.
    const Tensor h = random_tensor({70, 33}, "h").to(dtype);
    Buffers gelu_out({33});
    BiasGeluGrads cpu_g = bias_gelu_backward(h, d, {gelu_out.cpu, false});
    BiasGeluGrads gpu_g = bias_gelu_backward(gpu(h), gpu(d), {gelu_out.cuda, false});
    EXPECT_FALSE(gpu_g.dbias.defined());
    const bool f32 = dtype == DType::f32;  // bf16: each side rounds dh to bf16 by its own GELU
    EXPECT_TRUE(same_as_cpu(gelu_out.cuda, gelu_out.cpu, f32 ? kF32 : 2e-2, f32 ? 1e-5 : 5e-2));
    EXPECT_TRUE(same_as_cpu(gelu_out.cuda, bias_backward(gpu_g.dh), f32 ? kF32 : kBf16, 1e-5))
        << "the fresh sums, rounded to dh's dtype";
  }
  EXPECT_THROW(bias_backward_into({gpu(Tensor::zeros({32})), false}, gpu(dy)), Error);  // 32 columns, not 33
}

// A linear layer's dW = dy^T x and db = the column sums of dy from one GEMM
// (cuBLASLt's BGRADB epilogue, SG_GEMM_BIAS_GRAD_EPILOGUE=1), against the
// CPU's two ops: dW written, then added to, the sums written each time.
// Where it cannot (sums to add to, dy^T not a transposed view, a bias
// buffer not 16-byte aligned, the CPU, the switch off) it does nothing and
// says so. Fresh buffers: aligned, as a ZeRO flat buffer puts GPT-2's.
TEST_F(CudaDestinations, BiasGradientFromTheWeightGradientsGemm) {
  setenv("SG_GEMM_BIAS_GRAD_EPILOGUE", "1", 1);
  const Tensor dy = random_tensor({45, 24}, "dy"), x = random_tensor({45, 40}, "x");
  auto nan_filled = [](const Shape& shape) { return gpu(Tensor::full(shape, std::nan(""))); };
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor d = dy.to(dtype), xs = x.to(dtype), gd = gpu(d), gx = gpu(xs);
    const Tensor want_w = matmul(d.to(DType::f32).transpose(0, 1), xs.to(DType::f32));
    const Tensor want_b = bias_backward(d.to(DType::f32));
    Tensor w = nan_filled({24, 40}), b = nan_filled({24});
    const int64_t before = cuda::lt_epilogue_gemms().row_sums;
    ASSERT_TRUE(matmul_into_with_row_sums({w, false}, gd.transpose(0, 1), gx, {b, false}));
    EXPECT_TRUE(same_as_cpu(w, want_w, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(b, want_b, kF32, 1e-5));
    b.fill_(std::nan(""));
    ASSERT_TRUE(matmul_into_with_row_sums({w, true}, gd.transpose(0, 1), gx, {b, false}));
    EXPECT_TRUE(same_as_cpu(w, scale(want_w, 2.0), kF32, 1e-5)) << "the product added once";
    EXPECT_TRUE(same_as_cpu(b, want_b, kF32, 1e-5)) << "the sums written";
    EXPECT_EQ(cuda::lt_epilogue_gemms().row_sums - before, 2);
    // Declined: nothing written, NaN everywhere still.
    Tensor w2 = nan_filled({24, 40}), b2 = nan_filled({24});
    const Buffers misaligned({24});
    EXPECT_FALSE(matmul_into_with_row_sums({w2, false}, gd.transpose(0, 1), gx, {b2, true}));
    EXPECT_FALSE(matmul_into_with_row_sums({w2, false}, gd.transpose(0, 1).contiguous(), gx, {b2, false}));
    EXPECT_FALSE(matmul_into_with_row_sums({w2, false}, gd.transpose(0, 1), gx, {misaligned.cuda, false}));
    Tensor cpu_w = Tensor::full({24, 40}, std::nan("")), cpu_b = Tensor::full({24}, std::nan(""));
    EXPECT_FALSE(matmul_into_with_row_sums({cpu_w, false}, d.transpose(0, 1), xs, {cpu_b, false}));
    setenv("SG_GEMM_BIAS_GRAD_EPILOGUE", "0", 1);
    EXPECT_FALSE(matmul_into_with_row_sums({w2, false}, gd.transpose(0, 1), gx, {b2, false}));
    setenv("SG_GEMM_BIAS_GRAD_EPILOGUE", "1", 1);
    EXPECT_EQ(cuda::lt_epilogue_gemms().row_sums - before, 2);
    for (const Tensor& t : {w2, b2, misaligned.cuda, cpu_w, cpu_b}) {
      for (float v : t.to_vector<float>()) ASSERT_TRUE(std::isnan(v)) << "a declined call wrote " << t.str();
    }
  }
  unsetenv("SG_GEMM_BIAS_GRAD_EPILOGUE");
}

// LayerNorm's dweight and dbias into destinations, each on its own: both,
// one (the other returned fresh in the input's dtype), written then added.
TEST_F(CudaDestinations, LayerNormGradientsIntoF32BuffersMatchCpu) {
  const int64_t C = 136;
  const Tensor x = random_tensor({45, C}, "x", 3.0), dy = random_tensor({45, C}, "dy");
  const Tensor w = random_tensor({C}, "w"), b = random_tensor({C}, "b");
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor xh = x.to(dtype), dyh = dy.to(dtype), wh = w.to(dtype), bh = b.to(dtype);
    const LayerNormOutput cpu_ln = layernorm(xh, wh, bh), gpu_ln = layernorm(gpu(xh), gpu(wh), gpu(bh));
    const bool f32 = dtype == DType::f32;
    const double rtol = f32 ? kF32 : kBf16, atol = f32 ? 1e-5 : 5e-2;  // as SoftmaxAndLayerNormMatchCpu
    for (int which = 0; which < 3; ++which) {  // both, dweight only, dbias only
      SCOPED_TRACE(which);
      Buffers dw({C}), db({C});
      auto run = [&](bool add) {
        const Destination cpu_w = which != 2 ? Destination{dw.cpu, add} : Destination{};
        const Destination cpu_b = which != 1 ? Destination{db.cpu, add} : Destination{};
        const Destination gpu_w = which != 2 ? Destination{dw.cuda, add} : Destination{};
        const Destination gpu_b = which != 1 ? Destination{db.cuda, add} : Destination{};
        LayerNormGrads c = layernorm_backward(dyh, xh, wh, cpu_ln.mean, cpu_ln.rstd, Tensor(), cpu_w, cpu_b);
        LayerNormGrads g = layernorm_backward(gpu(dyh), gpu(xh), gpu(wh), gpu_ln.mean, gpu_ln.rstd, Tensor(), gpu_w,
                                              gpu_b);
        EXPECT_TRUE(same_as_cpu(g.dx, c.dx, rtol, atol));
        EXPECT_EQ(g.dweight.defined(), which == 2);
        EXPECT_EQ(g.dbias.defined(), which == 1);
        if (which == 2) { EXPECT_TRUE(same_as_cpu(g.dweight, c.dweight, rtol, atol)); }
        if (which == 1) { EXPECT_TRUE(same_as_cpu(g.dbias, c.dbias, rtol, atol)); }
      };
      run(false);
      run(true);
      if (which != 2) { EXPECT_TRUE(same_as_cpu(dw.cuda, dw.cpu, kF32, 1e-5)); }
      if (which != 1) { EXPECT_TRUE(same_as_cpu(db.cuda, db.cpu, kF32, 1e-5)); }
    }
  }
}

// The embedding's rows into the buffer: cleared first when written; when
// added to, a row no id names keeps its value (the NaN here).
TEST_F(CudaDestinations, EmbeddingGradientIntoF32BufferMatchesCpu) {
  const Tensor dy = random_tensor({3, 5, 24}, "dy");
  const Tensor ids = Tensor::from_vector(std::vector<int32_t>{4, 0, 9, 4, 4, 1, 0, 2, 3, 9, 8, 6, 5, 4, 0}, {3, 5});
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor d = dy.to(dtype);
    Buffers written({11, 24}), added({11, 24});
    embedding_backward_into({written.cpu, false}, d, ids);
    embedding_backward_into({written.cuda, false}, gpu(d), gpu(ids));
    EXPECT_TRUE(same_as_cpu(written.cuda, written.cpu, kF32, 1e-6));
    EXPECT_TRUE(same_as_cpu(written.cuda, embedding_backward(d.to(DType::f32), ids, 11), kF32, 1e-6));
    // Adding: 0.5 everywhere but rows 7 and 10, which no id names and which hold NaN.
    std::vector<float> start(11 * 24, 0.5f);
    for (int64_t c = 0; c < 24; ++c) start[size_t(7 * 24 + c)] = start[size_t(10 * 24 + c)] = std::nanf("");
    added.cpu.copy_(Tensor::from_vector(start, {11, 24}));
    added.cuda.copy_(Tensor::from_vector(start, {11, 24}));
    embedding_backward_into({added.cpu, true}, d, ids);
    embedding_backward_into({added.cuda, true}, gpu(d), gpu(ids));
    EXPECT_TRUE(same_as_cpu(added.cuda, added.cpu, kF32, 1e-6));  // NaN where both are NaN
    const std::vector<float> rows = added.cuda.to_vector<float>(), sums = written.cpu.to_vector<float>();
    for (int64_t i = 0; i < 11 * 24; ++i) {
      const int64_t row = i / 24;
      if (row == 7 || row == 10) {
        ASSERT_TRUE(std::isnan(rows[size_t(i)])) << "row " << row << " was touched";
      } else {
        ASSERT_NEAR(rows[size_t(i)], 0.5f + sums[size_t(i)], 1e-5) << "row " << row;
      }
    }
  }
}

}  // namespace
}  // namespace sg
