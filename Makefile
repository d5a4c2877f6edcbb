# crd: make run (sandbox demo), make test (everything CI checks), make bench,
# make test-cluster (crd on a real broker cluster; not part of make test).
# Boards are board-configs/NAME.conf; BOARD picks one for `make cross`.
BOARD ?= x86_64
BOARDS := $(patsubst board-configs/%.conf,%,$(wildcard board-configs/*.conf))
# Boards whose binaries run the integration-test subset under qemu in `make test`.
QEMU_BOARDS ?= ath79 mt7621 ipq40xx

.PHONY: all build run status demo-fleet test lint unit size size-tls size-report deb deb-lint bench bench-spool bench-mqtt bench-collect bench-collect-base bench-commands soak fuzz clean \
	test-cluster \
	cross-setup cross cross-all test-cross install install-systemd install-sysv ipk

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

# A fleet on loopback for two minutes (DEMO_SECONDS): mosquitto, two edge crds and
# a collector, printing the events, the collector's rule firing and a command's
# reply, then stopping everything (sandbox/demo-fleet.sh).
demo-fleet: build
	sandbox/demo-fleet.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	cargo clippy --locked --all-targets --features tls -- -D warnings
	cargo clippy --locked --all-targets --no-default-features -- -D warnings

# All tests of the plain build, then those that differ with the `tls` feature
# (config keys, transport, TLS against mosquitto with a test CA), then the unit
# tests of a router's build (no collector: `subscribe` is refused).
unit:
	cargo test --locked
	cargo test --locked --features tls --lib --test mqtt -- tls
	cargo test --locked --no-default-features --lib

# Installs the cross toolchain and qemu if missing (idempotent).
cross-setup:
	cross/setup.sh

# dist/$(BOARD)/crd
cross:
	cross/build.sh $(BOARD)

cross-all:
	for b in $(BOARDS); do cross/build.sh $$b || exit 1; done

# Every board's size (raw, gzip) against SIZE_BUDGET, and each router board's .ipk
# against IPK_BUDGET and IPK_TARGET (enforced: every router board met it); fails over a budget.
size:
	cross/size.sh $(BOARDS)

# The same table for the TLS builds (rustls + ring), not held to the budget.
size-tls:
	SIZE_VARIANT=tls cross/size.sh $(BOARDS)

# Where one board's bytes go (REPORT_BOARD, default ath79): sections, bytes per
# crate, generic code instantiated more than once, the TOP largest symbols.
REPORT_BOARD ?= ath79
TOP ?= 30
size-report:
	cross/size-report.sh $(REPORT_BOARD) $(TOP)

# The integration-test subset against router binaries under qemu-user.
test-cross:
	cross/test.sh $(QEMU_BOARDS)

test: lint unit size deb-lint test-cross

# crd on a 3-node rmqtt raft cluster on loopback (tests/cluster.rs): steady state, a
# collector SIGKILLed, a broker node SIGKILLed (back, then for good). Not part of
# `make test`: the first run builds rmqttd from crates.io into target/cluster/ (tens
# of minutes at nice 19 with one job; CARGO_BUILD_JOBS raises it; it installs
# cmake and protobuf-compiler with apt-get if missing), later runs reuse it.
# It runs the release build of crd (the one that ships; CLUSTER_CRD picks another).
# CLUSTER_EVENTS: events per edge and situation (500).
CLUSTER_CRD ?= $(CURDIR)/target/release/crd
test-cluster:
	tests/cluster/build-rmqttd.sh
	cargo build --release --locked
	CRD_BIN=$(CLUSTER_CRD) cargo test --locked --test cluster -- --ignored --nocapture --test-threads=1

# Every bench, then bench/report.md: one SVG bar chart per side-by-side comparison
# of this run (bench/report.py, from what the benches append to BENCH_RESULTS).
BENCH_RESULTS ?= $(CURDIR)/target/bench-results.tsv
bench:
	@mkdir -p target && rm -f $(BENCH_RESULTS)
	@st=0; export BENCH_RESULTS=$(BENCH_RESULTS); \
	for t in bench-spool bench-mqtt bench-collect bench-commands; do $(MAKE) --no-print-directory $$t || st=1; done; \
	python3 bench/bench.py || st=1; \
	python3 bench/report.py $(BENCH_RESULTS) bench/report.md || st=1; \
	exit $$st

# The spool's budgets: append throughput, fsyncs per 1000 events, recovery time,
# daemon RSS with an empty and a full 64 MiB spool. This bench, bench-mqtt and
# bench/bench.py measure the edge, so they run x86_64 built as a router is
# (cross/build.sh x86_64 edge: no collector, opt-level z); bench-collect and
# bench-commands run the host build (dist/x86_64/crd).
bench-spool:
	cross/build.sh x86_64 edge >/dev/null
	CRD_BIN=$(CURDIR)/dist/x86_64-edge/crd cargo bench --locked --bench spool

# Forwarding: drain rate against mosquitto_pub -q 1 -l, idle wake-ups with the
# broker connected, RSS draining a 64 MiB backlog (needs mosquitto, ~2 minutes).
bench-mqtt:
	cross/build.sh x86_64 edge >/dev/null
	CRD_BIN=$(CURDIR)/dist/x86_64-edge/crd cargo bench --locked --bench mqtt

# The collector: /bin/true per message against mosquitto_sub | xargs -P 8, no-check
# journal rate against mosquitto_sub > /dev/null, RSS with 10,000 nodes over
# RSS_SECONDS (default 600), and collector groups: two members against one, a
# member's journal rate and RSS (needs mosquitto, ~14 minutes).
bench-collect:
	cross/build.sh x86_64 >/dev/null
	CRD_BIN=$(CURDIR)/dist/x86_64/crd cargo bench --locked --bench collect

# This tree's collector against another build (BASE_BIN, e.g. an older commit's
# dist/x86_64/crd), whole bench-collect runs alternating (bench/compare-collect.sh).
bench-collect-base:
	bench/compare-collect.sh $(BASE_BIN)

# Remote commands: send -> done round trip against mosquitto_pub + mosquitto_sub by
# hand, 1,000 commands to 100 edge crds through one relay, the edge's RSS with
# commands on (needs mosquitto, ~2 minutes).
bench-commands:
	cross/build.sh x86_64 >/dev/null
	CRD_BIN=$(CURDIR)/dist/x86_64/crd cargo bench --locked --bench commands

# crd at 50 modules x 1 s for SOAK_SECONDS (default an hour), VmRSS every 5 minutes.
soak:
	python3 bench/bench.py soak

# Coverage-guided fuzzing of the config parser, spool recovery, the tar reader of
# `crd --install`, the MQTT session's input from the broker, the spool event
# payload decoder and the control socket's request parser (needs cargo-fuzz; uses
# the stable toolchain in nightly mode; fuzz/seeds/ holds checked-in seed inputs).
# FUZZ_SECONDS bounds each.
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run config -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run spool -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=256 -malloc_limit_mb=128
	mkdir -p fuzz/corpus/tar
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run tar corpus/tar seeds/tar -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -malloc_limit_mb=128
	mkdir -p fuzz/corpus/mqtt_input fuzz/corpus/event_decode fuzz/corpus/control_request
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run mqtt_input corpus/mqtt_input seeds/mqtt_input -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=256 -malloc_limit_mb=128
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run event_decode corpus/event_decode seeds/event_decode -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=256 -malloc_limit_mb=128
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run control_request corpus/control_request seeds/control_request -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=256 -malloc_limit_mb=128

# Installs crd into DESTDIR with PREFIX (default /usr/local): the binary, a default
# /etc/CRD/crd.conf (kept if present), the support module restart-service, and the
# example and support modules under PREFIX/share/crd/modules (a module repository
# for `crd --install`: `repository = PREFIX/share/crd/modules`). BIN picks the binary (default:
# this machine's release build; e.g. BIN=dist/ath79/crd for a board's).
PREFIX ?= /usr/local
DESTDIR ?=
BIN ?= target/release/crd
SBINDIR = $(PREFIX)/sbin

$(BIN):
	cargo build --release --locked

install: $(BIN)
	install -d $(DESTDIR)$(SBINDIR) $(DESTDIR)/etc/CRD $(DESTDIR)/opt/CRD/modules/restart-service \
		$(DESTDIR)$(PREFIX)/share/crd/modules $(DESTDIR)$(PREFIX)/share/doc/crd
	install -m 755 $(BIN) $(DESTDIR)$(SBINDIR)/crd
	[ -e $(DESTDIR)/etc/CRD/crd.conf ] || install -m 644 cross/crd.conf.example $(DESTDIR)/etc/CRD/crd.conf
	install -m 755 modules/restart-service/restart-service $(DESTDIR)/opt/CRD/modules/restart-service/
	install -m 644 modules/restart-service/module.conf $(DESTDIR)/opt/CRD/modules/restart-service/
	cp -R modules/LogSize modules/DiskFull modules/WanDown modules/ProcessDown \
		modules/restart-service modules/mqtt-notify modules/log-trim modules/README.md \
		$(DESTDIR)$(PREFIX)/share/crd/modules/
	install -d $(DESTDIR)$(PREFIX)/share/doc/crd/docs
	install -m 644 README.md ARCHITECTURE.md $(DESTDIR)$(PREFIX)/share/doc/crd/
	install -m 644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/crd/docs/

install-systemd: install
	install -d $(DESTDIR)/lib/systemd/system
	sed 's|@SBINDIR@|$(SBINDIR)|' cross/systemd/crd.service > $(DESTDIR)/lib/systemd/system/crd.service

install-sysv: install
	install -d $(DESTDIR)/etc/init.d
	sed 's|^DAEMON=.*|DAEMON=$(SBINDIR)/crd|' cross/sysvinit/crd > $(DESTDIR)/etc/init.d/crd
	chmod 755 $(DESTDIR)/etc/init.d/crd

# Prebuilt .ipk for each OpenWrt board (all boards but x86_64 and rpi by default).
IPK_BOARDS ?= ath79 mt7621 mt76x8 ipq40xx filogic
ipk:
	for b in $(IPK_BOARDS); do cross/ipk.sh $$b || exit 1; done

# The collector host's package: dist/crd_VERSION_amd64.deb (cross/deb.sh), and
# lintian on it (cross/deb-lint.sh: clean but for the tags it explains).
deb:
	cross/deb.sh

deb-lint:
	cross/deb-lint.sh

clean:
	cargo clean
	rm -rf dist sandbox/run
