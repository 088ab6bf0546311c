#!/usr/bin/env bash
# `mpirun -np 2 knprobe run` gives the same merged results file as one process (byte for byte),
# also for the --drop-generic pass, and prints the wall-time ratio of 1 vs 2 ranks on stories260K.
# Usage: run_mpi.sh KNPROBE MPIEXEC STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 mpiexec=$2 stories=$3 facts=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1 OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
args=(run --model "$stories/stories260K.bin" --facts "$facts" --langs en --threshold en=0.3
      --steps "${KNPROBE_MPI_STEPS:-200}" --dkn --top 12)
t0=$(date +%s.%N)
"$knprobe" "${args[@]}" --out "$work/one.jsonl" >/dev/null 2>&1
t1=$(date +%s.%N)
"$mpiexec" --oversubscribe -np 2 "$knprobe" "${args[@]}" --out "$work/two.jsonl" >"$work/mpi.log" 2>&1 \
  || { cat "$work/mpi.log"; exit 1; }
t2=$(date +%s.%N)
ls "$work"/two.jsonl.part-0-of-2 "$work"/two.jsonl.part-1-of-2 >/dev/null
cmp "$work/one.jsonl" "$work/two.jsonl" || { echo "FAIL: merged file differs"; exit 1; }
# the refinement pass shards and merges the same way
"$knprobe" "${args[@]}" --out "$work/one.jsonl" --drop-generic 0.1 >/dev/null 2>&1
"$mpiexec" --oversubscribe -np 2 "$knprobe" "${args[@]}" --out "$work/two.jsonl" --drop-generic 0.1 \
  >"$work/mpi-refine.log" 2>&1 || { cat "$work/mpi-refine.log"; exit 1; }
ls "$work"/two.refined.jsonl.part-0-of-2 >/dev/null
cmp "$work/one.refined.jsonl" "$work/two.refined.jsonl" \
  || { echo "FAIL: merged refined file differs"; exit 1; }
python3 - "$t0" "$t1" "$t2" <<'PY'
import sys
t0, t1, t2 = map(float, sys.argv[1:])
print("wall time: 1 process %.2f s, mpirun -np 2 %.2f s, ratio %.2f" % (t1 - t0, t2 - t1, (t1 - t0) / (t2 - t1)))
PY
echo PASS
