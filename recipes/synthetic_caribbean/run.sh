#!/usr/bin/env bash
# Adapt Whisper tiny.en to (synthetic) Caribbean English, offline, and report WER before and after.
#   ./run.sh                                  all stages, defaults sized for 2 CPU cores (~30 min)
#   ./run.sh --stage 2 --stop-stage 3         any range of stages
#   ./run.sh --general-manifest M.jsonl       also check real speech for forgetting
#   ./run.sh --train-config conf/train_full.yaml --exp exp/full
# Every option of ../TEMPLATE/asr.sh can be given here.
set -euo pipefail
export RECIPE_COMMAND="$0 $*"
cd "$(dirname "$0")"

general=""
shared=../../../shared/data/vctk_p239/manifest.jsonl
if [ -f "$shared" ]; then  # the project's real-speech set (VCTK p239), when this checkout has it beside it
  general="$shared"; echo "general (real speech) test set: $shared"
fi

exec ../TEMPLATE/asr.sh \
  --model openai/whisper-tiny.en \
  --exp exp/whisper_tiny_en_encoder \
  --train-config conf/train_encoder.yaml \
  --test-sets "test_caribbean test_us" \
  --roles "test_caribbean=target test_us=source" \
  --general-manifest "$general" \
  --eval-batch-size 20 \
  --results-md RESULTS.md \
  --title "Synthetic Caribbean English (espeak-ng en-029): Whisper tiny.en before and after adaptation" \
  "$@"
