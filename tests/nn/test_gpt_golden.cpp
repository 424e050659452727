// The golden test: for the same weights and tokens, shardgrad's GPT gives
// PyTorch's loss and every parameter's gradient (f32, relative 1e-5). The
// fixture is made by tools/make_gpt_fixture.py with Debian's python3-torch;
// this test needs no Python.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <map>

#include "nn/gpt.h"
#include "tests/test_util.h"

#ifndef SG_TEST_FIXTURES
#error "SG_TEST_FIXTURES must name the tests/fixtures directory"
#endif

namespace sg {
namespace {

// Reads the fixture's records: name -> tensor (f32).
std::map<std::string, Tensor> read_fixture(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in.good(), "cannot open the fixture ", path, "; regenerate it with tools/make_gpt_fixture.py");
  char magic[4];
  uint32_t version = 0;
  in.read(magic, 4);
  in.read(reinterpret_cast<char*>(&version), 4);
  SG_CHECK(in.good() && std::memcmp(magic, "SGFX", 4) == 0 && version == 1, path, " is not a version-1 fixture");
  std::map<std::string, Tensor> records;
  uint32_t name_length = 0;
  while (in.read(reinterpret_cast<char*>(&name_length), 4)) {
    std::string name(name_length, '\0');
    uint32_t ndim = 0;
    in.read(name.data(), name_length);
    in.read(reinterpret_cast<char*>(&ndim), 4);
    Shape shape(ndim);
    in.read(reinterpret_cast<char*>(shape.data()), std::streamsize(8 * ndim));
    Tensor tensor = Tensor::empty(shape);
    in.read(static_cast<char*>(tensor.data_ptr()), std::streamsize(tensor.nbytes()));
    SG_CHECK(in.good(), path, " is truncated in record ", name);
    records[name] = tensor;
  }
  return records;
}

TEST(GptGolden, LossAndEveryGradientMatchPyTorch) {
  std::map<std::string, Tensor> fixture = read_fixture(std::string(SG_TEST_FIXTURES) + "/gpt_tiny.bin");
  GptConfig cfg;
  cfg.vocab_size = 11, cfg.block_size = 8, cfg.n_layer = 2, cfg.n_head = 2, cfg.n_embd = 8;
  Gpt model(cfg);
  std::vector<NamedParameter> params = model.named_parameters();
  ASSERT_EQ(params.size(), 2u + 12u * 2u + 2u);
  for (const NamedParameter& p : params) {
    ASSERT_TRUE(fixture.count("param:" + p.name)) << "the fixture has no " << p.name;
    Tensor data = p.variable.data();
    data.copy_(fixture.at("param:" + p.name));
  }
  Tensor x = fixture.at("input.x").to(DType::i32), y = fixture.at("input.y").to(DType::i32);
  Variable loss = model.loss(x, y);
  loss.backward();
  EXPECT_TRUE(test::all_close(loss.data().to_vector<float>(), fixture.at("loss").to_vector<float>(), 1e-5));
  for (const NamedParameter& p : params) {
    EXPECT_TRUE(test::all_close(p.variable.grad().to_vector<float>(), fixture.at("grad:" + p.name).to_vector<float>(),
                                1e-5, 1e-6))
        << p.name;
  }
}

}  // namespace
}  // namespace sg
