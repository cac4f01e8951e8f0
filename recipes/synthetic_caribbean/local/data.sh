#!/usr/bin/env bash
# Stage 0 of this recipe: speak the committed sentences with espeak-ng (conf/data.yaml says who reads what).
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: $0 DATA_DIR" >&2; exit 2; }
spec="${DATA_SPEC:-conf/data.yaml}"
speechtl prepare espeak --spec "$spec" --out "$1"
