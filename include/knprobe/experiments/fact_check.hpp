#pragma once
// Fact-checking with degenerate knowledge neurons (docs/METHOD.md §7; Chen et al. 2024), per
// language:
//   claims      = every fact with its true object and `wrong_per_fact` wrong objects, the objects
//                 of other facts of the same relation (distinct, ≠ the true one, seeded per fact);
//   split       = per relation, a seeded shuffle: the first round(train_fraction · n) facts train,
//                 the rest test. Cross-fitting (default, docs/METHOD.md §10): the training facts
//                 are cut in two disjoint folds — the first ⌈n_train/2⌉ ("set" fold) give the
//                 relation set, the others ("threshold" fold) the thresholds — so neither the set
//                 nor θ is fitted on the claims it scores; `FactCheckFit::in_sample` (the
//                 reference code) fits both on all training facts;
//   relation set R = the neurons occurring in the degenerate sets of the set-fold facts (true
//                 object) more than relation_fraction · max_count times;
//   score(c)    = mean over n ∈ R of Attr_n(prompt → candidate c), attributed at R's layers only;
//   decision    = "true" ⇔ score ≥ θ_relation, θ maximising F1 on the threshold-fold claims (or
//                 fixed in advance, e.g. the reference code's 1e-6);
//   baselines   = "top-1": the model's own top-1 continuation is the candidate (every token);
//                 "P(candidate)": P(candidate | prompt) ≥ θ_p, θ_p fitted on the same claims and
//                 in the same way as θ (the same tuning as the DKN checker).
// Metrics on the held-out test claims (only those are evidence), positive class = "the claim is
// true": precision TP/(TP+FP), recall TP/(TP+FN), F1, accuracy (TP+TN)/all, each with a bootstrap
// 95 % interval over test facts; also on the test claims of the paper's 1:1 variant (each fact's
// true object and its first wrong one). The reference code's variant counts rejected true claims
// as false positives as well: precision_ref = TP/(TP+FP+FN), F1_ref from precision_ref and recall.

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "knprobe/core/rng.hpp"
#include "knprobe/experiments/localize.hpp"
#include "knprobe/experiments/run_records.hpp"
#include "knprobe/io/json_get.hpp"
#include "knprobe/probe/degenerate.hpp"

namespace knprobe {

/// How the relation set and the thresholds are fitted.
enum class FactCheckFit {
  cross_fit,  ///< set and θ on two disjoint folds of the training facts (default)
  in_sample   ///< both on all training facts (the reference code: optimistic, for comparison)
};

/// Binary confusion counts, positive = "the claim is true". A rate over nothing is undefined, not
/// 0: precision when nothing is accepted, recall without true claims, accuracy without claims are
/// NaN (written as null in JSON, "n/a" in tables).
struct Confusion {
  std::size_t tp = 0, fp = 0, fn = 0, tn = 0;
  void add(bool truth, bool accepted) {
    (truth ? (accepted ? tp : fn) : (accepted ? fp : tn)) += 1;
  }
  std::size_t total() const { return tp + fp + fn + tn; }
  /// a / b, NaN when b = 0.
  static double ratio(std::size_t a, std::size_t b) {
    return b ? static_cast<double>(a) / static_cast<double>(b)
             : std::numeric_limits<double>::quiet_NaN();
  }
  /// 2pr / (p + r); 0 when p = r = 0, NaN when either is undefined.
  static double harmonic(double p, double r) {
    if (std::isnan(p) || std::isnan(r)) return std::numeric_limits<double>::quiet_NaN();
    return p + r > 0 ? 2 * p * r / (p + r) : 0.0;
  }
  double precision() const { return ratio(tp, tp + fp); }  ///< TP / (TP + FP)
  double recall() const { return ratio(tp, tp + fn); }     ///< TP / (TP + FN)
  /// F1 = 2 TP / (2 TP + FP + FN) (the harmonic mean of precision and recall where both are
  /// defined): 0 when no claim is both true and accepted, NaN only when there is no true claim
  /// and nothing is accepted.
  double f1() const { return ratio(2 * tp, 2 * tp + fp + fn); }
  double accuracy() const { return ratio(tp + tn, total()); }  ///< (TP + TN) / all
  /// The reference code's precision: rejected true claims counted as false positives too.
  double precision_ref() const { return ratio(tp, tp + fp + fn); }
  /// Harmonic mean of precision_ref and recall: NaN without true claims (recall undefined).
  double f1_ref() const { return harmonic(precision_ref(), recall()); }
};

/// Which part of the data a claim belongs to.
enum class ClaimFold {
  set,        ///< training fact whose DKN search builds the relation set
  threshold,  ///< training fact whose claims fit θ (cross-fitting; in-sample: every training fact)
  test        ///< held out: the only claims that count as evidence
};

/// One (fact, candidate object, language) claim with its DKN score and the baselines' inputs.
struct Claim {
  std::string fact, relation, language, object;
  bool truth = false, train = false;
  double score = 0;
  bool model_top1 = false;
  double p_model = 0;  ///< P(candidate | prompt), product over its tokens
  int candidate = 0;   ///< 0 = the true object, k = the k-th wrong object drawn
  ClaimFold fold = ClaimFold::test;
};

struct RelationCheck {
  std::string relation, language;
  NeuronSet neurons;          ///< the relation DKN set R
  std::size_t max_count = 0;  ///< occurrences of the most frequent DKN neuron
  std::size_t train_facts = 0, test_facts = 0, train_with_dkn = 0;
  double threshold = 0;            ///< θ of the DKN checker
  double threshold_p = 0;          ///< θ_p of the P(candidate) baseline
  std::size_t forward_passes = 0;  ///< of the DKN searches
};

struct FactCheckReport {
  FactCheckFit fit = FactCheckFit::cross_fit;
  BootstrapOptions bootstrap;
  std::vector<Claim> claims;
  std::vector<RelationCheck> relations;
  std::vector<SkippedFact> skipped;  ///< facts or relations (fact = "relation:<id>") left out
};

/// Everything one (language, relation) adds to the report, in the report's order: its relation
/// check (absent when the relation was left out before a set was formed), its claims and what was
/// skipped (facts, or the relation itself as "relation:<id>").
struct RelationOutcome {
  std::string language, relation;
  std::optional<RelationCheck> check;
  std::vector<Claim> claims;
  std::vector<SkippedFact> skipped;
};

struct FactCheckOptions {
  FactCheckFit fit = FactCheckFit::cross_fit;
  BootstrapOptions bootstrap;
  std::vector<std::string> languages{"en", "zh"};
  int wrong_per_fact = 5;
  double train_fraction = 0.8;
  double relation_fraction = 0.7;  ///< relation set: count > fraction · max_count
  std::uint64_t seed = 42;
  std::optional<double> fixed_threshold;  ///< instead of learning θ (reference: 1e-6)
  /// Per-language t of the knowledge neurons that the DKN candidates are drawn from (docs/METHOD.md
  /// §5).
  std::map<std::string, double> thresholds{{"en", 0.3}, {"zh", 0.2}};
  AttributionOptions attribution;
  DknOptions dkn;
  /// DKN searches done in advance, fact id → language → result (e.g. a run's results file,
  /// run_dkn_results): a set-fold fact found here is neither attributed nor searched again, and
  /// its true claim is scored like the others (attribution at R's layers). The caller vouches
  /// that they were made with `attribution`, `thresholds` and `dkn`.
  std::map<std::string, std::map<std::string, RunDkn>> given_dkn;
  std::function<void(const std::string&)> progress;  ///< once per DKN search and per claim
  /// Checkpointing (`knprobe factcheck` keeps <out>/factcheck.partial.jsonl): called once per
  /// (language, relation) with what it added to the report, as soon as it is done.
  std::function<void(const RelationOutcome&)> on_relation;
  /// Outcomes of an earlier, interrupted run of the same experiment (same model, facts, pool and
  /// options; the caller vouches), by (language, relation): taken as they are, not computed
  /// again. A relation's outcome depends only on its facts, the pool, the options and the model,
  /// so a resumed report equals an uninterrupted one.
  std::map<std::pair<std::string, std::string>, RelationOutcome> resumed;
};

namespace detail {

/// Indices 0..n-1 shuffled with `seed` (Fisher–Yates); the first `n_train` train.
inline std::size_t split_train(std::vector<std::size_t>& idx, double fraction, std::uint64_t seed) {
  Rng rng(seed);
  for (std::size_t i = idx.size(); i > 1; --i)
    std::swap(idx[i - 1], idx[static_cast<std::size_t>(rng.below(i))]);
  const auto n = idx.size();
  auto n_train = static_cast<std::size_t>(std::lround(fraction * static_cast<double>(n)));
  return std::clamp<std::size_t>(n_train, 1, n - 1);  // n ≥ 2: at least one of each
}

/// Up to k distinct wrong objects for `fact` in `lang`: answers of other facts of its relation in
/// `pool`, ≠ its own answer, drawn with a seed derived from the fact id.
inline std::vector<std::string> wrong_objects(const Fact& fact, const std::vector<Fact>& pool,
                                              const std::string& lang, int k, std::uint64_t seed) {
  const std::string& truth = fact.answers.at(lang);
  std::set<std::string> seen{truth};
  std::vector<std::string> objects;
  for (const auto& g : pool)
    if (g.relation == fact.relation && g.answers.count(lang) && g.prompts.count(lang) &&
        seen.insert(g.answers.at(lang)).second)
      objects.push_back(g.answers.at(lang));
  Rng rng(seed ^ fnv1a(fact.id));
  const auto take = std::min<std::size_t>(objects.size(), static_cast<std::size_t>(k));
  for (std::size_t i = 0; i < take; ++i)  // partial Fisher–Yates
    std::swap(objects[i], objects[i + static_cast<std::size_t>(rng.below(objects.size() - i))]);
  objects.resize(take);
  return objects;
}

/// θ maximising F1 of "score ≥ θ ⇒ true" over (score, truth) pairs (ties: the larger accuracy,
/// then the smaller θ). Candidates are the midpoints between consecutive distinct scores and
/// the two ends.
inline double best_threshold(std::vector<std::pair<double, bool>> v) {
  KNPROBE_REQUIRE(!v.empty(), ArgumentError, "fact-checking: no training claims to fit θ on");
  KNPROBE_REQUIRE(std::any_of(v.begin(), v.end(), [](const auto& c) { return c.second; }),
                  ArgumentError, "fact-checking: the ", v.size(),
                  " claims θ is fitted on hold no true claim (F1 is undefined on them)");
  std::sort(v.begin(), v.end());
  std::vector<double> cuts{v.front().first - 1.0};
  for (std::size_t i = 1; i < v.size(); ++i)
    if (v[i].first > v[i - 1].first) cuts.push_back(0.5 * (v[i].first + v[i - 1].first));
  cuts.push_back(v.back().first + 1.0);
  double best = cuts.front(), best_f1 = -1, best_acc = -1;
  for (double c : cuts) {
    Confusion cm;
    for (const auto& [s, t] : v) cm.add(t, s >= c);
    if (cm.f1() > best_f1 || (cm.f1() == best_f1 && cm.accuracy() > best_acc)) {
      best = c;
      best_f1 = cm.f1();
      best_acc = cm.accuracy();
    }
  }
  return best;
}

/// mean_{n ∈ R} scores(n.layer, n.unit).
inline double mean_over(const Attribution& a, const NeuronSet& r) {
  double s = 0;
  for (const auto& n : r)
    s += a.scores(static_cast<std::size_t>(n.layer), static_cast<std::size_t>(n.unit));
  return r.empty() ? 0.0 : s / static_cast<double>(r.size());
}

}  // namespace detail

/// The number of times fact_check(…, o) calls o.progress when no relation ends early: per
/// (language, relation) not in o.resumed, one DKN step per fact of the set fold (every training
/// fact when not cross-fitted) and one per claim; facts without wrong objects and relations too
/// small to split count nothing. A relation whose training facts turn out to have no degenerate
/// neurons makes fewer (its claims are not scored), so this is an upper bound (for an ETA).
inline std::size_t fact_check_steps(const std::vector<Fact>& facts, const std::vector<Fact>& pool,
                                    const FactCheckOptions& o) {
  std::size_t steps = 0;
  for (const auto& lang : o.languages) {
    std::map<std::string, std::vector<std::size_t>> by_relation;
    for (std::size_t i = 0; i < facts.size(); ++i)
      if (facts[i].prompts.count(lang) && facts[i].answers.count(lang))
        by_relation[facts[i].relation].push_back(i);
    for (auto& [relation, members] : by_relation) {
      if (o.resumed.count({lang, relation}) || members.size() < 2) continue;
      const std::size_t n_train =
          detail::split_train(members, o.train_fraction, o.seed ^ detail::fnv1a(relation));
      const bool cross = o.fit == FactCheckFit::cross_fit && !o.fixed_threshold;
      if (cross && n_train < 2) continue;
      const std::size_t n_set = cross ? (n_train + 1) / 2 : n_train;
      for (std::size_t k = 0; k < members.size(); ++k) {
        const std::size_t wrong =
            detail::wrong_objects(facts[members[k]], pool, lang, o.wrong_per_fact, o.seed).size();
        if (wrong == 0) continue;
        steps += (k < n_set ? 1 : 0) + 1 + wrong;
      }
    }
  }
  return steps;
}

/// Runs the fact-checking experiment on `facts`; wrong objects come from `pool` (e.g. all facts
/// of the dataset before sampling; pass `facts` itself when there is no larger pool).
template <ProbeableModel M>
FactCheckReport fact_check(const KnowledgeProbe<M>& probe, const std::vector<Fact>& facts,
                           const std::vector<Fact>& pool, const FactCheckOptions& o) {
  KNPROBE_REQUIRE(!facts.empty(), ArgumentError, "fact-checking: no facts");
  KNPROBE_REQUIRE(!o.languages.empty(), ArgumentError, "fact-checking: no languages");
  KNPROBE_REQUIRE(o.wrong_per_fact >= 1 && o.wrong_per_fact <= 1000, ArgumentError,
                  "fact-checking: wrong objects per fact = ", o.wrong_per_fact,
                  " must be in [1, 1000]");
  KNPROBE_REQUIRE(o.train_fraction > 0 && o.train_fraction < 1, ArgumentError,
                  "fact-checking: train fraction ", o.train_fraction, " must be in (0, 1)");
  KNPROBE_REQUIRE(o.relation_fraction >= 0 && o.relation_fraction < 1, ArgumentError,
                  "fact-checking: relation fraction ", o.relation_fraction, " must be in [0, 1)");
  for (const auto& l : o.languages)
    KNPROBE_REQUIRE(o.thresholds.count(l), ArgumentError,
                    "fact-checking: no threshold for language '", l,
                    "' (the DKN candidates are its selected knowledge neurons)");
  FactCheckReport rep;
  rep.fit = o.fit;
  rep.bootstrap = o.bootstrap;
  const auto& model = probe.model();
  for (const auto& lang : o.languages) {
    std::map<std::string, std::vector<std::size_t>> by_relation;  // facts usable in `lang`
    for (std::size_t i = 0; i < facts.size(); ++i) {
      if (!facts[i].prompts.count(lang) || !facts[i].answers.count(lang)) {
        rep.skipped.push_back({facts[i].id, lang, "no prompt or answer in this language"});
        continue;
      }
      by_relation[facts[i].relation].push_back(i);
    }
    for (auto& [relation_name, members_of] : by_relation) {
      const std::string& relation = relation_name;  // clang 14 cannot capture a binding
      const std::vector<std::size_t>& members_read = members_of;
      if (const auto r = o.resumed.find({lang, relation}); r != o.resumed.end()) {
        const RelationOutcome& ro = r->second;
        if (ro.check) rep.relations.push_back(*ro.check);
        rep.claims.insert(rep.claims.end(), ro.claims.begin(), ro.claims.end());
        rep.skipped.insert(rep.skipped.end(), ro.skipped.begin(), ro.skipped.end());
        continue;
      }
      const std::size_t claims0 = rep.claims.size(), relations0 = rep.relations.size(),
                        skipped0 = rep.skipped.size();
      [&] {  // one relation; `return` leaves it
        std::vector<std::size_t> members = members_read;
        auto skip_relation = [&](const std::string& why) {
          rep.skipped.push_back({"relation:" + relation, lang, why});
        };
        if (members.size() < 2) {
          skip_relation("needs at least 2 facts for a train / test split, has " +
                        std::to_string(members.size()));
          return;
        }
        // one seeded permutation per relation (the same in every language)
        const std::size_t n_train =
            detail::split_train(members, o.train_fraction, o.seed ^ detail::fnv1a(relation));
        // Cross-fitting: the first ⌈n_train/2⌉ training facts build the set, the others fit θ.
        const bool cross = o.fit == FactCheckFit::cross_fit && !o.fixed_threshold;
        const std::size_t n_set = cross ? (n_train + 1) / 2 : n_train;
        if (cross && n_train < 2) {
          skip_relation("cross-fitting needs at least 2 training facts (one per fold), has " +
                        std::to_string(n_train));
          return;
        }
        // Candidates per fact (true object first); a fact without wrong objects is left out.
        struct Item {
          const Fact* fact;
          bool train;
          ClaimFold fold;
          std::vector<std::string> objects;  // [0] = the true object
          std::vector<EncodedFact> encoded;
        };
        std::vector<Item> items;
        for (std::size_t k = 0; k < members.size(); ++k) {
          const Fact& f = facts[members[k]];
          const ClaimFold fold = k >= n_train ? ClaimFold::test
                                 : k < n_set  ? (cross ? ClaimFold::set : ClaimFold::threshold)
                                              : ClaimFold::threshold;
          Item it{&f, k < n_train, fold, {f.answers.at(lang)}, {}};
          for (auto& w : detail::wrong_objects(f, pool, lang, o.wrong_per_fact, o.seed))
            it.objects.push_back(std::move(w));
          if (it.objects.size() == 1) {
            rep.skipped.push_back(
                {f.id, lang, "empty candidate list: no other object in relation " + relation});
            continue;
          }
          try {
            for (const auto& obj : it.objects)
              it.encoded.push_back(probe.encode(f.prompts.at(lang), obj));
          } catch (const Error& e) {
            rep.skipped.push_back({f.id, lang, e.what()});
            continue;
          }
          items.push_back(std::move(it));
        }
        // Relation DKN set from the training facts' degenerate sets.
        RelationCheck rc{relation, lang, {}, 0, 0, 0, 0, 0, 0, 0};
        std::map<Neuron, std::size_t> count;
        std::map<const Fact*, Attribution> true_attr;
        std::size_t set_facts = 0, threshold_facts = 0;
        for (const auto& it : items) {
          (it.train ? rc.train_facts : rc.test_facts) += 1;
          set_facts += it.fold == ClaimFold::set || (!cross && it.train);
          threshold_facts += it.fold == ClaimFold::threshold;
          if (!(it.fold == ClaimFold::set || (!cross && it.train))) continue;
          if (o.progress) o.progress(it.fact->id + " [" + lang + "] DKN");
          if (const auto g = o.given_dkn.find(it.fact->id);
              g != o.given_dkn.end() && g->second.count(lang)) {
            const RunDkn& d = g->second.at(lang);
            rc.forward_passes += d.forward_passes;
            rc.train_with_dkn += !d.degenerate.empty();
            for (const auto& set : d.degenerate)
              for (const auto& n : set) rc.max_count = std::max(rc.max_count, ++count[n]);
            continue;
          }
          auto a = probe.attribute(it.encoded[0], o.attribution);
          const auto sel = KnowledgeProbe<M>::select(a, o.thresholds.at(lang));
          const auto d = find_degenerate(model, it.encoded[0], a, o.dkn, &sel.ranked);
          rc.forward_passes += d.forward_passes;
          rc.train_with_dkn += !d.degenerate.empty();
          for (const auto& set : d.degenerate)
            for (const auto& n : set) rc.max_count = std::max(rc.max_count, ++count[n]);
          true_attr.emplace(it.fact, std::move(a));
        }
        if (rc.train_facts == 0 || rc.test_facts == 0) {
          skip_relation("no train / test split left after dropping facts without candidates");
          return;
        }
        if (set_facts == 0 || (!o.fixed_threshold && threshold_facts == 0)) {
          skip_relation(std::string("a training fold is empty after dropping facts without ") +
                        "candidates (set fold " + std::to_string(set_facts) + ", threshold fold " +
                        std::to_string(threshold_facts) + " facts): no true claim to fit on");
          return;
        }
        for (const auto& [n, c] : count)
          if (static_cast<double>(c) > o.relation_fraction * static_cast<double>(rc.max_count))
            rc.neurons.insert(n);
        if (rc.neurons.empty()) {
          skip_relation("no degenerate neurons among the " + std::to_string(rc.train_facts) +
                        " training facts");
          rep.relations.push_back(rc);
          return;
        }
        AttributionOptions at = o.attribution;  // only the layers of R are needed
        at.layers.clear();
        for (const auto& [l, _] : rc.neurons.layer_histogram()) at.layers.push_back(l);
        const std::size_t first_claim = rep.claims.size();
        for (const auto& it : items) {
          // Candidates whose encodings differ only in their answer tokens (the same prompt and
          // answer length) are scored together: one attribute_shared call (the forward passes
          // shared; each score as if attributed alone), one forward pass for their top-1 checks
          // and one probabilities call for P(candidate). The true object's training attribution
          // is reused.
          const std::size_t n_obj = it.objects.size();
          std::vector<std::vector<std::size_t>> groups;
          std::vector<char> grouped(n_obj, 0);
          for (std::size_t c = 0; c < n_obj; ++c) {
            if (grouped[c]) continue;
            groups.emplace_back();
            for (std::size_t d = c; d < n_obj; ++d) {
              const EncodedFact &e = it.encoded[d], &first = it.encoded[c];
              if (!grouped[d] && e.tokens == first.tokens && e.positions == first.positions &&
                  e.replaceable == first.replaceable) {
                groups.back().push_back(d);
                grouped[d] = 1;
              }
            }
          }
          std::vector<double> score(n_obj, 0.0), p_model(n_obj, 0.0);
          std::vector<char> top1(n_obj, 0);
          const auto reuse = true_attr.find(it.fact);
          for (const auto& group : groups) {
            std::vector<std::size_t> attributed;
            std::vector<EncodedFact> encoded;
            for (const std::size_t c : group)
              if (c == 0 && reuse != true_attr.end()) {
                score[0] = detail::mean_over(reuse->second, rc.neurons);
              } else {
                attributed.push_back(c);
                encoded.push_back(it.encoded[c]);
              }
            if (!encoded.empty()) {
              const auto attrs = probe.attribute_shared(encoded, at);
              for (std::size_t k = 0; k < attributed.size(); ++k)
                score[attributed[k]] = detail::mean_over(attrs[k], rc.neurons);
            }
            const EncodedFact& first = it.encoded[group[0]];
            if constexpr (HasLogits<M>) {
              const auto z = detail::answer_logits(model, first);
              for (const std::size_t c : group) top1[c] = detail::targets_top1(z, it.encoded[c]);
            }
            std::vector<Query> qs;
            for (const std::size_t c : group)
              for (std::size_t t = 0; t < first.positions.size(); ++t)
                qs.push_back({first.positions[t], it.encoded[c].targets[t]});
            const std::vector<InterventionPattern> clean(1);
            const auto p = model.probabilities(first.tokens, clean, qs);
            for (std::size_t k = 0; k < group.size(); ++k) {
              double prod = 1;
              for (std::size_t t = 0; t < first.positions.size(); ++t)
                prod *= static_cast<double>(p(0, Index(k * first.positions.size() + t)));
              p_model[group[k]] = prod;
            }
          }
          for (std::size_t c = 0; c < n_obj; ++c) {
            if (o.progress) o.progress(it.fact->id + " [" + lang + "] " + it.objects[c]);
            Claim cl{it.fact->id, relation, lang, it.objects[c], c == 0, it.train, 0, false};
            cl.candidate = static_cast<int>(c);
            cl.fold = it.fold;
            cl.score = score[c];
            cl.model_top1 = top1[c] != 0;
            cl.p_model = p_model[c];
            rep.claims.push_back(std::move(cl));
          }
        }
        // θ and θ_p on the threshold-fold claims only (never on the claims that built R or that
        // are scored as evidence).
        std::vector<std::pair<double, bool>> fit_dkn, fit_p;
        for (std::size_t i = first_claim; i < rep.claims.size(); ++i)
          if (rep.claims[i].fold == ClaimFold::threshold) {
            fit_dkn.push_back({rep.claims[i].score, rep.claims[i].truth});
            fit_p.push_back({rep.claims[i].p_model, rep.claims[i].truth});
          }
        rc.threshold =
            o.fixed_threshold ? *o.fixed_threshold : detail::best_threshold(std::move(fit_dkn));
        rc.threshold_p = fit_p.empty() ? 0.5 : detail::best_threshold(std::move(fit_p));
        rep.relations.push_back(rc);
      }();
      if (o.on_relation) {
        RelationOutcome ro{lang, relation, std::nullopt, {}, {}};
        if (rep.relations.size() > relations0) ro.check = rep.relations.back();
        ro.claims.assign(rep.claims.begin() + static_cast<std::ptrdiff_t>(claims0),
                         rep.claims.end());
        ro.skipped.assign(rep.skipped.begin() + static_cast<std::ptrdiff_t>(skipped0),
                          rep.skipped.end());
        o.on_relation(ro);
      }
    }
  }
  return rep;
}

/// The checkers compared on the same claims.
enum class Checker {
  dkn,         ///< relation DKN score ≥ θ
  top1,        ///< the model's top-1 continuation is the candidate (no tuning)
  probability  ///< P(candidate) ≥ θ_p, tuned like θ
};

/// Which claims a confusion matrix counts.
enum class ClaimSplit {
  test,       ///< held-out claims (the evidence)
  test_1to1,  ///< held-out, each fact's true object and its first wrong one (the paper's 1:1)
  fit         ///< the claims θ was fitted on (in-sample by construction: not evidence)
};

namespace detail {

inline bool in_split(const Claim& c, ClaimSplit s) {
  switch (s) {
    case ClaimSplit::test:
      return c.fold == ClaimFold::test;
    case ClaimSplit::test_1to1:
      return c.fold == ClaimFold::test && c.candidate <= 1;
    case ClaimSplit::fit:
      return c.fold == ClaimFold::threshold;
  }
  return false;
}

/// The decision of `who` on claim c, with the thresholds of its relation.
inline bool accepts(const Claim& c, Checker who, const RelationCheck& r) {
  switch (who) {
    case Checker::dkn:
      return c.score >= r.threshold;
    case Checker::top1:
      return c.model_top1;
    case Checker::probability:
      return c.p_model >= r.threshold_p;
  }
  return false;
}

inline std::map<std::string, const RelationCheck*> relations_of(const FactCheckReport& rep,
                                                                const std::string& language) {
  std::map<std::string, const RelationCheck*> out;
  for (const auto& r : rep.relations)
    if (r.language == language) out[r.relation] = &r;
  return out;
}

}  // namespace detail

/// Confusion matrix of checker `who` over the claims of `language` in `split` (relations without
/// a DKN set have no claims).
inline Confusion confusion(const FactCheckReport& rep, const std::string& language, Checker who,
                           ClaimSplit split) {
  const auto rel = detail::relations_of(rep, language);
  Confusion cm;
  for (const auto& c : rep.claims)
    if (c.language == language && detail::in_split(c, split))
      cm.add(c.truth, detail::accepts(c, who, *rel.at(c.relation)));
  return cm;
}

/// The DKN checker and the top-1 baseline on the test claims (`train` = false) or on the claims
/// θ was fitted on (`train` = true).
inline std::pair<Confusion, Confusion> confusion(const FactCheckReport& rep,
                                                 const std::string& language, bool train) {
  const auto s = train ? ClaimSplit::fit : ClaimSplit::test;
  return {confusion(rep, language, Checker::dkn, s), confusion(rep, language, Checker::top1, s)};
}

/// Bootstrap 95 % intervals of precision, recall, F1 and accuracy of `who` on `split`: the facts
/// are resampled (a fact's claims stay together). Absent when fewer than 2 facts.
inline nlohmann::json confusion_intervals(const FactCheckReport& rep, const std::string& language,
                                          Checker who, ClaimSplit split) {
  const auto rel = detail::relations_of(rep, language);
  std::map<std::string, Confusion> by_fact;
  for (const auto& c : rep.claims)
    if (c.language == language && detail::in_split(c, split))
      by_fact[c.relation + '\x1f' + c.fact].add(c.truth,
                                                detail::accepts(c, who, *rel.at(c.relation)));
  if (by_fact.size() < 2) return nullptr;
  std::vector<Confusion> facts;
  for (const auto& [_, cm] : by_fact) facts.push_back(cm);
  const auto& b = rep.bootstrap;
  detail::check_bootstrap(b);
  Rng rng(b.seed ^ detail::fnv1a(language + "/factcheck"));
  std::vector<double> prec, rec, f1, acc;
  for (int r = 0; r < b.resamples; ++r) {
    Confusion cm;
    for (std::size_t k = 0; k < facts.size(); ++k) {
      const auto& f = facts[static_cast<std::size_t>(rng.below(facts.size()))];
      cm.tp += f.tp, cm.fp += f.fp, cm.fn += f.fn, cm.tn += f.tn;
    }
    prec.push_back(cm.precision());
    rec.push_back(cm.recall());
    f1.push_back(cm.f1());
    acc.push_back(cm.accuracy());
  }
  auto ci = [&](std::vector<double>& v) {  // over the resamples where the metric is defined
    std::erase_if(v, [](double x) { return std::isnan(x); });
    if (v.empty()) return nlohmann::json(nullptr);
    const auto i = detail::percentile_interval(v, b.level);
    return nlohmann::json{i.lo, i.hi};
  };
  return {{"facts", facts.size()},
          {"precision", ci(prec)},
          {"recall", ci(rec)},
          {"f1", ci(f1)},
          {"accuracy", ci(acc)}};
}

inline nlohmann::json to_json(const Confusion& c) {
  auto rate = [](double x) {  // undefined (a rate over nothing): null
    return std::isnan(x) ? nlohmann::json(nullptr) : nlohmann::json(x);
  };
  return {{"tp", c.tp},
          {"fp", c.fp},
          {"fn", c.fn},
          {"tn", c.tn},
          {"precision", rate(c.precision())},
          {"recall", rate(c.recall())},
          {"f1", rate(c.f1())},
          {"accuracy", rate(c.accuracy())},
          {"precision_ref", rate(c.precision_ref())},
          {"f1_ref", rate(c.f1_ref())}};
}

/// One relation's check: {relation, language, neurons [[layer, unit]], max_count, train_facts,
/// test_facts, train_facts_with_dkn, threshold, threshold_p, dkn_forward_passes}.
inline nlohmann::json to_json(const RelationCheck& r) {
  return {{"relation", r.relation},
          {"language", r.language},
          {"neurons", detail::neurons_json(r.neurons)},
          {"max_count", r.max_count},
          {"train_facts", r.train_facts},
          {"test_facts", r.test_facts},
          {"train_facts_with_dkn", r.train_with_dkn},
          {"threshold", r.threshold},
          {"threshold_p", r.threshold_p},
          {"dkn_forward_passes", r.forward_passes}};
}

/// One claim: {fact, relation, language, object, true, split, fold, candidate, score, model_top1,
/// p_model}.
inline nlohmann::json to_json(const Claim& c) {
  return {{"fact", c.fact},
          {"relation", c.relation},
          {"language", c.language},
          {"object", c.object},
          {"true", c.truth},
          {"split", c.train ? "train" : "test"},
          {"fold", c.fold == ClaimFold::set         ? "set"
                   : c.fold == ClaimFold::threshold ? "threshold"
                                                    : "test"},
          {"candidate", c.candidate},
          {"score", c.score},
          {"model_top1", c.model_top1},
          {"p_model", c.p_model}};
}

/// {language, relation, check (or null), claims [..], skipped [{fact, language, reason}]}.
inline nlohmann::json to_json(const RelationOutcome& r) {
  nlohmann::json j{{"language", r.language},
                   {"relation", r.relation},
                   {"check", r.check ? to_json(*r.check) : nlohmann::json(nullptr)},
                   {"claims", nlohmann::json::array()},
                   {"skipped", nlohmann::json::array()}};
  for (const auto& c : r.claims) j["claims"].push_back(to_json(c));
  for (const auto& x : r.skipped)
    j["skipped"].push_back({{"fact", x.fact}, {"language", x.language}, {"reason", x.reason}});
  return j;
}

/// Reads back what to_json(RelationOutcome) wrote, for a model of `layers` × `width` neurons.
/// FormatError "<where>: ..." naming the first field that is missing, of the wrong type, out of
/// range or not finite.
inline RelationOutcome relation_outcome_from_json(const nlohmann::json& j, int layers, int width,
                                                  const std::string& where) {
  using io::json_at;
  auto str = [](const nlohmann::json& o, const char* k, const std::string& at) {
    return io::json_string(json_at(o, k, at), at + "." + k);
  };
  auto count = [](const nlohmann::json& o, const char* k, const std::string& at) {
    return io::json_int<std::size_t>(json_at(o, k, at), 0, std::size_t{1} << 53, at + "." + k);
  };
  auto num = [](const nlohmann::json& o, const char* k, const std::string& at) {
    return io::json_number(json_at(o, k, at), -1e300, 1e300, at + "." + k);
  };
  auto array = [](const nlohmann::json& o, const char* k,
                  const std::string& at) -> const nlohmann::json& {
    const auto& v = json_at(o, k, at);
    if (!v.is_array()) throw FormatError(at + ": '" + k + "' is not an array");
    return v;
  };
  RelationOutcome r;
  r.language = str(j, "language", where);
  r.relation = str(j, "relation", where);
  if (const auto& c = json_at(j, "check", where); !c.is_null()) {
    const std::string at = where + ": check";
    RelationCheck rc;
    rc.relation = str(c, "relation", at);
    rc.language = str(c, "language", at);
    if (rc.relation != r.relation || rc.language != r.language)
      throw FormatError(at + ": is the check of relation '" + rc.relation + "' [" + rc.language +
                        "], not of this record's '" + r.relation + "' [" + r.language + "]");
    std::vector<Neuron> ns;
    for (const auto& n : array(c, "neurons", at)) {
      if (!n.is_array() || n.size() != 2) throw FormatError(at + ": a neuron is not [layer, unit]");
      ns.push_back({io::json_int<int>(n[0], 0, layers - 1, at + ": neuron layer"),
                    io::json_int<int>(n[1], 0, width - 1, at + ": neuron unit")});
    }
    rc.neurons = NeuronSet(std::move(ns));
    rc.max_count = count(c, "max_count", at);
    rc.train_facts = count(c, "train_facts", at);
    rc.test_facts = count(c, "test_facts", at);
    rc.train_with_dkn = count(c, "train_facts_with_dkn", at);
    rc.threshold = num(c, "threshold", at);
    rc.threshold_p = num(c, "threshold_p", at);
    rc.forward_passes = count(c, "dkn_forward_passes", at);
    r.check = std::move(rc);
  }
  const auto& claims = array(j, "claims", where);
  for (std::size_t k = 0; k < claims.size(); ++k) {
    const auto& c = claims[k];
    const std::string at = where + ": claims[" + std::to_string(k) + "]";
    Claim cl;
    cl.fact = str(c, "fact", at);
    cl.relation = str(c, "relation", at);
    cl.language = str(c, "language", at);
    if (cl.relation != r.relation || cl.language != r.language)
      throw FormatError(at + ": a claim of relation '" + cl.relation + "' [" + cl.language +
                        "] in the record of '" + r.relation + "' [" + r.language + "]");
    cl.object = str(c, "object", at);
    cl.truth = io::json_bool(json_at(c, "true", at), at + ".true");
    const std::string& split = str(c, "split", at);
    if (split != "train" && split != "test") throw FormatError(at + ".split: not train / test");
    cl.train = split == "train";
    const std::string& fold = str(c, "fold", at);
    if (fold == "set")
      cl.fold = ClaimFold::set;
    else if (fold == "threshold")
      cl.fold = ClaimFold::threshold;
    else if (fold == "test")
      cl.fold = ClaimFold::test;
    else
      throw FormatError(at + ".fold: not set / threshold / test");
    cl.candidate = io::json_int<int>(json_at(c, "candidate", at), 0, 1000, at + ".candidate");
    cl.score = num(c, "score", at);
    cl.model_top1 = io::json_bool(json_at(c, "model_top1", at), at + ".model_top1");
    // a probability: float32 products may exceed 1 by rounding only
    cl.p_model = io::json_number(json_at(c, "p_model", at), 0, 1 + 1e-6, at + ".p_model");
    r.claims.push_back(std::move(cl));
  }
  const auto& skipped = array(j, "skipped", where);
  for (std::size_t k = 0; k < skipped.size(); ++k) {
    const std::string at = where + ": skipped[" + std::to_string(k) + "]";
    r.skipped.push_back({str(skipped[k], "fact", at), str(skipped[k], "language", at),
                         str(skipped[k], "reason", at)});
  }
  return r;
}

inline nlohmann::json to_json(const FactCheckReport& rep) {
  nlohmann::json j;
  std::set<std::string> languages;
  j["relations"] = nlohmann::json::array();
  for (const auto& r : rep.relations) {
    languages.insert(r.language);
    j["relations"].push_back(to_json(r));
  }
  j["claims"] = nlohmann::json::array();
  for (const auto& c : rep.claims) j["claims"].push_back(to_json(c));
  j["fit"] = rep.fit == FactCheckFit::cross_fit ? "cross_fit" : "in_sample";
  j["bootstrap"] = {{"resamples", rep.bootstrap.resamples},
                    {"level", rep.bootstrap.level},
                    {"seed", rep.bootstrap.seed}};
  // "test": the evidence; "test_1to1": the paper's 1:1 variant; "train": the claims θ was fitted
  // on (in-sample, not evidence). Checkers: "dkn", "baseline" (top-1), "baseline_p" (tuned P).
  const std::pair<ClaimSplit, const char*> splits[] = {
      {ClaimSplit::test, "test"}, {ClaimSplit::test_1to1, "test_1to1"}, {ClaimSplit::fit, "train"}};
  const std::pair<Checker, const char*> checkers[] = {
      {Checker::dkn, "dkn"}, {Checker::top1, "baseline"}, {Checker::probability, "baseline_p"}};
  for (const auto& lang : languages)
    for (const auto& [split, sname] : splits)
      for (const auto& [who, cname] : checkers) {
        auto m = to_json(confusion(rep, lang, who, split));
        if (split != ClaimSplit::fit) m["ci"] = confusion_intervals(rep, lang, who, split);
        j["summary"][lang][sname][cname] = m;
      }
  j["skipped"] = nlohmann::json::array();
  for (const auto& s : rep.skipped)
    j["skipped"].push_back({{"fact", s.fact}, {"language", s.language}, {"reason", s.reason}});
  return j;
}

}  // namespace knprobe
