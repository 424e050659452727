// Text for language models: tokenizers and a loader of random training
// windows.
//
// Tokenizers: byte-level (vocab 256, any file) and character-level (the
// vocabulary is the sorted set of characters of the text, saved with the run
// so samples decode the same way). A loader draws (B, T+1) windows at random
// positions of a token buffer: x is the first T tokens, y the next T.
//
// Read next: examples/train_gpt.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tensor/tensor.h"

namespace sg {

class Tokenizer {
 public:
  enum class Kind { byte, character };
  static Tokenizer bytes();
  static Tokenizer characters_of(std::string_view text);  // vocabulary: the distinct bytes, sorted
  static Tokenizer from_vocabulary(std::string_view vocab);  // the characters in id order
  static Tokenizer from_name(const std::string& name, std::string_view text);  // "char" or "byte"

  std::vector<int32_t> encode(std::string_view text) const;  // throws on a character outside the vocabulary
  std::string decode(const std::vector<int32_t>& ids) const;
  int64_t vocab_size() const { return kind_ == Kind::byte ? 256 : int64_t(vocab_.size()); }
  Kind kind() const { return kind_; }
  std::string name() const { return kind_ == Kind::byte ? "byte" : "char"; }
  const std::string& vocabulary() const { return vocab_; }  // characters in id order ("char" only)

  // A file holding the kind and the vocabulary, for sampling later.
  void save(const std::string& path) const;
  static Tokenizer load(const std::string& path);

 private:
  Kind kind_ = Kind::byte;
  std::string vocab_;
  std::vector<int32_t> id_of_;  // byte -> id, -1 where absent
};

// The whole file; an error naming `flag` (without its dashes) when it is
// missing, unreadable, a directory or empty.
std::string read_text_file(const std::string& path, const std::string& flag);

// Random windows of a token buffer. Window k starts at a position drawn from
// Philox(seed, k), so the loader's whole state is one counter: reproducible,
// and trivially saved and restored. Data-parallel ranks share one global
// batch of batch x ranks windows per call, each taking its rows: the windows
// a run trains on do not depend on how many ranks it is split over, so a
// checkpoint can resume on another world size and continue the same run.
class WindowLoader {
 public:
  // Batches are delivered on `device`.
  WindowLoader(std::vector<int32_t> tokens, int64_t batch, int64_t context, uint64_t seed, int rank = 0,
               int ranks = 1, Device device = Device::cpu());

  struct Batch {
    Tensor x;  // (B, T) i32 inputs
    Tensor y;  // (B, T) i32 targets: x shifted left by one
  };
  Batch next();  // this rank's rows of the next global batch
  int64_t windows_drawn() const { return drawn_; }  // global windows, every rank's
  void set_windows_drawn(int64_t drawn) { drawn_ = drawn; }
  int64_t size() const { return int64_t(tokens_.size()); }

 private:
  std::vector<int32_t> tokens_;
  int64_t batch_, context_;
  uint64_t seed_;
  int rank_, ranks_;
  Device device_;
  int64_t drawn_ = 0;
};

}  // namespace sg
