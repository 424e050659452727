// gpt_sample: text from a GPT-2-style model file.
//
//   build/bin/gpt_sample --model runs/gpt/model.safetensors --prompt "ROMEO:" --tokens 200
//                        [--temperature 0.8] [--top-k 40] [--seed 1337]
#include <cmath>
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
  const int64_t seed = int_arg(args, "seed");
  SG_CHECK(seed >= 0, "--seed must be >= 0, got ", seed);
  SampleOptions options{int_arg(args, "tokens"), number_arg(args, "temperature"), int_arg(args, "top-k"),
                        uint64_t(seed)};
  SG_CHECK(options.tokens >= 0, "--tokens must be >= 0, got ", options.tokens);
  SG_CHECK(options.temperature > 0 && std::isfinite(options.temperature),
           "--temperature must be a finite number above 0, got ", options.temperature);
  SG_CHECK(options.top_k >= 0, "--top-k must be >= 0 (0: all tokens), got ", options.top_k);
  GptFile file(args["model"]);
  Gpt model(file.config());
  file.load_into(model);
  std::printf("%s%s\n", args["prompt"].c_str(), generate(model, file.tokenizer(), args["prompt"], options).c_str());
  return 0;
}

}  // namespace
}  // namespace sg

int main(int argc, char** argv) {
  return sg::run_main("gpt_sample", [&] { return sg::run(argc, argv); });
}
