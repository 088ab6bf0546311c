// knprobe predict: the model's most likely next tokens (decoders) or [MASK] fillers (encoders).
#include <cmath>

#include "cli.hpp"
#include "knprobe/core/finite.hpp"

namespace knprobe::cli {
namespace {

struct PredictArgs {
  ModelArgs model;
  std::string prompt;
  int top = 5, max_tokens = 512;
};

int run(const PredictArgs& a) {
  return with_model(a.model, [&](const auto& model, const Tokenizer& tok) {
    const auto ids = tok.encode(a.prompt);
    KNPROBE_REQUIRE(!ids.empty(), ArgumentError, "the prompt tokenizes to nothing");
    KNPROBE_REQUIRE(static_cast<int>(ids.size()) <= a.max_tokens, ArgumentError, "the prompt is ",
                    ids.size(), " tokens, more than --max-tokens ", a.max_tokens);
    KNPROBE_REQUIRE(a.top <= model.vocab_size(), UsageError, "--top ", a.top,
                    " exceeds the vocabulary of ", model.vocab_size(), " tokens");
    static_assert(HasLogits<std::decay_t<decltype(model)>>, "predict needs logits(trace)");
    const auto z = model.logits(model.trace(ids));
    Index last = z.rows() - 1;  // decoders: the next token; encoders: the [MASK]
    if constexpr (ArchTraits<std::decay_t<decltype(model)>>::objective == Objective::masked_lm) {
      const auto mask = tok.special().mask;
      const auto at = mask ? std::find(ids.begin(), ids.end(), *mask) : ids.end();
      KNPROBE_REQUIRE(at != ids.end(), ArgumentError, "encoder prompt '", a.prompt,
                      "' has no mask token");
      last = at - ids.begin();
    }
    knprobe::detail::require_finite(z.row(last),
                                    "predict: logits (the model's weights or activations hold "
                                    "NaN / Inf)");
    std::vector<std::pair<float, int>> v;
    const float mx = z.row(last).maxCoeff();
    const double sum = (z.row(last).array() - mx).exp().sum();
    for (Index i = 0; i < z.cols(); ++i) v.push_back({z(last, i), static_cast<int>(i)});
    const auto top = std::min<std::size_t>(static_cast<std::size_t>(a.top), v.size());
    std::partial_sort(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(top), v.end(),
                      std::greater<>());
    for (std::size_t k = 0; k < top; ++k)
      std::printf("%2zu  p=%.4f  id=%-7d '%s'\n", k + 1, std::exp(v[k].first - mx) / sum,
                  v[k].second, tok.decode(std::vector<TokenId>{v[k].second}).c_str());
    return k_ok;
  });
}

}  // namespace

Command add_predict(CLI::App& app) {
  auto args = std::make_shared<PredictArgs>();
  auto* c = app.add_subcommand("predict", "print the model's most likely next tokens");
  args->model.add(c);
  c->add_option("--prompt", args->prompt, "the text to continue")
      ->required()
      ->check(text_of(k_max_fact_text));
  c->add_option("--top", args->top, "how many tokens to print (default 5)")
      ->check(integer_in(1, 1000));
  c->add_option("--max-tokens", args->max_tokens,
                "longest prompt accepted, in tokens (default 512)")
      ->check(integer_in(1, 1 << 20));
  return {c, [args] { return run(*args); }};
}

}  // namespace knprobe::cli
