#!/usr/bin/env python3
"""knprobe vs the PyTorch reference, EleutherAI `knowledge-neurons` 0.0.2, in one script: the same
random-weight GPT-2 checkpoint (the real gpt2 configuration, written here with save_pretrained),
the same token-id prompts, IG over all 12 layers with the same steps and batch, on this machine's
CPU. Reports prompts/s of both, their ratio, and the worst score difference (knprobe's
reference mode must reproduce the reference's scores).

Usage (after building benchmarks/bench_kn_compare):
  pip install torch transformers einops && pip install --no-deps knowledge-neurons==0.0.2
  python3 benchmarks/compare_knowledge_neurons.py --bench build/benchmarks/bench_kn_compare
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
from make_kn_reference import IdTokenizer  # noqa: E402
from knowledge_neurons import KnowledgeNeurons  # noqa: E402

CASES = [  # token-id prompts (8, 11 and 14 tokens) and their target ids
    {"ids": [464, 3139, 286, 4881, 318, 262, 1748, 286], "target": 6342},
    {"ids": [464, 1743, 3303, 286, 7595, 318, 11, 286, 1781, 11, 262], "target": 21691},
    {"ids": [40, 2993, 326, 262, 6403, 1181, 286, 262, 3576, 1578, 286, 4881, 318, 262],
     "target": 1578},
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", required=True, help="path of the bench_kn_compare binary")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", default="kn_compare.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        model = GPT2LMHeadModel(GPT2Config()).eval()  # gpt2: 12 layers, 768, vocab 50257
        model.config._attn_implementation = "eager"
        model.save_pretrained(d, safe_serialization=True)

        kn = KnowledgeNeurons(model, IdTokenizer(False), model_type="gpt", device="cpu")
        ref_scores = []
        t0 = time.perf_counter()
        for c in CASES:
            prompt = " ".join(str(i) for i in c["ids"])
            s = kn.get_scores(prompt, str(c["target"]), batch_size=a.batch, steps=a.steps,
                              pbar=False)
            ref_scores.append(s.detach().double())
        ref_s = time.perf_counter() - t0

        spec = os.path.join(d, "spec.json")
        res = os.path.join(d, "knprobe.json")
        with open(spec, "w") as f:
            json.dump({"model": d, "steps": a.steps, "repeats": 3, "cases": CASES}, f)
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        subprocess.run([a.bench, spec, res], check=True, env=env)
        with open(res) as f:
            kp = json.load(f)

    worst = 0.0
    for ref, ours in zip(ref_scores, kp["reference_mode"]["scores"]):
        ours = torch.tensor(ours, dtype=torch.float64)
        worst = max(worst, float((ours - ref).abs().max() / ref.abs().max()))
    ref_rate = len(CASES) / ref_s
    out = {
        "machine": {"threads": a.threads, "torch": torch.__version__},
        "model": "random GPT-2 (gpt2 configuration, 124M parameters)",
        "steps": a.steps, "batch": a.batch, "prompts": len(CASES),
        "knowledge_neurons": {"seconds": ref_s, "prompts_per_s": ref_rate},
        "knprobe_reference_mode": {k: v for k, v in kp["reference_mode"].items() if k != "scores"},
        "knprobe_default_mode": {k: v for k, v in kp["default_mode"].items() if k != "scores"},
        "speedup_reference_mode": kp["reference_mode"]["prompts_per_s"] / ref_rate,
        "speedup_default_mode": kp["default_mode"]["prompts_per_s"] / ref_rate,
        "worst_relative_score_difference": worst,
    }
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    print(f"| knowledge-neurons | {ref_rate:.3f} prompts/s | knprobe (reference mode) "
          f"{kp['reference_mode']['prompts_per_s']:.3f} prompts/s | "
          f"{out['speedup_reference_mode']:.1f}x | scores agree to {worst:.1e} |")


if __name__ == "__main__":
    main()
