#!/usr/bin/env python3
"""Parity fixtures for the GPT-2 and BERT backends from Hugging Face transformers (run by hand; the
small outputs are committed under tests/data/hf/<name>/). CI never needs torch.

Small checkpoints (gpt2_tiny, bert_tiny): randomly initialised GPT2LMHeadModel / BertForMaskedLM,
saved with save_pretrained (config.json + model.safetensors, float32).

Real configurations (gpt2_realcfg = gpt2, mbert_realcfg = bert-base-multilingual-cased with the
vocabulary reduced to 2048): too large to commit, so their weights are *defined* by a hash that the
C++ test recomputes: element i of tensor `name` is
    offset + scale * (2 u - 1),  u = (splitmix64(fnv1a64(name) + i) >> 11) * 2^-53
in float64, rounded to float32, in the tensor's PyTorch row-major layout. manifest.json lists every
tensor with its shape, offset and scale; only config.json, manifest.json and expected.json are
committed.

expected.json: the token ids, logits at every position (for the real configurations only the
columns listed in "columns"), and for several (layer, position, target) triples P(target) and
dP/d(neuron activation) by torch autograd, where the activation is replaced by a leaf tensor:
  - GPT-2 post-activation site: the input of mlp.c_proj ("grad", "activation");
  - GPT-2 pre-activation site: the output of mlp.c_fc ("grad_pre", "activation_pre");
  - BERT: the input of output.dense (the GELU output of intermediate.dense).

Usage: pip install torch transformers; python3 tools/make_hf_dense_fixtures.py
"""
import json
import os

import numpy as np
import torch
from transformers import (BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel,
                          __version__ as tv)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf")
M64 = (1 << 64) - 1


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def hash_values(name, n, offset, scale):
    with np.errstate(over="ignore"):
        x = np.arange(n, dtype=np.uint64) + np.uint64(fnv1a64(name))
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(11)).astype(np.float64) * (2.0 ** -53)
    return (offset + scale * (2.0 * u - 1.0)).astype(np.float32)


def rule(name):
    """(offset, scale) of a parameter: norms near 1, biases small, matrices ~ N(0, 0.02)-sized."""
    norm = "LayerNorm" in name or ".ln_" in name or name.startswith("ln_") or "ln_f" in name
    if norm and name.endswith("weight"):
        return 1.0, 0.1
    if name.endswith("bias"):
        return 0.0, 0.02
    return 0.0, 0.035


def hash_fill(model):
    manifest, seen = [], set()
    with torch.no_grad():
        for name, p in model.state_dict().items():
            if not p.is_floating_point() or p.data_ptr() in seen:  # tied aliases keep 1st name
                continue
            seen.add(p.data_ptr())
            off, sc = rule(name)
            v = hash_values(name, p.numel(), off, sc).reshape(tuple(p.shape))
            p.copy_(torch.from_numpy(v))
            manifest.append({"name": name, "shape": list(p.shape), "offset": off, "scale": sc})
    model.tie_weights()
    return manifest


def capture(model, module, pre, pos, target, ids, where):
    """P(target at pos) and its gradient w.r.t. the module's input (pre=True) or output at pos."""
    holder = {}

    def swap(x):
        leaf = x[0, pos].detach().clone().requires_grad_(True)
        holder["leaf"] = leaf
        x = x.clone()
        x[0, pos] = leaf
        return x

    if pre:
        h = module.register_forward_pre_hook(lambda m, a: (swap(a[0]),))
    else:
        h = module.register_forward_hook(lambda m, a, o: swap(o))
    logits = model(torch.tensor([ids])).logits[0, where]
    h.remove()
    p = torch.softmax(logits.double(), -1)[target]
    p.backward()
    return p.item(), holder["leaf"].grad.tolist(), holder["leaf"].detach().tolist()


def r9(x):
    """Nested lists of floats with 9 significant digits (float32 precision, half the JSON)."""
    return [r9(v) for v in x] if isinstance(x, list) else float("%.9g" % x)


def expected(model, kind, ids, pairs, columns=None):
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    if columns is not None:
        logits = logits[:, columns]
    exp = {"generator": "transformers " + tv, "ids": ids, "logits": r9(logits.tolist()),
           "pairs": []}
    if columns is not None:
        exp["columns"] = columns
    for layer, pos, target in pairs:
        e = {"layer": layer, "position": pos, "target": target}
        if kind == "gpt2":
            mlp = model.transformer.h[layer].mlp
            e["p"], e["grad"], e["activation"] = capture(model, mlp.c_proj, True, pos, target, ids,
                                                         pos)
            _, e["grad_pre"], e["activation_pre"] = capture(model, mlp.c_fc, False, pos, target,
                                                            ids, pos)
        else:
            dense = model.bert.encoder.layer[layer].output.dense
            e["p"], e["grad"], e["activation"] = capture(model, dense, True, pos, target, ids, pos)
        exp["pairs"].append({k: r9(v) if isinstance(v, list) else v for k, v in e.items()})
    return exp


def gpt2(cfg):
    m = GPT2LMHeadModel(cfg)
    m.config._attn_implementation = "eager"
    return m.float().eval()


def bert(cfg):
    m = BertForMaskedLM(cfg)
    m.config._attn_implementation = "eager"
    return m.float().eval()


def write(name, model, exp, manifest=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if manifest is None:
        model.save_pretrained(d, safe_serialization=True)
        gen = os.path.join(d, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
    else:
        model.config.to_json_file(os.path.join(d, "config.json"))
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump({"rule": "offset + scale * (2u - 1), see tools/make_hf_dense_fixtures.py",
                       "tensors": manifest}, f, indent=0)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)


def main():
    torch.manual_seed(1234)
    ids = [1, 17, 5, 33, 3, 41, 12, 2]
    small_pairs = [(0, 4, 9), (1, 4, 30), (2, 7, 3), (1, 2, 50)]

    g = gpt2(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=3, n_head=4,
                        n_inner=48, activation_function="gelu_new", resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0))
    write("gpt2_tiny", g, expected(g, "gpt2", ids, small_pairs))

    b = bert(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32, type_vocab_size=2,
                        hidden_act="gelu", hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0))
    with torch.no_grad():  # non-trivial LayerNorm parameters
        for n, p in b.named_parameters():
            if "LayerNorm" in n:
                p.normal_(1.0 if n.endswith("weight") else 0.0, 0.2)
    write("bert_tiny", b, expected(b, "bert", ids, small_pairs))

    # Real configurations with hash-defined weights.
    real_ids = [101, 1789, 530, 1993, 103, 1147, 119, 102]
    real_pairs = [(0, 4, 1200), (5, 4, 77), (11, 4, 901), (11, 6, 5)]
    g = gpt2(GPT2Config())  # gpt2: 12 layers, 768, 12 heads, vocab 50257, gelu_new
    man = hash_fill(g)
    cols = sorted(set(range(0, 50257, 197)) | {t for _, _, t in real_pairs})
    write("gpt2_realcfg", g, expected(g, "gpt2", real_ids, real_pairs, cols), man)

    b = bert(BertConfig(vocab_size=2048, hidden_size=768, num_hidden_layers=12,
                        num_attention_heads=12, intermediate_size=3072,
                        max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                        layer_norm_eps=1e-12))  # bert-base-multilingual-cased, vocab reduced
    man = hash_fill(b)
    write("mbert_realcfg", b, expected(b, "bert", real_ids, real_pairs, list(range(0, 2048, 8))),
          man)

    # Vocabularies of the committed test tokenizers (tests/data/tokenizers), for the CLI tests.
    g = gpt2(GPT2Config(vocab_size=600, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                        n_inner=48))
    g.save_pretrained(os.path.join(OUT, "gpt2_bpe600"), safe_serialization=True)
    b = bert(BertConfig(vocab_size=378, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=32))
    b.save_pretrained(os.path.join(OUT, "bert_wp378"), safe_serialization=True)
    for d in ("gpt2_bpe600", "bert_wp378"):
        gen = os.path.join(OUT, d, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)


if __name__ == "__main__":
    main()
