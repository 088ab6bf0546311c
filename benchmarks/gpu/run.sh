#!/usr/bin/env bash
# The GPU run of issues 7 and 19, in one go on an H100/H200 (about 6 minutes): the GPU tests; a
# random Gemma 3 270M-configuration checkpoint written there and the main job's (fact, language)
# pair on it, GPU in three precisions and CPU at 1..16 threads (bench_cuda_llama); a random
# mGPT-1.3B-configuration checkpoint, knprobe's parity and benchmark (bench_cuda), EleutherAI
# knowledge-neurons on the same checkpoint / prompts / steps / batch on the same GPU, and one
# results file. Binaries come from a bundle built elsewhere (make_bundle.sh).
#   bash benchmarks/gpu/run.sh BUNDLE_DIR OUT_DIR      (KNPROBE_GPU_SKIP_MGPT=1: the tests and the
#                                                     Gemma part only, about 2 minutes)
# mLAMA English size for the extrapolation: `cat ../shared/data/mlama1.1/en/*/*.jsonl | wc -l`.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bundle="$(cd "$1" && pwd)"
out="$2"
mkdir -p "$out"
work="${KNPROBE_GPU_WORK:-/tmp/knprobe-gpu}"
mkdir -p "$work"
log() { echo "[$(date +%T)] $*" | tee -a "$out/run.log"; }

cublas="$(find /usr/local/cuda*/ /opt /usr/lib -name 'libcublas.so.13*' 2>/dev/null | head -1)"
export LD_LIBRARY_PATH="$bundle/lib${cublas:+:$(dirname "$cublas")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export PYTHONPATH="$bundle/py${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
log "cuBLAS from ${cublas:-<not found>}"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv \
  >"$out/gpu.csv" 2>&1
cat "$out/gpu.csv" | tee -a "$out/run.log"

# The test binary looks for its fixtures under the source path it was built in.
src="$(cat "$bundle/source_dir" 2>/dev/null)"
if [[ -n "$src" && ! -e "$src" ]]; then mkdir -p "$(dirname "$src")" && ln -s "$root" "$src"; fi
log "GPU tests"
timeout 150 "$bundle/bin/knprobe_tests" \
  --run_test=cuda_device,cuda_gpt2,cuda_llama --log_level=message \
  --report_level=short >"$out/gpu_tests.log" 2>&1
echo "rc=$?" >>"$out/gpu_tests.log"
tail -5 "$out/gpu_tests.log" | tee -a "$out/run.log"

log "random Gemma 3 270M checkpoint"
timeout 120 python3 "$root/benchmarks/gpu/make_checkpoint.py" --config gemma3-270m \
  --out "$work/gemma3" --spec "$work/gemma3.json" --gpu-prompts 32 2>&1 | tail -1 |
  tee -a "$out/run.log"
log "bench_cuda_llama"
timeout 300 "$bundle/bin/bench_cuda_llama" "$work/gemma3.json" "$out/gemma3_pair.json" 2>&1 |
  tee -a "$out/run.log"
rm -rf "$work/gemma3"

if [[ -n "${KNPROBE_GPU_SKIP_MGPT:-}" ]]; then log "mGPT part skipped"; exit 0; fi
log "random mGPT checkpoint"
timeout 150 python3 "$root/benchmarks/gpu/make_checkpoint.py" --out "$work/mgpt" \
  --spec "$work/spec.json" --gpu-prompts 32 2>&1 | tail -1 | tee -a "$out/run.log"
log "bench_cuda"
timeout 300 "$bundle/bin/bench_cuda" "$work/spec.json" "$work/knprobe.json" 2>&1 |
  tee -a "$out/run.log"
log "knowledge-neurons"
timeout 200 python3 "$root/benchmarks/gpu/kn_reference.py" --spec "$work/spec.json" \
  --out "$work/kn.json" 2>&1 | tail -5 | tee -a "$out/run.log"
log "summary"
python3 "$root/benchmarks/gpu/summarize.py" --spec "$work/spec.json" \
  --knprobe "$work/knprobe.json" --kn "$work/kn.json" --mlama-facts 29653 \
  --out "$out/gpu_results.json" 2>&1 | tee -a "$out/run.log"
