#!/usr/bin/env bash
# Shared stages of every speechtl recipe (cf. ESPnet's egs2/TEMPLATE/asr1/asr.sh), kept small:
# each stage is one `speechtl` call, and each call skips work already done, so any range of stages
# can be re-run and a killed run picks up where it stopped.
#
#   0 prepare data     local/data.sh DATA_DIR writes train.jsonl, dev.jsonl and one <set>.jsonl per test set
#   1 evaluate before  the pretrained model on every test set       -> EXP/eval/before/<set>/ (or --before)
#   2 adapt            speechtl train on train.jsonl, dev.jsonl      -> EXP/train/
#   3 evaluate after   the adapted model on every test set          -> EXP/eval/after/<set>/
#   4 report           RESULTS.md and results.json                  -> EXP/, copied to --results-md
#
# Called from a recipe's run.sh as: TEMPLATE/asr.sh --model M --train-config conf/x.yaml ... "$@"
set -euo pipefail
command_line="${RECIPE_COMMAND:-$0 $*}"  # what the user typed (run.sh sets it), for the report

stage=0
stop_stage=4
model=""                # hub id, checkpoint dir or CTranslate2 dir of the pretrained model
exp=exp                 # experiment dir
data=""                 # data dir (default EXP/data); runs that share one also share --before evaluations
before=""               # dir of the pretrained model's evaluations (default EXP/eval/before)
train_config=""         # YAML training config
train_set=train
dev_set=dev
test_sets=""            # names of <set>.jsonl under EXP/data, space-separated
roles=""                # SET=ROLE pairs for the report (target, source, general)
general_manifest=""     # a real-speech manifest evaluated before and after (forgetting check)
eval_batch_size=16
device=""               # cpu, cuda, …; empty: cuda if available
results_md=""           # where the recipe's RESULTS.md goes (a copy of EXP/RESULTS.md)
title="Results"
train_args=""           # extra arguments for speechtl train (e.g. "--set max_steps=10")
eval_args=""            # extra arguments for speechtl eval, before and after alike (e.g. "--beams 32 --lm lm.arpa")

usage() { sed -n '2,16p' "$0"; echo "options: --stage --stop-stage --model --exp --data --before --train-config"\
  "--test-sets --general-manifest --eval-batch-size --device --results-md --train-args --eval-args"; }

# Kaldi's parse_options.sh, inlined: --some-option value sets $some_option if it exists.
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*) [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }; name="$1"; value="$2"; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  var="${name#--}"; var="${var//-/_}"
  if ! declare -p "$var" >/dev/null 2>&1 || [[ "$var" == name || "$var" == value || "$var" == var || "$var" == command_line ]]; then
    echo "$0: unknown option $name (see --help)" >&2; exit 2
  fi
  printf -v "$var" '%s' "$value"
done

[ -n "$model" ] || { echo "$0: --model is required" >&2; exit 2; }
command -v speechtl >/dev/null || {
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  if [ -x "$repo/.venv/bin/speechtl" ]; then export PATH="$repo/.venv/bin:$PATH";
  else echo "$0: speechtl is not installed (see README.md)" >&2; exit 2; fi
}

data="${data:-$exp/data}"
before="${before:-$exp/eval/before}"
mkdir -p "$exp"
# Every invocation, with the stages it ran: a report made by a later partial run still names the run behind it.
echo "# $(date '+%Y-%m-%d %H:%M') stages $stage-$stop_stage" >> "$exp/commands.txt"
echo "$command_line" >> "$exp/commands.txt"
device_args=(); [ -n "$device" ] && device_args=(--device "$device")

sets=($test_sets)
if [ -n "$general_manifest" ]; then
  [ -f "$general_manifest" ] || { echo "$0: --general-manifest $general_manifest not found" >&2; exit 2; }
  sets+=(general)
fi
manifest_of() { if [ "$1" = general ]; then echo "$general_manifest"; else echo "$data/$1.jsonl"; fi; }

run_stage() {  # run_stage N description command...: time it, and log it to EXP/timings.tsv
  local n=$1 what=$2; shift 2
  if [ "$stage" -le "$n" ] && [ "$stop_stage" -ge "$n" ]; then
    echo "=== stage $n: $what ($(date '+%H:%M:%S'))"
    local t0=$EPOCHREALTIME
    "$@"
    awk -v n="$n" -v w="$what" -v t0="$t0" -v t1="$EPOCHREALTIME" \
      'BEGIN { printf "stage%s %s\t%.1f\n", n, w, t1 - t0 }' >> "$exp/timings.tsv"
  fi
}

evaluate_all() {  # evaluate_all MODEL OUT_DIR: every set, with one load of the model
  local args=() extra=($eval_args)
  for s in "${sets[@]}"; do args+=(--manifest "$(manifest_of "$s")" --out "$2/$s"); done
  speechtl eval --model "$1" "${args[@]}" --batch-size "$eval_batch_size" "${device_args[@]}" "${extra[@]}"
}

report() {  # RESULTS.md (speaker-bootstrap CIs, forgetting score, error analysis, plots/), results.json, scoring/
  local role_args=() notes=()
  for r in $roles; do role_args+=(--role "$r"); done
  [ -n "$general_manifest" ] && role_args+=(--role general=general) || \
    notes+=(--note "The real-speech general set was skipped: no --general-manifest was given.")
  speechtl report --before "$before" --after "$exp/eval/after" --train "$exp/train" \
    --timings "$exp/timings.tsv" --command "$(cat "$exp/commands.txt")" --title "$title" \
    "${role_args[@]}" "${notes[@]}" --out "$exp"
  if [ -n "$results_md" ] && [ "$(realpath -m "$results_md")" != "$(realpath -m "$exp/RESULTS.md")" ]; then
    mkdir -p "$(dirname "$results_md")" && cp "$exp/RESULTS.md" "$results_md"
    if [ -d "$exp/plots" ]; then  # RESULTS.md links plots/*.png: the copy gets them beside it
      mkdir -p "$(dirname "$results_md")/plots" && cp "$exp"/plots/*.png "$(dirname "$results_md")/plots/"
    fi
    echo "wrote $results_md"
  fi
}

train_extra=($train_args)
run_stage 0 "prepare data" local/data.sh "$data"
run_stage 1 "evaluate before" evaluate_all "$model" "$before"
run_stage 2 "adapt" speechtl train --model "$model" --train "$data/$train_set.jsonl" --dev "$data/$dev_set.jsonl" \
  --config "$train_config" --out "$exp/train" "${train_extra[@]}"
run_stage 3 "evaluate after" evaluate_all "$exp/train" "$exp/eval/after"
run_stage 4 "report" report
