// Rewrites a .cu file into C++ that g++ compiles against the emulator
// (tools/cuda_emu/simt.h). Two constructs are CUDA syntax, not C++:
//
//   kernel<T><<<grid, block, shared, stream>>>(a, b);
//     -> ::sg_emu::launch("kernel<T>", ::sg_emu::config(grid, block, shared, stream),
//                         [&] { kernel<T>(a, b); });
//   extern __shared__ float scratch[];
//     -> float* scratch = static_cast<float*>(::sg_emu::dynamic_shared());
//
// and one is rewritten for fidelity: after each static shared array
//   __shared__ float tile[64][64];
//     -> __shared__ float tile[64][64]; ::sg_emu::shared_array(tile, sizeof(tile));
// which fills the array with 0xff bytes (NaN) when a block first reaches it,
// as a GPU's shared memory holds garbage, not the previous block's values.
// (Headers are not rewritten: column_sums.cuh's array is not refilled.)
//
// Each thread then calls the kernel as a plain function, so template
// arguments are deduced as nvcc deduces them. Everything else is copied as
// it is, newlines included, so compiler messages point at the .cu's lines
// (the output starts with a #line naming the .cu).
//
//   cuda_emu_translate input.cu output.cpp
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

// True where the text is code: not inside a comment, a string or a character literal.
std::vector<bool> code_mask(const std::string& text) {
  std::vector<bool> code(text.size(), true);
  size_t i = 0;
  while (i < text.size()) {
    size_t end = i;
    if (text.compare(i, 2, "//") == 0) {
      end = text.find('\n', i);
    } else if (text.compare(i, 2, "/*") == 0) {
      end = text.find("*/", i + 2);
      if (end != std::string::npos) end += 2;
    } else if (text[i] == '"' || text[i] == '\'') {
      const char quote = text[i];
      end = i + 1;
      while (end < text.size() && text[end] != quote) end += text[end] == '\\' ? 2 : 1;
      ++end;
    } else {
      ++i;
      continue;
    }
    if (end == std::string::npos || end > text.size()) end = text.size();
    for (size_t j = i; j < end; ++j) code[j] = false;
    i = end;
  }
  return code;
}

// The index just past the bracket matching text[open] (one of ( < ).
size_t skip_balanced(const std::string& text, size_t open, char opening, char closing) {
  int depth = 0;
  for (size_t i = open; i < text.size(); ++i) {
    if (text[i] == opening) ++depth;
    if (text[i] == closing && --depth == 0) return i + 1;
  }
  throw std::runtime_error("unbalanced " + std::string(1, opening) + " at offset " + std::to_string(open));
}

// The start of the kernel expression that ends just before `end`:
// a (qualified) name, then optional template arguments.
size_t kernel_start(const std::string& text, size_t end) {
  size_t i = end;
  while (i > 0 && std::isspace(static_cast<unsigned char>(text[i - 1]))) --i;
  if (i > 0 && text[i - 1] == '>') {
    int depth = 0;
    while (i > 0) {
      --i;
      if (text[i] == '>') ++depth;
      if (text[i] == '<' && --depth == 0) break;
    }
  }
  while (i > 0 && (std::isalnum(static_cast<unsigned char>(text[i - 1])) || text[i - 1] == '_' || text[i - 1] == ':')) --i;
  return i;
}

std::string trim(const std::string& s) {
  size_t first = s.find_first_not_of(" \t\n"), last = s.find_last_not_of(" \t\n");
  return first == std::string::npos ? "" : s.substr(first, last - first + 1);
}

std::string translate_launches(const std::string& text) {
  const std::vector<bool> code = code_mask(text);
  std::string out;
  size_t copied = 0;
  for (size_t at = text.find("<<<"); at != std::string::npos; at = text.find("<<<", at + 3)) {
    if (!code[at] || at < copied) continue;
    const size_t config_end = text.find(">>>", at);
    if (config_end == std::string::npos) throw std::runtime_error("<<< without >>>");
    size_t open = config_end + 3;
    while (open < text.size() && std::isspace(static_cast<unsigned char>(text[open]))) ++open;
    if (open >= text.size() || text[open] != '(') throw std::runtime_error(">>> not followed by (");
    const size_t args_end = skip_balanced(text, open, '(', ')');
    const size_t start = kernel_start(text, at);
    const std::string kernel = trim(text.substr(start, at - start));
    if (kernel.empty()) throw std::runtime_error("no kernel name before <<< at offset " + std::to_string(at));
    out += text.substr(copied, start - copied);
    out += "::sg_emu::launch(\"" + kernel + "\", ::sg_emu::config(" + text.substr(at + 3, config_end - at - 3) +
           "), [&] { " + kernel + text.substr(open, args_end - open) + "; })";
    copied = args_end;
  }
  return out + text.substr(copied);
}

std::string translate_dynamic_shared(std::string text) {
  const std::string marker = "extern __shared__";
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    const size_t semicolon = text.find(';', at);
    std::string declaration = trim(text.substr(at + marker.size(), semicolon - at - marker.size()));  // float scratch[]
    const size_t bracket = declaration.find('[');
    if (bracket == std::string::npos) throw std::runtime_error("extern __shared__ without []");
    std::string head = trim(declaration.substr(0, bracket));  // float scratch
    const size_t space = head.find_last_of(" \t*");
    const std::string type = trim(head.substr(0, space)), name = head.substr(space + 1);
    text.replace(at, semicolon - at, type + "* " + name + " = static_cast<" + type + "*>(::sg_emu::dynamic_shared())");
  }
  return text;
}

// The names an array declaration introduces: "float a[4], b[4]" -> a, b.
std::vector<std::string> declared_names(const std::string& declaration) {
  std::vector<std::string> names;
  int depth = 0;
  size_t piece_start = 0;
  for (size_t i = 0; i <= declaration.size(); ++i) {
    const char c = i < declaration.size() ? declaration[i] : ',';
    if (c == '[' || c == '(') ++depth;
    if (c == ']' || c == ')') --depth;
    if (c != ',' || depth != 0) continue;
    std::string piece = declaration.substr(piece_start, i - piece_start);
    piece = piece.substr(0, piece.find('['));
    size_t end = piece.find_last_not_of(" \t\n");
    size_t begin = end;
    while (begin > 0 && (std::isalnum(static_cast<unsigned char>(piece[begin - 1])) || piece[begin - 1] == '_')) --begin;
    if (end != std::string::npos) names.push_back(piece.substr(begin, end - begin + 1));
    piece_start = i + 1;
  }
  return names;
}

std::string translate_static_shared(const std::string& text) {
  const std::vector<bool> code = code_mask(text);
  const std::string marker = "__shared__";
  std::string out;
  size_t copied = 0;
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    if (!code[at]) continue;
    const size_t semicolon = text.find(';', at);
    if (semicolon == std::string::npos) throw std::runtime_error("__shared__ without ;");
    out += text.substr(copied, semicolon + 1 - copied);
    for (const std::string& name : declared_names(text.substr(at + marker.size(), semicolon - at - marker.size()))) {
      out += " ::sg_emu::shared_array(" + name + ", sizeof(" + name + "));";
    }
    copied = semicolon + 1;
  }
  return out + text.substr(copied);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: cuda_emu_translate input.cu output.cpp\n";
    return 2;
  }
  std::ifstream in(argv[1]);
  if (!in) {
    std::cerr << "cuda_emu_translate: cannot read " << argv[1] << "\n";
    return 1;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  try {
    const std::string text = translate_launches(translate_static_shared(translate_dynamic_shared(buffer.str())));
    const std::filesystem::path output(argv[2]);
    if (output.has_parent_path()) std::filesystem::create_directories(output.parent_path());
    std::ofstream out(output);
    out << "#line 1 \"" << argv[1] << "\"\n" << text;
    if (!out) throw std::runtime_error("cannot write the output");
  } catch (const std::exception& error) {
    std::cerr << "cuda_emu_translate: " << argv[1] << ": " << error.what() << "\n";
    return 1;
  }
  return 0;
}
