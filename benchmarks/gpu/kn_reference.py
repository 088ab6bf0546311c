#!/usr/bin/env python3
"""EleutherAI `knowledge-neurons` 0.0.2 (the PyTorch reference) on the GPU: IG scores of every
layer for the spec's prompts, with the same steps and a batch of `steps` (one batch per layer),
timed after one warm-up prompt. Writes prompts/s and the scores of the first prompt.

  python3 benchmarks/gpu/kn_reference.py --spec /tmp/spec.json --out kn.json
"""
import argparse
import json
import os
import sys
import time

import torch
from transformers import GPT2LMHeadModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tools"))
from make_kn_reference import IdTokenizer  # noqa: E402
from knowledge_neurons import KnowledgeNeurons  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=6)
    a = ap.parse_args()
    with open(a.spec) as f:
        spec = json.load(f)
    steps = spec["steps"]
    model = GPT2LMHeadModel.from_pretrained(spec["model"], dtype=torch.float32).cuda().eval()
    model.config._attn_implementation = "eager"
    torch.backends.cuda.matmul.allow_tf32 = False  # FP32, as knprobe's default
    kn = KnowledgeNeurons(model, IdTokenizer(False), model_type="gpt", device="cuda")

    def run(case):
        prompt = " ".join(str(i) for i in case["ids"])
        return kn.get_scores(prompt, str(case["target"]), batch_size=steps, steps=steps,
                             pbar=False)

    cases = spec["cases"]
    first = run(cases[0]).detach().double().cpu()  # warm-up and the parity scores
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(a.prompts):
        run(cases[i % len(cases)])
    torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    out = {"prompts": a.prompts, "seconds": sec, "prompts_per_s": a.prompts / sec,
           "torch": torch.__version__, "device": torch.cuda.get_device_name(0),
           "scores_case0": first.tolist()}
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(f"knowledge-neurons: {a.prompts / sec:.3f} prompts/s on {out['device']}")


if __name__ == "__main__":
    main()
