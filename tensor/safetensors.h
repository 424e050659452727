// safetensors: the tensor file format of Hugging Face (and of shardgrad's
// checkpoints and exports). A small, well-specified format:
//
//   [ 8 bytes: N, little-endian u64 ][ N bytes: JSON header ][ data ]
//
//   header = {"wte.weight": {"dtype": "F32", "shape": [65, 128], "data_offsets": [0, 33280]},
//             ...,
//             "__metadata__": {"n_layer": "4", ...}}        (string -> string, optional)
//
// data_offsets are [begin, end) bytes into the data section; the tensors must
// cover it exactly, without overlaps or holes. Values are raw little-endian,
// row-major. The header is padded with spaces to a multiple of 8 bytes so the
// data starts aligned.
//
// The reader checks everything before trusting it (sizes, offsets, dtypes,
// shapes, JSON) and throws sg::Error naming the file and the problem; it
// reads data on demand, so a rank can read only its slice of a tensor. The
// writer never leaves a half-written file under the final name: it writes a
// temporary file, fsyncs it and renames it into place.
//
// The writer also records each tensor's CRC-32C (tensor/crc32c.h) in the
// metadata, under kSafetensorsChecksumKey as {"wte.weight": "e3069283", ...};
// other readers see one more metadata string. shardgrad's reader checks a
// tensor's bytes against it the first time it reads any of them (the whole
// tensor then, even for a slice), so bytes damaged on disk or in a copy are
// an error, never training data. Files from elsewhere, without it, are read
// unchecked.
//
// Read next: optim/checkpoint.h, which keeps training state in these files.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace sg {

struct SafetensorsEntry {
  DType dtype = DType::f32;
  Shape shape;
  int64_t begin = 0, end = 0;  // bytes, relative to the data section
  int64_t numel() const;
};

inline constexpr const char* kSafetensorsChecksumKey = "shardgrad.crc32c";

struct SafetensorsHeader {
  std::map<std::string, SafetensorsEntry> tensors;
  std::map<std::string, std::string> metadata;     // without kSafetensorsChecksumKey
  std::map<std::string, uint32_t> checksums;       // per tensor; empty if the file has none
  int64_t data_start = 0;  // bytes from the start of the file
};

// Parses and checks a header against the size of the data section that
// follows it. `origin` names the file in errors.
SafetensorsHeader parse_safetensors_header(std::string_view json, int64_t data_bytes, const std::string& origin);
// Parses the whole file image (length prefix, header, data size).
SafetensorsHeader parse_safetensors(const uint8_t* bytes, size_t size, const std::string& origin);

// "F32" <-> DType; an unsupported dtype is an error that names it.
DType safetensors_dtype(const std::string& name, const std::string& origin);
std::string safetensors_dtype_name(DType dtype);

class SafetensorsReader {
 public:
  explicit SafetensorsReader(std::string path);  // reads and checks the header only

  const std::string& path() const { return path_; }
  const std::map<std::string, SafetensorsEntry>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  bool contains(const std::string& name) const { return header_.tensors.count(name) > 0; }
  bool has_checksums() const { return !header_.checksums.empty(); }
  const SafetensorsEntry& entry(const std::string& name) const;  // error naming what the file holds

  Tensor read(const std::string& name) const;  // the whole tensor, on the CPU
  // Elements [first, first + count) of the flattened tensor, as a 1-D tensor.
  Tensor read_elements(const std::string& name, int64_t first, int64_t count) const;
  // `count` elements starting at `first`, then every `stride` elements, `rows`
  // times: one column block of a row-major matrix (rows x count).
  Tensor read_strided(const std::string& name, int64_t first, int64_t count, int64_t stride, int64_t rows) const;

 private:
  // Checks tensor `name`'s bytes against its recorded CRC once; `whole`, if
  // given, holds them all already (a read of the whole tensor).
  void verify(const std::string& name, const SafetensorsEntry& e, const void* whole) const;

  std::string path_;
  int64_t file_size_ = 0;
  SafetensorsHeader header_;
  mutable std::set<std::string> verified_;
};

// Writes `tensors` (any device, any layout: replicated values are written)
// with `metadata`, atomically: `path` is either the old file or the complete
// new one, never a partial one.
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes `content` to `path` the same way (temporary name, fsync, rename,
// fsync of the directory).
void write_file_atomically(const std::string& path, std::string_view content);

}  // namespace sg
