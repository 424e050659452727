// Streams and events for the emulator (tools/cuda_emu/runtime.h).
//
// A GPU runs each stream's work in order, but streams relative to each other
// only as events order them: cudaStreamWaitEvent(s, e) holds s until the
// work before e's latest cudaEventRecord has run. Code that forgets such a
// wait, or reuses a buffer another stream still reads, works whenever the
// GPU happens to run things in issue order, and fails at random otherwise.
//
// SG_EMU_STREAMS chooses the schedule:
//   eager (default)  each piece of work runs when it is queued: issue order,
//                    the most forgiving schedule;
//   lazy             each piece runs as late as the program allows: only
//                    when the host waits for it (cudaStreamSynchronize, an
//                    event query, cudaFree, a pinned-memory free) or when
//                    work the host waits for waits on it through an event.
// Under `lazy`, a kernel that reads what another stream writes without an
// event in between reads the old contents (NaN in new memory), and a host
// that reads a copy's destination without synchronizing reads it before the
// copy. scripts/test.sh runs the emulator's tests once each way.
#include <cuda_runtime_api.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "tools/cuda_emu/runtime.h"
#include "tools/cuda_emu/simt.h"

namespace {

struct Stream;

// One cudaEventRecord: done once the work queued before it has run, at
// `when` (the host's clock: cudaEventElapsedTime between two records is the
// host time the emulated work between them took).
struct Marker {
  Stream* stream = nullptr;
  bool done = false;
  int64_t waits_before = 0;  // the host's counted waits when it was recorded
  std::chrono::steady_clock::time_point when;
};

struct Event {
  std::shared_ptr<Marker> latest;  // the last record; none yet: waits and queries pass
};

struct Op {
  const char* what;                     // for errors: "kernel k", "cudaMemcpyAsync", ...
  std::function<void()> work;           // or, when empty, one of:
  std::shared_ptr<Marker> record;       //   mark this record done
  std::shared_ptr<Marker> wait;         //   wait for this record (of another stream)
};

// A wait names a record issued before it, so waits can never form a cycle:
// draining one stream only ever drains others up to earlier records.
struct Stream {
  std::deque<Op> queue;
};

// Held while queuing and while running queued work. Recursive: draining one
// stream drains the streams it waits on.
std::recursive_mutex& g_mutex = *new std::recursive_mutex;  // never destroyed, as the runtime outlives statics
std::vector<Stream*>& g_streams = *new std::vector<Stream*>;

// Memory that must not change while a collective may still read it.
struct Watched {
  const void* data;
  std::shared_ptr<const std::vector<char>> expected;
  const char* reader;
};
std::map<uint64_t, Watched>& g_watched = *new std::map<uint64_t, Watched>;
uint64_t g_next_watch = 0;

// After each piece of work: did it write memory a collective still reads?
void check_watched(const char* writer) {
  for (const auto& [id, watched] : g_watched) {
    SG_CHECK(std::memcmp(watched.data, watched.expected->data(), watched.expected->size()) == 0,
             "CUDA emulator: ", writer, " wrote the input of ", watched.reader, " while the collective could still "
             "read it: that work was not ordered after the collective's completion (a missing event wait), or the "
             "buffer was freed and reused before the collective was waited for");
  }
}

sg_emu::Counters g_counters;  // with g_mutex held
bool g_queued_since_wait = false;  // device work queued since the last counted host wait

int g_lazy = -1;  // -1: not yet read from SG_EMU_STREAMS (with g_mutex held)

bool read_lazy() {
  const char* setting = std::getenv("SG_EMU_STREAMS");
  const std::string mode = setting != nullptr ? setting : "eager";
  SG_CHECK(mode == "eager" || mode == "lazy", "SG_EMU_STREAMS must be eager or lazy, got '", mode, "'");
  return mode == "lazy";
}

void run(Op& op);

// Runs `stream`'s queue in order until `until` is done (or to the end).
void drain(Stream* stream, const Marker* until = nullptr) {
  while (!stream->queue.empty() && (until == nullptr || !until->done)) {
    Op op = std::move(stream->queue.front());
    stream->queue.pop_front();
    run(op);
  }
}

void run(Op& op) {
  if (op.work) {
    sg_emu::DeviceWork work(op.what);
    op.work();
    check_watched(op.what);
  } else if (op.record) {
    op.record->done = true;
    op.record->when = std::chrono::steady_clock::now();
  } else if (op.wait && !op.wait->done) {
    drain(op.wait->stream, op.wait.get());
  }
}

void enqueue(Stream* stream, Op op) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  if (op.work) g_queued_since_wait = true;
  if (stream == nullptr || !sg_emu::lazy_streams()) {
    run(op);  // the legacy default stream does not wait for our non-blocking streams: now is a valid time
    return;
  }
  stream->queue.push_back(std::move(op));
}

Stream* as_stream(cudaStream_t stream) { return reinterpret_cast<Stream*>(stream); }
Event* as_event(cudaEvent_t event) { return reinterpret_cast<Event*>(event); }

}  // namespace

bool sg_emu::lazy_streams() {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  if (g_lazy < 0) g_lazy = read_lazy() ? 1 : 0;
  return g_lazy == 1;
}

void sg_emu::set_lazy_streams(bool lazy) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  drain_all();  // what is queued runs under the schedule it was queued for
  g_lazy = lazy ? 1 : 0;
}

void sg_emu::enqueue(cudaStream_t stream, const char* what, std::function<void()> work) {
  census_count(what);
  ::enqueue(as_stream(stream), Op{what, std::move(work), nullptr, nullptr});
}

uint64_t sg_emu::watch(const void* data, std::shared_ptr<const std::vector<char>> expected, const char* reader) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  g_watched[++g_next_watch] = Watched{data, std::move(expected), reader};
  return g_next_watch;
}

void sg_emu::unwatch(uint64_t id) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  g_watched.erase(id);
}

sg_emu::Counters sg_emu::counters() {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  return g_counters;
}

void sg_emu::count_host_wait() {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  if (!g_queued_since_wait) return;  // nothing new to wait for: a second wait in a row costs nothing
  g_queued_since_wait = false;
  ++g_counters.host_waits;
}

void sg_emu::count_device_allocation() {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  ++g_counters.device_allocations;
}

void sg_emu::drain(cudaStream_t stream) {
  if (stream == nullptr) return;  // its work ran when it was queued
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  ::drain(as_stream(stream));
}

void sg_emu::drain_all() {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  for (Stream* stream : g_streams) ::drain(stream);
}

extern "C" {

cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned int) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  g_streams.push_back(new Stream);
  *stream = reinterpret_cast<cudaStream_t>(g_streams.back());
  return cudaSuccess;
}

// The GPU finishes a destroyed stream's work; here it runs now.
cudaError_t cudaStreamDestroy(cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  Stream* s = as_stream(stream);
  ::drain(s);
  std::erase(g_streams, s);
  delete s;
  return cudaSuccess;
}

cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
  sg_emu::count_host_wait();
  sg_emu::drain(stream);
  return cudaSuccess;
}

cudaError_t cudaStreamWaitEvent(cudaStream_t stream, cudaEvent_t event, unsigned int) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  const std::shared_ptr<Marker> marker = as_event(event)->latest;  // the record as of now, as CUDA specifies
  if (marker != nullptr) ::enqueue(as_stream(stream), Op{"cudaStreamWaitEvent", {}, nullptr, marker});
  return cudaSuccess;
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t* event, unsigned int) {
  *event = reinterpret_cast<cudaEvent_t>(new Event);
  return cudaSuccess;
}

// Waits already queued keep their record alive (shared_ptr), as CUDA defers
// an event's destruction until its work is done.
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  delete as_event(event);
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  auto marker = std::make_shared<Marker>();
  marker->stream = as_stream(stream);
  marker->waits_before = g_counters.host_waits;
  as_event(event)->latest = marker;
  ::enqueue(as_stream(stream), Op{"cudaEventRecord", {}, marker, nullptr});
  return cudaSuccess;
}

// Under `lazy` the host asking is what makes the work run: a query drains
// the event's stream up to the record, then reports it complete. (Always
// answering cudaErrorNotReady would be as valid, and would never end.)
cudaError_t cudaEventQuery(cudaEvent_t event) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  const std::shared_ptr<Marker> marker = as_event(event)->latest;
  if (marker != nullptr && !marker->done) ::drain(marker->stream, marker.get());
  return cudaSuccess;
}

// Waiting for an event that the host has already waited past costs
// nothing: a record from a step ago, read after that step's own wait (its
// loss) drained the queue, is free. (Done alone is not enough: eager
// streams finish every record at once, where a GPU would still be busy.)
cudaError_t cudaEventSynchronize(cudaEvent_t event) {
  {
    std::lock_guard<std::recursive_mutex> lock(g_mutex);
    const std::shared_ptr<Marker> marker = as_event(event)->latest;
    if (marker == nullptr || (marker->done && marker->waits_before < g_counters.host_waits)) return cudaSuccess;
  }
  sg_emu::count_host_wait();
  return cudaEventQuery(event);
}

// Milliseconds between two completed records; cudaErrorNotReady before
// both are done, cudaErrorInvalidResourceHandle for an event never recorded,
// as CUDA answers.
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  std::lock_guard<std::recursive_mutex> lock(g_mutex);
  const std::shared_ptr<Marker> from = as_event(start)->latest, to = as_event(end)->latest;
  if (from == nullptr || to == nullptr) return cudaErrorInvalidResourceHandle;
  if (!from->done || !to->done) return cudaErrorNotReady;
  *ms = std::chrono::duration<float, std::milli>(to->when - from->when).count();
  return cudaSuccess;
}

}  // extern "C"
