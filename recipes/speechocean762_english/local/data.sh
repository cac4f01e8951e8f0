#!/usr/bin/env bash
# Stage 0 of this recipe: speechocean762 (real Mandarin-L1 English) into train/dev (dev carved from the
# official train split by speaker) and the official test split by age group (test_adults, test_children).
# SPEECHOCEAN762_DIR: a local copy (the corpus's own Kaldi layout, or the hub repository); default: the hub.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
speechtl prepare speechocean762 --src "${SPEECHOCEAN762_DIR:-mispeech/speechocean762}" --age-groups --out "$1"
# Stand-in noise and room impulse responses for conf/train_lora_distill03_noise.yaml (no noise corpus offline).
[ -f exp/noise/noise.jsonl ] || speechtl prepare fabricated_noise --out exp/noise > /dev/null
