#!/usr/bin/env python3
"""Paired tables for Dai's refinement of a `knprobe run` (docs/METHOD.md §10).

Usage: refinement_table.py RUN.jsonl REFINED.jsonl [CONTROL.jsonl]

RUN is a finished run, REFINED its `--drop-generic F` refinement and CONTROL (optional) its
`--drop-generic F --random-drop` control, all of the same facts. Prints, as Markdown:
- the LIKN of the facts that have one in both RUN and REFINED: suppression of P(answer) and the
  mean |change| of the unrelated facts, per language, refined − run (bootstrap 95 % CI over facts,
  2000 resamples, seed 42);
- how many reduced sets are empty;
- with CONTROL: per (fact, language) present as a result in both REFINED and CONTROL, refined −
  control for the set's own suppression and the unrelated movement, and the same for the LIKN of
  the facts that have one in both.
"""
import json
import random
import sys


def load(path):
    with open(path) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    return lines[0], lines[1:]


def boot(v, resamples=2000, seed=42):
    rng = random.Random(seed)
    n = len(v)
    means = sorted(sum(v[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples))
    return sum(v) / n, means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def likn_records(recs):
    return {r["index"]: r for r in recs
            if r["record"] == "likn" and r.get("neurons") and "suppress" in r}


def results(recs):
    return {(r["index"], r["language"]): r for r in recs if r["record"] == "result"}


def paired_rows(pairs, label_a, label_b):
    """pairs: list of (row label, [(a value, b value)]) → Markdown rows with b − a and its CI."""
    for label, vals in pairs:
        if len(vals) < 2:
            print("| %s | %d | n/a | n/a |" % (label, len(vals)))
            continue
        a = [x for x, _ in vals]
        b = [y for _, y in vals]
        m, lo, hi = boot([y - x for x, y in vals])
        print("| %s | %d | %.1f %% → %.1f %% | %+.1f [%+.1f, %+.1f] |" % (
            label, len(vals), sum(a) / len(a), sum(b) / len(b), m, lo, hi))


def effect_pairs(ra, rb, key, langs):
    rows = []
    for lang in langs:
        for field, name in (("related", "suppress, related"),
                            ("unrelated_abs", "unrelated mean \\|Δ\\|")):
            vals = []
            for k in sorted(set(ra) & set(rb)):
                ea = key(ra[k], lang)
                eb = key(rb[k], lang)
                if ea is not None and eb is not None and field in ea and field in eb:
                    vals.append((100 * ea[field], 100 * eb[field]))
            rows.append(("%s | %s" % (lang, name), vals))
    return rows


def main(run_path, refined_path, control_path=None):
    header, run = load(run_path)
    _, refined = load(refined_path)
    langs = header["options"]["languages"]
    la, lb = likn_records(run), likn_records(refined)
    print("LIKN of the facts that have one in both (%d; run only %d, refined only %d); "
          "refined − run:\n" % (len(set(la) & set(lb)), len(set(la) - set(lb)),
                                len(set(lb) - set(la))))
    print("| language | value | facts | run → refined | refined − run [95% CI] |")
    print("|---|---|---|---|---|")
    paired_rows(effect_pairs(la, lb, lambda r, l: r["suppress"].get(l), langs), "run", "refined")
    empty = {}
    for r in refined:
        if r["record"] == "result" and not r["neurons"]:
            empty[r["language"]] = empty.get(r["language"], 0) + 1
    print("\nEmpty reduced sets: %s of %d results per language.\n" % (
        ", ".join("%s %d" % (l, empty.get(l, 0)) for l in langs),
        len(results(refined)) // max(1, len(langs))))
    if not control_path:
        return
    chdr, control = load(control_path)
    if chdr["options"].get("drop_rule") != "random":
        sys.exit("%s is not a --random-drop control" % control_path)
    fails = sum(1 for r in control if r["record"] == "failure" and
                "random-drop control impossible" in r.get("reason", ""))
    rr, rc = results(refined), results(control)
    print("Refined vs its random-drop control (%d (fact, language) results in both; %d cannot be "
          "matched: fewer non-generic than generic neurons); refined − control:\n"
          % (len(set(rr) & set(rc)), fails))
    print("| language | value | results | control → refined | refined − control [95% CI] |")
    print("|---|---|---|---|---|")
    rows = []
    for lang in langs:
        a = {k: v for k, v in rc.items() if k[1] == lang}
        b = {k: v for k, v in rr.items() if k[1] == lang}
        rows += [r for r in effect_pairs(a, b, lambda r, l: r["suppress"], [lang])]
    paired_rows(rows, "control", "refined")
    lc = likn_records(control)
    print("\nLIKN, refined vs control (facts with one in both: %d); refined − control:\n"
          % len(set(lc) & set(lb)))
    print("| language | value | facts | control → refined | refined − control [95% CI] |")
    print("|---|---|---|---|---|")
    paired_rows(effect_pairs(lc, lb, lambda r, l: r["suppress"].get(l), langs), "control",
                "refined")


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    main(*sys.argv[1:])
