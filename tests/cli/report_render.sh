#!/usr/bin/env bash
# `knprobe report` on a real run, rendered by headless Chromium to a PNG: Chromium must exit 0
# and write a PNG; the page must not ask for anything from outside.
# Usage: report_render.sh KNPROBE CHROMIUM STORIES_DIR FACTS WORKDIR
set -euo pipefail
knprobe=$1 chromium=$2 stories=$3 facts=$4 work=$5
rm -rf "$work" && mkdir -p "$work"
export OMP_NUM_THREADS=1
"$knprobe" run --model "$stories/stories260K.bin" --facts "$facts" --langs a,b \
  --threshold a=0.3 --threshold b=0.3 --steps 20 --dkn --out "$work/r.jsonl" >/dev/null 2>&1
"$knprobe" report "$work/r.jsonl" --out "$work/report.html" --markdown "$work/report.md"
grep -q "<svg" "$work/report.html"
if grep -qiE "<script|src=|href=|@import|url\(" "$work/report.html"; then
  echo "FAIL: the report references outside resources"; exit 1
fi
grep -q "| a – b |" "$work/report.md"
rc=0
"$chromium" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,2600 \
  --screenshot="$work/report.png" "file://$work/report.html" >"$work/chromium.log" 2>&1 || rc=$?
if ((rc != 0)); then cat "$work/chromium.log"; echo "FAIL: chromium exit $rc"; exit 1; fi
head -c 8 "$work/report.png" | od -An -tx1 | tr -d ' \n' | grep -q "^89504e470d0a1a0a" \
  || { echo "FAIL: no PNG written"; exit 1; }
size=$(stat -c %s "$work/report.png")
((size > 20000)) || { echo "FAIL: PNG of $size bytes is too small to hold the report"; exit 1; }
echo "rendered $work/report.png ($size bytes)"
echo PASS
