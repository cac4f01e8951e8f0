#!/usr/bin/env bash
# Set up speechtl on a fresh Debian/Ubuntu machine: espeak-ng (for the offline recipe and tests)
# and a virtual environment .venv with speechtl and its test extras. Safe to re-run.
#   TORCH_SPEC   what to pip-install for PyTorch (default torch==2.13.0; a CPU build where one is at hand,
#                e.g. a local wheel; on a GPU machine use the CUDA build you need)
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "installing espeak-ng"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "espeak-ng is missing and this user can't install it: ask for 'apt-get install espeak-ng'" >&2
    exit 1
  fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
.venv/bin/python -m pip install -q -e ".[test]"
# CTC beam search's decoder, so its tests run. Not an extra: pyctcdecode 0.5.0 (the latest) pins numpy<2, which
# pip would honour by downgrading numpy below what pandas (through datasets) needs; it runs on numpy 2 as it is
# (`pip check` reports that pin, and its hypothesis requirement, which only its own tests use).
.venv/bin/python -m pip install -q --no-deps "pyctcdecode==0.5.0" "pygtrie>=2.1"
# KenLM's reader for beam search with an n-gram LM: a C++ build (~1 min, needs g++); its tests skip without it.
.venv/bin/python -c "import kenlm" >/dev/null 2>&1 || .venv/bin/python -m pip install -q kenlm \
  || echo "WARNING: kenlm did not build: CTC beam search with an n-gram LM is unavailable and its test skips" >&2
.venv/bin/python -c "import speechtl, torch; print(f'speechtl {speechtl.__version__} ready (torch {torch.__version__})')"
