# Thin wrapper over Meson for the README's commands. `make help` lists the targets.
BUILD ?= build

.PHONY: all help deps build demo test fuzz soak coverage bench bench-ledger bench-python evaluation install clean

all: build

help:
	@echo "make build   build zerogpud, libzerogpu and zerogpu into $(BUILD)/"
	@echo "make demo    run zerogpud on simulated GPUs with competing jobs"
	@echo "make test    build (plain and ASan+UBSan) and run every test"
	@echo "make fuzz    run each libFuzzer target FUZZ_SECONDS (default 600) (scripts/fuzz)"
	@echo "make coverage  line coverage of src/daemon and src/lib over unit + e2e (gcovr)"
	@echo "make soak    the crash soak for SOAK_SECONDS (default 600) (tests/soak/soak.py)"
	@echo "make bench   run the lease-cycle benchmark"
	@echo "make bench-ledger  grant latency with PostgreSQL beside SQLite"
	@echo "make bench-python  time @zerogpu.GPU calls, warm and cold (and spaces.GPU)"
	@echo "make evaluation  simulate and replay the workload; write docs/evaluation.md"
	@echo "make deps    install the Debian packages needed (scripts/install-deps)"
	@echo "make clean   remove build outputs"

deps:
	scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dwerror=true

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

demo: build
	BUILD=$(BUILD) scripts/demo

test:
	scripts/run-tests

FUZZ_SECONDS ?= 600
fuzz:
	scripts/fuzz -t $(FUZZ_SECONDS)

coverage:
	scripts/coverage

SOAK_SECONDS ?= 600
SOAK_CLIENTS ?= 240
soak: build
	python3 tests/soak/soak.py --build $(BUILD) --duration $(SOAK_SECONDS) --clients $(SOAK_CLIENTS)

# docs/evaluation.md and its plots: the simulator, a live replay, matplotlib.
evaluation: build
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -q --disable-pip-version-check -r bench/requirements.txt
	.venv/bin/python bench/report/report.py --build $(BUILD)

bench: build
	$(BUILD)/bench/lease_cycle

# The grant latency with the PostgreSQL ledger beside SQLite (a PostgreSQL made for it).
bench-ledger: build
	python3 bench/ledger.py --build $(BUILD)

# The Python package's call overhead; needs the test venv's packages (spaces).
bench-python: build
	test -x .venv/bin/python || python3 -m venv .venv
	.venv/bin/python -m pip install -q --disable-pip-version-check -r tests/requirements.txt .
	.venv/bin/python bench/python_call.py --build $(BUILD) --spaces

install: build
	meson install -C $(BUILD)

clean:
	rm -rf build build-asan build-fuzz build-coverage build-logs .venv .venv-python
