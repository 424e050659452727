// Communication accounting: per collective, how many calls, how many
// elements, and how many bytes this rank sent and received.
//
// Elements are the collective's payload: the gathered output of all_gather,
// the reduced input of reduce_scatter, the tensor of all_reduce and
// broadcast. Bytes are what a ring algorithm moves per rank, the figure
// nccl-tests' "busbw" is based on:
//   all_gather, reduce_scatter   (world - 1) / world * payload bytes, each way
//   all_reduce                   2 (world - 1) / world * payload bytes, each way
//   broadcast                    payload bytes received by every rank but the root; the root sends them
// ZeRO's volume formulas (2 Psi per step for stages 0-2, 3 Psi for stage 3)
// are statements about elements.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace sg {

enum class CollectiveOp : uint8_t { all_gather, reduce_scatter, all_reduce, broadcast, barrier };
constexpr int kCollectiveOpCount = 5;

constexpr std::string_view collective_name(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::all_gather: return "all_gather";
    case CollectiveOp::reduce_scatter: return "reduce_scatter";
    case CollectiveOp::all_reduce: return "all_reduce";
    case CollectiveOp::broadcast: return "broadcast";
    case CollectiveOp::barrier: return "barrier";
  }
  return "?";
}

struct OpStats {
  int64_t calls = 0;
  int64_t elements = 0;
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
};

struct CommStats {
  std::array<OpStats, kCollectiveOpCount> ops{};

  const OpStats& operator[](CollectiveOp op) const { return ops[static_cast<size_t>(op)]; }
  OpStats& operator[](CollectiveOp op) { return ops[static_cast<size_t>(op)]; }
  int64_t total_elements() const {
    int64_t total = 0;
    for (const OpStats& s : ops) total += s.elements;
    return total;
  }
  int64_t total_bytes_sent() const {
    int64_t total = 0;
    for (const OpStats& s : ops) total += s.bytes_sent;
    return total;
  }
};

}  // namespace sg
