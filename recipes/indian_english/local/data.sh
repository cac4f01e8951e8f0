#!/usr/bin/env bash
# Stage 0 of indian_english: writes DATA_DIR/train.jsonl, dev.jsonl and test.jsonl, test_svarah.jsonl, nothing outside DATA_DIR.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
: "${L2ARCTIC_DIR:?set L2ARCTIC_DIR to your copy of L2-ARCTIC (see README.md)}"
speechtl prepare l2arctic --src "$L2ARCTIC_DIR" --accents hindi --out "$1"
speechtl prepare svarah --src "${SVARAH_SRC:-ai4bharat/Svarah}" --suffix svarah --out "$1"
