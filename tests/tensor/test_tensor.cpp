// The Tensor handle: creation, views, copies, conversions, element access and
// the errors a user meets on bad input.
#include <gtest/gtest.h>

#include <sstream>

#include "tensor/pending_read.h"
#include "tensor/tensor.h"

namespace sg {
namespace {

Tensor iota(const Shape& shape) {
  return Tensor::arange(shape_numel(shape), TensorOptions().dtype(DType::f32)).view(shape);
}

TEST(Tensor, CreationFillsAndDescribesItself) {
  Tensor z = Tensor::zeros({2, 3});
  EXPECT_EQ(z.shape(), (Shape{2, 3}));
  EXPECT_EQ(z.strides(), (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(z.numel(), 6);
  EXPECT_EQ(z.dtype(), DType::f32);
  EXPECT_TRUE(z.device().is_cpu());
  EXPECT_EQ(z.to_vector<float>(), std::vector<float>(6, 0.0f));
  EXPECT_EQ(Tensor::full({2}, 2.5, TensorOptions().dtype(DType::f16)).to_vector<float>(), (std::vector<float>{2.5f, 2.5f}));
  EXPECT_EQ(Tensor::ones({3}, TensorOptions().dtype(DType::i64)).to_vector<int64_t>(), (std::vector<int64_t>{1, 1, 1}));
  EXPECT_EQ(z.str(), "f32[2, 3]");
  std::ostringstream out;
  out << Tensor::zeros({4}, TensorOptions().dtype(DType::i32));
  EXPECT_EQ(out.str(), "i32[4]");
  EXPECT_EQ(Tensor().str(), "Tensor(undefined)");
}

TEST(Tensor, ScalarTensorsHoldOneElement) {
  Tensor s = Tensor::full({}, 4.0);
  EXPECT_EQ(s.dim(), 0);
  EXPECT_EQ(s.numel(), 1);
  EXPECT_EQ(s.item(), 4.0);
  EXPECT_THROW(Tensor::zeros({2}).item(), Error);
}

TEST(Tensor, EmptyTensorsWork) {
  Tensor e = Tensor::zeros({0, 3});
  EXPECT_EQ(e.numel(), 0);
  EXPECT_EQ(e.to_vector<float>().size(), 0u);
  EXPECT_EQ(e.transpose(0, 1).contiguous().shape(), (Shape{3, 0}));
}

TEST(Tensor, TransposeIsAViewWithSwappedStrides) {
  Tensor t = iota({2, 3});
  Tensor tt = t.transpose(0, 1);
  EXPECT_EQ(tt.shape(), (Shape{3, 2}));
  EXPECT_EQ(tt.strides(), (std::vector<int64_t>{1, 3}));
  EXPECT_FALSE(tt.is_contiguous());
  EXPECT_EQ(tt.data_ptr(), t.data_ptr());
  EXPECT_EQ(tt.at({2, 1}), 5.0);
  EXPECT_EQ(tt.contiguous().to_vector<float>(), (std::vector<float>{0, 3, 1, 4, 2, 5}));
}

TEST(Tensor, PermuteAndSliceComposeAsViews) {
  Tensor t = iota({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});  // (4, 2, 3)
  EXPECT_EQ(p.shape(), (Shape{4, 2, 3}));
  EXPECT_EQ(p.at({3, 1, 2}), t.at({1, 2, 3}));
  Tensor s = t.slice(2, 1, 3).slice(0, 1, 2);  // (1, 3, 2)
  EXPECT_EQ(s.shape(), (Shape{1, 3, 2}));
  EXPECT_EQ(s.contiguous().to_vector<float>(), (std::vector<float>{13, 14, 17, 18, 21, 22}));
  EXPECT_EQ(t.slice(-1, 4, 4).numel(), 0);
}

TEST(Tensor, ViewAndReshape) {
  Tensor t = iota({2, 6});
  EXPECT_EQ(t.view({3, -1}).shape(), (Shape{3, 4}));
  EXPECT_EQ(t.view({3, 4}).data_ptr(), t.data_ptr());
  Tensor tt = t.transpose(0, 1);
  EXPECT_THROW(tt.view({12}), Error);  // not contiguous
  Tensor r = tt.reshape({12});         // copies instead
  EXPECT_EQ(r.to_vector<float>()[1], 6.0f);
  EXPECT_THROW(t.view({5, -1}), Error);
  EXPECT_THROW(t.view({-1, -1}), Error);
  EXPECT_THROW(t.view({13}), Error);
}

TEST(Tensor, BadDimensionsAndRangesAreClearErrors) {
  Tensor t = iota({2, 3});
  EXPECT_THROW(t.transpose(0, 2), Error);
  EXPECT_THROW(t.permute({0, 0}), Error);
  EXPECT_THROW(t.slice(1, 2, 4), Error);
  EXPECT_THROW(t.at({2, 0}), Error);
  EXPECT_THROW(t.at({0}), Error);
  EXPECT_THROW(t.size(2), Error);
  EXPECT_EQ(t.size(-1), 3);
  EXPECT_THROW(t.data<int32_t>(), Error);
  EXPECT_THROW(Tensor().device(), Error);
  EXPECT_THROW(Tensor::from_vector(std::vector<float>{1, 2, 3}, {2, 2}), Error);
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor t = Tensor::from_vector(std::vector<float>{-1.5f, 0.0f, 0.1f, 1000.5f}, {4});
  EXPECT_EQ(t.to(DType::bf16).to(DType::f32).to_vector<float>(),
            (std::vector<float>{-1.5f, 0.0f, to_float(to_bf16(0.1f)), 1000.0f}));
  EXPECT_EQ(t.to(DType::f16).to(DType::f32).to_vector<float>(),
            (std::vector<float>{-1.5f, 0.0f, to_float(to_f16(0.1f)), 1000.5f}));
  EXPECT_EQ(t.to(DType::i32).to_vector<int32_t>(), (std::vector<int32_t>{-1, 0, 0, 1000}));
  EXPECT_EQ(t.to(DType::f32).data_ptr(), t.data_ptr());  // no-op conversions share storage
}

TEST(Tensor, ConversionOfAViewConvertsTheViewedElements) {
  Tensor t = iota({3, 2}).transpose(0, 1);
  EXPECT_EQ(t.to(DType::i64).to_vector<int64_t>(), (std::vector<int64_t>{0, 2, 4, 1, 3, 5}));
}

TEST(Tensor, CopyAndFillWriteThroughViews) {
  Tensor t = Tensor::zeros({3, 4});
  t.slice(1, 1, 3).fill_(7.0);  // a strided view
  t.transpose(0, 1).slice(0, 3, 4).copy_(Tensor::from_vector(std::vector<int32_t>{1, 2, 3}, {1, 3}));
  EXPECT_EQ(t.to_vector<float>(), (std::vector<float>{0, 7, 7, 1, 0, 7, 7, 2, 0, 7, 7, 3}));
  EXPECT_THROW(t.copy_(Tensor::zeros({4, 3})), Error);
}

TEST(Tensor, CloneIsDeepAndContiguousIsLazy) {
  Tensor t = iota({2, 2});
  Tensor c = t.clone();
  c.fill_(0.0);
  EXPECT_EQ(t.at({1, 1}), 3.0);
  EXPECT_EQ(t.contiguous().data_ptr(), t.data_ptr());
}

TEST(Tensor, WithCategoryMovesTheAccounting) {
  Tensor t = iota({5});
  Tensor p = t.with_category(MemoryCategory::parameter);
  EXPECT_EQ(p.category(), MemoryCategory::parameter);
  EXPECT_EQ(p.to_vector<float>(), t.to_vector<float>());
}

TEST(Tensor, ValuesStrAbbreviates) {
  EXPECT_EQ(iota({2, 2}).values_str(), "f32[2, 2] {0, 1, 2, 3}");
  EXPECT_EQ(iota({5}).values_str(2), "f32[5] {0, 1, ... (5 values)}");
}

TEST(Tensor, ParsesDevices) {
  EXPECT_EQ(parse_device("cpu"), Device::cpu());
  EXPECT_EQ(parse_device("cuda"), Device::cuda(0));
  EXPECT_EQ(parse_device("cuda:3"), Device::cuda(3));
  EXPECT_THROW(parse_device("gpu"), Error);
  EXPECT_THROW(parse_device("cuda:x"), Error);
}

TEST(Tensor, MovingToAMissingGpuIsAClearError) {
  if (cuda_available()) GTEST_SKIP() << "a GPU is present; tests/cuda covers transfers";
  try {
    iota({2}).to(Device::cuda());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
  }
}

// On the CPU a PendingRead copies at once: the values as they were when it
// was made. Undefined or sharded sources are refused, as is reading nothing.
TEST(PendingRead, OnTheCpuCopiesAtOnce) {
  Tensor x = Tensor::from_vector(std::vector<float>{1, 2, 3}, {3});
  PendingRead read(x);
  x.fill_(0.0);
  EXPECT_EQ(read.get().to_vector<float>(), (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(PendingRead(Tensor::full({}, 2.5)).item(), 2.5);
  EXPECT_THROW(PendingRead{Tensor()}, Error);
  EXPECT_THROW(PendingRead{Tensor::empty_sharded({8}, 0, 2)}, Error);
  PendingRead nothing;
  EXPECT_FALSE(nothing.defined());
  EXPECT_THROW(nothing.get(), Error);
}

}  // namespace
}  // namespace sg
