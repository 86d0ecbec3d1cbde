# The two set-up commands of the README: `make demo` and `make test`. Everything is installed from
# requirements-dev.lock (every package pinned with hashes); `make lock` refreshes the locks.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The machine's pip configuration may name local mirrors that do not exist; the lock's hashes decide.
PIP := PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip --disable-pip-version-check --quiet
export LC_ALL := C.UTF-8
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo up test lock browser bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl bench-embed bench-e2e bench-partitions bench-tenants bench-storage eval-fa clean

$(BIN)/.installed: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --require-hashes --no-deps -r requirements-dev.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

demo: $(BIN)/.installed
	$(BIN)/pilito-pipeline demo

up: $(BIN)/.installed
	$(BIN)/pilito-pipeline up

test: $(BIN)/.installed browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Re-resolve both locks from pyproject.toml (the runtime lock keeps the dev lock's versions).
lock:
	$(PYTHON) -m venv .lock-tools
	PIP_CONFIG_FILE= .lock-tools/bin/pip install --quiet pip-tools==7.6.2
	.lock-tools/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links --extra embedded --extra test \
	  -o requirements-dev.lock pyproject.toml
	cp requirements-dev.lock requirements.lock
	.lock-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	  --no-emit-index-url --no-emit-find-links -o requirements.lock pyproject.toml

bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl bench-embed bench-e2e bench-partitions bench-tenants bench-storage eval-fa: $(BIN)/.installed
	$(BIN)/python -m pilito_pipeline_tests.bench.$(subst -,_,$@)

# Debian's Chromium and its driver for the browser test (pilito_pipeline_tests/ops/test_ui_browser.py);
# nothing is downloaded at test time. Needs root (CI runs as root).
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver)

clean:
	rm -rf $(VENV) .pilito .lock-tools
