# Every target sets up what it needs: a fresh machine runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# A CPU build of torch lies on these machines' disk; other torch specs pull a multi-GB CUDA build.
# On a GPU machine: make TORCH_SPEC="torch" EXTRAS="dev,gpu" ...
TORCH_SPEC ?= torch==2.13.0
EXTRAS     ?= dev

.PHONY: setup demo pretrain pretrain-imagetext test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dppp.demo

# The demo's pretrained tiny CLIP (models/tiny-clip, committed): corpus, held-out set, pretraining, export.
# About 30-60 min on 2 cores; a rerun resumes (delete runs/pretrain to start over).
pretrain: $(STAMP)
	$(VENV)/bin/dppp generate configs/pretrain.yaml
	$(VENV)/bin/dppp generate configs/pretrain.yaml --out runs/pretrain/heldout --identities 128 --set generate.seed=78
	$(VENV)/bin/dppp pretrain configs/pretrain.yaml

# The image-text-only tiny CLIP (models/tiny-clip-imagetext): no identity term, both renderer looks; the
# backbone of the domain-generalisation benchmark (docs/pretraining.md). Same cost as `make pretrain`.
pretrain-imagetext: $(STAMP)
	$(VENV)/bin/dppp generate configs/pretrain-imagetext.yaml
	$(VENV)/bin/dppp generate configs/pretrain-imagetext.yaml --out runs/pretrain-imagetext/corpus-photo --set generate.seed=79 --set generate.renderer.look=photo
	$(VENV)/bin/dppp generate configs/pretrain-imagetext.yaml --out runs/pretrain-imagetext/heldout --identities 128 --set generate.seed=78
	$(VENV)/bin/dppp pretrain configs/pretrain-imagetext.yaml

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

# ruff, and the import contracts of pyproject.toml's [tool.importlinter] (the layers, docs/overview.md).
# lint-imports reads packages from disk, so it gets the installed layout (dppp/trainer, ...) as links.
NAMESPACED = $(shell sed -n 's/^FOLDERS = \[\(.*\)\]/\1/p' setup.py | tr -d '",')# setup.py's FOLDERS
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	rm -rf build/import-graph && mkdir -p build/import-graph/dppp
	ln -s $(CURDIR)/dppp/* build/import-graph/dppp/
	for d in $(NAMESPACED); do ln -s $(CURDIR)/$$d build/import-graph/dppp/$$d; done
	cd build/import-graph && PYTHONPATH=. $(CURDIR)/$(VENV)/bin/lint-imports $(CURDIR)/pyproject.toml

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
