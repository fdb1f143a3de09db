# Two entry points for a fresh machine (Python 3.11+, node/npm, git): `make run` and `make test`.
# Each creates .venv and node_modules when missing or stale; the only thing installed outside the repo is
# Debian's chromium for the browser tests (apt-get, needs root; setup fails loudly otherwise).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYSTAMP   := $(VENV)/.installed
NODESTAMP := node_modules/.installed

.PHONY: setup run test lint typecheck pytest clean

CHROMIUM  := /usr/bin/chromium

setup: $(PYSTAMP) $(NODESTAMP) $(CHROMIUM)

$(PYSTAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

# Three tries: a registry connection reset (ECONNRESET, seen in CI) is not a broken lockfile. The third failure fails.
$(NODESTAMP): package.json package-lock.json
	@for try in 1 2 3; do npm ci --no-audit --no-fund --loglevel=error && exit 0; \
	  echo "setup: npm ci failed (try $$try of 3)" >&2; [ $$try = 3 ] || sleep 10; done; exit 1
	@touch $@

# The browser tests (tests/http/web/) drive Debian's Chromium; Playwright's own browser download is never used.
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then echo "setup: $(CHROMIUM) is missing and installing it needs root:" \
	  "run 'sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium'" >&2; exit 1; fi
	apt-get update && apt-get install -y --no-install-recommends chromium

# The node: API, sealer, anchoring worker and a managed anvil, state in ./.mrledger/ (Ctrl-C stops it).
run: setup
	$(VENV)/bin/mrledger serve

test: setup lint typecheck pytest

lint:
	$(VENV)/bin/ruff check .

typecheck:
	$(VENV)/bin/mypy src

# pytest exits 5 when it collected nothing: make treats that as the failure it is.
pytest:
	$(PY) -m pytest -n 2 --dist loadgroup -q

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
