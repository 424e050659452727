// A SIMT emulator: runs shardgrad's CUDA kernels on the CPU, so the CUDA
// tests (every kernel against its CPU twin, a GPT step on CUDA against the
// CPU, ZeRO on CUDA tensors) run on machines without a GPU.
//
// Why: a kernel's logic (its indexing, its barriers, its warp reductions, its
// tiling at the edges) can be checked without the hardware. What it cannot
// check is the hardware: timing, the memory model between streams, tensor
// cores, real cuBLAS. Code that has passed here has run, but not on a GPU.
//
// How: every block runs on its own, one after another. Each thread of the
// block is a fiber (ucontext) with its own stack, all on the calling OS
// thread. A thread runs until it reaches a barrier (__syncthreads, a warp
// shuffle, __syncwarp) and then hands over to the next; a barrier opens when
// every live thread it waits for has arrived. So shared memory (a `static`
// array here, since only one block runs at a time) and shuffles behave as on
// the GPU, and a barrier no thread can pass (a __syncthreads inside a branch
// some threads skipped) is reported instead of hanging.
//
// The pieces (read in this order):
//   tools/cuda_emu/simt.h       this file: launches, thread indices, barriers
//   tools/cuda_emu/device.h     what a kernel sees: threadIdx, __syncthreads, ...
//   tools/cuda_emu/translate.cpp  rewrites kernel<<<grid, block>>>(args) into a launch
//   tools/cuda_emu/runtime.cpp  cudaMalloc, copies, streams, events (on the host)
//   tools/cuda_emu/blas.cpp     the cuBLAS and cuBLASLt calls shardgrad makes
// docs/gpu.md ("Testing CUDA code without a GPU") tells the story.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace sg_emu {

// The <<<grid, block, shared_bytes, stream>>> of a launch.
struct Config {
  dim3 grid, block;
  size_t shared_bytes = 0;
  cudaStream_t stream = nullptr;
};
inline Config config(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr) {
  return Config{grid, block, shared_bytes, stream};
}

// Runs `body` (a call of the kernel with its arguments) once per thread of
// every block, when config.stream gets to it (runtime.h: at once, or later
// under SG_EMU_STREAMS=lazy). Throws sg::Error for a configuration the GPU
// would refuse (at the launch), a thread that fails, or a barrier that can
// never open (when it runs). Launches run one at a time process-wide: the
// kernels' `static` shared arrays are shared.
void launch(const char* kernel, const Config& config, const std::function<void()>& body);

// cudaFuncSetAttribute(kernel, attribute, value), rewritten by
// translate.cpp to name the kernel as its launches do (the source text;
// whitespace does not count). Only cudaFuncAttributeMaxDynamicSharedMemorySize
// is taken, up to an H100's 227 KiB a block: the kernel's later launches may
// then ask for that much dynamic shared memory instead of 48 KiB.
cudaError_t set_function_attribute(const char* kernel, cudaFuncAttribute attribute, int value);

// While one lives, this OS thread runs emulated device work (`what`: a
// kernel, a queued copy, a GEMM, a collective). Device memory is closed to
// host code (runtime.h): device work opens each buffer on its first touch,
// and the buffers close again when the outermost DeviceWork ends. A memory
// fault meanwhile is reported as one in `what`; a kernel's own report wins.
class DeviceWork {
 public:
  explicit DeviceWork(const char* what);
  ~DeviceWork();
  DeviceWork(const DeviceWork&) = delete;
  DeviceWork& operator=(const DeviceWork&) = delete;

 private:
  const char* outer_;
};

// The handler that reports memory faults (by kernel, block and thread, or by
// queued work, or as host code touching device memory). Process-wide; each
// OS thread also gets a stack for it on its first call.
void install_fault_handler();

// Between barriers a block's threads run one after another, lowest first, so
// a missing barrier hides when the writer happens to run before the reader.
// Reverse order runs the highest first; scripts/test.sh runs the emulator's
// tests both ways (SG_EMU_ORDER=reverse sets it for a process).
void set_reverse_order(bool reverse);

// What the running thread sees as threadIdx, blockIdx, blockDim, gridDim.
struct ThreadIndex {
  uint3 thread, block;
  dim3 block_dim, grid_dim;
};
extern thread_local const ThreadIndex* current_index;
inline const ThreadIndex& index() { return *current_index; }

void sync_block();                  // __syncthreads()
void sync_warp(unsigned lane_mask); // __syncwarp(mask)
// The core of every shuffle: each lane of the warp offers `bits` and gets
// back the bits lane `source_lane` offered (its own when that lane does not
// exist). Every lane named in `lane_mask` must take part, as on the GPU.
uint64_t shuffle(unsigned lane_mask, uint64_t bits, int source_lane);
int lane_id();

// The core of warp-collective operations on data too big for a shuffle (the
// WMMA emulation, wmma.h): every lane of the full warp offers a pointer, and
// once all have, each gets the table of all 32. The pointed-to data must
// stay untouched until every lane has called release_warp().
const void* const* gather_from_warp(const void* mine);
void release_warp();

// The same over the caller's warpgroup (warps 4 i .. 4 i + 3 of the block,
// 128 threads, all of which must exist and take part): wgmma (wgmma.h).
// Slot 32 (warp % 4) + lane holds each thread's pointer.
const void* const* gather_from_warpgroup(const void* mine);
void release_warpgroup();

// wgmma's results are asynchronous: an emulated wgmma computes its
// accumulators at once but hands them to wgmma_issue, and they land in d
// only when the issuing thread waits for their group (wgmma_wait), so a
// kernel that reads d before waiting reads the old values, where on the GPU
// it might read anything. A later wgmma on the same d before the wait
// starts from the pending values (wgmma_pending), as the hardware's chain
// of products into one accumulator does. A thread that returns with
// results never waited for fails.
//
// The hardware reads a wgmma's operands, and writes its accumulators, at
// any moment until the wait, so they must hold still that long: at the
// landing the emulator checks that d still holds what it held at the issue
// (or what an earlier product into it landed), and asks `operands_still`
// (wgmma.h: are the A registers and the shared-memory bytes read
// unchanged?), which names what changed, or returns "". A change fails the
// launch. The emulator's own answer was computed at the issue,
// so without these checks a kernel that reused a buffer or a register too
// early would pass here and fail on the GPU.
const char* current_kernel();                  // the running kernel's name, for messages
const float* wgmma_pending(const float* d);     // the newest pending values for d, or nullptr
void wgmma_issue(float* d, const float* values, int count, std::function<std::string()> operands_still);
void wgmma_commit();                           // wgmma.commit_group
void wgmma_wait(int pending_allowed);          // wgmma.wait_group

// Memory for one static __shared__ array: `bytes` ending exactly at an
// unmapped page (aligned to `alignment`), kept for the process.
void* map_shared_array(size_t bytes, size_t alignment);
// Fills the array with 0xff bytes (NaN) the first time a thread of the
// running block reaches it, and counts it against the block's 48 KiB.
void enter_shared_array(void* array, size_t bytes);

// A static __shared__ array, as translate.cpp rewrites one:
//   static SharedArray<float[64][64]> tile_shared_;
//   float (&tile)[64][64] = tile_shared_.get();
template <typename Array, size_t Alignment = alignof(Array)>
class SharedArray {
 public:
  Array& get() {
    if (data_ == nullptr) data_ = map_shared_array(sizeof(Array), std::max(Alignment, alignof(Array)));
    enter_shared_array(data_, sizeof(Array));
    return *static_cast<Array*>(data_);
  }

 private:
  void* data_ = nullptr;
};

// cp.async (kernels/cuda/async_copy.cuh): a copy of `bytes` into shared
// memory, of which the first `src_bytes` come from src and the rest are 0.
// The copy is only queued: it happens when the issuing thread waits for its
// group (async_wait), so a thread that reads the destination before waiting
// (or before the barrier after everyone's wait) reads the old bytes, where
// on the GPU it might read either. Groups never waited for are dropped.
//
// The GPU may land a copy at any moment from its issue to the wait, so the
// other extreme is emulated too: with early copies (SG_EMU_ASYNC_COPY=early,
// scripts/test.sh's second pass) a copy lands at its issue. That exposes a
// copy into a buffer that other threads (or an in-flight wgmma) still read
// because a barrier is missing before it, which the late landing hides.
void set_early_async_copies(bool early);
void async_copy(void* dst, const void* src, size_t bytes, size_t src_bytes);
void async_commit();                    // cp.async.commit_group
void async_wait(int pending_allowed);   // cp.async.wait_group: at most this many groups still pending

// fence.proxy.async (kernels/cuda/wgmma.cuh's fence_shared_for_wgmma):
// shared memory written by ordinary stores and cp.async (the "generic
// proxy") becomes visible to wgmma's reads (the "async proxy") only after
// the writing thread's fence, then a barrier. The emulator keeps the block's
// shared memory as it stood at the latest fence by any thread, and a wgmma
// fails when the bytes it reads differ from that image (expect_fenced):
// a fence missing, or placed before a cp.async's wait, shows; one thread of
// many skipping it may not (the others' fences renew the image).
void fence_proxy_async();
void expect_fenced(const void* address, size_t bytes, const char* operand);

// Whether [address, address + bytes) lies in the running block's shared
// memory: its dynamic shared memory or a __shared__ array it has reached.
// (Instructions that name the shared space, such as ldmatrix, check it.)
bool in_shared_memory(const void* address, size_t bytes);

// The launch's dynamic shared memory (extern __shared__), `shared_bytes` long
// and followed by an unmapped page, so reading past its end faults. Filled
// with 0xff bytes (NaN) at the start of each block.
void* dynamic_shared();

}  // namespace sg_emu
