// safetensors: round trips of every dtype, partial reads, a file laid out by
// hand from the format's specification, and one clear error for each way a
// file can be broken.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "tensor/crc32c.h"
#include "tensor/safetensors.h"

namespace sg {
namespace {

// Named for the test, which CTest may run beside the file's other tests (two
// of them writing one "broken.safetensors" failed now and then).
std::string temp_path(const std::string& name) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  return ::testing::TempDir() + "/" + test->test_suite_name() + "." + test->name() + "." + name;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

// A file image from a header text and data bytes, as the spec lays it out.
std::string image(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string error_reading(const std::string& bytes) {
  const std::string path = temp_path("broken.safetensors");
  spit(path, bytes);
  try {
    SafetensorsReader reader(path);
    for (const auto& [name, e] : reader.tensors()) reader.read(name);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, EveryDtypeRoundTripsWithMetadata) {
  const std::string path = temp_path("round.safetensors");
  Tensor f = Tensor::from_vector<float>({1.5f, -2.0f, 3.25f, 0.0f, 7.0f, -1e-7f}, {2, 3});
  Tensor d = Tensor::from_vector<double>({1.0 / 3.0, -2.5}, {2});
  Tensor i = Tensor::from_vector<int32_t>({1, -2, 3}, {3});
  Tensor l = Tensor::from_vector<int64_t>({int64_t(1) << 40}, {1, 1});
  Tensor b = f.to(DType::bf16), h = f.to(DType::f16);
  Tensor scalar = Tensor::full({}, 4.0), empty = Tensor::empty({0, 5});
  write_safetensors(path, {{"f", f}, {"d", d}, {"i", i}, {"l", l}, {"b", b}, {"h", h}, {"s", scalar}, {"e", empty}},
                    {{"n_layer", "4"}, {"vocab", "ab\n\"c"}});
  SafetensorsReader r(path);
  EXPECT_EQ(r.tensors().size(), 8u);
  EXPECT_EQ(r.metadata().at("vocab"), "ab\n\"c");
  EXPECT_EQ(r.read("f").shape(), (Shape{2, 3}));
  EXPECT_EQ(r.read("f").to_vector<float>(), f.to_vector<float>());
  EXPECT_EQ(r.read("d").to_vector<double>(), d.to_vector<double>());
  EXPECT_EQ(r.read("i").to_vector<int32_t>(), i.to_vector<int32_t>());
  EXPECT_EQ(r.read("l").to_vector<int64_t>(), l.to_vector<int64_t>());
  EXPECT_EQ(r.read("b").dtype(), DType::bf16);
  EXPECT_EQ(r.read("b").to_vector<float>(), b.to_vector<float>());
  EXPECT_EQ(r.read("h").to_vector<float>(), h.to_vector<float>());
  EXPECT_EQ(r.read("s").shape(), Shape{});
  EXPECT_EQ(r.read("s").item(), 4.0);
  EXPECT_EQ(r.read("e").numel(), 0);
  // The data starts 8-byte aligned; no temporary file is left behind.
  std::string bytes = slurp(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
  for (const auto& f : std::filesystem::directory_iterator(::testing::TempDir())) {
    EXPECT_EQ(f.path().string().find("round.safetensors.tmp"), std::string::npos) << f.path();
  }
}

TEST(Safetensors, ReadsSlicesAndColumnBlocksWithoutTheRest) {
  const std::string path = temp_path("slices.safetensors");
  Tensor m = Tensor::arange(12).view({3, 4});  // f32 0..11
  write_safetensors(path, {{"m", m}});
  SafetensorsReader r(path);
  EXPECT_EQ(r.read_elements("m", 5, 4).to_vector<float>(), (std::vector<float>{5, 6, 7, 8}));
  EXPECT_EQ(r.read_strided("m", 1, 2, 4, 3).to_vector<float>(), (std::vector<float>{1, 2, 5, 6, 9, 10}));  // columns 1-2
  EXPECT_THROW(r.read_elements("m", 10, 3), Error);
  std::string e;
  try {
    r.read("wte.weight");
  } catch (const Error& error) {
    e = error.what();
  }
  EXPECT_NE(e.find("has no tensor 'wte.weight' (it holds: m)"), std::string::npos) << e;
}

TEST(Safetensors, ReadsAFileLaidOutByHandFromTheSpecification) {
  // Two tensors in reverse order of their data, metadata, no padding.
  std::string data(24, '\0');
  float a[2] = {1.0f, 2.0f};
  int64_t b[2] = {-3, 4};
  std::memcpy(data.data(), b, 16);
  std::memcpy(data.data() + 16, a, 8);
  spit(temp_path("spec.safetensors"),
       image(R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[16,24]},)"
             R"("b":{"dtype":"I64","shape":[2,1],"data_offsets":[0,16]}})",
             data));
  SafetensorsReader r(temp_path("spec.safetensors"));
  EXPECT_EQ(r.read("a").to_vector<float>(), (std::vector<float>{1, 2}));
  EXPECT_EQ(r.read("b").to_vector<int64_t>(), (std::vector<int64_t>{-3, 4}));
  EXPECT_EQ(r.metadata().at("format"), "pt");
}

TEST(Safetensors, EachBrokenFileGivesItsOwnError) {
  const std::string ok_header = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  auto expect = [](const std::string& bytes, const std::string& message) {
    std::string e = error_reading(bytes);
    EXPECT_NE(e.find(message), std::string::npos) << "expected '" << message << "', got '" << e << "'";
  };
  expect(std::string(5, 'x'), "shorter than the 8-byte header length");
  expect(image(ok_header, std::string(8, '\0')).substr(0, 30), "header length is");
  expect(image("{\"a\": ", ""), "not valid JSON");
  expect(image("[1, 2]", ""), "not a JSON object");
  expect(image(R"({"a":{"dtype":"Q8","shape":[2],"data_offsets":[0,8]}})", std::string(8, '\0')), "dtype 'Q8' is not supported");
  expect(image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, '\0')), "must be a non-negative integer");
  expect(image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, '\0')), "but its data_offsets span 8");
  expect(image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", std::string(8, '\0')), "lies outside the 8 data bytes");
  expect(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               std::string(8, '\0')),
         "belongs to two tensors");
  expect(image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, '\0')), "belongs to no tensor");
  expect(image(ok_header, std::string(12, '\0')), "the tensors cover 8");
  expect(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", std::string(8, '\0')), "unknown field 'x'");
  expect(image(R"({"__metadata__":{"n":4}})", ""), "__metadata__ value 'n' is not a string");
  expect(image(R"({"a":{"dtype":"F32","shape":[2]}})", ""), "needs data_offsets");
  expect(image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", ""), "too many elements");
  // A file cut short after a valid header.
  const std::string path = temp_path("cut.safetensors");
  write_safetensors(path, {{"a", Tensor::ones({100})}});
  std::string bytes = slurp(path);
  expect(bytes.substr(0, bytes.size() - 4), "lies outside the 396 data bytes (truncated file?)");
}

TEST(Safetensors, AFailedWriteLeavesTheOldFile) {
  const std::string path = temp_path("keep.safetensors");
  write_safetensors(path, {{"a", Tensor::ones({3})}});
  Tensor shard = Tensor::empty_sharded({8}, 0, 2);
  EXPECT_THROW(write_safetensors(path, {{"a", Tensor::zeros({3})}, {"s", shard}}), Error);
  EXPECT_EQ(SafetensorsReader(path).read("a").to_vector<float>(), (std::vector<float>{1, 1, 1}));
  EXPECT_THROW(write_safetensors(temp_path("no/such/dir/x.safetensors"), {{"a", Tensor::ones({3})}}), Error);
}

TEST(Crc32c, MatchesTheStandardCheckValueAndChainsAndBothFormsAgree) {
  const std::string digits = "123456789";
  EXPECT_EQ(crc32c(digits.data(), digits.size()), 0xE3069283u);  // RFC 3720's CRC-32C check value
  EXPECT_EQ(crc32c_portable(digits.data(), digits.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(nullptr, 0), 0u);
  EXPECT_EQ(crc32c(digits.data() + 4, 5, crc32c(digits.data(), 4)), 0xE3069283u);  // in pieces
  // 32 zero bytes, RFC 3720's first example (B.4).
  const std::string zeros(32, '\0');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c_hex(0x8A9136AAu), "8a9136aa");
  EXPECT_EQ(crc32c_hex(0x0000ABCDu), "0000abcd");
  // Every length and alignment the 8-byte instruction path splits differently.
  std::string bytes(300, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = char((i * 131 + 7) % 251);
  for (size_t start = 0; start < 9; ++start) {
    for (size_t n = 0; n + start <= bytes.size(); n += 7) {
      ASSERT_EQ(crc32c(bytes.data() + start, n), crc32c_portable(bytes.data() + start, n)) << start << " " << n;
    }
  }
}

// The CRC the writer records is checked on the first read of any of a
// tensor's bytes: a flipped bit is an error naming the file and the tensor,
// for a whole read and for a slice alike; the other tensors still read.
TEST(Safetensors, ADamagedTensorIsAnErrorAndTheOthersStillRead) {
  const std::string path = temp_path("crc.safetensors");
  Tensor a = Tensor::arange(16), b = Tensor::arange(64).view({8, 8});
  write_safetensors(path, {{"a", a}, {"b", b}}, {{"n_layer", "4"}});
  {
    SafetensorsReader r(path);
    EXPECT_TRUE(r.has_checksums());
    EXPECT_EQ(r.metadata(), (std::map<std::string, std::string>{{"n_layer", "4"}}));  // the CRCs are the format's
    EXPECT_EQ(r.read("b").to_vector<float>(), b.to_vector<float>());
  }
  std::string bytes = slurp(path);
  uint64_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data(), 8);
  const int64_t b_begin = SafetensorsReader(path).entry("b").begin;
  std::string damaged = bytes;
  damaged[size_t(8 + int64_t(header_bytes) + b_begin + 8 * 4 * 3 + 1)] ^= 0x10;  // one bit, inside row 3 of b
  spit(path, damaged);
  auto error_of = [&](auto read) -> std::string {
    try {
      SafetensorsReader r(path);
      read(r);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string whole = error_of([](SafetensorsReader& r) { r.read("b"); });
  EXPECT_NE(whole.find("crc.safetensors: tensor 'b' is corrupt: its bytes' CRC-32C is "), std::string::npos) << whole;
  const std::string slice = error_of([](SafetensorsReader& r) { r.read_elements("b", 0, 8); });  // row 0 only
  EXPECT_NE(slice.find("tensor 'b' is corrupt"), std::string::npos) << slice;
  EXPECT_EQ(error_of([](SafetensorsReader& r) { r.read_strided("b", 0, 2, 8, 8); }).empty(), false);
  EXPECT_EQ(error_of([&](SafetensorsReader& r) { EXPECT_EQ(r.read("a").to_vector<float>(), a.to_vector<float>()); }), "");
}

TEST(Safetensors, ChecksumMetadataIsCheckedAndReserved) {
  auto expect = [](const std::string& bytes, const std::string& message) {
    std::string e = error_reading(bytes);
    EXPECT_NE(e.find(message), std::string::npos) << "expected '" << message << "', got '" << e << "'";
  };
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string data(8, '\0');
  auto with = [&](const std::string& crcs) {  // crcs as a JSON string: its quotes escaped
    std::string header = R"({"__metadata__":{"shardgrad.crc32c":")";
    for (char c : crcs) {
      if (c == '"') header += '\\';
      header += c;
    }
    header += "\"},";
    header += a;
    header += "}";
    return image(header, data);
  };
  expect(with(R"({"a":"1234567"})"), "is not 8 lowercase hex digits");
  expect(with(R"({"a":"12345678","z":"12345678"})"), "names 'z', which the file does not hold");
  expect(with(R"({})"), "covers 0 of the 1 tensors");
  expect(with("[1]"), "is not a JSON object");
  expect(with(R"({"a":"00000000"})"), "tensor 'a' is corrupt");       // 8 zero bytes have another CRC
  const std::string hex = crc32c_hex(crc32c(data.data(), data.size()));
  std::string right = R"({"a":")";
  right += hex;
  right += "\"}";
  EXPECT_EQ(error_reading(with(right)), "");  // the right CRC reads
  EXPECT_THROW(write_safetensors(temp_path("r.safetensors"), {{"a", Tensor::ones({1})}}, {{"shardgrad.crc32c", "x"}}),
               Error);
}

}  // namespace
}  // namespace sg
