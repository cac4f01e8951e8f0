#!/usr/bin/env bash
# EdAcc: conversational English across accents: Whisper small.en before and after adaptation.
#   ./run.sh                          all stages (README.md: data, licences, GPU settings)
#   ./run.sh --stage 0 --stop-stage 0 prepare the data only; every option of ../TEMPLATE/asr.sh works here
set -euo pipefail
cd "$(dirname "$0")"
exec ../TEMPLATE/asr.sh --model openai/whisper-small.en --exp exp/whisper_small_en --train-config conf/whisper.yaml \
  --test-sets "test" --roles "test=target" --eval-batch-size 32 --results-md RESULTS.md \
  --title "EdAcc: conversational English across accents: Whisper small.en before and after adaptation" "$@"
