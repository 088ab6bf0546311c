#!/usr/bin/env bash
# `knprobe localize --screen-only` keeps every screening verdict in <out>/screening.jsonl as it is
# decided. A scan killed with SIGKILL mid-way and rerun screens only the facts not yet there and
# writes the same facts.jsonl as an uninterrupted scan; a rerun with another rule is refused.
# Usage: screen_resume.sh KNPROBE STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 stories=$2 facts=$3 work=$4
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1
# 600 facts (the file's, repeated under new ids) so that a scan lasts long enough to be killed.
for i in $(seq 1 50); do sed "s/\"id\": \"\([^\"]*\)\"/\"id\": \"\1-$i\"/" "$facts"; done >"$work/facts.jsonl"
args=(localize --model "$stories/stories260K.bin" --facts "$work/facts.jsonl" --langs en
      --screen rank:50 --per-relation 100 --screen-only)
"$knprobe" "${args[@]}" --out "$work/full" >/dev/null 2>&1
total=$(grep -c '"verdict"' "$work/full/screening.jsonl")
((total >= 4)) || { echo "FAIL: only $total verdicts in an uninterrupted scan"; exit 1; }
# The same scan, killed once it has written 20 verdicts, then rerun.
"$knprobe" "${args[@]}" --out "$work/cut" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 3000); do
  n=$(grep -c '"verdict"' "$work/cut/screening.jsonl" 2>/dev/null || true)
  ((${n:-0} >= 20)) && break
  sleep 0.002
done
kill -9 "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
before=$(grep -c '"verdict"' "$work/cut/screening.jsonl" || true)
"$knprobe" "${args[@]}" --out "$work/cut" >"$work/log" 2>&1
((before > 0 && before < total)) ||
  { echo "FAIL: the kill did not land mid-scan ($before of $total verdicts)"; exit 1; }
grep -q "$before screening verdicts resumed" "$work/log" ||
  { echo "FAIL: the rerun did not resume ($before verdicts were on file)"; cat "$work/log"; exit 1; }
after=$(grep -c '"verdict"' "$work/cut/screening.jsonl")
[[ $after -eq $total ]] || { echo "FAIL: $after verdicts after resuming, $total uninterrupted"; exit 1; }
cmp -s "$work/full/facts.jsonl" "$work/cut/facts.jsonl" ||
  { echo "FAIL: facts.jsonl differs from the uninterrupted scan's"; exit 1; }
# Another rule: its verdicts would not be comparable.
rc=0
"$knprobe" localize --model "$stories/stories260K.bin" --facts "$work/facts.jsonl" --langs en --screen top1 \
  --screen-only --out "$work/cut" >"$work/log2" 2>&1 || rc=$?
[[ $rc -ne 0 ]] && grep -q "cannot resume" "$work/log2" ||
  { echo "FAIL: a rerun with another rule was not refused (exit $rc)"; cat "$work/log2"; exit 1; }
echo "PASS: killed after $before of $total verdicts, resumed to the same facts"
