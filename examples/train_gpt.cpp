// train_gpt: trains a GPT-2-style model on a text file and prints a sample.
//
// The training loop is deliberately flat, as in llm.c: every step is
//   for each micro-batch: loss = model.loss(x, y); zero.backward(loss / accum, last micro-batch?);
//   zero.clip_grad_norm(1.0); zero.step(lr); zero.zero_grad();
// Under mpirun every rank trains its rows of each global batch and ZeRO (--zero 0-3)
// averages the gradients and partitions the model states; alone, it is a
// world of one.
// Follow model.loss into nn/gpt.cpp, then autograd/functions.cpp, tensor/ops
// and kernels/cpu to see one step end to end (docs/gpt.md walks it).
//
//   build/bin/train_gpt                      # the default character-level run
//   mpirun -np 2 build/bin/train_gpt --zero 3  # two data-parallel ranks, ZeRO stage 3
//   build/bin/train_gpt --help               # every flag
#include <omp.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <optional>
#include <sstream>
#include <string>

#include "examples/gpt_file.h"
#include "examples/memory_check.h"
#include "examples/sampling.h"
#include "examples/text_data.h"
#include "examples/train_flags.h"
#include "examples/train_state.h"
#include "examples/zero_parameters.h"
#include "nn/gpt.h"
#include "dist/world.h"
#include "optim/checkpoint.h"
#include "optim/optimizers.h"
#include "optim/schedule.h"
#include "optim/zero.h"
#include "tensor/ops.h"
#include "tools/activation_memory.h"
#include "tools/zero_memory_model.h"

namespace sg {
namespace {

using Clock = std::chrono::steady_clock;

DType dtype_of_flag(const std::string& name) {
  return name == "bf16" ? DType::bf16 : name == "fp16" ? DType::f16 : DType::f32;
}

// A number for the metrics' JSON, to the last bit of an f32, or null for
// inf and NaN, which JSON cannot say (an fp16 step whose gradients
// overflowed has an infinite norm; a diverged run's loss is NaN).
std::string json_number(double x) {
  if (!std::isfinite(x)) return "null";
  std::ostringstream text;
  text << std::setprecision(9) << x;
  return text.str();
}

// SIGINT / SIGTERM: the step in progress finishes, a checkpoint is saved
// (with --save), and train_gpt exits with 128 + the signal's number. A
// second signal acts at once (the handler resets itself).
volatile std::sig_atomic_t g_signal = 0;
extern "C" void on_stop_signal(int signal) { g_signal = signal; }

void install_stop_handlers() {
  struct sigaction action = {};
  action.sa_handler = on_stop_signal;
  action.sa_flags = SA_RESETHAND;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

std::string format_duration(double seconds) {
  char text[32];
  int total = int(seconds + 0.5);
  if (total >= 3600) std::snprintf(text, sizeof(text), "%dh%02dm", total / 3600, total % 3600 / 60);
  else std::snprintf(text, sizeof(text), "%dm%02ds", total / 60, total % 60);
  return text;
}

// Mean loss over the first `batches` global batches of the validation
// loader (the same windows every time, so evaluations are comparable). The
// ranks split each batch as in training and average their means, so the
// figure is the one process's, whatever the number of ranks.
double evaluate(const Gpt& model, WindowLoader& loader, int64_t batches, Communicator& comm) {
  NoGradGuard no_grad;
  loader.set_windows_drawn(0);
  double total = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    WindowLoader::Batch batch = loader.next();
    total += model.loss(batch.x, batch.y).data().item();
  }
  if (comm.world_size() > 1) {
    Tensor shared = Tensor::from_vector<double>({total}, {1});
    comm.all_reduce(shared, ReduceOp::sum)->wait();
    total = shared.at({0}) / comm.world_size();
  }
  return total / double(batches);
}

// The config's DeepSpeed scheduler (examples/train_config.cpp), if it named one.
std::optional<DeepSpeedSchedule> deepspeed_schedule(const TrainFlags& flags) {
  if (flags.ds_schedule.empty()) return std::nullopt;
  using Kind = DeepSpeedSchedule::Kind;
  DeepSpeedSchedule s;
  s.kind = flags.ds_schedule == "WarmupLR" ? Kind::warmup
           : flags.ds_schedule == "WarmupDecayLR" ? Kind::warmup_decay : Kind::warmup_cosine;
  s.log_warmup = flags.ds_log_warmup;
  s.min_lr = flags.ds_warmup_min_lr;
  s.max_lr = s.kind == Kind::warmup_cosine || flags.ds_warmup_max_lr < 0 ? flags.lr : flags.ds_warmup_max_lr;
  s.warmup_min_ratio = flags.ds_warmup_min_ratio, s.cos_min_ratio = flags.ds_cos_min_ratio;
  s.warmup_steps = flags.warmup, s.total_steps = flags.steps;
  return s;
}

double mib(int64_t bytes) { return double(bytes) / double(1 << 20); }

// What a training step of this run will hold on each rank beyond the model
// states: the activation estimate (tools/activation_memory.h), where it has
// one (f32, or 16-bit on a GPU).
std::optional<ActivationEstimate> predicted_activations(const GptConfig& cfg, const TrainFlags& flags, Device device,
                                                        DType dtype) {
  if (dtype != DType::f32 && !device.is_cuda()) return std::nullopt;
  return estimate_activations(cfg, {.batch = flags.batch,
                                    .dtype = dtype,
                                    .cuda = device.is_cuda(),
                                    .checkpointed = flags.checkpoint_activations == 1,
                                    .stage = int(flags.zero),
                                    .loss_chunk_rows = flags.loss_chunk});
}

// Each rank's peak bytes per category since the last reset, as JSON:
// [{"parameter": .., "gradient": .., ...}, ...] in rank order.
std::string peak_bytes_json(Communicator& comm, Device device) {
  MemoryStats stats = memory_stats(device);
  std::vector<int64_t> mine;
  for (const ByteCounter& counter : stats.categories) mine.push_back(counter.peak);
  const int64_t n = int64_t(mine.size());
  Tensor all = Tensor::empty({n * comm.world_size()}, TensorOptions().dtype(DType::i64));
  comm.all_gather(all, Tensor::from_vector(mine, {n}))->wait();
  std::vector<int64_t> v = all.to_vector<int64_t>();
  std::ostringstream out;
  out << "[";
  for (int r = 0; r < comm.world_size(); ++r) {
    out << (r ? ", " : "") << "{";
    for (int64_t c = 0; c < n; ++c) {
      out << (c ? ", " : "") << "\"" << category_name(MemoryCategory(c)) << "\": " << v[size_t(r * n + c)];
    }
    out << "}";
  }
  return out.str() + "]";
}

int run(TrainFlags flags) {
  Communicator& comm = world();  // mpirun: one rank per process; otherwise a world of one
  if (flags.threads > 0) omp_set_num_threads(flags.threads);  // after world(), which shares the node's cores
  const bool lead = comm.rank() == 0;  // rank 0 prints, writes metrics and samples
  const int W = comm.world_size();
  // --device cuda: every tensor of the step lives on this rank's GPU.
  SG_CHECK(flags.device == "cpu" || cuda_available(), "--device cuda: no GPU is visible to this build of shardgrad ",
           "(built without CUDA, or no device found); use --device cpu");
  const Device device = flags.device == "cuda" ? local_cuda_device() : Device::cpu();
  // Where the run will write, checked before any training: every rank
  // writes its shards into --save's checkpoints; rank 0 writes the rest.
  const std::string probe_tag = std::to_string(getpid()) + "-rank" + std::to_string(comm.rank());
  if (!flags.save.empty()) check_writable_directory("save", flags.save, probe_tag);
  // A fresh run into a --save that holds another run's checkpoints would
  // mix the two, and pruning by step number would delete this run's newer
  // work first whenever the other run got further.
  if (!flags.save.empty() && flags.resume.empty()) {
    const std::vector<std::string> earlier = complete_checkpoints(flags.save);
    SG_CHECK(earlier.empty(), "--save ", flags.save, " already holds checkpoints of an earlier run (the newest is ",
             earlier.empty() ? "" : earlier.back(), "). Continue that run with --resume ", flags.save,
             ", or give another --save, or remove them");
  }
  if (lead) check_writable_directory("out", flags.out, probe_tag);
  if (lead && !flags.export_path.empty()) check_writable_file_path("export", flags.export_path, probe_tag);
  resolve_batch_sizes(flags, W);  // the config's train_batch_size, DeepSpeed's way
  const std::string text = read_text_file(flags.data, "data");
  // --init-from: the architecture and tokenizer come from the file.
  std::optional<GptFile> init;
  if (!flags.init_from.empty()) init.emplace(flags.init_from);
  const Tokenizer tokenizer = init ? init->tokenizer() : Tokenizer::from_name(flags.tokenizer, text);
  std::vector<int32_t> tokens = tokenizer.encode(text);

  // The first 90% trains, the last 10% validates (nanoGPT's split). Each rank
  // trains and validates on its rows of one global batch (the same windows
  // whatever the number of ranks).
  const size_t split = tokens.size() * 9 / 10;
  SG_CHECK(int64_t(tokens.size() - split) > flags.ctx, "--data ", flags.data, ": its ", tokens.size(),
           " tokens split into ", split, " to train on and ", tokens.size() - split,
           " to validate on (the last 10%); a window of --ctx ", flags.ctx, " needs ", flags.ctx + 1,
           " tokens in each: use a shorter --ctx or more text");
  WindowLoader train_loader(std::vector<int32_t>(tokens.begin(), tokens.begin() + long(split)), flags.batch, flags.ctx,
                            uint64_t(flags.seed), comm.rank(), W, device);
  WindowLoader val_loader(std::vector<int32_t>(tokens.begin() + long(split), tokens.end()), flags.batch, flags.ctx,
                          uint64_t(flags.seed) + 1, comm.rank(), W, device);

  GptConfig cfg;
  cfg.vocab_size = tokenizer.vocab_size();
  cfg.block_size = flags.ctx;
  cfg.n_layer = flags.layers;
  cfg.n_head = flags.heads;
  cfg.n_embd = flags.embd;
  if (init) {
    cfg = init->config();
    SG_CHECK(flags.ctx <= cfg.block_size, "--ctx ", flags.ctx, " is longer than ", flags.init_from,
             "'s n_positions (", cfg.block_size, ")");
  }
  cfg.seed = uint64_t(flags.seed);
  const DType dtype = dtype_of_flag(flags.dtype);

  // Before the model is built, the bytes each rank will hold, predicted: a
  // run that cannot fit stops here with what to change
  // (examples/memory_check.h), not out of memory as it builds the model or
  // in its first step, or killed by the kernel's out-of-memory killer as it
  // touches pages the kernel promised. (fp16's model states take bf16's.)
  const std::optional<ActivationEstimate> activations = predicted_activations(cfg, flags, device, dtype);
  const int64_t states =
      estimate_zero_memory(cfg, W, int(flags.zero), dtype == DType::f32 ? DType::f32 : DType::bf16).total();
  // What the driver (a GPU) or the kernel (the host) has free, with what
  // shardgrad holds already or keeps cached (little, before the model), must take it,
  // for every rank of this node that shares the device. cuBLASLt's
  // workspace, NCCL's and MPI's buffers and the batches' tokens come on top,
  // so a run near the limit can still fail later, with the allocator's
  // out-of-memory error. (16-bit runs on the CPU have no prediction.)
  if (activations) {
    const DeviceMemory memory = device.is_cuda() ? cuda_memory(device) : host_memory();
    const int sharing = ranks_on_device(device, local_world_size(), device.is_cuda() ? cuda_device_count() : 0);
    check_run_fits({states, activations->peak}, flags, device, memory,
                   memory_stats(device).total.live + cached_bytes(device), sharing);
  }

  // With ZeRO-3 the model is born partitioned: its parameters are created as
  // placeholders here, and each rank creates and initializes only its slices.
  std::optional<DeferredParameters> deferred;
  if (flags.zero == 3) deferred.emplace();
  std::optional<ParametersOn> on_device(std::in_place, device);
  Gpt model(cfg);
  on_device.reset();
  deferred.reset();
  model.checkpoint_activations(flags.checkpoint_activations == 1);
  model.loss_chunk_rows(flags.loss_chunk);

  // Weight decay only on the matrices of linear maps (ParamInit::decays).
  // ZeRO packs the parameters into groups and averages gradients over ranks.
  // --init-from: each rank reads only what it holds (at stage 3 its slices;
  // at stages 0-2 the whole model, which every rank holds).
  std::vector<ZeroParameter> parameters = zero_parameters(model, cfg.seed);
  if (init && flags.zero == 3) {
    for (ZeroParameter& p : parameters) {
      p.initialize = [&init, name = p.name, shape = p.variable.shape()](Tensor& values, int64_t first) {
        init->read_slice(name, shape, values, first);
      };
    }
  } else if (init) {
    init->load_into(model);
  }
  ZeroOptimizer optimizer(std::move(parameters), comm,
                          {.stage = int(flags.zero),
                           .adam = {.lr = flags.lr, .beta1 = 0.9, .beta2 = flags.beta2, .eps = 1e-8},
                           .weight_decay = flags.weight_decay,
                           .align = 16,
                           .reduce_bucket = flags.reduce_bucket,
                           .allgather_bucket = flags.allgather_bucket,
                           .overlap_comm = flags.overlap_comm,
                           .prefetch_bucket = flags.prefetch_bucket,
                           .persistence_threshold = flags.persistence_threshold,
                           .dtype = dtype,
                           .reduce_dtype = flags.reduce_dtype.empty() ? dtype : dtype_of_flag(flags.reduce_dtype),
                           .loss_scaling = flags.loss_scaling});
  const WarmupCosine schedule{flags.lr, flags.min_lr, flags.warmup, flags.steps};
  const std::optional<DeepSpeedSchedule> ds_schedule = deepspeed_schedule(flags);

  // --resume: the model states from the checkpoint (whatever world size and
  // stage wrote it), and where the run was.
  int64_t first_step = 0;
  int64_t applied_before_run = 0;  // optimizer steps applied before this process (DeepSpeed's schedules count them)
  std::string last_checkpoint;  // the newest this run resumed from or saved
  if (!flags.resume.empty()) {
    const std::string dir = find_checkpoint(flags.resume);
    last_checkpoint = dir;
    // The run's state first: a checkpoint of another model is an error that
    // names the flag, before any tensor is read.
    const TrainState state = restore_train_state(checkpoint_training_state(dir), cfg, tokenizer, dir);
    optimizer.load_checkpoint(dir);
    SG_CHECK(state.step < flags.steps, dir, " is at step ", state.step, ", and --steps is ", flags.steps,
             ": give more --steps to train further");
    first_step = state.step;
    applied_before_run = state.applied_steps;
    train_loader.set_windows_drawn(state.train_windows_drawn);
    if (lead) std::printf("train_gpt: resumed from %s at step %lld\n", dir.c_str(), (long long)first_step);
  }
  auto save_checkpoint = [&](int64_t steps_done) {
    const std::string dir = checkpoint_path(flags.save, steps_done);
    const TrainState state{steps_done, train_loader.windows_drawn(), applied_before_run + optimizer.applied_steps()};
    optimizer.save_checkpoint(dir, train_state_json(state, cfg, tokenizer, flags));
    last_checkpoint = dir;
    if (lead) {
      prune_checkpoints(flags.save, flags.keep);
      std::printf("%strain_gpt: saved %s\n", isatty(fileno(stdout)) ? "\n" : "", dir.c_str());
      std::fflush(stdout);
    }
  };
  install_stop_handlers();

  std::ofstream metrics;
  if (lead) {
    std::filesystem::create_directories(flags.out);
    tokenizer.save(flags.out + "/tokenizer.txt");
    if (!flags.metrics.empty()) {
      // A resumed run adds to the metrics of the run it continues.
      metrics.open(flags.metrics, first_step > 0 ? std::ios::app : std::ios::trunc);
      SG_CHECK(metrics.good(), "cannot write metrics to ", flags.metrics);
      metrics << std::setprecision(9);  // losses to the last bit of an f32
    }
    std::printf("train_gpt: %s, %zu tokens (%s tokenizer, vocab %lld); %lld layers, %lld heads, %lld channels, "
                "context %lld: %lld parameters\n",
                flags.data.c_str(), tokens.size(), tokenizer.name().c_str(), (long long)cfg.vocab_size,
                (long long)cfg.n_layer, (long long)cfg.n_head, (long long)cfg.n_embd, (long long)cfg.block_size,
                (long long)model.parameter_count());
    std::printf("train_gpt: %lld steps of %d rank(s) x %lld x %lld x %lld tokens, ZeRO stage %lld, %s, %d threads "
                "per rank%s\n",
                (long long)flags.steps, W, (long long)flags.grad_accum, (long long)flags.batch, (long long)flags.ctx,
                (long long)flags.zero, flags.dtype == "f32" ? "f32" : (flags.dtype + " with f32 masters").c_str(),
                omp_get_max_threads(), flags.checkpoint_activations ? ", blocks checkpointed" : "");
    if (flags.loss_chunk > 0) {
      std::printf("train_gpt: the LM head and loss %lld tokens at a time\n", (long long)flags.loss_chunk);
    }
    if (ds_schedule) {
      std::printf("train_gpt: learning rate: the config's %s, as DeepSpeed computes it (%s warmup over %lld steps; "
                  "optim/schedule.h)\n", flags.ds_schedule.c_str(), flags.ds_log_warmup ? "log" : "linear",
                  (long long)flags.warmup);
    }
    for (const std::string& note : flags.config_notes) {
      std::printf("train_gpt: %s: %s\n", flags.config.c_str(), note.c_str());
    }
    std::printf("train_gpt: memory per rank, predicted (zero_memory): %.1f MiB of model states", mib(states));
    if (activations) {
      std::printf("; activations %.1f MiB kept for backward, %.1f MiB at a step's peak", mib(activations->kept),
                  mib(activations->peak));
    }
    std::printf("\n");
    std::fflush(stdout);
  }

  const bool terminal = lead && isatty(fileno(stdout));
  const double tokens_per_step = double(W * flags.batch * flags.ctx * flags.grad_accum);
  const Clock::time_point start = Clock::now();
  double last_val = NAN;
  int64_t activation_peak = 0, total_peak = 0;  // this rank's, over the steps
  for (int64_t step = first_step; step < flags.steps; ++step) {
    const Clock::time_point step_start = Clock::now();
    reset_peak_memory(device);
    comm.reset_stats();
    double loss = 0.0;
    Tensor gpu_loss;  // on a GPU the micro-batch losses add up there: one read per step, after it is queued
    for (int64_t micro = 0; micro < flags.grad_accum; ++micro) {
      WindowLoader::Batch batch = train_loader.next();
      Variable micro_loss = model.loss(batch.x, batch.y);
      // Averaging over micro-batches: each backward adds 1/accum of its gradient.
      optimizer.backward(scale(micro_loss, 1.0 / double(flags.grad_accum)), micro + 1 == flags.grad_accum);
      if (device.is_cpu()) {
        loss += micro_loss.data().item() / double(flags.grad_accum);
      } else {
        Tensor l = micro_loss.data().to(DType::f32);
        gpu_loss = gpu_loss.defined() ? add(gpu_loss, l) : l;
      }
    }
    const GradNorm norm = optimizer.clip_grad_norm(flags.clip);  // on a GPU: read after the step is queued
    // DeepSpeed's iteration: -1 before its first applied step, then one more
    // each applied step (clipping has settled the last step's overflow).
    const double lr =
        ds_schedule ? ds_schedule->lr(applied_before_run + optimizer.applied_steps() - 1) : schedule.lr(step);
    optimizer.step(lr);
    optimizer.zero_grad();
    if (gpu_loss.defined()) loss = gpu_loss.item() / double(flags.grad_accum);
    // The mean over ranks is the loss of the global batch; a stop signal on
    // any rank stops every rank, after this same step.
    bool stop = g_signal != 0;
    if (W > 1) {
      Tensor shared = Tensor::from_vector<double>({loss, stop ? 1.0 : 0.0}, {2});
      comm.all_reduce(shared, ReduceOp::sum)->wait();
      loss = shared.at({0}) / W;
      stop = shared.at({1}) > 0;
    }
    const int64_t comm_bytes = comm.stats().total_bytes_sent();
    const double step_seconds = seconds_since(step_start);
    const double tokens_per_s = tokens_per_step / step_seconds;

    const bool last = step + 1 == flags.steps;
    const bool save_now =
        !flags.save.empty() && (last || stop || (flags.save_every > 0 && (step + 1) % flags.save_every == 0));
    // A loss or gradient that is not a number ends the run (the same on
    // every rank: both are global). The step has already applied it, so
    // every parameter is NaN now and no later step can recover; a checkpoint
    // of it would be worthless. fp16 skips such steps and lowers its scale
    // instead (its norm is inf on an overflow), so it is left to the scaler.
    // The norm is read only where a checkpoint is due: on a GPU that read
    // is one more wait, and a NaN norm shows in the next step's loss anyway.
    const bool diverged =
        flags.dtype != "fp16" && (!std::isfinite(loss) || (save_now && !std::isfinite(norm.value())));
    const bool evaluate_now = !diverged && (last || (flags.eval_every > 0 && (step + 1) % flags.eval_every == 0));
    double val = NAN;
    if (evaluate_now) last_val = val = evaluate(model, val_loader, flags.eval_batches, comm);
    const std::string peaks = metrics.is_open() || W > 1 ? peak_bytes_json(comm, device) : "";
    activation_peak = std::max(activation_peak, memory_stats(device)[MemoryCategory::activation].peak);
    total_peak = std::max(total_peak, memory_stats(device).total.peak);
    if (save_now && !diverged) save_checkpoint(step + 1);
    if (lead) {  // (the other ranks only train)
      if (metrics.is_open()) {
        metrics << "{\"step\": " << step + 1 << ", \"loss\": " << json_number(loss) << ", \"lr\": " << lr
                << ", \"grad_norm\": " << json_number(norm.value()) << ", \"tokens_per_s\": " << tokens_per_s;
        // fp16: the scale the step ran with after its update, and whether
        // the step was applied (an overflow skips it).
        if (const LossScaler* scaler = optimizer.loss_scaler()) {
          metrics << ", \"loss_scale\": " << scaler->scale() << ", \"applied_steps\": " << optimizer.applied_steps();
        }
        if (evaluate_now) metrics << ", \"val_loss\": " << json_number(val);
        metrics << ", \"comm_bytes_sent\": " << comm_bytes << ", \"peak_bytes\": " << peaks << "}\n";
        metrics.flush();
      }
      const double elapsed = seconds_since(start);
      const double eta = elapsed / double(step + 1 - first_step) * double(flags.steps - step - 1);
      if (terminal) {
        std::printf("\rstep %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | ETA %s   ", (long long)(step + 1),
                    (long long)flags.steps, loss, lr, tokens_per_s, format_duration(eta).c_str());
        if (evaluate_now) std::printf("\nstep %lld: val loss %.4f\n", (long long)(step + 1), val);
        std::fflush(stdout);
      } else if (evaluate_now || step == 0 || (step + 1) % flags.print_every == 0) {
        std::printf("step %lld/%lld | loss %.4f | lr %.2e | %.0f tok/s | elapsed %s | eta %s", (long long)(step + 1),
                    (long long)flags.steps, loss, lr, tokens_per_s, format_duration(elapsed).c_str(),
                    format_duration(eta).c_str());
        if (evaluate_now) std::printf(" | val loss %.4f", val);
        std::printf("\n");
        std::fflush(stdout);
      }
    }
    if (diverged) {
      if (terminal) std::printf("\n");  // the error below starts a line of its own
      // The first step's loss comes before any update of this run: then the
      // weights it started from are at fault, not the learning rate.
      SG_CHECK(step != first_step || std::isfinite(loss), "step ", step + 1, ": the loss is ", loss,
               ": the weights this run started from are not numbers (check --init-from or --resume)");
      SG_FAIL("step ", step + 1, ": the ", std::isfinite(loss) ? "gradient norm" : "loss", " is ",
              std::isfinite(loss) ? norm.value() : loss,
              ": the run diverged, and the parameters are no longer numbers. Lower --lr (", flags.lr,
              ") or lengthen --warmup (", flags.warmup, ")",
              last_checkpoint.empty() ? "" : " and --resume " + last_checkpoint + " to start again before it");
    }
    if (stop) {
      const int signal = g_signal != 0 ? int(g_signal) : SIGTERM;
      if (lead) {
        std::printf("\ntrain_gpt: stopped by %s after step %lld%s\n", signal == SIGINT ? "SIGINT" : "SIGTERM",
                    (long long)(step + 1),
                    flags.save.empty() ? " (nothing saved: no --save)" : "; continue with --resume and the same flags");
      }
      return 128 + signal;
    }
  }
  // fp16: how many steps overflowed. Asking settles the last step (on a GPU
  // the host reads its overflow only when asked), and raises the error if
  // that step's overflow took the scale below min_loss_scale.
  const LossScaler* scaler = optimizer.loss_scaler();
  if (lead) {
    std::printf("train_gpt: done in %s; final val loss %.4f", format_duration(seconds_since(start)).c_str(), last_val);
    if (scaler != nullptr) {
      std::printf("; fp16 applied %lld of %lld steps, loss scale %g", (long long)optimizer.applied_steps(),
                  (long long)(flags.steps - first_step), scaler->scale());
    }
    std::printf("\ntrain_gpt: memory%s: peak %.1f MiB, activations %.1f MiB", W > 1 ? " of rank 0" : "",
                mib(total_peak), mib(activation_peak));
    if (activations) std::printf(" (predicted %.1f and %.1f)", mib(states + activations->peak), mib(activations->peak));
    std::printf("\n");
  }
  if (!flags.export_path.empty()) {
    std::vector<std::pair<std::string, Tensor>> values = optimizer.full_parameters();  // a collective
    if (lead) {
      export_gpt(flags.export_path, values, cfg, tokenizer);
      std::printf("train_gpt: exported %s\n", flags.export_path.c_str());
    }
  }
  if (flags.sample > 0) {
    // Every rank samples (the same tokens): under ZeRO-3 each forward gathers
    // parameters, a collective all ranks must join. Rank 0 prints.
    SampleOptions options{flags.sample, flags.temperature, flags.top_k, uint64_t(flags.seed)};
    std::string sample = generate(model, tokenizer, "\n", options);
    if (lead) {
      std::printf("---- sample (temperature %.2f, top-k %lld) ----\n%s\n----\n", flags.temperature,
                  (long long)flags.top_k, sample.c_str());
    }
  }
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  try {
    sg::TrainFlags flags = sg::parse_train_flags(argc, argv);
    if (flags.help) return 0;
    return sg::run(flags);
  } catch (const sg::Error& error) {
    sg::abort_job_after_error("train_gpt", error.what());  // returns in a world of one
    std::fprintf(stderr, "train_gpt: %s\n", error.what());
    return 1;
  } catch (const std::exception& error) {
    const std::string message = std::string("unexpected error: ") + error.what();
    sg::abort_job_after_error("train_gpt", message.c_str());
    std::fprintf(stderr, "train_gpt: %s\n", message.c_str());
    return 1;
  }
}
