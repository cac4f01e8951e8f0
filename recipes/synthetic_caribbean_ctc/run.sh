#!/usr/bin/env bash
# A wav2vec2-architecture CTC model adapted to (synthetic) Caribbean English, offline; WER and CER
# before and after.
#
# No pretrained wav2vec2 weights can be downloaded here, so the recipe first makes its own: a small
# wav2vec2 CTC model trained from scratch on US English (en-us) speech, saved as an ordinary
# transformers checkpoint (exp/source/train/model). That step runs once (~40 min on 2 CPU cores)
# and is reused; then ../TEMPLATE/asr.sh adapts it to Caribbean English exactly as it would adapt
# facebook/wav2vec2-base-960h (give --model to do just that, with internet).
#   ./run.sh                                 source model if missing, then stages 0-4
#   ./run.sh --train-config conf/adapt.yaml --exp exp/other
# Every option of ../TEMPLATE/asr.sh can be given here. The source step reads SOURCE_EXP (default
# exp/source), SOURCE_MODEL_CONFIG (conf/source_model.yaml) and SOURCE_TRAIN_CONFIG (conf/source_train.yaml).
set -euo pipefail
export RECIPE_COMMAND="$0 $*"
cd "$(dirname "$0")"
command -v speechtl >/dev/null || export PATH="$(cd ../.. && pwd)/.venv/bin:$PATH"

source_exp=${SOURCE_EXP:-exp/source}
if [ ! -f "$source_exp/train/summary.json" ]; then
  echo "=== source model: train a wav2vec2 CTC model from scratch on en-us ($(date '+%H:%M:%S'))"
  t0=$EPOCHREALTIME
  ../TEMPLATE/asr.sh --model none --exp "$source_exp" --stop-stage 0
  speechtl new-ctc-model --texts "$source_exp/data/train_us.jsonl" \
    --config "${SOURCE_MODEL_CONFIG:-conf/source_model.yaml}" \
    --out "$source_exp/init"
  speechtl train --model "$source_exp/init" --train "$source_exp/data/train_us.jsonl" \
    --dev "$source_exp/data/dev_us.jsonl" --config "${SOURCE_TRAIN_CONFIG:-conf/source_train.yaml}" \
    --out "$source_exp/train"
  awk -v t0="$t0" -v t1="$EPOCHREALTIME" 'BEGIN { printf "source model from scratch\t%.1f\n", t1 - t0 }' \
    >> "$source_exp/timings.tsv"
fi

# The source model's training time goes into the adaptation run's timings, so its report counts it.
exp=exp/wav2vec2_caribbean
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in --exp) exp="${args[i+1]:-$exp}" ;; --exp=*) exp="${args[i]#--exp=}" ;; esac
done
mkdir -p "$exp"
grep -qs "^source model" "$exp/timings.tsv" || grep -s "^source model" "$source_exp/timings.tsv" >> "$exp/timings.tsv" || true

exec ../TEMPLATE/asr.sh \
  --model "$source_exp/train" \
  --exp "$exp" \
  --train-config conf/adapt.yaml \
  --test-sets "test_caribbean test_us" \
  --roles "test_caribbean=target test_us=source" \
  --eval-batch-size 40 \
  --results-md RESULTS.md \
  --title "Synthetic Caribbean English (espeak-ng en-029): a wav2vec2 CTC model trained on en-us, before and after adaptation" \
  "$@"
