// libFuzzer target: any bytes either parse as GGUF (metadata decoded, every array read through
// the typed accessors, tensors dequantized and multiplied in place, the Llama-family metadata and
// tensor-type checks, the whole Llama-family loader — llama, gemma3, qwen2, qwen3, rope_freqs — for
// small files, the SentencePiece or byte-level BPE tokenizer read and used) or raise
// knprobe::Error.
#include <cstddef>
#include <cstdint>

#include "knprobe/io/gguf.hpp"
#include "knprobe/model/blocks/quantized_linear.hpp"
#include "knprobe/model/llama_weights.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    knprobe::io::GgufFile f(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    for (const auto& [key, value] : f.metadata()) {
      if (value.type != knprobe::io::GgufType::array) continue;
      try {
        (void)f.string_array(key);
      } catch (const knprobe::Error&) {
      }
      try {
        (void)f.float_array(key);
        (void)f.int_array(key);
      } catch (const knprobe::Error&) {
      }
    }
    for (const auto& t : f.tensors())
      if (t.numel() < (1 << 16) && knprobe::io::ggml_type_info(t.type).supported) {
        (void)f.dequantize(t.name);
        if (t.ne.size() == 2) {
          const knprobe::QuantizedMatrix q(t.type, static_cast<knprobe::Index>(t.ne[1]),
                                           static_cast<knprobe::Index>(t.ne[0]), t.data, nullptr);
          knprobe::MatrixF y;
          q.multiply_transposed(knprobe::MatrixF::Ones(1, q.cols()), y);
        }
      }
  } catch (const knprobe::Error&) {
  }
  try {  // the model-level checks of the metadata and tensor types, and the tokenizer reader
    knprobe::io::GgufFile f(
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(data), size), "fuzz");
    try {
      (void)knprobe::detail::gguf_llama_spec(f);
      knprobe::detail::gguf_check_tensor_types(f);
    } catch (const knprobe::Error&) {
    }
    if (size < (1 << 20)) try {  // whole weights of small files (biases, norms, frequency factors)
        (void)knprobe::load_llama_gguf(f);
      } catch (const knprobe::Error&) {
      }
    if (f.has("tokenizer.ggml.model") && f.get_string("tokenizer.ggml.model") == "gpt2") {
      const auto tok = knprobe::ByteBpe::from_gguf(f);
      (void)tok.decode(tok.encode("The capital of France is 1234 東京 🙂 it's"), false);
    } else {
      const auto tok = knprobe::SentencePieceBpe::from_gguf(f);
      (void)tok.decode(tok.encode("The capital of France is"));
    }
  } catch (const knprobe::Error&) {
  }
  return 0;
}
