#pragma once
// The SentencePiece-style merge loop shared by the GGUF (Llama / Gemma) and llama2.c tokenizers:
// starting from symbols (usually single characters), repeatedly merge the adjacent pair whose
// concatenation is a mergeable vocabulary piece with the highest score; ties go to the leftmost
// pair. O(n log n) with a priority queue of candidate bigrams, as llama.cpp's SPM session.

#include <functional>
#include <optional>
#include <queue>
#include <string>
#include <vector>

namespace knprobe::detail {

/// score_of(piece) returns the piece's score when it may be formed by a merge, else nullopt.
inline std::vector<std::string> merge_by_score(
    std::vector<std::string> symbols,
    const std::function<std::optional<float>(const std::string&)>& score_of) {
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Bigram {
    float score;
    int left, right;
    std::size_t size;
  };
  auto worse = [](const Bigram& a, const Bigram& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };
  std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
  auto try_add = [&](int l, int r) {
    if (l < 0 || r < 0) return;
    const std::string joined = symbols[l] + symbols[r];
    if (auto s = score_of(joined)) queue.push({*s, l, r, joined.size()});
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

}  // namespace knprobe::detail
