#!/usr/bin/env bash
# Wall time of `knprobe run` on stories260K with 1 process vs `mpirun -np 2` (1 OpenMP thread per
# rank), same facts and options, in one script; also checks that the merged file is identical.
# Usage: bash benchmarks/mpi_scaling.sh [BUILD_DIR]   (run on an otherwise idle machine)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"
KNPROBE_MPI_STEPS="${KNPROBE_MPI_STEPS:-2000}" bash "$root/tests/cli/run_mpi.sh" \
  "$build/apps/knprobe/knprobe" "$(command -v mpiexec)" "$root/tests/data/models/stories260K" \
  "$root/tests/data/facts/stories_factcheck.jsonl" "${TMPDIR:-/tmp}/knprobe-mpi-scaling"
