// The PTX fragment layouts the tensor-core attention relies on
// (kernels/cuda/mma.cuh), held against the PTX ISA's figures as
// tools/cuda_emu/mma.h writes them out. On a GPU these check the reading of
// the ISA; in the emulator, that the emulator implements that reading. A
// fused-attention failure on a GPU with these passing is the kernel's.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_check.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/fragment_kernels.h"
#include "tests/cuda/wgmma_kernels.h"

namespace sg {
namespace {

using TensorCoreFragments = test::CudaTest;

// n elements of device memory, freed at scope exit.
template <typename T>
class DeviceArray {
 public:
  explicit DeviceArray(const std::vector<T>& host) : n_(host.size()) {
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&data_), n_ * sizeof(T)));
    CUDA_CHECK(cudaMemcpy(data_, host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
  }
  ~DeviceArray() { cudaFree(data_); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  T* get() { return data_; }
  std::vector<T> download() const {
    std::vector<T> host(n_);
    CUDA_CHECK(cudaMemcpy(host.data(), data_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

 private:
  T* data_ = nullptr;
  size_t n_;
};

// Registers filled from the documented layout give the plain product (each
// value a small integer or half-integer, so every sum is exact).
TEST_F(TensorCoreFragments, MmaM16n8k16ProductInThePtxLayout) {
  std::vector<__nv_bfloat16> a(256), b(128);
  std::vector<float> expected(128, 0.0f);
  for (int i = 0; i < 256; ++i) a[size_t(i)] = __float2bfloat16_rn(float(i % 7) - 3.0f);
  for (int i = 0; i < 128; ++i) b[size_t(i)] = __float2bfloat16_rn(float(i % 5) * 0.5f + float(i / 64));
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 8; ++n) {
      for (int k = 0; k < 16; ++k) {
        expected[size_t(r * 8 + n)] += __bfloat162float(a[size_t(r * 16 + k)]) * __bfloat162float(b[size_t(k * 8 + n)]);
      }
    }
  }
  DeviceArray<__nv_bfloat16> d_a(a), d_b(b);
  DeviceArray<float> d_d(std::vector<float>(128, -1.0f));
  test::mma_product(d_d.get(), d_a.get(), d_b.get());
  EXPECT_EQ(d_d.download(), expected);
}

// ldmatrix .x4 with and without .trans: element (r, c) of the 16x16 matrix
// holds 16 r + c, so each register names the two elements it received.
TEST_F(TensorCoreFragments, LdmatrixX4InThePtxLayout) {
  std::vector<uint16_t> matrix(256);
  for (int i = 0; i < 256; ++i) matrix[size_t(i)] = uint16_t(i);
  DeviceArray<uint16_t> d_matrix(matrix);
  for (const bool transpose : {false, true}) {
    DeviceArray<uint32_t> out(std::vector<uint32_t>(128, 0xffffffffu));
    test::ldmatrix_registers(out.get(), d_matrix.get(), transpose);
    const std::vector<uint32_t> registers = out.download();
    for (int lane = 0; lane < 32; ++lane) {
      for (int i = 0; i < 4; ++i) {
        const int row0 = 8 * (i % 2), col0 = 8 * (i / 2);
        // Without .trans: row lane / 4, columns 2 (lane % 4) and + 1.
        // With .trans: rows 2 (lane % 4) and + 1, column lane / 4.
        const int low = transpose ? 16 * (row0 + 2 * (lane % 4)) + col0 + lane / 4
                                  : 16 * (row0 + lane / 4) + col0 + 2 * (lane % 4);
        const int high = transpose ? low + 16 : low + 1;
        EXPECT_EQ(registers[size_t(4 * lane + i)], uint32_t(low) | uint32_t(high) << 16)
            << (transpose ? ".trans" : "") << " lane " << lane << " register " << i;
      }
    }
  }
}

// Hopper's warpgroup MMA (kernels/cuda/wgmma.cuh): only on compute
// capability 9.0 (the emulator plays an H100).
class WgmmaFragments : public TensorCoreFragments {
 protected:
  void SetUp() override {
    TensorCoreFragments::SetUp();
    if (IsSkipped()) return;
    int device = 0, major = 0, minor = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    if (major != 9 || minor != 0) GTEST_SKIP() << "wgmma needs compute capability 9.0; this GPU is " << major << "." << minor;
  }
};

// The three forms the attention kernels issue: A and B K-major in shared
// memory (S = Q K^T), the same 32 columns wide (dK/dV's S^T), and A in
// registers with B N-major (O += P V), each as two
// products (the first ignoring the accumulators' -1s, the second adding):
// d = 2 a b, exact for these small values. For the K-major and N-major
// forms, the other reading of the descriptor's strides must give something
// else (so this tells them apart), and if the GPU takes that one, the
// failure says so.
TEST_F(WgmmaFragments, ProductsInThePtxLayouts) {
  std::vector<__nv_bfloat16> a(64 * 16), b(16 * 64);
  std::vector<float> expected(64 * 64, 0.0f);
  for (int i = 0; i < 64 * 16; ++i) a[size_t(i)] = __float2bfloat16_rn(float(i % 7) - 3.0f);
  for (int i = 0; i < 16 * 64; ++i) b[size_t(i)] = __float2bfloat16_rn(float(i % 5) * 0.5f + float(i / 256));
  for (int m = 0; m < 64; ++m) {
    for (int n = 0; n < 64; ++n) {
      for (int k = 0; k < 16; ++k) {
        expected[size_t(m * 64 + n)] +=
            2.0f * __bfloat162float(a[size_t(m * 16 + k)]) * __bfloat162float(b[size_t(k * 64 + n)]);
      }
    }
  }
  DeviceArray<__nv_bfloat16> d_a(a), d_b(b);
  auto product = [&](test::WgmmaForm form, bool swap) {
    DeviceArray<float> d(std::vector<float>(64 * 64, 0.0f));
    test::wgmma_product(d.get(), d_a.get(), d_b.get(), form, swap);
    return d.download();
  };
  // A form read as wgmma.cuh reads the descriptors must give the product,
  // and read the other way round must not (else the probe proves nothing);
  // if the GPU takes the other reading, the failure says which to swap.
  auto expect_the_documented_reading = [&](test::WgmmaForm form, const char* what, const char* major) {
    const std::vector<float> documented = product(form, false), other = product(form, true);
    EXPECT_NE(other, expected) << "the probe cannot tell the two readings of a " << major << " descriptor apart";
    EXPECT_EQ(documented, expected)
        << what
        << (other == expected ? std::string(": the GPU reads a ") + major +
                                    " operand's LBO along M or N and SBO along K, not as kernels/cuda/wgmma.cuh's "
                                    "shared_operand and tools/cuda_emu/wgmma.h assume: swap them for " + major +
                                    " operands there"
                              : std::string());
  };
  expect_the_documented_reading(test::WgmmaForm::kSharedK64, "A and B K-major in shared memory", "K-major");
  std::vector<float> left_half = expected;  // m64n32k16: columns 32.. stay 0
  for (int m = 0; m < 64; ++m) std::fill(left_half.begin() + m * 64 + 32, left_half.begin() + m * 64 + 64, 0.0f);
  EXPECT_EQ(product(test::WgmmaForm::kSharedK32, false), left_half) << "m64n32k16, both K-major";
  expect_the_documented_reading(test::WgmmaForm::kRegistersN64, "A in registers, B N-major", "N-major");
}

}  // namespace
}  // namespace sg
