// Rewrites a .cu file into C++ that g++ compiles against the emulator
// (tools/cuda_emu/simt.h). Two constructs are CUDA syntax, not C++:
//
//   kernel<T><<<grid, block, shared, stream>>>(a, b);
//     -> ::sg_emu::launch("kernel<T>", ::sg_emu::config(grid, block, shared, stream),
//                         [](auto... sg_emu_args) { return [=] { kernel<T>(sg_emu_args...); }; }(a, b));
//   (the arguments are evaluated and copied at the launch, as CUDA does; the
//   kernel may run later, when its stream gets to it)
//   extern __shared__ float scratch[];
//     -> float* scratch = static_cast<float*>(::sg_emu::dynamic_shared());
//
// One runtime call names a kernel, which the emulator knows by its
// launches' text, not by an address:
//   cudaFuncSetAttribute(kernel<T>, attribute, value)
//     -> ::sg_emu::set_function_attribute("kernel<T>", attribute, value)
//
// and one is rewritten for fidelity: each static shared array
//   __shared__ float tile[64][64];
//     -> static ::sg_emu::SharedArray<float[64][64]> tile_shared_;
//        float (&tile)[64][64] = tile_shared_.get();
// (a leading alignas(N) becomes SharedArray's second argument)
// lives in memory of its own that ends at an unmapped page (an index past
// its end faults) and is filled with NaN when a block first reaches it, as a
// GPU's shared memory holds garbage, not the previous block's values.
//
// The kernels' own headers (#include "....cuh") are inlined, once each, with
// #line directives, so their kernels and arrays are rewritten too.
//
// Each thread then calls the kernel as a plain function, so template
// arguments are deduced as nvcc deduces them. Everything else is copied as
// it is, newlines included, so compiler messages point at the .cu's lines
// (the output starts with a #line naming the .cu).
//
//   cuda_emu_translate input.cu output.cpp project_root
#include <cctype>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>
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
           "), [](auto... sg_emu_args) { return [=] { " + kernel + "(sg_emu_args...); }; }" +
           text.substr(open, args_end - open) + ")";
    copied = args_end;
  }
  return out + text.substr(copied);
}

std::string translate_function_attributes(const std::string& text) {
  const std::vector<bool> code = code_mask(text);
  const std::string call = "cudaFuncSetAttribute(";
  std::string out;
  size_t copied = 0;
  for (size_t at = text.find(call); at != std::string::npos; at = text.find(call, at + call.size())) {
    if (!code[at]) continue;
    // The first argument: up to the comma outside every bracket.
    size_t end = at + call.size();
    int depth = 0;
    for (; end < text.size() && !(depth == 0 && text[end] == ','); ++end) {
      if (text[end] == '<' || text[end] == '(' || text[end] == '[') ++depth;
      if (text[end] == '>' || text[end] == ')' || text[end] == ']') --depth;
    }
    if (end >= text.size()) throw std::runtime_error("cudaFuncSetAttribute without its arguments");
    const std::string kernel = trim(text.substr(at + call.size(), end - at - call.size()));
    out += text.substr(copied, at - copied) + "::sg_emu::set_function_attribute(\"" + kernel + "\"";
    copied = end;  // the comma and the other arguments are copied as they are
  }
  return out + text.substr(copied);
}

std::string translate_dynamic_shared(std::string text) {
  const std::string marker = "extern __shared__";
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    const size_t semicolon = text.find(';', at);
    std::string declaration = trim(text.substr(at + marker.size(), semicolon - at - marker.size()));  // float scratch[]
    if (declaration.rfind("__align__(", 0) == 0) declaration = trim(declaration.substr(declaration.find(')') + 1));
    const size_t bracket = declaration.find('[');
    if (bracket == std::string::npos) throw std::runtime_error("extern __shared__ without []");
    std::string head = trim(declaration.substr(0, bracket));  // float scratch
    const size_t space = head.find_last_of(" \t*");
    const std::string type = trim(head.substr(0, space)), name = head.substr(space + 1);
    text.replace(at, semicolon - at, type + "* " + name + " = static_cast<" + type + "*>(::sg_emu::dynamic_shared())");
  }
  return text;
}

// One declarator of a shared array declaration: "tile[64][64]" -> name
// "tile", dims "[64][64]".
struct Declarator {
  std::string name, dims;
};

// "float a[4], b[4]" -> type "float", declarators a[4] and b[4].
std::pair<std::string, std::vector<Declarator>> parse_declaration(const std::string& declaration) {
  std::vector<std::string> pieces;
  int depth = 0;
  size_t piece_start = 0;
  for (size_t i = 0; i <= declaration.size(); ++i) {
    const char c = i < declaration.size() ? declaration[i] : ',';
    if (c == '[' || c == '(' || c == '<') ++depth;
    if (c == ']' || c == ')' || c == '>') --depth;
    if (c != ',' || depth != 0) continue;
    pieces.push_back(declaration.substr(piece_start, i - piece_start));
    piece_start = i + 1;
  }
  std::string type;
  std::vector<Declarator> declarators;
  for (size_t p = 0; p < pieces.size(); ++p) {
    const std::string& piece = pieces[p];
    const size_t bracket = piece.find('[');
    if (bracket == std::string::npos) throw std::runtime_error("a __shared__ variable that is not an array: " + piece);
    size_t end = piece.find_last_not_of(" \t\n", bracket - 1);
    size_t begin = end;
    while (begin > 0 && (std::isalnum(static_cast<unsigned char>(piece[begin - 1])) || piece[begin - 1] == '_')) --begin;
    if (p == 0) type = trim(piece.substr(0, begin));
    declarators.push_back(Declarator{piece.substr(begin, end - begin + 1), trim(piece.substr(bracket))});
  }
  return {type, declarators};
}

// __shared__ T name[d0][d1];  ->  static ::sg_emu::SharedArray<T[d0][d1]> name_shared_;
//                                 T (&name)[d0][d1] = name_shared_.get();
// on the same line, for each declarator.
std::string translate_static_shared(const std::string& text) {
  const std::vector<bool> code = code_mask(text);
  const std::string marker = "__shared__";
  std::string out;
  size_t copied = 0;
  for (size_t at = text.find(marker); at != std::string::npos; at = text.find(marker, at + 1)) {
    if (!code[at]) continue;
    const size_t semicolon = text.find(';', at);
    if (semicolon == std::string::npos) throw std::runtime_error("__shared__ without ;");
    out += text.substr(copied, at - copied);
    auto [type, declarators] = parse_declaration(text.substr(at + marker.size(), semicolon - at - marker.size()));
    std::string alignment;  // "alignas(32) float" -> ", 32" and "float"
    if (type.rfind("alignas(", 0) == 0) {
      const size_t close = type.find(')');
      alignment = ", " + type.substr(8, close - 8);
      type = trim(type.substr(close + 1));
    }
    for (size_t i = 0; i < declarators.size(); ++i) {
      const Declarator& d = declarators[i];
      out += (i ? " " : "") + std::string("static ::sg_emu::SharedArray<") + type + d.dims + alignment + "> " +
             d.name + "_shared_; " + type + " (&" + d.name + ")" + d.dims + " = " + d.name + "_shared_.get();";
    }
    copied = semicolon + 1;
  }
  return out + text.substr(copied);
}

// Inlines each #include "….cuh" (the kernels' own headers) once, with #line
// directives, so the rewrites above reach the headers' kernels and arrays too.
std::string inline_headers(const std::string& path, const std::string& root, std::set<std::string>& included) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::string out, line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    const size_t quote = line.find('"');
    const bool include = trim(line).rfind("#include \"", 0) == 0 && line.find(".cuh\"") != std::string::npos;
    if (trim(line) == "#pragma once") {
      out += "\n";
    } else if (include) {
      const std::string header = root + "/" + line.substr(quote + 1, line.find('"', quote + 1) - quote - 1);
      if (included.insert(header).second) {
        out += "#line 1 \"" + header + "\"\n" + inline_headers(header, root, included);
      }
      out += "#line " + std::to_string(number + 1) + " \"" + path + "\"\n";
    } else {
      out += line + "\n";
    }
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: cuda_emu_translate input.cu output.cpp project_root\n";
    return 2;
  }
  try {
    std::set<std::string> included;
    const std::string source = inline_headers(argv[1], argv[3], included);
    const std::string text =
        translate_launches(translate_function_attributes(translate_static_shared(translate_dynamic_shared(source))));
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
