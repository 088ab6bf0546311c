#!/usr/bin/env bash
# `knprobe edit` and `knprobe factcheck` killed with SIGKILL mid-way, a torn last line appended to
# their checkpoint (a write cut short), then rerun with the same command: editing.json /
# factcheck.json must equal byte for byte those of an uninterrupted run, and the checkpoint is
# gone once they are written. A rerun with other options is refused with the difference named.
# Usage: checkpoint_kill_resume.sh KNPROBE STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 stories=$2 facts=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1
model=(--model "$stories/stories260K.bin" --facts "$facts" --langs en --threshold en=0.3)
lines() { if [[ -f $1 ]]; then wc -l <"$1"; else echo 0; fi; }

# kill_after CHECKPOINT N CMD...: starts CMD, SIGKILLs it once CHECKPOINT has N lines (header
# included); fails clearly when that does not happen within 120 s or the command ends first.
kill_after() {
  local part=$1 want=$2
  shift 2
  "$knprobe" "$@" >"$work/log" 2>&1 &
  local pid=$! deadline=$((SECONDS + 120))
  while (($(lines "$part") < want)); do
    kill -0 "$pid" 2>/dev/null || { echo "FAIL: $1 ended before $part had $want lines"; exit 1; }
    ((SECONDS < deadline)) || { kill -KILL "$pid"; echo "FAIL: $part: no $want lines in 120 s"; exit 1; }
    sleep 0.01
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# check_resume NAME CHECKPOINT TOTAL CMD...: the checkpoint holds fewer than TOTAL records; a torn
# line is appended; the rerun reports the cut and the records it resumes, and writes
# <out>/NAME.json identical to the uninterrupted run's (in $work/full-NAME).
check_resume() {
  local name=$1 part=$2 total=$3
  shift 3
  local done_before=$(($(lines "$part") - 1))
  ((done_before >= 1 && done_before < total)) || { echo "FAIL: $name: $done_before of $total done"; exit 1; }
  printf '{"record":"result","index":9,"fa' >>"$part"  # torn write
  "$knprobe" "$@" >"$work/resume.log" 2>&1 || { echo "FAIL: $name resume"; cat "$work/resume.log"; exit 1; }
  grep -q "unterminated" "$work/resume.log" || { echo "FAIL: $name: torn line not reported"; exit 1; }
  grep -q "resuming .*: $done_before records already there" "$work/resume.log" \
    || { echo "FAIL: $name: resumption not reported"; cat "$work/resume.log"; exit 1; }
  cmp "$work/full-$name/$name.json" "$(dirname "$part")/$name.json" \
    || { echo "FAIL: resumed $name.json differs"; exit 1; }
  [[ ! -e $part ]] || { echo "FAIL: $name: checkpoint left after the resumed run"; exit 1; }
  echo "$name: SIGKILL after $done_before of $total records + torn line: resumed $name.json identical"
}

# edit: one record per fact
edit=(edit "${model[@]}" --steps 4 --unrelated 10)
"$knprobe" "${edit[@]}" --out "$work/full-editing" >/dev/null 2>&1
[[ ! -e $work/full-editing/editing.partial.jsonl ]] || { echo "FAIL: checkpoint left after success"; exit 1; }
total=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(len(j['facts'])+len(j['skipped']))" "$work/full-editing/editing.json")
kill_after "$work/ed/editing.partial.jsonl" 6 "${edit[@]}" --out "$work/ed"
check_resume editing "$work/ed/editing.partial.jsonl" "$total" "${edit[@]}" --out "$work/ed"

# factcheck: one record per (language, relation)
fc=(factcheck "${model[@]}" --steps 4 --wrong 2)
"$knprobe" "${fc[@]}" --out "$work/full-factcheck" >/dev/null 2>&1
total=$(python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(len({c['relation'] for c in j['claims']} | {s['fact'] for s in j['skipped'] if s['fact'].startswith('relation:')}))" "$work/full-factcheck/factcheck.json")
kill_after "$work/fc/factcheck.partial.jsonl" 2 "${fc[@]}" --out "$work/fc"
check_resume factcheck "$work/fc/factcheck.partial.jsonl" "$total" "${fc[@]}" --out "$work/fc"

# A checkpoint of other options is refused, not mixed.
kill_after "$work/other/editing.partial.jsonl" 3 "${edit[@]}" --out "$work/other"
rc=0
"$knprobe" "${edit[@]}" --l2 4 --out "$work/other" >"$work/other.log" 2>&1 || rc=$?
((rc == 1)) && grep -q "cannot resume.*options.l2: file has 8.*this run has 4" "$work/other.log" \
  || { echo "FAIL: other options not refused (exit $rc)"; cat "$work/other.log"; exit 1; }
echo "other options refused: $(grep -o 'cannot resume.*' "$work/other.log")"
echo PASS
