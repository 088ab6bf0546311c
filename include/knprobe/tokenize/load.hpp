#pragma once
// The tokenizer a Hugging Face tokenizer.json describes, whichever reader it needs.

#include <filesystem>
#include <memory>
#include <string>

#include "knprobe/io/files.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "knprobe/tokenize/tokenizer_json.hpp"

namespace knprobe {

/// Reads `file` (a tokenizer.json, or a directory holding one): byte-level BPE (GPT-2, Llama 3,
/// Qwen, SmolLM) or SentencePiece-style BPE (Llama 2, Mistral 7B, Gemma), as
/// detail::hf::is_byte_level decides. TokenizerError / FormatError naming the file otherwise.
inline std::unique_ptr<Tokenizer> load_tokenizer_json(std::filesystem::path file) {
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  const std::string name = file.string();
  const auto j =
      io::parse_json(io::read_file(file, "tokenizer.json", std::uintmax_t(1) << 29), name);
  if (detail::hf::is_byte_level(j))
    return std::make_unique<ByteBpe>(ByteBpe::from_tokenizer_json_value(j, name));
  return std::make_unique<SentencePieceBpe>(SentencePieceBpe::from_tokenizer_json_value(j, name));
}

}  // namespace knprobe
