// Add a new architecture: a toy model of our own becomes probeable by (1) specialising
// knprobe::ArchTraits with three compile-time facts and (2) offering the handful of operations of
// the ProbeableModel concept. KnowledgeProbe<ToyLm> then attributes, selects and verifies on it
// unchanged, exactly as on Llama, GPT-2 or BERT.
//
// The toy ("running-mean LM"), with E the [vocab × d] embeddings:
//   x₀(p) = mean of E[tokens[0..p]]                        (causal: position p sees tokens ≤ p)
//   per layer l:  h_l = relu(W1_l x_l),  x_{l+1} = x_l + W2_l h_l    (h_l are the "neurons")
//   logits(p) = E x_L(p),  P(t | p) = softmax(logits)[t]
// layer_gradients differentiates P(t) with respect to h_l at one position, by hand:
//   g = Eᵀ (dP/dlogits);  for k = L−1 … l+1:  g += W1_kᵀ (relu′ ⊙ W2_kᵀ g);  dP/dh_l = W2_lᵀ g.
//   example_custom_architecture
#include <cstdio>
#include <sstream>

#include "knprobe/core/rng.hpp"
#include "knprobe/model/blocks/softmax.hpp"
#include "knprobe/probe/knowledge_probe.hpp"

using namespace knprobe;

// A word-level tokenizer over a fixed vocabulary (words separated by spaces).
class WordTokenizer : public Tokenizer {
 public:
  explicit WordTokenizer(std::vector<std::string> words) {
    set_vocabulary(std::move(words));
    special_.eos = 0;  // "<eos>": the AMIG baseline token of a decoder
  }
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions&) const override {
    std::vector<TokenId> ids;
    std::istringstream in{std::string(text)};
    for (std::string w; in >> w;) {
      const auto id = piece_to_id(w);
      KNPROBE_REQUIRE(id.has_value(), TokenizerError, "unknown word '", w, "'");
      ids.push_back(*id);
    }
    return ids;
  }
  std::string decode(std::span<const TokenId> ids, bool) const override {
    std::string s;
    for (auto id : ids) {
      if (!s.empty()) s += ' ';
      s += id_to_piece(id);
    }
    return s;
  }
};

class ToyLm {
 public:
  using Scalar = double;
  struct Trace {
    std::vector<Matrix<double>> x;  // x[l]: [tokens × d], the stream entering layer l (and x[L])
    std::vector<Matrix<double>> h;  // h[l]: [tokens × width], the neurons
    ConstMatrixRef<double> activations(int l) const { return h[static_cast<std::size_t>(l)]; }
    int num_tokens() const { return static_cast<int>(x[0].rows()); }
  };

  ToyLm(int vocab, int d, int width, int layers, std::uint64_t seed) : e_(vocab, d) {
    Rng rng(seed);
    auto fill = [&](Matrix<double>& m, double s) {
      for (Index i = 0; i < m.size(); ++i) m.data()[i] = s * rng.normal();
    };
    fill(e_, 1.0);
    for (int l = 0; l < layers; ++l) {
      w1_.emplace_back(width, d);
      w2_.emplace_back(d, width);
      fill(w1_.back(), 1.0 / std::sqrt(d));
      fill(w2_.back(), 1.0 / std::sqrt(width));
    }
  }

  int num_layers() const { return static_cast<int>(w1_.size()); }
  int ffn_width() const { return static_cast<int>(w1_[0].rows()); }
  int hidden_size() const { return static_cast<int>(e_.cols()); }
  int vocab_size() const { return static_cast<int>(e_.rows()); }

  Trace trace(std::span<const TokenId> tokens) const { return run(tokens, {}); }

  // P(target) at `position` with h_layer replaced by each row of `points`, and dP/dh there.
  LayerGradients<double> layer_gradients(const Trace& tr, int layer, int position,
                                         const Matrix<double>& points, TokenId target) const {
    const auto l = static_cast<std::size_t>(layer);
    const Index b = points.rows();
    // Forward from layer `layer` for the B rows.
    Matrix<double> x = tr.x[l].row(position).replicate(b, 1) + points * w2_[l].transpose();
    std::vector<Matrix<double>> z;  // pre-activations of the later layers, for relu′
    for (std::size_t k = l + 1; k < w1_.size(); ++k) {
      z.push_back(x * w1_[k].transpose());
      x += z.back().cwiseMax(0.0) * w2_[k].transpose();
    }
    Matrix<double> dz = x * e_.transpose();  // logits, then dP/dlogits in place
    const std::vector<TokenId> targets(static_cast<std::size_t>(b), target);
    LayerGradients<double> out;
    out.probabilities = blocks::softmax::target_probability_gradient(dz, targets);
    Matrix<double> g = dz * e_;  // dP/dx_L
    for (std::size_t k = w1_.size() - 1; k > l; --k) {
      const auto& zk = z[k - l - 1];
      const Matrix<double> dh = (g * w2_[k]).cwiseProduct((zk.array() > 0).cast<double>().matrix());
      g += dh * w1_[k];
    }
    out.gradients = g * w2_[l];
    return out;
  }

  // One forward per pattern; [patterns × queries] probabilities.
  Matrix<double> probabilities(std::span<const TokenId> tokens,
                               std::span<const InterventionPattern> patterns,
                               std::span<const Query> queries) const {
    Matrix<double> p(static_cast<Index>(patterns.size()), static_cast<Index>(queries.size()));
    for (std::size_t i = 0; i < patterns.size(); ++i) {
      const Trace tr = run(tokens, patterns[i]);
      const Matrix<double> logits = tr.x.back() * e_.transpose();
      for (std::size_t q = 0; q < queries.size(); ++q)
        p(static_cast<Index>(i), static_cast<Index>(q)) =
            blocks::softmax::probability<double>(logits, queries[q].position, queries[q].target);
    }
    return p;
  }

  // Value vectors (the column of W2 a neuron writes with) and embeddings, for weight edits.
  Vector<double> value_vector(int l, int u) const {
    return w2_[static_cast<std::size_t>(l)].col(u);
  }
  void set_value_vector(int l, int u, const Vector<double>& v) {
    w2_[static_cast<std::size_t>(l)].col(u) = v;
  }
  Vector<double> token_embedding(TokenId id) const { return e_.row(id).transpose(); }

 private:
  Trace run(std::span<const TokenId> tokens, const InterventionPattern& pattern) const {
    const auto n = static_cast<Index>(tokens.size());
    Trace tr;
    Matrix<double> x(n, hidden_size());
    Vector<double> sum = Vector<double>::Zero(hidden_size());
    for (Index p = 0; p < n; ++p) {
      sum += e_.row(tokens[static_cast<std::size_t>(p)]).transpose();
      x.row(p) = sum.transpose() / static_cast<double>(p + 1);
    }
    for (std::size_t l = 0; l < w1_.size(); ++l) {
      tr.x.push_back(x);
      Matrix<double> h = (x * w1_[l].transpose()).cwiseMax(0.0);
      for (const auto& iv : pattern)
        if (iv.layer == static_cast<int>(l))
          h(iv.position, iv.unit) = intervened(iv, h(iv.position, iv.unit));
      x += h * w2_[l].transpose();
      tr.h.push_back(std::move(h));
    }
    tr.x.push_back(x);
    return tr;
  }

  Matrix<double> e_;
  std::vector<Matrix<double>> w1_, w2_;
};

// The three compile-time facts: a decoder, a dense FFN, neurons after the activation.
template <>
struct knprobe::ArchTraits<ToyLm> {
  static constexpr Objective objective = Objective::causal_lm;
  static constexpr FfnLayout ffn_layout = FfnLayout::dense;
  static constexpr NeuronSite neuron_site = NeuronSite::post_activation;
};
KNPROBE_ASSERT_PROBEABLE(ToyLm);  // a readable compile error if a piece is missing

int main() {
  try {
    const WordTokenizer tok(
        {"<eos>", "the", "capital", "of", "france", "is", "paris", "rome", "berlin", "city", "a"});
    const ToyLm model(tok.vocab_size(), 16, 32, 3, 7);
    const KnowledgeProbe probe(model, tok);
    const auto fact = probe.encode("the capital of france is", "paris");
    AttributionOptions o;  // AMIG (baseline token: <eos>), m = 20, Gauss–Legendre
    o.quadrature = Quadrature::gauss_legendre;
    const auto a = probe.attribute(fact, o);
    // Completeness: Σ_i Attr_i = P(a) − P(b) per layer; a small δ means our gradients are right.
    std::printf("largest completeness error: %.2e\n", a.max_delta());
    const auto sel = probe.select(a, 0.3);
    for (const auto& [n, s] : sel.ranked)
      std::printf("  layer %d unit %2d  score %+.5f\n", n.layer, n.unit, s);
    const auto hit = probe.effect(fact, sel.neurons, 0.0);
    std::printf("P(paris) %.4f -> %.4f with those neurons suppressed\n", hit.before, hit.after);
    if (!(a.max_delta() < 1e-3)) {
      std::fprintf(stderr, "completeness error too large: the hand-written gradient is wrong\n");
      return 1;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
