#!/usr/bin/env bash
# Several adaptation methods of one model on one corpus, compared (shared by the recipes that compare methods).
# Each method is ./asr.sh with its own training config: conf/train_<method>.yaml, or any YAML path given as a
# method (named after its file). The methods share one data dir (EXP_ROOT/data) and one evaluation of the base
# model (EXP_ROOT/before); each gets EXP_ROOT/<method>/ and a detailed report in results/<method>/RESULTS.md
# beside --results-md. Stage 4 then runs `speechtl compare` into EXP_ROOT/compare/ and writes --results-md:
# one leaderboard per test set with the base model once, links to each method's report, plots/ beside it.
#
# Called from a recipe's run.sh (in the recipe dir) with the recipe's defaults first, the user's options after:
#   ../TEMPLATE/methods.sh --model M --methods "lora full" --exp-root exp/x --test-sets "a b" --roles "a=target" \
#     --title "…" --results-md RESULTS.md --general-manifest PATH --eval-batch-size 20 "$@"
# Later options win. Options not listed here go, in order, to every ./asr.sh call (--stage, --device,
# --eval-batch-size, --train-args, …); --stop-stage goes to both.
set -euo pipefail

model=""           # hub id, checkpoint dir or CTranslate2 dir of the pretrained model
base_label=""      # its row in the comparison (default: "<last part of --model> (base)")
methods=""         # space-separated: method names (conf/train_<name>.yaml) or YAML paths
exp_root=exp       # EXP_ROOT: data/, before/, <method>/, compare/
results_md=RESULTS.md
general_manifest=""  # a real-speech manifest evaluated before and after (forgetting check); empty: none
test_sets=""       # names of <set>.jsonl that local/data.sh writes, space-separated
roles=""           # SET=ROLE pairs (target, source)
title="Results"
stop_stage=4
pass=()            # options for ./asr.sh

template="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() {  # the first paragraph above, the options, and the calling recipe's settings
  awk 'NR > 1 && !/^# ./ { exit } NR > 1 { print }' "${BASH_SOURCE[0]}"
  echo "options: --model --base-label --methods --exp-root --results-md --general-manifest --test-sets --roles"\
    "--title --stop-stage; any other goes to asr.sh:"
  "$template/asr.sh" --help | tail -n 1 | sed 's/^options:/  /'
  echo "this recipe: --model '$model' --methods '$methods' --exp-root '$exp_root' --results-md '$results_md'"\
    "--test-sets '$test_sets' --roles '$roles' --general-manifest '$general_manifest'"
}

help=0
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) help=1; shift; continue ;;
    --*=*) name="${1%%=*}"; value="${1#*=}"; shift ;;
    --*) [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 2; }; name="$1"; value="$2"; shift 2 ;;
    *) echo "$0: unexpected argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  case "$name" in
    --model|--base-label|--methods|--exp-root|--results-md|--general-manifest|--test-sets|--roles|--title)
      var="${name#--}"; printf -v "${var//-/_}" '%s' "$value" ;;
    --stop-stage) stop_stage="$value"; pass+=("$name" "$value") ;;
    *) pass+=("$name" "$value") ;;  # asr.sh says if it does not know it
  esac
done
[ "$help" = 0 ] || { usage; exit 0; }
[ -n "$model" ] || { echo "$0: --model is required" >&2; exit 2; }
[ -n "$methods" ] || { echo "$0: --methods names no method" >&2; exit 2; }
base_label="${base_label:-$(basename "$model") (base)}"
command -v speechtl >/dev/null || export PATH="$template/../../.venv/bin:$PATH"

# Every method's config exists before the first one starts: a typo must not surface hours into a run.
names=() confs=()
for m in $methods; do
  conf="conf/train_$m.yaml" name="$m"
  if [[ "$m" == *.yaml ]]; then conf="$m" name="$(basename "$m" .yaml)"; fi
  [ -f "$conf" ] || { echo "$0: no training config $conf for method '$m'" >&2; exit 2; }
  names+=("$name") confs+=("$conf")
done
[ -n "$general_manifest" ] && echo "general (real speech) test set: $general_manifest"
results_dir="$(dirname "$results_md")/results"

for i in "${!names[@]}"; do
  name="${names[i]}"
  echo "##### method $name (${confs[i]})"
  "$template/asr.sh" \
    --model "$model" \
    --exp "$exp_root/$name" --data "$exp_root/data" --before "$exp_root/before" \
    --train-config "${confs[i]}" \
    --test-sets "$test_sets" \
    --roles "$roles" \
    --general-manifest "$general_manifest" \
    --results-md "$results_dir/$name/RESULTS.md" \
    --title "$title, before and after adaptation ($name)" \
    "${pass[@]}"
done

[ "$stop_stage" -ge 4 ] || exit 0
# The methods side by side: one leaderboard per test set, the base model once.
# (each experiment links the shared base evaluation, EXP_ROOT/before, as its own: compare lists it once, as the
# base of every method, and scores each method's forgetting against it)
systems=()
for n in "${names[@]}"; do systems+=("$n=$exp_root/$n"); done
role_args=(); for r in $roles; do role_args+=(--role "$r"); done
[ -n "$general_manifest" ] && role_args+=(--role general=general)
speechtl compare "${systems[@]}" "${role_args[@]}" --base-label "$base_label" --out "$exp_root/compare" \
  --title "$title: adaptation methods compared" > /dev/null
{
  cat "$exp_root/compare/COMPARE.md"
  echo
  echo "## Each method in detail"
  echo
  echo "Speaker-bootstrap intervals, forgetting, error analysis and the training run of each method:"
  for n in "${names[@]}"; do echo "- [$n](results/$n/RESULTS.md)"; done
} > "$results_md.tmp"
mv "$results_md.tmp" "$results_md"
if [ -d "$exp_root/compare/plots" ]; then
  mkdir -p "$(dirname "$results_md")/plots" && cp "$exp_root"/compare/plots/*.png "$(dirname "$results_md")/plots/"
fi
echo "wrote $results_md"
