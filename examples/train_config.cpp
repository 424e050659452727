#include "examples/train_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "examples/text_data.h"
#include "kernels/error.h"

namespace sg {
namespace {

using json = nlohmann::json;

struct Reader {
  std::string origin;
  std::vector<std::string>* notes;  // keys accepted that change nothing here, and why

  // Calls handlers[key] for each key of `object` at `path`; unknown keys
  // fail. "auto" (what Hugging Face's Trainer fills in from its own
  // arguments) leaves the flag as the command line or its default has it.
  void fields(const json& object, const std::string& path,
              const std::map<std::string, std::function<void(const json&, const std::string&)>>& handlers) const {
    SG_CHECK(object.is_object(), origin, ": ", path.empty() ? "the config" : path, " must be a JSON object");
    for (const auto& [key, value] : object.items()) {
      std::string full = path.empty() ? key : path + "." + key;
      auto handler = handlers.find(key);
      if (handler == handlers.end()) {
        std::string known;
        for (const auto& [name, unused] : handlers) known += (known.empty() ? "" : ", ") + name;
        SG_FAIL(origin, ": unknown key '", full, "'; known keys here: ", known);
      }
      if (value.is_string() && value.get<std::string>() == "auto") continue;
      handler->second(value, full);
    }
  }
  // A key DeepSpeed has whose every value gives the same run here: noted
  // with why, so that nothing in the file is silently ignored.
  auto no_effect(std::string why) const {
    return [this, why](const json&, const std::string& p) { notes->push_back("'" + p + "' has no effect: " + why); };
  }
  // A boolean whose DeepSpeed default is what shardgrad does; the other
  // value gives the same results here, so it is noted, not refused.
  auto same_either_way(bool ours, std::string why) const {
    return [this, ours, why](const json& e, const std::string& p) {
      if (boolean(e, p) != ours) notes->push_back("'" + p + "' has no effect: " + why);
    };
  }
  double number(const json& value, const std::string& path) const {
    SG_CHECK(value.is_number(), origin, ": '", path, "' must be a number, got ", value.dump());
    return value.get<double>();
  }
  int64_t integer(const json& value, const std::string& path) const {
    SG_CHECK(value.is_number_integer(), origin, ": '", path, "' must be an integer, got ", value.dump());
    return value.get<int64_t>();
  }
  bool boolean(const json& value, const std::string& path) const {
    SG_CHECK(value.is_boolean(), origin, ": '", path, "' must be true or false, got ", value.dump());
    return value.get<bool>();
  }
  std::string text(const json& value, const std::string& path) const {
    SG_CHECK(value.is_string(), origin, ": '", path, "' must be a string, got ", value.dump());
    return value.get<std::string>();
  }
};

}  // namespace

void apply_train_config_text(const std::string& text, const std::string& origin, TrainFlags& f) {
  json root;
  try {
    root = json::parse(text);
  } catch (const json::parse_error& error) {
    SG_FAIL(origin, " is not valid JSON: ", error.what());
  }
  const Reader r{origin, &f.config_notes};
  // "bf16": {"enabled": true} and "fp16": {"enabled": true, ...loss scaling...}.
  auto enable = [&](const char* dtype) {
    return [&, dtype](const json& e, const std::string& p) {
      if (!r.boolean(e, p)) return;
      SG_CHECK(f.dtype == "f32" || f.dtype == dtype, origin, ": '", p, "': bf16 and fp16 cannot both be enabled");
      f.dtype = dtype;
    };
  };
  auto bf16 = [&](const json& v, const std::string& path) { r.fields(v, path, {{"enabled", enable("bf16")}}); };
  auto fp16 = [&](const json& v, const std::string& path) {
    LossScalerOptions& o = f.loss_scaling;
    r.fields(v, path, {{"enabled", enable("fp16")},
                       {"loss_scale", [&](const json& e, const std::string& p) { o.static_scale = r.number(e, p); }},
                       {"initial_scale_power",
                        [&](const json& e, const std::string& p) { o.initial_scale_power = int(r.integer(e, p)); }},
                       {"loss_scale_window",
                        [&](const json& e, const std::string& p) { o.loss_scale_window = r.integer(e, p); }},
                       {"hysteresis", [&](const json& e, const std::string& p) { o.hysteresis = int(r.integer(e, p)); }},
                       {"consecutive_hysteresis",
                        [&](const json& e, const std::string& p) { o.consecutive_hysteresis = r.boolean(e, p); }},
                       {"min_loss_scale", [&](const json& e, const std::string& p) { o.min_loss_scale = r.number(e, p); }}});
  };
  // A count of elements (DeepSpeed writes them as 5e8 too).
  auto elements = [&](const json& v, const std::string& path) {
    const double n = r.number(v, path);
    SG_CHECK(n >= 0 && n <= 1e15 && n == std::floor(n), origin, ": '", path, "' must be a whole number of elements, got ", n);
    return int64_t(n);
  };
  // DeepSpeed's section configures deepspeed.checkpointing.checkpoint, which
  // the model's code calls (Megatron-DeepSpeed's --checkpoint-activations);
  // train_gpt owns its model, so the section checkpoints every block
  // (--checkpoint-activations 1). Its options beyond that are refused while
  // set: partitioning needs tensor parallelism, and the rest (CPU copies,
  // contiguous buffers and their count, synchronization and profiling at
  // the boundaries) are not built.
  auto activation_checkpointing = [&](const json& v, const std::string& path) {
    f.checkpoint_activations = 1;
    auto off = [&](const char* why) {
      return [&, why](const json& e, const std::string& p) {
        SG_CHECK(!r.boolean(e, p), origin, ": '", p, "': ", why, "; set it false or leave it out");
      };
    };
    r.fields(v, path, {
        {"partition_activations", off("partitions activations across tensor-parallel ranks, which shardgrad has not "
                                      "built")},
        {"cpu_checkpointing", off("keeps the checkpoints in CPU memory, which train_gpt does not do yet")},
        {"contiguous_memory_optimization", off("copies the checkpoints into one buffer, which train_gpt does not do")},
        {"number_checkpoints", [&](const json& e, const std::string& p) {
           SG_CHECK(e.is_null(), origin, ": '", p, "' sizes contiguous_memory_optimization's buffer, which train_gpt ",
                    "does not build; leave it null or out");
         }},
        {"synchronize_checkpoint_boundary", off("synchronizes the GPU at each block, which train_gpt does not do")},
        {"profile", off("times each checkpointed segment, which train_gpt does not do")},
    });
  };
  // DeepSpeed's schedulers with DeepSpeed's defaults where a parameter is
  // left out (warmup 1000 steps, log warmup, cos_min_ratio 1e-4,
  // WarmupDecayLR's peak 0.001); "auto" takes the flag instead (--warmup,
  // --lr, --steps). optim/schedule.h has the formulas.
  auto scheduler = [&](const json& v, const std::string& path) {
    SG_CHECK(v.is_object() && v.contains("type"), origin, ": '", path, "' needs a \"type\"");
    const std::string type = r.text(v["type"], path + ".type");
    SG_CHECK(type == "WarmupLR" || type == "WarmupDecayLR" || type == "WarmupCosineLR", origin, ": '", path,
             ".type' is ", type, "; train_gpt has DeepSpeed's WarmupLR, WarmupDecayLR and WarmupCosineLR");
    f.ds_schedule = type;
    f.ds_log_warmup = true, f.ds_warmup_min_lr = 0.0, f.ds_warmup_min_ratio = 0.0, f.ds_cos_min_ratio = 1e-4;
    const json params = v.value("params", json::object());
    if (!params.contains("warmup_num_steps")) f.warmup = 1000;
    f.ds_warmup_max_lr = type == "WarmupDecayLR" && !params.contains("warmup_max_lr") ? 1e-3 : -1.0;
    if (f.ds_warmup_max_lr > 0) {
      f.config_notes.push_back("'" + path + ".params.warmup_max_lr' is not given: WarmupDecayLR peaks at DeepSpeed's "
                       "default, 0.001, not at the optimizer's lr");
    }
    const bool cosine = type == "WarmupCosineLR";
    std::map<std::string, std::function<void(const json&, const std::string&)>> known = {
        {"warmup_num_steps", [&](const json& x, const std::string& p) { f.warmup = r.integer(x, p); }},
        {"warmup_type", [&](const json& x, const std::string& p) {
           const std::string kind = r.text(x, p);
           SG_CHECK(kind == "log" || kind == "linear", origin, ": '", p, "' is ", kind, "; use log or linear");
           f.ds_log_warmup = kind == "log";
         }},
        {"last_batch_iteration", [&](const json& x, const std::string& p) {
           SG_CHECK(r.integer(x, p) == -1, origin, ": '", p, "': a schedule starts at -1 here; --resume continues one");
         }},
    };
    if (type != "WarmupLR") {
      known["total_num_steps"] = [&](const json& x, const std::string& p) { f.steps = r.integer(x, p); };
    }
    if (cosine) {
      known["warmup_min_ratio"] = [&](const json& x, const std::string& p) { f.ds_warmup_min_ratio = r.number(x, p); };
      known["cos_min_ratio"] = [&](const json& x, const std::string& p) { f.ds_cos_min_ratio = r.number(x, p); };
    } else {
      known["warmup_min_lr"] = [&](const json& x, const std::string& p) { f.ds_warmup_min_lr = r.number(x, p); };
      known["warmup_max_lr"] = [&](const json& x, const std::string& p) { f.ds_warmup_max_lr = r.number(x, p); };
    }
    r.fields(v, path, {{"type", [](const json&, const std::string&) {}},
                       {"params", [&](const json& x, const std::string& p) { r.fields(x, p, known); }}});
    SG_CHECK(f.ds_warmup_min_lr >= 0 && f.ds_warmup_min_ratio >= 0 && f.ds_warmup_min_ratio <= 1 &&
                 f.ds_cos_min_ratio >= 0 && f.ds_cos_min_ratio <= 1,
             origin, ": '", path, ".params': learning rates must be >= 0 and ratios in [0, 1]");
  };
  // ZeRO-Offload and ZeRO-Infinity: "device": "none" is what shardgrad does.
  auto offload = [&](const json& v, const std::string& path) {
    SG_CHECK(v.is_object(), origin, ": '", path, "' must be a JSON object");
    const json device = v.contains("device") ? v["device"] : json("none");
    SG_CHECK(device == "none", origin, ": '", path, ".device' is ", device.dump(), ": offloading to the CPU or NVMe ",
             "is not built yet; set \"none\" or leave the section out");
  };
  r.fields(root, "", {
      {"train_batch_size", [&](const json& v, const std::string& p) { f.train_batch_size = r.integer(v, p); }},
      {"train_micro_batch_size_per_gpu", [&](const json& v, const std::string& p) {
         f.batch = r.integer(v, p), f.batch_given = true;
       }},
      {"gradient_accumulation_steps", [&](const json& v, const std::string& p) {
         f.grad_accum = r.integer(v, p), f.grad_accum_given = true;
       }},
      {"gradient_clipping", [&](const json& v, const std::string& p) { f.clip = r.number(v, p); }},
      {"zero_optimization", [&](const json& v, const std::string& path) {
         r.fields(v, path, {
             {"stage", [&](const json& s, const std::string& p) { f.zero = r.integer(s, p); }},
             {"overlap_comm", [&](const json& s, const std::string& p) { f.overlap_comm = r.boolean(s, p); }},
             {"reduce_bucket_size", [&](const json& s, const std::string& p) { f.reduce_bucket = elements(s, p); }},
             {"allgather_bucket_size", [&](const json& s, const std::string& p) { f.allgather_bucket = elements(s, p); }},
             {"stage3_prefetch_bucket_size",
              [&](const json& s, const std::string& p) { f.prefetch_bucket = elements(s, p); }},
             {"stage3_param_persistence_threshold",
              [&](const json& s, const std::string& p) { f.persistence_threshold = elements(s, p); }},
             {"offload_optimizer", offload},
             {"offload_param", offload},
             {"contiguous_gradients", r.same_either_way(true, "gradients always live in their group's flat buffer")},
             {"reduce_scatter", r.same_either_way(true, "stages 1-2 always reduce-scatter the gradients (an "
                                                        "all-reduce would give the same sums)")},
             {"allgather_partitions", r.same_either_way(true, "the updated slices are always all-gathered")},
             {"round_robin_gradients", r.same_either_way(false, "it orders offloaded gradients, and nothing is "
                                                                "offloaded")},
             {"ignore_unused_parameters", r.same_either_way(true, "a parameter without a gradient is always left "
                                                                  "alone (docs/zero.md)")},
             {"elastic_checkpoint", r.no_effect("checkpoints always resume on any number of ranks and stage")},
             {"sub_group_size", r.no_effect("AdamW steps one shard group at a time")},
             {"stage3_max_live_parameters", r.no_effect("stage 3 holds at most the token embedding, a "
                                                        "block's groups and one prefetched group gathered "
                                                        "(optim/gather_schedule.h)")},
             {"stage3_max_reuse_distance", r.no_effect("stage 3 releases a group when its phase is done with it")},
             {"stage3_gather_16bit_weights_on_model_save",
              r.no_effect("--export always writes the whole model, gathered")},
             {"stage3_gather_fp16_weights_on_model_save",
              r.no_effect("--export always writes the whole model, gathered")},
         });
       }},
      {"optimizer", [&](const json& v, const std::string& path) {
         r.fields(v, path, {
             {"type", [&](const json& t, const std::string& p) {
                std::string type = r.text(t, p);
                SG_CHECK(type == "AdamW" || type == "Adam", origin, ": '", p, "' is ", type,
                         "; train_gpt supports AdamW (Adam is taken as AdamW with the given weight decay)");
              }},
             {"params", [&](const json& params, const std::string& ppath) {
                r.fields(params, ppath, {
                    {"lr", [&](const json& x, const std::string& p) { f.lr = r.number(x, p); }},
                    {"betas", [&](const json& x, const std::string& p) {
                       SG_CHECK(x.is_array() && x.size() == 2 && x[0].is_number() && x[1].is_number(), origin, ": '", p,
                                "' must be [beta1, beta2]");
                       SG_CHECK(x[0].get<double>() == 0.9, origin, ": '", p, "': beta1 is fixed at 0.9 in train_gpt");
                       f.beta2 = x[1].get<double>();
                     }},
                    {"eps", [&](const json& x, const std::string& p) {
                       SG_CHECK(r.number(x, p) == 1e-8, origin, ": '", p, "': eps is fixed at 1e-8 in train_gpt");
                     }},
                    {"weight_decay", [&](const json& x, const std::string& p) { f.weight_decay = r.number(x, p); }},
                    {"adam_w_mode", [&](const json& x, const std::string& p) {
                       SG_CHECK(r.boolean(x, p), origin, ": '", p, "': train_gpt's Adam decays weights apart from ",
                                "the gradient (AdamW); Adam with L2 in the gradient is not built");
                     }},
                    {"torch_adam", r.no_effect("AdamW is shardgrad's own kernel over each shard")},
                });
              }},
         });
       }},
      {"scheduler", scheduler},
      {"bf16", bf16},
      {"fp16", fp16},
      {"activation_checkpointing", activation_checkpointing},
      {"steps_per_print", [&](const json& v, const std::string& p) { f.print_every = r.integer(v, p); }},
      {"wall_clock_breakdown", r.same_either_way(false, "train_gpt prints tokens/s (and --metrics writes them) every "
                                                        "step; bench/kernel_profile.py breaks a step into kernels")},
      {"zero_allow_untested_optimizer", r.no_effect("train_gpt trains with AdamW")},
      {"prescale_gradients", [&](const json& v, const std::string& p) {
         SG_CHECK(!r.boolean(v, p), origin, ": '", p, "': shardgrad averages gradients after summing them; dividing ",
                  "first is not built");
       }},
      {"gradient_predivide_factor", [&](const json& v, const std::string& p) {
         SG_CHECK(r.number(v, p) == 1.0, origin, ": '", p, "': shardgrad averages gradients after summing them; a ",
                  "factor other than 1 is not built");
       }},
      {"communication_data_type", [&](const json& v, const std::string& p) {
         const std::string type = r.text(v, p);
         SG_CHECK(type == "fp32" || type == "bf16" || type == "fp16", origin, ": '", p, "' is ", type,
                  "; use fp32, bf16 or fp16");
         f.reduce_dtype = type == "fp32" ? "f32" : type;
       }},
  });
}

void apply_train_config(const std::string& path, TrainFlags& flags) {
  apply_train_config_text(read_text_file(path, "config"), path, flags);
}

}  // namespace sg
