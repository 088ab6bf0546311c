#!/usr/bin/env python3
"""Take N facts from a JSON Lines fact file round-robin over its relations (file order within each
relation), so that a small run has facts of several relations: the unrelated-fact measurements
(suppress / enhance "unrelated", editing locality) and the edit's new answer need another relation.
Writes to a path of your choice — mLAMA-derived files stay out of the repo.

Usage: python3 tools/mix_relations.py IN.jsonl OUT.jsonl N
"""
import json
import sys
from collections import OrderedDict


def main(src, dst, n):
    by_rel = OrderedDict()
    for line in open(src, encoding="utf-8"):
        if line.strip():
            f = json.loads(line)
            by_rel.setdefault(f.get("relation", ""), []).append(f)
    out, k = [], 0
    while len(out) < n and any(k < len(v) for v in by_rel.values()):
        for v in by_rel.values():
            if k < len(v) and len(out) < n:
                out.append(v[k])
        k += 1
    with open(dst, "w", encoding="utf-8") as o:
        for f in out:
            o.write(json.dumps(f, ensure_ascii=False) + "\n")
    counts = {}
    for f in out:
        counts[f.get("relation", "")] = counts.get(f.get("relation", ""), 0) + 1
    print("wrote %d facts to %s (%s)" % (len(out), dst,
                                         ", ".join("%s %d" % kv for kv in counts.items())))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
