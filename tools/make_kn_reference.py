#!/usr/bin/env python3
"""Golden attribution scores from the reference implementation, EleutherAI `knowledge-neurons`
(PyPI 0.0.2), on the tiny random GPT-2 and BERT fixtures of tools/make_hf_dense_fixtures.py.
knprobe's `paper_compat` attribution (IG, zero baseline, the reference's linspace quadrature,
score = a * mean of gradients) must reproduce them (tests/probe/test_paper_compat.cpp).

The fixtures have no trained tokenizer, so prompts are written as space-separated token ids and a
small tokenizer class maps them 1:1 (the reference only calls tokenizer(prompt), encode, decode,
convert_tokens_to_ids and mask_token_id); what is compared is the attribution, not tokenization.

Usage: pip install torch transformers einops; pip install --no-deps knowledge-neurons==0.0.2
       python3 tools/make_kn_reference.py
"""
import json
import os

import torch
from knowledge_neurons import KnowledgeNeurons
from transformers import BatchEncoding, BertForMaskedLM, GPT2LMHeadModel

HF = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf")
MASK = 3


class IdTokenizer:
    """'1 17 [MASK] 5' -> [1, 17, MASK, 5]."""
    mask_token_id = MASK

    def __init__(self, bert):
        self.bert = bert

    def ids(self, text):
        return [MASK if w == "[MASK]" else int(w) for w in text.split()]

    def __call__(self, text, return_tensors="pt"):
        ids = torch.tensor([self.ids(text)])
        enc = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.bert:
            enc["token_type_ids"] = torch.zeros_like(ids)
        return BatchEncoding(enc)

    def encode(self, text):
        return self.ids(text)

    def convert_tokens_to_ids(self, token):
        return int(token)

    def decode(self, ids):
        return " " + " ".join(str(i) for i in ([ids] if isinstance(ids, int) else ids))


def main():
    cases = []
    specs = [
        ("gpt2_tiny", GPT2LMHeadModel, "gpt", "1 17 5 33 3", 9),
        ("gpt2_tiny", GPT2LMHeadModel, "gpt", "2 40 7", 30),
        ("bert_tiny", BertForMaskedLM, "bert", "1 17 5 [MASK] 41 2", 9),
        ("bert_tiny", BertForMaskedLM, "bert", "1 [MASK] 60 12 2", 50),
    ]
    for name, cls, kind, prompt, target in specs:
        model = cls.from_pretrained(os.path.join(HF, name), attn_implementation="eager").eval()
        tok = IdTokenizer(kind == "bert")
        kn = KnowledgeNeurons(model, tok, model_type=kind, device="cpu")
        scores = kn.get_scores(prompt, str(target), batch_size=10, steps=20, pbar=False)
        ids = tok.ids(prompt)
        pos = ids.index(MASK) if kind == "bert" else len(ids) - 1
        cases.append({"model": name, "ids": ids, "position": pos, "target": target, "steps": 20,
                      "scores": [[float("%.9g" % v) for v in row] for row in scores.tolist()]})
    with open(os.path.join(HF, "kn_reference.json"), "w") as f:
        json.dump({"generator": "knowledge-neurons 0.0.2 (EleutherAI), get_scores(steps=20, "
                                "batch_size=10)", "cases": cases}, f)


if __name__ == "__main__":
    main()
