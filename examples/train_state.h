// What train_gpt keeps in a checkpoint beside the model states (the index's
// "training" object): how far the run got, what it trained, and how.
//
//   {"step": 500, "train_windows_drawn": 8000,
//    "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "n_positions": 128, "vocab_size": 65},
//    "tokenizer": "char", "vocab": "\n !$&',-.3:;?ABC...", "seed": 1337,
//    "flags": {...every flag of the run, for the record...}}
//
// The learning rate needs no state of its own (the schedule is a function of
// the step), nor does AdamW's bias correction (the optimizer keeps its step
// count in the index), nor the validation windows (always the same ones).
// There is no loss scaler yet: shardgrad trains in f32.
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
};

std::string train_state_json(const TrainState& state, const GptConfig& cfg, const Tokenizer& tokenizer,
                             const TrainFlags& flags);

// Reads the state back, after checking that the checkpoint comes from the
// same model, tokenizer and seed as this run (an error names what differs
// and the flag that would match it). `origin` names the checkpoint.
TrainState restore_train_state(const std::string& json, const GptConfig& cfg, const Tokenizer& tokenizer,
                               const std::string& origin);

}  // namespace sg
