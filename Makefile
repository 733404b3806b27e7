# Two set-up commands on a fresh machine: `make demo` and `make test`.
# Installs come from requirements.txt (exact versions + sha256 of every file), so a fresh machine gets
# exactly the stack that was tested. `make lock` refreshes the lock; `make test-latest` tries the newest
# allowed releases in a separate venv first.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
LOCK := requirements.txt  # the lock: pip-compile output, every file hash-pinned
LINT_PATHS := src tests $(wildcard bench scripts/*.py)
STAMP := $(VENV)/.installed
# The lock tool itself is pinned too, so `make lock` is reproducible.
LOCK_TOOLS := pip==26.3 pip-tools==7.6.2

.PHONY: install demo test unit integration lint format clean lock test-latest fuzz browser

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# Every file is hash-checked; torch is the CPU wheel pinned in the lock (no CUDA packages).
	$(BIN)/pip install -q --require-hashes -r $(LOCK)
	# lmadapt itself, without touching the locked set (setuptools comes from the lock).
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration" -q

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration -q

test: lint browser
	$(BIN)/python -m pytest -q

# The web UI's browser test drives Debian's Chromium (Playwright cannot download browsers here) with a CJK
# font for the 中文 screenshots: installed through apt when missing and root, else a clear stop.
BROWSER_PKGS := chromium fonts-wqy-microhei
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(BROWSER_PKGS) for the web UI test (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BROWSER_PKGS) >/dev/null; \
	  elif [ "$${LMADAPT_NO_BROWSER:-0}" != 1 ]; then \
	    echo "make test drives Chromium for the web UI test: run 'sudo apt-get install $(BROWSER_PKGS)'" \
	      "(or set LMADAPT_NO_BROWSER=1 to skip that test knowingly)" >&2; exit 2; \
	  fi; \
	fi

# A longer fuzzing run than CI's (the count goes in docs/reliability.md).
fuzz: $(STAMP)
	LMADAPT_FUZZ_EXAMPLES=$${LMADAPT_FUZZ_EXAMPLES:-2000} $(BIN)/python -m pytest -q tests/test_fuzz.py

# Re-resolve the newest allowed versions into the lock (run `make test-latest` first).
lock:
	test -x .venv-lock/bin/python || $(PY) -m venv .venv-lock
	.venv-lock/bin/pip install -q $(LOCK_TOOLS)
	.venv-lock/bin/pip-compile -q --generate-hashes --allow-unsafe --extra dev --strip-extras \
		--no-emit-index-url --no-emit-find-links --upgrade -o $(LOCK) pyproject.toml requirements-torch.in

# The newest releases pyproject.toml allows, in a separate venv, against the unit tests (not part of CI).
test-latest:
	rm -rf .venv-latest && $(PY) -m venv .venv-latest
	.venv-latest/bin/pip install -q torch==2.13.0
	.venv-latest/bin/pip install -q --upgrade -e '.[dev]'
	.venv-latest/bin/python scripts/test_latest.py

clean:
	rm -rf $(VENV) .venv-latest .venv-lock build *.egg-info
