# Two commands set up everything on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint clean contact-sheet synth-sheet browser-deps bundle-model

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.runtime: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.train: $(VENV)/.runtime
	$(BIN)/python -m pip install -q -e ".[train,serve,ray,dev]"
	touch $@

run: $(VENV)/.runtime
	$(BIN)/hmer-run examples/sample.png

test: $(VENV)/.train browser-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -p no:cacheprovider

# Chromium for the drawing-pad browser test; where apt is unavailable the test skips itself.
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	    (apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) || \
	    echo "chromium not installed: the browser test will be skipped"; }

lint: $(VENV)/.train
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info

# The bundled default model (docs/MODEL.md): export a committed training checkpoint into the package,
# then fit its confidence on CROHME 2013. It reads at INPUT_SCALE x its training symbol size, picked on
# CROHME 2013 with hmer-eval CHECKPOINT <2013> --beam 1 --input-scale S; re-check it per checkpoint.
CHECKPOINT ?= models/cpu-v3/last.pt
INPUT_SCALE ?= 1.1
# SCALES: the sizes hmer-run reads each input at (x INPUT_SCALE), picked with benchmarks.scale_sets on 2013.
SCALES ?= 0.8,1,1.25
# SIDE_BEAM: the beam width at the sizes other than 1 (docs/MODEL.md, "Reading at several sizes").
SIDE_BEAM ?= 3
bundle-model: $(VENV)/.train
	$(BIN)/hmer-export $(CHECKPOINT) hmer_runtime/models/default --int8 --force \
	  --input-scale $(INPUT_SCALE) --scales $(SCALES) --side-beam $(SIDE_BEAM) \
	  --check-data ../shared/data/crohme/crohme-2013.tar.gz --check-limit 200
	$(BIN)/python -m hmer_export.calibrate fit hmer_runtime/models/default ../shared/data/crohme/crohme-2013.tar.gz

# CROHME is CC BY-NC-SA: renders of it stay local (git-ignored), never committed.
contact-sheet: $(VENV)/.runtime
	$(BIN)/hmer-data sheet ../shared/data/crohme/crohme-train.tar.gz docs/crohme-contact-sheet.png -n 30 --seed 0

# Synthetic handwriting composed from CROHME's own glyphs (hmer-data synth): a local look only.
synth-sheet: $(VENV)/.train
	$(BIN)/hmer-data synth ../shared/data/crohme/crohme-train.tar.gz runs/synth-sheet -n 30 --seed 0
	$(BIN)/hmer-data sheet runs/synth-sheet docs/synth-contact-sheet.png -n 30 --seed 0
