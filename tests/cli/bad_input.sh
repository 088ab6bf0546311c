#!/usr/bin/env bash
# Bad input to the knprobe program, one class per line of the table in docs/INPUTS.md: every case
# must end with its documented exit code (0 done, 1 bad input, 2 bad usage) and a message naming
# what was wrong — within a time limit (no hang), without writing outside the output folder.
# Usage: bad_input.sh KNPROBE STORIES_DIR FACTS_DIR WORKDIR
set -uo pipefail
knprobe=$1 stories=$2 facts=$3 work=$4
rm -rf "$work" && mkdir -p "$work/out"
export OMP_NUM_THREADS=1
model=(--model "$stories/stories260K.bin")
fact=(--prompt "Once upon a time, there was a little girl named" --answer " Lily" --langs en)
fails=0 cases=0

# expect RC REGEX ARGS...: runs knprobe ARGS (60 s limit), checks the exit code and the output.
expect() {
  local want=$1 regex=$2
  shift 2
  cases=$((cases + 1))
  local rc=0
  timeout 60 "$knprobe" "$@" >"$work/log" 2>&1 || rc=$?
  if [[ $rc -ne $want ]] || ! grep -qE -- "$regex" "$work/log"; then
    echo "FAIL: knprobe $* -> exit $rc (want $want), output:"
    head -c 600 "$work/log"; echo
    fails=$((fails + 1))
  fi
}

# Options: refused at parse time with the valid range (exit 2), before any work.
expect 2 "expected a decimal integer in \[1, 1000\]" localize "${model[@]}" "${fact[@]}" --steps 0
expect 2 "expected a decimal integer in \[1, 1000\]" localize "${model[@]}" "${fact[@]}" --steps -1
expect 2 "expected a decimal integer" localize "${model[@]}" "${fact[@]}" --steps 1e9
expect 2 "expected a decimal integer in \[0, 4095\]" localize "${model[@]}" "${fact[@]}" --layers -1
expect 2 "layer 99 does not exist" localize "${model[@]}" "${fact[@]}" --layers 99 --out "$work/out"
expect 2 "layers.*twice" localize "${model[@]}" "${fact[@]}" --layers 1,1 --out "$work/out"
expect 2 "t-low.*expected a finite number in \[0, 1\)" dkn "${model[@]}" "${fact[@]}" --t-low 2
expect 2 "top.*\[2, 1000\]" dkn "${model[@]}" "${fact[@]}" --top 1
expect 2 "max-set-size.*\[2, 8\]" dkn "${model[@]}" "${fact[@]}" --max-set-size 0
expect 2 "aggregate.*expected one of sum, mean" localize "${model[@]}" "${fact[@]}" --aggregate foo
expect 2 "expected LANG=T" localize "${model[@]}" "${fact[@]}" --threshold =0.3
expect 2 "expected LANG=T with T a number" localize "${model[@]}" "${fact[@]}" --threshold en=0.3abc
expect 2 "limit.*expected a decimal integer" localize "${model[@]}" "${fact[@]}" --limit -1
expect 2 "sample.*expected a decimal integer" localize "${model[@]}" "${fact[@]}" --sample -5
expect 2 "max-passes.*expected a decimal integer" dkn "${model[@]}" "${fact[@]}" --max-passes -1
expect 2 "seed.*expected a decimal integer" localize "${model[@]}" "${fact[@]}" --seed -1
expect 2 "l1.*expected a finite number" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --l1 nan
expect 2 "l2.*expected a finite number" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --l2 inf
expect 2 "fixed-threshold.*expected a finite number" factcheck "${model[@]}" "${fact[@]}" --fixed-threshold nan
expect 2 "language code" localize "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs ../a
expect 2 "no --threshold for language 'b'" localize "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3
# screening selects nothing: no threshold is needed for it
expect 0 "kept 3 facts" localize "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --screen rank:50 --screen-only --out "$work/screen-only"
expect 2 "at most 65536 are accepted" localize "${model[@]}" --prompt "$(head -c 100000 /dev/zero | tr '\0' a)" --answer " x" --langs en
expect 2 "top.*exceeds the vocabulary of 512" predict "${model[@]}" --prompt "Once upon a time" --top 513
expect 2 "expected a decimal integer in \[1, 1000\]" predict "${model[@]}" --prompt "Once upon a time" --top 2000
# Options of the controls, screening, DKN candidates and fact-checking (issue 18).
expect 2 "unrelated.*\[1, 1000\]" localize "${model[@]}" "${fact[@]}" --unrelated 0
expect 2 "control-band.*expected a finite number in \(0, 0.5\]" localize "${model[@]}" "${fact[@]}" --control-band 0.9
expect 2 "bootstrap.*\[100, 1000000\]" localize "${model[@]}" "${fact[@]}" --bootstrap 5
expect 2 "rank:K needs K" localize "${model[@]}" "${fact[@]}" --screen rank:0
expect 2 "expected top1, rank:K or prob:P" localize "${model[@]}" "${fact[@]}" --screen best
expect 2 "per-relation / --per-answer balance the screened facts" localize "${model[@]}" "${fact[@]}" --per-relation 3
expect 2 "dkn-candidates.*expected one of" dkn "${model[@]}" "${fact[@]}" --dkn-candidates all
expect 2 "fit.*expected one of" factcheck "${model[@]}" "${fact[@]}" --fit maybe
expect 2 "doses.*expected a finite number in \(0, 100\]" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --doses 0.5,0
expect 2 "doses: dose 1 is the full strength" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --doses 0.5,1
expect 2 "doses: dose 0.5 is given twice" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --doses 0.5,0.25,0.5
expect 2 "doses: dose 1 is the full strength or is not written exactly" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --doses 1.0000001
expect 2 "doses: 9 doses; at most 8" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --doses 0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9
expect 2 "edit-sign.*expected one of" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --edit-sign up
expect 2 "drop-generic.*expected a finite number" localize "${model[@]}" "${fact[@]}" --drop-generic 1

# Files that are not regular files: refused by name, at once (a FIFO would block in open).
mkfifo "$work/fifo.bin"
expect 1 "fifo.bin: cannot open model file|fifo.bin: model file is not a regular file" predict --model "$work/fifo.bin" --prompt "Once"
expect 1 "/dev/full: results file is not a regular file" run "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --out /dev/full

# A huge prompt inside a fact file: the fact is skipped with the reason; the run completes.
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
with open(f"{w}/long.jsonl", "w") as f:
    f.write(json.dumps({"id": "long", "prompts": {"en": "Once upon a time " * 3000}, "answers": {"en": " Lily"}}) + "\n")
    f.write(json.dumps({"id": "../../escape", "relation": "r", "prompts": {"en": "Once upon a time, there was a little girl named"}, "answers": {"en": " Lily"}}) + "\n")
    f.write(json.dumps({"id": "a/b", "relation": "s", "prompts": {"en": "Once upon a time, there was a little girl named"}, "answers": {"en": " Lily"}}) + "\n")
PY
expect 0 "skipped long \[en\]: .*more than the 512 accepted" localize "${model[@]}" --facts "$work/long.jsonl" --langs en --steps 2 --out "$work/out"
# ids with '/' or '..' write their scores inside the output folder, under distinct names.
n_npy=$(find "$work/out/scores" -maxdepth 1 -type f -name "*.npy" | wc -l)
[[ $n_npy -eq 2 ]] || { echo "FAIL: expected 2 score files in out/scores, found $n_npy"; fails=$((fails + 1)); }
stray=$(find "$work" -name "*.npy" -not -path "$work/out/scores/*" | wc -l)
deep=$(find "$work/out/scores" -mindepth 1 -type d | wc -l)
if [[ $stray -ne 0 || $deep -ne 0 || -e "$work/../escape.en.npy" ]]; then
  echo "FAIL: a score file was written outside the output folder"; fails=$((fails + 1))
fi
grep -q '"scores_file"' "$work/out/localize.json" || { echo "FAIL: no scores_file in the JSON"; fails=$((fails + 1)); }
# A threshold selecting most of a layer: no disjoint random control exists; the fact is skipped
# with the reason (this used to loop for ever).
expect 0 "random control: layer [0-9]+ selects" localize "${model[@]}" "${fact[@]}" --threshold en=0.0001 --steps 2 --out "$work/out2"

# Non-finite weights: named, never p = nan.
python3 - "$stories/stories260K.bin" "$work/nan.bin" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
struct.pack_into("<f", b, 28 + 4 * (512 * 64 + 70), float("nan"))
open(sys.argv[2], "wb").write(b)
PY
cp "$stories/tok512.bin" "$work/tok512.bin"
expect 1 "nan.bin: tensor rms_att of layer 1: element 6 is NaN" predict --model "$work/nan.bin" --prompt "Once upon a time"

# Results files: a foreign line is refused with the file and line, the file is left unchanged.
run=(run "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --steps 2 --no-verify)
expect 0 "wrote .*r.jsonl" "${run[@]}" --out "$work/r.jsonl"
echo '{"junk":1}' >>"$work/r.jsonl"
cp "$work/r.jsonl" "$work/r.before"
expect 1 "r.jsonl:[0-9]+: no string 'record'" "${run[@]}" --out "$work/r.jsonl"
cmp -s "$work/r.jsonl" "$work/r.before" || { echo "FAIL: a refused results file was changed"; fails=$((fails + 1)); }
echo "my notes" >"$work/notes.txt"
expect 1 "notes.txt: does not start with a knprobe header line" "${run[@]}" --out "$work/notes.txt"
[[ "$(cat "$work/notes.txt")" == "my notes" ]] || { echo "FAIL: a foreign file was modified"; fails=$((fails + 1)); }
expect 1 "notes.txt: does not start with a knprobe header line" report "$work/notes.txt" --out "$work/rep.html"
# A one-line fact file without its final newline given as --out: refused, never emptied.
printf '%s' '{"id": "f1", "prompts": {"a": "x"}, "answers": {"a": " y"}}' >"$work/one.jsonl"
cp "$work/one.jsonl" "$work/one.before"
expect 1 "one.jsonl: does not start with a knprobe header line" "${run[@]}" --out "$work/one.jsonl"
cmp -s "$work/one.jsonl" "$work/one.before" || { echo "FAIL: a one-line fact file was modified"; fails=$((fails + 1)); }
head -n -1 "$work/r.before" >"$work/r.good"
expect 1 "/proc/knprobe-r.html: cannot write" report "$work/r.good" --out /proc/knprobe-r.html
expect 0 "wrote .*rep.html" report "$work/r.good" --out "$work/rep.html"
# edit --sets-from: a run made with other options, or not a run, is refused by name; a matching
# one gives its sets.
edit=(edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --unrelated 1 --out "$work/ed")
expect 2 "sets-from .*r.good: the run's option 'steps' is 2, this command's 3" "${edit[@]}" --threshold b=0.3 --steps 3 --sets-from "$work/r.good"
expect 2 "sets-from .*r.good: the run's option 'thresholds.b' is 0.3, this command's 0.4" "${edit[@]}" --threshold b=0.4 --steps 2 --sets-from "$work/r.good"
expect 1 "notes.txt: does not start with a knprobe header line" "${edit[@]}" --threshold b=0.3 --steps 2 --sets-from "$work/notes.txt"
expect 0 "selected sets of [1-9][0-9]* of [0-9]+ facts are taken from .*r.good" "${edit[@]}" --threshold b=0.3 --steps 2 --sets-from "$work/r.good"
expect 2 "sets-from .*r.good: the run's fact list \(fingerprint\) is" "${edit[@]}" --threshold b=0.3 --steps 2 --limit 2 --sets-from "$work/r.good"
# run --drop-generic: outside [0, 1) refused; a refined run's sets are taken only with the same
# --drop-generic.
expect 2 "drop-generic" "${run[@]}" --out "$work/r_ref.jsonl" --drop-generic 1.5
expect 2 "random-drop is the control of --drop-generic F" "${run[@]}" --out "$work/r_ref.jsonl" --random-drop
expect 0 "wrote .*r_ref.refined.jsonl" "${run[@]}" --out "$work/r_ref.jsonl" --drop-generic 0.3
expect 2 "r_ref.refined.jsonl: the run's sets were refined with --drop-generic 0.3, this command's is 0" "${edit[@]}" --threshold b=0.3 --steps 2 --sets-from "$work/r_ref.refined.jsonl"
expect 0 "selected sets of [1-9][0-9]* of [0-9]+ facts are taken from .*r_ref.refined.jsonl" "${edit[@]}" --threshold b=0.3 --steps 2 --drop-generic 0.3 --sets-from "$work/r_ref.refined.jsonl"
fc=(factcheck "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --steps 2 --out "$work/fc")
expect 2 "dkn-from .*r.good: the run's option 'dkn' is null" "${fc[@]}" --dkn-from "$work/r.good"
expect 0 "wrote .*r_dkn.jsonl" "${run[@]}" --dkn --out "$work/r_dkn.jsonl"
expect 0 "dkn-from: .*r_dkn.jsonl holds the DKN searches of [1-9][0-9]* of [0-9]+" "${fc[@]}" --dkn-from "$work/r_dkn.jsonl"
expect 2 "dkn-from .*r_dkn.jsonl: the run's option 'dkn.t_low' is 0.2, this command's 0.1" "${fc[@]}" --t-low 0.1 --dkn-from "$work/r_dkn.jsonl"
# A checkpoint of another run in the output folder: refused with the difference named, not mixed.
fc3=(factcheck "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --steps 2 --out "$work/fc3")
mkdir -p "$work/fc3" && printf '%s\n' '{"record":"header","format":"knprobe-factcheck-checkpoint/0"}' >"$work/fc3/factcheck.partial.jsonl"
expect 1 "factcheck.partial.jsonl: cannot resume, it holds results of another run" "${fc3[@]}"
mkdir -p "$work/ed3" && printf '%s\n' '{"record":"header","format":"knprobe-edit-checkpoint/0"}' >"$work/ed3/editing.partial.jsonl"
expect 1 "editing.partial.jsonl: cannot resume, it holds results of another run" edit "${model[@]}" --facts "$facts/stories_two_phrasings.jsonl" --langs a,b --threshold a=0.3 --threshold b=0.3 --steps 2 --unrelated 1 --out "$work/ed3"
# A factcheck.json of the wrong shape: the key is named.
echo '{"summary": {"en": {"test": {"dkn": {"precision": "high"}}}}}' >"$work/fc.json"
expect 1 "fc.json: summary.en.test.dkn.precision: expected a finite number" report "$work/r.good" --factcheck "$work/fc.json" --out "$work/rep2.html"
# JSON nested a million deep (copying or printing it would overflow the stack): refused by name.
mkdir -p "$work/deep"
python3 -c "import sys; sys.stdout.write('{\"model_type\": ' + '[' * 1000000 + ']' * 1000000 + '}')" >"$work/deep/config.json"
expect 1 "config.json: JSON nested deeper than 128 levels" predict --model "$work/deep" --prompt "Once"
python3 -c "import sys; sys.stdout.write('[' * 1000000 + '\n')" >"$work/deep.jsonl"
expect 1 "deep.jsonl line 1 skipped: JSON nested too deeply" localize "${model[@]}" --facts "$work/deep.jsonl" --langs en

# Signals: a command other than run ends at once on SIGINT (it used to ignore the first one).
rc=0
long_prompt=$(for _ in $(seq 35); do printf 'Once upon a time, there was a girl. '; done)
timeout -s INT --preserve-status 1 "$knprobe" localize "${model[@]}" --prompt "$long_prompt" \
  --answer " Lily" --langs en --steps 1000 --out "$work/out3" >"$work/log" 2>&1 || rc=$?
cases=$((cases + 1))
[[ $rc -eq 130 ]] || { echo "FAIL: localize after SIGINT -> exit $rc (want 130)"; fails=$((fails + 1)); }

echo "$cases cases, $fails failures"
((fails == 0)) && echo PASS
