// gpt_sample: text from a GPT-2-style model file.
//
//   build/bin/gpt_sample --model runs/gpt/model.safetensors --prompt "ROMEO:" --tokens 200
//                        [--temperature 0.8] [--top-k 40] [--seed 1337]
#include <cstdio>
#include <map>
#include <string>

#include "examples/cli.h"
#include "examples/gpt_file.h"
#include "examples/sampling.h"

namespace sg {
namespace {

int run(int argc, char** argv) {
  auto parsed = parse_args(argc, argv, {{"model", ""},          {"prompt", "\n"}, {"tokens", "200"},
                                             {"temperature", "0.8"}, {"top-k", "40"},  {"seed", "1337"}},
                           "gpt_sample --model FILE.safetensors [--prompt TEXT] [--tokens N] [--temperature 0.8] [--top-k 40] [--seed 1337]");
  if (!parsed) return 0;
  std::map<std::string, std::string>& args = *parsed;
  SG_CHECK(!args["model"].empty(), "gpt_sample needs --model (see --help)");
  GptFile file(args["model"]);
  Gpt model(file.config());
  file.load_into(model);
  SampleOptions options{std::stoll(args["tokens"]), std::stod(args["temperature"]), std::stoll(args["top-k"]),
                        std::stoull(args["seed"])};
  SG_CHECK(options.tokens >= 0 && options.temperature > 0 && options.top_k >= 0,
           "--tokens and --top-k must be >= 0 and --temperature > 0");
  std::printf("%s%s\n", args["prompt"].c_str(), generate(model, file.tokenizer(), args["prompt"], options).c_str());
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("gpt_sample", [&] { return sg::run(argc, argv); });
}
