// The NCCL backend with a world of one on the GPU: every collective on CUDA
// tensors gives what the world-of-one semantics say, through a real NCCL
// communicator and its own stream. Skips without a GPU.
#include "dist/backends.h"
#include "tests/cuda/cuda_test_util.h"

namespace sg {
namespace {

using Nccl = test::CudaTest;

TEST_F(Nccl, CollectivesOnCudaTensorsInAWorldOfOne) {
  Communicator bootstrap(0, 1, make_local_backend());
  Communicator comm(0, 1, make_local_backend(), [&] { return make_nccl_backend(bootstrap, 0); });
  Tensor x = test::gpu(test::random_tensor({1000}, "x"));
  std::vector<float> before = x.to_vector<float>();
  comm.all_reduce(x)->wait();
  EXPECT_EQ(x.to_vector<float>(), before);
  Tensor gathered = Tensor::empty({1000}, TensorOptions().device(Device::cuda()));
  comm.all_gather(gathered, x)->wait();
  EXPECT_EQ(gathered.to_vector<float>(), before);
  Tensor scattered = Tensor::empty({1000}, TensorOptions().device(Device::cuda()).dtype(DType::bf16));
  comm.reduce_scatter(scattered, x.to(DType::bf16), ReduceOp::average)->wait();
  EXPECT_EQ(scattered.to_vector<bf16>()[7].bits, to_bf16(before[7]).bits);
  comm.broadcast(x, 0)->wait();
  EXPECT_EQ(x.to_vector<float>(), before);
  EXPECT_EQ(comm.stats()[CollectiveOp::all_gather].elements, 1000);
}

}  // namespace
}  // namespace sg
