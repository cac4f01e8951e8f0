# The two commands of the README: `make test` and `make recipe`; each sets up what it needs first.
.PHONY: setup test recipe recipe-ctc lint

setup: .venv/.installed

.venv/.installed: pyproject.toml tools/setup.sh
	bash tools/setup.sh
	touch $@

test: setup
	.venv/bin/python -m pytest -q

recipe: setup
	recipes/synthetic_caribbean/run.sh

recipe-ctc: setup
	recipes/synthetic_caribbean_ctc/run.sh

lint: setup
	.venv/bin/ruff check .
