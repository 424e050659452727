#include "examples/text_data.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "kernels/philox.h"
#include "tensor/rng.h"

namespace sg {

Tokenizer Tokenizer::bytes() {
  Tokenizer t;
  t.kind_ = Kind::byte;
  return t;
}

Tokenizer Tokenizer::characters_of(std::string_view text) {
  SG_CHECK(!text.empty(), "cannot build a character vocabulary from empty text");
  Tokenizer t;
  t.kind_ = Kind::character;
  std::vector<bool> present(256, false);
  for (char c : text) present[uint8_t(c)] = true;
  t.id_of_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    if (!present[size_t(b)]) continue;
    t.id_of_[size_t(b)] = int32_t(t.vocab_.size());
    t.vocab_.push_back(char(b));
  }
  return t;
}

Tokenizer Tokenizer::from_vocabulary(std::string_view vocab) {
  SG_CHECK(!vocab.empty() && vocab.size() <= 256, "a character vocabulary holds 1 to 256 characters, got ", vocab.size());
  Tokenizer t;
  t.kind_ = Kind::character;
  t.id_of_.assign(256, -1);
  for (char c : vocab) {
    SG_CHECK(t.id_of_[uint8_t(c)] < 0, "the vocabulary holds character ", int(uint8_t(c)), " twice");
    t.id_of_[uint8_t(c)] = int32_t(t.vocab_.size());
    t.vocab_.push_back(c);
  }
  return t;
}

Tokenizer Tokenizer::from_name(const std::string& name, std::string_view text) {
  if (name == "byte") return bytes();
  if (name == "char") return characters_of(text);
  SG_FAIL("unknown tokenizer '", name, "': use char or byte");
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    uint8_t b = uint8_t(text[i]);
    if (kind_ == Kind::byte) {
      ids.push_back(b);
    } else {
      SG_CHECK(id_of_[b] >= 0, "character ", int(b), " at position ", i, " is not in the ", vocab_.size(),
               "-character vocabulary the model was trained with (a model trained with --tokenizer byte ",
               "reads any text)");
      ids.push_back(id_of_[b]);
    }
  }
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string text;
  for (int32_t id : ids) {
    SG_CHECK(id >= 0 && id < vocab_size(), "token id ", id, " is outside the vocabulary of ", vocab_size());
    text.push_back(kind_ == Kind::byte ? char(id) : vocab_[size_t(id)]);
  }
  return text;
}

void Tokenizer::save(const std::string& path) const {
  std::ofstream out(path, std::ios::binary);
  SG_CHECK(out.good(), "cannot write the tokenizer to ", path);
  out << name() << "\n" << vocab_.size() << "\n" << vocab_;
  SG_CHECK(out.good(), "writing the tokenizer to ", path, " failed");
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in.good(), "cannot read a tokenizer from ", path);
  std::string kind;
  size_t size = 0;
  in >> kind >> size;
  in.get();  // the newline before the vocabulary
  if (kind == "byte") return bytes();
  SG_CHECK(kind == "char" && size > 0 && size <= 256, path, " is not a shardgrad tokenizer file");
  std::string vocab(size, '\0');
  in.read(vocab.data(), std::streamsize(size));
  SG_CHECK(size_t(in.gcount()) == size, path, " is truncated: expected ", size, " vocabulary bytes");
  return from_vocabulary(vocab);
}

std::string read_text_file(const std::string& path, const std::string& flag) {
  SG_CHECK(!std::filesystem::is_directory(path), "--", flag, " ", path, " is a directory; give a file");
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in.good(), "--", flag, " ", path, ": cannot open it (", std::strerror(errno), ")");
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  SG_CHECK(!text.empty(), "--", flag, " ", path, " is empty");
  return text;
}

WindowLoader::WindowLoader(std::vector<int32_t> tokens, int64_t batch, int64_t context, uint64_t seed, int rank,
                           int ranks, Device device)
    : tokens_(std::move(tokens)),
      batch_(batch),
      context_(context),
      seed_(seed),
      rank_(rank),
      ranks_(ranks),
      device_(device) {
  SG_CHECK(batch > 0 && context > 0, "loader: batch and context must be positive");
  SG_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "loader: rank ", rank, " of ", ranks, " does not exist");
  SG_CHECK(int64_t(tokens_.size()) > context, "loader: ", tokens_.size(), " tokens cannot fill a window of ",
           context + 1, "; use a shorter --ctx or more text");
}

WindowLoader::Batch WindowLoader::next() {
  const int64_t starts = int64_t(tokens_.size()) - context_;  // window [s, s + T] needs s + T < size
  const uint64_t stream = rng_stream("window-loader");
  // For a GPU the windows are written into pinned memory, whose upload runs
  // in stream order without waiting for the GPU to finish the last step.
  const TensorOptions options = TensorOptions().dtype(DType::i32).pinned(device_.is_cuda());
  Tensor x_host = Tensor::empty({batch_, context_}, options), y_host = Tensor::empty({batch_, context_}, options);
  int32_t* x = x_host.data<int32_t>();
  int32_t* y = y_host.data<int32_t>();
  for (int64_t b = 0; b < batch_; ++b) {
    // Row rank * B + b of the global batch that starts at window drawn_.
    PhiloxBlock block = philox_for_element(seed_, stream, uint64_t(drawn_ + rank_ * batch_ + b));
    uint64_t wide = (uint64_t(block.x[1]) << 32) | block.x[0];
    int64_t start = int64_t(wide % uint64_t(starts));
    std::copy_n(tokens_.begin() + start, context_, x + b * context_);
    std::copy_n(tokens_.begin() + start + 1, context_, y + b * context_);
  }
  drawn_ += batch_ * ranks_;
  return {x_host.to(device_, /*non_blocking=*/true), y_host.to(device_, /*non_blocking=*/true)};  // hosts dropped here
}

}  // namespace sg
