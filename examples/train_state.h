// What train_gpt keeps in a checkpoint beside the model states (the index's
// "training" object): how far the run got, what it trained, and how.
//
//   {"step": 500, "train_windows_drawn": 8000,
//    "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 128, "vocab_size": 65},
//    "tokenizer": "char", "vocab": "\n !$&',-.3:;?ABC...", "seed": 1337,
//    "flags": {...every flag of the run, for the record...}}
//
// The learning rate needs no state of its own (the schedule is a function of
// the step, or for DeepSpeed's schedules of the applied steps, which are
// kept), nor does AdamW's bias correction (the optimizer keeps its step
// count in the index), nor the validation windows (always the same ones).
// fp16's loss scaler is the optimizer's state, and in the index too.
#pragma once

#include <cstdint>
#include <string>

#include "examples/text_data.h"
#include "examples/train_flags.h"
#include "nn/gpt.h"

namespace sg {

struct TrainState {
  int64_t step = 0;                 // optimizer steps done
  int64_t train_windows_drawn = 0;  // the training loader's counter
  int64_t applied_steps = 0;        // of those, applied (fp16 skips overflowed ones): DeepSpeed's schedules count these
};

std::string train_state_json(const TrainState& state, const GptConfig& cfg, const Tokenizer& tokenizer,
                             const TrainFlags& flags);

// Reads the state back, after checking that the checkpoint comes from the
// same model, tokenizer and seed as this run (an error names what differs
// and the flag that would match it). `origin` names the checkpoint.
TrainState restore_train_state(const std::string& json, const GptConfig& cfg, const Tokenizer& tokenizer,
                               const std::string& origin);

// Creates directory `path` if need be and checks that this process can write
// files in it, or throws an error naming `flag`: called before training, so
// a bad --save or --out costs seconds, not the run. `tag` keeps the probe
// file's name apart from other ranks' probes in the same directory.
void check_writable_directory(const std::string& flag, const std::string& path, const std::string& tag);

// The same for the directory a file will be written into (--export).
void check_writable_file_path(const std::string& flag, const std::string& path, const std::string& tag);

}  // namespace sg
