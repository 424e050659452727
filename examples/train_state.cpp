#include "examples/train_state.h"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

namespace sg {
namespace {

using json = nlohmann::json;

json model_json(const GptConfig& cfg) {
  return {{"n_layer", cfg.n_layer}, {"n_head", cfg.n_head}, {"n_embd", cfg.n_embd}, {"n_positions", cfg.block_size},
          {"vocab_size", cfg.vocab_size}};
}

}  // namespace

std::string train_state_json(const TrainState& state, const GptConfig& cfg, const Tokenizer& tokenizer,
                             const TrainFlags& flags) {
  json j = {{"step", state.step},
            {"train_windows_drawn", state.train_windows_drawn},
            {"applied_steps", state.applied_steps},
            {"model", model_json(cfg)},
            {"tokenizer", tokenizer.name()},
            {"vocab", tokenizer.vocabulary()},
            {"seed", cfg.seed},
            {"flags",
             {{"data", flags.data}, {"batch", flags.batch}, {"grad_accum", flags.grad_accum}, {"steps", flags.steps},
              {"lr", flags.lr}, {"min_lr", flags.min_lr}, {"warmup", flags.warmup},
              {"weight_decay", flags.weight_decay}, {"beta2", flags.beta2}, {"clip", flags.clip},
              {"zero", flags.zero}}}};
  return j.dump();
}

TrainState restore_train_state(const std::string& text, const GptConfig& cfg, const Tokenizer& tokenizer,
                               const std::string& origin) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  SG_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() && j.contains("train_windows_drawn") &&
               j["train_windows_drawn"].is_number_integer() && j.contains("model") && j["model"].is_object(),
           origin, ": this checkpoint has no train_gpt state (was it saved by another program?)");
  const json mine = model_json(cfg);
  const std::pair<const char*, const char*> flag_of[] = {{"n_layer", "--layers"},   {"n_head", "--heads"},
                                                         {"n_embd", "--embd"},      {"n_positions", "--ctx"},
                                                         {"vocab_size", "--tokenizer/--data"}};
  for (auto [key, flag] : flag_of) {
    SG_CHECK(j["model"].value(key, json()) == mine[key], origin, " is a checkpoint of a different model: ", key, " is ",
             j["model"].value(key, json()).dump(), " there and ", mine[key].dump(), " here (", flag, ")");
  }
  SG_CHECK(j.value("tokenizer", "") == tokenizer.name() && j.value("vocab", "") == tokenizer.vocabulary(), origin,
           " was trained with another tokenizer or vocabulary (", j.value("tokenizer", "?"),
           "); resume with the same --tokenizer and --data");
  SG_CHECK(j.value("seed", json()) == json(cfg.seed), origin, " was trained with --seed ", j.value("seed", json()).dump(),
           "; resume with the same seed (it orders the data)");
  TrainState state;
  state.step = j["step"].get<int64_t>();
  state.train_windows_drawn = j["train_windows_drawn"].get<int64_t>();
  // (Checkpoints from before it was kept: every step was applied, or fp16's skips are not known.)
  state.applied_steps = j.value("applied_steps", state.step);
  SG_CHECK(state.step >= 0 && state.train_windows_drawn >= 0 && state.applied_steps >= 0 &&
               state.applied_steps <= state.step,
           origin, ": a negative step or window count, or more applied steps than steps");
  return state;
}

namespace {

// Writes and removes a probe file: permissions, a read-only mount or a full
// quota show here, where creating the directory alone would not.
void probe_write(const std::string& flag, const std::filesystem::path& directory, const std::string& tag) {
  const std::filesystem::path probe = directory / (".shardgrad-write-probe-" + tag);
  std::ofstream out(probe);
  out << "probe\n";
  out.close();
  const int reason = errno;
  const bool written = out.good();
  std::error_code ignored;
  std::filesystem::remove(probe, ignored);
  SG_CHECK(written, "--", flag, ": cannot write files in ", directory.string(), " (", std::strerror(reason),
           "); give a directory you can write");
}

}  // namespace

void check_writable_directory(const std::string& flag, const std::string& path, const std::string& tag) {
  std::error_code error;
  std::filesystem::create_directories(path, error);
  SG_CHECK(!error && std::filesystem::is_directory(path), "--", flag, " ", path, ": cannot create that directory (",
           error ? error.message() : "a file of that name is in the way", "); give a directory you can write");
  probe_write(flag, path, tag);
}

void check_writable_file_path(const std::string& flag, const std::string& path, const std::string& tag) {
  const std::filesystem::path file(path);
  const std::filesystem::path directory = file.has_parent_path() ? file.parent_path() : std::filesystem::path(".");
  SG_CHECK(!std::filesystem::is_directory(file), "--", flag, " ", path, " is a directory; give a file name");
  SG_CHECK(std::filesystem::is_directory(directory), "--", flag, " ", path, ": the directory ", directory.string(),
           " does not exist; create it first");
  probe_write(flag, directory, tag);
}

}  // namespace sg
