# crd: make run (sandbox demo), make test (everything CI checks), make bench.
BOARDS_SIZE ?= x86_64

.PHONY: all build run status test lint unit size bench soak fuzz clean

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

size:
	cross/size.sh $(BOARDS_SIZE)

test: lint unit size

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
