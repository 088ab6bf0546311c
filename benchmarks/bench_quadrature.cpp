// How many points each quadrature rule needs on Gemma 3 270M (issue 19): for facts spread over
// the built-in set, in each language, AMIG over all layers with the left Riemann sum (the
// references' rule), the trapezoid rule and Gauss–Legendre at m = 5, 10, 20, 40, and the
// completeness error of each: per (fact, language) the worst over layers of
// δ / |P(a) − P(b)|, δ = |Σ_i Attr_i − (P(a) − P(b))| (docs/METHOD.md §2), then the median and the
// maximum over the (fact, language) pairs. Cost is in gradient evaluations per layer (the rule's
// points; the two completeness endpoints are shared by all rules).
//   bench_quadrature GEMMA.gguf FACTS.jsonl [facts=6] [languages=en,zh] [--json FILE]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <sstream>
#include <string>

#include "knprobe/data/facts.hpp"
#include "knprobe/io/gguf.hpp"
#include "knprobe/model/llama.hpp"
#include "knprobe/probe/knowledge_probe.hpp"
#include "knprobe/tokenize/sentencepiece_bpe.hpp"
#include "timing.hpp"

using namespace knprobe;

namespace {
/// Worst over layers of δ / |P(a) − P(b)| (layers where the two probabilities are equal to
/// within 1e-12 carry nothing to account for and are skipped).
double worst_relative_delta(const Attribution& a) {
  double w = 0;
  for (const auto& c : a.completeness) {
    const double gap = std::abs(c.p_actual - c.p_baseline);
    if (gap > 1e-12) w = std::max(w, c.delta / gap);
  }
  return w;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}
}  // namespace

int main(int argc, char** argv) try {
  const std::string json_file = bench::take_json_option(argc, argv);
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s GEMMA.gguf FACTS.jsonl [facts] [languages] [--json FILE]\n",
                 argv[0]);
    return 2;
  }
  const auto file = std::make_shared<const io::GgufFile>(argv[1]);
  const QuantizedLlamaModel m(load_llama_gguf_quantized(file));
  const SentencePieceBpe tok = SentencePieceBpe::from_gguf(*file);
  const KnowledgeProbe probe(m, tok);
  const auto facts = read_facts(argv[2]).facts;
  const std::size_t n = argc > 3 ? std::stoul(argv[3]) : 6;
  std::vector<std::string> langs;
  {
    std::stringstream ss(argc > 4 ? argv[4] : "en,zh");
    for (std::string l; std::getline(ss, l, ',');) langs.push_back(l);
  }
  struct Rule {
    const char* name;
    Quadrature q;
  };
  const Rule rules[] = {{"left Riemann", Quadrature::left_riemann},
                        {"trapezoid", Quadrature::trapezoid},
                        {"Gauss-Legendre", Quadrature::gauss_legendre}};
  const int steps[] = {5, 10, 20, 40};
  // errors[rule][m] over (fact, language)
  std::vector<std::vector<std::vector<double>>> err(3, std::vector<std::vector<double>>(4));
  nlohmann::json pairs = nlohmann::json::array();
  for (std::size_t j = 0; j < n && j < facts.size(); ++j) {
    const Fact& fact = facts[j * facts.size() / n];  // spread over the file's relations
    for (const auto& lang : langs) {
      if (!fact.prompts.count(lang) || !fact.answers.count(lang)) continue;
      const EncodedFact f = probe.encode(fact.prompts.at(lang), fact.answers.at(lang));
      nlohmann::json row = {{"fact", fact.id}, {"language", lang}};
      for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t k = 0; k < 4; ++k) {
          AttributionOptions o;
          o.method = Method::amig;
          o.steps = steps[k];
          o.quadrature = rules[r].q;
          const double e = worst_relative_delta(probe.attribute(f, o));
          err[r][k].push_back(e);
          row[rules[r].name][std::to_string(steps[k])] = e;
        }
      std::printf("%s [%s] done\n", fact.id.c_str(), lang.c_str());
      std::fflush(stdout);
      pairs.push_back(row);
    }
  }
  std::printf(
      "\nAMIG on Gemma 3 270M, worst over layers of delta / |P(a) - P(b)|, median [max] over "
      "%zu (fact, language) pairs\n",
      pairs.size());
  std::printf("%-16s %20s %20s %20s %20s\n", "rule", "m = 5", "m = 10", "m = 20", "m = 40");
  nlohmann::json out = {{"pairs", pairs}, {"steps", steps}};
  for (std::size_t r = 0; r < 3; ++r) {
    std::printf("%-16s", rules[r].name);
    for (std::size_t k = 0; k < 4; ++k) {
      const double med = median(err[r][k]);
      const double mx =
          err[r][k].empty() ? 0.0 : *std::max_element(err[r][k].begin(), err[r][k].end());
      std::printf(" %9.2e [%8.2e]", med, mx);
      out["summary"][rules[r].name][std::to_string(steps[k])] = {{"median", med}, {"max", mx}};
    }
    std::printf("\n");
  }
  bench::write_json(json_file, out);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "bench_quadrature: %s\n", e.what());
  return 1;
}
