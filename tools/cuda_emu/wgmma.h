// Hopper's warpgroup-level matrix multiply (PTX wgmma.mma_async
// .m64nNk16.f32.{bf16,f16}) for the emulator: D (64 x N, f32) = A (64 x 16)
// B (16 x N) (+ D), issued by the 128 threads of a warpgroup together.
//
//   A: from registers, warp w of the group holding rows 16 w..16 w + 15 in
//      mma.m16n8k16's A layout (mma.h), or from shared memory;
//   B: from shared memory, always;
//   D: thread (warp w, lane 4 g + t) holds d[4 j + e] = row 16 w + g + 8 (e / 2),
//      column 8 j + 2 t + (e % 2): mma.m16n8k16's accumulators, N / 8 of them
//      side by side (the PTX ISA's "Matrix Fragments for wgmma.m64nNk16").
//
// An operand in shared memory is named by a 64-bit matrix descriptor (the
// PTX ISA's "Matrix Descriptor Format"): bits 0-13 the start address, 16-29
// the leading dimension byte offset (LBO), 32-45 the stride dimension byte
// offset (SBO), each shifted right by 4; 49-51 a base offset, 62-63 the
// swizzle. The matrix is made of "core matrices" of 8 rows of 16 bytes (8
// 16-bit values), each 128 contiguous bytes. Without swizzling (the only
// layout emulated here, and the only one shardgrad's kernels use):
//   K-major (A, or B without transpose): a core matrix is 8 rows of M (or N)
//     by 8 values of K; element (mn, k) lies at
//     (k / 8) LBO + (mn / 8) SBO + (mn % 8) 16 + (k % 8) 2 bytes;
//   MN-major (B with imm-trans-b = 1): a core matrix is 8 rows of K by 8
//     values of N; element (k, n) lies at
//     (k / 8) LBO + (n / 8) SBO + (k % 8) 16 + (n % 8) 2 bytes.
// So LBO steps along K and SBO along M or N in both (CUTLASS's canonical
// "INTERLEAVE" layouts say the same). That reading of the documentation is
// what this file and kernels/cuda/wgmma.cuh share; only a GPU can confirm
// it, and test_cuda's WgmmaFragments tests do, with a message naming the
// other reading if the hardware takes that one.
//
// The sums are in float, in k order; the hardware's order and rounding are
// its own, so tests compare with a tolerance. Results land when the
// issuing thread waits for them (simt.h's wgmma_issue).
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/error.h"

#include "tools/cuda_emu/mma.h"
#include "tools/cuda_emu/simt.h"

namespace sg_emu {

struct DescriptorFields {
  uint32_t lbo, sbo, base_offset, swizzle;
};

inline DescriptorFields decode_descriptor(uint64_t desc) {
  return DescriptorFields{uint32_t((desc >> 16) & 0x3fffu) << 4, uint32_t((desc >> 32) & 0x3fffu) << 4,
                          uint32_t((desc >> 49) & 0x7u), uint32_t(desc >> 62)};
}

// What each thread of the warpgroup passes to the wgmma.
struct WgmmaOperands {
  const uint32_t* a_registers;  // nullptr: A from shared memory
  const void* a_start;
  uint64_t a_desc;
  const void* b_start;
  uint64_t b_desc;
  bool b_mn_major;
};

// An operand in shared memory, `rows` x 16 of K, checked once: the layout
// emulated, alignment, and every byte it reads inside the block's shared memory.
class SharedMatrix {
 public:
  SharedMatrix(const void* start, uint64_t desc, int rows, bool mn_major)
      : start_(static_cast<const unsigned char*>(start)), fields_(decode_descriptor(desc)), mn_major_(mn_major) {
    SG_CHECK(fields_.swizzle == 0 && fields_.base_offset == 0, "CUDA emulator: a wgmma descriptor with swizzle mode ",
             fields_.swizzle, " and base offset ", fields_.base_offset,
             "; only the layout without swizzling is emulated (tools/cuda_emu/wgmma.h)");
    SG_CHECK(reinterpret_cast<uintptr_t>(start) % 16 == 0, "CUDA emulator: a wgmma operand starts at ", start,
             ", not 16-byte aligned");
    const size_t last = offset(rows - 1, 15);
    SG_CHECK(in_shared_memory(start, last + 2), "CUDA emulator: a wgmma operand at ", start, " reads ", last + 2,
             " bytes (LBO ", fields_.lbo, ", SBO ", fields_.sbo, ") past the block's shared memory");
  }

  // Element (mn, k): row mn of A, column mn of B.
  template <typename Half>
  float at(int mn, int k) const {
    return mma_element<Half>(bits(mn, k), 0);
  }

  // Calls fn(address, 16) for each 16-byte row of the core matrices that
  // hold the operand's `rows` x 16 elements (the bytes the wgmma reads).
  template <typename Fn>
  void for_each_core_row(int rows, Fn fn) const {
    for (int mn = 0; mn < rows; mn += mn_major_ ? 8 : 1) {
      for (int k = 0; k < 16; k += mn_major_ ? 1 : 8) fn(start_ + offset(mn, k), size_t(16));
    }
  }

  uint16_t bits(int mn, int k) const {
    uint16_t value;
    std::memcpy(&value, start_ + offset(mn, k), sizeof value);
    return value;
  }

 private:
  size_t offset(int mn, int k) const {
    const size_t cores = size_t(k / 8) * fields_.lbo + size_t(mn / 8) * fields_.sbo;
    return cores + (mn_major_ ? size_t(k % 8) * 16 + size_t(mn % 8) * 2 : size_t(mn % 8) * 16 + size_t(k % 8) * 2);
  }

  const unsigned char* start_;
  DescriptorFields fields_;
  bool mn_major_;
};

// At the landing (simt.h's wgmma_issue): the shared-memory bytes of B (N
// rows) and of A (64, if from shared memory) read at the issue are still
// there. Returns what changed, or "".
inline std::function<std::string()> shared_operands_still(const SharedMatrix& b, int b_rows, const SharedMatrix* a) {
  auto snapshot = [](const SharedMatrix& m, int rows) {
    std::vector<uint16_t> values;
    for (int mn = 0; mn < rows; ++mn) {
      for (int k = 0; k < 16; ++k) values.push_back(m.bits(mn, k));
    }
    return values;
  };
  std::vector<std::pair<SharedMatrix, std::vector<uint16_t>>> held{{b, snapshot(b, b_rows)}};
  if (a != nullptr) held.emplace_back(*a, snapshot(*a, 64));
  return [held, snapshot]() -> std::string {
    for (size_t i = 0; i < held.size(); ++i) {
      if (snapshot(held[i].first, int(held[i].second.size() / 16)) != held[i].second) {
        return std::string("the shared memory of its ") + (i == 0 ? "B" : "A") + " operand";
      }
    }
    return "";
  };
}

// ... and this thread's A registers hold what they held.
inline std::function<std::string()> registers_still(const uint32_t* registers, std::function<std::string()> also) {
  return [registers, held = std::vector<uint32_t>(registers, registers + 4), also = std::move(also)] {
    return std::equal(held.begin(), held.end(), registers) ? also() : std::string("its A registers");
  };
}

// d (this thread's N / 2 accumulators) = A B (+ d when accumulate).
template <typename Half, int N>
void wgmma_m64nNk16(float (&d)[N / 2], const WgmmaOperands& mine, bool accumulate) {
  const SharedMatrix b(mine.b_start, mine.b_desc, N, mine.b_mn_major);
  const bool a_in_registers = mine.a_registers != nullptr;
  const SharedMatrix a = a_in_registers ? b : SharedMatrix(mine.a_start, mine.a_desc, 64, false);
  // The shared memory as this thread issues: the tensor cores may start
  // reading at the first thread's issue, so it must not change before the
  // last's (another thread's write or cp.async landing there without a
  // barrier before the wgmma would).
  std::function<std::string()> operands_still = shared_operands_still(b, N, a_in_registers ? nullptr : &a);
  const auto* const* all = reinterpret_cast<const WgmmaOperands* const*>(gather_from_warpgroup(&mine));
  const std::string changed = operands_still();
  SG_CHECK(changed.empty(), "CUDA emulator: kernel ", current_kernel(), ": a wgmma's operand (", changed,
           ") changed between this thread's issue and the last of its warpgroup's: a barrier is missing before "
           "it, after another thread's write (or its cp.async's wait)");
  for (int i = 1; i < 128; ++i) {
    const WgmmaOperands& other = *all[i];
    SG_CHECK(other.a_start == all[0]->a_start && other.a_desc == all[0]->a_desc &&
                 other.b_start == all[0]->b_start && other.b_desc == all[0]->b_desc &&
                 other.b_mn_major == all[0]->b_mn_major &&
                 (other.a_registers == nullptr) == (all[0]->a_registers == nullptr),
             "CUDA emulator: the threads of a warpgroup issued one wgmma with different operands");
  }
  const ThreadIndex& at = index();
  const unsigned linear = at.thread.x + at.block_dim.x * (at.thread.y + at.block_dim.y * at.thread.z);
  const int warp = int(linear / 32 % 4), g = lane_id() >> 2, t = lane_id() % 4;
  if (linear % 128 == 0) {  // once a warpgroup, every thread's issue in: the operands were fenced
    b.for_each_core_row(N, [](const unsigned char* row, size_t bytes) { expect_fenced(row, bytes, "B"); });
    if (!a_in_registers) {
      a.for_each_core_row(64, [](const unsigned char* row, size_t bytes) { expect_fenced(row, bytes, "A"); });
    }
  }
  auto a_at = [&](int row, int k) {
    if (!a_in_registers) return a.at<Half>(row, k);
    const int r = row % 16, reg = (r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0);
    const int lane = (r % 8) * 4 + (k % 8) / 2;
    return mma_element<Half>(all[32 * (row / 16) + lane]->a_registers[reg], k % 2);
  };
  // Every thread checks again at its own landing: a write after one
  // thread's wait and before another's (a barrier missing) fails too.
  if (a_in_registers) operands_still = registers_still(mine.a_registers, std::move(operands_still));
  const float* before = wgmma_pending(d);
  float result[N / 2];
  for (int i = 0; i < N / 2; ++i) {
    const int row = 16 * warp + g + ((i % 4) >= 2 ? 8 : 0), col = 8 * (i / 4) + 2 * t + (i % 2);
    float sum = accumulate ? (before != nullptr ? before[i] : d[i]) : 0.0f;
    for (int k = 0; k < 16; ++k) sum += a_at(row, k) * b.at<Half>(col, k);
    result[i] = sum;
  }
  release_warpgroup();  // every thread has read the others' registers
  wgmma_issue(d, result, N / 2, std::move(operands_still));
}

}  // namespace sg_emu
