#pragma once
// Helpers the backends share to implement the contract of model/concept.hpp (not part of it):
// chunking batched requests, where a set of patterns first changes the computation
// (intervention_extent), applying intervention patterns to stacked pattern blocks, and the argument
// checks with their messages.

#include <algorithm>
#include <span>

#include "knprobe/core/error.hpp"
#include "knprobe/core/tensor.hpp"
#include "knprobe/model/concept.hpp"

namespace knprobe::detail {

// The argument checks every backend makes, one message each (the conformance suite matches them).
inline void check_layer_index(int l, int layers) {
  KNPROBE_REQUIRE(l >= 0 && l < layers, ArgumentError, "layer ", l, " outside [0, ", layers, ")");
}
inline void check_unit_index(int u, int width) {
  KNPROBE_REQUIRE(u >= 0 && u < width, ArgumentError, "unit ", u, " outside [0, ", width, ")");
}
inline void check_position_index(int p, Index tokens) {
  KNPROBE_REQUIRE(p >= 0 && p < tokens, ArgumentError, "position ", p, " outside [0, ", tokens,
                  ")");
}
inline void check_token_id(TokenId id, int vocab) {
  KNPROBE_REQUIRE(id >= 0 && id < vocab, ArgumentError, "token id ", id,
                  " outside the vocabulary [0, ", vocab, ")");
}

/// Calls fn(begin, count) for consecutive chunks of `reqs` holding at most `max_rows` points in
/// all (a larger single request is a chunk of its own), so that batched backends bound the rows of
/// their output-head GEMM.
template <class T, class F>
void for_each_request_chunk(std::span<const LayerRequest<T>> reqs, Index max_rows, F&& fn) {
  std::size_t begin = 0;
  while (begin < reqs.size()) {
    std::size_t end = begin;
    Index rows = 0;
    do {
      rows += reqs[end].points.rows();
      ++end;
    } while (end < reqs.size() && rows + reqs[end].points.rows() <= max_rows);
    fn(begin, end - begin);
    begin = end;
  }
}

/// Where `patterns` first change the computation: the lowest intervened layer and token position
/// ({layers, tokens} when nothing is intervened on), after `check(iv)` has vetted every
/// intervention (it throws naming what is out of range).
struct InterventionExtent {
  int layer = 0;
  int position = 0;
};
template <class Check>
InterventionExtent intervention_extent(std::span<const InterventionPattern> patterns, int layers,
                                       int tokens, Check&& check) {
  InterventionExtent e{layers, tokens};
  for (const auto& pat : patterns)
    for (const auto& iv : pat) {
      check(iv);
      e.layer = std::min(e.layer, iv.layer);
      e.position = std::min(e.position, iv.position);
    }
  return e;
}

/// Applies each pattern's layer-`layer` interventions to its block of `site`: pattern b owns rows
/// [first_row + b·len, first_row + (b + 1)·len), holding positions start, start + 1, ….
template <class T>
void apply_interventions(int layer, std::span<const InterventionPattern> patterns, Index len,
                         int start, Matrix<T>& site, Index first_row = 0) {
  for (std::size_t b = 0; b < patterns.size(); ++b)
    for (const auto& iv : patterns[b]) {
      if (iv.layer != layer) continue;
      T& x = site(first_row + Index(b) * len + (iv.position - start), iv.unit);
      x = intervened(iv, x);
    }
}

}  // namespace knprobe::detail
