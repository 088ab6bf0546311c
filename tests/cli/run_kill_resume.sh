#!/usr/bin/env bash
# `knprobe run` killed with SIGKILL mid-way, a torn last line appended (a write cut short), then
# rerun with the same command: the results file must equal byte for byte that of an uninterrupted
# run — no fact lost, none duplicated. Also: SIGTERM stops cleanly (exit 130) and resumes, and a
# rerun with other options is refused. Then --drop-generic refines the finished run in a second,
# resumable pass.
# Usage: run_kill_resume.sh KNPROBE STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 stories=$2 facts=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1
base=(run --model "$stories/stories260K.bin" --facts "$facts" --langs en --threshold en=0.3
      --dkn --top 8)
args=("${base[@]}" --steps 300)
"$knprobe" "${args[@]}" --out "$work/full.jsonl" >/dev/null 2>&1
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

interrupt() {  # $1 signal, $2 output: start a run, send the signal once 4 records are written
  "$knprobe" "${args[@]}" --out "$2" >"$work/log" 2>&1 &
  local pid=$! n=0
  for _ in $(seq 1 2000); do
    n=$(lines "$2")
    ((n >= 5)) && break
    sleep 0.01
  done
  kill -0 "$pid" 2>/dev/null || { echo "FAIL: the run ended before it could be killed"; exit 1; }
  kill "-$1" "$pid" 2>/dev/null
  local rc=0
  wait "$pid" 2>/dev/null || rc=$?
  echo "$1 after $(($(lines "$2") - 1)) records, exit $rc"
  total=$(($(lines "$work/full.jsonl") - 1))
  (($(lines "$2") - 1 < total)) || { echo "FAIL: nothing was left to resume"; exit 1; }
  last_rc=$rc
}

interrupt KILL "$work/killed.jsonl"
((last_rc == 137)) || { echo "FAIL: SIGKILL exit $last_rc"; exit 1; }
printf '{"record":"result","index":9,"fa' >>"$work/killed.jsonl"  # torn write
"$knprobe" "${args[@]}" --out "$work/killed.jsonl" >"$work/resume.log" 2>&1
grep -q "unterminated" "$work/resume.log" || { echo "FAIL: torn line not reported"; exit 1; }
grep -q "already done" "$work/resume.log"
cmp "$work/full.jsonl" "$work/killed.jsonl" || { echo "FAIL: resumed file differs"; exit 1; }
echo "SIGKILL + torn line: resumed file identical ($(lines "$work/full.jsonl") lines)"

interrupt TERM "$work/term.jsonl"
((last_rc == 130)) || { echo "FAIL: SIGTERM exit $last_rc (want 130)"; cat "$work/log"; exit 1; }
grep -q "rerun the same command to resume" "$work/log"
"$knprobe" "${args[@]}" --out "$work/term.jsonl" >/dev/null 2>&1
cmp "$work/full.jsonl" "$work/term.jsonl" || { echo "FAIL: SIGTERM-resumed file differs"; exit 1; }
echo "SIGTERM: clean stop, resumed file identical"

rc=0
"$knprobe" "${base[@]}" --steps 20 --out "$work/full.jsonl" >"$work/other.log" 2>&1 || rc=$?
((rc == 1)) && grep -q "cannot resume.*options.steps: file has 300, this run has 20" "$work/other.log" \
  || { echo "FAIL: other options not refused (exit $rc)"; cat "$work/other.log"; exit 1; }
echo "other options refused: $(grep -o 'cannot resume.*' "$work/other.log")"
# --drop-generic: once the run is complete, a second pass writes Dai's refinement of it to
# <out>.refined.jsonl; a rerun resumes both passes and changes nothing
"$knprobe" "${args[@]}" --out "$work/full.jsonl" --drop-generic 0.1 >"$work/refine.log" 2>&1
grep -q "refining against generic neurons" "$work/refine.log"
[[ -f $work/full.refined.jsonl ]] || { echo "FAIL: no refined file"; cat "$work/refine.log"; exit 1; }
head -1 "$work/full.refined.jsonl" | grep -q '"drop_generic":0.1' \
  || { echo "FAIL: the refined header does not record --drop-generic"; exit 1; }
grep -q '"dropped_generic":\[\[' "$work/full.refined.jsonl" \
  || { echo "FAIL: the refinement dropped nothing"; exit 1; }
cp "$work/full.refined.jsonl" "$work/refined1.jsonl"
"$knprobe" "${args[@]}" --out "$work/full.jsonl" --drop-generic 0.1 >"$work/refine2.log" 2>&1
grep -q "full.refined.jsonl: .* 0 computed" "$work/refine2.log" \
  || { echo "FAIL: the refinement was not resumed"; cat "$work/refine2.log"; exit 1; }
cmp "$work/refined1.jsonl" "$work/full.refined.jsonl"
rc=0
"$knprobe" "${args[@]}" --out "$work/full.jsonl" --drop-generic 0.1 \
  --refined-out "$work/full.jsonl" >"$work/same.log" 2>&1 || rc=$?
((rc != 0)) && grep -q "refined-out must differ" "$work/same.log" \
  || { echo "FAIL: --refined-out = --out not refused"; exit 1; }
# --random-drop: the refinement's size-matched control, into <out>.random-drop.jsonl
"$knprobe" "${args[@]}" --out "$work/full.jsonl" --drop-generic 0.1 --random-drop >"$work/rd.log" 2>&1
head -1 "$work/full.random-drop.jsonl" | grep -q '"drop_rule":"random"' \
  || { echo "FAIL: the control's header does not record its rule"; cat "$work/rd.log"; exit 1; }
grep -q '"dropped_random":\[\[' "$work/full.random-drop.jsonl" \
  || { echo "FAIL: the random-drop control dropped nothing"; exit 1; }
echo "refinement: $(grep -o '"dropped_generic":\[\[' "$work/full.refined.jsonl" | wc -l) results lost generic neurons; resumed unchanged"
echo PASS
