#!/usr/bin/env python3
"""Writes a randomly initialised GPT-2-architecture checkpoint of a real configuration (default:
mGPT-1.3B, ai-forever/mGPT: 24 layers, d 2048, 16 heads, FFN 8192, vocabulary 100000) with
`save_pretrained` (safetensors, FP32), plus the benchmark's spec: random token-id prompts of 8-14
tokens and their targets, fixed seed. Runs on the GPU machine itself (initialisation on the GPU
takes seconds; nothing is downloaded).

  python3 benchmarks/gpu/make_checkpoint.py --out /tmp/mgpt --spec /tmp/spec.json
"""
import argparse
import json
import random
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

CONFIGS = {
    "mgpt-1.3b": dict(n_layer=24, n_embd=2048, n_head=16, n_positions=2048, vocab_size=100000,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5),
    "gpt2": dict(),  # the library default is the 124M gpt2 configuration
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="mgpt-1.3b", choices=sorted(CONFIGS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--gpu-prompts", type=int, default=48)
    ap.add_argument("--cpu-prompts", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    t0 = time.perf_counter()
    cfg = GPT2Config(**CONFIGS[a.config])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = GPT2LMHeadModel(cfg).eval()
    model.save_pretrained(a.out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    rng = random.Random(a.seed)
    cases = []
    for _ in range(a.prompts):
        n = rng.randint(8, 14)
        cases.append({"ids": [rng.randrange(5, cfg.vocab_size) for _ in range(n)],
                      "target": rng.randrange(5, cfg.vocab_size)})
    spec = {"model": a.out, "config_name": a.config, "parameters": params, "steps": a.steps,
            "gpu_prompts": a.gpu_prompts, "cpu_prompts": a.cpu_prompts, "baseline_token": 1,
            "parity_prompts": 2, "cases": cases,
            # dense, no sparsity: H100 SXM5 FP32 67, TF32 495, BF16 989 TFLOP/s (NVIDIA data sheet)
            "peak_tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}}
    with open(a.spec, "w") as f:
        json.dump(spec, f)
    print(f"{a.config}: {params / 1e9:.2f} B parameters written to {a.out} "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
