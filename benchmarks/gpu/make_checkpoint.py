#!/usr/bin/env python3
"""Writes a randomly initialised checkpoint of a real configuration with `save_pretrained`
(safetensors, FP32), plus the benchmark's spec: random token-id prompts of 8-14 tokens and their
targets, fixed seed. Runs on the GPU machine itself (initialisation on the GPU takes seconds;
nothing is downloaded). Configurations:
- mgpt-1.3b (default; ai-forever/mGPT, GPT-2 architecture: 24 layers, d 2048, 16 heads, FFN 8192,
  vocabulary 100000) for bench_cuda;
- gemma3-270m (google/gemma-3-270m, docs/MODELS.md §1.1: 18 layers, d 640, 4 query
  heads / 1 KV head of 256, GeGLU FFN 2048, vocabulary 262144, sliding window 512 with layers
  5, 11, 17 global) for bench_cuda_llama: the main job's model, whose GGUF is too large to carry
  to the GPU machine; random weights cost the same FLOPs as the trained ones;
- gpt2 (the 124M configuration).

  python3 benchmarks/gpu/make_checkpoint.py --out /tmp/mgpt --spec /tmp/spec.json
  python3 benchmarks/gpu/make_checkpoint.py --config gemma3-270m --out /tmp/g3 --spec /tmp/g3.json
"""
import argparse
import json
import random
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Gemma3ForCausalLM, Gemma3TextConfig

CONFIGS = {
    "mgpt-1.3b": dict(n_layer=24, n_embd=2048, n_head=16, n_positions=2048, vocab_size=100000,
                      activation_function="gelu_new", layer_norm_epsilon=1e-5),
    "gpt2": dict(),  # the library default is the 124M gpt2 configuration
    "gemma3-270m": dict(vocab_size=262144, hidden_size=640, intermediate_size=2048,
                        num_hidden_layers=18, num_attention_heads=4, num_key_value_heads=1,
                        head_dim=256, max_position_embeddings=32768, rms_norm_eps=1e-6,
                        hidden_activation="gelu_pytorch_tanh", rope_theta=1e6,
                        rope_local_base_freq=1e4, sliding_window=512,
                        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention"
                                     for i in range(18)],
                        query_pre_attn_scalar=256, tie_word_embeddings=True,
                        pad_token_id=0, eos_token_id=1, bos_token_id=2),
}


def build(name):
    if name.startswith("gemma3"):
        cfg = Gemma3TextConfig(**CONFIGS[name])
        model = Gemma3ForCausalLM(cfg).eval()
        with torch.no_grad():  # zero-centred norm weights: make them non-trivial
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.normal_(0.0, 0.3)
        return cfg, model
    cfg = GPT2Config(**CONFIGS[name])
    return cfg, GPT2LMHeadModel(cfg).eval()


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
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        cfg, model = build(a.config)
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
            "parity_prompts": 2, "cases": cases, "threshold": 0.3, "unrelated": 10,
            # dense, no sparsity: H100 SXM5 and H200 FP32 67, TF32 495, BF16 989 TFLOP/s (NVIDIA
            # data sheets; the H200 has the H100's compute with more, faster memory)
            "peak_tflops": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4}}
    with open(a.spec, "w") as f:
        json.dump(spec, f)
    print(f"{a.config}: {params / 1e9:.2f} B parameters written to {a.out} "
          f"in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
