// The census of device work (runtime.h): every kernel launch, GEMM, copy,
// fill and collective the host queues between cudaProfilerStart and
// cudaProfilerStop, counted by name. The host code is the GPU build's, so
// the counts are the launches one step makes on a GPU, whatever the model's
// width: bench/launch_census.sh prints them for a GPT step.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tools/cuda_emu/runtime.h"

namespace sg_emu {
namespace {

std::mutex g_mutex;
bool g_counting = false;
std::map<std::string, int64_t> g_counts;

}  // namespace

std::string short_name(const char* what) {
  std::string name(what);
  name = name.substr(0, name.find('<'));
  const size_t colon = name.rfind(':');
  return colon == std::string::npos ? name : name.substr(colon + 1);
}

void census_start() {
  std::lock_guard<std::mutex> lock(g_mutex);
  g_counting = true;
  g_counts.clear();
}

void census_count(const char* what) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (g_counting) ++g_counts[short_name(what)];
}

// Writes the counts to SG_EMU_CENSUS (when set), most frequent first.
void census_stop() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_counting) return;
  g_counting = false;
  const char* path = std::getenv("SG_EMU_CENSUS");
  if (path == nullptr) return;
  std::vector<std::pair<std::string, int64_t>> rows(g_counts.begin(), g_counts.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  int64_t total = 0;
  for (const auto& row : rows) total += row.second;
  FILE* out = std::fopen(path, "w");
  if (out == nullptr) {
    std::fprintf(stderr, "CUDA emulator: cannot write the census to %s\n", path);
    return;
  }
  for (const auto& [name, count] : rows) std::fprintf(out, "%8lld  %s\n", static_cast<long long>(count), name.c_str());
  std::fprintf(out, "%8lld  (all device work)\n", static_cast<long long>(total));
  std::fclose(out);
}

}  // namespace sg_emu
