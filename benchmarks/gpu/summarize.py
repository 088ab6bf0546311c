#!/usr/bin/env python3
"""Merges bench_cuda's and kn_reference.py's outputs into the one results file of the GPU run:
parity (GPU vs CPU; knprobe's reference mode vs knowledge-neurons' scores), prompts/s, TFLOP/s
and fraction of peak, the ratios, and the extrapolated time for the mLAMA English set."""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec", required=True)
    ap.add_argument("--knprobe", required=True)
    ap.add_argument("--kn", required=True)
    ap.add_argument("--mlama-facts", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    spec = json.load(open(a.spec))
    kp = json.load(open(a.knprobe))
    try:
        kn = json.load(open(a.kn))
    except (OSError, ValueError) as e:
        kn = {"error": str(e)}
    res = {
        "device": kp.get("device"),
        "model": f"random {spec['config_name']} configuration, {spec['parameters'] / 1e9:.2f} B "
                 "parameters, FP32 weights",
        "config": kp.get("config"),
        "steps": spec["steps"],
        "load_seconds": kp.get("load_seconds"),
        "upload_seconds": kp.get("upload_seconds"),
        "parity_gpu_vs_cpu": kp.get("parity"),
        "gpu_amig": kp.get("gpu_amig"),
        "cpu_amig": kp.get("cpu_amig"),
        "gpu_over_cpu_fp32": kp.get("gpu_over_cpu_fp32"),
        "gpu_ig_reference_mode": kp.get("gpu_ig_reference_mode"),
        "knowledge_neurons": {k: v for k, v in kn.items() if k != "scores_case0"},
    }
    facts = a.mlama_facts
    res["mlama_en_facts"] = facts
    res["mlama_en_hours"] = {
        f"knprobe_amig_{p}": facts / r["prompts_per_s"] / 3600
        for p, r in (kp.get("gpu_amig") or {}).items()}
    if "prompts_per_s" in kn:
        ref = kn["prompts_per_s"]
        res["mlama_en_hours"]["knowledge_neurons_ig"] = facts / ref / 3600
        res["speedup_vs_knowledge_neurons"] = {
            "ig_reference_mode_fp32": kp["gpu_ig_reference_mode"]["prompts_per_s"] / ref,
            **{f"amig_{p}": r["prompts_per_s"] / ref for p, r in kp["gpu_amig"].items()}}
        ours = kp.get("reference_mode_scores_case0")
        theirs = kn.get("scores_case0")
        if ours and theirs:
            worst = max(abs(x - y) for ro, rt in zip(ours, theirs) for x, y in zip(ro, rt))
            scale = max(abs(y) for rt in theirs for y in rt)
            res["reference_scores_worst_relative_difference"] = worst / scale
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
