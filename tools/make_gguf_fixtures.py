#!/usr/bin/env python3
"""Writes GGUF fixtures under tests/data/gguf with the `gguf` package (llama.cpp's gguf-py), run by
hand, outputs committed:

- dequant_blocks.json: for every supported ggml type, random raw blocks (with sane fp16 scales)
  and the floats `gguf.quants.dequantize` returns for them — an implementation we did not write.
- small.gguf + small.json: a v3 file with metadata of every value type (arrays included) and
  tensors of several types, plus the expected metadata and dequantized values.

Usage: python3 tools/make_gguf_fixtures.py   (needs: pip install gguf numpy)
"""
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "data", "gguf")
rng = np.random.default_rng(20261126)


def f16_bytes(x):
    return np.array([x], dtype=np.float16).view(np.uint8)


def random_block(qt):
    bs, ts = gguf.GGML_QUANT_SIZES[qt]
    raw = rng.integers(0, 256, size=ts, dtype=np.uint8)
    if qt in (Q.Q4_0, Q.Q5_0, Q.Q8_0):
        raw[0:2] = f16_bytes(rng.uniform(-0.1, 0.1))
    elif qt in (Q.Q4_1, Q.Q5_1):
        raw[0:2] = f16_bytes(rng.uniform(0.001, 0.1))
        raw[2:4] = f16_bytes(rng.uniform(-1, 1))
    elif qt in (Q.Q4_K, Q.Q5_K):
        raw[0:2] = f16_bytes(rng.uniform(0.0001, 0.01))
        raw[2:4] = f16_bytes(rng.uniform(0.0001, 0.01))
    elif qt == Q.Q6_K:
        raw[208:210] = f16_bytes(rng.uniform(-0.01, 0.01))
    elif qt == Q.F16:
        raw = np.array(rng.normal(size=1), dtype=np.float16).view(np.uint8)
    elif qt == Q.BF16:
        raw = (np.array(rng.normal(size=1), dtype=np.float32).view(np.uint32) >> 16).astype(
            np.uint16).view(np.uint8)
    return raw


def dequant(raw, qt, n):
    return gguf.quants.dequantize(raw, qt).reshape(-1)[:n]


def main():
    os.makedirs(OUT, exist_ok=True)
    types = [Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q8_0, Q.Q4_K, Q.Q5_K, Q.Q6_K]
    blocks = []
    for qt in types:
        bs, _ = gguf.GGML_QUANT_SIZES[qt]
        nblk = 3 if bs > 1 else 16
        raw = np.concatenate([random_block(qt) for _ in range(nblk)])
        vals = dequant(raw, qt, bs * nblk)
        blocks.append({"type": int(qt), "name": qt.name, "n": int(bs * nblk),
                       "hex": raw.tobytes().hex(), "values": [float(v) for v in vals]})
    with open(os.path.join(OUT, "dequant_blocks.json"), "w") as f:
        json.dump({"generator": "gguf " + getattr(gguf, "__version__", "?"), "blocks": blocks}, f)

    w = gguf.GGUFWriter(os.path.join(OUT, "small.gguf"), arch="toy")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_float32("t.f32", 1.5)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo 世界")
    w.add_uint64("t.u64", 2**40 + 3)
    w.add_int64("t.i64", -(2**40) - 3)
    w.add_float64("t.f64", 2.718281828459045)
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_str", ["a", "bc", ""])
    tensors = {}
    a = rng.normal(size=(3, 64)).astype(np.float32)
    w.add_tensor("w.f32", a)
    tensors["w.f32"] = {"type": "F32", "ne": [64, 3], "values": a.reshape(-1).tolist()}
    b = rng.normal(size=(2, 32)).astype(np.float16)
    w.add_tensor("w.f16", b)
    tensors["w.f16"] = {"type": "F16", "ne": [32, 2], "values": b.astype(np.float32).reshape(-1).tolist()}
    for name, qt in (("w.q8_0", Q.Q8_0), ("w.q4_0", Q.Q4_0), ("w.q5_0", Q.Q5_0)):
        x = rng.normal(size=(2, 64)).astype(np.float32)
        qx = gguf.quants.quantize(x, qt)
        w.add_tensor(name, qx, raw_shape=qx.shape, raw_dtype=qt)
        tensors[name] = {"type": qt.name, "ne": [64, 2],
                         "values": gguf.quants.dequantize(qx, qt).reshape(-1).tolist()}
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(OUT, "small.json"), "w") as f:
        json.dump({"tensors": tensors}, f)


if __name__ == "__main__":
    main()
