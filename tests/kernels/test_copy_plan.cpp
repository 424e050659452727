// kernels/copy_plan.h: the rewrites keep every copy's meaning (checked by
// carrying out plans on the CPU word by word against the element-wise copy)
// and find the plans the GPU's hot copies need. The CPU's strided_copy,
// which carries out the plans, is held to the same element-wise copy.
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/copy_plan.h"
#include "kernels/cpu/elementwise.h"

namespace sg {
namespace {

struct View {
  std::vector<int64_t> shape, in_strides, out_strides;
};

int64_t offset_of(int64_t index, const std::vector<int64_t>& shape, const std::vector<int64_t>& strides) {
  int64_t offset = 0;
  for (int d = int(shape.size()) - 1; d >= 0; --d) {
    offset += index % shape[size_t(d)] * strides[size_t(d)];
    index /= shape[size_t(d)];
  }
  return offset;
}

// Copies a view element by element, then by the plan's words, from and into
// buffers of 16-bit elements starting `shift` elements past a 16-byte boundary.
// Which plans the random views produced, so the test knows it covered them.
struct Seen {
  int words[17] = {}, strided = 0;
};

void expect_plan_copies_the_view(const View& v, int shift, Seen& seen) {
  const int64_t n = std::accumulate(v.shape.begin(), v.shape.end(), int64_t(1), std::multiplies<>());
  int64_t span = 1;
  for (size_t d = 0; d < v.shape.size(); ++d) {
    span += (v.shape[d] - 1) * std::max(v.in_strides[d], v.out_strides[d]);
  }
  // Three buffers whose first element sits on a 16-byte boundary.
  std::vector<uint16_t> storage(size_t(3 * (span + shift + 8) + 8));
  uint16_t* in = storage.data() + (16 - reinterpret_cast<uintptr_t>(storage.data()) % 16) % 16 / 2;
  uint16_t* want = in + (span + shift + 8) / 8 * 8;
  uint16_t* got = want + (span + shift + 8) / 8 * 8;
  for (int64_t i = 0; i < span + shift; ++i) in[i] = uint16_t(i * 7919 + 1), want[i] = got[i] = 0xffff;
  for (int64_t i = 0; i < n; ++i) {
    want[shift + offset_of(i, v.shape, v.out_strides)] = in[shift + offset_of(i, v.shape, v.in_strides)];
  }
  const CopyPlan plan = plan_copy(v.shape.data(), v.in_strides.data(), v.out_strides.data(), int(v.shape.size()), 2,
                                  reinterpret_cast<uintptr_t>(in + shift), reinterpret_cast<uintptr_t>(got + shift));
  ASSERT_EQ(plan.words * plan.word_bytes, n * 2);
  ++seen.words[plan.word_bytes];
  seen.strided += !plan.contiguous;
  const auto* src = reinterpret_cast<const unsigned char*>(in + shift);
  auto* dst = reinterpret_cast<unsigned char*>(got + shift);
  std::vector<int64_t> shape(plan.shape, plan.shape + plan.ndim), in_s(plan.in_strides, plan.in_strides + plan.ndim),
      out_s(plan.out_strides, plan.out_strides + plan.ndim);
  for (int64_t w = 0; w < plan.words; ++w) {
    std::memcpy(dst + offset_of(w, shape, out_s) * plan.word_bytes, src + offset_of(w, shape, in_s) * plan.word_bytes,
                size_t(plan.word_bytes));
  }
  EXPECT_EQ(std::memcmp(got, want, size_t(span + shift) * 2), 0) << "shift " << shift;
  // The CPU kernel, over the same view, leaves the same bits (and the bytes between untouched).
  for (int64_t i = 0; i < span + shift; ++i) got[i] = 0xffff;
  cpu::strided_copy(got + shift, v.out_strides.data(), in + shift, v.in_strides.data(), v.shape.data(),
                    int(v.shape.size()), 2);
  EXPECT_EQ(std::memcmp(got, want, size_t(span + shift) * 2), 0) << "cpu::strided_copy, shift " << shift;
}

// Copies a view of `element` bytes per element with cpu::strided_copy and
// element by element; each byte of the input is distinct, so a misplaced
// element shows.
void expect_cpu_copy_matches(const View& v, int64_t element) {
  const int64_t n = std::accumulate(v.shape.begin(), v.shape.end(), int64_t(1), std::multiplies<>());
  int64_t span = 1;
  for (size_t d = 0; d < v.shape.size(); ++d) span += (v.shape[d] - 1) * std::max(v.in_strides[d], v.out_strides[d]);
  std::vector<unsigned char> in(size_t(span * element)), want(in.size(), 0xee), got(in.size(), 0xee);
  for (size_t i = 0; i < in.size(); ++i) in[i] = static_cast<unsigned char>(i * 31 + i / 251);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(&want[size_t(offset_of(i, v.shape, v.out_strides) * element)],
                &in[size_t(offset_of(i, v.shape, v.in_strides) * element)], size_t(element));
  }
  cpu::strided_copy(got.data(), v.out_strides.data(), in.data(), v.in_strides.data(), v.shape.data(),
                    int(v.shape.size()), element);
  EXPECT_TRUE(got == want) << element << "-byte elements, " << v.shape.size() << " dimensions";
}

TEST(CopyPlan, RandomViewsCopyTheSameBitsAsElementByElement) {
  std::mt19937 rng(5);
  Seen seen;
  for (int trial = 0; trial < 300; ++trial) {
    const int ndim = 1 + int(rng() % 4);
    View v;
    for (int d = 0; d < ndim; ++d) v.shape.push_back((1 + int64_t(rng() % 4)) * (rng() % 2 ? 8 : 1));
    // The output dense row-major, the input a permutation of a dense layout, maybe padded.
    int64_t stride = 1;
    v.out_strides.assign(size_t(ndim), 0);
    for (int d = ndim - 1; d >= 0; --d) v.out_strides[size_t(d)] = stride, stride *= v.shape[size_t(d)];
    std::vector<int> order(static_cast<size_t>(ndim));
    std::iota(order.begin(), order.end(), 0);
    if (rng() % 2) std::shuffle(order.begin(), order.end(), rng);
    v.in_strides.assign(size_t(ndim), 0);
    stride = 1;
    for (int k = ndim - 1; k >= 0; --k) {
      const int d = order[size_t(k)];
      v.in_strides[size_t(d)] = stride;
      stride *= v.shape[size_t(d)] + int64_t(rng() % 3 == 0 ? 8 : 0);  // padding between rows, sometimes
    }
    if (rng() % 2) std::swap(v.in_strides, v.out_strides);
    for (int shift : {0, 1, 4}) expect_plan_copies_the_view(v, shift, seen);
  }
  for (int word : {2, 4, 8, 16}) EXPECT_GE(seen.words[word], 20) << word << "-byte words";
  EXPECT_GE(seen.strided, 300);
}

// Copies large enough to be shared between threads, of every element size:
// a contiguous run, a transpose (strided rows), rows with padding between
// them, a broadcast input (stride 0), and more dimensions than a plan holds.
TEST(CopyPlan, CpuStridedCopyMatchesElementByElementOnLargeViews) {
  const View views[] = {
      {{300, 700}, {700, 1}, {700, 1}},
      {{300, 700}, {1, 300}, {700, 1}},
      {{6, 300, 70}, {300 * 80, 80, 1}, {300 * 70, 70, 1}},
      {{600, 300}, {0, 1}, {300, 1}},
      {{2, 2, 2, 2, 2, 2, 2, 2, 2, 64}, {1024, 512, 256, 128, 64, 32, 16, 8, 4, 1},
       {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}},
  };
  for (const View& v : views) {
    for (int64_t element : {1, 2, 4, 8}) expect_cpu_copy_matches(v, element);
  }
}

TEST(CopyPlan, FindsTheCheapPlans) {
  const int64_t B = 2, T = 5, NH = 3, HS = 64, C = NH * HS;
  // Contiguous (B, T, C) into contiguous: one memory copy.
  int64_t shape[] = {B, T, C}, dense[] = {T * C, C, 1};
  CopyPlan plan = plan_copy(shape, dense, dense, 3, 2, 0, 0);
  EXPECT_TRUE(plan.contiguous);
  EXPECT_EQ(plan.bytes(), B * T * C * 2);
  // Attention's q as (B, NH, T, HS) out of (B, T, 3C): three dimensions of 16-byte words.
  int64_t head_shape[] = {B, NH, T, HS}, from_qkv[] = {T * 3 * C, HS, 3 * C, 1}, head_major[] = {NH * T * HS, T * HS, HS, 1};
  plan = plan_copy(head_shape, from_qkv, head_major, 4, 2, 0, 0);
  EXPECT_FALSE(plan.contiguous);
  EXPECT_EQ(plan.word_bytes, 16);
  EXPECT_EQ(plan.ndim, 4);
  EXPECT_EQ(plan.shape[3], HS * 2 / 16);
  // An address off the 16-byte grid takes smaller words; off every grid, elements.
  EXPECT_EQ(plan_copy(head_shape, from_qkv, head_major, 4, 2, 8, 0).word_bytes, 8);
  EXPECT_EQ(plan_copy(head_shape, from_qkv, head_major, 4, 2, 2, 0).word_bytes, 2);
  // Extents of 1 go; nothing to move is zero words.
  int64_t ones[] = {1, 1, 7}, ones_strides[] = {99, 42, 1};
  plan = plan_copy(ones, ones_strides, ones_strides, 3, 4, 0, 0);
  EXPECT_TRUE(plan.contiguous);
  EXPECT_EQ(plan.bytes(), 28);
  int64_t empty[] = {3, 0};
  EXPECT_EQ(plan_copy(empty, dense, dense, 2, 2, 0, 0).words, 0);
}

}  // namespace
}  // namespace sg
