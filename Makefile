# Thin wrapper over Meson for the README's commands. `make help` lists the targets.
BUILD ?= build

.PHONY: all help deps build demo test bench install clean

all: build

help:
	@echo "make build   build zerogpud, libzerogpu and zerogpu into $(BUILD)/"
	@echo "make demo    run zerogpud on simulated GPUs with competing jobs"
	@echo "make test    build (plain and ASan+UBSan) and run every test"
	@echo "make bench   run the lease-cycle benchmark"
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

bench: build
	$(BUILD)/bench/lease_cycle

install: build
	meson install -C $(BUILD)

clean:
	rm -rf build build-asan build-logs .venv
