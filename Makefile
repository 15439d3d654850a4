# Two entry points: `make serve` (the embedded stack on the tiny default model) and `make test`.
# Both create .venv and install the project once; a second run only checks timestamps.

VENV     := .venv
BIN      := $(VENV)/bin
STAMP    := $(VENV)/.installed
REPO     := model_repository
TINY     := .imagegen/checkpoints
TINY_MODELS := flux-schnell flux-dev sdxl flux-kontext
EXPORTED := $(REPO)/flux-schnell_transformer/1/model.onnx
SAFETY   := $(REPO)/image_safety/1/model.onnx
NODE_SDK := tests/e2e/node/node_modules/.package-lock.json
CHROMIUM := /usr/bin/chromium
# `make bench`: its own checkpoints, repository and server state, apart from `make serve`'s.
BENCH_ROOT := .imagegen/bench
BENCH_REPO := $(BENCH_ROOT)/model_repository
BENCH_MODELS := $(BENCH_REPO)/flux-schnell-bench_transformer/1/model.onnx $(BENCH_REPO)/flux-schnell_transformer/1/model.onnx
CLIP_WHEEL := .imagegen/wheels/open_clip_torch-3.3.0-py3-none-any.whl
SUDO     := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: serve test test-real check model bench bench-gpu-sim clean postgresql

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# The tiny default model: built from a fixed seed, exported next to the reviewed configs in git.
$(EXPORTED): $(STAMP) $(wildcard export/*.py)
	for model in $(TINY_MODELS); do \
	  $(BIN)/imagegen tiny --family $$model --out $(TINY)/$$model --seed 0 && \
	  $(BIN)/imagegen export --checkpoint $(TINY)/$$model --name $$model --repository $(REPO) || exit 1; \
	done

# The image-safety slot: a placeholder classifier with the real contract (export/safety.py).
$(SAFETY): $(STAMP) export/safety.py
	$(BIN)/imagegen safety-model --repository $(REPO)

model: $(EXPORTED) $(SAFETY)

serve: $(EXPORTED) $(SAFETY)
	$(BIN)/imagegen serve

check: $(STAMP)
	$(BIN)/ruff format --check frontend export backends tests benchmarks families
	$(BIN)/ruff check frontend export backends tests benchmarks families
	$(BIN)/mypy frontend export backends benchmarks families

# The official Node SDK, for the spec's Node example.
$(NODE_SDK): tests/e2e/node/package-lock.json
	npm ci --prefix tests/e2e/node --no-audit --no-fund --silent

# Debian's chromium, which the Studio's browser tests drive through Playwright (no browser download).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# Debian's PostgreSQL server: the tests run a private cluster of it (tests/postgres.py) as the store
# that two frontends share. Phony: its binaries' path carries the version Debian ships.
postgresql:
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

test: check $(NODE_SDK) $(CHROMIUM) postgresql $(CLIP_WHEEL)
	$(BIN)/pytest

# CLIP's real BPE merges ship in the open-clip-torch wheel; installing it would pull torchvision and
# another torch, so only the wheel is fetched, and export/clip_merges.py reads the file out of it.
$(CLIP_WHEEL):
	$(BIN)/pip download --quiet --disable-pip-version-check --no-deps --dest $(dir $@) open-clip-torch==3.3.0

# The real-width presets (export/real_width.py) exported in FP32, served at 256x256 and compared with
# diffusers: gigabytes of weights and minutes of export, hence apart from `test` (CI runs both). The
# exports are kept in $(REAL_CACHE) between runs, and dropped whenever the exporter or the environment
# changes.
REAL_CACHE := .imagegen/test-cache
$(REAL_CACHE)/.exporter: $(STAMP) $(wildcard export/*.py) benchmarks/gpu_reference.py
	rm -rf $(REAL_CACHE)/real-width
	mkdir -p $(REAL_CACHE)
	touch $@

# -rA --durations=0: each family's export table, its max pixel difference and where the time went, in the log.
test-real: $(STAMP) $(CLIP_WHEEL) $(REAL_CACHE)/.exporter
	IMAGEGEN_TEST_CACHE=$(REAL_CACHE) $(BIN)/pytest -m real_width -rA --durations=0 tests/e2e/test_real_width.py

# The benchmark preset (a wider transformer, `imagegen tiny --preset bench`) and the tiny default,
# each exported into the bench repository under its model id.
$(BENCH_REPO)/%_transformer/1/model.onnx: $(STAMP) $(wildcard export/*.py)
	$(BIN)/imagegen tiny --family flux-schnell --preset $(if $(filter %-bench,$*),bench,tiny) \
	  --out $(BENCH_ROOT)/checkpoints/$* --seed 0
	$(BIN)/imagegen export --checkpoint $(BENCH_ROOT)/checkpoints/$* --name $* --repository $(BENCH_REPO)

# The server against its in-process peers (benchmarks/compare.py); the last line holds the ratios.
bench: $(BENCH_MODELS)
	$(BIN)/python -m benchmarks.compare --root $(BENCH_ROOT)

# The server at a GPU's pace: SDXL and FLUX.1-schnell at their published sizes on a simulated H200
# (benchmarks/gpu_sim.py, its own folder .imagegen/gpu-sim); the last line holds the figures.
bench-gpu-sim: $(STAMP) $(CLIP_WHEEL)
	$(BIN)/python -m benchmarks.gpu_sim

clean:
	rm -rf $(VENV) .imagegen $(REPO)/*/[0-9]*/
