#!/usr/bin/env python3
"""SentencePiece-style tokenizer.json fixtures (Llama 2, Mistral 7B, Gemma: BPE over characters
with "▁" for spaces and byte fallback), run by hand; the small outputs are committed under
tests/data/tokenizers/spm_json/:

- <variant>/tokenizer.json: one small BPE vocabulary trained with Hugging Face `tokenizers` on a
  built-in corpus (words cut before each "▁", as SentencePiece does), with the 256 byte pieces
  <0x00>..<0xFF> in the vocabulary as Llama 2 has them, written with the normalizer /
  pre-tokenizer / post-processor of each design:
    llama2     normalizer Sequence[Prepend("▁"), Replace(" ", "▁")], no pre-tokenizer, BOS
               template (Llama 2 and Mistral 7B's "legacy" files);
    metaspace  Metaspace(prepend_scheme "first", split false), BOS template (newer conversions);
    gemma      Replace(" ", "▁") only (no prefix), Split(" ") pre-tokenizer, <bos> template,
               Gemma's special-token order and a non-special added token;
    split_unk  Metaspace(prepend_scheme "always", split true), no template, no byte fallback:
               unknown characters become <unk>, consecutive ones fused (fuse_unk);
    llama2_normalized  llama2 with its added tokens marked "normalized": true, as the original
               Llama / Llama 2 files have them (matched in the normalized text as "▁</s>").
- expected.json: the ids `tokenizers` assigns to every string of the set (special tokens added
  as the template says), for each variant.

Usage: pip install tokenizers; python3 tools/make_spm_json_fixtures.py
"""
import copy
import json
import os

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from make_bpe_fixtures import CORPUS, STRINGS

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizers", "spm_json")
BAR = "\u2581"

EXTRA = [
    " Paris", "<s>Hello world", "a </s> b", "x<start_of_turn>y <start_of_turn>", "<mask>ed",
    "▁already▁barred", "  two leading", "emoji only 🙂🙂🙂", "ӂӂ unseen cyrillic", "<unk> text",
    "a<s>b", "x </s>", " </s> </s>",
]


def train():
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=BAR, prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    j = json.loads(tok.to_str())
    trained = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    merges = [m if isinstance(m, list) else m.split(" ") for m in j["model"]["merges"]]
    return [p for p, _ in trained if p != "<unk>"], merges


def added(content, i, special=True, normalized=False):
    return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
            "normalized": normalized, "special": special}


def template(bos, i):
    return {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [i], "tokens": [bos]}}}


def build(variant, pieces, merges):
    if variant == "gemma":
        specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>"]
    else:
        specials = ["<unk>", "<s>", "</s>"]
    vocab = {}
    for s in specials:
        vocab[s] = len(vocab)
    if variant != "split_unk":
        for b in range(256):
            vocab[f"<0x{b:02X}>"] = len(vocab)
    for p in pieces:
        if p not in vocab:
            vocab[p] = len(vocab)
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": variant != "split_unk",
             "ignore_merges": False, "vocab": vocab, "merges": copy.deepcopy(merges)}
    j = {"version": "1.0", "truncation": None, "padding": None,
         "added_tokens": [added(s, vocab[s], special=(s != "<mask>"),
                                normalized=(variant == "llama2_normalized")) for s in specials],
         "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": None,
         "model": model}
    replace = {"type": "Replace", "pattern": {"String": " "}, "content": BAR}
    if variant in ("llama2", "llama2_normalized"):
        j["normalizer"] = {"type": "Sequence",
                           "normalizers": [{"type": "Prepend", "prepend": BAR}, replace]}
        j["post_processor"] = template("<s>", vocab["<s>"])
    elif variant == "metaspace":
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": BAR, "prepend_scheme": "first",
                              "split": False}
        j["post_processor"] = template("<s>", vocab["<s>"])
    elif variant == "gemma":
        j["normalizer"] = replace
        j["pre_tokenizer"] = {"type": "Split", "pattern": {"String": " "},
                              "behavior": "MergedWithPrevious", "invert": False}
        j["post_processor"] = template("<bos>", vocab["<bos>"])
    else:
        j["pre_tokenizer"] = {"type": "Metaspace", "replacement": BAR, "prepend_scheme": "always",
                              "split": True}
    return j


def main():
    os.makedirs(OUT, exist_ok=True)
    pieces, merges = train()
    strings = STRINGS + EXTRA
    expected = {}
    for variant in ["llama2", "llama2_normalized", "metaspace", "gemma", "split_unk"]:
        j = build(variant, pieces, merges)
        text = json.dumps(j, ensure_ascii=False, indent=1)
        tok = Tokenizer.from_str(text)
        os.makedirs(os.path.join(OUT, variant), exist_ok=True)
        with open(os.path.join(OUT, variant, "tokenizer.json"), "w") as f:
            f.write(text)
        expected[variant] = {s: tok.encode(s).ids for s in strings}
    json.dump({"generator": "tools/make_spm_json_fixtures.py", "ids": expected},
              open(os.path.join(OUT, "expected.json"), "w"), ensure_ascii=False, indent=1)
    # The variants must differ where their rules do (a fixture set that agreed everywhere would
    # not test the rules).
    for a, b in [("llama2", "llama2_normalized"), ("llama2", "metaspace"), ("metaspace", "gemma"), ("gemma", "split_unk")]:
        n = sum(expected[a][s] != expected[b][s] for s in strings)
        print(f"{a} vs {b}: {n} of {len(strings)} strings differ")
        assert n > 0


if __name__ == "__main__":
    main()
