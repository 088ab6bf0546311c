#!/usr/bin/env python3
"""Cuts the small real mLAMA 1.1 fixture that tests/data/mlama/ holds (CC BY-NC-SA 4.0, see the
LICENSE and README there) out of a full mLAMA 1.1 tree.

Usage: python3 tools/make_mlama_fixture.py ../shared/data/mlama1.1 tests/data/mlama

Keeps, for each of RELATIONS, the first PER_RELATION lineids present in every language of LANGS
(train and dev split kept as they are, so that the loader's concatenation is exercised), and the
templates of those relations. Deterministic: the same input gives the same bytes.
"""
import json
import pathlib
import sys

LANGS = ["en", "zh", "fr", "ja"]
RELATIONS = ["P36", "P103", "P17"]
PER_RELATION = 8


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def main(src, dst):
    src, dst = pathlib.Path(src), pathlib.Path(dst)
    for rel in RELATIONS:
        ids_by_lang = []
        for lang in LANGS:
            ids = set()
            for split in ("train", "dev"):
                for line in read_lines(src / lang / rel / f"{split}.jsonl"):
                    ids.add(json.loads(line)["lineid"])
            ids_by_lang.append(ids)
        keep = sorted(set.intersection(*ids_by_lang))[:PER_RELATION]
        for lang in LANGS:
            for split in ("train", "dev"):
                lines = [l for l in read_lines(src / lang / rel / f"{split}.jsonl")
                         if json.loads(l)["lineid"] in keep]
                out = dst / lang / rel / f"{split}.jsonl"
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    for lang in LANGS:
        for split in ("train", "dev"):
            lines = [l for l in read_lines(src / lang / "templates" / f"{split}.jsonl")
                     if json.loads(l)["relation"] in RELATIONS]
            out = dst / lang / "templates" / f"{split}.jsonl"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text("".join(l + "\n" for l in lines), encoding="utf-8")


if __name__ == "__main__":
    main(*sys.argv[1:3])
