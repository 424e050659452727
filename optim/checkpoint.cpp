// Saving and loading ZeroOptimizer's state, and the checkpoint directories.
//
// The unit of storage is a parameter's *piece*: the part of the parameter
// that falls in one rank's slice of its shard group. With the group's flat
// range cut into N slices of S elements,
//
//   group:  [ c_attn.weight       | c_attn.bias | c_proj.weight | ... | pad ]
//   slices: [ rank 0     | rank 1      | rank 2      | rank 3     ]
//
// rank r's piece of a parameter at [offset, offset + numel) is the overlap
// of that range with [r S, (r + 1) S), stored in rank r's file as a 1-D
// tensor under the parameter's name (its moments under name.exp_avg and
// name.exp_avg_sq), and listed in the index as a range of the parameter's
// own flattened elements. Padding is never stored. Loading asks, for each
// range this rank now needs, which stored pieces overlap it, and reads just
// those elements: a different N, or a different stage (which changes what a
// rank holds, not what the pieces are), needs no conversion.
#include "optim/checkpoint.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "optim/checkpoint_index.h"
#include "optim/zero.h"
#include "tensor/safetensors.h"

namespace sg {
namespace {

namespace fs = std::filesystem;
const char* const kStates[] = {"", ".exp_avg", ".exp_avg_sq"};  // the parameter, then AdamW's moments

std::string rank_file(int rank, int world) {
  return "rank-" + std::to_string(rank) + "-of-" + std::to_string(world) + ".safetensors";
}

// The part of p within flat range [lo, hi) of its group, in p's own element
// coordinates; empty when they do not overlap.
struct Piece {
  int64_t begin = 0, end = 0;
  bool empty() const { return begin >= end; }
};
Piece piece_of(const GroupParameter& p, int64_t lo, int64_t hi) {
  const int64_t a = std::max(p.offset, lo), b = std::min(p.offset + p.numel, hi);
  return a < b ? Piece{a - p.offset, b - p.offset} : Piece{};
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  SG_CHECK(in.good(), path, ": cannot open for reading");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

void ZeroOptimizer::save_checkpoint(const std::string& dir, const std::string& training_json) {
  NoGradGuard no_grad;
  settle_overflow();  // fp16 on a GPU: the step counts and the scale as of the last step
  release_all();  // stage 3: the slices are the truth; nothing stays gathered
  const int rank = comm_.rank(), world = comm_.world_size();
  const std::string index_path = dir + "/index.json";
  if (rank == 0) {
    fs::create_directories(dir);
    fs::remove(index_path);  // re-saving into a directory: incomplete until the new index lands
  }
  comm_.barrier()->wait();
  std::vector<std::pair<std::string, Tensor>> pieces;
  for (size_t g = 0; g < groups_.size(); ++g) {
    ShardGroup& group = groups_[g];
    const int64_t S = group.shard_size(), lo = rank * S;
    // The f32 values AdamW updates (the parameters themselves in f32
    // training, the masters under mixed precision): whole at stage 0.
    Tensor master = updated_[g].data();
    Tensor values = options_.stage == 0 ? group.my_slice(master) : master;
    Tensor m = adam_->exp_avg(g, 0), v = adam_->exp_avg_sq(g, 0);
    if (options_.stage == 0) m = group.my_slice(m), v = group.my_slice(v);  // stage 0 holds them whole
    const Tensor sources[] = {values, m, v};
    for (const GroupParameter& p : group.params()) {
      const Piece piece = piece_of(p, lo, lo + S);
      if (piece.empty()) continue;
      const int64_t at = p.offset + piece.begin - lo;
      for (int k = 0; k < 3; ++k) {
        pieces.emplace_back(p.name + kStates[k], sources[k].slice(0, at, at + piece.end - piece.begin));
      }
    }
  }
  write_safetensors(dir + "/" + rank_file(rank, world), pieces, {{"format", "shardgrad-checkpoint"}});
  comm_.barrier()->wait();  // every rank's file is on disk
  if (rank == 0) {
    CheckpointIndex index;
    index.world_size = world;
    index.zero_stage = options_.stage;
    index.optimizer_steps = adam_->steps_taken();
    for (size_t g = 0; g < groups_.size(); ++g) {  // the parameters that skipped steps (every rank agrees)
      for (size_t i = 0; i < groups_[g].params().size(); ++i) {
        const int64_t steps = updates_[first_param_[g] + i];
        if (steps != index.optimizer_steps) index.parameter_steps[groups_[g].params()[i].name] = steps;
      }
    }
    if (scaler_) index.has_loss_scaler = true, index.loss_scaler = scaler_->state();
    index.training = training_json;
    for (const ShardGroup& group : groups_) {
      const int64_t S = group.shard_size();
      for (const GroupParameter& p : group.params()) {
        for (int k = 0; k < 3; ++k) {
          CheckpointTensor& t = index.tensors[p.name + kStates[k]];
          t.shape = p.variable.shape();
          for (int r = 0; r < world; ++r) {
            const Piece piece = piece_of(p, r * S, (r + 1) * S);
            if (!piece.empty()) t.shards.push_back({rank_file(r, world), piece.begin, piece.end});
          }
        }
      }
    }
    write_file_atomically(index_path, index.to_json());
  }
  comm_.barrier()->wait();  // nobody moves on (or prunes) before the index exists
}

std::string ZeroOptimizer::load_checkpoint(const std::string& dir) {
  NoGradGuard no_grad;
  settle_overflow();  // (what it settles, the checkpoint then replaces)
  release_all();
  const std::string index_path = dir + "/index.json";
  SG_CHECK(fs::exists(index_path), dir, " is not a complete checkpoint: it has no index.json (a save that did not ",
           "finish, or the wrong directory; --resume also accepts the --save directory and picks its newest)");
  const CheckpointIndex index = parse_checkpoint_index(read_file(index_path), index_path);
  // The same model: every tensor this optimizer holds, with its shape, and
  // nothing else.
  std::set<std::string> expected;
  for (const ShardGroup& group : groups_) {
    for (const GroupParameter& p : group.params()) {
      for (const char* state : kStates) {
        const std::string name = p.name + state;
        expected.insert(name);
        auto it = index.tensors.find(name);
        SG_CHECK(it != index.tensors.end(), dir, " is a checkpoint of a different model: it has no '", name, "'");
        SG_CHECK(it->second.shape == p.variable.shape(), dir, " is a checkpoint of a different model: '", name,
                 "' is ", shape_str(it->second.shape), " there and ", shape_str(p.variable.shape()), " here");
        SG_CHECK(it->second.dtype == DType::f32, dir, ": '", name, "' is ", dtype_name(it->second.dtype),
                 "; shardgrad trains in f32");
      }
    }
  }
  for (const auto& [name, t] : index.tensors) {
    SG_CHECK(expected.count(name), dir, " is a checkpoint of a different model: it has '", name,
             "', which this model does not");
  }
  for (const auto& [name, steps] : index.parameter_steps) {
    SG_CHECK(expected.count(name), dir, " is a checkpoint of a different model: it counts steps of '", name,
             "', which this model does not have");
  }
  std::map<std::string, std::unique_ptr<SafetensorsReader>> readers;
  auto reader = [&](const std::string& file) -> SafetensorsReader& {
    std::unique_ptr<SafetensorsReader>& r = readers[file];
    if (!r) {
      SG_CHECK(fs::exists(dir + "/" + file), dir, ": the rank file ", file, " the index names is missing (the ",
               "checkpoint was written by ", index.world_size, " ranks; copy all of its files)");
      r = std::make_unique<SafetensorsReader>(dir + "/" + file);
    }
    return *r;
  };
  // Fills `target`, which holds flat elements [first, first + numel) of
  // `group`, with `state` from whichever pieces overlap it.
  auto fill = [&](const ShardGroup& group, Tensor target, int64_t first, const char* state) {
    for (const GroupParameter& p : group.params()) {
      const Piece need = piece_of(p, first, first + target.numel());
      if (need.empty()) continue;
      const std::string name = p.name + state;
      for (const CheckpointShard& s : index.tensors.at(name).shards) {
        const int64_t a = std::max(need.begin, s.begin), b = std::min(need.end, s.end);
        if (a >= b) continue;
        SafetensorsReader& r = reader(s.file);
        const SafetensorsEntry& e = r.entry(name);
        SG_CHECK(e.dtype == DType::f32 && e.shape == Shape{s.end - s.begin}, r.path(), ": '", name, "' is ",
                 dtype_name(e.dtype), shape_str(e.shape), " but the index says f32[", s.end - s.begin, "]");
        target.slice(0, p.offset + a - first, p.offset + b - first).copy_(r.read_elements(name, a - s.begin, b - a));
      }
    }
  };
  const int rank = comm_.rank();
  for (size_t g = 0; g < groups_.size(); ++g) {
    ShardGroup& group = groups_[g];
    const int64_t lo = rank * group.shard_size();
    Tensor master = updated_[g].data();  // whole at stage 0, this rank's slice otherwise
    fill(group, master, options_.stage == 0 ? 0 : lo, "");
    if (options_.stage == 1 || options_.stage == 2) {
      fill(group, group.flat_params(), 0, "");  // every rank holds the whole parameters
    } else if (mixed()) {
      (options_.stage == 0 ? group.flat_params() : group.flat_shard()).copy_(master);  // bf16/f16 from f32
    }
    const int64_t moments_first = options_.stage == 0 ? 0 : lo;  // stage 0 holds them whole
    fill(group, adam_->exp_avg(g, 0), moments_first, ".exp_avg");
    fill(group, adam_->exp_avg_sq(g, 0), moments_first, ".exp_avg_sq");
  }
  adam_->set_steps_taken(index.optimizer_steps);
  for (size_t g = 0; g < groups_.size(); ++g) {
    for (size_t i = 0; i < groups_[g].params().size(); ++i) {
      auto it = index.parameter_steps.find(groups_[g].params()[i].name);
      updates_[first_param_[g] + i] = it == index.parameter_steps.end() ? index.optimizer_steps : it->second;
    }
  }
  // fp16: the scale continues where it was (a checkpoint of bf16 or f32
  // training has none: the scaler starts afresh).
  if (scaler_ && index.has_loss_scaler) scaler_->restore(index.loss_scaler);
  return index.training;
}

std::string checkpoint_training_state(const std::string& dir) {
  const std::string index_path = dir + "/index.json";
  SG_CHECK(fs::exists(index_path), dir, " is not a complete checkpoint: it has no index.json");
  return parse_checkpoint_index(read_file(index_path), index_path).training;
}

std::string checkpoint_path(const std::string& root, int64_t step) {
  std::string digits = std::to_string(step);
  return root + "/step-" + std::string(digits.size() < 8 ? 8 - digits.size() : 0, '0') + digits;
}

std::vector<std::string> complete_checkpoints(const std::string& root) {
  std::vector<std::string> found;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string name = entry.path().filename().string();
    if (entry.is_directory() && name.rfind("step-", 0) == 0 && fs::exists(entry.path() / "index.json")) {
      found.push_back(entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());  // zero-padded step numbers sort by step
  return found;
}

std::string find_checkpoint(const std::string& path) {
  if (fs::exists(path + "/index.json")) return path;
  SG_CHECK(fs::is_directory(path), "--resume ", path, ": no such directory");
  std::vector<std::string> found = complete_checkpoints(path);
  SG_CHECK(!found.empty(), "--resume ", path, ": no complete checkpoint there (looked for ", path,
           "/index.json and ", path, "/step-*/index.json)");
  return found.back();
}

void prune_checkpoints(const std::string& root, int64_t keep) {
  SG_CHECK(keep >= 1, "--keep must be at least 1, got ", keep);
  std::vector<std::string> complete = complete_checkpoints(root);
  if (complete.empty()) return;
  const std::string newest = complete.back();
  std::set<std::string> kept(complete.end() - std::min<int64_t>(keep, int64_t(complete.size())), complete.end());
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(root, error)) {
    const std::string path = entry.path().string(), name = entry.path().filename().string();
    if (!entry.is_directory() || name.rfind("step-", 0) != 0 || kept.count(path)) continue;
    if (path >= newest) continue;
    // Older complete ones, and saves that never finished. The index goes
    // first: killed half-way through, what is left is an incomplete
    // directory (skipped, and removed next time), never a checkpoint with
    // missing files.
    fs::remove(entry.path() / "index.json");
    fs::remove_all(path);
  }
}

}  // namespace sg
