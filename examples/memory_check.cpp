#include "examples/memory_check.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/error.h"

namespace sg {
namespace {

std::string mib_text(int64_t bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", double(bytes) / double(1 << 20));
  return text;
}

}  // namespace

int ranks_on_device(Device device, int local_ranks, int gpus) {
  SG_CHECK(local_ranks >= 1, "ranks_on_device: a node runs at least one rank, got ", local_ranks);
  if (device.is_cpu()) return local_ranks;
  SG_CHECK(gpus >= 1 && device.index < gpus, "ranks_on_device: ", device.str(), " is not one of this node's ", gpus,
           " GPU(s)");
  // Local ranks device.index, device.index + gpus, ... use it.
  return device.index < local_ranks ? (local_ranks - 1 - device.index) / gpus + 1 : 0;
}

void check_run_fits(const RankMemoryNeed& need, const TrainFlags& flags, Device device, const DeviceMemory& memory,
                    int64_t held, int sharing) {
  if (memory.total_bytes <= 0) return;  // nothing known to check against
  const int64_t per_rank = need.states + need.activation_peak;
  const int64_t needed = per_rank * sharing;
  // What is free, with what those ranks hold already; never more than there is.
  const int64_t available = std::min(memory.free_bytes + held * sharing, memory.total_bytes);
  if (needed <= available) return;
  const std::string where = device.is_cpu() ? "this node's memory" : device.str();
  // ", N MiB for the k ranks sharing <where>" when several do.
  auto for_all_ranks = [&](int64_t each) {
    return sharing > 1 ? ", " + mib_text(each * sharing) + " for the " + std::to_string(sharing) + " ranks sharing " +
                             where
                       : std::string();
  };
  // The model alone does not fit: no micro-batch would.
  SG_CHECK(need.states * sharing <= available, "the model's states (parameters, gradients, optimizer states) need ",
           "about ", mib_text(need.states), " on each rank at ZeRO stage ", flags.zero, for_all_ranks(need.states), ", more than the ",
           mib_text(available), " ", where, " can give (", mib_text(memory.total_bytes), " in all), before any ",
           "activations: ", flags.zero < 3 ? "--zero 3 spreads all of them over the ranks; " : "",
           "more ranks, each on its own ", device.is_cpu() ? "node" : "GPU", ", hold less each; or train a smaller ",
           "model (--layers, --embd)");
  // What would make it fit, leaving out what the run does already.
  std::vector<std::string> changes = {"a smaller --batch (a larger --grad-accum keeps the global batch)"};
  if (flags.checkpoint_activations == 0) changes.push_back("--checkpoint-activations 1");
  if (flags.loss_chunk == 0) changes.push_back("--loss-chunk 4096");
  if (flags.zero < 3) changes.push_back("a higher --zero stage");
  if (sharing > 1) changes.push_back("fewer ranks on this node");
  if (device.is_cuda()) changes.push_back("a GPU with more memory");
  std::string advice = changes.front();
  for (size_t i = 1; i < changes.size(); ++i) advice += (i + 1 < changes.size() ? ", " : ", or ") + changes[i];
  SG_FAIL("a micro-batch of ", flags.batch, " x ", flags.ctx, " tokens needs about ", mib_text(per_rank),
          " on each rank (", mib_text(need.states), " of model states, ", mib_text(need.activation_peak),
          " of activations at a step's peak)", for_all_ranks(per_rank), ", more than the ", mib_text(available), " ", where, " can give (", mib_text(memory.total_bytes),
          " in all): use ", advice);
}

}  // namespace sg
