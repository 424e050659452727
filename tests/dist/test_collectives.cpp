// Every collective on 1 to 4 ranks: values, dtypes (f32, bf16), sizes that do
// not divide by the world, averages, two collectives in flight, the counters,
// the divergence detector and the timeout.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "dist/backends.h"
#include "dist/shard_ops.h"
#include "dist/world.h"
#include "tensor/ops.h"
#include "tests/test_util.h"

namespace sg {
namespace {

Communicator& comm() { return world(); }

// Rank r's contribution: element i is 10 r + i % 10, small integers that
// bf16 holds exactly (as it does their sums over 4 ranks).
Tensor rank_values(int64_t n, DType dtype, int rank) {
  std::vector<float> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = float(rank * 10 + i % 10);
  return Tensor::from_vector(v, {n}).to(dtype);
}

class Collectives : public ::testing::TestWithParam<DType> {};

TEST_P(Collectives, AllGatherConcatenatesInRankOrder) {
  const int W = comm().world_size();
  Tensor input = rank_values(7, GetParam(), comm().rank());
  Tensor output = Tensor::empty({7 * W}, TensorOptions().dtype(GetParam()));
  comm().all_gather(output, input)->wait();
  std::vector<float> got = output.to_vector<float>();
  for (int r = 0; r < W; ++r)
    for (int i = 0; i < 7; ++i) ASSERT_EQ(got[size_t(r * 7 + i)], float(r * 10 + i)) << "rank " << r;
}

TEST_P(Collectives, AllReduceSumsAndAverages) {
  const int W = comm().world_size();
  Tensor x = rank_values(13, GetParam(), comm().rank());  // 13: no relation to the world size
  comm().all_reduce(x)->wait();
  Tensor y = rank_values(13, GetParam(), comm().rank());
  comm().all_reduce(y, ReduceOp::average)->wait();
  std::vector<float> sum = x.to_vector<float>(), mean = y.to_vector<float>();
  for (int i = 0; i < 13; ++i) {
    double expected = 10.0 * W * (W - 1) / 2 + double(W) * double(i % 10);
    EXPECT_NEAR(sum[size_t(i)], expected, 1e-2 * expected + 1e-6);
    EXPECT_NEAR(mean[size_t(i)], expected / W, 1e-2 * expected / W + 1e-6);
  }
}

TEST_P(Collectives, ReduceScatterGivesEachRankItsSliceOfTheSum) {
  const int W = comm().world_size(), R = comm().rank();
  Tensor input = rank_values(5 * W, GetParam(), R);
  Tensor output = Tensor::empty({5}, TensorOptions().dtype(GetParam()));
  comm().reduce_scatter(output, input, ReduceOp::average)->wait();
  std::vector<float> got = output.to_vector<float>();
  for (int i = 0; i < 5; ++i) {
    int64_t index = R * 5 + i;
    double expected = (10.0 * W * (W - 1) / 2 + double(W) * double(index % 10)) / W;
    EXPECT_NEAR(got[size_t(i)], expected, 1e-2 * expected + 1e-6);
  }
}

TEST_P(Collectives, BroadcastCopiesTheRootsTensor) {
  const int root = comm().world_size() - 1;
  Tensor x = rank_values(9, GetParam(), comm().rank());
  comm().broadcast(x, root)->wait();
  EXPECT_EQ(x.to_vector<float>(), rank_values(9, GetParam(), root).to_vector<float>());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, Collectives, ::testing::Values(DType::f32, DType::bf16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(ShardCollectives, UnevenShardsGatherAndScatterThroughThePadding) {
  const int W = comm().world_size(), R = comm().rank();
  // 10 x 3 = 30 elements: padded to a multiple of W, uneven for W = 4.
  Tensor whole = Tensor::arange(30).to(DType::f32).view({10, 3});
  Tensor shard = Tensor::empty_sharded({10, 3}, R, W);
  const Sharded& s = shard.layout().shard();
  Tensor local = shard.local();
  local.slice(0, 0, s.end - s.begin).copy_(whole.view({30}).slice(0, s.begin, s.end));
  Tensor gathered = gather_shards(comm(), shard);
  EXPECT_EQ(gathered.shape(), (Shape{10, 3}));
  EXPECT_EQ(gathered.to_vector<float>(), whole.to_vector<float>());
  // Every rank contributes `whole`; the sum's slice is W times this rank's part.
  Tensor mine = reduce_scatter_to_shard(comm(), whole, shard.layout());
  std::vector<float> got = mine.local().to_vector<float>();
  for (int64_t i = s.begin; i < s.end; ++i) EXPECT_EQ(got[size_t(i - s.begin)], float(W * i));
  for (int64_t i = s.end - s.begin; i < s.shard_size(); ++i) EXPECT_EQ(got[size_t(i)], 0.0f);  // padding stays zero
}

TEST(CollectiveWork, TwoCollectivesInFlightCompleteIndependently) {
  const int W = comm().world_size();
  Tensor a = Tensor::full({1000}, 1.0), b = Tensor::full({3}, 2.0);
  Tensor gathered = Tensor::empty({3 * W});
  WorkHandle first = comm().all_reduce(a);
  WorkHandle second = comm().all_gather(gathered, b);
  second->wait();  // out of issue order
  first->wait();
  EXPECT_EQ(a.at({999}), double(W));
  EXPECT_EQ(gathered.at({3 * W - 1}), 2.0);
  EXPECT_TRUE(first->completed());
}

TEST(CollectiveStats, CountCallsElementsAndRingBytes) {
  const int W = comm().world_size();
  comm().reset_stats();
  Tensor x = Tensor::zeros({8 * W});
  Tensor shard = Tensor::zeros({8});
  comm().all_reduce(x)->wait();
  comm().reduce_scatter(shard, x)->wait();
  comm().all_gather(x, shard)->wait();
  comm().all_gather(x, shard)->wait();
  const CommStats& s = comm().stats();
  int64_t bytes = 8 * W * 4;
  EXPECT_EQ(s[CollectiveOp::all_reduce].calls, 1);
  EXPECT_EQ(s[CollectiveOp::all_reduce].elements, 8 * W);
  EXPECT_EQ(s[CollectiveOp::all_reduce].bytes_sent, 2 * bytes * (W - 1) / W);
  EXPECT_EQ(s[CollectiveOp::reduce_scatter].elements, 8 * W);
  EXPECT_EQ(s[CollectiveOp::reduce_scatter].bytes_received, bytes * (W - 1) / W);
  EXPECT_EQ(s[CollectiveOp::all_gather].calls, 2);
  EXPECT_EQ(s[CollectiveOp::all_gather].elements, 16 * W);
  EXPECT_EQ(s.total_elements(), 4 * 8 * W);
  comm().reset_stats();
  EXPECT_EQ(comm().stats().total_elements(), 0);
}

TEST(CollectiveErrors, MismatchedBuffersAreClearErrors) {
  const int W = comm().world_size();
  Tensor out = Tensor::empty({3 * W + 1}), in = Tensor::empty({3});
  EXPECT_THROW(comm().all_gather(out, in), Error);
  Tensor ids = Tensor::zeros({4}, TensorOptions().dtype(DType::i32));
  EXPECT_THROW(comm().all_reduce(ids), Error);
  EXPECT_THROW(comm().broadcast(in, W), Error);
  Tensor strided = Tensor::zeros({4, 4}).transpose(0, 1);
  EXPECT_THROW(comm().all_reduce(strided), Error);
}

TEST(DivergenceDetector, NamesTheFirstCallWhereRanksDiffer) {
  if (comm().world_size() < 2) GTEST_SKIP() << "needs 2 or more ranks (CTest also runs it under mpirun -np 2..4)";
  comm().set_debug(true);
  Tensor x = Tensor::zeros({comm().rank() == 1 ? 5 : 4});  // rank 1 takes "another path"
  try {
    comm().all_reduce(x)->wait();
    ADD_FAILURE() << "expected the divergence to be reported";
  } catch (const Error& e) {
    std::string message = e.what();
    EXPECT_NE(message.find("diverged at collective #"), std::string::npos) << message;
    EXPECT_NE(message.find("rank 1: all_reduce of 5 f32 elements"), std::string::npos) << message;
    EXPECT_NE(message.find("rank 0: all_reduce of 4 f32 elements"), std::string::npos) << message;
  }
  comm().set_debug(false);
  // The check caught it before the mismatched collective ran: the ranks are still in step.
  comm().barrier()->wait();
}

TEST(Timeout, ACollectiveWaitingForAMissingRankThrowsNamingIt) {
  if (comm().world_size() < 2) GTEST_SKIP() << "needs 2 or more ranks (CTest also runs it under mpirun -np 2..4)";
  const double saved = comm().timeout();
  comm().set_timeout(0.3);
  Tensor x = Tensor::ones({6});
  if (comm().rank() == 1) std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // "never" joins in time
  WorkHandle work = comm().all_reduce(x);
  if (comm().rank() != 1) {
    try {
      work->wait();
      ADD_FAILURE() << "expected a timeout";
    } catch (const Error& e) {
      std::string message = e.what();
      EXPECT_NE(message.find("all_reduce of 6 f32 elements on rank " + std::to_string(comm().rank())), std::string::npos)
          << message;
      EXPECT_NE(message.find("timed out after 0.3 s"), std::string::npos) << message;
    }
  }
  comm().set_timeout(saved);
  work->set_timeout(saved);
  work->wait();  // rank 1 arrives at last: the same collective completes
  EXPECT_EQ(x.at({0}), double(comm().world_size()));
}

}  // namespace
}  // namespace sg

namespace sg {
namespace {

// The staged backend (dist/staged_backend.cpp) copies a collective's
// tensors into pinned host buffers, runs the host backend on them and
// copies the results back. The same values as the host backend itself, on
// CPU tensors here, and on CUDA tensors where a GPU is visible: that is how
// several ranks sharing one GPU reduce CUDA gradients.
std::unique_ptr<Backend> host_backend() {
#ifdef SG_MPI
  if (launched_by_mpi()) return make_mpi_backend();
#endif
  return make_local_backend();
}

void expect_collectives_agree(Communicator& staged, Device device, DType dtype) {
  const int W = staged.world_size(), R = staged.rank();
  SCOPED_TRACE(device.str() + " " + std::string(dtype_name(dtype)));
  Tensor input = rank_values(7, dtype, R).to(device);
  Tensor gathered = Tensor::empty({7 * W}, TensorOptions().dtype(dtype).device(device));
  staged.all_gather(gathered, input)->wait();
  EXPECT_EQ(gathered.device(), device);
  std::vector<float> got = gathered.to_vector<float>();
  for (int r = 0; r < W; ++r)
    for (int i = 0; i < 7; ++i) ASSERT_EQ(got[size_t(r * 7 + i)], float(r * 10 + i)) << "rank " << r;

  Tensor sum = rank_values(13, dtype, R).to(device);
  staged.all_reduce(sum, ReduceOp::average)->wait();
  std::vector<float> mean = sum.to_vector<float>();
  for (int i = 0; i < 13; ++i) EXPECT_NEAR(mean[size_t(i)], 10.0 * (W - 1) / 2 + double(i % 10), 1e-2 * W * 10);

  Tensor big = rank_values(5 * W, dtype, R).to(device);
  Tensor slice = Tensor::empty({5}, TensorOptions().dtype(dtype).device(device));
  staged.reduce_scatter(slice, big)->wait();
  std::vector<float> mine = slice.to_vector<float>();
  for (int i = 0; i < 5; ++i) {
    EXPECT_NEAR(mine[size_t(i)], 10.0 * W * (W - 1) / 2 + double(W) * double((R * 5 + i) % 10), 1e-2 * W * 40);
  }

  Tensor x = rank_values(9, dtype, R).to(device);
  staged.broadcast(x, W - 1)->wait();
  EXPECT_EQ(x.to_vector<float>(), rank_values(9, dtype, W - 1).to_vector<float>());
  staged.barrier()->wait();
}

TEST(CudaCollectivesChoice, FollowsTheRule) {
  using C = CudaCollectives;
  EXPECT_EQ(choose_cuda_collectives(false, 1, 1, true, ""), C::local);     // no launcher: a world of one
  EXPECT_EQ(choose_cuda_collectives(true, 8, 8, true, ""), C::nccl);       // a GPU per rank
  EXPECT_EQ(choose_cuda_collectives(true, 4, 1, true, ""), C::staged_mpi); // four ranks on one GPU
  EXPECT_EQ(choose_cuda_collectives(true, 2, 2, false, ""), C::staged_mpi);  // no NCCL in the build
  EXPECT_EQ(choose_cuda_collectives(true, 2, 2, true, "mpi"), C::staged_mpi);
  EXPECT_EQ(choose_cuda_collectives(true, 2, 2, true, "nccl"), C::nccl);
  EXPECT_THROW(choose_cuda_collectives(true, 4, 1, true, "nccl"), Error);  // NCCL cannot share a GPU
  EXPECT_THROW(choose_cuda_collectives(true, 2, 2, false, "nccl"), Error);
  EXPECT_THROW(choose_cuda_collectives(true, 2, 2, true, "gloo"), Error);
}

// With a GPU per rank, the NCCL backend refuses a tensor on another GPU than
// its own: ordered by that GPU's stream, it could be read before it is
// written. Every rank misplaces its tensor, so every rank throws and none is
// left waiting in the collective.
TEST(CudaNccl, ATensorOnAnotherGpuThanTheRanksIsRefused) {
  const int gpus = cuda_device_count();
  const char* forced = std::getenv("SG_CUDA_COLLECTIVES");
  if (gpus < 2 || comm().world_size() < 2 || forced == nullptr || std::string(forced) != "nccl") {
    GTEST_SKIP() << "needs NCCL and a GPU per rank; the emulator build runs it as Dist.CudaNcclRanks2 and 4";
  }
  const Device elsewhere = Device::cuda((local_cuda_device().index + 1) % gpus);
  Tensor misplaced = Tensor::ones({8}, TensorOptions().device(elsewhere));
  try {
    comm().all_reduce(misplaced);
    ADD_FAILURE() << "an all-reduce of a tensor on " << elsewhere.str() << " was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("local_cuda_device()"), std::string::npos) << e.what();
  }
  Tensor placed = Tensor::ones({8}, TensorOptions().device(local_cuda_device()));
  comm().all_reduce(placed)->wait();
  EXPECT_EQ(placed.to_vector<float>()[0], float(comm().world_size()));
}

TEST(StagedBackend, CarriesEveryCollectiveOfCpuTensorsLikeItsHost) {
  const int64_t before = memory_stats(Device::cpu())[MemoryCategory::communication].live;
  reset_peak_memory(Device::cpu());
  Communicator staged(comm().rank(), comm().world_size(), make_staged_backend(host_backend()));
  for (DType dtype : {DType::f32, DType::bf16}) expect_collectives_agree(staged, Device::cpu(), dtype);
  // The staging buffers are counted (communication) and given back.
  EXPECT_GT(memory_stats(Device::cpu())[MemoryCategory::communication].peak, before);
  EXPECT_EQ(memory_stats(Device::cpu())[MemoryCategory::communication].live, before);
}

TEST(StagedBackend, CarriesCudaTensorsThroughPinnedHostMemory) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible: the CPU test above covers the staging logic";
  Communicator staged(comm().rank(), comm().world_size(), host_backend(),
                      [] { return make_staged_backend(host_backend()); });
  for (DType dtype : {DType::f32, DType::bf16}) expect_collectives_agree(staged, Device::cuda(), dtype);
  Tensor pinned = Tensor::empty({4}, TensorOptions().pinned(true));
  EXPECT_TRUE(pinned.is_pinned());
}

}  // namespace
}  // namespace sg
