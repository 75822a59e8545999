# kubemam — two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test unit integration faults lint crds binaries up down env bench bench-smoke clean images test-containers krew

# Two distributions: kubemam (the product) and kubemam-local (operator/local: the development cluster,
# `kubemam local` and `kubemam demo`), both editable.
$(STAMP): pyproject.toml operator/local/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "kubemam needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e operator/local
	@touch $@

# The control-plane binaries: KUBEBUILDER_ASSETS, else the per-version cache, else built with Go.
binaries: $(STAMP)
	$(BIN)/kubemam local build

lint: $(STAMP)
	$(BIN)/kubemam crds --check
	$(BIN)/ruff check operator tests bench
	$(BIN)/mypy
	PYTHONPATH=operator:operator/local $(BIN)/lint-imports

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

integration: binaries
	$(BIN)/python -m pytest tests/integration -q

test: lint binaries
	$(BIN)/python -m pytest tests -q

# The fault suite alone (it is part of `make test` too): API server, S3, pods, targets and holds.
faults: binaries
	$(BIN)/python -m pytest tests/faults -q

demo: binaries
	$(BIN)/kubemam demo

# Speed goals are checked here, as ratios against baselines measured in the same run (not in tests).
bench: binaries
	$(BIN)/python bench/transcode.py
	$(BIN)/python bench/takedown.py
	$(BIN)/python bench/takedown.py --published 5000 --assets 1000 --titles-per-window 100 --open-seconds 900
	$(BIN)/python bench/tier_move.py
	$(BIN)/python bench/large.py
	$(BIN)/python bench/long_master.py
	$(BIN)/python bench/packager.py --verify --play
	$(BIN)/python bench/scale.py --assets 1000
	$(BIN)/python bench/scale.py --assets 3000

# Benchmarks at a tiny size (.ci/run): they still run and print their figures; their speed is not judged.
bench-smoke: binaries
	$(BIN)/python bench/transcode.py --seconds 8 --repeat 1
	$(BIN)/python bench/takedown.py --assets 3 --published 6 --titles-per-window 2 --open-seconds 15
	$(BIN)/python bench/tier_move.py --size-mib 16 --runs 1
	$(BIN)/python bench/large.py --skip-commit
	$(BIN)/python bench/scale.py --smoke
	$(BIN)/python bench/packager.py --minutes 1 --packagers ours --schemes clear cenc --verify
	$(BIN)/python bench/long_master.py --smoke --only package

# The operator and worker images, tagged as the chart's defaults (ghcr.io/kubemam/{operator,worker}:<version>),
# with no registry: installs docker.io when missing, starts dockerd when none answers, makes a local Debian
# bookworm base with mmdebstrap (cached in ~/.cache/kubemam/images). See docs/containers.md.
images: $(STAMP)
	nice -n 19 $(BIN)/kubemam local images

# The images in containers: the worker image under docker with the pods' securityContext, then the chart on a
# real kubelet node (containerd, runc, CNI) with every step in the worker image. Root; long (docs/containers.md).
test-containers: images binaries
	KUBEMAM_CONTAINER_TESTS=1 $(BIN)/python -m pytest tests/containers -q -p no:cacheprovider -rs

crds: $(STAMP)
	$(BIN)/kubemam crds

# The chart's generated text: README.md's values table (values.schema.json, values.yaml) and Chart.yaml's
# Artifact Hub CRD annotations (files/crds, examples/). tests/unit/test_chart_readme.py fails when stale.
chart-readme: $(STAMP)
	$(BIN)/python -m tests.chart_readme

# The kubectl plugin's release archive and its krew manifest (sha256 of the archive, the release URL) in dist/krew/.
krew: $(STAMP)
	$(BIN)/python -m tests.krew --out dist/krew

up: binaries
	$(BIN)/kubemam local up

down: $(STAMP)
	$(BIN)/kubemam local down

env: $(STAMP)
	@$(BIN)/kubemam local env

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
