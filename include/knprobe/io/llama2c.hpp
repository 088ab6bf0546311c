#pragma once
// llama2.c legacy checkpoints (karpathy/llama2.c run.c): a 7 × int32 header
// {dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len} followed by float32
// arrays. vocab_size > 0 means the classifier shares the token embedding; < 0 means a separate
// wcls follows the (legacy, unused) RoPE frequency tables, with |vocab_size| tokens.

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <vector>

#include "knprobe/core/finite.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/io/byte_reader.hpp"
#include "knprobe/io/mapped_file.hpp"

namespace knprobe::io {

struct Llama2cConfig {
  int dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0,
      seq_len = 0;
  bool shared_classifier = true;
  int head_size() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_size(); }
};

/// The weights of a llama2.c checkpoint, [out × in] row-major per layer.
struct Llama2cWeights {
  Llama2cConfig config;
  MatrixF token_embedding;                          ///< [vocab × dim]
  std::vector<VectorF> rms_att, rms_ffn;            ///< [dim] per layer
  std::vector<MatrixF> wq, wk, wv, wo, w1, w2, w3;  ///< per layer
  VectorF rms_final;                                ///< [dim]
  MatrixF wcls;                                     ///< [vocab × dim]; = token_embedding if shared
};

/// Reads and validates a llama2.c checkpoint (header sanity, exact file size).
inline Llama2cWeights read_llama2c(const std::filesystem::path& path) {
  MappedFile f(path);
  ByteReader r(f.bytes(), f.path());
  Llama2cWeights w;
  auto& c = w.config;
  c.dim = r.read<std::int32_t>("header dim");
  c.hidden_dim = r.read<std::int32_t>("header hidden_dim");
  c.n_layers = r.read<std::int32_t>("header n_layers");
  c.n_heads = r.read<std::int32_t>("header n_heads");
  c.n_kv_heads = r.read<std::int32_t>("header n_kv_heads");
  c.vocab_size = r.read<std::int32_t>("header vocab_size");
  c.seq_len = r.read<std::int32_t>("header seq_len");
  c.shared_classifier = c.vocab_size > 0;
  if (c.vocab_size < 0) c.vocab_size = -c.vocab_size;
  const auto bad = [&](const char* what, int v) {
    return FormatError(f.path() + ": llama2.c header field " + what + " = " + std::to_string(v) +
                       " is invalid");
  };
  if (c.dim <= 0 || c.dim > 65536) throw bad("dim", c.dim);
  if (c.hidden_dim <= 0 || c.hidden_dim > 1 << 20) throw bad("hidden_dim", c.hidden_dim);
  if (c.n_layers <= 0 || c.n_layers > 1024) throw bad("n_layers", c.n_layers);
  if (c.n_heads <= 0 || c.dim % c.n_heads != 0) throw bad("n_heads", c.n_heads);
  if (c.n_kv_heads <= 0 || c.n_heads % c.n_kv_heads != 0) throw bad("n_kv_heads", c.n_kv_heads);
  if (c.vocab_size <= 0 || c.vocab_size > 1 << 24) throw bad("vocab_size", c.vocab_size);
  if (c.seq_len <= 0 || c.seq_len > 1 << 24) throw bad("seq_len", c.seq_len);

  const std::uint64_t L = c.n_layers, d = c.dim, h = c.hidden_dim, V = c.vocab_size,
                      kv = c.kv_dim(), hs = c.head_size();
  const std::uint64_t floats = V * d + L * d + L * d * d + 2 * L * kv * d + L * d * d + L * d +
                               3 * L * h * d + d + c.seq_len * hs +
                               (c.shared_classifier ? 0 : V * d);
  const std::uint64_t expected = 28 + 4 * floats;
  KNPROBE_REQUIRE(f.size() == expected, FormatError, f.path(), ": ", f.size(),
                  " bytes, but the header implies ", expected, " (truncated or not llama2.c)");
  // Every tensor must be finite: a NaN or Inf weight is named here, not found as p = nan later.
  auto take = [&](std::uint64_t rows, std::uint64_t cols, const std::string& what) {
    MatrixF m(static_cast<Index>(rows), static_cast<Index>(cols));
    r.require(4 * rows * cols, what.c_str());
    std::memcpy(m.data(), f.data() + r.position(), 4 * rows * cols);
    r.skip(4 * rows * cols, what.c_str());
    knprobe::detail::require_finite(m.data(), static_cast<std::size_t>(m.size()),
                                    f.path() + ": tensor " + what);
    return m;
  };
  auto per_layer = [&](std::uint64_t rows, std::uint64_t cols, const char* what) {
    std::vector<MatrixF> out;
    for (std::uint64_t l = 0; l < L; ++l)
      out.push_back(take(rows, cols, std::string(what) + " of layer " + std::to_string(l)));
    return out;
  };
  auto vectors = [&](const char* what) {
    std::vector<VectorF> out;
    for (std::uint64_t l = 0; l < L; ++l)
      out.emplace_back(take(d, 1, std::string(what) + " of layer " + std::to_string(l)));
    return out;
  };
  w.token_embedding = take(V, d, "token_embedding");
  w.rms_att = vectors("rms_att");
  w.wq = per_layer(d, d, "wq");
  w.wk = per_layer(kv, d, "wk");
  w.wv = per_layer(kv, d, "wv");
  w.wo = per_layer(d, d, "wo");
  w.rms_ffn = vectors("rms_ffn");
  w.w1 = per_layer(h, d, "w1");
  w.w2 = per_layer(d, h, "w2");
  w.w3 = per_layer(h, d, "w3");
  w.rms_final = VectorF(take(d, 1, "rms_final"));
  r.skip(4 * 2 * c.seq_len * hs / 2, "freq_cis tables");
  w.wcls = c.shared_classifier ? w.token_embedding : take(V, d, "wcls");
  return w;
}

}  // namespace knprobe::io
