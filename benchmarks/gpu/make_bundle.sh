#!/usr/bin/env bash
# Packs what benchmarks/gpu/run.sh needs on a bare GPU machine (CUDA driver, nvcc, PyTorch and
# transformers there; no package registry): the sm_90 binaries knprobe_tests, bench_cuda and
# bench_cuda_llama, the
# shared libraries of this machine they need except the CUDA ones (cuBLAS is taken from the GPU
# machine's CUDA / PyTorch installation), and the pure-Python `knowledge-neurons` package.
#   bash benchmarks/gpu/make_bundle.sh BUILD_DIR BUNDLE_DIR     (BUILD_DIR configured with CUDA)
# PYTHON names the interpreter that has `knowledge-neurons` installed (default python3).
set -euo pipefail
build="$1"
bundle="$2"
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib" "$bundle/py"
for exe in tests/knprobe_tests benchmarks/bench_cuda benchmarks/bench_cuda_llama; do
  cp "$build/$exe" "$bundle/bin/"
  strip "$bundle/bin/$(basename "$exe")"
done
# Every resolved dependency except glibc / libstdc++ / libgcc and CUDA's own libraries.
ldd "$bundle"/bin/* | awk '/=> \//{print $3}' | sort -u |
  grep -Ev '/(libc|libm|libdl|libpthread|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s)\.so' |
  grep -Ev 'libcu(blas|blasLt|da|dart)\.so' | while read -r lib; do
  cp -L "$lib" "$bundle/lib/"
done
# The test binary finds its fixtures under the source directory it was configured from.
sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" >"$bundle/source_dir"
kn="$("${PYTHON:-python3}" -c 'import knowledge_neurons, os; print(os.path.dirname(knowledge_neurons.__file__))')"
cp -r "$kn" "$bundle/py/"
rm -rf "$bundle/py/knowledge_neurons/__pycache__"
du -sh "$bundle"
ls "$bundle"/*
