// The fiber scheduler behind tools/cuda_emu/simt.h: one block at a time,
// one fiber per thread, barriers that count live threads.
#include "tools/cuda_emu/simt.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "tools/cuda_emu/fiber.h"
#include "tools/cuda_emu/guarded_memory.h"
#include "tools/cuda_emu/runtime.h"

namespace sg_emu {

thread_local const ThreadIndex* current_index = nullptr;

namespace {

constexpr int kWarp = 32;
constexpr size_t kStackBytes = size_t(256) << 10;  // a thread's locals, printf, an exception's unwinding
constexpr size_t kMaxDynamicShared = size_t(48) << 10;  // static + dynamic; more needs cudaFuncSetAttribute
constexpr size_t kMaxOptInShared = size_t(227) << 10;   // what cudaFuncSetAttribute may allow (an H100's)

// The kernel's name as its launches and set_function_attribute give it, without whitespace.
std::string normalized(const char* kernel) {
  std::string name;
  for (const char* c = kernel; *c; ++c) {
    if (!std::isspace(static_cast<unsigned char>(*c))) name += *c;
  }
  return name;
}

std::mutex g_attributes_mutex;
std::map<std::string, size_t> g_max_dynamic_shared;  // set_function_attribute

// How much shared memory a block of this kernel may use: 48 KiB, or what
// cudaFuncSetAttribute allowed it (dynamic shared memory, on top of the 48).
size_t shared_limit(const char* kernel) {
  std::lock_guard<std::mutex> lock(g_attributes_mutex);
  const auto it = g_max_dynamic_shared.find(normalized(kernel));
  return it == g_max_dynamic_shared.end() ? kMaxDynamicShared : std::max(kMaxDynamicShared, it->second);
}

// Opens when `expected` threads have arrived; `generation` counts openings,
// so a waiting thread knows its barrier has opened once the count moves on.
struct Barrier {
  int arrived = 0;
  uint64_t generation = 0;
};

// A cp.async issued and not yet waited for.
struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes, src_bytes;
};

// A wgmma's accumulators, computed and not yet landed in d.
struct PendingResult {
  float* d;
  std::vector<float> values;
  std::vector<float> d_before;          // what d must still hold when this lands
  std::function<std::string()> operands_still;  // what operand changed since the issue, or ""
};

struct Thread {
  ThreadIndex index;
  FiberContext context;
  int warp = 0, lane = 0;
  bool done = false;
  const Barrier* waiting_on = nullptr;
  uint64_t waiting_for = 0;  // the generation that must pass
  std::vector<AsyncCopy> open_group;               // cp.async since the last commit
  std::vector<std::vector<AsyncCopy>> committed;   // groups committed, oldest first
  std::vector<PendingResult> wgmma_open;            // wgmma results since the last commit
  std::vector<std::vector<PendingResult>> wgmma_committed;
};

struct Warp {
  Barrier barrier;
  unsigned live_lanes = 0;  // a bit per lane that exists and has not returned
  uint64_t slots[kWarp] = {};          // shuffles' offers
  const void* pointers[kWarp] = {};    // gather_from_warp's offers
};

struct Warpgroup {
  Barrier barrier;
  const void* pointers[4 * kWarp] = {};  // gather_from_warpgroup's offers
};

// The block being run, and the launch it belongs to.
struct Block {
  const char* kernel = nullptr;
  const std::function<void()>* body = nullptr;
  std::vector<Thread> threads;
  std::vector<Warp> warps;
  std::vector<Warpgroup> warpgroups;
  Barrier barrier;
  int live = 0;
  void* dynamic_shared = nullptr;
  size_t dynamic_shared_bytes = 0;
  std::map<const void*, size_t> filled_arrays;  // static shared arrays filled for this block, and their sizes
  // Each shared region's bytes at the block's latest fence.proxy.async
  // (fence_proxy_async): what a wgmma may read (expect_fenced).
  std::map<const unsigned char*, std::vector<unsigned char>> fenced;
  std::exception_ptr error;
  FiberContext scheduler;
};

thread_local Block* g_block = nullptr;
thread_local Thread* g_thread = nullptr;
std::mutex g_launch_mutex;

// Read by the fault handler: which kernel and thread touched a bad address.
const char* volatile g_faulting_kernel = nullptr;
// Outside kernels: the queued operation running (a copy, a GEMM, ...).
thread_local const char* volatile g_faulting_operation = nullptr;
thread_local int g_device_work_depth = 0;  // DeviceWork objects alive on this thread

std::vector<GuardedMapping> g_stacks;  // reused by every launch, grown to the largest block

void on_fault(int signal, siginfo_t* info, void*) {
  // Device work's first touch of a (closed) device buffer: open it, and
  // returning re-runs the access.
  if (g_device_work_depth > 0 && open_device_memory(info->si_addr)) return;
  const char* kernel = g_faulting_kernel;
  char message[512];
  if (g_device_work_depth == 0 && is_device_memory(info->si_addr, 1)) {
    int length = std::snprintf(message, sizeof(message),
                               "CUDA emulator: host code touched device memory at %p (a CUDA tensor's bytes read or "
                               "written on the CPU); on a GPU this faults too: copy the tensor to the CPU first\n",
                               info->si_addr);
    if (length > 0) (void)!write(STDERR_FILENO, message, size_t(length));
  } else if (kernel != nullptr) {
    const ThreadIndex* at = current_index;
    int length = std::snprintf(message, sizeof(message),
                               "CUDA emulator: invalid memory access (signal %d) in kernel %s, block (%u, %u, %u), "
                               "thread (%u, %u, %u): an index past the end of a buffer, or a stack overflow\n",
                               signal, kernel, at ? at->block.x : 0u, at ? at->block.y : 0u, at ? at->block.z : 0u,
                               at ? at->thread.x : 0u, at ? at->thread.y : 0u, at ? at->thread.z : 0u);
    if (length > 0) (void)!write(STDERR_FILENO, message, size_t(length));
  } else if (const char* operation = g_faulting_operation; operation != nullptr) {
    int length = std::snprintf(message, sizeof(message),
                               "CUDA emulator: invalid memory access (signal %d) in %s, queued on a stream: one of "
                               "its buffers was freed before the stream got to it, or is too small\n",
                               signal, operation);
    if (length > 0) (void)!write(STDERR_FILENO, message, size_t(length));
  }
  ::signal(signal, SIG_DFL);  // returning re-runs the access, which now ends the process
}


void yield_to_scheduler() { fiber_switch(g_thread->context, g_block->scheduler); }

void arrive_and_wait(Barrier& barrier, int expected) {
  if (++barrier.arrived >= expected) {
    barrier.arrived = 0;
    ++barrier.generation;
    return;
  }
  g_thread->waiting_on = &barrier;
  g_thread->waiting_for = barrier.generation;
  yield_to_scheduler();
}

// A returning thread no longer counts: a barrier the rest already wait at opens.
void release_if_complete(Barrier& barrier, int expected) {
  if (barrier.arrived > 0 && barrier.arrived >= expected) {
    barrier.arrived = 0;
    ++barrier.generation;
  }
}

void thread_main() {
  Thread* self = g_thread;
  try {
    (*g_block->body)();
    SG_CHECK(self->wgmma_open.empty() && self->wgmma_committed.empty(), "CUDA emulator: kernel ", g_block->kernel,
             ", thread (", self->index.thread.x, ", ", self->index.thread.y,
             ") returned with wgmma results it never waited for (wgmma.wait_group): on the GPU they are lost");
  } catch (...) {
    if (!g_block->error) g_block->error = std::current_exception();
  }
  self->done = true;
  Block& block = *g_block;
  Warp& warp = block.warps[size_t(self->warp)];
  --block.live;
  warp.live_lanes &= ~(1u << self->lane);
  release_if_complete(block.barrier, block.live);
  release_if_complete(warp.barrier, __builtin_popcount(warp.live_lanes));
  yield_to_scheduler();  // for good: the scheduler never resumes a finished thread
}

std::string dims(const dim3& d) { return sg::detail::concat("(", d.x, ", ", d.y, ", ", d.z, ")"); }

void check_config(const char* kernel, const Config& config) {
  const uint64_t threads = uint64_t(config.block.x) * config.block.y * config.block.z;
  SG_CHECK(threads >= 1 && threads <= 1024 && config.block.z <= 64, "CUDA emulator: kernel ", kernel,
           " launched with block ", dims(config.block), " (", threads,
           " threads); a block holds 1 to 1024 threads, z at most 64. The GPU would refuse it too");
  SG_CHECK(config.grid.x >= 1 && config.grid.y >= 1 && config.grid.z >= 1 && config.grid.y <= 65535 &&
               config.grid.z <= 65535,
           "CUDA emulator: kernel ", kernel, " launched with grid ", dims(config.grid),
           "; each dimension must be at least 1, and y and z at most 65535");
  SG_CHECK(config.shared_bytes <= shared_limit(kernel), "CUDA emulator: kernel ", kernel, " asks for ",
           config.shared_bytes, " bytes of dynamic shared memory; more than 48 KiB needs cudaFuncSetAttribute ",
           "(cudaFuncAttributeMaxDynamicSharedMemorySize) first, allowing at least that much");
}

// Between barriers the threads run one after another, so a missing barrier
// hides when the writer happens to run before the reader. SG_EMU_ORDER=reverse
// runs the highest thread first instead; scripts/test.sh runs the emulator's
// tests both ways, which exposes a race either way round.
std::atomic<int> g_reverse_order{-1};  // -1: not yet read from SG_EMU_ORDER

// Whether the environment's `variable` is `value`, read once into `cached`
// (-1 until then; a test's setter may overwrite it).
bool env_setting_is(std::atomic<int>& cached, const char* variable, const char* value) {
  if (cached.load() < 0) {
    const char* setting = std::getenv(variable);
    cached = setting != nullptr && std::string(setting) == value ? 1 : 0;
  }
  return cached.load() == 1;
}

bool reverse_order() { return env_setting_is(g_reverse_order, "SG_EMU_ORDER", "reverse"); }

void run_block(Block& block, const Config& config, const uint3& block_index) {
  const unsigned count = config.block.x * config.block.y * config.block.z;
  block.barrier = Barrier{};
  block.live = int(count);
  block.filled_arrays.clear();
  block.fenced.clear();
  if (block.dynamic_shared != nullptr) std::memset(block.dynamic_shared, 0xff, block.dynamic_shared_bytes);
  block.warps.assign((count + kWarp - 1) / kWarp, Warp{});
  block.warpgroups.assign((block.warps.size() + 3) / 4, Warpgroup{});
  block.threads.resize(count);
  for (unsigned i = 0; i < count; ++i) {
    Thread& thread = block.threads[i];
    thread = Thread{};
    thread.index.thread = uint3{i % config.block.x, (i / config.block.x) % config.block.y,
                                i / (config.block.x * config.block.y)};
    thread.index.block = block_index;
    thread.index.block_dim = config.block;
    thread.index.grid_dim = config.grid;
    thread.warp = int(i / kWarp);
    thread.lane = int(i % kWarp);
    block.warps[size_t(thread.warp)].live_lanes |= 1u << thread.lane;
    fiber_prepare(thread.context, g_stacks[i].data, kStackBytes, thread_main);
  }
  // Round-robin over the threads that can run, until all have returned.
  const bool reverse = reverse_order();
  for (;;) {
    bool ran = false, all_done = true;
    for (unsigned i = 0; i < count; ++i) {
      Thread& thread = block.threads[reverse ? count - 1 - i : i];
      if (thread.done) continue;
      all_done = false;
      if (thread.waiting_on != nullptr && thread.waiting_on->generation == thread.waiting_for) continue;
      thread.waiting_on = nullptr;
      g_thread = &thread;
      current_index = &thread.index;
      fiber_switch(block.scheduler, thread.context);
      ran = true;
      if (block.error) std::rethrow_exception(block.error);
    }
    if (all_done) return;
    SG_CHECK(ran, "CUDA emulator: kernel ", block.kernel, ", block ", dims(dim3(block_index.x, block_index.y, block_index.z)),
             ": ", block.live, " threads wait at barriers that can never open (a __syncthreads or a shuffle "
             "that some threads of the block or warp do not reach)");
  }
}

// With SG_EMU_LAUNCH_LOG=file, each kernel's name (no template arguments)
// is appended to the file the first time this process launches it: the
// test script's check that every kernel in kernels/cuda ran in some test.
void log_first_launch(const char* kernel) {  // with g_launch_mutex held
  static const char* const path = std::getenv("SG_EMU_LAUNCH_LOG");
  static std::set<std::string> seen;
  if (path == nullptr) return;
  const std::string name = short_name(kernel);
  if (seen.insert(name).second) std::ofstream(path, std::ios::app) << name << "\n";
}


// Runs every block of a launch (when its stream gets to it).
void run_grid(const char* kernel, const Config& config, const std::function<void()>& body) {
  std::lock_guard<std::mutex> lock(g_launch_mutex);
  log_first_launch(kernel);
  install_fault_handler();
  const unsigned threads = config.block.x * config.block.y * config.block.z;
  while (g_stacks.size() < threads) {
    g_stacks.push_back(map_stack(kStackBytes));
    SG_CHECK(g_stacks.back().data != nullptr, "CUDA emulator: out of memory for a thread's stack");
  }
  GuardedMapping shared{};
  if (config.shared_bytes > 0) {
    shared = map_guarded(config.shared_bytes, 128);  // what __align__(128) extern __shared__ arrays expect
    SG_CHECK(shared.data != nullptr, "CUDA emulator: out of memory for ", config.shared_bytes, " bytes of shared memory");
  }

  Block block;
  block.kernel = kernel;
  block.body = &body;
  block.dynamic_shared = shared.data;
  block.dynamic_shared_bytes = config.shared_bytes;
  Block* outer_block = g_block;
  g_block = &block;
  g_faulting_kernel = kernel;
  struct Restore {  // also on the way out of an error
    Block* outer;
    GuardedMapping shared;
    ~Restore() {
      g_block = outer;
      g_thread = nullptr;
      current_index = nullptr;
      g_faulting_kernel = nullptr;
      unmap(shared);
    }
  } restore{outer_block, shared};
  for (unsigned z = 0; z < config.grid.z; ++z) {
    for (unsigned y = 0; y < config.grid.y; ++y) {
      for (unsigned x = 0; x < config.grid.x; ++x) run_block(block, config, uint3{x, y, z});
    }
  }
}

}  // namespace

// A configuration the GPU refuses fails at the launch, as cudaGetLastError
// would report it; the blocks run when the stream gets to them
// (SG_EMU_STREAMS), each thread with the arguments as they were at the launch.
cudaError_t set_function_attribute(const char* kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
  if (value < 0 || size_t(value) > kMaxOptInShared) return cudaErrorInvalidValue;
  std::lock_guard<std::mutex> lock(g_attributes_mutex);
  g_max_dynamic_shared[normalized(kernel)] = size_t(value);
  return cudaSuccess;
}

void launch(const char* kernel, const Config& config, const std::function<void()>& body) {
  check_config(kernel, config);
  enqueue(config.stream, kernel, [kernel, config, body] { run_grid(kernel, config, body); });
}

// Once per OS thread: a stack for the fault handler (the fault may be a
// fiber's stack overflowing) and the handler itself.
void install_fault_handler() {
  static thread_local bool installed = false;
  if (installed) return;
  installed = true;
  static thread_local std::vector<char> alternate(size_t(64) << 10);
  stack_t stack{};
  stack.ss_sp = alternate.data();
  stack.ss_size = alternate.size();
  sigaltstack(&stack, nullptr);
  struct sigaction action {};
  action.sa_sigaction = on_fault;
  action.sa_flags = SA_ONSTACK | SA_SIGINFO;
  sigaction(SIGSEGV, &action, nullptr);
  sigaction(SIGBUS, &action, nullptr);
}

DeviceWork::DeviceWork(const char* what) : outer_(g_faulting_operation) {
  install_fault_handler();
  g_faulting_operation = what;
  ++g_device_work_depth;
}

DeviceWork::~DeviceWork() {
  g_faulting_operation = outer_;
  if (--g_device_work_depth == 0) close_device_memory();
}

void set_reverse_order(bool reverse) { g_reverse_order = reverse ? 1 : 0; }

void sync_block() {
  SG_CHECK(g_thread != nullptr, "CUDA emulator: __syncthreads outside a kernel");
  arrive_and_wait(g_block->barrier, g_block->live);
}

int lane_id() { return g_thread->lane; }

void sync_warp(unsigned lane_mask) {
  Warp& warp = g_block->warps[size_t(g_thread->warp)];
  SG_CHECK((lane_mask & ~warp.live_lanes) == 0, "CUDA emulator: kernel ", g_block->kernel,
           ": __syncwarp names lanes that have returned or do not exist");
  arrive_and_wait(warp.barrier, __builtin_popcount(warp.live_lanes));
}

// Every lane the mask names must exist and must not have returned. Checked
// on entry and again once the offers are in: a lane may return while the
// others wait for it.
void check_shuffle_lanes(const Warp& warp, unsigned lane_mask) {
  SG_CHECK((lane_mask & ~warp.live_lanes) == 0, "CUDA emulator: kernel ", g_block->kernel, ", thread (",
           current_index->thread.x, ", ", current_index->thread.y, "): a shuffle with mask 0x", std::hex, lane_mask,
           " but lanes 0x", (lane_mask & ~warp.live_lanes),
           " have returned or do not exist: on the GPU the result is undefined");
}

uint64_t shuffle(unsigned lane_mask, uint64_t bits, int source_lane) {
  Warp& warp = g_block->warps[size_t(g_thread->warp)];
  check_shuffle_lanes(warp, lane_mask);
  warp.slots[g_thread->lane] = bits;
  arrive_and_wait(warp.barrier, __builtin_popcount(warp.live_lanes));  // every lane has offered
  check_shuffle_lanes(warp, lane_mask);
  const bool valid = source_lane >= 0 && source_lane < kWarp && (warp.live_lanes >> source_lane & 1u);
  const uint64_t result = valid ? warp.slots[source_lane] : bits;
  arrive_and_wait(warp.barrier, __builtin_popcount(warp.live_lanes));  // every lane has read: slots reusable
  return result;
}

const void* const* gather_from_warp(const void* mine) {
  Warp& warp = g_block->warps[size_t(g_thread->warp)];
  check_shuffle_lanes(warp, 0xffffffffu);
  warp.pointers[g_thread->lane] = mine;
  arrive_and_wait(warp.barrier, __builtin_popcount(warp.live_lanes));  // every lane has offered
  check_shuffle_lanes(warp, 0xffffffffu);
  return warp.pointers;
}

void release_warp() {
  Warp& warp = g_block->warps[size_t(g_thread->warp)];
  arrive_and_wait(warp.barrier, __builtin_popcount(warp.live_lanes));
}

// The caller's warpgroup, every one of whose 128 threads must exist and be live.
Warpgroup& checked_warpgroup() {
  const int group = g_thread->warp / 4;
  int live = 0;
  for (int w = 4 * group; w < 4 * group + 4 && w < int(g_block->warps.size()); ++w) {
    live += __builtin_popcount(g_block->warps[size_t(w)].live_lanes);
  }
  SG_CHECK(live == 4 * kWarp, "CUDA emulator: kernel ", g_block->kernel, ": a warpgroup operation (wgmma) in warps ",
           4 * group, "-", 4 * group + 3, " with ", live, " of their 128 threads live; all 128 must take part");
  return g_block->warpgroups[size_t(group)];
}

const void* const* gather_from_warpgroup(const void* mine) {
  Warpgroup& group = checked_warpgroup();
  group.pointers[(g_thread->warp % 4) * kWarp + g_thread->lane] = mine;
  arrive_and_wait(group.barrier, 4 * kWarp);  // every thread has offered
  checked_warpgroup();
  return group.pointers;
}

void release_warpgroup() { arrive_and_wait(checked_warpgroup().barrier, 4 * kWarp); }

const char* current_kernel() { return g_block != nullptr ? g_block->kernel : "(no kernel)"; }

const float* wgmma_pending(const float* d) {
  for (auto it = g_thread->wgmma_open.rbegin(); it != g_thread->wgmma_open.rend(); ++it) {
    if (it->d == d) return it->values.data();
  }
  for (auto group = g_thread->wgmma_committed.rbegin(); group != g_thread->wgmma_committed.rend(); ++group) {
    for (auto it = group->rbegin(); it != group->rend(); ++it) {
      if (it->d == d) return it->values.data();
    }
  }
  return nullptr;
}

void wgmma_issue(float* d, const float* values, int count, std::function<std::string()> operands_still) {
  g_thread->wgmma_open.push_back(PendingResult{d, std::vector<float>(values, values + count),
                                               std::vector<float>(d, d + count), std::move(operands_still)});
}

void wgmma_commit() {
  g_thread->wgmma_committed.push_back(std::move(g_thread->wgmma_open));
  g_thread->wgmma_open.clear();
}

namespace {

// Lands one result: its operands and accumulators held still, then d takes
// the values, which later products into the same d expect to find there.
void land(const PendingResult& result) {
  const size_t bytes = result.d_before.size() * sizeof(float);  // bits: NaN is NaN
  SG_CHECK(std::memcmp(result.d_before.data(), result.d, bytes) == 0, "CUDA emulator: kernel ",
           g_block->kernel, ": a wgmma's accumulators were written before its wait (wgmma.wait_group); "
           "on the GPU the product may overwrite them at any moment until then");
  const std::string changed = result.operands_still ? result.operands_still() : std::string();
  SG_CHECK(changed.empty(), "CUDA emulator: kernel ", g_block->kernel, ": a wgmma's operand (", changed,
           ") was written before its wait (wgmma.wait_group); the tensor cores may read it until then");
  std::copy(result.values.begin(), result.values.end(), result.d);
  auto expect_landed = [&](std::vector<PendingResult>& results) {
    for (PendingResult& later : results) {
      if (later.d == result.d) later.d_before = result.values;
    }
  };
  for (auto& group : g_thread->wgmma_committed) expect_landed(group);
  expect_landed(g_thread->wgmma_open);
}

}  // namespace

void wgmma_wait(int pending_allowed) {
  auto& groups = g_thread->wgmma_committed;
  while (int(groups.size()) > pending_allowed) {
    for (const PendingResult& result : groups.front()) land(result);  // updates the later ones' d_before
    groups.erase(groups.begin());
  }
}

void* map_shared_array(size_t bytes, size_t alignment) {
  const GuardedMapping memory = map_guarded(bytes, alignment);
  SG_CHECK(memory.data != nullptr, "CUDA emulator: out of memory for a ", bytes, "-byte __shared__ array");
  return memory.data;  // kept for the process: the array is static
}

void enter_shared_array(void* array, size_t bytes) {
  Block& block = *g_block;
  if (!block.filled_arrays.emplace(array, bytes).second) return;
  std::memset(array, 0xff, bytes);  // NaN in f32, bf16 and f16
  size_t static_bytes = 0;
  for (const auto& entry : block.filled_arrays) static_bytes += entry.second;
  const size_t total = static_bytes + block.dynamic_shared_bytes;
  SG_CHECK(static_bytes <= kMaxDynamicShared && total <= shared_limit(block.kernel), "CUDA emulator: kernel ",
           block.kernel, " uses ", total,
           " bytes of shared memory per block (", static_bytes, " in __shared__ arrays); a block may "
           "have 48 KiB, more only as dynamic shared memory after cudaFuncSetAttribute");
}

namespace {

std::atomic<int> g_early_async_copies{-1};  // -1: not yet read from SG_EMU_ASYNC_COPY

bool early_async_copies() { return env_setting_is(g_early_async_copies, "SG_EMU_ASYNC_COPY", "early"); }

void land(const AsyncCopy& copy) {
  std::memcpy(copy.dst, copy.src, copy.src_bytes);
  std::memset(static_cast<unsigned char*>(copy.dst) + copy.src_bytes, 0, copy.bytes - copy.src_bytes);
}

}  // namespace

void set_early_async_copies(bool early) { g_early_async_copies = early ? 1 : 0; }

void async_copy(void* dst, const void* src, size_t bytes, size_t src_bytes) {
  SG_CHECK(g_thread != nullptr, "CUDA emulator: cp.async outside a kernel");
  SG_CHECK(src_bytes <= bytes, "CUDA emulator: cp.async reads ", src_bytes, " bytes into ", bytes);
  SG_CHECK(reinterpret_cast<uintptr_t>(dst) % bytes == 0 && reinterpret_cast<uintptr_t>(src) % bytes == 0,
           "CUDA emulator: cp.async of ", bytes, " bytes from ", src, " to ", dst, " is not aligned to ", bytes);
  SG_CHECK(in_shared_memory(dst, bytes), "CUDA emulator: cp.async destination ", dst,
           " is not in the block's shared memory");
  const AsyncCopy copy{dst, src, bytes, src_bytes};
  if (early_async_copies()) {
    land(copy);
  } else {
    g_thread->open_group.push_back(copy);
  }
}

void async_commit() {
  g_thread->committed.push_back(std::move(g_thread->open_group));
  g_thread->open_group.clear();
}

void async_wait(int pending_allowed) {
  auto& groups = g_thread->committed;
  while (int(groups.size()) > pending_allowed) {
    for (const AsyncCopy& copy : groups.front()) land(copy);
    groups.erase(groups.begin());
  }
}

void fence_proxy_async() {
  SG_CHECK(g_block != nullptr, "CUDA emulator: fence.proxy.async outside a kernel");
  Block& block = *g_block;
  auto keep = [&](const void* start, size_t size) {
    const auto* s = static_cast<const unsigned char*>(start);
    block.fenced[s].assign(s, s + size);
  };
  if (block.dynamic_shared != nullptr) keep(block.dynamic_shared, block.dynamic_shared_bytes);
  for (const auto& [array, size] : block.filled_arrays) keep(array, size);
}

void expect_fenced(const void* address, size_t bytes, const char* operand) {
  const auto* p = static_cast<const unsigned char*>(address);
  Block& block = *g_block;
  SG_CHECK(!block.fenced.empty(), "CUDA emulator: kernel ", block.kernel, ": a wgmma reads shared memory (its ",
           operand, " operand) with no fence.proxy.async (fence_shared_for_wgmma) in the block before it: "
           "ordinary stores and cp.async copies become visible to wgmma only after the writing thread's fence, "
           "then a barrier");
  auto it = block.fenced.upper_bound(p);
  const bool found = it != block.fenced.begin() && p + bytes <= (--it)->first + it->second.size();
  SG_CHECK(found && std::memcmp(it->second.data() + (p - it->first), p, bytes) == 0, "CUDA emulator: kernel ",
           block.kernel, ": a wgmma reads shared memory (its ", operand, " operand) written after the block's last "
           "fence.proxy.async (fence_shared_for_wgmma): on the GPU the tensor cores may read the old bytes; the "
           "writing thread fences after its stores land (after cp.async's wait), then a barrier");
}

bool in_shared_memory(const void* address, size_t bytes) {
  if (g_block == nullptr) return false;
  const auto* p = static_cast<const unsigned char*>(address);
  auto inside = [&](const void* start, size_t size) {
    const auto* s = static_cast<const unsigned char*>(start);
    return s != nullptr && p >= s && p + bytes <= s + size;
  };
  if (inside(g_block->dynamic_shared, g_block->dynamic_shared_bytes)) return true;
  for (const auto& [array, size] : g_block->filled_arrays) {
    if (inside(array, size)) return true;
  }
  return false;
}

void* dynamic_shared() {
  SG_CHECK(g_block != nullptr && g_block->dynamic_shared != nullptr, "CUDA emulator: kernel ",
           g_block ? g_block->kernel : "?", " uses extern __shared__ memory but was launched with none");
  return g_block->dynamic_shared;
}

}  // namespace sg_emu
