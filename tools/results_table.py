#!/usr/bin/env python3
"""Markdown tables from a `knprobe localize`, `knprobe edit` or `knprobe factcheck` result file
(used for docs/results.md); the kind is recognised from the file's content.

Usage: python3 tools/results_table.py results/main-job/localize.json [--no-per-fact]
       python3 tools/results_table.py RUN/editing.json
       python3 tools/results_table.py RUN/factcheck.json
"""
import json
import sys


def pct(x):
    return "n/a" if x is None else "%+.1f%%" % (100 * x)


def editing_table(j):
    """Rows: neuron set × intervention; reliability = measured in the set's source language,
    generality = in the other languages, locality = mean |relative change| of unrelated facts."""
    s = j["summary"]
    print("| set | intervention | P(old) change, same language | flipped to new | P(old) change, "
          "other language | flipped to new | mean abs unrelated change (same / other) |")
    print("|---|---|---|---|---|---|---|")
    for st in ("N_source", "likn", "all"):
        for mode in ("suppress", "erase", "edit"):
            r, g = s.get("%s/%s/reliability" % (st, mode)), s.get("%s/%s/generality" % (st, mode))
            if not r or not g:
                continue
            fl = lambda v: "n/a" if v.get("flipped") is None else "%.0f%%" % (100 * v["flipped"])
            print("| %s | %s | %s | %s | %s | %s | %.1f%% / %.1f%% |" % (
                st, mode, pct(r["mean_old_change"]), fl(r), pct(g["mean_old_change"]), fl(g),
                100 * r["mean_abs_unrelated_change"], 100 * g["mean_abs_unrelated_change"]))


def factcheck_table(j):
    print("| relation | language | train / test facts | train facts with DKN | relation set | θ |")
    print("|---|---|---|---|---|---|")
    for r in j["relations"]:
        print("| %s | %s | %d / %d | %d | %d neurons | %.3g |" % (
            r["relation"], r["language"], r["train_facts"], r["test_facts"],
            r["train_facts_with_dkn"], len(r["neurons"]), r["threshold"]))
    print("\n| language | split | checker | claims | precision | recall | F1 | accuracy "
          "| precision (ref) | F1 (ref) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lang, v in sorted(j.get("summary", {}).items()):
        for split in ("test", "train"):
            for who, name in (("dkn", "DKN"), ("baseline", "model top-1")):
                c = v[split][who]
                print("| %s | %s | %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |" % (
                    lang, split, name, c["tp"] + c["fp"] + c["fn"] + c["tn"], c["precision"],
                    c["recall"], c["f1"], c["accuracy"], c["precision_ref"], c["f1_ref"]))
    if j["skipped"]:
        print("\nSkipped: " + "; ".join("%s [%s]: %s" % (x.get("fact"), x.get("language"), x.get("reason"))
                                        for x in j["skipped"]))


def main(path, per_fact=True):
    j = json.load(open(path))
    if "claims" in j:
        return factcheck_table(j)
    if any("/reliability" in k for k in j.get("summary", {})):
        return editing_table(j)
    s = j["summary"]
    o = j.get("options", {})
    print("Options: method %s, m = %s, quadrature %s, thresholds %s, %d facts.\n" % (
        o.get("method"), o.get("steps"), o.get("quadrature"), o.get("thresholds"), len(j["facts"])))
    print("| language | facts | answer is top-1 | mean neurons | suppress related | unrelated | random control "
          "| enhance related | unrelated | random control | Succ | max completeness δ (mean) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for lang, v in sorted(s["languages"].items()):
        succ = v.get("succ")
        if succ is None:  # results written before Succ was in the summary
            er, eu = v.get("mean_enhance_related"), v.get("mean_enhance_unrelated")
            sr, su = v.get("mean_suppress_related"), v.get("mean_suppress_unrelated")
            if None not in (er, eu, sr, su) and eu != 0 and su != 0:
                succ = abs(er / eu) + abs(sr / su)
        print("| %s | %d | %s | %.1f | %s | %s | %s | %s | %s | %s | %s | %.2g |" % (
            lang, v["facts"], "%.0f%%" % (100 * (v.get("mean_top1") or 0)), v["mean_neurons"], pct(v.get("mean_suppress_related")),
            pct(v.get("mean_suppress_unrelated")), pct(v.get("mean_suppress_control")),
            pct(v.get("mean_enhance_related")), pct(v.get("mean_enhance_unrelated")),
            pct(v.get("mean_enhance_control")), "n/a" if succ is None else "%.1f" % succ,
            v.get("mean_max_completeness_delta") or 0))
    print("\nLIKN: mean %.2f neurons per fact; %d of %d facts have at least one." % (
        s["mean_likn"] or 0, s["facts_with_likn"], s["facts_multilingual"]))
    print("\n| language | suppress LIKN (related) | enhance LIKN (related) |")
    print("|---|---|---|")
    for lang, v in sorted(s["languages"].items()):
        print("| %s | %s | %s |" % (lang, pct(v.get("mean_likn_suppress_related")),
                                   pct(v.get("mean_likn_enhance_related"))))
    if not per_fact:
        return
    print("\nPer fact (neurons en / zh / LIKN, suppress related en / zh):\n")
    print("| fact | en | zh | LIKN | suppress en | suppress zh |")
    print("|---|---|---|---|---|---|")
    for f in j["facts"]:
        L = f.get("languages", {})
        en, zh = L.get("en", {}), L.get("zh", {})
        print("| %s | %d | %d | %d | %s | %s |" % (
            f["id"], len(en.get("neurons", [])), len(zh.get("neurons", [])), len(f["likn"]),
            pct(en.get("suppress", {}).get("related")), pct(zh.get("suppress", {}).get("related"))))
    if j["skipped"]:
        print("\nSkipped: " + "; ".join("%s [%s]: %s" % (x.get("fact"), x.get("language"), x.get("reason"))
                                        for x in j["skipped"]))


if __name__ == "__main__":
    main(sys.argv[1], "--no-per-fact" not in sys.argv[2:])
