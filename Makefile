# The two commands of the README: `make test` and `make recipe`; each sets up what it needs first.
.PHONY: setup test recipe recipe-real recipe-ctc lint

setup: .venv/.installed

.venv/.installed: pyproject.toml tools/setup.sh
	bash tools/setup.sh
	touch $@

test: setup
	.venv/bin/python -m pytest -q

recipe: setup
	recipes/synthetic_caribbean/run.sh

# Real Mandarin-L1 English (speechocean762), offline from a local copy of the corpus (its Kaldi layout or the hub repo).
SPEECHOCEAN762_DIR ?= $(abspath ../shared/data/speechocean762)
recipe-real: setup
	SPEECHOCEAN762_DIR="$(SPEECHOCEAN762_DIR)" recipes/speechocean762_english/run.sh

recipe-ctc: setup
	recipes/synthetic_caribbean_ctc/run.sh

lint: setup
	.venv/bin/ruff check .
