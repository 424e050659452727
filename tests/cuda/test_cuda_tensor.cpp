// CUDA tensors: transfers, casts and copies bit for bit equal to the CPU's,
// Philox fills with the CPU's bits, and memory counted on the GPU.
#include <cmath>
#include <cstdlib>
#include <string>

#include "tensor/pending_read.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using test::gpu;
using test::random_tensor;
using CudaTensor = test::CudaTest;

TEST_F(CudaTensor, RoundTripThroughTheGpuIsExact) {
  Tensor x = random_tensor({7, 9}, "x");
  Tensor back = gpu(x).to(Device::cpu());
  EXPECT_EQ(back.to_vector<float>(), x.to_vector<float>());
  EXPECT_EQ(gpu(x).str(), "f32[7, 9] cuda:0");
  EXPECT_EQ(gpu(x).at({3, 4}), x.at({3, 4}));
}

TEST_F(CudaTensor, CastsMatchTheCpuBitForBit) {
  Tensor x = random_tensor({1000}, "x", 100.0);
  for (DType to : {DType::bf16, DType::f16, DType::i32, DType::i64, DType::f64}) {
    Tensor cpu_cast = x.to(to), gpu_cast = gpu(x).to(to);
    EXPECT_EQ(gpu_cast.to(Device::cpu()).to_vector<float>(), cpu_cast.to_vector<float>()) << dtype_name(to);
    EXPECT_EQ(gpu_cast.to(DType::f32).to_vector<float>(), cpu_cast.to(DType::f32).to_vector<float>()) << dtype_name(to);
  }
}

TEST_F(CudaTensor, StridedCopiesAndFillsMatchTheCpu) {
  Tensor x = random_tensor({3, 4, 5}, "x");
  Tensor view = x.permute({2, 0, 1}).slice(0, 1, 4);
  Tensor gpu_view = gpu(x).permute({2, 0, 1}).slice(0, 1, 4);
  EXPECT_EQ(gpu_view.contiguous().to_vector<float>(), view.contiguous().to_vector<float>());
  Tensor target = Tensor::zeros({4, 6}), gpu_target = gpu(target);
  target.slice(1, 2, 5).fill_(3.0);
  gpu_target.slice(1, 2, 5).fill_(3.0);
  EXPECT_EQ(gpu_target.to_vector<float>(), target.to_vector<float>());
  EXPECT_EQ(Tensor::full({3}, 0.1, TensorOptions().dtype(DType::bf16).device(Device::cuda())).to_vector<bf16>()[2].bits,
            to_bf16(0.1f).bits);
}

// The planned copies (kernels/copy_plan.h): 16-, 8- and 4-byte words and
// plain memory copies, against the CPU's element-by-element copy. (Offsets
// past 2^31 words take the same kernel with a 64-bit index type.)
TEST_F(CudaTensor, PlannedCopiesMatchTheCpuInEveryWordSize) {
  const int64_t B = 2, T = 33, NH = 3, HS = 64, C = NH * HS;
  for (DType dtype : {DType::bf16, DType::f32}) {
    Tensor qkv = random_tensor({B, T, 3 * C}, "qkv").to(dtype), gpu_qkv = gpu(qkv);
    auto head_major = [&](const Tensor& x, int64_t part) {  // as tensor/ops_attention.cpp: 16-byte words
      return x.view({B, T, 3, NH, HS}).slice(2, part, part + 1).transpose(1, 3).contiguous();
    };
    for (int64_t part : {0, 1, 2}) {
      EXPECT_EQ(head_major(gpu_qkv, part).to(Device::cpu()).to(DType::f32).to_vector<float>(),
                head_major(qkv, part).to(DType::f32).to_vector<float>()) << dtype_name(dtype) << " part " << part;
    }
    // Off the 16-byte grid by one element (8- or 4-byte words, or elements), and an odd inner run.
    Tensor shifted = qkv.view({B * T * 3 * C}).slice(0, 1, 1 + B * T * C).view({B, T, NH, HS}).transpose(1, 2);
    Tensor gpu_shifted = gpu_qkv.view({B * T * 3 * C}).slice(0, 1, 1 + B * T * C).view({B, T, NH, HS}).transpose(1, 2);
    EXPECT_EQ(gpu_shifted.contiguous().to(Device::cpu()).to(DType::f32).to_vector<float>(),
              shifted.contiguous().to(DType::f32).to_vector<float>()) << dtype_name(dtype);
    Tensor odd = qkv.slice(2, 3, 3 + 37), gpu_odd = gpu_qkv.slice(2, 3, 3 + 37);
    EXPECT_EQ(gpu_odd.contiguous().to(Device::cpu()).to(DType::f32).to_vector<float>(),
              odd.contiguous().to(DType::f32).to_vector<float>()) << dtype_name(dtype);
    // Contiguous into contiguous (a memory copy), and into a strided destination.
    Tensor copy = Tensor::empty(qkv.shape(), TensorOptions().dtype(dtype).device(Device::cuda()));
    copy.copy_(gpu_qkv);
    EXPECT_EQ(copy.to(Device::cpu()).to(DType::f32).to_vector<float>(), qkv.to(DType::f32).to_vector<float>());
    Tensor target = Tensor::zeros({B, NH, T, HS}, TensorOptions().dtype(dtype)), gpu_target = gpu(target);
    auto write_k = [&](Tensor& into, const Tensor& from) {  // as write_part in tensor/ops_attention.cpp
      into.view({B, NH, 1, T, HS}).transpose(1, 3).copy_(from.view({B, T, 3, NH, HS}).slice(2, 1, 2));
    };
    write_k(target, qkv);
    write_k(gpu_target, gpu_qkv);
    EXPECT_EQ(gpu_target.to(Device::cpu()).to(DType::f32).to_vector<float>(), target.to(DType::f32).to_vector<float>());
  }
}

TEST_F(CudaTensor, PhiloxFillsGiveTheCpuBits) {
  Tensor cpu_tensor = Tensor::empty({1001, 33});
  Tensor gpu_tensor = Tensor::empty({1001, 33}, TensorOptions().device(Device::cuda()));
  fill_normal_(cpu_tensor, 9, "h.3.mlp.c_fc.weight", 0.0, 0.02);
  fill_normal_(gpu_tensor, 9, "h.3.mlp.c_fc.weight", 0.0, 0.02);
  EXPECT_EQ(gpu_tensor.to_vector<float>(), cpu_tensor.to_vector<float>());
  fill_uniform_(cpu_tensor, 9, "u", -0.5, 0.5);
  fill_uniform_(gpu_tensor, 9, "u", -0.5, 0.5);
  EXPECT_EQ(gpu_tensor.to_vector<float>(), cpu_tensor.to_vector<float>());
  // A CUDA shard equals the same slice of the CPU whole.
  Tensor shard = Tensor::empty_sharded({1001, 33}, 2, 3, TensorOptions().device(Device::cuda()));
  fill_uniform_(shard, 9, "u", -0.5, 0.5);
  std::vector<float> local = shard.local().to_vector<float>(), all = cpu_tensor.to_vector<float>();
  const Sharded& s = shard.layout().shard();
  for (int64_t i = s.begin; i < s.end; ++i) ASSERT_EQ(local[size_t(i - s.begin)], all[size_t(i)]);
}

TEST_F(CudaTensor, GpuMemoryIsCountedPerCategory) {
  MemoryStats before = memory_stats(Device::cuda(0));
  Tensor p = Tensor::empty({256, 4}, TensorOptions().device(Device::cuda()).category(MemoryCategory::parameter));
  MemoryStats during = memory_stats(Device::cuda(0));
  EXPECT_EQ(during[MemoryCategory::parameter].live - before[MemoryCategory::parameter].live, 4096);
  p = Tensor();
  EXPECT_EQ(memory_stats(Device::cuda(0))[MemoryCategory::parameter].live, before[MemoryCategory::parameter].live);
}

TEST_F(CudaTensor, MixingDevicesIsAClearError) {
  Tensor a = random_tensor({4}, "a");
  EXPECT_THROW(add(a, gpu(a)), Error);
}

TEST_F(CudaTensor, F64IsCpuOnlyForOpsButConvertsAndMoves) {
  Tensor a = random_tensor({4}, "a").to(DType::f64);
  EXPECT_EQ(gpu(a).to_vector<double>(), a.to_vector<double>());
  EXPECT_THROW(gelu(gpu(a)), Error);
}

// Pinned host memory: uploads without blocking keep their source until the
// copy ran (the cache cannot hand the block out under it), and the caching
// allocator serves a freed block again without the driver.
TEST_F(CudaTensor, PinnedUploadsAndTheCachingAllocator) {
  std::vector<Tensor> uploads;
  for (int i = 0; i < 20; ++i) {
    Tensor host = Tensor::empty({1 << 16}, TensorOptions().pinned(true));
    ASSERT_TRUE(host.is_pinned());
    host.fill_(double(i));
    uploads.push_back(host.to(Device::cuda(), /*non_blocking=*/true));
  }  // every host tensor is dropped at once; their blocks return to the cache after their copies
  for (int i = 0; i < 20; ++i) EXPECT_EQ(uploads[size_t(i)].to_vector<float>()[777], float(i));

  empty_cache(Device::cuda());
  EXPECT_EQ(cached_bytes(Device::cuda()), 0);
  const char* cache_setting = std::getenv("SG_CUDA_CACHE");
  if (cache_setting != nullptr && std::string(cache_setting) == "0") return;  // the cache is off: nothing to reuse
  void* first = nullptr;
  {
    Tensor a = Tensor::empty({1000, 1000}, TensorOptions().device(Device::cuda()));
    first = a.data_ptr();
  }
  EXPECT_GE(cached_bytes(Device::cuda()), 4000000);
  Tensor b = Tensor::empty({1000, 1000}, TensorOptions().device(Device::cuda()));
  EXPECT_EQ(b.data_ptr(), first) << "the freed block serves the same size again";
}

// Reads queued for later (tensor/pending_read.h): the values as they were
// when the read was queued, even when the source changes or is freed
// afterwards, and a strided source read as if contiguous. Dropped unread,
// the pinned buffer still outlives its copy.
TEST_F(CudaTensor, PendingReadsGiveTheValuesAsQueued) {
  Tensor x = gpu(random_tensor({5, 6}, "x"));
  PendingRead whole(x), column(x.slice(1, 2, 3));
  const std::vector<float> expected = x.to_vector<float>();
  x.fill_(7.0);
  for (int i = 0; i < 10; ++i) PendingRead dropped(gpu(random_tensor({1 << 14}, "dropped")));
  x = Tensor();
  EXPECT_EQ(whole.get().device(), Device::cpu());
  EXPECT_EQ(whole.get().to_vector<float>(), expected);
  EXPECT_EQ(column.get().shape(), (Shape{5, 1}));
  for (int64_t row = 0; row < 5; ++row) EXPECT_EQ(column.get().at({row, 0}), expected[size_t(row * 6 + 2)]);
}

// SG_POISON=1 on the GPU: a block reused from the cache comes as NaN, not
// as the freed tensor left it (the fill runs in stream order, after the
// block's last use).
TEST_F(CudaTensor, PoisonFillsReusedDeviceMemory) {
  const bool was = poison_memory();
  set_poison_memory(true);
  {
    Tensor a = Tensor::empty({4096}, TensorOptions().device(Device::cuda()));
    a.fill_(1.0);
  }
  Tensor b = Tensor::empty({4096}, TensorOptions().device(Device::cuda()));
  for (float v : b.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  set_poison_memory(was);
}

}  // namespace
}  // namespace sg
