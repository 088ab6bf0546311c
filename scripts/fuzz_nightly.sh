#!/usr/bin/env bash
# The nightly-style fuzzing run: every libFuzzer target of tests/fuzz for a million executions
# (KNPROBE_FUZZ_RUNS), with the committed seeds, a 10 s per-input timeout and a 2 GiB memory limit.
# New inputs that reach new code are kept in build-fuzz/corpus-<target>; a crash leaves its input
# in build-fuzz/ and stops the script. Usage: bash scripts/fuzz_nightly.sh [target...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${KNPROBE_BUILD_ROOT:-$root/build-fuzz}"
runs="${KNPROBE_FUZZ_RUNS:-1000000}"
cd "$root"
targets=("$@")
((${#targets[@]})) || targets=(gguf safetensors facts mlama tokenizer results options)
CXX=clang++ cmake -S tests/fuzz -B "$out" -DCMAKE_BUILD_TYPE=Release -DKNPROBE_ENABLE_CUDA=OFF \
  >/dev/null
cmake --build "$out" -j"$(nproc)" >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus-$t"
  cp -n tests/fuzz/corpus/"$t"/* "$out/corpus-$t/" 2>/dev/null || true
  start=$SECONDS
  (cd "$out" && "./fuzz_$t" -runs="$runs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    "corpus-$t" >"fuzz_$t.log" 2>&1) || { tail -40 "$out/fuzz_$t.log"; exit 1; }
  echo "fuzz_$t: $(grep -oE "number_of_executed_units: *[0-9]+" "$out/fuzz_$t.log" |
    grep -oE "[0-9]+$") executions in $((SECONDS - start)) s, no failure"
done
