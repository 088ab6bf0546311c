#pragma once
// Small random Llama-family weights for gradient and consistency tests.

#include "knprobe/model/llama_weights.hpp"
#include "support/finite_diff.hpp"

namespace knprobe::testing {

/// Gemma-3-shaped (qk-norm, sandwich norms, GeGLU, sliding window, GQA, rotate-half RoPE) when
/// `gemma`, else Llama-2-shaped (SwiGLU, interleaved RoPE).
inline LlamaWeights<double> random_llama(bool gemma, std::uint64_t seed = 1) {
  Rng rng(seed);
  LlamaWeights<double> w;
  auto& s = w.spec;
  s.arch = gemma ? LlamaArch::gemma3 : LlamaArch::llama;
  s.vocab_size = 50;
  s.hidden = 16;
  s.ffn = 24;
  s.layers = 3;
  s.heads = 4;
  s.kv_heads = 2;
  s.head_dim = 8;
  s.norm_eps = 1e-6;
  s.activation = gemma ? blocks::Activation::gelu_tanh : blocks::Activation::silu;
  s.rope_style = gemma ? blocks::rope::Style::half : blocks::rope::Style::interleaved;
  s.rope_theta = gemma ? 1e6 : 1e4;
  s.rope_theta_local = 1e4;
  if (gemma) {
    s.sliding_window = 3;
    s.sliding = {true, false, true};
    s.qk_norm = s.sandwich_norms = true;
    s.embed_scale = 4.0;
  }
  const double sd = 0.4;
  auto mat = [&](Index r, Index c) { return random_matrix(rng, r, c, sd); };
  auto norm = [&](Index n) { return random_vector(rng, n, 0.2, 1.0); };
  w.embed = mat(s.vocab_size, s.hidden);
  w.final_norm = norm(s.hidden);
  for (int l = 0; l < s.layers; ++l) {
    LlamaLayerWeights<double> L;
    L.attn_norm = norm(s.hidden);
    L.wq = mat(s.heads * s.head_dim, s.hidden);
    L.wk = mat(s.kv_heads * s.head_dim, s.hidden);
    L.wv = mat(s.kv_heads * s.head_dim, s.hidden);
    L.wo = mat(s.hidden, s.heads * s.head_dim);
    L.ffn_norm = norm(s.hidden);
    L.w_gate = mat(s.ffn, s.hidden);
    L.w_up = mat(s.ffn, s.hidden);
    L.w_down = mat(s.hidden, s.ffn);
    if (gemma) {
      L.q_norm = norm(s.head_dim);
      L.k_norm = norm(s.head_dim);
      L.post_attn_norm = norm(s.hidden);
      L.post_ffn_norm = norm(s.hidden);
    }
    w.layers.push_back(std::move(L));
  }
  return w;
}

}  // namespace knprobe::testing
