// Completeness of integrated gradients on the real stories260K model: with Gauss–Legendre m = 20
// or the trapezoid rule with m = 200, δ < 1e-3 · |P(a) − P(b)| in every layer. The reference
// code's left Riemann sum has O(1/m) error: its δ at m = 20 and m = 200 is reported, not bounded.
#include <boost/test/unit_test.hpp>

#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/llama2c_tokenizer.hpp"
#include "support/paths.hpp"

using namespace knprobe;

BOOST_AUTO_TEST_SUITE(real_attribution)

BOOST_AUTO_TEST_CASE(stories260k_completeness) {
  const auto m = LlamaModel<float>::load(testing::stories_dir() / "stories260K.bin");
  const Llama2cTokenizer tok(testing::stories_dir() / "tok512.bin", m.vocab_size());
  const KnowledgeProbe probe(m, tok);
  const auto f = probe.encode("Once upon a time, there was a little girl named", " Lily");
  for (Method method : {Method::ig, Method::amig}) {
    for (auto [q, steps] : {std::pair{Quadrature::gauss_legendre, 20},
                            {Quadrature::trapezoid, 200},
                            {Quadrature::left_riemann, 200},
                            {Quadrature::left_riemann, 20}}) {
      AttributionOptions o;
      o.method = method;
      o.quadrature = q;
      o.steps = steps;
      const auto a = probe.attribute(f, o);
      double worst = 0;
      for (const auto& c : a.completeness)
        worst = std::max(worst, c.delta / std::max(std::abs(c.p_actual - c.p_baseline), 1e-12));
      BOOST_TEST_MESSAGE((method == Method::ig ? "IG" : "AMIG")
                         << (q == Quadrature::gauss_legendre ? " Gauss-Legendre"
                             : q == Quadrature::trapezoid    ? " trapezoid"
                                                             : " left Riemann")
                         << " m=" << steps << ": worst delta / |P(a)-P(b)| = " << worst);
      if (q != Quadrature::left_riemann) BOOST_TEST(worst < 1e-3);
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
