// The DeepSpeed-shaped config: known keys land in the flags, flags override
// the file, and every unknown or unsupported key is an error naming it. And
// the numbers of every tool's command line (examples/cli.h).
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <map>

#include "examples/cli.h"
#include "examples/train_config.h"
#include "kernels/error.h"

namespace sg {
namespace {

std::string error_of(const std::string& text) {
  TrainFlags flags;
  try {
    apply_train_config_text(text, "test.json", flags);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfig, DeepSpeedKeysSetTheFlags) {
  TrainFlags f;
  apply_train_config_text(R"({
    "train_batch_size": 32, "train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 2,
    "gradient_clipping": 0.5,
    "zero_optimization": {"stage": 2, "overlap_comm": false, "reduce_bucket_size": 5e8, "allgather_bucket_size": 2e8,
                          "stage3_prefetch_bucket_size": 5e7, "stage3_param_persistence_threshold": 1e5},
    "optimizer": {"type": "AdamW", "params": {"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.05}},
    "scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 500, "warmup_num_steps": 20, "cos_min_ratio": 0.1}},
    "bf16": {"enabled": false}
  })", "test.json", f);
  EXPECT_EQ(f.train_batch_size, 32);
  EXPECT_EQ(f.batch, 8);
  EXPECT_EQ(f.grad_accum, 2);
  EXPECT_EQ(f.clip, 0.5);
  EXPECT_EQ(f.zero, 2);
  EXPECT_FALSE(f.overlap_comm);
  EXPECT_EQ(f.reduce_bucket, 500000000);
  EXPECT_EQ(f.allgather_bucket, 200000000);
  EXPECT_EQ(f.prefetch_bucket, 50000000);
  EXPECT_EQ(f.persistence_threshold, 100000);
  EXPECT_EQ(f.lr, 3e-4);
  EXPECT_EQ(f.beta2, 0.95);
  EXPECT_EQ(f.weight_decay, 0.05);
  EXPECT_EQ(f.steps, 500);
  EXPECT_EQ(f.warmup, 20);
  EXPECT_EQ(f.ds_schedule, "WarmupCosineLR");
  EXPECT_TRUE(f.ds_log_warmup);  // DeepSpeed's default warmup_type
  EXPECT_EQ(f.ds_cos_min_ratio, 0.1);
}

// DeepSpeed's schedulers with DeepSpeed's defaults for what is left out,
// "auto" for the flag's value, and what is not a DeepSpeed schedule refused.
TEST(TrainConfig, DeepSpeedSchedulers) {
  TrainFlags cosine;
  cosine.warmup = 30;
  apply_train_config_text(R"({"scheduler": {"type": "WarmupCosineLR", "params": {"total_num_steps": 400}}})",
                          "test.json", cosine);
  EXPECT_EQ(cosine.warmup, 1000);  // DeepSpeed's default warmup_num_steps
  EXPECT_EQ(cosine.ds_cos_min_ratio, 1e-4);
  EXPECT_EQ(cosine.ds_warmup_min_ratio, 0.0);
  TrainFlags linear;
  linear.warmup = 30, linear.steps = 300;
  apply_train_config_text(R"({"scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 1e-5,
                                 "warmup_max_lr": "auto", "warmup_num_steps": "auto", "warmup_type": "linear"}}})",
                          "test.json", linear);
  EXPECT_EQ(linear.ds_schedule, "WarmupLR");
  EXPECT_EQ(linear.warmup, 30);              // "auto": the flag's
  EXPECT_EQ(linear.ds_warmup_max_lr, -1.0);  // "auto": --lr
  EXPECT_EQ(linear.ds_warmup_min_lr, 1e-5);
  EXPECT_FALSE(linear.ds_log_warmup);
  EXPECT_TRUE(linear.config_notes.empty());
  TrainFlags decay;
  apply_train_config_text(R"({"scheduler": {"type": "WarmupDecayLR", "params": {"total_num_steps": 900,
                                                                                 "warmup_num_steps": 50}}})",
                          "test.json", decay);
  EXPECT_EQ(decay.steps, 900);
  EXPECT_EQ(decay.ds_warmup_max_lr, 1e-3);  // DeepSpeed's default peak, and said so
  ASSERT_EQ(decay.config_notes.size(), 1u);
  EXPECT_NE(decay.config_notes[0].find("peaks at DeepSpeed's default, 0.001"), std::string::npos);

  std::string e = error_of(R"({"scheduler": {"type": "OneCycle"}})");
  EXPECT_NE(e.find("'scheduler.type' is OneCycle; train_gpt has DeepSpeed's WarmupLR"), std::string::npos) << e;
  e = error_of(R"({"scheduler": {"type": "WarmupLR", "params": {"cos_min_ratio": 0.1}}})");
  EXPECT_NE(e.find("unknown key 'scheduler.params.cos_min_ratio'"), std::string::npos) << e;  // WarmupLR has none
  e = error_of(R"({"scheduler": {"type": "WarmupCosineLR", "params": {"warmup_type": "cosine"}}})");
  EXPECT_NE(e.find("use log or linear"), std::string::npos) << e;
  e = error_of(R"({"scheduler": {"type": "WarmupCosineLR", "params": {"cos_min_ratio": 2}}})");
  EXPECT_NE(e.find("ratios in [0, 1]"), std::string::npos) << e;
  e = error_of(R"({"scheduler": {"params": {}}})");
  EXPECT_NE(e.find("'scheduler' needs a \"type\""), std::string::npos) << e;
}

TEST(TrainConfig, MixedPrecisionKeys) {
  TrainFlags f;
  apply_train_config_text(R"({"fp16": {"enabled": true, "loss_scale": 0, "initial_scale_power": 12,
                                       "loss_scale_window": 500, "hysteresis": 3, "min_loss_scale": 0.5,
                                       "consecutive_hysteresis": true},
                              "communication_data_type": "fp32"})", "test.json", f);
  EXPECT_EQ(f.dtype, "fp16");
  EXPECT_EQ(f.reduce_dtype, "f32");
  EXPECT_EQ(f.loss_scaling.initial_scale_power, 12);
  EXPECT_EQ(f.loss_scaling.loss_scale_window, 500);
  EXPECT_EQ(f.loss_scaling.hysteresis, 3);
  EXPECT_EQ(f.loss_scaling.min_loss_scale, 0.5);
  EXPECT_TRUE(f.loss_scaling.consecutive_hysteresis);
  TrainFlags g;
  apply_train_config_text(R"({"bf16": {"enabled": true}})", "test.json", g);
  EXPECT_EQ(g.dtype, "bf16");
}

// DeepSpeed's activation_checkpointing section checkpoints every block; the
// options train_gpt has not built are refused when set.
TEST(TrainConfig, ActivationCheckpointingSection) {
  TrainFlags f;
  apply_train_config_text(R"({"activation_checkpointing": {"partition_activations": false, "cpu_checkpointing": false,
                                                          "contiguous_memory_optimization": false,
                                                          "number_checkpoints": null,
                                                          "synchronize_checkpoint_boundary": false,
                                                          "profile": false}})",
                          "test.json", f);
  EXPECT_EQ(f.checkpoint_activations, 1);
  TrainFlags g;
  apply_train_config_text(R"({"activation_checkpointing": {}})", "test.json", g);
  EXPECT_EQ(g.checkpoint_activations, 1);
  std::string e = error_of(R"({"activation_checkpointing": {"partition_activations": true}})");
  EXPECT_NE(e.find("'activation_checkpointing.partition_activations': partitions activations"), std::string::npos) << e;
  e = error_of(R"({"activation_checkpointing": {"cpu_checkpointing": true}})");
  EXPECT_NE(e.find("set it false or leave it out"), std::string::npos) << e;
  e = error_of(R"({"activation_checkpointing": {"number_checkpoints": 4}})");
  EXPECT_NE(e.find("'activation_checkpointing.number_checkpoints' sizes"), std::string::npos) << e;
  e = error_of(R"({"activation_checkpointing": {"profile": 1}})");
  EXPECT_NE(e.find("must be true or false"), std::string::npos) << e;
  e = error_of(R"({"activation_checkpointing": {"partition_activation": false}})");
  EXPECT_NE(e.find("unknown key 'activation_checkpointing.partition_activation'"), std::string::npos) << e;
}

// The configs Hugging Face's DeepSpeed integration documents for ZeRO-2 and
// ZeRO-3 (their "auto" values leave the flags as they are), read whole:
// every key maps to a flag, is what shardgrad always does, or is noted as
// changing nothing here.
TEST(TrainConfig, HuggingFaceZeroConfigsAreRead) {
  TrainFlags two;
  two.batch = 4, two.lr = 5e-4;
  apply_train_config_text(R"({
    "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
             "hysteresis": 2, "min_loss_scale": 1},
    "bf16": {"enabled": "auto"},
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "none", "pin_memory": true},
                          "allgather_partitions": true, "allgather_bucket_size": 2e8, "overlap_comm": true,
                          "reduce_scatter": true, "reduce_bucket_size": 2e8, "contiguous_gradients": true},
    "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "steps_per_print": 2000,
    "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "wall_clock_breakdown": false
  })", "zero2.json", two);
  EXPECT_EQ(two.zero, 2);
  EXPECT_EQ(two.batch, 4);  // "auto": as the flags had it
  EXPECT_EQ(two.lr, 5e-4);
  EXPECT_EQ(two.dtype, "f32");
  EXPECT_EQ(two.reduce_bucket, 200000000);
  EXPECT_EQ(two.print_every, 2000);
  EXPECT_TRUE(two.config_notes.empty()) << two.config_notes.front();

  TrainFlags three;
  apply_train_config_text(R"({
    "bf16": {"enabled": true},
    "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "none"}, "offload_param": {"device": "none"},
                          "overlap_comm": true, "contiguous_gradients": true, "sub_group_size": 1e9,
                          "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
                          "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": true},
    "gradient_clipping": 1.0, "zero_allow_untested_optimizer": true
  })", "zero3.json", three);
  EXPECT_EQ(three.zero, 3);
  EXPECT_EQ(three.dtype, "bf16");
  EXPECT_EQ(three.prefetch_bucket, 0);  // "auto": shardgrad's own unit
  ASSERT_EQ(three.config_notes.size(), 5u);  // in the keys' order (nlohmann's objects sort them)
  EXPECT_EQ(three.config_notes[0], "'zero_allow_untested_optimizer' has no effect: train_gpt trains with AdamW");
  EXPECT_EQ(three.config_notes[1], "'zero_optimization.stage3_gather_16bit_weights_on_model_save' has no effect: "
                                   "--export always writes the whole model, gathered");

  TrainFlags notes;  // a value other than shardgrad's own, where it gives the same run: noted
  apply_train_config_text(R"({"zero_optimization": {"reduce_scatter": false, "contiguous_gradients": true}})",
                          "test.json", notes);
  ASSERT_EQ(notes.config_notes.size(), 1u);
  EXPECT_NE(notes.config_notes[0].find("'zero_optimization.reduce_scatter' has no effect"), std::string::npos);

  std::string e = error_of(R"({"zero_optimization": {"offload_optimizer": {"device": "cpu"}}})");
  EXPECT_NE(e.find("'zero_optimization.offload_optimizer.device' is \"cpu\": offloading"), std::string::npos) << e;
  e = error_of(R"({"optimizer": {"type": "Adam", "params": {"adam_w_mode": false}}})");
  EXPECT_NE(e.find("Adam with L2 in the gradient is not built"), std::string::npos) << e;
  e = error_of(R"({"prescale_gradients": true})");
  EXPECT_NE(e.find("dividing first is not built"), std::string::npos) << e;
  e = error_of(R"({"gradient_predivide_factor": 2.0})");
  EXPECT_NE(e.find("a factor other than 1 is not built"), std::string::npos) << e;
}

// DeepSpeed's batch-size rule: given two of the three, the third follows.
TEST(TrainConfig, BatchSizesFollowDeepSpeedsRule) {
  auto resolved = [](const std::string& config, int ranks) {
    TrainFlags f;
    apply_train_config_text(config, "test.json", f);
    resolve_batch_sizes(f, ranks);
    return std::pair<int64_t, int64_t>{f.batch, f.grad_accum};
  };
  using P = std::pair<int64_t, int64_t>;
  EXPECT_EQ(resolved(R"({"train_batch_size": 32, "train_micro_batch_size_per_gpu": 8})", 2), P(8, 2));
  EXPECT_EQ(resolved(R"({"train_batch_size": 32, "gradient_accumulation_steps": 4})", 2), P(4, 4));
  EXPECT_EQ(resolved(R"({"train_batch_size": 32})", 4), P(8, 1));
  EXPECT_EQ(resolved(R"({"train_batch_size": 24, "train_micro_batch_size_per_gpu": 4,
                         "gradient_accumulation_steps": 3})", 2), P(4, 3));
  EXPECT_EQ(resolved(R"({"train_micro_batch_size_per_gpu": 4})", 3), P(4, 1));  // no total: nothing to derive
  auto error_of_resolve = [&](const std::string& config, int ranks) -> std::string {
    try {
      resolved(config, ranks);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  std::string e = error_of_resolve(R"({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 8})", 1);
  EXPECT_NE(e.find("train_batch_size 30 in the config is not a multiple of train_micro_batch_size_per_gpu"),
            std::string::npos) << e;
  e = error_of_resolve(R"({"train_batch_size": 7, "train_micro_batch_size_per_gpu": 2,
                           "gradient_accumulation_steps": 1})", 1);
  EXPECT_NE(e.find("is not train_micro_batch_size_per_gpu (2) x gradient_accumulation_steps (1) x ranks (1) = 2"),
            std::string::npos) << e;
  // A flag counts as given: --batch 4 with train_batch_size 16 on 2 ranks accumulates 2.
  std::string path = ::testing::TempDir() + "/train_batch.json";
  std::ofstream(path) << R"({"train_batch_size": 16})";
  std::vector<std::string> args = {"train_gpt", "--config", path, "--batch", "4"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  TrainFlags f = parse_train_flags(int(argv.size()), argv.data());
  resolve_batch_sizes(f, 2);
  EXPECT_EQ(f.grad_accum, 2);
  std::remove(path.c_str());
}

TEST(TrainConfig, UnknownKeysAndWrongTypesNameTheirPath) {
  std::string e = error_of(R"({"zero_optimization": {"stgae": 2}})");
  EXPECT_NE(e.find("unknown key 'zero_optimization.stgae'"), std::string::npos) << e;
  EXPECT_NE(e.find("stage"), std::string::npos) << e;  // the known keys are listed
  e = error_of(R"({"train_micro_batch_size_per_gpu": "8"})");
  EXPECT_NE(e.find("'train_micro_batch_size_per_gpu' must be an integer"), std::string::npos) << e;
  e = error_of(R"({"optimizer": {"type": "Lamb"}})");
  EXPECT_NE(e.find("supports AdamW"), std::string::npos) << e;
  e = error_of(R"({"bf16": {"enabled": true}, "fp16": {"enabled": true}})");
  EXPECT_NE(e.find("bf16 and fp16 cannot both be enabled"), std::string::npos) << e;
  e = error_of(R"({"communication_data_type": "int8"})");
  EXPECT_NE(e.find("use fp32, bf16 or fp16"), std::string::npos) << e;
  e = error_of(R"({"zero_optimization": {"reduce_bucket_size": -1}})");
  EXPECT_NE(e.find("'zero_optimization.reduce_bucket_size' must be a whole number of elements"), std::string::npos) << e;
  e = error_of(R"({"train_batch_size": 8,)");
  EXPECT_NE(e.find("not valid JSON"), std::string::npos) << e;
}

TEST(TrainConfig, CommandLineFlagsOverrideTheFile) {
  std::string path = ::testing::TempDir() + "/train_config.json";
  std::ofstream(path) << R"({"train_micro_batch_size_per_gpu": 8, "zero_optimization": {"stage": 1},
                             "optimizer": {"type": "AdamW", "params": {"lr": 1e-3}},
                             "scheduler": {"type": "WarmupCosineLR", "params": {"cos_min_ratio": 0.5}}})";
  std::vector<std::string> args = {"train_gpt", "--batch", "4", "--config", path, "--lr", "2e-3"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  TrainFlags f = parse_train_flags(int(argv.size()), argv.data());
  EXPECT_EQ(f.batch, 4);      // the flag, though it came before --config
  EXPECT_EQ(f.zero, 1);       // the file
  EXPECT_EQ(f.lr, 2e-3);      // the flag: the cosine's peak
  EXPECT_EQ(f.ds_cos_min_ratio, 0.5);  // the file's floor, a ratio of that peak
  args.insert(args.end(), {"--min-lr", "1e-4"});  // the flags' schedule's floor: not the config's schedule's
  argv.clear();
  for (std::string& a : args) argv.push_back(a.data());
  EXPECT_THROW(parse_train_flags(int(argv.size()), argv.data()), Error);
  args.resize(args.size() - 2);
  argv.clear();
  for (std::string& a : args) argv.push_back(a.data());
  std::ofstream(path) << R"({"zero_optimization": {"stage": 4}})";
  EXPECT_THROW(parse_train_flags(int(argv.size()), argv.data()), Error);  // there is no stage 4
  std::remove(path.c_str());
}

// Every tool's numbers are read whole: std::stoll alone would read "1e3"
// as 1 and "12x" as 12, and say only "stoll" for "abc".
TEST(CommandLine, NumbersAreReadWholeOrRefusedByName) {
  EXPECT_EQ(parse_int_flag("tokens", "1000"), 1000);
  EXPECT_EQ(parse_int_flag("seed", "-3"), -3);
  EXPECT_EQ(parse_number_flag("lr", "1e-3"), 1e-3);
  EXPECT_EQ(parse_int32_flag("ranks", "8"), 8);
  auto error_of_parse = [](const std::function<void()>& parse) -> std::string {
    try {
      parse();
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_EQ(error_of_parse([] { parse_int_flag("tokens", "1e3"); }), "--tokens expects an integer, got '1e3'");
  EXPECT_EQ(error_of_parse([] { parse_int_flag("tokens", "12x"); }), "--tokens expects an integer, got '12x'");
  EXPECT_EQ(error_of_parse([] { parse_int_flag("seed", "abc"); }), "--seed expects an integer, got 'abc'");
  EXPECT_EQ(error_of_parse([] { parse_int_flag("seed", ""); }), "--seed expects an integer, got ''");
  EXPECT_EQ(error_of_parse([] { parse_int_flag("seed", "99999999999999999999"); }),
            "--seed expects an integer, got '99999999999999999999'");
  EXPECT_EQ(error_of_parse([] { parse_number_flag("lr", "0.1.2"); }), "--lr expects a number, got '0.1.2'");
  EXPECT_EQ(error_of_parse([] { parse_int32_flag("ranks", "4294967296"); }), "--ranks 4294967296 is out of range");
  const std::map<std::string, std::string> args = {{"device", "gpu"}, {"batch", "8"}};
  EXPECT_EQ(int_arg(args, "batch"), 8);
  EXPECT_EQ(error_of_parse([&] { choice_arg(args, "device", {"cuda", "cpu"}); }),
            "--device expects one of cuda, cpu, got 'gpu'");
}

}  // namespace
}  // namespace sg
