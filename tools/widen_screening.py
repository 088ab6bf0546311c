#!/usr/bin/env python3
"""Turns the screening cache of a `--screen rank:k` scan (<out>/screening.jsonl) into the cache of
a `--screen rank:K` scan, K > k, without re-asking the model what it already answered:

  * a kept verdict stays kept (every answer token within the top k ⊂ top K);
  * a rejection "an answer token has rank r (> k)" stays a rejection when r > K (that token, the
    first failing one in token order, fails rank:K too), and is dropped when r <= K, so that the
    rank:K scan screens that fact again (its later tokens or its other language decide).

`knprobe localize ... --screen rank:K --screen-only --out DIR` then resumes from DIR/screening.jsonl
and screens only the dropped facts and those never reached; the result equals a from-scratch
rank:K scan (the model is deterministic, the visiting order and caps are the scan's own).

Usage: widen_screening.py OLD/screening.jsonl NEW/screening.jsonl K
"""
import json
import re
import sys


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    src, dst, new_k = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with open(src, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    if not records or records[0].get("record") != "header":
        raise SystemExit(f"{src}: no screening header on line 1")
    head = records[0]
    scr = head["screening"]
    old_k = scr.get("max_rank", 0)
    if not re.fullmatch(r"rank<=\d+", scr.get("rule", "")) or old_k <= 0:
        raise SystemExit(f"{src}: rule {scr.get('rule')!r} is not a rank rule")
    if new_k <= old_k:
        raise SystemExit(f"K = {new_k} must exceed the old rank {old_k}")
    scr["max_rank"] = new_k
    scr["rule"] = f"rank<={new_k}"
    kept = carried = dropped = 0
    out = [head]
    for r in records[1:]:
        if r.get("record") != "verdict":
            raise SystemExit(f"{src}: unexpected record {r.get('record')!r}")
        reason = r.get("reason", "")
        if not reason:
            kept += 1
            out.append(r)
            continue
        m = re.fullmatch(r"an answer token has rank (\d+) \(> (\d+)\)", reason)
        if not m or int(m.group(2)) != old_k:
            raise SystemExit(f"{src}: cannot widen the verdict {reason!r}")
        if int(m.group(1)) > new_k:
            r["reason"] = f"an answer token has rank {m.group(1)} (> {new_k})"
            carried += 1
            out.append(r)
        else:
            dropped += 1
    with open(dst, "w", encoding="utf-8") as f:
        for r in out:
            f.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"{kept} kept, {carried} rejections carried over (rank > {new_k}), "
          f"{dropped} to screen again")
    return 0


if __name__ == "__main__":
    sys.exit(main())
