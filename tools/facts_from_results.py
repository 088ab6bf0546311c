#!/usr/bin/env python3
"""The facts of a `knprobe localize` result file as a JSON Lines fact file, so that another method
or option set runs on exactly the same facts without screening again (e.g. IG after an AMIG run on
screened mLAMA facts). Writes to a path of your choice — mLAMA-derived files stay out of the repo.

Usage: python3 tools/facts_from_results.py RUN/localize.json OUT.jsonl
"""
import json
import sys


def main(src, dst):
    j = json.load(open(src))
    with open(dst, "w") as out:
        for f in j["facts"]:
            langs = f.get("languages", {})
            out.write(json.dumps({
                "id": f["id"], "relation": f.get("relation", ""),
                "prompts": {l: r["prompt"] for l, r in langs.items()},
                "answers": {l: r["answer"] for l, r in langs.items()}}, ensure_ascii=False) + "\n")
    print("wrote %d facts to %s" % (len(j["facts"]), dst))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
