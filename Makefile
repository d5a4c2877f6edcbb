# crd: make run (sandbox demo), make test (everything CI checks), make bench.
# Boards are board-configs/NAME.conf; BOARD picks one for `make cross`.
BOARD ?= x86_64
BOARDS := $(patsubst board-configs/%.conf,%,$(wildcard board-configs/*.conf))
# Boards whose binaries run the integration-test subset under qemu in `make test`.
QEMU_BOARDS ?= ath79 mt7621 ipq40xx

.PHONY: all build run status test lint unit size bench soak fuzz clean \
	cross-setup cross cross-all test-cross

all: build

build:
	cargo build --release --locked

# Builds crd and runs it in the foreground on the bundled example modules, inside
# sandbox/run/ (no root needed). Stop it with Ctrl-C; `make status` from another
# terminal shows its state.
run: build
	@conf=$$(sandbox/setup.sh) && echo "config: $$conf" && exec target/release/crd -c "$$conf"

status:
	target/release/crd -c sandbox/run/crd.conf status

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings

unit:
	cargo test --locked

# Installs the cross toolchain and qemu if missing (idempotent).
cross-setup:
	cross/setup.sh

# dist/$(BOARD)/crd
cross:
	cross/build.sh $(BOARD)

cross-all:
	for b in $(BOARDS); do cross/build.sh $$b || exit 1; done

# Every board's size (raw, gzip) against its budget; fails over budget.
size:
	cross/size.sh $(BOARDS)

# The integration-test subset against router binaries under qemu-user.
test-cross:
	cross/test.sh $(QEMU_BOARDS)

test: lint unit size test-cross

bench:
	python3 bench/bench.py

# crd at 50 modules x 1 s for SOAK_SECONDS (default an hour), VmRSS every 5 minutes.
soak:
	python3 bench/bench.py soak

# Coverage-guided fuzzing of the config parser (needs cargo-fuzz; uses the stable
# toolchain in nightly mode). FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512

clean:
	cargo clean
	rm -rf dist sandbox/run
