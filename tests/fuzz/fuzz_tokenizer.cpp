// libFuzzer target: tokenizer files made of fuzz bytes — a BPE tokenizer.json (read as byte-level
// and as SentencePiece-style BPE), a WordPiece tokenizer.json, a llama2.c tokenizer.bin — load or
// raise knprobe::Error, and what
// loads encodes and decodes the rest of the input to ids inside the vocabulary.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "fuzz_support.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "knprobe/tokenize/wordpiece.hpp"

namespace {

void exercise(const knprobe::Tokenizer& tok, const std::string& text) {
  try {
    const auto ids = tok.encode(text);
    for (const auto id : ids)
      if (id < 0 || id >= tok.vocab_size()) std::abort();
    (void)tok.decode(ids);
  } catch (const knprobe::Error&) {  // invalid UTF-8, unknown pieces: named errors
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = knprobe::fuzz::split(data, size, 4);
  try {
    exercise(knprobe::ByteBpe::from_tokenizer_json_text(parts[0], "bpe.json"), parts[3]);
  } catch (const knprobe::Error&) {
  }
  try {
    exercise(knprobe::SentencePieceBpe::from_tokenizer_json_value(
                 knprobe::io::parse_json(parts[0], "spm.json"), "spm.json"),
             parts[3]);
  } catch (const knprobe::Error&) {
  }
  try {
    exercise(knprobe::WordPiece::from_tokenizer_json_text(parts[1], "wordpiece.json"), parts[3]);
  } catch (const knprobe::Error&) {
  }
  try {
    const auto p = knprobe::fuzz::scratch() / "tok.bin";
    knprobe::fuzz::put(p, parts[2]);
    exercise(knprobe::Llama2cTokenizer(p, 16 + static_cast<int>(size % 64)), parts[3]);
  } catch (const knprobe::Error&) {
  }
  return 0;
}
