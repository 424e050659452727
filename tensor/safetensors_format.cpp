// The safetensors format itself: parsing and checking a header, dtype names.
// Depends on nothing but the JSON parser, so the fuzz target
// (tools/fuzz/fuzz_parsers.cpp) can build it alone.
#include <algorithm>
#include <bit>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tensor/safetensors.h"

namespace sg {

static_assert(std::endian::native == std::endian::little, "safetensors data is little-endian; so is this code");

namespace {

using json = nlohmann::json;
constexpr int64_t kMaxHeaderBytes = int64_t(100) << 20;  // the format's own limit
constexpr int64_t kMaxElements = int64_t(1) << 48;

int64_t whole_number(const json& v, const std::string& what, const std::string& origin) {
  SG_CHECK(v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0), origin,
           ": corrupt safetensors header: ", what, " must be a non-negative integer, got ", v.dump());
  const uint64_t n = v.get<uint64_t>();
  SG_CHECK(n <= uint64_t(kMaxElements) * 8, origin, ": corrupt safetensors header: ", what, " = ", n, " is too large");
  return int64_t(n);
}

SafetensorsEntry parse_entry(const std::string& name, const json& v, int64_t data_bytes, const std::string& origin) {
  const std::string where = "tensor '" + name + "'";
  SG_CHECK(v.is_object(), origin, ": corrupt safetensors header: ", where, " is not an object");
  for (auto it = v.begin(); it != v.end(); ++it) {
    SG_CHECK(it.key() == "dtype" || it.key() == "shape" || it.key() == "data_offsets", origin,
             ": corrupt safetensors header: ", where, " has an unknown field '", it.key(), "'");
  }
  SG_CHECK(v.contains("dtype") && v["dtype"].is_string(), origin, ": corrupt safetensors header: ", where,
           " has no dtype string");
  SG_CHECK(v.contains("shape") && v["shape"].is_array(), origin, ": corrupt safetensors header: ", where,
           " has no shape array");
  SG_CHECK(v.contains("data_offsets") && v["data_offsets"].is_array() && v["data_offsets"].size() == 2, origin,
           ": corrupt safetensors header: ", where, " needs data_offsets [begin, end]");
  SafetensorsEntry e;
  e.dtype = safetensors_dtype(v["dtype"].get<std::string>(), origin + ": " + where);
  int64_t numel = 1;
  for (const json& d : v["shape"]) {
    const int64_t size = whole_number(d, where + "'s shape", origin);
    SG_CHECK(size == 0 || numel <= kMaxElements / size, origin, ": corrupt safetensors header: ", where,
             " has too many elements");
    numel *= size;
    e.shape.push_back(size);
  }
  e.begin = whole_number(v["data_offsets"][0], where + "'s data_offsets", origin);
  e.end = whole_number(v["data_offsets"][1], where + "'s data_offsets", origin);
  SG_CHECK(e.begin <= e.end && e.end <= data_bytes, origin, ": corrupt safetensors header: ", where, "'s data [",
           e.begin, ", ", e.end, ") lies outside the ", data_bytes, " data bytes (truncated file?)");
  SG_CHECK(e.end - e.begin == numel * dtype_size(e.dtype), origin, ": corrupt safetensors header: ", where, " is ",
           dtype_name(e.dtype), " of ", numel, " elements, which is ", numel * dtype_size(e.dtype),
           " bytes, but its data_offsets span ", e.end - e.begin);
  return e;
}

// kSafetensorsChecksumKey's value: {"name": "8 hex digits", ...}, one for
// every tensor in the file and for nothing else.
std::map<std::string, uint32_t> parse_checksums(const std::string& text,
                                                const std::map<std::string, SafetensorsEntry>& tensors,
                                                const std::string& origin) {
  const std::string what = std::string(": corrupt safetensors header: __metadata__'s ") + kSafetensorsChecksumKey;
  json root = json::parse(text, nullptr, /*allow_exceptions=*/false);
  SG_CHECK(root.is_object(), origin, what, " is not a JSON object");
  std::map<std::string, uint32_t> checksums;
  for (auto it = root.begin(); it != root.end(); ++it) {
    SG_CHECK(tensors.count(it.key()), origin, what, " names '", it.key(), "', which the file does not hold");
    const std::string hex = it.value().is_string() ? it.value().get<std::string>() : "";
    SG_CHECK(hex.size() == 8 && hex.find_first_not_of("0123456789abcdef") == std::string::npos, origin, what,
             " of '", it.key(), "' is not 8 lowercase hex digits: ", it.value().dump());
    checksums[it.key()] = uint32_t(std::stoul(hex, nullptr, 16));
  }
  SG_CHECK(checksums.size() == tensors.size(), origin, what, " covers ", checksums.size(), " of the ", tensors.size(),
           " tensors");
  return checksums;
}

}  // namespace

int64_t SafetensorsEntry::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

DType safetensors_dtype(const std::string& name, const std::string& origin) {
  static const std::map<std::string, DType> known = {{"F32", DType::f32}, {"BF16", DType::bf16}, {"F16", DType::f16},
                                                     {"I32", DType::i32}, {"I64", DType::i64},   {"F64", DType::f64}};
  auto it = known.find(name);
  SG_CHECK(it != known.end(), origin, ": dtype '", name, "' is not supported (shardgrad reads F32, BF16, F16, I32, ",
           "I64 and F64)");
  return it->second;
}

std::string safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::bf16: return "BF16";
    case DType::f16: return "F16";
    case DType::i32: return "I32";
    case DType::i64: return "I64";
    case DType::f64: return "F64";
  }
  return "?";
}

SafetensorsHeader parse_safetensors_header(std::string_view text, int64_t data_bytes, const std::string& origin) {
  json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  SG_CHECK(!root.is_discarded(), origin, ": corrupt safetensors header: not valid JSON");
  SG_CHECK(root.is_object(), origin, ": corrupt safetensors header: not a JSON object");
  SafetensorsHeader header;
  for (auto it = root.begin(); it != root.end(); ++it) {
    if (it.key() == "__metadata__") {
      SG_CHECK(it.value().is_object(), origin, ": corrupt safetensors header: __metadata__ must be an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        SG_CHECK(m.value().is_string(), origin, ": corrupt safetensors header: __metadata__ value '", m.key(),
                 "' is not a string");
        header.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    header.tensors[it.key()] = parse_entry(it.key(), it.value(), data_bytes, origin);
  }
  // The tensors tile the data section exactly: no overlaps, no holes.
  std::vector<std::pair<int64_t, int64_t>> ranges;
  for (const auto& [name, e] : header.tensors) ranges.push_back({e.begin, e.end});
  std::sort(ranges.begin(), ranges.end());
  int64_t covered = 0;
  for (auto [begin, end] : ranges) {
    SG_CHECK(begin == covered, origin, ": corrupt safetensors header: the data at byte ", std::min(begin, covered),
             begin < covered ? " belongs to two tensors" : " belongs to no tensor");
    covered = end;
  }
  SG_CHECK(covered == data_bytes, origin, ": the data section holds ", data_bytes, " bytes but the tensors cover ",
           covered, " (a truncated or padded file?)");
  auto checksums = header.metadata.find(kSafetensorsChecksumKey);
  if (checksums != header.metadata.end()) {
    header.checksums = parse_checksums(checksums->second, header.tensors, origin);
    header.metadata.erase(checksums);  // the format's, not the writer's metadata
  }
  return header;
}

SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& origin) {
  SG_CHECK(size >= 8, origin, ": not a safetensors file: ", size, " bytes is shorter than the 8-byte header length");
  uint64_t n = 0;
  std::memcpy(&n, bytes, 8);
  SG_CHECK(n <= uint64_t(kMaxHeaderBytes) && n <= size - 8, origin, ": not a safetensors file (or truncated): ",
           "its header length is ", n, " bytes, the file has ", size - 8, " after the length");
  SafetensorsHeader header = parse_safetensors_header(
      std::string_view(reinterpret_cast<const char*>(bytes) + 8, size_t(n)), int64_t(size - 8 - n), origin);
  header.data_start = 8 + int64_t(n);
  return header;
}

}  // namespace sg
