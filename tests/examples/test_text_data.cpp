// Tokenizers and the window loader.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "examples/text_data.h"

namespace sg {
namespace {

TEST(Tokenizer, CharacterVocabularyIsTheSortedDistinctCharacters) {
  Tokenizer t = Tokenizer::characters_of("hello world");
  EXPECT_EQ(t.vocabulary(), " dehlorw");
  EXPECT_EQ(t.vocab_size(), 8);
  std::vector<int32_t> ids = t.encode("hold");
  EXPECT_EQ(ids, (std::vector<int32_t>{3, 5, 4, 1}));
  EXPECT_EQ(t.decode(ids), "hold");
  EXPECT_THROW(t.encode("hex"), Error);
  EXPECT_THROW(t.decode({8}), Error);
}

TEST(Tokenizer, BytesCoverEverything) {
  Tokenizer t = Tokenizer::bytes();
  std::string text = "caf\xc3\xa9\n";
  EXPECT_EQ(t.vocab_size(), 256);
  EXPECT_EQ(t.decode(t.encode(text)), text);
  EXPECT_THROW(Tokenizer::from_name("bpe", text), Error);
}

TEST(Tokenizer, SavesAndLoads) {
  std::string path = ::testing::TempDir() + "/tokenizer.txt";
  Tokenizer t = Tokenizer::characters_of("ba\nc");
  t.save(path);
  Tokenizer back = Tokenizer::load(path);
  EXPECT_EQ(back.vocabulary(), t.vocabulary());
  EXPECT_EQ(back.name(), "char");
  std::ofstream(path) << "char\n9\nab";  // truncated
  EXPECT_THROW(Tokenizer::load(path), Error);
  std::remove(path.c_str());
}

TEST(WindowLoader, TargetsAreInputsShiftedByOne) {
  std::vector<int32_t> tokens(100);
  for (int i = 0; i < 100; ++i) tokens[size_t(i)] = i;
  WindowLoader loader(tokens, 3, 5, 42);
  WindowLoader::Batch batch = loader.next();
  EXPECT_EQ(batch.x.shape(), (Shape{3, 5}));
  std::vector<int32_t> x = batch.x.to_vector<int32_t>(), y = batch.y.to_vector<int32_t>();
  for (int b = 0; b < 3; ++b) {
    for (int t = 0; t < 5; ++t) EXPECT_EQ(y[size_t(b * 5 + t)], x[size_t(b * 5 + t)] + 1);
    EXPECT_LE(x[size_t(b * 5 + 4)] + 1, 99);
  }
}

// Two ranks with batch 2 see the rows of one rank with batch 4: the windows
// do not depend on the world size.
TEST(WindowLoader, RanksSplitOneGlobalBatch) {
  std::vector<int32_t> tokens(1000);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  WindowLoader whole(tokens, 4, 8, 3), first(tokens, 2, 8, 3, 0, 2), second(tokens, 2, 8, 3, 1, 2);
  for (int step = 0; step < 3; ++step) {
    std::vector<int32_t> all = whole.next().x.to_vector<int32_t>();
    std::vector<int32_t> split = first.next().x.to_vector<int32_t>(), rest = second.next().x.to_vector<int32_t>();
    split.insert(split.end(), rest.begin(), rest.end());
    EXPECT_EQ(split, all) << "step " << step;
  }
  EXPECT_EQ(first.windows_drawn(), whole.windows_drawn());
  EXPECT_THROW(WindowLoader(tokens, 2, 8, 3, 2, 2), Error);
}

TEST(WindowLoader, IsReproducibleFromItsCounter) {
  std::vector<int32_t> tokens(1000, 0);
  for (int i = 0; i < 1000; ++i) tokens[size_t(i)] = i;
  WindowLoader a(tokens, 4, 8, 1), b(tokens, 4, 8, 1);
  a.next();
  std::vector<int32_t> second = a.next().x.to_vector<int32_t>();
  b.set_windows_drawn(4);
  EXPECT_EQ(b.next().x.to_vector<int32_t>(), second);
  EXPECT_NE(WindowLoader(tokens, 4, 8, 2).next().x.to_vector<int32_t>(), WindowLoader(tokens, 4, 8, 1).next().x.to_vector<int32_t>());
  EXPECT_THROW(WindowLoader(std::vector<int32_t>(5, 0), 1, 5, 0), Error);
}

TEST(ReadTextFile, MissingFileIsAClearError) {
  EXPECT_THROW(read_text_file("/nonexistent/shakespeare.txt", "data"), Error);
  try {
    read_text_file("/", "text");
    ADD_FAILURE() << "a directory was read as a text file";
  } catch (const Error& error) {
    EXPECT_NE(std::string(error.what()).find("--text / is a directory"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace sg
