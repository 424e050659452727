#include "tensor/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "tensor/crc32c.h"

namespace sg {

namespace {

constexpr int64_t kMaxHeaderBytes = int64_t(100) << 20;  // the format's own limit

void read_exactly(std::ifstream& in, char* out, int64_t bytes, int64_t at, const std::string& path) {
  in.clear();
  in.seekg(at);
  in.read(out, bytes);
  SG_CHECK(in.gcount() == bytes, path, ": could not read ", bytes, " bytes at offset ", at,
           " (the file is shorter than its header says: truncated?)");
}

}  // namespace

SafetensorsReader::SafetensorsReader(std::string path) : path_(std::move(path)) {
  std::error_code error;
  const uintmax_t size = std::filesystem::file_size(path_, error);
  SG_CHECK(!error, path_, ": cannot open (", error.message(), ")");
  file_size_ = int64_t(size);
  std::ifstream in(path_, std::ios::binary);
  SG_CHECK(in.good(), path_, ": cannot open for reading");
  SG_CHECK(file_size_ >= 8, path_, ": not a safetensors file: ", file_size_, " bytes is shorter than the 8-byte ",
           "header length");
  uint64_t n = 0;
  read_exactly(in, reinterpret_cast<char*>(&n), 8, 0, path_);
  SG_CHECK(n <= uint64_t(kMaxHeaderBytes) && int64_t(n) <= file_size_ - 8, path_,
           ": not a safetensors file (or truncated): its header length is ", n, " bytes, the file has ",
           file_size_ - 8, " after the length");
  std::string text(size_t(n), '\0');
  read_exactly(in, text.data(), int64_t(n), 8, path_);
  header_ = parse_safetensors_header(text, file_size_ - 8 - int64_t(n), path_);
  header_.data_start = 8 + int64_t(n);
}

const SafetensorsEntry& SafetensorsReader::entry(const std::string& name) const {
  auto it = header_.tensors.find(name);
  if (it == header_.tensors.end()) {
    std::string names;
    for (const auto& [held, e] : header_.tensors) names += (names.empty() ? "" : ", ") + held;
    if (names.size() > 300) names = names.substr(0, 300) + "...";
    throw Error(path_ + ": has no tensor '" + name + "' (it holds: " + names + ")");
  }
  return it->second;
}

Tensor SafetensorsReader::read(const std::string& name) const {
  const SafetensorsEntry& e = entry(name);
  return read_elements(name, 0, e.numel()).view(e.shape);
}

Tensor SafetensorsReader::read_elements(const std::string& name, int64_t first, int64_t count) const {
  return read_strided(name, first, count, count, 1);
}

Tensor SafetensorsReader::read_strided(const std::string& name, int64_t first, int64_t count, int64_t stride,
                                       int64_t rows) const {
  const SafetensorsEntry& e = entry(name);
  SG_CHECK(first >= 0 && count >= 0 && rows >= 0 && (rows == 0 || first + (rows - 1) * stride + count <= e.numel()),
           path_, ": tensor '", name, "' has ", e.numel(), " elements; cannot read ", rows, " x ", count, " from ", first,
           " with stride ", stride);
  Tensor out = Tensor::empty({rows * count}, TensorOptions().dtype(e.dtype));
  std::ifstream in(path_, std::ios::binary);
  SG_CHECK(in.good(), path_, ": cannot open for reading");
  const int64_t size = dtype_size(e.dtype);
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t r = 0; r < rows; ++r) {
    read_exactly(in, dst + r * count * size, count * size, header_.data_start + e.begin + (first + r * stride) * size,
                 path_);
  }
  const bool whole = first == 0 && rows * count == e.numel() && (rows <= 1 || stride == count);
  verify(name, e, whole ? out.data_ptr() : nullptr);
  return out;
}

void SafetensorsReader::verify(const std::string& name, const SafetensorsEntry& e, const void* whole) const {
  auto recorded = header_.checksums.find(name);
  if (recorded == header_.checksums.end() || verified_.count(name)) return;
  uint32_t crc = 0;
  if (whole != nullptr) {
    crc = crc32c(whole, size_t(e.end - e.begin));
  } else {  // a slice was read: the whole tensor's bytes, 1 MiB at a time
    std::ifstream in(path_, std::ios::binary);
    SG_CHECK(in.good(), path_, ": cannot open for reading");
    std::vector<char> chunk(size_t(1) << 20);
    for (int64_t at = e.begin; at < e.end;) {
      const int64_t n = std::min<int64_t>(int64_t(chunk.size()), e.end - at);
      read_exactly(in, chunk.data(), n, header_.data_start + at, path_);
      crc = crc32c(chunk.data(), size_t(n), crc);
      at += n;
    }
  }
  SG_CHECK(crc == recorded->second, path_, ": tensor '", name, "' is corrupt: its bytes' CRC-32C is ",
           crc32c_hex(crc), " where the file recorded ", crc32c_hex(recorded->second), " when it was written (damaged on disk or in a copy). Restore the ",
           "file from a good copy, or resume from an older checkpoint");
  verified_.insert(name);
}

namespace {

// A file written under a temporary name and renamed into place once complete
// and on disk, so a crash leaves either the old file or the new one.
class AtomicFile {
 public:
  explicit AtomicFile(std::string path)
      : path_(std::move(path)), temp_(path_ + ".tmp." + std::to_string(::getpid())) {
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    SG_CHECK(fd_ >= 0, "cannot write ", temp_, ": ", std::strerror(errno), " (does the directory exist, is it writable?)");
  }
  ~AtomicFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(temp_.c_str());  // nothing half-written stays behind
  }
  void write(const void* data, size_t bytes) {
    const char* p = static_cast<const char*>(data);
    while (bytes > 0) {
      ssize_t n = ::write(fd_, p, bytes);
      if (n < 0 && errno == EINTR) continue;
      SG_CHECK(n > 0, "writing ", temp_, " failed: ", std::strerror(errno), " (disk full?)");
      p += n, bytes -= size_t(n);
    }
  }
  void commit() {
    SG_CHECK(::fsync(fd_) == 0, "fsync of ", temp_, " failed: ", std::strerror(errno));
    SG_CHECK(::close(fd_) == 0, "closing ", temp_, " failed: ", std::strerror(errno));
    fd_ = -1;
    SG_CHECK(::rename(temp_.c_str(), path_.c_str()) == 0, "renaming ", temp_, " to ", path_, " failed: ",
             std::strerror(errno));
    committed_ = true;
    // The rename itself is durable once the directory is synced.
    std::string dir = std::filesystem::path(path_).parent_path().string();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) ::fsync(dfd), ::close(dfd);
  }

 private:
  std::string path_, temp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

void write_file_atomically(const std::string& path, std::string_view content) {
  AtomicFile file(path);
  file.write(content.data(), content.size());
  file.commit();
}

using json = nlohmann::json;

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::vector<Tensor> host;
  int64_t at = 0;
  for (const auto& [name, tensor] : tensors) {
    SG_CHECK(tensor.defined() && !tensor.is_sharded(), "write_safetensors(", path, "): '", name,
             "' must be a defined, replicated tensor (gather a shard first)");
    SG_CHECK(name != "__metadata__" && !header.contains(name), "write_safetensors(", path, "): name '", name,
             "' is reserved or used twice");
    host.push_back(tensor.to(Device::cpu()).contiguous());
    const int64_t bytes = host.back().numel() * host.back().element_size();
    header[name] = {{"dtype", safetensors_dtype_name(tensor.dtype())}, {"shape", tensor.shape()},
                    {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  json checksums = json::object();
  for (size_t i = 0; i < tensors.size(); ++i) {
    const size_t bytes = size_t(host[i].numel() * host[i].element_size());
    checksums[tensors[i].first] = crc32c_hex(crc32c(host[i].data_ptr(), bytes));
  }
  SG_CHECK(!metadata.count(kSafetensorsChecksumKey), "write_safetensors(", path, "): the metadata key ",
           kSafetensorsChecksumKey, " is the writer's own");
  json meta(metadata);
  meta[kSafetensorsChecksumKey] = checksums.dump();
  header["__metadata__"] = meta;
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data starts 8-byte aligned
  const uint64_t n = text.size();
  AtomicFile file(path);
  file.write(&n, 8);
  file.write(text.data(), text.size());
  for (const Tensor& t : host) file.write(t.data_ptr(), size_t(t.numel() * t.element_size()));
  file.commit();
}

}  // namespace sg
