// gpt_sample: text from a GPT-2-style model file.
//
//   build/bin/gpt_sample --model runs/gpt/model.safetensors --prompt "ROMEO:" --tokens 200
//                        [--temperature 0.8] [--top-k 40] [--seed 1337]
#include <cstdio>
#include <map>
#include <string>

#include "examples/gpt_file.h"
#include "examples/sampling.h"

namespace sg {
namespace {

int run(int argc, char** argv) {
  std::map<std::string, std::string> args = {{"model", ""},          {"prompt", "\n"}, {"tokens", "200"},
                                             {"temperature", "0.8"}, {"top-k", "40"},  {"seed", "1337"}};
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::printf("usage: gpt_sample --model FILE.safetensors [--prompt TEXT] [--tokens N] [--temperature 0.8] "
                  "[--top-k 40] [--seed 1337]\n");
      return 0;
    }
    SG_CHECK(flag.rfind("--", 0) == 0 && args.count(flag.substr(2)) && i + 1 < argc, "unexpected argument '", flag,
             "' (see --help)");
    args[flag.substr(2)] = argv[++i];
  }
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
  try {
    return sg::run(argc, argv);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "gpt_sample: %s\n", error.what());
    return 1;
  }
}
