#!/usr/bin/env bash
# Each method trained and decoded at dynamic audio context (the recipe's default, ./run.sh) against the same method at
# the full 30 s context, paired on every test set, with what each run took. Run both first:
#   ./run.sh
#   ./run.sh --exp-root exp/whisper_tiny_en_ctx30 --results-md results/full_context/RESULTS.md \
#     --train-args "--set model_settings.audio_context=full"
#   local/compare_contexts.sh [--methods "encoder lora adapters full"]   # writes results/audio_context/RESULTS.md
# --also NAME=ROOT adds, for each method, ROOT/<method>/<set>/ evaluations of the dynamic run decoded another way, e.g.
#   speechtl eval --model exp/whisper_tiny_en/lora --audio-context-margin 5 --manifest … --out exp/m5/lora/<set> …
#   local/compare_contexts.sh --also "dynamic, 5 s margin=exp/m5"
# Other options (--no-times, --n-boot …) go to `speechtl compare`.
set -euo pipefail
cd "$(dirname "$0")/.."
methods="encoder lora adapters full" dynamic=exp/whisper_tiny_en full=exp/whisper_tiny_en_ctx30
out=results/audio_context extra=() also=()
while [ $# -gt 0 ]; do
  case "$1" in
    --methods) methods="$2"; shift ;; --dynamic) dynamic="$2"; shift ;; --full) full="$2"; shift ;;
    --out) out="$2"; shift ;; --also) also+=("$2"); shift ;;
    *) extra+=("$1") ;;
  esac
  shift
done
command -v speechtl >/dev/null || export PATH="$PWD/../../.venv/bin:$PATH"
systems=() pairs=()
for m in $methods; do
  for d in "$dynamic/$m" "$full/$m"; do [ -d "$d/eval/after" ] || { echo "$0: $d has no evaluation yet" >&2; exit 2; }; done
  systems+=("$m (30 s)=$full/$m" "$m (dynamic)=$dynamic/$m")
  pairs+=(--pair "$m (30 s)" "$m (dynamic)")
  for a in "${also[@]}"; do
    [ -d "${a#*=}/$m" ] || { echo "$0: --also $a: no ${a#*=}/$m" >&2; exit 2; }
    systems+=("$m (${a%%=*})=${a#*=}/$m") pairs+=(--pair "$m (30 s)" "$m (${a%%=*})")
  done
done
speechtl compare "${systems[@]}" "${pairs[@]}" --role test_caribbean=target --role test_us=source \
  --role general=general --base-label "whisper-tiny.en (base)" --out "$out" --no-plots \
  --title "Synthetic Caribbean English: each method at dynamic audio context against the full 30 s" "${extra[@]}" \
  > /dev/null
mv "$out/COMPARE.md" "$out/RESULTS.md"
echo "wrote $out/RESULTS.md"
