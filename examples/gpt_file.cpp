#include "examples/gpt_file.h"

#include <map>

namespace sg {
namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

int64_t metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key,
                     const std::string& path) {
  auto it = metadata.find(key);
  SG_CHECK(it != metadata.end(), path, ": no '", key, "' in the file's __metadata__ (a GPT-2-style export holds ",
           "n_layer, n_head, n_embd, n_positions, vocab_size and tokenizer)");
  size_t used = 0;
  int64_t value = -1;
  try {
    value = std::stoll(it->second, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  SG_CHECK(used == it->second.size() && value > 0, path, ": __metadata__ '", key, "' must be a positive integer, got '",
           it->second, "'");
  return value;
}

}  // namespace

bool stored_transposed(const std::string& name) {
  return ends_with(name, ".attn.c_attn.weight") || ends_with(name, ".attn.c_proj.weight") ||
         ends_with(name, ".mlp.c_fc.weight") || ends_with(name, ".mlp.c_proj.weight");
}

void export_gpt(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& parameters,
                const GptConfig& cfg, const Tokenizer& tokenizer) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, value] : parameters) {
    tensors.emplace_back(name, stored_transposed(name) ? value.transpose(0, 1).contiguous() : value);
  }
  std::map<std::string, std::string> metadata = {
      {"format", "pt"},
      {"n_layer", std::to_string(cfg.n_layer)},
      {"n_head", std::to_string(cfg.n_head)},
      {"n_embd", std::to_string(cfg.n_embd)},
      {"n_positions", std::to_string(cfg.block_size)},
      {"vocab_size", std::to_string(cfg.vocab_size)},
      {"tokenizer", tokenizer.name()},
  };
  if (tokenizer.kind() == Tokenizer::Kind::character) metadata["vocab"] = tokenizer.vocabulary();
  write_safetensors(path, tensors, metadata);
}

GptFile::GptFile(const std::string& path) : reader_(path) {
  const auto& m = reader_.metadata();
  config_.n_layer = metadata_int(m, "n_layer", path);
  config_.n_head = metadata_int(m, "n_head", path);
  config_.n_embd = metadata_int(m, "n_embd", path);
  config_.block_size = metadata_int(m, "n_positions", path);
  config_.vocab_size = metadata_int(m, "vocab_size", path);
  config_.validate();
  auto kind = m.find("tokenizer");
  SG_CHECK(kind != m.end() && (kind->second == "char" || kind->second == "byte"), path,
           ": __metadata__ 'tokenizer' must be char or byte");
  if (kind->second == "byte") {
    tokenizer_ = Tokenizer::bytes();
  } else {
    auto vocab = m.find("vocab");
    SG_CHECK(vocab != m.end(), path, ": a char tokenizer needs its 'vocab' in the __metadata__");
    tokenizer_ = Tokenizer::from_vocabulary(vocab->second);
  }
  SG_CHECK(tokenizer_.vocab_size() == config_.vocab_size, path, ": vocab_size ", config_.vocab_size,
           " but the tokenizer has ", tokenizer_.vocab_size(), " tokens");
}

void GptFile::read_slice(const std::string& name, const Shape& shape, Tensor& values, int64_t first) const {
  const SafetensorsEntry& e = reader_.entry(name);
  SG_CHECK(e.dtype == DType::f32 || e.dtype == DType::bf16 || e.dtype == DType::f16, path(), ": '", name, "' is ",
           dtype_name(e.dtype), "; a model's weights are f32, bf16 or f16");
  const bool transposed = stored_transposed(name);
  const Shape expected = transposed ? Shape{shape[1], shape[0]} : shape;
  SG_CHECK(e.shape == expected, path(), ": '", name, "' is ", shape_str(e.shape), "; this model needs ",
           shape_str(expected), transposed ? " (GPT-2 stores it (in, out))" : "");
  const int64_t n = values.numel();
  if (n == 0) return;
  if (!transposed) {
    values.copy_(reader_.read_elements(name, first, n));
    return;
  }
  // shardgrad's (out, in) rows [r0, r1] are the file's (in, out) columns:
  // one block of columns from each of the file's `in` rows, then transposed.
  const int64_t out = shape[0], in = shape[1];
  const int64_t r0 = first / in, r1 = (first + n - 1) / in;
  Tensor block = reader_.read_strided(name, r0, r1 - r0 + 1, out, in).view({in, r1 - r0 + 1});
  Tensor rows = block.to(DType::f32).transpose(0, 1).contiguous().view({(r1 - r0 + 1) * in});
  values.copy_(rows.slice(0, first - r0 * in, first - r0 * in + n));
}

void GptFile::load_into(const Module& model) const {
  NoGradGuard no_grad;
  for (const NamedParameter& p : model.named_parameters()) {
    Tensor flat = p.variable.data().view({p.variable.data().numel()});
    read_slice(p.name, p.variable.shape(), flat, 0);
  }
}

}  // namespace sg
