#!/usr/bin/env python3
"""Markdown tables from a `knprobe localize`, `knprobe edit` or `knprobe factcheck` result file
(used for docs/results.md); the kind is recognised from the file's content. Every mean is shown
with its bootstrap 95 % confidence interval (docs/METHOD.md §10) as written by knprobe.

Usage: python3 tools/results_table.py results/main-job/localize.json [--no-per-fact]
       python3 tools/results_table.py RUN/editing.json
       python3 tools/results_table.py RUN/factcheck.json
"""
import json
import sys


def pct(x):
    return "n/a" if x is None else "%+.1f%%" % (100 * x)


def ci_pct(s, key="mean"):
    """'−81.7% [−85.0, −78.1]' from a summary {"mean", "mean_ci", ...} (n/a when absent)."""
    if not s or s.get(key) is None:
        return "n/a"
    ci = s.get(key + "_ci")
    out = pct(s[key])
    if ci:
        out += " [%+.1f, %+.1f]" % (100 * ci[0], 100 * ci[1])
    return out


def ci_num(s, fmt="%.2f", key="mean"):
    if not s or s.get(key) is None:
        return "n/a"
    ci = s.get(key + "_ci")
    return (fmt % s[key]) + ((" [" + fmt + ", " + fmt + "]") % tuple(ci) if ci else "")


def editing_modes(summary):
    """suppress, erase, erase@d…, edit, edit@d… (doses from strongest to weakest) as present."""
    def order(mode):
        base, _, dose = mode.partition("@")
        return ({"suppress": 0, "erase": 1, "edit": 2}.get(base, 3), -float(dose or 1))
    return sorted({k.split("/")[1] for k in summary}, key=order)


def editing_table(j):
    """Rows: neuron set × intervention; reliability = measured in the set's source language,
    generality = in the other languages, locality = relative change of the K unrelated facts."""
    s = j["summary"]
    print("| set | intervention | P(old) change, same language | flipped to new | P(old) change, "
          "other language | flipped to new | unrelated change, mean abs (same / other) "
          "| neurons with a < 0 |")
    print("|---|---|---|---|---|---|---|---|")
    kinds = []
    # each set, then its control sets (METHOD.md §10); N_source_minus_likn = N_l \ LIKN, suppressed
    # only
    for st in ("N_source", "N_source_minus_likn", "likn", "all"):
        kinds += [st] + [st + c for c in ("~control", "~control_magnitude")]
    for st in kinds:
        for mode in editing_modes(s):
            r, g = s.get("%s/%s/reliability" % (st, mode)), s.get("%s/%s/generality" % (st, mode))
            if not r:
                continue
            g = g or {}
            fl = lambda v: ci_num(v.get("flipped"), "%.2f") if v.get("flipped") else "n/a"
            print("| %s | %s | %s | %s | %s | %s | %s / %s | %s |" % (
                st, mode, ci_pct(r.get("old_change")), fl(r), ci_pct(g.get("old_change")), fl(g),
                ci_pct(r.get("unrelated_abs")), ci_pct(g.get("unrelated_abs")),
                ci_num(r.get("negative_share"), "%.2f")))


def bootstrap_mean_ci(values, resamples=2000, level=0.95, seed=42):
    """Mean of `values` and its bootstrap interval (facts are the unit; see paired_bootstrap)."""
    return paired_bootstrap(values, lambda v: sum(v) / len(v), resamples, level, seed)


def editing_paired_table(j):
    """Per fact: P(old) change under a set minus under its control (same fact, same mode, same
    language), averaged over the fact's measures like the summary; mean over facts with a
    bootstrap 95 % interval. Negative = the set lowers P(old) more than its control does."""
    print("\nPaired per fact: P(old) change under the set minus under its control "
          "(percentage points; mean over facts [95% CI], facts with both):\n")
    print("| set | intervention | measured in | − random control | − magnitude control |")
    print("|---|---|---|---|---|")
    def kind(name):
        base = name.split("~")[0]
        if base.endswith("_minus_likn"):
            return "N_source_minus_likn"
        return base if base in ("likn", "all") else "N_source"
    for st in ("N_source", "N_source_minus_likn", "likn", "all"):
        for mode in editing_modes(j["summary"]):
            for where in ("reliability", "generality"):
                cells = []
                for ctl in ("~control", "~control_magnitude"):
                    diffs = []
                    for f in j["facts"]:
                        by = {}
                        for m in f.get("measures", []):
                            if m["mode"] != mode or kind(m["set"]) != st:
                                continue
                            w = "reliability" if m["language"] == m["source"] else "generality"
                            if w != where:
                                continue
                            c = (m["p_old_after"] - m["p_old_before"]) / m["p_old_before"]
                            by[(m["set"], m["language"])] = c
                        d = [by[(n, l)] - by[(n + ctl, l)] for (n, l) in by
                             if "~" not in n and (n + ctl, l) in by]
                        if d:
                            diffs.append(sum(d) / len(d))
                    if not diffs:
                        cells.append("n/a")
                        continue
                    mean, lo, hi = bootstrap_mean_ci(diffs)
                    cells.append("%+.1f [%+.1f, %+.1f] (%d)" % (100 * mean, 100 * lo, 100 * hi,
                                                                 len(diffs)))
                if cells != ["n/a", "n/a"]:
                    print("| %s | %s | %s | %s | %s |" % (st, mode, where, cells[0], cells[1]))


def editing_minus_likn_table(j):
    """Does N_l act on the other language only through LIKN? Per fact with a LIKN and a non-empty
    N_l \\ LIKN: P(old) change under suppression of N_l minus under N_l \\ LIKN, same fact, same
    language measured (mean over the fact's measures per reliability / generality), with the set
    sizes; facts whose N_l lies inside LIKN are counted (they have no N_l \\ LIKN)."""
    sizes_likn, sizes_rest, inside = [], [], 0
    diffs = {"reliability": [], "generality": []}
    for f in j["facts"]:
        sets = f.get("sets", {})
        likn = sets.get("likn", [])
        if not likn:
            continue
        by = {}
        for m in f.get("measures", []):
            if m["mode"] == "suppress" and "~" not in m["set"]:
                by[(m["set"], m["language"])] = (m["p_old_after"] - m["p_old_before"]) / m["p_old_before"]
        per = {"reliability": [], "generality": []}
        for name in sets:
            if not name.endswith("_minus_likn"):
                continue
            lang = name[: -len("_minus_likn")]
            sizes_likn.append(len(likn))
            sizes_rest.append(len(sets[name]))
            for (st, where_l), c in by.items():
                if st == lang and (name, where_l) in by:
                    per["reliability" if where_l == lang else "generality"].append(
                        c - by[(name, where_l)])
        inside += sum(1 for name in sets if name not in ("likn", "all") and "_minus_likn" not in name
                      and name + "_minus_likn" not in sets)
        for w, v in per.items():
            if v:
                diffs[w].append(sum(v) / len(v))
    if not sizes_rest:
        return
    print("\nN_l against N_l \\ LIKN (suppression; per fact, P(old) change under N_l minus under "
          "N_l \\ LIKN, percentage points; negative = the LIKN neurons add to the effect):\n")
    print("| measured in | facts | N_l − (N_l \\ LIKN) [95% CI] | mean LIKN size | mean N_l \\ LIKN size |")
    print("|---|---|---|---|---|")
    for w in ("reliability", "generality"):
        if diffs[w]:
            mean, lo, hi = bootstrap_mean_ci(diffs[w])
            print("| %s | %d | %+.1f [%+.1f, %+.1f] | %.2f | %.2f |" % (
                w, len(diffs[w]), 100 * mean, 100 * lo, 100 * hi,
                sum(sizes_likn) / len(sizes_likn), sum(sizes_rest) / len(sizes_rest)))
    print("\n(fact, language) pairs with a LIKN whose N_l lies inside it (no N_l \\ LIKN): %d" % inside)
    editing_minus_likn_by_source(j)


def editing_minus_likn_by_source(j):
    """The same comparison per source language l (pooling the two directions can cancel), on the
    other language's P(old) under suppression: N_l, N_l \\ LIKN and N_l \\ LIKN beyond its random
    and |a|-matched controls on the facts with a LIKN; N_l beyond its controls on the facts
    without one (does a set transfer where nothing is shared?). Mean [95% CI] and median."""
    def change(m):
        return (m["p_old_after"] - m["p_old_before"]) / m["p_old_before"]

    def cell(v):
        if not v:
            return "n/a"
        mean, lo, hi = bootstrap_mean_ci(v)
        med = sorted(v)[len(v) // 2] if len(v) % 2 else sum(sorted(v)[len(v) // 2 - 1:len(v) // 2 + 1]) / 2
        return "%+.1f [%+.1f, %+.1f], median %+.1f (%d)" % (100 * mean, 100 * lo, 100 * hi, 100 * med, len(v))

    langs = sorted({m["language"] for f in j["facts"] for m in f.get("measures", [])})
    if len(langs) != 2:
        return
    print("\nPer source language, P(old) change in the other language under suppression (points; "
          "mean [95% CI], median (facts)):\n")
    print("| source l | facts | N_l | N_l \\ LIKN | N_l \\ LIKN − random control | "
          "N_l \\ LIKN − magnitude control |")
    print("|---|---|---|---|---|---|")
    rows_no = []
    for l in langs:
        other = langs[1] if l == langs[0] else langs[0]
        a, b, bc, bm, na, nc, nm = [], [], [], [], [], [], []
        for f in j["facts"]:
            by = {(m["set"], m["language"]): change(m) for m in f.get("measures", [])
                  if m["mode"] == "suppress"}
            if f.get("sets", {}).get("likn"):
                rest = l + "_minus_likn"
                if (l, other) in by and (rest, other) in by:
                    a.append(by[(l, other)])
                    b.append(by[(rest, other)])
                    if (rest + "~control", other) in by:
                        bc.append(by[(rest, other)] - by[(rest + "~control", other)])
                    if (rest + "~control_magnitude", other) in by:
                        bm.append(by[(rest, other)] - by[(rest + "~control_magnitude", other)])
            elif (l, other) in by:
                na.append(by[(l, other)])
                if (l + "~control", other) in by:
                    nc.append(by[(l, other)] - by[(l + "~control", other)])
                if (l + "~control_magnitude", other) in by:
                    nm.append(by[(l, other)] - by[(l + "~control_magnitude", other)])
        print("| %s → %s | %d | %s | %s | %s | %s |" % (l, other, len(a), cell(a), cell(b), cell(bc), cell(bm)))
        rows_no.append((l, other, na, nc, nm))
    print("\nFacts without a LIKN: N_l's effect on the other language and beyond its controls:\n")
    print("| source l | facts | N_l | N_l − random control | N_l − magnitude control |")
    print("|---|---|---|---|---|")
    for l, other, na, nc, nm in rows_no:
        print("| %s → %s | %d | %s | %s | %s |" % (l, other, len(na), cell(na), cell(nc), cell(nm)))


def factcheck_table(j):
    print("Fit: %s (only the test rows are evidence).\n" % j.get("fit", "in_sample"))
    print("| relation | language | train / test facts | train facts with DKN | relation set | θ | θp |")
    print("|---|---|---|---|---|---|---|")
    for r in j["relations"]:
        print("| %s | %s | %d / %d | %d | %d neurons | %.3g | %.3g |" % (
            r["relation"], r["language"], r["train_facts"], r["test_facts"],
            r["train_facts_with_dkn"], len(r["neurons"]), r["threshold"], r.get("threshold_p", 0)))
    print("\n| language | claims | checker | n | precision [95% CI] | recall [95% CI] | F1 [95% CI] "
          "| accuracy [95% CI] | precision (ref) | F1 (ref) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    names = (("dkn", "DKN"), ("baseline", "model top-1"), ("baseline_p", "P(candidate) ≥ θp"))
    for lang, v in sorted(j.get("summary", {}).items()):
        for split in ("test", "test_1to1", "train"):
            for who, name in names:
                c = v.get(split, {}).get(who)
                if not c:
                    continue
                r = lambda x: "n/a" if x is None else "%.3f" % x  # null: undefined rate

                def with_ci(k):  # the value and, where computed (held-out splits), its interval
                    out = r(c[k])
                    if c.get("ci") and c["ci"].get(k):
                        out += " [%.3f, %.3f]" % tuple(c["ci"][k])
                    return out
                print("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %s |" % (
                    lang, split, name, c["tp"] + c["fp"] + c["fn"] + c["tn"], with_ci("precision"),
                    with_ci("recall"), with_ci("f1"), with_ci("accuracy"), r(c["precision_ref"]),
                    r(c["f1_ref"])))
    if j["skipped"]:
        print("\nSkipped: " + "; ".join("%s [%s]: %s" % (x.get("fact"), x.get("language"), x.get("reason"))
                                        for x in j["skipped"]))


def _f1(cells):
    tp = sum(c[0] for c in cells)
    fp = sum(c[1] for c in cells)
    fn = sum(c[2] for c in cells)
    return None if tp + fn == 0 else 2 * tp / (2 * tp + fp + fn)  # 0 when nothing true accepted


def paired_bootstrap(units, stat, resamples=2000, level=0.95, seed=42):
    """stat(units) and its percentile interval over units (facts) resampled with replacement, the
    rule of statistics.hpp: s[floor(aR/2)], s[ceil((1 - a/2)R) - 1], a = 1 - level, over the R
    resamples where stat is defined (not None)."""
    import math
    import random
    rng = random.Random(seed)
    n = len(units)
    vals = []
    for _ in range(resamples):
        v = stat([units[rng.randrange(n)] for _ in range(n)])
        if v is not None:
            vals.append(v)
    vals.sort()
    a, r = 1 - level, len(vals)
    return stat(units), vals[int(math.floor(a * r / 2))], vals[int(math.ceil((1 - a / 2) * r)) - 1]


def factcheck_paired_table(j):
    """Held-out facts only. (1) F1 of the DKN checker minus F1 of each baseline on the same claims,
    facts resampled together (paired bootstrap). (2) Threshold-free: the share of facts whose true
    object gets the highest score among its candidates (DKN score vs P(candidate)), and the paired
    difference. Both decide whether DKN beats the baselines on this data."""
    rel = {(r["language"], r["relation"]): r for r in j["relations"]}
    accept = {
        "dkn": lambda c, r: c["score"] >= r["threshold"],
        "baseline": lambda c, r: c["model_top1"],
        "baseline_p": lambda c, r: c["p_model"] >= r["threshold_p"],
    }
    langs = sorted({c["language"] for c in j["claims"]})
    print("\nPaired on held-out facts (facts resampled together, 2000 resamples, seed 42):\n")
    print("| language | claims | facts | F1 DKN − model top-1 [95% CI] | F1 DKN − P(candidate) ≥ θp "
          "[95% CI] |")
    print("|---|---|---|---|---|")
    for lang in langs:
        for split in ("test", "test_1to1"):
            facts = {}
            for c in j["claims"]:
                if c["language"] != lang or c["fold"] != "test":
                    continue
                if split == "test_1to1" and c["candidate"] > 1:
                    continue
                r = rel[(lang, c["relation"])]
                row = []
                for who in ("dkn", "baseline", "baseline_p"):
                    a, t = bool(accept[who](c, r)), bool(c["true"])
                    row.append((int(a and t), int(a and not t), int(t and not a)))
                facts.setdefault((c["relation"], c["fact"]), []).append(row)
            units = list(facts.values())
            if len(units) < 2:
                continue
            cells = []
            for k in (1, 2):
                def diff(us, k=k):
                    a = _f1([row[0] for u in us for row in u])
                    b = _f1([row[k] for u in us for row in u])
                    return None if a is None or b is None else a - b
                d, lo, hi = paired_bootstrap(units, diff)
                cells.append("%+.3f [%+.3f, %+.3f]" % (d, lo, hi))
            print("| %s | %s | %d | %s | %s |" % (lang, split, len(units), cells[0], cells[1]))
    print("\nThreshold-free, held-out facts: share whose true object scores highest among its "
          "candidates (ties count against):\n")
    print("| language | facts | candidates per fact | DKN score [95% CI] | P(candidate) [95% CI] "
          "| DKN − P(candidate) [95% CI] |")
    print("|---|---|---|---|---|---|")
    for lang in langs:
        facts = {}
        for c in j["claims"]:
            if c["language"] == lang and c["fold"] == "test":
                facts.setdefault((c["relation"], c["fact"]), []).append(c)
        units = []
        for cs in facts.values():
            t = [c for c in cs if c["true"]]
            if len(t) != 1 or len(cs) < 2:
                continue
            others = [c for c in cs if not c["true"]]
            units.append((int(all(t[0]["score"] > o["score"] for o in others)),
                          int(all(t[0]["p_model"] > o["p_model"] for o in others)), len(cs)))
        if len(units) < 2:
            continue
        mean = lambda k: (lambda us: sum(u[k] for u in us) / len(us))
        a, b = paired_bootstrap(units, mean(0)), paired_bootstrap(units, mean(1))
        d = paired_bootstrap(units, lambda us: mean(0)(us) - mean(1)(us))
        print("| %s | %d | %.1f | %.3f [%.3f, %.3f] | %.3f [%.3f, %.3f] | %+.3f [%+.3f, %+.3f] |" % (
            lang, len(units), sum(u[2] for u in units) / len(units), *a, *b, *d))


def main(path, per_fact=True):
    j = json.load(open(path))
    if "claims" in j:
        factcheck_table(j)
        return factcheck_paired_table(j)
    if any("/reliability" in k for k in j.get("summary", {})):
        editing_table(j)
        editing_paired_table(j)
        return editing_minus_likn_table(j)
    s = j["summary"]
    if any("mean_neurons" in v for v in s.get("languages", {}).values()):
        sys.exit("%s: written before the evaluation protocol (no intervals, one unrelated prompt "
                 "per relation); re-run it with this version of knprobe" % path)
    o = j.get("options", {})
    print("Options: method %s, m = %s, quadrature %s, thresholds %s, controls %s, %d facts.\n" % (
        o.get("method"), o.get("steps"), o.get("quadrature"), o.get("thresholds"),
        o.get("controls"), len(j["facts"])))
    print("| language | facts | answer is top-1 | neurons | Succ [95% CI] | max completeness δ (mean) [95% CI] |")
    print("|---|---|---|---|---|---|")
    for lang, v in sorted(s["languages"].items()):
        succ = v.get("succ") or {}
        sv = "n/a" if succ.get("value") is None else "%.1f" % succ["value"]
        if succ.get("ci"):
            sv += " [%.1f, %.1f]" % tuple(succ["ci"])
        if succ.get("unstable") and succ.get("value") is not None:
            sv += " (unstable)"
        top1 = v.get("top1", {})
        delta = v.get("max_completeness_delta")
        print("| %s | %d | %s | %s | %s | %s |" % (
            lang, v["facts"], ci_num(top1, "%.2f"), ci_num(v.get("neurons"), "%.1f"), sv,
            ci_num(delta, "%.2g") if delta else "n/a"))
    print("\nRelative change of P(answer), mean over facts [95% CI] (mean abs for the unrelated "
          "facts in its own column):\n")
    print("| language | set | intervention | related | unrelated | unrelated, mean abs "
          "| random control | magnitude control |")
    print("|---|---|---|---|---|---|---|---|")
    for lang, v in sorted(s["languages"].items()):
        for prefix, name in (("", "N_lang"), ("likn_", "LIKN")):
            for what in ("suppress", "enhance"):
                k = prefix + what + "_"
                if k + "related" not in v:
                    continue
                print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                    lang, name, what, ci_pct(v.get(k + "related")), ci_pct(v.get(k + "unrelated")),
                    ci_pct(v.get(k + "unrelated_abs")), ci_pct(v.get(k + "control")),
                    ci_pct(v.get(k + "control_magnitude"))))
    ls = s.get("likn_size", {})
    print("\nLIKN: %s neurons per fact; %d of %d facts have at least one." % (
        ci_num(ls, "%.2f"), s["facts_with_likn"], s["facts_multilingual"]))
    for lang, v in sorted(s["languages"].items()):
        r = v.get("recurrence")
        if not r:
            continue
        top = ", ".join("L%d.%d in %d facts / %d relations" % (t["layer"], t["unit"], t["facts"], t["relations"])
                        for t in r["top"][:5])
        print("\nRecurrence [%s]: %d neurons are selected for more than 10%% of the %d facts; most "
              "frequent: %s; dropped as generic: %d." % (
                  lang, r["neurons_in_over_10pct_of_facts"], r["facts"], top, r["dropped_generic"]))
    if not per_fact:
        return
    langs = sorted(s["languages"])
    print("\nPer fact (neurons per language / LIKN, suppress related per language):\n")
    print("| fact | " + " | ".join(langs) + " | LIKN | " + " | ".join("suppress " + l for l in langs) + " |")
    print("|---|" + "---|" * (2 * len(langs) + 1))
    for f in j["facts"]:
        L = f.get("languages", {})
        print("| %s | %s | %d | %s |" % (
            f["id"], " | ".join(str(len(L.get(l, {}).get("neurons", []))) for l in langs), len(f["likn"]),
            " | ".join(pct(L.get(l, {}).get("suppress", {}).get("related")) for l in langs)))
    if j["skipped"]:
        print("\nSkipped: " + "; ".join("%s [%s]: %s" % (x.get("fact"), x.get("language"), x.get("reason"))
                                        for x in j["skipped"]))


if __name__ == "__main__":
    main(sys.argv[1], "--no-per-fact" not in sys.argv[2:])
