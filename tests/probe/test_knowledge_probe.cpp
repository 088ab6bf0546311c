#include "knprobe/probe/knowledge_probe.hpp"

#include <boost/test/unit_test.hpp>
#include <cstring>

#include "knprobe/model/llama.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;
using knprobe::testing::throws_with;

namespace {
struct Stories {
  LlamaModel<float> model = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  Llama2cTokenizer tok{testing::stories_dir() / "tok512.bin", 512};
};
const Stories& stories() {
  static const Stories s;
  return s;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(probe_knowledge_probe)

BOOST_AUTO_TEST_CASE(decoder_encoding_teacher_forces_the_answer) {
  const KnowledgeProbe probe(stories().model, stories().tok);
  const auto p = stories().tok.encode("Once upon a time, there was a little girl named");
  EncodeOptions bare;
  bare.add_special = false;
  bare.dummy_prefix = false;
  const auto a = stories().tok.encode(" Lily went", bare);
  // The answer continues the prompt exactly: prompt + answer tokens = tokens of the whole text.
  const auto whole =
      stories().tok.encode("Once upon a time, there was a little girl named Lily went");
  std::vector<TokenId> joined = p;
  joined.insert(joined.end(), a.begin(), a.end());
  BOOST_TEST(joined == whole, boost::test_tools::per_element());
  const auto f = probe.encode("Once upon a time, there was a little girl named", " Lily went");
  BOOST_TEST(f.targets == a, boost::test_tools::per_element());
  BOOST_TEST(f.tokens.size() == p.size() + a.size() - 1);
  BOOST_TEST(f.positions.front() == static_cast<int>(p.size()) - 1);
  BOOST_TEST(f.positions.back() == static_cast<int>(f.tokens.size()) - 1);
  BOOST_TEST(f.replaceable.front() == 1);  // BOS is not replaced
  BOOST_TEST(probe.baseline_token() == 2);
}

BOOST_AUTO_TEST_CASE(select_refine_effect_control) {
  const KnowledgeProbe probe(stories().model, stories().tok);
  const auto f = probe.encode("Once upon a time, there was a little girl named", " Lily");
  AttributionOptions o;
  o.steps = 10;
  const auto a = probe.attribute(f, o);
  const auto s = probe.select(a, 0.3);
  BOOST_TEST(!s.neurons.empty());
  BOOST_TEST(s.ranked.front().second == s.max_score);
  for (const auto& [n, score] : s.ranked) BOOST_TEST(score >= 0.3 * s.max_score);
  BOOST_TEST(probe.select(a, 1.0).neurons.size() == 1u);
  // Suppressing the selected neurons changes the answer probability; the guard of the
  // intervention is the clean probability itself.
  const auto sup = probe.effect(f, s.neurons, 0.0);
  const auto same = probe.effect(f, s.neurons, 1.0);
  BOOST_TEST(std::abs(same.after - same.before) <= 1e-5 * same.before);  // float GEMM blocking
  BOOST_TEST(sup.after != sup.before);
  const auto ctl = probe.random_control(s.neurons, 42);
  BOOST_TEST(ctl.size() == s.neurons.size());
  BOOST_TEST(ctl.layer_histogram() == s.neurons.layer_histogram());
  BOOST_TEST((ctl & s.neurons).empty());
  BOOST_TEST(probe.random_control(s.neurons, 42) == ctl);  // seeded
  const NeuronSet x{{0, 1}, {1, 2}}, y{{0, 1}, {3, 3}}, z{{0, 1}, {1, 2}};
  BOOST_TEST(probe.refine({x, y, z}, 0.7, 2) == (NeuronSet{{0, 1}}));
  BOOST_TEST(probe.refine({x, y, z}, 0.5, 2) == (NeuronSet{{0, 1}, {1, 2}}));
  BOOST_TEST(probe.refine({x}, 0.7, 3).empty());
}

// Batched effects (one model call for facts of different lengths, sets and controls) equal one
// call per (fact, set); the batch is what the localize controls use.
// Independent facts of the real stories260K model attributed together: each equals its own
// attribute call bit for bit (prompts of different lengths, a two-token answer among them).
BOOST_AUTO_TEST_CASE(many_facts_equal_single_attributions) {
  const KnowledgeProbe probe(stories().model, stories().tok);
  const std::vector<EncodedFact> facts{
      probe.encode("Once upon a time, there was a little girl named", " Lily"),
      probe.encode("The dog ran to the", " park"), probe.encode("Tom had a big red", " ball and")};
  AttributionOptions o;
  o.steps = 6;
  const auto many = probe.attribute_many(std::span<const EncodedFact>(facts), o);
  BOOST_TEST_REQUIRE(many.size() == facts.size());
  for (std::size_t i = 0; i < facts.size(); ++i)
    BOOST_TEST((many[i].scores == probe.attribute(facts[i], o).scores), "fact " << i);
}

BOOST_AUTO_TEST_CASE(batched_effects_equal_single_calls) {
  static_assert(HasBatchedProbabilities<LlamaModel<float>>);
  const KnowledgeProbe probe(stories().model, stories().tok);
  const auto f = probe.encode("Once upon a time, there was a little girl named", " Lily");
  const auto g = probe.encode("The dog ran to the", " park");
  const auto h = probe.encode("Tom had a big red", " ball and");
  const NeuronSet a{{0, 3}, {2, 7}, {4, 11}}, b{{4, 1}}, c{{1, 9}, {3, 2}};
  using Request = KnowledgeProbe<LlamaModel<float>>::EffectRequest;
  const std::vector<Request> reqs{{&f, &a}, {&g, &a}, {&f, &b}, {&h, &c}, {&g, &c}};
  const std::vector<double> factors{0.0, 2.0, 1.0};
  const auto all = probe.effects(std::span<const Request>(reqs), factors);
  BOOST_TEST_REQUIRE(all.size() == reqs.size());
  bool changed = false;
  for (std::size_t r = 0; r < reqs.size(); ++r) {
    const auto one = probe.effects(*reqs[r].fact, *reqs[r].set, factors);
    BOOST_TEST_REQUIRE(all[r].size() == factors.size());
    for (std::size_t k = 0; k < factors.size(); ++k) {
      BOOST_TEST(std::abs(all[r][k].before - one[k].before) <= 1e-5 * one[k].before);
      BOOST_TEST(std::abs(all[r][k].after - one[k].after) <= 1e-5 * one[k].after);
      changed = changed || std::abs(one[k].after - one[k].before) > 1e-3 * one[k].before;
    }
    BOOST_TEST(std::abs(all[r][2].after - all[r][2].before) <= 1e-5 * all[r][2].before);  // ×1
  }
  BOOST_TEST(changed);
}

BOOST_AUTO_TEST_CASE(value_vector_edits_undo_bit_exactly) {
  LlamaModel<float> m = stories().model;
  const NeuronSet set{{1, 3}, {4, 100}};
  const VectorF before = m.value_vector(4, 100);
  {
    ValueVectorEdit edit(m, set);
    edit.edit(300, TokenId(301));
    BOOST_TEST((m.value_vector(4, 100) - before).norm() > 0.0f);
  }
  const VectorF after = m.value_vector(4, 100);
  BOOST_TEST(std::memcmp(before.data(), after.data(), sizeof(float) * before.size()) == 0);
}

BOOST_AUTO_TEST_CASE(bad_input_is_named) {
  const KnowledgeProbe probe(stories().model, stories().tok);
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.encode("", " Lily"); }, {"empty prompt"}));
  BOOST_TEST(
      throws_with<ArgumentError>([&] { probe.encode("Once", ""); }, {"tokenizes to nothing"}));
  const auto f = probe.encode("Once upon a", " time");
  AttributionOptions quick;
  quick.method = Method::ig;
  quick.steps = 2;
  const auto a = probe.attribute(f, quick);
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.select(a, 0.0); }, {"threshold"}));
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.select(a, 1.5); }, {"(0, 1]"}));
  AttributionOptions o;
  o.steps = 0;
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.attribute(f, o); }, {"steps m = 0"}));
}

BOOST_AUTO_TEST_CASE(impossible_controls_long_inputs_and_nan_are_errors) {
  KnowledgeProbe probe(stories().model, stories().tok);
  // More than half of a layer selected: no disjoint control of the same size exists.
  std::vector<Neuron> most;
  for (int u = 0; u < 87; ++u) most.push_back({2, u});
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.random_control(NeuronSet(most), 1); },
                                        {"layer 2 selects 87 of its 172", "at most half"}));
  most.pop_back();
  BOOST_TEST(probe.random_control(NeuronSet(most), 1).size() == 86u);
  // A prompt longer than the limit is refused before any work.
  probe.set_max_tokens(8);
  BOOST_TEST(throws_with<ArgumentError>(
      [&] { probe.encode("Once upon a time, there was a little girl named", " Lily"); },
      {"more than the 8 accepted"}));
  BOOST_TEST(throws_with<ArgumentError>([&] { probe.set_max_tokens(0); }, {"max_tokens"}));
  probe.set_max_tokens(100000);
  BOOST_TEST(probe.max_tokens() == 512);  // stories260K's context (seq_len)
  // NaN weights: attribution names the first layer whose neurons are not finite.
  auto w = stories().model.weights();
  w.layers[3].w_up(5, 7) = std::nanf("");
  const LlamaModel<float> broken(w);
  const KnowledgeProbe bad(broken, stories().tok);
  const auto f = bad.encode("Once upon a", " time");
  BOOST_TEST(throws_with<NumericError>([&] { (void)bad.attribute(f); },
                                       {"neuron activations of layer 3"}));
  BOOST_TEST(throws_with<NumericError>(
      [&] {
        (void)bad.effect(f, NeuronSet({{1, 1}}), 0.0);
      },
      {"not a finite number"}));
}

BOOST_AUTO_TEST_SUITE_END()
