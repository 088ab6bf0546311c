#pragma once
// The byte-level BPE pre-tokenisation rules and the names of their fixtures under
// tests/data/tokenizers/bpe_rules (tools/make_bpe_fixtures.py).

#include <utility>

#include "knprobe/tokenize/pre_tokenize.hpp"

namespace knprobe::testing {

inline constexpr std::pair<const char*, PreTokenizer> k_bpe_rules[] = {
    {"gpt2", PreTokenizer::gpt2},
    {"llama3", PreTokenizer::llama3},
    {"qwen2", PreTokenizer::qwen2},
    {"smollm", PreTokenizer::smollm}};

}  // namespace knprobe::testing
