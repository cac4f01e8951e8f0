#!/usr/bin/env bash
# speechocean762 (real Mandarin-L1 English, adults and children): Whisper tiny.en before and after adaptation,
# by one or more methods, compared (README.md: data, licence, stages, configs).
#   SPEECHOCEAN762_DIR=/data/speechocean762 ./run.sh   offline, from a local copy (Kaldi layout or hub repo)
#   ./run.sh                                          the corpus from the Hub (mispeech/speechocean762)
#   ./run.sh --methods "lora encoder"                 some methods (each is conf/train_<method>.yaml)
#   ./run.sh --methods conf/gpu_whisper_small.yaml --model openai/whisper-small.en --exp-root exp/whisper_small_en
#   ./run.sh --stage 0 --stop-stage 0                 prepare the data only
# Other options go to ../TEMPLATE/asr.sh (--eval-batch-size, --device, --train-args …); see --help.
set -euo pipefail
export RECIPE_COMMAND="$0 $*"
cd "$(dirname "$0")"

# The methods ./run.sh runs without --methods: names of conf/train_<method>.yaml (or YAML paths).
methods="lora_gate"
general=../../../shared/data/vctk_p239/manifest.jsonl  # real native speech (VCTK p239) for the forgetting
[ -f "$general" ] || general=""                        # check, when this checkout has it beside it

exec ../TEMPLATE/methods.sh \
  --model openai/whisper-tiny.en \
  --methods "$methods" \
  --exp-root exp/whisper_tiny_en --results-md RESULTS.md --general-manifest "$general" \
  --test-sets "test_adults test_children" --roles "test_adults=target test_children=target" \
  --eval-batch-size 20 \
  --title "speechocean762 (Mandarin-L1 English, real speech): Whisper tiny.en" \
  "$@"
