#pragma once
// The SentencePiece-style merge loop shared by the GGUF (Llama / Gemma) and llama2.c tokenizers:
// starting from symbols (usually single characters), repeatedly merge the adjacent pair whose
// concatenation is a mergeable vocabulary piece with the highest score; ties go to the leftmost
// pair. O(n log n) with a priority queue of candidate bigrams, as llama.cpp's SPM session.
// merge_by_rank is the same loop keyed by the pair (Hugging Face BPE: the pair of lowest merge
// rank first, ties to the leftmost).

#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <vector>

namespace knprobe::detail {

/// priority(left, right) returns the priority of merging the two adjacent symbols (higher first)
/// when they may be merged, else nullopt.
template <class Priority>
std::vector<std::string> merge_adjacent(std::vector<std::string> symbols, Priority&& priority) {
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Bigram {
    double score;
    int left, right;
    std::size_t size;
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    if (const auto s = priority(symbols[l], symbols[r]))
      queue.push({double(*s), l, r, symbols[l].size() + symbols[r].size()});
  };
  for (int i = 0; i + 1 < n; ++i) try_add(i, i + 1);
  while (!queue.empty()) {
    const Bigram b = queue.top();
    queue.pop();
    // Stale when either side was merged away or changed since the bigram was queued.
    if (symbols[b.left].empty() || symbols[b.right].empty() || next[b.left] != b.right ||
        symbols[b.left].size() + symbols[b.right].size() != b.size)
      continue;
    symbols[b.left] += symbols[b.right];
    symbols[b.right].clear();
    next[b.left] = next[b.right];
    if (next[b.right] >= 0) prev[next[b.right]] = b.left;
    try_add(prev[b.left], b.left);
    try_add(b.left, next[b.left]);
  }
  std::vector<std::string> out;
  for (int i = n > 0 ? 0 : -1; i >= 0; i = next[i]) out.push_back(std::move(symbols[i]));
  return out;
}

/// score_of(piece) returns the piece's score when it may be formed by a merge, else nullopt.
inline std::vector<std::string> merge_by_score(
    std::vector<std::string> symbols,
    const std::function<std::optional<float>(const std::string&)>& score_of) {
  return merge_adjacent(std::move(symbols), [&](const std::string& l, const std::string& r) {
    return score_of(l + r);
  });
}

/// rank_of(left, right) returns the merge rank of the pair (lower first), else nullopt.
template <class Rank>
std::vector<std::string> merge_by_rank(std::vector<std::string> symbols, Rank&& rank_of) {
  return merge_adjacent(std::move(symbols),
                        [&](const std::string& l, const std::string& r) -> std::optional<double> {
                          if (const auto k = rank_of(l, r)) return -double(*k);
                          return std::nullopt;
                        });
}

}  // namespace knprobe::detail
