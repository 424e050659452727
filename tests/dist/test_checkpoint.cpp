// Checkpoints through ZeroOptimizer: a resumed run continues bit for bit;
// a checkpoint written by N ranks at stage S resumes on M ranks at stage S'
// (every pair, through CTest fixtures: the Save tests run under mpirun -np
// 1..4, then the Resume tests under each -np load all of them); and every
// kind of broken checkpoint is its own clear error.
#include <omp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <fstream>
#include <functional>

#include "examples/gpt_file.h"
#include "optim/checkpoint.h"
#include "tensor/safetensors.h"
#include "tests/dist/zero_test_util.h"

namespace sg {
namespace {

using namespace zero_test;
namespace fs = std::filesystem;
constexpr int64_t kSaveAt = 5;

class CheckpointResume : public ::testing::TestWithParam<int> {};

// Save after 5 steps, build everything anew, load, train 5 more: the losses
// and parameters are exactly those of the run that never stopped.
TEST_P(CheckpointResume, ContinuesBitForBit) {
  const int stage = GetParam();
  ZeroTrainer whole(stage);
  const std::vector<float> expected = whole.train(0, kSteps);
  const std::string dir = fresh_dir("resume-stage" + std::to_string(stage));
  {
    ZeroTrainer first(stage, stage == 3);
    first.train(0, kSaveAt);
    first.zero.save_checkpoint(dir, R"({"step": 5})");
  }
  ZeroTrainer second(stage, stage == 3);
  EXPECT_EQ(second.zero.load_checkpoint(dir), R"({"step":5})");
  std::vector<float> losses = second.train(kSaveAt, kSteps);
  EXPECT_EQ(losses, std::vector<float>(expected.begin() + kSaveAt, expected.end()));
  EXPECT_EQ(second.parameters(), whole.parameters());
}

INSTANTIATE_TEST_SUITE_P(Stages, CheckpointResume, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// Mixed precision resumes bit for bit too: the f32 masters and moments are
// what is saved (the bf16/f16 parameters are cast from them again), and
// under fp16 the loss scaler's state (2^30 overflows f16 gradients at
// first: the first steps are skipped and the scale comes down across the save).
TEST_P(CheckpointResume, MixedPrecisionContinuesBitForBit) {
  const int stage = GetParam();
  for (DType dtype : {DType::bf16, DType::f16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const ZeroOptions knobs{.dtype = dtype, .reduce_dtype = dtype,
                            .loss_scaling = {.initial_scale_power = 30, .hysteresis = 1}};
    ZeroTrainer whole(stage, false, knobs);
    const std::vector<float> expected = whole.train(0, kSteps);
    const std::string dir = fresh_dir("mixed-stage" + std::to_string(stage) + std::string(dtype_name(dtype)));
    double saved_scale = 0;
    {
      ZeroTrainer first(stage, stage == 3, knobs);
      first.train(0, kSaveAt);
      first.zero.save_checkpoint(dir);
      if (dtype == DType::f16) saved_scale = first.zero.loss_scaler()->scale();
    }
    ZeroTrainer second(stage, stage == 3, knobs);
    second.zero.load_checkpoint(dir);
    if (dtype == DType::f16) {
      EXPECT_EQ(second.zero.loss_scaler()->scale(), saved_scale);
      EXPECT_LT(saved_scale, std::ldexp(1.0, 30)) << "no overflow before the save: the scaler state went untested";
    }
    EXPECT_EQ(second.train(kSaveAt, kSteps), std::vector<float>(expected.begin() + kSaveAt, expected.end()));
    EXPECT_EQ(second.parameters(), whole.parameters());
    EXPECT_EQ(second.zero.loss_scaler() != nullptr, dtype == DType::f16);
    if (dtype == DType::f16) {
      EXPECT_EQ(second.zero.loss_scaler()->scale(), whole.zero.loss_scaler()->scale());
    }
  }
}

// On the GPU: a CUDA run saved at step 5 and resumed continues bit for bit
// (a step's CUDA kernels are deterministic: no atomics, reductions in a
// fixed order), in f32 and in bf16. The checkpoint holds no trace of the device:
// the same files resume on the CPU, which then follows its own run as
// closely as a GPU run does (1e-4).
class CheckpointResumeOnCuda : public ::testing::TestWithParam<int> {};

TEST_P(CheckpointResumeOnCuda, ContinuesBitForBitAndResumesOnTheCpu) {
  if (cuda_device_count() == 0) GTEST_SKIP() << "no GPU visible; scripts/gpu_check.sh runs this on one";
  const int stage = GetParam();
  const Device gpu = local_cuda_device();
  for (DType dtype : {DType::f32, DType::bf16}) {
    SCOPED_TRACE(std::string(dtype_name(dtype)));
    const ZeroOptions knobs{.dtype = dtype, .reduce_dtype = dtype};
    ZeroTrainer whole(stage, false, knobs, gpu);
    const std::vector<float> expected = whole.train(0, kSteps);
    const std::vector<float> rest(expected.begin() + kSaveAt, expected.end());
    const std::string dir = fresh_dir("cuda-stage" + std::to_string(stage) + std::string(dtype_name(dtype)));
    {
      ZeroTrainer first(stage, stage == 3, knobs, gpu);
      first.train(0, kSaveAt);
      first.zero.save_checkpoint(dir);
    }
    ZeroTrainer second(stage, stage == 3, knobs, gpu);
    second.zero.load_checkpoint(dir);
    EXPECT_EQ(second.train(kSaveAt, kSteps), rest);
    EXPECT_EQ(second.parameters(), whole.parameters());
    if (dtype != DType::f32) continue;  // the CPU's bf16 kernels round elsewhere than the GPU's
    ZeroTrainer on_cpu(stage, stage == 3);
    on_cpu.zero.load_checkpoint(dir);
    const std::vector<float> cpu = on_cpu.train(kSaveAt, kSteps);
    EXPECT_TRUE(test::all_close(cpu, rest, 1e-4)) << "the GPU's checkpoint, resumed on the CPU";
  }
}

INSTANTIATE_TEST_SUITE_P(Stages, CheckpointResumeOnCuda, ::testing::Values(0, 1, 2, 3),
                         [](const auto& info) { return "stage" + std::to_string(info.param); });

// The directory the Save and Resume tests share (set by CTest).
std::string reshard_root() {
  const char* root = std::getenv("SG_TEST_CHECKPOINTS");
  if (root == nullptr) throw Error("set SG_TEST_CHECKPOINTS to a directory (CTest does)");
  return root;
}

std::string reshard_dir(int world_size, int stage) {
  return reshard_root() + "/N" + std::to_string(world_size) + "-S" + std::to_string(stage);
}

TEST(CheckpointReshard, Save) {
  for (int stage : {0, 1, 2, 3}) {
    const std::string dir = reshard_dir(world().world_size(), stage);
    ZeroTrainer trainer(stage);
    trainer.train(0, kSaveAt);
    trainer.zero.save_checkpoint(dir);
  }
}

// Every checkpoint of the Save tests (N = 1..4 ranks, stages 0-3), resumed
// here at every stage: the continued run equals the one-process run.
TEST(CheckpointReshard, ResumeEverySavedCheckpoint) {
  for (int saved_world = 1; saved_world <= 4; ++saved_world) {
    for (int saved_stage : {0, 1, 2, 3}) {
      const std::string dir = reshard_dir(saved_world, saved_stage);
      ASSERT_TRUE(fs::exists(dir + "/index.json")) << dir << " is missing: the Save tests run first (CTest fixture)";
      for (int stage : {0, 1, 2, 3}) {
        SCOPED_TRACE("saved by " + std::to_string(saved_world) + " ranks at stage " + std::to_string(saved_stage) +
                     ", resumed by " + std::to_string(world().world_size()) + " at stage " + std::to_string(stage));
        ZeroTrainer trainer(stage, stage == 3);
        trainer.zero.load_checkpoint(dir);
        TrainingRun run;
        run.losses.assign(reference().losses.begin(), reference().losses.begin() + kSaveAt);
        std::vector<float> continued = trainer.train(kSaveAt, kSteps);
        run.losses.insert(run.losses.end(), continued.begin(), continued.end());
        run.params = trainer.parameters();
        ZeroEquivalence::check(run, reference(), stage);
      }
    }
  }
}

// ---- export and import --------------------------------------------------------

// A trained model exported as a GPT-2-style file, then imported at every
// stage (stage 3 born partitioned, each rank reading only its slices):
// every parameter comes back exactly; the file holds GPT-2's layout.
TEST(GptExport, RoundTripIsExactAtEveryStage) {
  const std::string dir = fresh_dir("export");
  const std::string path = dir + "/model.safetensors";
  ZeroTrainer trainer(2);
  trainer.train(0, 3);
  std::vector<std::pair<std::string, Tensor>> values = trainer.zero.full_parameters();
  const std::vector<std::vector<float>> expected = trainer.parameters();
  const Tokenizer tokenizer = Tokenizer::from_vocabulary("abcdefghijklm");  // 13 = config().vocab_size
  if (world().rank() == 0) {
    std::filesystem::create_directories(dir);
    export_gpt(path, values, config(), tokenizer);
  }
  world().barrier()->wait();
  GptFile file(path);
  EXPECT_EQ(file.config().n_layer, config().n_layer);
  EXPECT_EQ(file.config().block_size, config().block_size);
  EXPECT_EQ(file.tokenizer().vocabulary(), "abcdefghijklm");
  SafetensorsReader raw(path);
  EXPECT_EQ(raw.entry("h.0.attn.c_attn.weight").shape, (Shape{16, 48}));  // (in, out), as GPT-2's Conv1D
  EXPECT_EQ(raw.metadata().at("n_positions"), "8");
  EXPECT_FALSE(raw.contains("lm_head.weight"));  // tied to wte
  for (int stage : {0, 1, 2, 3}) {
    std::optional<DeferredParameters> deferred;
    if (stage == 3) deferred.emplace();
    Gpt model(file.config());
    deferred.reset();
    std::vector<ZeroParameter> params = zero_parameters(model, 1);
    if (stage == 3) {
      for (ZeroParameter& p : params) {
        p.initialize = [&file, name = p.name, shape = p.variable.shape()](Tensor& v, int64_t first) {
          file.read_slice(name, shape, v, first);
        };
      }
    } else {
      file.load_into(model);
    }
    ZeroOptimizer zero(params, world(), {.stage = stage, .adam = {}});
    std::map<std::string, Tensor> loaded;
    for (auto& [name, value] : zero.full_parameters()) loaded[name] = value;
    std::vector<std::vector<float>> got;
    for (const NamedParameter& p : model.named_parameters()) got.push_back(loaded.at(p.name).to_vector<float>());
    EXPECT_EQ(got, expected) << "stage " << stage;
  }
}

// ---- broken checkpoints (one process) ---------------------------------------

// A saved checkpoint, then `damage` applied to it; the error of loading it.
std::string error_after(const std::string& name, const std::function<void(const std::string& dir)>& damage,
                        GptConfig load_config = config()) {
  const std::string dir = fresh_dir("broken-" + name);
  {
    ZeroTrainer trainer(1);
    trainer.train(0, 1);
    trainer.zero.save_checkpoint(dir);
  }
  damage(dir);
  Gpt model(load_config);
  ZeroOptimizer zero(zero_parameters(model, 1), world(), {.stage = 1, .adam = {}});
  try {
    zero.load_checkpoint(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

void replace_in(const std::string& path, const std::string& from, const std::string& to) {
  std::string text = slurp(path);
  ASSERT_NE(text.find(from), std::string::npos) << from;
  spit(path, text.replace(text.find(from), from.size(), to));
}

// Rewrites the rank file with one piece changed.
void rewrite_piece(const std::string& dir, const std::string& name, const std::function<Tensor(Tensor)>& change) {
  const std::string path = dir + "/rank-0-of-1.safetensors";
  SafetensorsReader reader(path);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [held, e] : reader.tensors()) tensors.emplace_back(held, held == name ? change(reader.read(held)) : reader.read(held));
  write_safetensors(path, tensors);
}

#define EXPECT_ERROR(error, text) EXPECT_NE((error).find(text), std::string::npos) << "got: " << (error)

TEST(CheckpointErrors, EachBrokenCheckpointSaysWhatIsWrong) {
  const std::string rank_file = "/rank-0-of-1.safetensors";
  EXPECT_EQ(error_after("fine", [](const std::string&) {}), "");
  EXPECT_ERROR(error_after("no-index", [](const std::string& d) { fs::remove(d + "/index.json"); }),
               "is not a complete checkpoint: it has no index.json");
  EXPECT_ERROR(error_after("truncated", [&](const std::string& d) {
                 std::string bytes = slurp(d + rank_file);
                 spit(d + rank_file, bytes.substr(0, bytes.size() - 100));
               }),
               "(truncated file?)");
  EXPECT_ERROR(error_after("header", [&](const std::string& d) {
                 std::string bytes = slurp(d + rank_file);
                 bytes[8] = '[';
                 spit(d + rank_file, bytes);
               }),
               "corrupt safetensors header");
  EXPECT_ERROR(error_after("bit-flip", [&](const std::string& d) {  // the last byte of the data, one bit
                 std::string bytes = slurp(d + rank_file);
                 bytes.back() ^= 0x01;
                 spit(d + rank_file, bytes);
               }),
               "is corrupt: its bytes' CRC-32C is");
  EXPECT_ERROR(error_after("missing-rank", [&](const std::string& d) { fs::remove(d + rank_file); }),
               "the rank file rank-0-of-1.safetensors the index names is missing");
  EXPECT_ERROR(error_after("dtype", [&](const std::string& d) {
                 rewrite_piece(d, "wpe.weight", [](Tensor t) { return t.to(DType::f16); });
               }),
               "'wpe.weight' is f16[128] but the index says f32[128]");
  EXPECT_ERROR(error_after("piece-shape", [&](const std::string& d) {
                 rewrite_piece(d, "wpe.weight.exp_avg", [](Tensor t) { return t.slice(0, 0, 100).contiguous(); });
               }),
               "'wpe.weight.exp_avg' is f32[100] but the index says f32[128]");
  GptConfig wider = config();
  wider.n_embd = 32;
  EXPECT_ERROR(error_after("wider", [](const std::string&) {}, wider),
               "a checkpoint of a different model: 'wte.weight' is [13, 16] there and [13, 32] here");
  GptConfig shallower = config();
  shallower.n_layer = 1;
  EXPECT_ERROR(error_after("shallower", [](const std::string&) {}, shallower),
               "a checkpoint of a different model: it has 'h.1.attn.c_attn.bias'");
  EXPECT_ERROR(error_after("version", [](const std::string& d) { replace_in(d + "/index.json", "\"version\": 1", "\"version\": 2"); }),
               "checkpoint format version 2 is newer than this shardgrad reads (1)");
  EXPECT_ERROR(error_after("index", [](const std::string& d) { spit(d + "/index.json", "{\"format\": \"shardgrad-checkpoint\""); }),
               "corrupt checkpoint index: not a JSON object");
  auto with_parameter_steps = [](const std::string& steps) {
    return [steps](const std::string& d) {
      replace_in(d + "/index.json", "\"type\": \"AdamW\"", "\"type\": \"AdamW\", \"parameter_steps\": " + steps);
    };
  };
  EXPECT_ERROR(error_after("steps-type", with_parameter_steps("3")), "'parameter_steps' is not an object");
  EXPECT_ERROR(error_after("steps-above", with_parameter_steps(R"({"wpe.weight": 9})")),
               "wpe.weight counts 9 steps, more than the optimizer's 1");
  EXPECT_ERROR(error_after("steps-negative", with_parameter_steps(R"({"wpe.weight": -1})")),
               "the steps of wpe.weight must be an integer");
  EXPECT_ERROR(error_after("steps-name", with_parameter_steps(R"({"nope": 0})")),
               "it counts steps of 'nope', which this model does not have");
  EXPECT_EQ(error_after("steps-fine", with_parameter_steps(R"({"wpe.weight": 0})")), "");
  EXPECT_ERROR(error_after("escape", [](const std::string& d) {
                 replace_in(d + "/index.json", "\"rank-0-of-1.safetensors\"", "\"../../etc/passwd\"");
               }),
               "not a plain file name");
}

// --save roots: the newest complete checkpoint is found, incomplete saves
// are ignored, and pruning keeps the newest K.
TEST(CheckpointErrors, FindAndPruneUnderASaveRoot) {
  const std::string root = fresh_dir("root");
  ZeroTrainer trainer(2);
  for (int64_t step : {1, 2, 3}) trainer.zero.save_checkpoint(checkpoint_path(root, step));
  fs::create_directories(checkpoint_path(root, 4));  // a save that never finished
  EXPECT_EQ(find_checkpoint(root), checkpoint_path(root, 3));
  EXPECT_EQ(find_checkpoint(checkpoint_path(root, 2)), checkpoint_path(root, 2));
  prune_checkpoints(root, 2);
  EXPECT_EQ(complete_checkpoints(root), (std::vector<std::string>{checkpoint_path(root, 2), checkpoint_path(root, 3)}));
  EXPECT_TRUE(fs::exists(checkpoint_path(root, 4)));  // newer than the newest complete: maybe still being written
  EXPECT_THROW(find_checkpoint(root + "/nothing"), Error);
  fs::remove_all(root);
  fs::create_directories(root);
  try {
    find_checkpoint(root);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_ERROR(std::string(e.what()), "no complete checkpoint there");
  }
}

// ---- a save killed part-way (one process) ----------------------------------

// A child process saves the same state over and over (keeping the newest 2)
// and is killed with SIGKILL at a different moment each round: whatever it
// was doing, every complete checkpoint left behind loads, with the values it
// was given.
TEST(CheckpointFaults, ASaveKilledPartWayLeavesThePreviousCheckpoint) {
  ASSERT_EQ(world().world_size(), 1) << "forks a child: one process only";
  // The values the child saves (it trains on one thread: so does this).
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  ZeroTrainer expected(2);
  expected.train(0, 1);
  const std::vector<std::vector<float>> values = expected.parameters();
  omp_set_num_threads(threads);
  int killed_mid_save = 0;
  for (int round = 0; round < 8; ++round) {
    const std::string root = fresh_dir("killed-" + std::to_string(round));
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      omp_set_num_threads(1);  // the parent's OpenMP thread pool did not survive the fork
      try {
        ZeroTrainer trainer(2);
        trainer.train(0, 1);
        for (int64_t i = 1;; ++i) {
          trainer.zero.save_checkpoint(checkpoint_path(root, i));
          prune_checkpoints(root, 2);
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "the saving child failed: %s\n", error.what());
      }
      ::_exit(1);
    }
    // Once the first save is complete, kill it 0-21 ms later.
    for (int wait = 0; wait < 3000 && complete_checkpoints(root).empty(); ++wait) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(round * 3000));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the child stopped by itself";
    // What it was in the middle of, if anything: a step directory without an
    // index, or a temporary file.
    for (const auto& entry : fs::recursive_directory_iterator(root)) {
      const std::string name = entry.path().filename().string();
      if (name.find(".tmp.") != std::string::npos ||
          (entry.is_directory() && !fs::exists(entry.path() / "index.json"))) {
        ++killed_mid_save;
        break;
      }
    }
    const std::vector<std::string> complete = complete_checkpoints(root);
    ASSERT_FALSE(complete.empty()) << "round " << round;
    EXPECT_EQ(find_checkpoint(root), complete.back());
    for (const std::string& dir : complete) {
      ZeroTrainer loaded(2);
      loaded.zero.load_checkpoint(dir);
      EXPECT_EQ(loaded.parameters(), values) << dir;
    }
    fs::remove_all(root);
  }
  std::printf("(killed in the middle of a save in %d of 8 rounds)\n", killed_mid_save);
  // The child spends most of its time saving (fsync): if no kill landed in a
  // save, this test showed nothing about one.
  EXPECT_GE(killed_mid_save, 1) << "no round killed the child mid-save";
}

}  // namespace
}  // namespace sg
