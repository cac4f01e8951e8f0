#!/usr/bin/env bash
# Adapt Whisper tiny.en to (synthetic) Caribbean English, offline, by four methods, and compare them:
# WER before and after, and trainable parameters, for each.
#   ./run.sh                                  every method, at dynamic audio context (~25 min on 2 CPU cores)
#   ./run.sh --methods "lora adapters"        some (each is conf/train_<method>.yaml)
#   ./run.sh --methods path/to/mine.yaml      any training config, named after its file
#   ./run.sh --stage 3 --stop-stage 4         a range of ../TEMPLATE/asr.sh's stages, for each method
#   ./run.sh --exp-root exp/other --general-manifest ""
# Other options go to ../TEMPLATE/asr.sh (--model, --eval-batch-size, --device, --train-args, --eval-args …).
# Methods share one data dir and one evaluation of the base model; each gets EXP_ROOT/<method>/ and a
# detailed report in results/<method>/RESULTS.md; RESULTS.md puts them side by side (../TEMPLATE/methods.sh).
set -euo pipefail
export RECIPE_COMMAND="$0 $*"
cd "$(dirname "$0")"

general=../../../shared/data/vctk_p239/manifest.jsonl  # the project's real-speech set (VCTK p239), when
[ -f "$general" ] || general=""                        # this checkout has it beside it

exec ../TEMPLATE/methods.sh \
  --model openai/whisper-tiny.en --base-label "whisper-tiny.en (base)" \
  --methods "encoder lora adapters full" \
  --exp-root exp/whisper_tiny_en --results-md RESULTS.md --general-manifest "$general" \
  --test-sets "test_caribbean test_us" --roles "test_caribbean=target test_us=source" \
  --eval-batch-size 20 \
  --title "Synthetic Caribbean English (espeak-ng en-029): Whisper tiny.en" \
  "$@"
