// GELU inside cuBLASLt's epilogues (SG_GEMM_GELU_EPILOGUE=1,
// kernels/cuda/matmul_lt.cu): an MLP's first GEMM adds the bias, keeps
// GELU's input h and writes gelu(h); the GEMM making h's gradient
// multiplies by gelu'(h). Against the CPU twins (f32 1e-5, bf16 and f16
// 1e-2; a 16-bit dh 2e-2, as each side rounds it once more by its own
// path), with a count of the GEMMs that took an epilogue, and where the
// terms fail (the switch off, a width not a multiple of 8, a misaligned
// bias) the same results by the separate passes.
#include <cstdlib>
#include <optional>
#include <string>

#include "autograd/functions.h"
#include "kernels/cuda/matmul_lt.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using namespace test;  // gpu, random_tensor, same_as_cpu, kF32, kBf16

// Turns the switch on for a test and puts back what was there.
class CudaGeluEpilogue : public CudaTest {
 protected:
  void SetUp() override {
    CudaTest::SetUp();
    if (const char* was = std::getenv(kSwitch)) saved_ = was;
    setenv(kSwitch, "1", 1);
  }
  void TearDown() override {
    if (saved_) setenv(kSwitch, saved_->c_str(), 1);
    else unsetenv(kSwitch);
  }
  static constexpr const char* kSwitch = "SG_GEMM_GELU_EPILOGUE";
  std::optional<std::string> saved_;
};

// bf16: the CPU rounds x w to bf16 before it adds the bias (and dy w2
// before GELU's derivative), the GPU's epilogue only the result, so where
// the two terms cancel they differ by half a bf16 step of the larger one
// (products of about 5 here): absolute 5e-2, as the LayerNorm tests take.
double rtol(DType dtype) { return dtype == DType::f32 ? kF32 : kBf16; }
double atol(DType dtype) { return dtype == DType::f32 ? 1e-5 : 5e-2; }
double dh_rtol(DType dtype) { return dtype == DType::f32 ? kF32 : 2e-2; }

// h = x w^T + bias and y = gelu(h) (x (.., K), w (N, K) read transposed),
// then dh = (dy w2) * gelu'(h), on the CPU and the GPU: `epilogues` says
// how many of the two GPU GEMMs must have taken one.
void expect_gemms_match(const Tensor& x, const Tensor& w, const Tensor& bias, const Tensor& dy, const Tensor& w2,
                        DType dtype, int epilogues) {
  const Tensor xs = x.to(dtype), ws = w.to(dtype), b = bias.to(dtype), d = dy.to(dtype), v = w2.to(dtype);
  const int64_t before = cuda::lt_epilogue_gemms().gelu;
  const LinearGeluOutput cpu = matmul_bias_gelu(xs, ws.transpose(0, 1), b);
  const LinearGeluOutput got = matmul_bias_gelu(gpu(xs), gpu(ws).transpose(0, 1), gpu(b));
  EXPECT_TRUE(same_as_cpu(got.h, cpu.h, rtol(dtype), atol(dtype)));
  EXPECT_TRUE(same_as_cpu(got.y, cpu.y, rtol(dtype), atol(dtype)));
  EXPECT_FALSE(matmul_gelu_backward(d, v, cpu.h).defined()) << "on the CPU the caller takes the separate ops";
  Tensor dh = matmul_gelu_backward(gpu(d), gpu(v), got.h);
  EXPECT_EQ(dh.defined(), epilogues == 2);
  if (!dh.defined()) dh = gelu_backward(got.h, matmul(gpu(d), gpu(v)));  // what the MLP's backward does then
  EXPECT_TRUE(same_as_cpu(dh, gelu_backward(cpu.h, matmul(d, v)), dh_rtol(dtype), atol(dtype)));
  EXPECT_EQ(cuda::lt_epilogue_gemms().gelu - before, epilogues);
}

TEST_F(CudaGeluEpilogue, GemmsMatchCpu) {
  const Tensor x = random_tensor({2, 19, 24}, "x"), w = random_tensor({40, 24}, "w");
  const Tensor bias = random_tensor({40}, "bias"), dy = random_tensor({2, 19, 16}, "dy");
  const Tensor w2 = random_tensor({16, 40}, "w2");
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dtype));
    expect_gemms_match(x, w, bias, dy, w2, dtype, 2);
  }
}

TEST_F(CudaGeluEpilogue, SeparatePassesWhereTheTermsFail) {
  const Tensor x = random_tensor({21, 24}, "x"), dy = random_tensor({21, 16}, "dy");
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(dtype_name(dtype));
    {
      SCOPED_TRACE("width 36: not a multiple of 8");
      expect_gemms_match(x, random_tensor({36, 24}, "w"), random_tensor({36}, "bias"), dy, random_tensor({16, 36}, "v"),
                         dtype, 0);
    }
    {
      SCOPED_TRACE("a bias 2 bytes into its buffer (the GEMM's epilogue needs 16)");
      const Tensor flat = random_tensor({41}, "flat");
      const Tensor bias = flat.to(dtype).slice(0, 1, 41), gpu_bias = gpu(flat.to(dtype)).slice(0, 1, 41);
      const int64_t before = cuda::lt_epilogue_gemms().gelu;
      const LinearGeluOutput cpu = matmul_bias_gelu(x.to(dtype), random_tensor({24, 40}, "w").to(dtype), bias);
      const LinearGeluOutput got =
          matmul_bias_gelu(gpu(x.to(dtype)), gpu(random_tensor({24, 40}, "w").to(dtype)), gpu_bias);
      EXPECT_EQ(cuda::lt_epilogue_gemms().gelu, before);
      EXPECT_TRUE(same_as_cpu(got.y, cpu.y, rtol(dtype), atol(dtype)));
    }
    setenv("SG_GEMM_GELU_EPILOGUE", "0", 1);
    {
      SCOPED_TRACE("the switch off");
      expect_gemms_match(x, random_tensor({40, 24}, "w"), random_tensor({40}, "bias"), dy,
                         random_tensor({16, 40}, "v"), dtype, 0);
    }
    setenv("SG_GEMM_GELU_EPILOGUE", "1", 1);
  }
}

// The MLP node (autograd/functions.h) on the GPU against the CPU: its
// output and all five gradients, two epilogue GEMMs a forward and backward.
TEST_F(CudaGeluEpilogue, MlpNodeMatchesCpu) {
  const std::vector<std::pair<Shape, const char*>> inputs{
      {{3, 7, 24}, "x"}, {{64, 24}, "w1"}, {{64}, "b1"}, {{24, 64}, "w2"}, {{24}, "b2"}};
  for (DType dtype : {DType::f32, DType::bf16, DType::f16}) {
    SCOPED_TRACE(dtype_name(dtype));
    auto run = [&](Device device) {
      std::vector<Variable> v;
      for (const auto& [shape, name] : inputs) v.emplace_back(random_tensor(shape, name).to(dtype).to(device), true);
      Variable y = mlp(v[0], v[1], v[2], v[3], v[4]);
      sum(mul(y, y)).backward();
      std::vector<Tensor> out{y.data()};
      for (const Variable& input : v) out.push_back(input.grad());
      return out;
    };
    const std::vector<Tensor> cpu = run(Device::cpu());
    const int64_t before = cuda::lt_epilogue_gemms().gelu;
    const std::vector<Tensor> got = run(Device::cuda());
    EXPECT_EQ(cuda::lt_epilogue_gemms().gelu - before, 2);
    for (size_t i = 0; i < cpu.size(); ++i) {
      double scale = 0;
      for (float g : cpu[i].to_vector<float>()) scale = std::max(scale, double(std::abs(g)));
      EXPECT_TRUE(same_as_cpu(got[i], cpu[i], dh_rtol(dtype), dh_rtol(dtype) * scale)) << "output " << i;
    }
  }
}

}  // namespace
}  // namespace sg
