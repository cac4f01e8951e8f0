#!/usr/bin/env bash
# Stage 0 of scottish_english: writes DATA_DIR/train.jsonl, dev.jsonl and test.jsonl, test_vctk.jsonl, nothing outside DATA_DIR.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
: "${VCTK_DIR:?set VCTK_DIR to your copy of CSTR VCTK 0.92 (see README.md)}"
speechtl prepare english_dialects --src "${DIALECTS_SRC:-ylacombe/english_dialects}" --dialects scottish --out "$1"
speechtl prepare vctk --src "$VCTK_DIR" --accents Scottish --test-only --suffix vctk --out "$1"
