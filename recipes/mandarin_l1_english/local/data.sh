#!/usr/bin/env bash
# Stage 0 of mandarin_l1_english: writes DATA_DIR/train.jsonl, dev.jsonl and test.jsonl, test_speechocean762.jsonl, nothing outside DATA_DIR.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
: "${L2ARCTIC_DIR:?set L2ARCTIC_DIR to your copy of L2-ARCTIC (see README.md)}"
speechtl prepare l2arctic --src "$L2ARCTIC_DIR" --accents mandarin --out "$1"
speechtl prepare speechocean762 --src "${SPEECHOCEAN_SRC:-mispeech/speechocean762}" --test-only --suffix speechocean762 --out "$1"
