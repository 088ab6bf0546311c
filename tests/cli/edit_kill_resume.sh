#!/usr/bin/env bash
# `knprobe edit` killed with SIGKILL in its measuring pass, a torn last line appended to its
# checkpoint (a write cut short), then rerun with the same command: editing.json must equal byte
# for byte that of an uninterrupted run, and the checkpoint is gone once it is written. A rerun
# with other options is refused with the difference named.
# Usage: edit_kill_resume.sh KNPROBE STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 stories=$2 facts=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1
args=(edit --model "$stories/stories260K.bin" --facts "$facts" --langs en --threshold en=0.3
      --steps 4 --unrelated 10)
"$knprobe" "${args[@]}" --out "$work/full" >/dev/null 2>&1
[[ ! -e $work/full/editing.partial.jsonl ]] || { echo "FAIL: checkpoint left after success"; exit 1; }
total=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(len(j['facts'])+len(j['skipped']))" "$work/full/editing.json")
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

part="$work/killed/editing.partial.jsonl"
"$knprobe" "${args[@]}" --out "$work/killed" >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
  (($(lines "$part") >= 6)) && break
  sleep 0.01
done
kill -0 "$pid" 2>/dev/null || { echo "FAIL: the edit ended before it could be killed"; exit 1; }
kill -KILL "$pid" 2>/dev/null
wait "$pid" 2>/dev/null || true
done_before=$(($(lines "$part") - 1))
((done_before < total)) || { echo "FAIL: nothing was left to resume"; exit 1; }
printf '{"record":"result","index":9,"fa' >>"$part"  # torn write
"$knprobe" "${args[@]}" --out "$work/killed" >"$work/resume.log" 2>&1
grep -q "unterminated" "$work/resume.log" || { echo "FAIL: torn line not reported"; cat "$work/resume.log"; exit 1; }
grep -q "knprobe: $done_before of [0-9]* facts already done" "$work/resume.log" \
  || { echo "FAIL: resumption not reported"; cat "$work/resume.log"; exit 1; }
cmp "$work/full/editing.json" "$work/killed/editing.json" || { echo "FAIL: resumed editing.json differs"; exit 1; }
[[ ! -e $part ]] || { echo "FAIL: checkpoint left after the resumed run"; exit 1; }
echo "SIGKILL after $done_before of $total facts + torn line: resumed editing.json identical"

# A checkpoint of other options is refused, not mixed.
mkdir -p "$work/other"
"$knprobe" "${args[@]}" --out "$work/other" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
  (($(lines "$work/other/editing.partial.jsonl") >= 3)) && break
  sleep 0.01
done
kill -KILL "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[[ -e $work/other/editing.partial.jsonl ]] || { echo "FAIL: no checkpoint to refuse"; exit 1; }
rc=0
"$knprobe" "${args[@]}" --l2 4 --out "$work/other" >"$work/other.log" 2>&1 || rc=$?
((rc == 1)) && grep -q "cannot resume.*options.l2: file has 8.*this run has 4" "$work/other.log" \
  || { echo "FAIL: other options not refused (exit $rc)"; cat "$work/other.log"; exit 1; }
echo "other options refused: $(grep -o 'cannot resume.*' "$work/other.log")"
echo PASS
