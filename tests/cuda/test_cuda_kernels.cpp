// Every CUDA kernel against its CPU twin on the same inputs: f32 within 1e-5
// relative, bf16 within 1e-2. Runs where a GPU is visible, and on every CI
// pass in the SIMT emulator (docs/cuda-emulator.md).
#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/flash_attention_tc.h"
#include "kernels/cuda/matmul.h"
#include "kernels/cuda/normalization.h"
#include "kernels/cuda/runtime.h"
#include "kernels/cpu/matmul.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using test::gpu;
using test::kBf16;
using test::kF32;
using test::random_tensor;
using test::same_as_cpu;
using CudaKernels = test::CudaTest;

TEST_F(CudaKernels, ElementwiseMatchCpuInF32AndBf16) {
  Tensor a = random_tensor({1000, 3}, "a"), b = random_tensor({1000, 3}, "b");
  EXPECT_TRUE(same_as_cpu(add(gpu(a), gpu(b)), add(a, b), kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(mul(gpu(a), gpu(b)), mul(a, b), kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(scale(gpu(a), 0.3), scale(a, 0.3), kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(gelu(gpu(a)), gelu(a), kF32, 1e-6));
  Tensor ah = a.to(DType::bf16), bh = b.to(DType::bf16);
  EXPECT_TRUE(same_as_cpu(add(gpu(ah), gpu(bh)), add(ah, bh), kBf16, 1e-2));
  EXPECT_TRUE(same_as_cpu(mul(gpu(ah), gpu(bh)), mul(ah, bh), kBf16, 1e-2));
  EXPECT_TRUE(same_as_cpu(gelu(gpu(ah)), gelu(ah), kBf16, 1e-2));
  Tensor y = a.clone(), y_gpu = gpu(a);
  axpy_(y, -0.5, b);
  axpy_(y_gpu, -0.5, gpu(b));
  EXPECT_TRUE(same_as_cpu(y_gpu, y, kF32, 1e-7));
  // A 16-bit x is read as it is: the CPU twin's bits, and no f32 copy of it
  // on the GPU (a bf16 gradient accumulating into f32).
  for (const Tensor& sixteen : {bh, b.to(DType::f16)}) {
    Tensor y16 = a.clone(), y16_gpu = gpu(a), x16_gpu = gpu(sixteen);
    axpy_(y16, -0.5, sixteen);
    reset_peak_memory(Device::cuda(0));
    const int64_t live = memory_stats(Device::cuda(0)).total.live;
    axpy_(y16_gpu, -0.5, x16_gpu);
    EXPECT_EQ(memory_stats(Device::cuda(0)).total.peak, live) << "axpy_ made a copy of its 16-bit input";
    EXPECT_EQ(y16_gpu.to(Device::cpu()).to_vector<float>(), y16.to_vector<float>()) << dtype_name(sixteen.dtype());
  }
  EXPECT_TRUE(same_as_cpu(gelu_backward(gpu(a), gpu(b)), gelu_backward(a, b), kF32, 1e-6));
  EXPECT_TRUE(same_as_cpu(gelu_backward(gpu(ah), gpu(bh)), gelu_backward(ah, bh), kBf16, 1e-2));
  // 16-byte packs with a tail (3003 elements), and views off the 16-byte grid (element by element).
  for (DType dtype : {DType::f32, DType::bf16}) {
    const double rtol = dtype == DType::f32 ? kF32 : kBf16, atol = dtype == DType::f32 ? 1e-6 : 1e-2;
    Tensor x = random_tensor({3004}, "x").to(dtype), dy = random_tensor({3004}, "dy").to(dtype);
    for (int64_t first : {0, 1}) {
      Tensor xs = x.slice(0, first, first + 3003), dys = dy.slice(0, first, first + 3003);
      Tensor xg = gpu(x).slice(0, first, first + 3003), dyg = gpu(dy).slice(0, first, first + 3003);
      EXPECT_TRUE(same_as_cpu(gelu_backward(xg, dyg), gelu_backward(xs, dys), rtol, atol)) << first;
      EXPECT_TRUE(same_as_cpu(gelu(xg), gelu(xs), rtol, atol)) << first;
    }
  }
}

// c_fc's epilogue in one kernel: h += bias in place, y = gelu(h); and its backward.
TEST_F(CudaKernels, FusedBiasGeluMatchesCpu) {
  for (auto [dtype, cols] : {std::pair{DType::f32, 70}, {DType::bf16, 70}, {DType::f32, 64}, {DType::bf16, 64}}) {
    // 70 columns: element by element; 64: in 16-byte packs.
    const double rtol = dtype == DType::f32 ? kF32 : kBf16, atol = dtype == DType::f32 ? 1e-6 : 1e-2;
    Tensor pre = random_tensor({33, cols}, "pre").to(dtype), bias = random_tensor({cols}, "bias").to(dtype);
    Tensor dy = random_tensor({33, cols}, "dy").to(dtype);
    Tensor h_cpu = pre.clone(), h_gpu = gpu(pre);
    Tensor y_cpu = bias_gelu_(h_cpu, bias), y_gpu = bias_gelu_(h_gpu, gpu(bias));
    EXPECT_TRUE(same_as_cpu(y_gpu, y_cpu, rtol, atol)) << dtype_name(dtype);
    EXPECT_TRUE(same_as_cpu(h_gpu, h_cpu, rtol, atol)) << "h holds pre + bias";
    BiasGeluGrads g_cpu = bias_gelu_backward(h_cpu, dy), g_gpu = bias_gelu_backward(h_gpu, gpu(dy));
    EXPECT_TRUE(same_as_cpu(g_gpu.dh, g_cpu.dh, rtol, atol));
    EXPECT_TRUE(same_as_cpu(g_gpu.dbias, g_cpu.dbias, rtol, dtype == DType::f32 ? 1e-5 : 5e-2));
  }
}

TEST_F(CudaKernels, MatmulMatchesCpuForEveryTransposeAndBatch) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      Tensor a = random_tensor(ta ? Shape{37, 65} : Shape{65, 37}, "a");
      Tensor b = random_tensor(tb ? Shape{19, 37} : Shape{37, 19}, "b");
      Tensor la = ta ? a.transpose(0, 1) : a, lb = tb ? b.transpose(0, 1) : b;
      Tensor ga = ta ? gpu(a).transpose(0, 1) : gpu(a), gb = tb ? gpu(b).transpose(0, 1) : gpu(b);
      EXPECT_TRUE(same_as_cpu(matmul(ga, gb), matmul(la, lb), kF32, 1e-5)) << ta << tb;
      EXPECT_TRUE(same_as_cpu(matmul(ga.to(DType::bf16), gb.to(DType::bf16)),
                              matmul(la.to(DType::bf16), lb.to(DType::bf16)), kBf16, 5e-2)) << ta << tb;
    }
  }
  Tensor q = random_tensor({2, 3, 17, 8}, "q"), k = random_tensor({2, 3, 11, 8}, "k");
  EXPECT_TRUE(same_as_cpu(matmul(gpu(q), gpu(k).transpose(-1, -2)), matmul(q, k.transpose(-1, -2)), kF32, 1e-5));
}

TEST_F(CudaKernels, MatmulBackwardKernelMatchesCpu) {
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      GemmShape s = GemmShape::dense(9, 7, 5, ta, tb, /*batch=*/2);
      Tensor a = random_tensor({2 * s.stride_a}, "a"), b = random_tensor({2 * s.stride_b}, "b");
      Tensor dc = random_tensor({2 * s.stride_c}, "dc");
      Tensor da = Tensor::zeros({2 * s.stride_a}), db = Tensor::zeros({2 * s.stride_b});
      Tensor da_gpu = gpu(da), db_gpu = gpu(db), a_gpu = gpu(a), b_gpu = gpu(b), dc_gpu = gpu(dc);
      cpu::matmul_backward(da.data<float>(), db.data<float>(), dc.data<float>(), a.data<float>(), b.data<float>(), s);
      cuda::matmul_backward(da_gpu.data_ptr(), db_gpu.data_ptr(), dc_gpu.data_ptr(), a_gpu.data_ptr(), b_gpu.data_ptr(),
                            s, DType::f32, cuda::current_stream(0));
      EXPECT_TRUE(same_as_cpu(da_gpu, da, kF32, 1e-6)) << ta << tb;
      EXPECT_TRUE(same_as_cpu(db_gpu, db, kF32, 1e-6)) << ta << tb;
    }
  }
}

// The residual add and LayerNorm in one kernel, against the CPU's two ops.
TEST_F(CudaKernels, AddLayerNormMatchesCpu) {
  for (int64_t C : {130, 136}) {  // element by element; 16-byte vectors (8 bf16, 4 f32)
    SCOPED_TRACE(C);
    Tensor x = random_tensor({45, C}, "x", 2.0), y = random_tensor({45, C}, "y");
    Tensor w = random_tensor({C}, "w"), b = random_tensor({C}, "b");
    AddLayerNormOutput cpu_r = add_layernorm(x, y, w, b), gpu_r = add_layernorm(gpu(x), gpu(y), gpu(w), gpu(b));
    EXPECT_TRUE(same_as_cpu(gpu_r.sum, cpu_r.sum, kF32, 1e-7));
    EXPECT_TRUE(same_as_cpu(gpu_r.norm.out, cpu_r.norm.out, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(gpu_r.norm.mean, cpu_r.norm.mean, kF32, 1e-6));
    EXPECT_TRUE(same_as_cpu(gpu_r.norm.rstd, cpu_r.norm.rstd, kF32, 1e-6));
    Tensor xh = x.to(DType::bf16), yh = y.to(DType::bf16), wh = w.to(DType::bf16), bh = b.to(DType::bf16);
    AddLayerNormOutput cpu_h = add_layernorm(xh, yh, wh, bh), gpu_h = add_layernorm(gpu(xh), gpu(yh), gpu(wh), gpu(bh));
    EXPECT_TRUE(same_as_cpu(gpu_h.sum, cpu_h.sum, kBf16, 1e-2));
    EXPECT_TRUE(same_as_cpu(gpu_h.norm.out, cpu_h.norm.out, kBf16, 2e-2));
  }
}

// The bias in cuBLASLt's epilogue (and the plain GEMMs that now go through
// cuBLASLt first), against the CPU's GEMM then bias; SG_CUBLASLT=0 checks the
// cuBLAS path the same way.
TEST_F(CudaKernels, MatmulWithBiasMatchesCpu) {
  Tensor x = random_tensor({2, 33, 64}, "x"), w = random_tensor({96, 64}, "w"), bias = random_tensor({96}, "bias");
  Tensor wt = w.transpose(0, 1);
  EXPECT_TRUE(same_as_cpu(matmul_bias(gpu(x), gpu(w).transpose(0, 1), gpu(bias)), matmul_bias(x, wt, bias), kF32, 1e-5));
  Tensor xh = x.to(DType::bf16), wh = w.to(DType::bf16), bh = bias.to(DType::bf16);
  EXPECT_TRUE(same_as_cpu(matmul_bias(gpu(xh), gpu(wh).transpose(0, 1), gpu(bh)),
                          matmul_bias(xh, wh.transpose(0, 1), bh), kBf16, 5e-2));
  // An operand that starts off any alignment (a view one element in).
  Tensor shifted = random_tensor({33 * 64 + 1}, "shifted");
  Tensor view_cpu = shifted.slice(0, 1, 33 * 64 + 1).view({33, 64});
  Tensor view_gpu = gpu(shifted).slice(0, 1, 33 * 64 + 1).view({33, 64});
  EXPECT_TRUE(same_as_cpu(matmul_bias(view_gpu, gpu(w).transpose(0, 1), gpu(bias)), matmul_bias(view_cpu, wt, bias),
                          kF32, 1e-5));
  // A bias one element into its buffer (as in a ZeRO flat buffer): not
  // 16-byte aligned, so it is added after the GEMM, not in Lt's epilogue.
  Tensor padded = random_tensor({97}, "padded");
  Tensor bias_cpu = padded.slice(0, 1, 97), bias_gpu = gpu(padded).slice(0, 1, 97);
  EXPECT_TRUE(same_as_cpu(matmul_bias(gpu(x), gpu(w).transpose(0, 1), bias_gpu), matmul_bias(x, wt, bias_cpu), kF32,
                          1e-5));
}

TEST_F(CudaKernels, BiasMatchesCpu) {
  Tensor x = random_tensor({33, 70}, "x"), bias = random_tensor({70}, "bias");
  EXPECT_TRUE(same_as_cpu(add_bias(gpu(x), gpu(bias)), add_bias(x, bias), kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(add_bias(gpu(x).to(DType::bf16), gpu(bias).to(DType::bf16)),
                          add_bias(x.to(DType::bf16), bias.to(DType::bf16)), kBf16, 1e-2));
  EXPECT_TRUE(same_as_cpu(bias_backward(gpu(x)), bias_backward(x), kF32, 1e-5));
  EXPECT_TRUE(same_as_cpu(bias_backward(gpu(x).to(DType::bf16)), bias_backward(x.to(DType::bf16)), kBf16, 5e-2));
  // Many rows (the column sums run in 128 row chunks, some empty for few rows).
  // Held to the f64 sums: the f32 CPU twin adds the rows one by one, the
  // CUDA kernel in chunks, and over 5000 rows the two orders differ by
  // ~1e-4 (found by the CUDA emulator). Rounding grows like sqrt(rows).
  // 768 columns are read 16 bytes a thread (4 f32, 8 bf16), 70 one by one.
  for (int64_t rows : {int64_t(1), int64_t(31), int64_t(5000)}) {
    Tensor tall = random_tensor({rows, 768}, "tall");
    const double atol = 2e-5 * std::sqrt(double(rows));
    EXPECT_TRUE(same_as_cpu(bias_backward(gpu(tall)), bias_backward(tall.to(DType::f64)), kF32, atol))
        << rows << " rows";
    const Tensor tall16 = tall.to(DType::bf16);  // summed in f32, then rounded once to bf16
    EXPECT_TRUE(same_as_cpu(bias_backward(gpu(tall16)), bias_backward(tall16.to(DType::f64)), kBf16, atol))
        << rows << " rows, bf16";
  }
}

TEST_F(CudaKernels, SoftmaxAndLayerNormMatchCpu) {
  for (int64_t C : {130, 136}) {  // element by element; 16-byte vectors (8 bf16, 4 f32)
    SCOPED_TRACE(C);
    Tensor x = random_tensor({45, C}, "x", 3.0), dy = random_tensor({45, C}, "dy");
    Tensor y = softmax(x);
    EXPECT_TRUE(same_as_cpu(softmax(gpu(x)), y, kF32, 1e-7));
    EXPECT_TRUE(same_as_cpu(softmax(gpu(x).to(DType::bf16)), softmax(x.to(DType::bf16)), kBf16, 1e-3));
    EXPECT_TRUE(same_as_cpu(softmax_backward(gpu(y), gpu(dy)), softmax_backward(y, dy), kF32, 1e-6));

    Tensor w = random_tensor({C}, "w"), b = random_tensor({C}, "b");
    LayerNormOutput cpu_ln = layernorm(x, w, b), gpu_ln = layernorm(gpu(x), gpu(w), gpu(b));
    EXPECT_TRUE(same_as_cpu(gpu_ln.out, cpu_ln.out, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(gpu_ln.rstd, cpu_ln.rstd, kF32, 1e-6));
    LayerNormOutput half_ln = layernorm(gpu(x).to(DType::bf16), gpu(w).to(DType::bf16), gpu(b).to(DType::bf16));
    LayerNormOutput cpu_half_ln = layernorm(x.to(DType::bf16), w.to(DType::bf16), b.to(DType::bf16));
    EXPECT_TRUE(same_as_cpu(half_ln.out, cpu_half_ln.out, kBf16, 2e-2));
    LayerNormGrads cpu_g = layernorm_backward(dy, x, w, cpu_ln.mean, cpu_ln.rstd);
    LayerNormGrads gpu_g = layernorm_backward(gpu(dy), gpu(x), gpu(w), gpu_ln.mean, gpu_ln.rstd);
    EXPECT_TRUE(same_as_cpu(gpu_g.dx, cpu_g.dx, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(gpu_g.dweight, cpu_g.dweight, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(gpu_g.dbias, cpu_g.dbias, kF32, 1e-5));
    // bf16 in, bf16 dx out, f32 statistics and parameter gradients inside.
    Tensor xh = x.to(DType::bf16), dyh = dy.to(DType::bf16), wh = w.to(DType::bf16), bh = b.to(DType::bf16);
    LayerNormOutput cpu_h = layernorm(xh, wh, bh), gpu_h = layernorm(gpu(xh), gpu(wh), gpu(bh));
    LayerNormGrads cpu_hg = layernorm_backward(dyh, xh, wh, cpu_h.mean, cpu_h.rstd);
    LayerNormGrads gpu_hg = layernorm_backward(gpu(dyh), gpu(xh), gpu(wh), gpu_h.mean, gpu_h.rstd);
    EXPECT_EQ(gpu_hg.dx.dtype(), DType::bf16);
    EXPECT_TRUE(same_as_cpu(gpu_hg.dx, cpu_hg.dx, kBf16, 2e-2));
    EXPECT_TRUE(same_as_cpu(gpu_hg.dweight, cpu_hg.dweight, kBf16, 5e-2));
    EXPECT_TRUE(same_as_cpu(gpu_hg.dbias, cpu_hg.dbias, kBf16, 5e-2));
    // With a gradient x has from elsewhere added in the same pass (the residual stream's).
    Tensor extra = random_tensor(x.shape(), "extra");
    LayerNormGrads cpu_a = layernorm_backward(dy, x, w, cpu_ln.mean, cpu_ln.rstd, extra);
    LayerNormGrads gpu_a = layernorm_backward(gpu(dy), gpu(x), gpu(w), gpu_ln.mean, gpu_ln.rstd, gpu(extra));
    EXPECT_TRUE(same_as_cpu(gpu_a.dx, cpu_a.dx, kF32, 1e-5));
    LayerNormGrads cpu_ah = layernorm_backward(dyh, xh, wh, cpu_h.mean, cpu_h.rstd, extra.to(DType::bf16));
    LayerNormGrads gpu_ah =
        layernorm_backward(gpu(dyh), gpu(xh), gpu(wh), gpu_h.mean, gpu_h.rstd, gpu(extra.to(DType::bf16)));
    EXPECT_TRUE(same_as_cpu(gpu_ah.dx, cpu_ah.dx, kBf16, 2e-2));
  }
}

// LayerNorm's backward takes one fused kernel where a lane's share of a row
// fits its registers (rows of 16-byte vectors, C <= 768) and two kernels
// otherwise or with SG_LAYERNORM_FUSED_BACKWARD=0: both
// against the CPU, with rows enough that a block's 16 warps all have some
// and its first warp two (the fused kernel's tree adds the warps' sums).
TEST_F(CudaKernels, LayerNormBackwardBothPathsMatchCpu) {
  const int64_t rows = 2100;
  for (const char* fused : {"1", "0"}) {
    setenv("SG_LAYERNORM_FUSED_BACKWARD", fused, 1);
    for (int64_t C : {768, 776}) {  // fused where the switch is on; two kernels
      for (DType dtype : {DType::f32, DType::bf16}) {
        SCOPED_TRACE(std::string("fused ") + fused + ", C " + std::to_string(C) + ", " + std::string(dtype_name(dtype)));
        const Tensor x = random_tensor({rows, C}, "x", 3.0).to(dtype), dy = random_tensor({rows, C}, "dy").to(dtype);
        const Tensor w = random_tensor({C}, "w").to(dtype), b = random_tensor({C}, "b").to(dtype);
        const Tensor extra = random_tensor({rows, C}, "extra").to(dtype);
        const LayerNormOutput cpu_ln = layernorm(x, w, b), gpu_ln = layernorm(gpu(x), gpu(w), gpu(b));
        const LayerNormGrads c = layernorm_backward(dy, x, w, cpu_ln.mean, cpu_ln.rstd, extra);
        const LayerNormGrads g = layernorm_backward(gpu(dy), gpu(x), gpu(w), gpu_ln.mean, gpu_ln.rstd, gpu(extra));
        const bool f32 = dtype == DType::f32;
        EXPECT_TRUE(same_as_cpu(g.dx, c.dx, f32 ? kF32 : kBf16, f32 ? 1e-5 : 5e-2));
        EXPECT_TRUE(same_as_cpu(g.dweight, c.dweight, f32 ? kF32 : kBf16, f32 ? 1e-4 : 5e-1));
        EXPECT_TRUE(same_as_cpu(g.dbias, c.dbias, f32 ? kF32 : kBf16, f32 ? 1e-4 : 5e-1));
      }
    }
  }
  unsetenv("SG_LAYERNORM_FUSED_BACKWARD");
}

// SG_LAYERNORM_PIPELINED_BACKWARD=1 (16-bit types, where the fused kernel
// would run): the fused kernel's rows, with each warp's next row copied
// into shared memory while it computes on this one. Its arithmetic is the
// fused kernel's in the same order, so it must give the same bits, and it
// is counted to have run. Lanes with 3, 2 and 1 units of a row (C 768, 264:
// only lane 0 has a second unit) and lanes with none (C 64); blocks with
// one row or none (37 rows over 128 chunks) and warps with 2 or 3 (5000
// rows: 40 a block, so a warp's third row goes into the buffer its first
// used); with and without a gradient to add.
TEST_F(CudaKernels, PipelinedLayerNormBackwardGivesTheFusedKernelsBits) {
  for (int64_t rows : {37, 5000}) {
    for (int64_t C : {768, 264, 64}) {
      for (DType dtype : {DType::bf16, DType::f16}) {
        for (bool add : {true, false}) {
          SCOPED_TRACE(std::to_string(rows) + " rows, C " + std::to_string(C) + ", " + std::string(dtype_name(dtype)) +
                       (add ? ", a gradient to add" : ""));
          const Tensor x = random_tensor({rows, C}, "x", 3.0).to(dtype), dy = random_tensor({rows, C}, "dy").to(dtype);
          const Tensor w = random_tensor({C}, "w").to(dtype), b = random_tensor({C}, "b").to(dtype);
          const Tensor extra = add ? random_tensor({rows, C}, "extra").to(dtype) : Tensor();
          const LayerNormOutput ln = layernorm(gpu(x), gpu(w), gpu(b));
          const Tensor gpu_extra = add ? gpu(extra) : Tensor();
          const LayerNormGrads fused = layernorm_backward(gpu(dy), gpu(x), gpu(w), ln.mean, ln.rstd, gpu_extra);
          setenv("SG_LAYERNORM_PIPELINED_BACKWARD", "1", 1);
          const int64_t before = cuda::layernorm_pipelined_backwards();
          const LayerNormGrads piped = layernorm_backward(gpu(dy), gpu(x), gpu(w), ln.mean, ln.rstd, gpu_extra);
          const int64_t ran = cuda::layernorm_pipelined_backwards() - before;
          unsetenv("SG_LAYERNORM_PIPELINED_BACKWARD");
          EXPECT_EQ(ran, 1) << "the pipelined kernel did not run";
          EXPECT_EQ(piped.dx.to_vector<float>(), fused.dx.to_vector<float>());
          EXPECT_EQ(piped.dweight.to_vector<float>(), fused.dweight.to_vector<float>());
          EXPECT_EQ(piped.dbias.to_vector<float>(), fused.dbias.to_vector<float>());
          const LayerNormOutput cpu_ln = layernorm(x, w, b);
          const LayerNormGrads c = layernorm_backward(dy, x, w, cpu_ln.mean, cpu_ln.rstd, extra);
          EXPECT_TRUE(same_as_cpu(piped.dx, c.dx, kBf16, 5e-2));
          EXPECT_TRUE(same_as_cpu(piped.dweight, c.dweight, kBf16, 5e-1));
          EXPECT_TRUE(same_as_cpu(piped.dbias, c.dbias, kBf16, 5e-1));
        }
      }
    }
  }
}

TEST_F(CudaKernels, AttentionMatchesCpu) {
  Tensor qkv = random_tensor({2, 37, 3 * 48}, "qkv"), dout = random_tensor({2, 37, 48}, "dout");
  AttentionOutput cpu_a = attention(qkv, 4), gpu_a = attention(gpu(qkv), 4);
  EXPECT_TRUE(same_as_cpu(gpu_a.out, cpu_a.out, kF32, 1e-6));
  EXPECT_TRUE(same_as_cpu(gpu_a.att, cpu_a.att, kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(attention_backward(gpu(dout), gpu(qkv), gpu_a.att, 4),
                          attention_backward(dout, qkv, cpu_a.att, 4), kF32, 1e-5));
}

void gemm_attention_matches_cpu(int64_t B) {
  SCOPED_TRACE(B);
  Tensor qkv = random_tensor({B, 37, 3 * 48}, "qkv"), dout = random_tensor({B, 37, 48}, "dout");
  AttentionOutput cpu_a = gemm_attention(qkv, 4), gpu_a = gemm_attention(gpu(qkv), 4);
  EXPECT_TRUE(same_as_cpu(gpu_a.out, cpu_a.out, kF32, 1e-6));
  EXPECT_TRUE(same_as_cpu(gpu_a.att, cpu_a.att, kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(gemm_attention_backward(gpu(dout), gpu(qkv), gpu_a.att, 4),
                          gemm_attention_backward(dout, qkv, cpu_a.att, 4), kF32, 1e-5));
  Tensor q16 = qkv.to(DType::bf16), d16 = dout.to(DType::bf16);
  AttentionOutput cpu_b = gemm_attention(q16, 4), gpu_b = gemm_attention(gpu(q16), 4);
  EXPECT_TRUE(same_as_cpu(gpu_b.out, cpu_b.out, kBf16, 2e-2));
  EXPECT_TRUE(same_as_cpu(gemm_attention_backward(gpu(d16), gpu(q16), gpu_b.att, 4),
                          gemm_attention_backward(d16, q16, cpu_b.att, 4), kBf16, 5e-2));
}

// Attention as batched GEMMs around the masked softmax, against the CPU's
// same composition (itself held to the naive form in test_op_gradients).
TEST_F(CudaKernels, GemmAttentionMatchesCpu) {
  for (int64_t B : {2, 5}) {  // the CPU: fewer batch rows than heads (a GEMM per row), then more (one per head)
    gemm_attention_matches_cpu(B);
  }
  // The masked softmax alone: rows of 37 element by element, of 40 in 16-byte vectors (a vector
  // straddles each row's diagonal), f32 and bf16, forward and backward.
  for (int64_t T : {37, 40}) {
    for (DType dtype : {DType::f32, DType::bf16}) {
      SCOPED_TRACE("T=" + std::to_string(T) + " " + std::string(dtype_name(dtype)));
      const double rtol = dtype == DType::f32 ? kF32 : kBf16, atol = dtype == DType::f32 ? 1e-7 : 1e-2;
      Tensor scores = random_tensor({3, T, T}, "scores", 3.0).to(dtype), dp = random_tensor({3, T, T}, "dp").to(dtype);
      Tensor p = causal_softmax(scores, 0.3), gpu_p = causal_softmax(gpu(scores), 0.3);
      EXPECT_TRUE(same_as_cpu(gpu_p, p, rtol, atol));
      EXPECT_TRUE(same_as_cpu(causal_softmax_backward(gpu_p, gpu(dp), 0.3), causal_softmax_backward(p, dp, 0.3), rtol,
                              dtype == DType::f32 ? 1e-6 : 1e-2));
    }
  }
}

// The fused kernels against their CPU twin, in f32 and bf16, for head sizes
// in every bucket (8 -> 16, 24 -> 32, 64, 80 -> 128) and T across tile edges.
TEST_F(CudaKernels, FusedAttentionMatchesCpu) {
  struct Case {
    int64_t B, T, C, NH;
  };
  for (Case c : {Case{2, 37, 16, 2}, Case{1, 64, 48, 2}, Case{2, 33, 128, 2}, Case{1, 70, 160, 2}}) {
    SCOPED_TRACE("T=" + std::to_string(c.T) + " C=" + std::to_string(c.C));
    Tensor qkv = random_tensor({c.B, c.T, 3 * c.C}, "qkv"), dout = random_tensor({c.B, c.T, c.C}, "dout");
    FusedAttentionOutput cpu_a = fused_attention(qkv, c.NH), gpu_a = fused_attention(gpu(qkv), c.NH);
    EXPECT_TRUE(same_as_cpu(gpu_a.out, cpu_a.out, kF32, 1e-6));
    EXPECT_TRUE(same_as_cpu(gpu_a.lse, cpu_a.lse, kF32, 1e-6));
    EXPECT_TRUE(same_as_cpu(fused_attention_backward(gpu(dout), gpu(qkv), gpu_a.out, gpu_a.lse, c.NH),
                            fused_attention_backward(dout, qkv, cpu_a.out, cpu_a.lse, c.NH), kF32, 1e-5));
    // bf16 inputs and outputs, f32 inside: within bf16's rounding of the f32 result.
    Tensor q16 = qkv.to(DType::bf16), d16 = dout.to(DType::bf16);
    FusedAttentionOutput cpu_b = fused_attention(q16, c.NH), gpu_b = fused_attention(gpu(q16), c.NH);
    EXPECT_TRUE(same_as_cpu(gpu_b.out, cpu_b.out, kBf16, 1e-2));
    EXPECT_TRUE(same_as_cpu(fused_attention_backward(gpu(d16), gpu(q16), gpu_b.out, gpu_b.lse, c.NH),
                            fused_attention_backward(d16, q16, cpu_b.out, cpu_b.lse, c.NH), kBf16, 1e-2));
  }
}

// bf16 and f16 with head sizes 16, 32, 48 and 64 run on tensor cores
// (flash_attention_tc.cu): 64 query rows per block, 32 or 16 keys per step,
// so T is taken across those edges. The probabilities and dS are rounded to
// 16 bits before their products: held to the CPU's f32 math within 2e-2.
// Every shape below with the kernels built for more warps an SM (the
// default) and for fewer (SG_FLASH_*_MORE_WARPS=0), dQ made in its own
// kernel or (fused_dq "1", SG_FLASH_FUSED_DQ) inside dK/dV's: switches read
// at each call. With fused dQ, a second backward must give the same bits
// (its partials are summed in a fixed order).
void expect_tensor_core_attention_matches_cpu(const char* fused_dq) {
  struct Case {
    int64_t B, T, C, NH;
  };
  setenv("SG_FLASH_FUSED_DQ", fused_dq, 1);
  for (const char* more_warps : {"1", "0"}) {
    setenv("SG_FLASH_FORWARD_MORE_WARPS", more_warps, 1);
    setenv("SG_FLASH_BACKWARD_MORE_WARPS", more_warps, 1);
    for (Case c : {Case{2, 37, 32, 2}, Case{1, 130, 64, 2}, Case{1, 64, 96, 2}, Case{2, 81, 128, 2},
                   Case{1, 200, 128, 2}, Case{1, 300, 64, 1}}) {
      for (DType dtype : {DType::bf16, DType::f16}) {
        SCOPED_TRACE("T=" + std::to_string(c.T) + " HS=" + std::to_string(c.C / c.NH) + " " +
                     std::string(dtype_name(dtype)) + ", more warps " + more_warps + ", fused dQ " + fused_dq);
        Tensor qkv = random_tensor({c.B, c.T, 3 * c.C}, "qkv").to(dtype);
        Tensor dout = random_tensor({c.B, c.T, c.C}, "dout").to(dtype);
        FusedAttentionOutput cpu_a = fused_attention(qkv, c.NH), gpu_a = fused_attention(gpu(qkv), c.NH);
        EXPECT_TRUE(same_as_cpu(gpu_a.out, cpu_a.out, 2e-2, 2e-2));
        EXPECT_TRUE(same_as_cpu(gpu_a.lse, cpu_a.lse, 1e-3, 1e-3));
        const Tensor grads = fused_attention_backward(gpu(dout), gpu(qkv), gpu_a.out, gpu_a.lse, c.NH);
        EXPECT_TRUE(same_as_cpu(grads, fused_attention_backward(dout, qkv, cpu_a.out, cpu_a.lse, c.NH), 2e-2, 2e-2));
        if (fused_dq[0] == '1') {
          EXPECT_EQ(fused_attention_backward(gpu(dout), gpu(qkv), gpu_a.out, gpu_a.lse, c.NH).to_vector<float>(),
                    grads.to_vector<float>())
              << "the same bits every run";
        }
      }
    }
  }
  unsetenv("SG_FLASH_FORWARD_MORE_WARPS");
  unsetenv("SG_FLASH_BACKWARD_MORE_WARPS");
  unsetenv("SG_FLASH_FUSED_DQ");
}

// dQ inside the dK/dV kernel (its own test, so that gpu_check can run the
// sanitizers over either kernel set).
TEST_F(CudaKernels, TensorCoreAttentionWithFusedDqMatchesCpu) { expect_tensor_core_attention_matches_cpu("1"); }

TEST_F(CudaKernels, TensorCoreAttentionMatchesCpu) {
  expect_tensor_core_attention_matches_cpu("0");
  // qkv off the 16-byte grid (a view one element into its buffer): the tensor-core kernels' vector
  // loads cannot take it, so the CUDA-core kernels do, with the same results.
  const int64_t B = 1, T = 70, C = 128, NH = 2;
  Tensor buffer = random_tensor({B * T * 3 * C + 1}, "buffer").to(DType::bf16), gpu_buffer = gpu(buffer);
  Tensor qkv = buffer.slice(0, 1, 1 + B * T * 3 * C).view({B, T, 3 * C});
  Tensor gpu_qkv = gpu_buffer.slice(0, 1, 1 + B * T * 3 * C).view({B, T, 3 * C});
  FusedAttentionOutput cpu_u = fused_attention(qkv, NH), gpu_u = fused_attention(gpu_qkv, NH);
  EXPECT_TRUE(same_as_cpu(gpu_u.out, cpu_u.out, 2e-2, 2e-2));
  Tensor dout = random_tensor({B, T, C}, "dout").to(DType::bf16);
  EXPECT_TRUE(same_as_cpu(fused_attention_backward(gpu(dout), gpu_qkv, gpu_u.out, gpu_u.lse, NH),
                          fused_attention_backward(dout, qkv, cpu_u.out, cpu_u.lse, NH), 2e-2, 2e-2));
}

// One shape of TensorCoreAttentionOnWgmmaMatchesCpu (below), the switches already set.
void expect_wgmma_attention_matches_cpu(int64_t B, int64_t T, int64_t C, int64_t NH, DType dtype,
                                        const char* overlap) {
  const bool wgmma = C / NH == 64;
  SCOPED_TRACE("T=" + std::to_string(T) + " HS=" + std::to_string(C / NH) + " " + std::string(dtype_name(dtype)) +
               ", overlap " + overlap);
  Tensor qkv = random_tensor({B, T, 3 * C}, "qkv").to(dtype);
  Tensor dout = random_tensor({B, T, C}, "dout").to(dtype);
  const int64_t forwards = cuda::flash_wgmma_forwards(), backwards = cuda::flash_wgmma_backwards();
  FusedAttentionOutput cpu_a = fused_attention(qkv, NH), gpu_a = fused_attention(gpu(qkv), NH);
  EXPECT_TRUE(same_as_cpu(gpu_a.out, cpu_a.out, 2e-2, 2e-2));
  EXPECT_TRUE(same_as_cpu(gpu_a.lse, cpu_a.lse, 1e-3, 1e-3));
  const Tensor grads = fused_attention_backward(gpu(dout), gpu(qkv), gpu_a.out, gpu_a.lse, NH);
  EXPECT_TRUE(same_as_cpu(grads, fused_attention_backward(dout, qkv, cpu_a.out, cpu_a.lse, NH), 2e-2, 2e-2));
  EXPECT_EQ(fused_attention_backward(gpu(dout), gpu(qkv), gpu_a.out, gpu_a.lse, NH).to_vector<float>(),
            grads.to_vector<float>())
      << "the same bits every run";
  EXPECT_EQ(cuda::flash_wgmma_forwards() - forwards, wgmma ? 1 : 0);
  EXPECT_EQ(cuda::flash_wgmma_backwards() - backwards, wgmma ? 2 : 0);
}

// Attention on Hopper's warpgroup MMA (SG_FLASH_WGMMA=1, head size 64;
// flash_attention_wgmma*.cu), forward and backward, on a compute capability
// 9.0 GPU or the emulator's H100: T across the 64-row tiles' and the
// backward's 32-query halves' edges, bf16 and f16; head size 32 falls back
// to mma.sync (both counted). The backward, like mma.sync's, gives the same
// bits every run. Every kernel in both forms: its products overlapping its
// exponentials (the default) and not (SG_FLASH_WGMMA_OVERLAP=0).
TEST_F(CudaKernels, TensorCoreAttentionOnWgmmaMatchesCpu) {
  int device = 0, major = 0, minor = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  if (major != 9 || minor != 0) GTEST_SKIP() << "wgmma needs compute capability 9.0; this GPU is " << major << "." << minor;
  struct Case {
    int64_t B, T, C, NH;
  };
  setenv("SG_FLASH_WGMMA", "1", 1);
  for (const char* overlap : {"1", "0"}) {
    setenv("SG_FLASH_WGMMA_OVERLAP", overlap, 1);
    for (Case c : {Case{2, 37, 64, 1}, Case{1, 64, 128, 2}, Case{1, 130, 128, 2}, Case{1, 200, 64, 1},
                   Case{1, 70, 64, 2}}) {
      for (DType dtype : {DType::bf16, DType::f16}) {
        expect_wgmma_attention_matches_cpu(c.B, c.T, c.C, c.NH, dtype, overlap);
      }
    }
  }
  unsetenv("SG_FLASH_WGMMA_OVERLAP");
  unsetenv("SG_FLASH_WGMMA");
}

// The loss and g = softmax - onehot in one kernel (a block a row, g over
// the logits) against the CPU's two passes, in f32 and bf16; and the
// gradient's scale dloss / count applied from the device.
void cross_entropy_with_grad_matches_cpu(const Tensor& logits, const Tensor& targets) {
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    const Tensor l = logits.to(dtype);
    const CrossEntropyWithGrad c = cross_entropy_with_grad(l.clone(), targets);
    Tensor on_gpu = gpu(l);
    const CrossEntropyWithGrad g = cross_entropy_with_grad(on_gpu, gpu(targets));
    EXPECT_EQ(g.grad.data_ptr(), on_gpu.data_ptr()) << "g is written over the logits";
    EXPECT_TRUE(same_as_cpu(g.losses, c.losses, kF32, 1e-5));
    EXPECT_TRUE(same_as_cpu(g.grad, c.grad, dtype == DType::f32 ? kF32 : kBf16, 1e-6));
    const Tensor dloss = Tensor::full({}, 0.75), count = Tensor::full({}, 48.0);
    const Tensor scaled = scale_by_quotient(c.grad, dloss, count);
    EXPECT_TRUE(same_as_cpu(scale_by_quotient(g.grad, gpu(dloss), gpu(count)), scaled,
                            dtype == DType::f32 ? kF32 : kBf16, 1e-8));
    // In place, on each device: the same values in the same buffer.
    Tensor in_place = g.grad, on_cpu = c.grad.clone();
    scale_by_quotient_(in_place, gpu(dloss), gpu(count));
    scale_by_quotient_(on_cpu, dloss, count);
    EXPECT_EQ(in_place.data_ptr(), on_gpu.data_ptr());
    EXPECT_TRUE(same_as_cpu(in_place, scaled, dtype == DType::f32 ? kF32 : kBf16, 1e-8));
    EXPECT_EQ(on_cpu.to_vector<float>(), scaled.to_vector<float>());
  }
}

void cross_entropy_matches_cpu(int64_t V, const std::vector<int32_t>& id_values) {
  Tensor logits = random_tensor({8, 8, V}, "logits", 2.0);
  Tensor targets = Tensor::from_vector(id_values, {8, 8});
  CrossEntropyOutput cpu_ce = cross_entropy(logits, targets), gpu_ce = cross_entropy(gpu(logits), gpu(targets));
  EXPECT_TRUE(same_as_cpu(gpu_ce.losses, cpu_ce.losses, kF32, 1e-6));
  EXPECT_TRUE(same_as_cpu(gpu_ce.lse, cpu_ce.lse, kF32, 1e-6));
  Tensor dl = random_tensor({8, 8}, "dl");
  EXPECT_TRUE(same_as_cpu(cross_entropy_backward(gpu(dl), gpu(logits), gpu_ce.lse, gpu(targets)),
                          cross_entropy_backward(dl, logits, cpu_ce.lse, targets), kF32, 1e-6));

  // The mean and its backward, read on the device (no host round trip).
  CrossEntropyMean cpu_mean = cross_entropy_mean(cpu_ce.losses, targets);
  CrossEntropyMean gpu_mean = cross_entropy_mean(gpu_ce.losses, gpu(targets));
  EXPECT_TRUE(same_as_cpu(gpu_mean.loss, cpu_mean.loss, kF32, 1e-6));
  EXPECT_TRUE(same_as_cpu(gpu_mean.count, cpu_mean.count, 0.0, 0.0));
  Tensor dloss = Tensor::full({}, 0.75);
  EXPECT_TRUE(same_as_cpu(cross_entropy_mean_backward(gpu(dloss), gpu_mean.count, gpu(logits), gpu_ce.lse, gpu(targets)),
                          cross_entropy_mean_backward(dloss, cpu_mean.count, logits, cpu_ce.lse, targets), kF32, 1e-7));
  // bf16 logits are read as they are (no f32 copy); dlogits come back in bf16.
  Tensor l16 = logits.to(DType::bf16);
  CrossEntropyOutput cpu_b = cross_entropy(l16, targets), gpu_b = cross_entropy(gpu(l16), gpu(targets));
  EXPECT_TRUE(same_as_cpu(gpu_b.losses, cpu_b.losses, kF32, 1e-5));
  Tensor gpu_d16 = cross_entropy_backward(gpu(dl), gpu(l16), gpu_b.lse, gpu(targets));
  EXPECT_EQ(gpu_d16.dtype(), DType::bf16);
  EXPECT_TRUE(same_as_cpu(gpu_d16, cross_entropy_backward(dl, l16, cpu_b.lse, targets), kBf16, 1e-3));
  cross_entropy_with_grad_matches_cpu(logits, targets);
}

TEST_F(CudaKernels, EmbeddingAndCrossEntropyMatchCpu) {
  Tensor table = random_tensor({50, 24}, "wte");
  std::vector<int32_t> id_values;
  for (int i = 0; i < 64; ++i) id_values.push_back((i * 7) % 50);
  Tensor ids = Tensor::from_vector(id_values, {8, 8});
  EXPECT_TRUE(same_as_cpu(embedding(gpu(table), gpu(ids)), embedding(table, ids), 0.0, 0.0));
  // The backward adds each id's rows in position order, as the CPU does:
  // the same bits (ids repeat; 300 channels span two blocks of channels).
  Tensor dout = random_tensor({8, 8, 24}, "dout");
  EXPECT_TRUE(same_as_cpu(embedding_backward(gpu(dout), gpu(ids), 50), embedding_backward(dout, ids, 50), 0.0, 0.0));
  Tensor table16 = table.to(DType::bf16), dout16 = dout.to(DType::bf16);
  EXPECT_TRUE(same_as_cpu(embedding(gpu(table16), gpu(ids)), embedding(table16, ids), 0.0, 0.0));
  EXPECT_TRUE(same_as_cpu(embedding_backward(gpu(dout16), gpu(ids), 50), embedding_backward(dout16, ids, 50), 0.0,
                          0.0));
  std::vector<int32_t> many;  // 700 ids (more than one tile of them), 3 distinct: long runs of one id
  for (int i = 0; i < 700; ++i) many.push_back(int32_t(i % 7 == 0 ? 2 : i % 3));
  Tensor many_ids = Tensor::from_vector(many, {700}), wide = random_tensor({700, 300}, "wide");
  EXPECT_TRUE(same_as_cpu(embedding_backward(gpu(wide), gpu(many_ids), 3), embedding_backward(wide, many_ids, 3), 0.0,
                          0.0));

  id_values[3] = -1;  // an ignored row
  for (int64_t V : {50, 56}) {  // element by element; 16-byte vectors (8 bf16, 4 f32)
    SCOPED_TRACE(V);
    cross_entropy_matches_cpu(V, id_values);
  }
  // Rows longer than a block's 1024 threads reach in one step (8 x 1024 bf16
  // values), the last step partial; a logit of 200 in the last warp's part
  // of a row (exp overflows unless the row's max is the block's).
  const Tensor targets = Tensor::from_vector(std::vector<int32_t>{0, 20001, -1}, {3});
  Tensor long_rows = random_tensor({3, 20008}, "logits", 2.0);
  long_rows.data<float>()[20008 + 20005] = 200.0f;
  cross_entropy_with_grad_matches_cpu(long_rows, targets);
}

// One element, one partial block, several, and every one of the 1024 partials.
TEST_F(CudaKernels, ReductionsMatchCpu) {
  for (int64_t n : {int64_t(1), int64_t(4097), int64_t(100003), int64_t(3000001)}) {
    SCOPED_TRACE(n);
    Tensor x = random_tensor({n}, "x");
    EXPECT_TRUE(same_as_cpu(sum(gpu(x)), sum(x), kF32, 1e-4));
    EXPECT_TRUE(same_as_cpu(squared_norm(gpu(x)), squared_norm(x), kF32, 0.0));
    EXPECT_TRUE(same_as_cpu(max(gpu(x)), max(x), 0.0, 0.0));
    Tensor negative = scale(mul(x, x), -1.0);  // every value <= 0: the max is not the identity 0
    EXPECT_TRUE(same_as_cpu(max(gpu(negative)), max(negative), 0.0, 0.0));
  }
  // The global norm over many tensors (two stage-1 launches: 32 tensors each at most), some
  // empty, small and large, and a view: against the CPU's f64 sum, rounded once.
  std::vector<Tensor> cpu_xs, gpu_xs;
  for (int64_t i = 0; i < 45; ++i) {
    const int64_t n = i % 7 == 3 ? 0 : i == 20 ? 300001 : 17 * i + 1;
    cpu_xs.push_back(random_tensor({n}, "many"));
    gpu_xs.push_back(gpu(cpu_xs.back()));
  }
  Tensor wide = random_tensor({40, 30}, "wide");
  cpu_xs.push_back(wide.slice(1, 3, 20)), gpu_xs.push_back(gpu(wide).slice(1, 3, 20));  // strided: copied first
  EXPECT_TRUE(same_as_cpu(squared_norm_total(gpu_xs), squared_norm_total(cpu_xs), 1e-7, 0.0));
  double by_tensor = 0.0;
  for (const Tensor& x : cpu_xs) by_tensor += squared_norm(x.to(DType::f64)).item();
  EXPECT_NEAR(squared_norm_total(gpu_xs).item(), by_tensor, 1e-6 * by_tensor);
}

TEST_F(CudaKernels, AdamWMatchesCpu) {
  Tensor p = random_tensor({4097}, "p"), g = random_tensor({4097}, "g");
  Tensor m = Tensor::zeros({4097}), v = Tensor::zeros({4097});
  Tensor pg = gpu(p), mg = gpu(m), vg = gpu(v), gg = gpu(g);
  AdamWParams hp;
  hp.lr = 1e-2f, hp.weight_decay = 0.1f;
  for (int64_t step = 1; step <= 3; ++step) {
    hp.step = step;
    adamw_update_(p, m, v, g, hp);
    adamw_update_(pg, mg, vg, gg, hp);
  }
  EXPECT_TRUE(same_as_cpu(pg, p, kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(mg, m, kF32, 1e-8));
  EXPECT_TRUE(same_as_cpu(vg, v, kF32, 1e-9));
  // With the bf16 copy written in the same pass.
  Tensor copy = Tensor::zeros({4097}, TensorOptions().dtype(DType::bf16)), copy_g = gpu(copy);
  hp.step = 4;
  adamw_update_(p, m, v, g, hp, &copy);
  adamw_update_(pg, mg, vg, gg, hp, &copy_g);
  EXPECT_TRUE(same_as_cpu(copy_g, copy, kBf16, 1e-2));
  EXPECT_TRUE(same_as_cpu(copy_g, pg.to(DType::bf16), 0.0, 0.0)) << "the copy is the cast of the updated masters";

  // 4097 elements from fresh buffers go four at a time, the last one alone; a
  // shard one element into its buffers is off the 16-byte grid: one at a time.
  auto tail = [](const Tensor& t) { return t.slice(0, 1, 4097); };
  Tensor ps = tail(p), ms = tail(m), vs = tail(v), copy_s = tail(copy);
  Tensor pgs = tail(pg), mgs = tail(mg), vgs = tail(vg), copy_gs = tail(copy_g);
  hp.step = 5;
  adamw_update_(ps, ms, vs, tail(g), hp, &copy_s);
  adamw_update_(pgs, mgs, vgs, tail(gg), hp, &copy_gs);
  EXPECT_TRUE(same_as_cpu(pg, p, kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(vg, v, kF32, 1e-9));
  EXPECT_TRUE(same_as_cpu(copy_g, pg.to(DType::bf16), 0.0, 0.0));

  // The gradient scale read on the device (ZeroOptimizer's clipping factor,
  // computed there): the same bits as the scale passed by value.
  const Tensor squares = Tensor::from_vector(std::vector<float>{7.5e4f}, {});
  const Tensor factor = clip_grad_factor(gpu(squares), 1.0);
  EXPECT_EQ(factor.item(), clip_grad_factor(squares, 1.0).item());
  hp.step = 6, hp.grad_scale = float(factor.item());
  adamw_update_(p, m, v, g, hp);
  hp.grad_scale = 123.0f, hp.grad_scale_at = factor.data<float>();  // the device's wins
  adamw_update_(pg, mg, vg, gg, hp);
  EXPECT_TRUE(same_as_cpu(pg, p, kF32, 1e-7));
  EXPECT_TRUE(same_as_cpu(mg, m, kF32, 1e-8));
  for (float inf_or_nan : {INFINITY, NAN}) {  // an overflow leaves the gradients as they are
    const Tensor overflowed = gpu(Tensor::from_vector(std::vector<float>{inf_or_nan}, {}));
    EXPECT_EQ(clip_grad_factor(overflowed, 1.0).item(), 1.0);
    EXPECT_TRUE(std::isnan(clip_grad_factor(overflowed, 1.0, 512.0, /*skip_on_overflow=*/true).item()));
  }
  // fp16's loss scale divided out on the device, as on the host.
  const Tensor scaled = Tensor::from_vector(std::vector<float>{7.5e4f * 512 * 512}, {});
  EXPECT_EQ(clip_grad_factor(gpu(scaled), 1.0, 512.0, true).item(), clip_grad_factor(scaled, 1.0, 512.0, true).item());
  // A NaN factor (an fp16 overflow) skips the update: nothing is written,
  // the 16-bit copy included.
  const Tensor skip = clip_grad_factor(gpu(Tensor::from_vector(std::vector<float>{INFINITY}, {})), 1.0, 512.0, true);
  const Tensor p_before = pg.clone(), m_before = mg.clone(), copy_before = copy_g.clone();
  hp.step = 7, hp.grad_scale_at = skip.data<float>();
  adamw_update_(pg, mg, vg, gg, hp, &copy_g);
  EXPECT_TRUE(same_as_cpu(pg, p_before.to(Device::cpu()), 0.0, 0.0));
  EXPECT_TRUE(same_as_cpu(mg, m_before.to(Device::cpu()), 0.0, 0.0));
  EXPECT_TRUE(same_as_cpu(copy_g, copy_before.to(Device::cpu()), 0.0, 0.0));
}

}  // namespace
}  // namespace sg
