# The two commands of the quickstart: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# The suite's processes: each test file runs whole in one of them.
TEST_PROCESSES ?= 2

.PHONY: run test lint bench durability clean frontend

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "chatsite needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

# The chat page's browser libraries (marked, DOMPurify, KaTeX, highlight.js): installed
# by npm from the committed lock file and copied into the static files; never committed
# themselves.
VENDOR := conversations/static/conversations/vendor
HLJS := node_modules/@highlightjs/cdn-assets
$(VENV)/.frontend: package.json package-lock.json $(VENV)/.installed
	$(VENV)/bin/npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR)/katex $(VENDOR)/hljs
	cp node_modules/marked/lib/marked.umd.js node_modules/marked/lib/marked.umd.js.map \
	   node_modules/dompurify/dist/purify.min.js node_modules/dompurify/dist/purify.min.js.map \
	   $(VENDOR)/
	cp -r node_modules/katex/dist/katex.min.js node_modules/katex/dist/katex.min.css \
	   node_modules/katex/dist/fonts $(VENDOR)/katex/
	cp $(HLJS)/highlight.min.js $(HLJS)/styles/github.min.css $(HLJS)/styles/github-dark.min.css \
	   $(VENDOR)/hljs/
	@touch $@

frontend: $(VENV)/.frontend

run: $(VENV)/.installed $(VENV)/.frontend
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_login --url http://127.0.0.1:$(PORT)/
	$(PY) manage.py serve --port $(PORT)

test: $(VENV)/.installed-test $(VENV)/.frontend
	$(PY) -m ruff check .
	$(PY) -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	@touch $@

# Latency and load benchmarks (bench/): starts everything on loopback and prints the
# table of docs/benchmarks.md (BENCH_ARGS="--quick" for a smoke run).
bench: $(VENV)/.installed-bench
	$(PY) -m bench.run $(BENCH_ARGS)

# Randomized durability campaigns (tests/chaos.py): for each seed, DURABILITY_RUNS
# scenarios on one worker and as many on two, with kills and pauses; prints a summary
# per campaign and fails on any divergence. Replay one: DURABILITY_SEEDS=<seed>.
DURABILITY_RUNS ?= 500
DURABILITY_SEEDS ?= 1,2
durability: $(VENV)/.installed-test $(VENV)/.frontend
	CHAT_DURABILITY_SCENARIOS=$(DURABILITY_RUNS) CHAT_DURABILITY_SEEDS=$(DURABILITY_SEEDS) \
	CHAT_DURABILITY_CONCURRENCY=8 $(PY) -m pytest tests/test_durability.py -s -p no:cacheprovider \
	  -o timeout=0 -q

lint: $(VENV)/.installed-test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

clean:
	rm -rf $(VENV) *.egg-info node_modules $(VENDOR)
