// The SIMT emulator (tools/cuda_emu) against what a GPU does: barriers,
// shuffles, indices, dynamic shared memory, and the faults it must report
// rather than hide. These run only in the emulator build (build-emu).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>
#include <nccl.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <numeric>
#include <vector>

#include "kernels/error.h"
#include "tests/cuda_emu/simt_kernels.h"
#include "tools/cuda_emu/runtime.h"
#include "tools/cuda_emu/simt.h"

namespace sg::emu_test {
namespace {

// A device buffer of n elements, freed at scope exit.
template <typename T>
struct DeviceBuffer {
  T* data = nullptr;
  size_t n;
  explicit DeviceBuffer(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&data), n * sizeof(T)), cudaSuccess);
  }
  ~DeviceBuffer() { cudaFree(data); }
  void upload(const std::vector<T>& host) {
    ASSERT_EQ(cudaMemcpy(data, host.data(), n * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<T> download() const {
    std::vector<T> host(n);
    EXPECT_EQ(cudaMemcpy(host.data(), data, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }
};

TEST(Simt, SharedMemoryTreeWaitsAtEveryBarrier) {
  const int blocks = 3, threads = 256;
  std::vector<float> in(size_t(blocks * threads));
  std::iota(in.begin(), in.end(), 0.0f);
  DeviceBuffer<float> d_in{in.size()}, d_out{size_t(blocks)};
  d_in.upload(in);
  block_sums(d_out.data, d_in.data, blocks, threads);
  const std::vector<float> out = d_out.download();
  for (int b = 0; b < blocks; ++b) {
    float expected = 0.0f;
    for (int t = 0; t < threads; ++t) expected += in[size_t(b * threads + t)];
    EXPECT_EQ(out[size_t(b)], expected) << "block " << b;
  }
}

TEST(Simt, ShuffleXorSumsTheWarp) {
  DeviceBuffer<float> out(32);
  warp_sums(out.data, 32);
  for (float value : out.download()) EXPECT_EQ(value, 496.0f);  // 0 + 1 + ... + 31
}

TEST(Simt, ShuffleWithReturnedLanesIsReported) {
  DeviceBuffer<float> out(32);
  try {
    warp_sums(out.data, 16);
    FAIL() << "a full-mask shuffle after half the warp returned must be reported";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("have returned or do not exist"), std::string::npos) << error.what();
  }
}

TEST(Simt, TwoDimensionalGridsAndBlocksIndexLikeCuda) {
  const unsigned gx = 3, gy = 2, bx = 8, by = 4;
  DeviceBuffer<int32_t> out(size_t(gx * gy * bx * by));
  thread_ids(out.data, gx, gy, bx, by);
  const std::vector<int32_t> ids = out.download();
  for (unsigned block = 0; block < gx * gy; ++block) {
    for (unsigned thread = 0; thread < bx * by; ++thread) {
      EXPECT_EQ(ids[block * bx * by + thread], int32_t(block * 1000 + thread));
    }
  }
}

TEST(Simt, BarrierNoThreadCanPassIsReportedNotHung) {
  DeviceBuffer<int32_t> out(32);
  try {
    split_barrier(out.data);
    FAIL() << "threads split between __syncthreads and __syncwarp must be reported";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("can never open"), std::string::npos) << error.what();
  }
}

TEST(Simt, DynamicSharedMemory) {
  const int n = 100;
  std::vector<float> in(n);
  std::iota(in.begin(), in.end(), 1.0f);
  DeviceBuffer<float> d_in(n), d_out(n);
  d_in.upload(in);
  reverse_in_shared(d_out.data, d_in.data, n);
  const std::vector<float> out = d_out.download();
  for (int i = 0; i < n; ++i) EXPECT_EQ(out[size_t(i)], in[size_t(n - 1 - i)]);
}

// Over 48 KiB of dynamic shared memory only after cudaFuncSetAttribute
// allowed the kernel that much (and never past 227 KiB, an H100's), as a
// GPU refuses the launch.
TEST(Simt, LargeDynamicSharedMemoryNeedsTheKernelsAttribute) {
  const int n = 14000;  // 56,000 bytes
  std::vector<float> in(n);
  std::iota(in.begin(), in.end(), 1.0f);
  DeviceBuffer<float> d_in(n), d_out(n);
  d_in.upload(in);
  EXPECT_THROW(reverse_in_large_shared(d_out.data, d_in.data, n), Error);
  EXPECT_EQ(allow_large_reverse(40000), cudaSuccess);
  EXPECT_THROW(reverse_in_large_shared(d_out.data, d_in.data, n), Error);
  EXPECT_EQ(allow_large_reverse(228 * 1024), cudaErrorInvalidValue);
  EXPECT_EQ(allow_large_reverse(n * int(sizeof(float))), cudaSuccess);
  reverse_in_large_shared(d_out.data, d_in.data, n);
  const std::vector<float> out = d_out.download();
  for (int i = 0; i < n; ++i) ASSERT_EQ(out[size_t(i)], in[size_t(n - 1 - i)]);
}

// The translator rewrites launches, not text that looks like one.
TEST(Simt, TranslatorLeavesCommentsAndStringsAndReadsNestedTemplates) {
  DeviceBuffer<int32_t> out(40);
  EXPECT_STREQ(nested_template_launch(out.data, 40), "kernel<<<1, 1>>>(out) in a string");
  const std::vector<int32_t> values = out.download();
  for (int i = 0; i < 40; ++i) EXPECT_EQ(values[size_t(i)], 3 * i);
}

TEST(Simt, LaunchTheGpuWouldRefuseThrows) {
  DeviceBuffer<float> out(1);
  EXPECT_THROW(launch_too_many_threads(out.data), Error);
  try {
    too_much_shared_memory(out.data);
    FAIL() << "64 KiB of __shared__ arrays in a block must be reported";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("65536 bytes of shared memory"), std::string::npos) << error.what();
  }
}

// A 16x16x16 product on (emulated) tensor cores, and the race WMMA code
// must avoid: reading what store_matrix_sync wrote before a __syncwarp, when
// the other lanes' shares may not be there yet (here: NaN, the fresh array).
TEST(Simt, WmmaProductAndAMissingSyncwarp) {
  std::vector<__nv_bfloat16> a(256), b(256);
  std::vector<float> expected(256, 0.0f);
  for (int i = 0; i < 256; ++i) {
    a[size_t(i)] = __float2bfloat16_rn(float(i % 7) - 3.0f);
    b[size_t(i)] = __float2bfloat16_rn(float(i % 5) * 0.5f);
  }
  for (int r = 0; r < 16; ++r) {
    for (int n = 0; n < 16; ++n) {
      for (int k = 0; k < 16; ++k) {  // b is column-major: (k, n) at n * 16 + k
        expected[size_t(r * 16 + n)] += __bfloat162float(a[size_t(r * 16 + k)]) * __bfloat162float(b[size_t(n * 16 + k)]);
      }
    }
  }
  DeviceBuffer<__nv_bfloat16> d_a(256), d_b(256);
  DeviceBuffer<float> d_c(256);
  d_a.upload(a);
  d_b.upload(b);
  wmma_product(d_c.data, d_a.data, d_b.data, true);
  EXPECT_EQ(d_c.download(), expected);
  wmma_product(d_c.data, d_a.data, d_b.data, false);
  const std::vector<float> racy = d_c.download();
  EXPECT_TRUE(std::any_of(racy.begin(), racy.end(), [](float x) { return std::isnan(x); }));
}

// cp.async happens at the wait: a read before it sees the old bytes, which
// a GPU may or may not show; a copy with nothing to read fills zeros.
// With early copies (scripts/test.sh's second pass) it lands at its issue.
TEST(Simt, AsyncCopyLandsAtTheWait) {
  DeviceBuffer<float> in(4), out(12);
  in.upload({1.0f, 2.0f, 3.0f, 4.0f});
  sg_emu::set_early_async_copies(false);
  async_copy_before_and_after_wait(out.data, in.data);
  const std::vector<float> expected{-1.0f, -1.0f, -1.0f, -1.0f, 1.0f, 2.0f, 3.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  EXPECT_EQ(out.download(), expected);
  sg_emu::set_early_async_copies(true);
  async_copy_before_and_after_wait(out.data, in.data);
  const std::vector<float> early{1.0f, 2.0f, 3.0f, 4.0f, 1.0f, 2.0f, 3.0f, 4.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  EXPECT_EQ(out.download(), early);
  const char* when = std::getenv("SG_EMU_ASYNC_COPY");
  sg_emu::set_early_async_copies(when != nullptr && std::string(when) == "early");
}

// wgmma's results land at the wait, as cp.async's copies do: before it the
// accumulators hold what they held; the second product starts from the
// first's pending sums (16 + 16). A thread that returns without waiting,
// and a wgmma without its whole warpgroup, fail the launch.
TEST(Simt, WgmmaResultsLandAtTheWait) {
  DeviceBuffer<float> out(256);
  wgmma_twice(out.data, 128, true);
  const std::vector<float> values = out.download();
  for (int t = 0; t < 128; ++t) {
    EXPECT_EQ(values[size_t(2 * t)], -1.0f) << "thread " << t << " before the wait";
    EXPECT_EQ(values[size_t(2 * t + 1)], 32.0f) << "thread " << t << " after the wait";
  }
  auto message = [&](int threads, bool wait) {
    try {
      wgmma_twice(out.data, threads, wait);
      out.download();  // where streams are lazy, the launch runs here
    } catch (const sg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(128, false).find("never waited for"), std::string::npos) << message(128, false);
  EXPECT_NE(message(96, true).find("all 128 must take part"), std::string::npos) << message(96, true);
}

// The tensor cores read a wgmma's operands and write its accumulators until
// the wait; the emulator computes at the issue, so it checks at the landing
// that none of them was written in between (a kernel reusing a buffer or a
// register too early would pass here and fail on the GPU otherwise). And
// they may start reading at the first thread's issue: shared memory that
// changes before the last thread's fails too.
TEST(Simt, WgmmaOperandsMustHoldStillUntilTheWait) {
  DeviceBuffer<float> out(128);
  DeviceBuffer<__nv_bfloat16> ones(1024);
  ones.upload(std::vector<__nv_bfloat16>(1024, __float2bfloat16_rn(1.0f)));
  wgmma_with_hazard(out.data, ones.data, 0);
  EXPECT_EQ(out.download(), std::vector<float>(128, 16.0f));
  auto message = [&](int hazard) {
    try {
      wgmma_with_hazard(out.data, ones.data, hazard);
      out.download();
    } catch (const sg::Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(1).find("the shared memory of its B operand) was written before its wait"), std::string::npos)
      << message(1);
  EXPECT_NE(message(2).find("its A registers) was written before its wait"), std::string::npos) << message(2);
  EXPECT_NE(message(3).find("accumulators were written before its wait"), std::string::npos) << message(3);
  // The tensor cores may start at the first thread's issue: thread 5's late write is a race in either order.
  EXPECT_NE(message(4).find("changed between this thread's issue and the last of its warpgroup's"),
            std::string::npos)
      << message(4);
  // Shared memory reaches wgmma (the async proxy) only through fence.proxy.async after the copies land.
  EXPECT_NE(message(5).find("with no fence.proxy.async"), std::string::npos) << message(5);
  // A fence before cp.async's wait fences nothing yet; when the copies land at their issue
  // (SG_EMU_ASYNC_COPY=early) it cannot show, as on a GPU that happened to land them early.
  sg_emu::set_early_async_copies(false);
  EXPECT_NE(message(6).find("written after the block's last fence.proxy.async"), std::string::npos) << message(6);
  const char* when = std::getenv("SG_EMU_ASYNC_COPY");
  sg_emu::set_early_async_copies(when != nullptr && std::string(when) == "early");
}

// The missing barrier passes in the default order (slot i - 1 is written
// before thread i runs) and shows in reverse order, which is why the test
// script runs the emulator's tests both ways.
TEST(Simt, ReverseOrderExposesAMissingBarrier) {
  const int n = 64;
  DeviceBuffer<float> out(n);
  auto shifted_correctly = [&] {
    shift_without_barrier(out.data, n);
    const std::vector<float> values = out.download();
    for (int i = 1; i < n; ++i) {
      if (values[size_t(i)] != float(i - 1)) return false;
    }
    return true;
  };
  // (Each block's shared array starts as NaN, so the reader cannot find the
  // previous launch's value there either.)
  sg_emu::set_reverse_order(false);
  EXPECT_TRUE(shifted_correctly());
  sg_emu::set_reverse_order(true);
  EXPECT_FALSE(shifted_correctly());
  sg_emu::set_reverse_order(false);
}

// With SG_EMU_GUARD=front (the test script's second pass) the unmapped page
// sits before each buffer: one element below zero faults instead.
int outside(int n) {
  const char* guard = std::getenv("SG_EMU_GUARD");
  return guard != nullptr && std::string(guard) == "front" ? -1 : n;
}

TEST(SimtDeathTest, IndexOutsideDeviceMemoryFaultsNamingTheKernel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* data = nullptr;
        cudaMalloc(reinterpret_cast<void**>(&data), 64 * sizeof(float));
        write_at(data, outside(64));
      },
      "invalid memory access .*write_kernel");
}

TEST(SimtDeathTest, IndexOutsideDynamicSharedMemoryFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* data = nullptr;
        cudaMalloc(reinterpret_cast<void**>(&data), sizeof(float));
        read_shared_at(data, 64, outside(64));
      },
      "invalid memory access .*shared_overrun_kernel");
}

TEST(SimtDeathTest, IndexOutsideAStaticSharedArrayFaults) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* data = nullptr;
        cudaMalloc(reinterpret_cast<void**>(&data), sizeof(float));
        write_static_shared_at(data, outside(16));
      },
      "invalid memory access .*static_overrun_kernel.*thread \\(0, 0, 0\\)");
}

// Device memory is closed to host code, as a GPU's is: reading a CUDA
// tensor's bytes on the CPU faults, saying so.
TEST(SimtDeathTest, HostCodeTouchingDeviceMemoryFaultsSayingSo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        float* data = nullptr;
        cudaMalloc(reinterpret_cast<void**>(&data), 4 * sizeof(float));
        const float value = 1.0f;
        cudaMemcpy(data, &value, sizeof(float), cudaMemcpyHostToDevice);  // a copy is device work: fine
        std::printf("%f\n", double(data[0]));
      },
      "host code touched device memory");
}

TEST(EmulatedRuntime, NewDeviceMemoryReadsAsNaN) {
  DeviceBuffer<float> buffer(8);
  for (float value : buffer.download()) EXPECT_TRUE(std::isnan(value));
}

TEST(EmulatedRuntime, CopyWithTheWrongKindOfPointerIsRefused) {
  std::vector<float> host(4, 1.0f), other(4);
  DeviceBuffer<float> device(4);
  EXPECT_EQ(cudaMemcpy(other.data(), host.data(), 16, cudaMemcpyHostToDevice), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(device.data, host.data(), 16, cudaMemcpyDeviceToHost), cudaErrorInvalidValue);
  EXPECT_EQ(cudaMemcpy(device.data, host.data(), 32, cudaMemcpyHostToDevice), cudaErrorInvalidValue);  // too long
  EXPECT_EQ(cudaMemcpy(device.data, host.data(), 16, cudaMemcpyHostToDevice), cudaSuccess);
}

TEST(EmulatedNccl, HostBuffersAndCountsThatDoNotFitAreRefused) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  std::vector<float> host(8, 1.0f);
  DeviceBuffer<float> device(8), gathered(8);
  EXPECT_EQ(ncclAllReduce(host.data(), host.data(), 8, ncclFloat32, ncclSum, comm, nullptr), ncclInvalidArgument);
  EXPECT_EQ(ncclAllGather(device.data, gathered.data, 9, ncclFloat32, comm, nullptr), ncclInvalidArgument);
  device.upload(host);
  EXPECT_EQ(ncclAllGather(device.data, gathered.data, 8, ncclFloat32, comm, nullptr), ncclSuccess);
  EXPECT_EQ(gathered.download(), host);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
}

// SG_EMU_STREAMS=lazy for one test, then back to what the process had.
class LazyStreams {
 public:
  LazyStreams() : was_(sg_emu::lazy_streams()) {
    sg_emu::set_lazy_streams(true);
    for (cudaStream_t* s : {&a, &b}) EXPECT_EQ(cudaStreamCreateWithFlags(s, cudaStreamNonBlocking), cudaSuccess);
  }
  ~LazyStreams() {
    cudaStreamDestroy(a), cudaStreamDestroy(b);
    sg_emu::set_lazy_streams(was_);
  }
  cudaStream_t a = nullptr, b = nullptr;

 private:
  bool was_;
};

TEST(EmulatedStreams, LazyWorkRunsWhenTheHostWaitsForIt) {
  LazyStreams streams;
  DeviceBuffer<float> x(4), y(4);
  x.upload({1, 2, 3, 4});  // cudaMemcpy: the legacy stream, at once
  // Queued: it runs after scaled_copy has returned, with the arguments it
  // was launched with (translate.cpp copies them at the launch).
  scaled_copy(y.data, x.data, 2.0f, 4, streams.a);
  float* pinned = nullptr;
  ASSERT_EQ(cudaMallocHost(reinterpret_cast<void**>(&pinned), 4 * sizeof(float)), cudaSuccess);
  std::fill(pinned, pinned + 4, -1.0f);
  ASSERT_EQ(cudaMemcpyAsync(pinned, y.data, 4 * sizeof(float), cudaMemcpyDeviceToHost, streams.a), cudaSuccess);
  EXPECT_EQ(pinned[0], -1.0f) << "a host that reads before synchronizing sees the old contents";
  ASSERT_EQ(cudaStreamSynchronize(streams.a), cudaSuccess);
  EXPECT_EQ(std::vector<float>(pinned, pinned + 4), (std::vector<float>{2, 4, 6, 8}));
  // Into pageable memory a download waits for its stream, as CUDA's does.
  scaled_copy(y.data, x.data, 3.0f, 4, streams.a);
  std::vector<float> pageable(4);
  ASSERT_EQ(cudaMemcpyAsync(pageable.data(), y.data, 16, cudaMemcpyDeviceToHost, streams.a), cudaSuccess);
  EXPECT_EQ(pageable, (std::vector<float>{3, 6, 9, 12}));
  cudaFreeHost(pinned);
}

TEST(EmulatedStreams, AnEventOrdersTwoStreamsAndAMissingOneShows) {
  DeviceBuffer<float> x(4), y(4), z(4);
  x.upload({1, 2, 3, 4});
  {
    LazyStreams streams;
    scaled_copy(y.data, x.data, 2.0f, 4, streams.a);  // y = 2x on a
    cudaEvent_t written = nullptr;
    ASSERT_EQ(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), cudaSuccess);
    ASSERT_EQ(cudaEventRecord(written, streams.a), cudaSuccess);
    ASSERT_EQ(cudaStreamWaitEvent(streams.b, written, 0), cudaSuccess);
    ASSERT_EQ(cudaEventDestroy(written), cudaSuccess);  // the queued wait keeps its record
    scaled_copy(z.data, y.data, 3.0f, 4, streams.b);  // z = 3y on b, after the event
    ASSERT_EQ(cudaStreamSynchronize(streams.b), cudaSuccess);
    EXPECT_EQ(z.download(), (std::vector<float>{6, 12, 18, 24}));
  }
  // Without the event, b reads y before a writes it: issue order (eager)
  // hides that, the lazy schedule shows it.
  for (bool lazy : {false, true}) {
    LazyStreams streams;
    sg_emu::set_lazy_streams(lazy);
    DeviceBuffer<float> fresh(4);  // NaN until written
    scaled_copy(fresh.data, x.data, 5.0f, 4, streams.a);
    scaled_copy(z.data, fresh.data, 1.0f, 4, streams.b);
    ASSERT_EQ(cudaStreamSynchronize(streams.b), cudaSuccess);
    EXPECT_EQ(std::isnan(z.download()[0]), lazy);
  }
}

TEST(EmulatedNccl, WorkThatWritesACollectivesInputBeforeItCompletesIsNamed) {
  ncclUniqueId id;
  ASSERT_EQ(ncclGetUniqueId(&id), ncclSuccess);
  ncclComm_t comm = nullptr;
  ASSERT_EQ(ncclCommInitRank(&comm, 1, id, 0), ncclSuccess);
  LazyStreams streams;  // a: compute, b: communication
  DeviceBuffer<float> x(4), sum(4);
  x.upload({1, 2, 3, 4});
  ASSERT_EQ(ncclAllReduce(x.data, sum.data, 4, ncclFloat32, ncclSum, comm, streams.b), ncclSuccess);
  cudaEvent_t done = nullptr;
  ASSERT_EQ(cudaEventCreateWithFlags(&done, cudaEventDisableTiming), cudaSuccess);
  ASSERT_EQ(cudaEventRecord(done, streams.b), cudaSuccess);
  EXPECT_TRUE(std::isnan(sum.download()[0])) << "the result lands when the communication stream gets there";
  scaled_copy(x.data, x.data, 2.0f, 4, streams.a);  // not ordered after the collective
  try {
    cudaStreamSynchronize(streams.a);
    ADD_FAILURE() << "a kernel wrote an all-reduce's input while it was in flight, unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scaled_copy_kernel wrote the input of ncclAllReduce"), std::string::npos)
        << e.what();
  }
  ASSERT_EQ(cudaStreamSynchronize(streams.b), cudaSuccess);
  EXPECT_EQ(sum.download(), (std::vector<float>{1, 2, 3, 4}));
  // Ordered after the collective's event, the same write is fine.
  ASSERT_EQ(ncclAllReduce(x.data, sum.data, 4, ncclFloat32, ncclSum, comm, streams.b), ncclSuccess);
  ASSERT_EQ(cudaEventRecord(done, streams.b), cudaSuccess);
  ASSERT_EQ(cudaStreamWaitEvent(streams.a, done, 0), cudaSuccess);
  scaled_copy(x.data, x.data, 2.0f, 4, streams.a);
  ASSERT_EQ(cudaStreamSynchronize(streams.a), cudaSuccess);
  EXPECT_EQ(sum.download(), (std::vector<float>{2, 4, 6, 8}));
  EXPECT_EQ(x.download(), (std::vector<float>{4, 8, 12, 16}));
  cudaEventDestroy(done);
  EXPECT_EQ(ncclCommDestroy(comm), ncclSuccess);
}

TEST(EmulatedRuntime, DeviceRunsOutOfMemoryAtItsCapacity) {
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  void* pointer = nullptr;
  EXPECT_EQ(cudaMalloc(&pointer, total_bytes + 1), cudaErrorMemoryAllocation);
}

}  // namespace
}  // namespace sg::emu_test
