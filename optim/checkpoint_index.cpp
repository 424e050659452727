// Depends on nothing but the JSON parser and safetensors' dtype names, so the
// fuzz target (tools/fuzz/fuzz_parsers.cpp) can build it alone.
#include "optim/checkpoint_index.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "tensor/safetensors.h"

namespace sg {
namespace {

using json = nlohmann::json;
constexpr int64_t kMaxElements = int64_t(1) << 48;

const json& field(const json& object, const std::string& key, const std::string& where, const std::string& origin) {
  SG_CHECK(object.is_object() && object.contains(key), origin, ": corrupt checkpoint index: ", where, " has no '", key,
           "'");
  return object[key];
}

int64_t count(const json& v, const std::string& what, const std::string& origin, int64_t max = kMaxElements) {
  SG_CHECK(v.is_number_integer() && v.get<int64_t>() >= 0 && v.get<int64_t>() <= max, origin,
           ": corrupt checkpoint index: ", what, " must be an integer in [0, ", max, "], got ", v.dump());
  return v.get<int64_t>();
}

// A plain name: no directories, nothing hidden, so an index cannot point
// outside its checkpoint.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name.size() < 256 && name[0] != '.' &&
         name.find_first_of("/\\") == std::string::npos && name.find('\0') == std::string::npos;
}

CheckpointTensor parse_tensor(const std::string& name, const json& v, const std::string& origin) {
  const std::string where = "tensor '" + name + "'";
  CheckpointTensor t;
  const json& dtype = field(v, "dtype", where, origin);
  SG_CHECK(dtype.is_string(), origin, ": corrupt checkpoint index: ", where, "'s dtype is not a string");
  t.dtype = safetensors_dtype(dtype.get<std::string>(), origin + ": " + where);
  const json& shape = field(v, "shape", where, origin);
  SG_CHECK(shape.is_array() && shape.size() <= 8, origin, ": corrupt checkpoint index: ", where, "'s shape is not an array");
  int64_t numel = 1;
  for (const json& d : shape) {
    const int64_t size = count(d, where + "'s shape", origin);
    SG_CHECK(size == 0 || numel <= kMaxElements / size, origin, ": corrupt checkpoint index: ", where, " is too large");
    numel *= size;
    t.shape.push_back(size);
  }
  const json& shards = field(v, "shards", where, origin);
  SG_CHECK(shards.is_array(), origin, ": corrupt checkpoint index: ", where, "'s shards is not an array");
  for (const json& s : shards) {
    CheckpointShard shard;
    const json& file = field(s, "file", where + "'s shard", origin);
    SG_CHECK(file.is_string() && plain_file_name(file.get<std::string>()), origin, ": corrupt checkpoint index: ",
             where, " names a shard file that is not a plain file name: ", file.dump());
    shard.file = file.get<std::string>();
    shard.begin = count(field(s, "begin", where + "'s shard", origin), where + "'s shard begin", origin);
    shard.end = count(field(s, "end", where + "'s shard", origin), where + "'s shard end", origin);
    SG_CHECK(shard.begin < shard.end, origin, ": corrupt checkpoint index: ", where, " has an empty or reversed shard");
    t.shards.push_back(shard);
  }
  std::sort(t.shards.begin(), t.shards.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  int64_t covered = 0;
  for (const CheckpointShard& s : t.shards) {
    SG_CHECK(s.begin == covered, origin, ": corrupt checkpoint index: ", where, "'s shards ",
             s.begin < covered ? "overlap" : "leave a hole", " at element ", std::min(s.begin, covered));
    covered = s.end;
  }
  SG_CHECK(covered == numel, origin, ": corrupt checkpoint index: ", where, "'s shards cover ", covered, " of its ",
           numel, " elements");
  return t;
}

}  // namespace

int64_t CheckpointTensor::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

std::string CheckpointIndex::to_json() const {
  json optimizer = {{"type", "AdamW"}, {"steps", optimizer_steps}};
  if (!parameter_steps.empty()) optimizer["parameter_steps"] = parameter_steps;
  json tensors_json = json::object();
  for (const auto& [name, t] : tensors) {
    json shards = json::array();
    for (const CheckpointShard& s : t.shards) shards.push_back({{"file", s.file}, {"begin", s.begin}, {"end", s.end}});
    tensors_json[name] = {{"dtype", safetensors_dtype_name(t.dtype)}, {"shape", t.shape}, {"shards", shards}};
  }
  json root = {{"format", "shardgrad-checkpoint"},
               {"version", version},
               {"world_size", world_size},
               {"zero_stage", zero_stage},
               {"optimizer", optimizer},
               {"tensors", tensors_json},
               {"loss_scaler", has_loss_scaler ? json{{"scale", loss_scaler.scale},
                                                      {"iteration", loss_scaler.iteration},
                                                      {"last_overflow", loss_scaler.last_overflow},
                                                      {"hysteresis_left", loss_scaler.hysteresis_left}}
                                               : json(nullptr)},
               {"training", json::parse(training)}};
  return root.dump(1) + "\n";
}

CheckpointIndex parse_checkpoint_index(std::string_view text, const std::string& origin) {
  json root = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  SG_CHECK(!root.is_discarded() && root.is_object(), origin, ": corrupt checkpoint index: not a JSON object");
  const json& format = field(root, "format", "the index", origin);
  SG_CHECK(format == "shardgrad-checkpoint", origin, ": not a shardgrad checkpoint index (format ", format.dump(), ")");
  CheckpointIndex index;
  index.version = int(count(field(root, "version", "the index", origin), "version", origin, 1 << 20));
  SG_CHECK(index.version <= CheckpointIndex::kVersion, origin, ": checkpoint format version ", index.version,
           " is newer than this shardgrad reads (", CheckpointIndex::kVersion, "); update shardgrad to load it");
  SG_CHECK(index.version >= 1, origin, ": corrupt checkpoint index: version 0 does not exist");
  index.world_size = int(count(field(root, "world_size", "the index", origin), "world_size", origin, 1 << 20));
  SG_CHECK(index.world_size >= 1, origin, ": corrupt checkpoint index: world_size 0");
  index.zero_stage = int(count(field(root, "zero_stage", "the index", origin), "zero_stage", origin, 3));
  const json& optimizer = field(root, "optimizer", "the index", origin);
  SG_CHECK(field(optimizer, "type", "the optimizer", origin) == "AdamW", origin,
           ": the checkpoint's optimizer is not AdamW");
  index.optimizer_steps = count(field(optimizer, "steps", "the optimizer", origin), "optimizer steps", origin);
  if (optimizer.contains("parameter_steps")) {
    const json& steps = optimizer["parameter_steps"];
    SG_CHECK(steps.is_object(), origin,
             ": corrupt checkpoint index: the optimizer's 'parameter_steps' is not an object");
    for (auto it = steps.begin(); it != steps.end(); ++it) {
      const int64_t n = count(it.value(), "the steps of " + it.key(), origin);
      SG_CHECK(n <= index.optimizer_steps, origin, ": corrupt checkpoint index: ", it.key(), " counts ", n,
               " steps, more than the optimizer's ", index.optimizer_steps);
      index.parameter_steps[it.key()] = n;
    }
  }
  const json& tensors = field(root, "tensors", "the index", origin);
  SG_CHECK(tensors.is_object(), origin, ": corrupt checkpoint index: 'tensors' is not an object");
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    index.tensors[it.key()] = parse_tensor(it.key(), it.value(), origin);
  }
  if (root.contains("loss_scaler") && !root["loss_scaler"].is_null()) {
    const json& scaler = root["loss_scaler"];
    const json& scale = field(scaler, "scale", "the loss scaler", origin);
    SG_CHECK(scale.is_number() && scale.get<double>() > 0 && std::isfinite(scale.get<double>()), origin,
             ": corrupt checkpoint index: the loss scale must be a positive number");
    const json& last = field(scaler, "last_overflow", "the loss scaler", origin);
    SG_CHECK(last.is_number_integer() && last.get<int64_t>() >= -1, origin,
             ": corrupt checkpoint index: the loss scaler's last_overflow must be an integer >= -1");
    index.has_loss_scaler = true;
    index.loss_scaler.scale = scale.get<double>();
    index.loss_scaler.iteration = count(field(scaler, "iteration", "the loss scaler", origin), "iteration", origin);
    index.loss_scaler.last_overflow = last.get<int64_t>();
    index.loss_scaler.hysteresis_left =
        int(count(field(scaler, "hysteresis_left", "the loss scaler", origin), "hysteresis_left", origin, 1 << 20));
    SG_CHECK(index.loss_scaler.hysteresis_left >= 1, origin, ": corrupt checkpoint index: hysteresis_left must be >= 1");
  }
  const json& training = field(root, "training", "the index", origin);
  SG_CHECK(training.is_object(), origin, ": corrupt checkpoint index: 'training' is not an object");
  index.training = training.dump();
  return index;
}

}  // namespace sg
