#!/usr/bin/env bash
# Same-machine A/B of issue 7's mGPT-1.3B benchmark (bench_cuda) between engines: every
# BUNDLE/bin/bench_cuda_<label> runs on one random mGPT-1.3B-configuration checkpoint, one after
# another in one call, so that machine-to-machine differences (which reach 1.5x between calls
# here) do not pass for engine changes. BUNDLE/lib holds the libraries they need besides CUDA's.
#   bash benchmarks/gpu/ab_mgpt.sh BUNDLE OUT_DIR
# Built for 2026-12-04: bench_cuda_619ac88 (the engine of the committed H200 figures) and
# bench_cuda_new (commit e662937), each from a CUDA build of its commit (see docs/results.md).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
b="$(cd "$1" && pwd)"
out="$2"
mkdir -p "$out"
cublas="$(find /usr/local/cuda*/ /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)"
export LD_LIBRARY_PATH="$b/lib${cublas:+:$(dirname "$cublas")}"
log() { echo "[$(date +%T)] $*" | tee -a "$out/ab.log"; }
log "checkpoint"
timeout 150 python3 "$root/benchmarks/gpu/make_checkpoint.py" --out /tmp/mgpt --spec /tmp/spec.json \
  --gpu-prompts 32 2>&1 | tail -1 | tee -a "$out/ab.log"
for exe in "$b"/bin/bench_cuda_*; do
  label="${exe##*/bench_cuda_}"
  log "bench_cuda $label"
  timeout 150 "$exe" /tmp/spec.json "$out/mgpt_$label.json" 2>&1 | tee -a "$out/ab.log"
done
log done
