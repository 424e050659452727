// gpt_eval: a GPT-2-style model file's cross-entropy on a text, in nats per
// token (examples/evaluation.h says which windows).
//
//   build/bin/gpt_eval --model runs/gpt/model.safetensors --text data/tinyshakespeare.txt [--ctx T] [--tokenizer char|byte]
//
// The last line is "loss=<nats per token> tokens=<count>".
#include <cstdio>
#include <map>
#include <string>

#include "examples/evaluation.h"
#include "examples/cli.h"
#include "examples/gpt_file.h"

namespace sg {
namespace {

int run(int argc, char** argv) {
  auto parsed = parse_args(argc, argv, {{"model", ""}, {"text", ""}, {"ctx", "0"}, {"tokenizer", ""}},
                           "gpt_eval --model FILE.safetensors --text FILE [--ctx T] [--tokenizer char|byte]");
  if (!parsed) return 0;
  std::map<std::string, std::string>& args = *parsed;
  SG_CHECK(!args["model"].empty() && !args["text"].empty(), "gpt_eval needs --model and --text (see --help)");
  GptFile file(args["model"]);
  const std::string tokenizer = args["tokenizer"].empty() ? file.tokenizer().name() : args["tokenizer"];
  SG_CHECK(tokenizer == file.tokenizer().name(), "--tokenizer ", tokenizer, ": ", args["model"], " was trained with the ",
           file.tokenizer().name(), " tokenizer");
  int64_t T = int_arg(args, "ctx");
  if (T == 0) T = file.config().block_size;
  SG_CHECK(T > 0 && T <= file.config().block_size, "--ctx ", T, " must be in [1, ", file.config().block_size,
           "] (the model's n_positions)");
  Gpt model(file.config());
  file.load_into(model);
  std::vector<int32_t> tokens = file.tokenizer().encode(read_text_file(args["text"], "text"));
  std::printf("gpt_eval: %s (%lld layers, %lld channels) on %s: %zu tokens, windows of %lld\n", args["model"].c_str(),
              (long long)file.config().n_layer, (long long)file.config().n_embd, args["text"].c_str(), tokens.size(),
              (long long)T);
  TextLoss loss = evaluate_text(model, tokens, T);
  std::printf("loss=%.6f tokens=%lld\n", loss.nats_per_token, (long long)loss.tokens);
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("gpt_eval", [&] { return sg::run(argc, argv); });
}
