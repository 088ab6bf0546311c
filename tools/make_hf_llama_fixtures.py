#!/usr/bin/env python3
"""Parity fixtures for the Llama-family backend from Hugging Face transformers (run by hand; the
small outputs are committed under tests/data/hf/<name>/):

- randomly initialised LlamaForCausalLM, Gemma3ForCausalLM (text), and — for the model families of
  issue 20 — LlamaForCausalLM with Llama 3.x RoPE scaling, Qwen2ForCausalLM (q/k/v biases),
  Qwen3ForCausalLM (q/k norms) and MistralForCausalLM (sliding window) of tiny configurations,
  saved with save_pretrained (config.json + model.safetensors, float32); for llama3 / qwen2 /
  qwen3 also model.gguf, the same weights as an F32 GGUF file laid out as llama.cpp's converter
  writes it (llama wq / wk permuted for interleaved RoPE, rope_freqs.weight, biases, q/k norms);
- mistral_spm: a MistralForCausalLM whose directory also holds a SentencePiece-style
  tokenizer.json (tests/data/tokenizers/spm_json/llama2, Llama 2 / Mistral 7B's design) and a
  tokenizer_config.json; its expected.json holds the ids AutoTokenizer gives for a few prompts
  (checked equal to `tokenizers`' own) and the model's logits on them;
- expected.json: the token ids, the logits at every position, and for several (layer, position)
  pairs P(target) and dP/d(neuron activation) from torch autograd, where the neuron activation is
  the input of mlp.down_proj at that position (act(gate) * up), replaced by a leaf tensor.

Usage: pip install torch transformers; python3 tools/make_hf_llama_fixtures.py
"""
import json
import os

import torch
from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
                          Qwen3Config, Qwen3ForCausalLM, __version__ as tv)

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf")
IDS = [2, 17, 5, 33, 8, 41, 12, 60]
PAIRS = [(0, 7, 9), (1, 4, 30), (2, 7, 3), (2, 2, 50)]  # (layer, position, target)


SPM_JSON = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizers", "spm_json",
                        "llama2", "tokenizer.json")
SPM_VOCAB = 665
PROMPTS = ["The capital of France is", "Paris est la capitale de la France",
           "法国的首都是巴黎", "x 🙂 12345"]

TINY = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
            tie_word_embeddings=False)


def build(kind):
    torch.manual_seed(1234)
    if kind == "llama3_tiny":  # Llama 3.x RoPE scaling, with an original context such that the
        # three wavelength bands all occur at head_dim 8 (wavelengths 6.3, 63, 628, 6283 against
        # 48 / 4 = 12 and 48 / 0.5 = 96: kept, interpolated, divided by factor twice)
        cfg = LlamaConfig(**TINY, rms_norm_eps=1e-5,
                          rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0,
                                           "factor": 8.0, "low_freq_factor": 0.5,
                                           "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 48})
        model = LlamaForCausalLM(cfg)
    elif kind == "qwen2_tiny":  # q / k / v biases
        cfg = Qwen2Config(**TINY, rms_norm_eps=1e-6, rope_parameters={"rope_type": "default",
                                                                     "rope_theta": 1e6})
        model = Qwen2ForCausalLM(cfg)
        with torch.no_grad():  # biases start at zero: make them matter
            for n, p in model.named_parameters():
                if n.endswith("proj.bias"):
                    p.normal_(0.0, 0.5)
    elif kind == "qwen3_tiny":  # q / k RMSNorm per head, explicit head_dim
        cfg = Qwen3Config(**TINY, head_dim=16, rms_norm_eps=1e-6,
                          rope_parameters={"rope_type": "default", "rope_theta": 1e6})
        model = Qwen3ForCausalLM(cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.normal_(1.0, 0.3)
    elif kind == "mistral_tiny":  # sliding-window attention on every layer
        cfg = MistralConfig(**TINY, rms_norm_eps=1e-5, sliding_window=4,
                            rope_parameters={"rope_type": "default", "rope_theta": 1e4})
        model = MistralForCausalLM(cfg)
    elif kind == "mistral_spm":  # vocabulary of the SentencePiece-style tokenizer fixture
        cfg = MistralConfig(**dict(TINY, vocab_size=SPM_VOCAB), rms_norm_eps=1e-5,
                            sliding_window=None, bos_token_id=1, eos_token_id=2,
                            rope_parameters={"rope_type": "default", "rope_theta": 1e4})
        model = MistralForCausalLM(cfg)
    if kind in ("llama3_tiny", "qwen2_tiny", "qwen3_tiny", "mistral_tiny", "mistral_spm"):
        pass
    elif kind == "llama_tiny":
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


def permute(w, n_head):
    """llama.cpp's convert_hf_to_gguf permutation of a llama wq / wk (rotate-half → interleaved)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_gguf(model, kind, path):
    """The same weights as an F32 GGUF file named and laid out as llama.cpp's converter does."""
    import gguf
    cfg = model.config
    arch = {"llama3_tiny": "llama", "mistral_tiny": "llama", "qwen2_tiny": "qwen2",
            "qwen3_tiny": "qwen3"}[kind]
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    w = gguf.GGUFWriter(path, arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    if arch == "qwen3":
        w.add_key_length(hd)
        w.add_value_length(hd)
    else:
        w.add_rope_dimension_count(hd)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    t = lambda name, x: w.add_tensor(name, x.astype("float32").copy())
    t("token_embd.weight", sd["model.embed_tokens.weight"])
    t("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        t("output.weight", sd["lm_head.weight"])
    rp = cfg.rope_parameters
    if rp.get("rope_type") == "llama3":  # as convert_hf_to_gguf's generate_extra_tensors
        import math
        base, factor = rp["rope_theta"], rp["factor"]
        lo, hi, old = rp["low_freq_factor"], rp["high_freq_factor"], \
            rp["original_max_position_embeddings"]
        freqs = 1.0 / (base ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = []
        for fr in freqs.tolist():
            wl = 2 * math.pi / fr
            if wl < old / hi:
                f.append(1.0)
            elif wl > old / lo:
                f.append(factor)
            else:
                sm = (old / wl - lo) / (hi - lo)
                f.append(1 / ((1 - sm) / factor + sm))
        t("rope_freqs.weight", torch.tensor(f).numpy())
    for i in range(cfg.num_hidden_layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
        if arch == "llama":
            q, k = permute(q, cfg.num_attention_heads), permute(k, cfg.num_key_value_heads)
        t(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        t(b + "attn_q.weight", q)
        t(b + "attn_k.weight", k)
        t(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        t(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        if arch == "qwen2":
            for x in "qkv":
                t(b + f"attn_{x}.bias", sd[p + f"self_attn.{x}_proj.bias"])
        if arch == "qwen3":
            t(b + "attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"])
            t(b + "attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"])
        t(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        t(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        t(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        t(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def spm_dir(d):
    """Writes mistral_spm's tokenizer files and expected.json."""
    import shutil
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer
    shutil.copy(SPM_JSON, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                   "add_bos_token": True, "add_eos_token": False, "legacy": True}, f)
    tok = AutoTokenizer.from_pretrained(d)
    raw = Tokenizer.from_file(SPM_JSON)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    exp = {"generator": "transformers " + tv, "tokenizer": type(tok).__name__, "prompts": []}
    for text in PROMPTS:
        ids = tok(text)["input_ids"]
        assert ids == raw.encode(text).ids, (text, ids, raw.encode(text).ids)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        exp["prompts"].append({"text": text, "ids": ids, "last_logits": logits.tolist()})
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(exp, f)


def main():
    for kind in ("llama_tiny", "gemma3_tiny", "llama3_tiny", "qwen2_tiny", "qwen3_tiny",
                 "mistral_tiny", "mistral_spm"):
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
        if kind in ("llama3_tiny", "qwen2_tiny", "qwen3_tiny"):
            write_gguf(model, kind, os.path.join(d, "model.gguf"))
        if kind == "mistral_spm":
            for extra in ("generation_config.json",):
                if os.path.exists(os.path.join(d, extra)):
                    os.remove(os.path.join(d, extra))
            spm_dir(d)
        for extra in ("generation_config.json",):
            if os.path.exists(os.path.join(d, extra)):
                os.remove(os.path.join(d, extra))


if __name__ == "__main__":
    main()
