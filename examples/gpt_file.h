// A trained GPT as one consolidated safetensors file, laid out the way GPT-2
// tools expect (Hugging Face's GPT2Model keys):
//
//   wte.weight [V, C]   wpe.weight [T, C]   ln_f.weight [C]   ln_f.bias [C]
//   h.3.ln_1.weight [C] ...
//   h.3.attn.c_attn.weight [C, 3C]   (in, out): GPT-2's Conv1D layout, the
//   h.3.attn.c_proj.weight [C, C]     transpose of shardgrad's Linear (out, in)
//   h.3.mlp.c_fc.weight    [C, 4C]
//   h.3.mlp.c_proj.weight  [4C, C]
//   __metadata__: {"format": "pt", "n_layer": "4", "n_head": "4", "n_embd": "128",
//                  "n_positions": "128", "vocab_size": "65",
//                  "tokenizer": "char", "vocab": "\n !$&',-.3:;?ABC..."}
//
// The LM head is tied to wte and not stored. `vocab` (character tokenizer
// only) holds the characters in id order.
//
// Reading is by slices: a rank reads only the elements of its own shard
// (for the transposed matrices, one block of columns of the file's rows).
//
// Read next: examples/gpt_eval.cpp, examples/gpt_sample.cpp.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "examples/text_data.h"
#include "nn/gpt.h"
#include "tensor/safetensors.h"

namespace sg {

// Writes `parameters` (every parameter's full values, shardgrad's names and
// layout) as a GPT-2-style file.
void export_gpt(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& parameters,
                const GptConfig& cfg, const Tokenizer& tokenizer);

// A GPT-2-style file opened for reading: its config and tokenizer (from the
// metadata), and slices of its parameters in shardgrad's layout.
class GptFile {
 public:
  explicit GptFile(const std::string& path);
  const GptConfig& config() const { return config_; }  // seed left at its default
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const std::string& path() const { return reader_.path(); }

  // Elements [first, first + values.numel()) of shardgrad's flattened
  // parameter `name` of shape `shape`, into the 1-D f32 `values`.
  void read_slice(const std::string& name, const Shape& shape, Tensor& values, int64_t first) const;
  // Every parameter of `model` (built with config()) from the file.
  void load_into(const Module& model) const;

 private:
  SafetensorsReader reader_;
  GptConfig config_;
  Tokenizer tokenizer_;
};

// True for the four weights GPT-2 stores (in, out).
bool stored_transposed(const std::string& name);

}  // namespace sg
