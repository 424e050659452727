// libFuzzer target for the parsers that read untrusted bytes: a safetensors
// file image (tensor/safetensors_format.cpp) and a checkpoint index
// (optim/checkpoint_index.cpp). The first byte picks the parser. Any input
// may be rejected with sg::Error; anything else (a crash, a sanitizer report,
// another exception, a leak) is a bug the fuzzer reports.
//
//   scripts/fuzz.sh [seconds]     (clang with libFuzzer, ASan and UBSan)
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "optim/checkpoint_index.h"
#include "tensor/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t parser = data[0] % 2;
  ++data, --size;
  try {
    if (parser == 0) {
      sg::SafetensorsHeader header = sg::parse_safetensors(data, size, "fuzz");
      for (const auto& [name, e] : header.tensors) {
        if (e.end > int64_t(size) - header.data_start) __builtin_trap();  // accepted a range outside the data
      }
    } else {
      sg::CheckpointIndex index = sg::parse_checkpoint_index(
          std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
      (void)index.to_json();
    }
  } catch (const sg::Error&) {
  }
  return 0;
}
