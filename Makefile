# `make app`: set up .venv with the runtime requirements and start the demo.
# `make test`: add the development requirements (training, evaluation, ONNX, tests) and run the tests.
PY ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip

# The runtime set: what a Space installs.
$(VENV)/.runtime: requirements.txt constraints.txt pyproject.toml
	$(PY) -m venv $(VENV)
	$(PIP) install -q -r requirements.txt -c constraints.txt
	touch $@

# On top of it (also into a venv `make app` made): requirements-dev.txt, and the FID extractor without
# its own dependencies.
$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-eval.txt
	$(PIP) install -q -r requirements-dev.txt -c constraints.txt
	$(PIP) install -q --no-deps -r requirements-eval.txt
	touch $@

# olah (a self-hosted Hub server used by the download tests) pins its own dependencies: own venv.
.olah/bin/olah-cli:
	$(PY) -m venv .olah
	.olah/bin/pip install -q olah==0.5.4

venv: $(VENV)/.runtime

dev: $(VENV)/.dev

app: venv
	$(VENV)/bin/python app.py

# Debian's Chromium for the browser test (driven by Playwright, which must not download its own).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: dev .olah/bin/olah-cli chromium
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest

.PHONY: venv dev app test chromium
