#!/usr/bin/env bash
# Stage 0 of nigerian_english: writes DATA_DIR/train.jsonl, dev.jsonl and test.jsonl, nothing outside DATA_DIR.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
speechtl prepare afrispeech --src "${AFRISPEECH_SRC:-intronhealth/afrispeech-200}" --countries NG --out "$1"
