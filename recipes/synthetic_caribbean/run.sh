#!/usr/bin/env bash
# Adapt Whisper tiny.en to (synthetic) Caribbean English, offline, by four methods, and compare them:
# WER before and after, and trainable parameters, for each.
#   ./run.sh                                  every method (~60 min on 2 CPU cores)
#   ./run.sh --methods "lora adapters"        some (each is conf/train_<method>.yaml)
#   ./run.sh --methods path/to/mine.yaml      any training config, named after its file
#   ./run.sh --stage 3 --stop-stage 4         a range of ../TEMPLATE/asr.sh's stages, for each method
#   ./run.sh --exp-root exp/other --general-manifest ""
# Other options go to ../TEMPLATE/asr.sh (--model, --eval-batch-size, --device, --train-args …).
# Methods share one data dir and one evaluation of the base model; each gets EXP_ROOT/<method>/ and a
# detailed report in results/<method>/RESULTS.md; RESULTS.md puts them side by side.
set -euo pipefail
export RECIPE_COMMAND="$0 $*"
cd "$(dirname "$0")"
command -v speechtl >/dev/null || export PATH="$(cd ../.. && pwd)/.venv/bin:$PATH"

methods="encoder lora adapters full"
exp_root=exp/whisper_tiny_en
results_md=RESULTS.md
general=""
shared=../../../shared/data/vctk_p239/manifest.jsonl
if [ -f "$shared" ]; then  # the project's real-speech set (VCTK p239), when this checkout has it beside it
  general="$shared"
fi
stop_stage=4
pass=()
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift 2 ;;
    --exp-root) exp_root="$2"; shift 2 ;;
    --results-md) results_md="$2"; shift 2 ;;
    --general-manifest) general="$2"; shift 2 ;;
    --stop-stage) stop_stage="$2"; pass+=("$1" "$2"); shift 2 ;;
    *) pass+=("$1"); shift ;;
  esac
done
[ -n "$general" ] && echo "general (real speech) test set: $general"
results_dir="$(dirname "$results_md")/results"
title="Synthetic Caribbean English (espeak-ng en-029): Whisper tiny.en"
roles="test_caribbean=target test_us=source"

names=()
for m in $methods; do
  conf="conf/train_$m.yaml" name="$m"
  if [[ "$m" == *.yaml ]]; then conf="$m" name="$(basename "$m" .yaml)"; fi
  [ -f "$conf" ] || { echo "$0: no training config $conf for method '$m'" >&2; exit 2; }
  names+=("$name")
  echo "##### method $name ($conf)"
  ../TEMPLATE/asr.sh \
    --model openai/whisper-tiny.en \
    --exp "$exp_root/$name" --data "$exp_root/data" --before "$exp_root/before" \
    --train-config "$conf" \
    --test-sets "test_caribbean test_us" \
    --roles "$roles" \
    --general-manifest "$general" \
    --eval-batch-size 20 \
    --results-md "$results_dir/$name/RESULTS.md" \
    --title "$title, before and after adaptation ($name)" \
    "${pass[@]}"
done

[ "$stop_stage" -ge 4 ] || exit 0
# The methods side by side: one leaderboard per test set, the base model once.
systems=("whisper-tiny.en (base)=$exp_root/before")
for n in "${names[@]}"; do systems+=("$n=$exp_root/$n"); done
role_args=(); for r in $roles; do role_args+=(--role "$r"); done
[ -n "$general" ] && role_args+=(--role general=general)
speechtl compare "${systems[@]}" "${role_args[@]}" --out "$exp_root/compare" \
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
