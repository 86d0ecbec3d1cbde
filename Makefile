# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export LC_ALL := C.UTF-8
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pilito-pipeline demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl: $(BIN)/.installed
	$(BIN)/python -m pilito_pipeline_tests.bench.$(subst -,_,$@)

clean:
	rm -rf $(VENV) .pilito
