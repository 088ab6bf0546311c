#!/usr/bin/env python3
"""Writes the seed inputs of the libFuzzer targets under tests/fuzz/corpus/ (run by hand from the
repository root; outputs committed): a tiny Llama GGUF with a SentencePiece vocabulary (needs the
`gguf` package from PyPI), fact files, an mLAMA folder packed into one input, tokenizer files,
a results file and command lines. Each packed input is NUL-separated parts, in the order the
target splits them (tests/fuzz/fuzz_support.hpp)."""
import glob
import os
import shutil

ROOT = "tests/fuzz/corpus"


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def tiny_llama_gguf(path):
    import gguf
    import numpy as np
    w = gguf.GGUFWriter(path, "llama")
    w.add_context_length(64)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_feed_forward_length(32)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + ["▁", "a", "b", "▁a", "ab"]
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 259 + [-1.0, -2.0, -3.0, -4.0, -5.0])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * 5)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_tensor("token_embd.weight", np.zeros((len(toks), 32), dtype=np.float16))
    w.add_tensor("output_norm.weight", np.ones(32, dtype=np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(32, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    for d in ["gguf", "facts", "mlama", "tokenizer", "results", "options"]:
        os.makedirs(f"{ROOT}/{d}", exist_ok=True)
    tiny_llama_gguf(f"{ROOT}/gguf/tiny_llama.gguf")
    for f in glob.glob("tests/data/facts/*.jsonl"):
        shutil.copy(f, f"{ROOT}/facts/")
    m = "tests/data/mlama"
    rename = lambda b: b.replace(b'"P36"', b'"P1"').replace(b'"P103"', b'"P2"')
    parts = [rename(read(f"{m}/en/templates/train.jsonl")), read(f"{m}/en/P36/train.jsonl"),
             read(f"{m}/en/P103/train.jsonl"), rename(read(f"{m}/fr/templates/train.jsonl")),
             read(f"{m}/fr/P36/train.jsonl"), read(f"{m}/fr/P103/train.jsonl")]
    open(f"{ROOT}/mlama/seed", "wb").write(b"\0".join(parts))
    t = [read("tests/data/tokenizers/byte_bpe/tokenizer.json"),
         read("tests/data/tokenizers/wordpiece/tokenizer.json"),
         read("tests/data/models/stories260K/tok512.bin")[:400],
         "The capital of France is Paris. 法国的首都是巴黎".encode()]
    open(f"{ROOT}/tokenizer/seed", "wb").write(b"\0".join(t))
    with open("docs/example-report/results.jsonl", "rb") as f:
        open(f"{ROOT}/results/seed.jsonl", "wb").write(b"".join(f.readlines()[:4]))
    commands = [["--langs", "en,zh", "--steps", "20", "--threshold", "en=0.3", "--layers", "1,2"],
                ["--prompt", "Once upon a time", "--answer", " Lily", "--langs", "en", "--top", "20",
                 "--t-low", "0.2", "--t-high", "0.25"],
                ["--method", "ig", "--quadrature", "gauss", "--max-set-size", "3", "--seed", "7",
                 "--limit", "5"]]
    for i, args in enumerate(commands):
        open(f"{ROOT}/options/seed{i}", "wb").write(b"\0".join(a.encode() for a in args))


if __name__ == "__main__":
    main()
