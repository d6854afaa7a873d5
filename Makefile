# nsfwkit: two commands do all the set-up on a fresh machine.
#   make demo   set up, then run the notebook pipeline on the embedded default model
#   make test   set up, then run the test suite
#   make lab    set up, then open JupyterLab on notebooks/ (127.0.0.1; no browser opened under CI)
# Every target is idempotent; a second run only redoes what changed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check
STAMPS := $(VENV)/.stamps
NPM    ?= npm
PYTEST_ARGS ?=
# The suite runs on every core; tests sharing a once-per-run build stay on one worker (tests/conftest.py).
PYTEST_XDIST ?= -n auto --dist loadgroup

.PHONY: setup demo test lint bench models browser lab git-filter clean-venv help
.DEFAULT_GOAL := help

help:
	@echo "make demo   - set up and run the pipeline on the default model (outputs in dist/runs/demo)"
	@echo "make test   - set up and run the tests"
	@echo "make lab    - set up and open JupyterLab on the notebooks (kernel 'Python 3 (nsfwkit)')"
	@echo "make setup  - only set up (.venv, node_modules, pretrained models, Jupyter kernel, git filter)"
	@echo "make bench  - run the benchmarks (ratios against baselines measured in the same run)"

setup: $(STAMPS)/python $(STAMPS)/convert $(STAMPS)/node $(STAMPS)/kernel git-filter models

$(STAMPS)/python: pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "nsfwkit needs Python 3.11, found " + sys.version' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c requirements/constraints.txt -e ".[cpu,dev,video,runtimes,lab,ray]"
	@mkdir -p $(STAMPS) && touch $@

# The TF.js converter, without its dependencies: see requirements/convert.txt for why.
$(STAMPS)/convert: requirements/convert.txt $(STAMPS)/python
	$(PIP) install -q --no-deps -r requirements/convert.txt
	@mkdir -p $(STAMPS) && touch $@

# The kit's Jupyter kernel, "Python 3 (nsfwkit)": keeps TensorFlow's start-up chatter out of the
# notebooks (see nsfwkit/jupyter.py); the notebooks and `nsfwkit run` use it.
$(STAMPS)/kernel: nsfwkit/jupyter.py $(STAMPS)/python
	$(PY) -m nsfwkit.jupyter kernel --prefix $(VENV)
	@mkdir -p $(STAMPS) && touch $@

# Notebook outputs never reach git: .gitattributes sends *.ipynb through the nbstripout filter,
# registered here in this clone's git config (idempotent; git finds the config from a worktree
# too, where .git is a file). Cell ids are kept, so a clean notebook passes through unchanged.
# Not a git checkout (a tarball): nothing to register.
NBSTRIPOUT = "$(abspath $(PY))" -m nbstripout --keep-id
git-filter: $(STAMPS)/python
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
	  git config filter.nbstripout.smudge cat && \
	  git config filter.nbstripout.required true && \
	  git config diff.ipynb.textconv '$(NBSTRIPOUT) -t'; \
	else echo "not a git checkout: nbstripout filter not registered"; fi

$(STAMPS)/node: package.json package-lock.json
	@command -v $(NPM) >/dev/null || { echo "npm (Node.js 20) is required: apt-get install nodejs npm" >&2; exit 1; }
	$(NPM) ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(STAMPS) && touch $@

# The pretrained classifiers are imported from the nsfwjs npm package into the model cache
# (~/.cache/nsfwkit/models, or $NSFWKIT_CACHE); `models build` skips what is current (< 1 s).
models: $(STAMPS)/python $(STAMPS)/node
	$(VENV)/bin/nsfwkit models build

# Browser tests drive Debian's Chromium (TF.js ships no browser we could download offline).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "Chromium is needed for the browser tests: sudo apt-get install chromium" >&2; exit 1; fi; }

demo: setup
	$(VENV)/bin/nsfwkit run --params full --name demo
	$(VENV)/bin/nsfwkit build-web --export dist/runs/demo/03_convert/export --run dist/runs/demo
	@echo "Web view: $(VENV)/bin/nsfwkit serve   (serves dist/web on 127.0.0.1)"

lab: setup
	$(PY) -m nsfwkit.jupyter lab

test: setup browser lint
	$(PY) -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# Lint: ruff with the project's configuration (pyproject.toml), over the package, tests, benchmarks
# and notebooks.
lint: $(STAMPS)/python
	$(VENV)/bin/ruff check .

# Speed targets: each prints a ratio against a baseline measured in the same run.
bench: setup browser
	$(PY) benchmarks/classify.py
	$(PY) benchmarks/input_pipeline.py
	$(PY) benchmarks/prepare.py
	$(PY) benchmarks/filters.py
	$(PY) benchmarks/cam.py
	$(PY) benchmarks/widget.py
	$(PY) benchmarks/browser.py
	$(PY) benchmarks/runtimes.py

clean-venv:
	rm -rf $(VENV)
