// KnowledgeProbe over the dense backends with their tokenizer families: GPT-2 + byte-level BPE
// (decoder: answer " Paris" predicted after the prompt) and BERT + WordPiece (encoder: attributed
// at [MASK], a prompt without [MASK] is an error). The tiny HF checkpoints get an embedding table
// of the test tokenizers' vocabulary size (random rows), the rest of their weights unchanged.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/bert.hpp"
#include "knprobe/model/gpt2.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/byte_bpe.hpp"
#include "knprobe/tokenize/wordpiece.hpp"
#include "support/finite_diff.hpp"
#include "support/paths.hpp"

using namespace knprobe;

namespace {

Gpt2Model<double> gpt2_with_vocab(int v) {
  auto w = load_gpt2_safetensors(testing::data_dir() / "hf" / "gpt2_tiny").cast<double>();
  Rng rng(21);
  w.config.vocab_size = v;
  w.wte = testing::random_matrix(rng, v, w.config.n_embd, 0.3);
  return Gpt2Model<double>(std::move(w));
}

BertModel<double> bert_with_vocab(int v) {
  auto w = load_bert_safetensors(testing::data_dir() / "hf" / "bert_tiny").cast<double>();
  Rng rng(22);
  w.config.vocab_size = v;
  w.word = testing::random_matrix(rng, v, w.config.hidden_size, 0.3);
  w.decoder_bias = testing::random_vector(rng, v, 0.1);
  return BertModel<double>(std::move(w));
}

/// AMIG with Gauss–Legendre m = 16 is complete to ~1e-6 of P(a) − P(b) on these smooth models.
template <class M>
void check_attribution(const KnowledgeProbe<M>& probe, const EncodedFact& f) {
  AttributionOptions o;
  o.method = Method::amig;
  o.steps = 16;
  o.quadrature = Quadrature::gauss_legendre;
  const auto a = probe.attribute(f, o);
  BOOST_TEST(a.completeness.size() == static_cast<std::size_t>(probe.model().num_layers()));
  for (const auto& c : a.completeness)
    BOOST_TEST(c.delta <= 1e-5 * std::abs(c.p_actual - c.p_baseline) + 1e-12,
               "layer " << c.layer << " delta " << c.delta);
  const auto sel = KnowledgeProbe<M>::select(a, 0.3);
  BOOST_TEST(!sel.neurons.empty());
  const auto e = probe.effect(f, sel.neurons, 0.0);
  BOOST_TEST(e.before > 0.0);
  BOOST_TEST(e.after != e.before);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(probe_dense_backends)

BOOST_AUTO_TEST_CASE(gpt2_with_byte_bpe) {
  const auto tok = ByteBpe::from_directory(testing::data_dir() / "tokenizers" / "byte_bpe");
  const auto m = gpt2_with_vocab(tok.vocab_size());
  const KnowledgeProbe probe(m, tok);
  const auto f = probe.encode("The capital of France is", " Paris");
  BOOST_TEST(f.targets.size() == 1u);
  BOOST_TEST(f.targets[0] == *tok.piece_to_id("ĠParis"));
  BOOST_TEST(f.positions[0] == static_cast<int>(f.tokens.size()) - 1);
  BOOST_TEST(probe.baseline_token() == *tok.piece_to_id("<|endoftext|>"));
  check_attribution(probe, f);
  // GPT-2 has the shared decoder driver's batched probabilities: the same numbers as one call
  // per request, up to GEMM blocking.
  static_assert(HasBatchedProbabilities<Gpt2Model<double>>);
  const auto g = probe.encode("The capital of Italy is", " Rome");
  const NeuronSet set{{0, 1}, {1, 5}};
  using Request = KnowledgeProbe<Gpt2Model<double>>::EffectRequest;
  const std::vector<Request> reqs{{&f, &set}, {&g, &set}};
  const std::vector<double> factors{0.0, 2.0};
  const auto all = probe.effects(std::span<const Request>(reqs), factors);
  for (std::size_t r = 0; r < reqs.size(); ++r) {
    const auto one = probe.effects(*reqs[r].fact, set, factors);
    for (std::size_t k = 0; k < factors.size(); ++k) {
      BOOST_TEST(all[r][k].before == one[k].before, boost::test_tools::tolerance(1e-12));
      BOOST_TEST(all[r][k].after == one[k].after, boost::test_tools::tolerance(1e-12));
    }
  }
}

BOOST_AUTO_TEST_CASE(bert_with_wordpiece) {
  const auto tok = WordPiece::from_directory(testing::data_dir() / "tokenizers" / "wordpiece");
  const auto m = bert_with_vocab(tok.vocab_size());
  const KnowledgeProbe probe(m, tok);
  const auto f = probe.encode("The capital of France is [MASK].", "Paris");
  BOOST_TEST(f.tokens.front() == *tok.special().cls);
  BOOST_TEST(f.tokens[static_cast<std::size_t>(f.positions[0])] == *tok.special().mask);
  BOOST_TEST(probe.baseline_token() == *tok.special().mask);
  check_attribution(probe, f);
  BOOST_TEST(testing::throws_with<ArgumentError>(
      [&] { probe.encode("The capital of France is Paris.", "Paris"); }, {"mask"}));
  // Without a batched probabilities, batched effects are one call per request: the same numbers.
  static_assert(!HasBatchedProbabilities<BertModel<double>>);
  const auto g = probe.encode("The capital of Italy is [MASK].", "Rome");
  const NeuronSet set{{0, 1}, {1, 5}};
  using Request = KnowledgeProbe<BertModel<double>>::EffectRequest;
  const std::vector<Request> reqs{{&f, &set}, {&g, &set}};
  const std::vector<double> factors{0.0, 2.0};
  const auto all = probe.effects(std::span<const Request>(reqs), factors);
  for (std::size_t r = 0; r < reqs.size(); ++r) {
    const auto one = probe.effects(*reqs[r].fact, set, factors);
    for (std::size_t k = 0; k < factors.size(); ++k) {
      BOOST_TEST(all[r][k].before == one[k].before);
      BOOST_TEST(all[r][k].after == one[k].after);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
