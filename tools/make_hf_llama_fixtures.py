#!/usr/bin/env python3
"""Parity fixtures for the Llama-family backend from Hugging Face transformers (run by hand; the
small outputs are committed under tests/data/hf/<name>/):

- a randomly initialised LlamaForCausalLM and Gemma3ForCausalLM (text) of tiny configurations,
  saved with save_pretrained (config.json + model.safetensors, float32);
- expected.json: the token ids, the logits at every position, and for several (layer, position)
  pairs P(target) and dP/d(neuron activation) from torch autograd, where the neuron activation is
  the input of mlp.down_proj at that position (act(gate) * up), replaced by a leaf tensor.

Usage: pip install torch transformers; python3 tools/make_hf_llama_fixtures.py
"""
import json
import os

import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          __version__ as tv)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf")
IDS = [2, 17, 5, 33, 8, 41, 12, 60]
PAIRS = [(0, 7, 9), (1, 4, 30), (2, 7, 3), (2, 2, 50)]  # (layer, position, target)


def build(kind):
    torch.manual_seed(1234)
    if kind == "llama_tiny":
        cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                          rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=48,
                               num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                               head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6,
                               rope_theta=1e6, rope_local_base_freq=1e4, sliding_window=4,
                               layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                               query_pre_attn_scalar=16, tie_word_embeddings=True,
                               attn_implementation="eager")
        model = Gemma3ForCausalLM(cfg)
        with torch.no_grad():  # zero-centred norm weights: make them non-trivial
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.normal_(0.0, 0.3)
    model = model.float().eval()
    model.config._attn_implementation = "eager"
    return model


def grad_at(model, layer, pos, target):
    ids = torch.tensor([IDS])
    mlp = model.model.layers[layer].mlp
    holder = {}

    def hook(mod, args):
        (x,) = args
        leaf = x[0, pos].detach().clone().requires_grad_(True)
        holder["leaf"] = leaf
        x = x.clone()
        x[0, pos] = leaf
        return (x,)

    h = mlp.down_proj.register_forward_pre_hook(hook)
    logits = model(ids).logits[0, pos]
    h.remove()
    p = torch.softmax(logits.double(), -1)[target]
    p.backward()
    return float(p), holder["leaf"].grad.tolist(), holder["leaf"].detach().tolist()


def main():
    for kind in ("llama_tiny", "gemma3_tiny"):
        model = build(kind)
        d = os.path.join(OUT, kind)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        with torch.no_grad():
            logits = model(torch.tensor([IDS])).logits[0]
        exp = {"generator": "transformers " + tv, "ids": IDS, "logits": logits.tolist(), "pairs": []}
        for layer, pos, target in PAIRS:
            p, g, a = grad_at(model, layer, pos, target)
            exp["pairs"].append({"layer": layer, "position": pos, "target": target, "p": p,
                                 "grad": g, "activation": a})
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(exp, f)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))


if __name__ == "__main__":
    main()
