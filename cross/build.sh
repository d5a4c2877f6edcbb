#!/bin/sh
# cross/build.sh BOARD [tls|symbols|edge|edge-symbols]: builds the release binary for
# board-configs/BOARD.conf with the board's FEATURES (the collector on hosts only)
# and OPT_LEVEL (cargo's opt-level: "z", the smallest, unless the board says
# otherwise) and puts it at dist/BOARD/crd; with `tls`, the build with MQTT over
# TLS (cargo feature `tls`: rustls + ring, whose C and assembly zig compiles) at
# dist/BOARD-tls/crd, in its own target directory; with `symbols`, the same build
# as the plain one but not stripped (for cross/size-report.sh: the code is the
# same, the symbol table names it) at dist/BOARD-symbols/crd; with `edge`, the
# board built as a router is (no collector, opt-level "z") at dist/BOARD-edge/crd,
# in its own target directory: what the edge's benches measure on a host board;
# `edge-symbols`, that build not stripped (cross/hot-text.sh traces it).
#
# Every build (but a board's with HOT_TEXT=no) links with cross/hot-text.ld: the functions a running edge daemon
# executes (its start, the check loop, the forwarder, `crd status`) are put
# together at the start of the code, so the pages the kernel maps for them (and
# its 64 KiB fault-around) hold little cold code: x86_64 edge 1,012 -> 736 KiB
# resident at 50 modules. cross/hot-text.sh regenerates the list. Its patterns
# are v0-mangled names (Rust's prebuilt std has them) with the parts that change
# from one build configuration to the next (crate hashes, back references)
# wildcarded, so every build takes -Csymbol-mangling-version=v0.
#
# Router boards (BUILD_STD=yes) build std from source with cargo-zigbuild (zig is the
# linker), with -Zbuild-std-features=optimize_for_size and -Zlocation-detail=none:
# about a third smaller. They also panic by trapping at once
# (-Cpanic=immediate-abort: no panic hook, message, backtrace or unwinder linked
# in) and carry no unwind tables (-Cforce-unwind-tables=no): on ath79 705,104 ->
# 560,564 bytes, 338,299 -> 277,673 gzip. A panic there is a fatal signal, which
# the daemon reports in one line on stderr (host::fatal) before it dies.
# `--cfg crd_zig_libc` tells the code that Zig's libc is linked: child/sys.rs
# then exports its own small malloc family in place of Zig's weak ones, and
# mqtt/resolv.rs resolves the broker's name in place of musl's getaddrinfo.
# RUSTC_BOOTSTRAP=1 lets the stable toolchain take those -Z flags.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
board=${1:?usage: cross/build.sh BOARD [tls]}
variant=${2:-}
out=$board
extra=
if [ "$variant" = tls ]; then
    extra=tls
    out=$board-tls
    export CARGO_TARGET_DIR="$top/target/tls"
elif [ "$variant" = symbols ]; then
    out=$board-symbols
    export CARGO_TARGET_DIR="$top/target/symbols"
    export CARGO_PROFILE_RELEASE_STRIP=false
elif [ "$variant" = edge ] || [ "$variant" = edge-symbols ]; then
    out=$board-$variant
    export CARGO_TARGET_DIR="$top/target/$variant"
    [ "$variant" = edge ] || export CARGO_PROFILE_RELEASE_STRIP=false
fi
tdir=${CARGO_TARGET_DIR:-$top/target}
conf="$top/board-configs/$board.conf"
[ -f "$conf" ] || { echo "no board config $conf" >&2; exit 2; }
. "$conf"
cd "$top"
if [ "$variant" = edge ] || [ "$variant" = edge-symbols ]; then
    FEATURES=
    OPT_LEVEL=z
fi
# Cargo's opt-level for this board: "z" (size) on routers; a host board may
# trade bytes for speed (x86_64: 2, the collector's per-message work).
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${OPT_LEVEL:-z}"
# The board's name, built in as Home Assistant's device model (mqtt::wire::MODEL).
export CRD_BOARD="$board"
# v0 names everywhere (the linker script's patterns are v0). A board whose .ipk
# cannot yet afford the order's worse compression says HOT_TEXT=no (the MIPS
# boards: about 1.4 KB of .ipk, which would put them over IPK_TARGET). The
# script is linked from a copy named by its checksum: cargo does not watch a
# linker script, but a changed RUSTFLAGS relinks.
hot="-Csymbol-mangling-version=v0"
if [ "${HOT_TEXT:-yes}" = yes ]; then
    mkdir -p "$tdir"
    hotld="$tdir/hot-text-$(cksum < "$top/cross/hot-text.ld" | cut -d' ' -f1).ld"
    [ -f "$hotld" ] || cp "$top/cross/hot-text.ld" "$hotld"
    hot="$hot -C link-arg=-Wl,-T,$hotld"
fi
# The board's own features (FEATURES: `collector` on hosts only), plus tls.
list=$(printf '%s %s' "${FEATURES:-}" "$extra" | tr -s ' ' | sed 's/^ //; s/ $//; s/ /,/g')
features="--no-default-features${list:+ --features $list}"
if [ "$BUILD_STD" = yes ]; then
    command -v cargo-zigbuild >/dev/null 2>&1 || { echo "cargo-zigbuild missing: run cross/setup.sh" >&2; exit 2; }
    RUSTC_BOOTSTRAP=1 \
    RUSTFLAGS="-C link-self-contained=no -Zlocation-detail=none -Cforce-unwind-tables=no -Zunstable-options -Cpanic=immediate-abort --cfg crd_zig_libc $hot ${RUSTFLAGS_EXTRA:-}" \
        cargo zigbuild --quiet --release --locked --target "$TARGET" $features \
        -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size
else
    if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
        echo "Rust target $TARGET is not installed: run cross/setup.sh" >&2
        exit 2
    fi
    RUSTFLAGS="$hot ${RUSTFLAGS_EXTRA:-}" cargo build --quiet --release --locked --target "$TARGET" $features
fi
mkdir -p "dist/$out"
# Copy then rename: a running dist binary (a soak, a test) is never written over.
cp "$tdir/$TARGET/release/crd" "dist/$out/.crd.new"
# MIPS objects carry .pdr, procedure descriptors for debuggers that the linker
# keeps and strip=true does not remove: about 96 KB per binary, never loaded.
# The builds Zig links (BUILD_STD=yes) carry unwind tables for its libc's C
# (.eh_frame, and .eh_frame_hdr, the linker's index of it: about 8 KB on
# MIPS) that nothing reads: crd aborts on a panic and never unwinds. They sit
# in a loaded segment, so llvm-objcopy zeroes them rather than cutting the
# file: the binary keeps its size, its .ipk is about 2.9 KB smaller (ath79).
# llvm-objcopy (any architecture; cross/setup.sh installs it) drops them all.
drop=
case "$TARGET" in
mips*) drop="--remove-section=.pdr --remove-section=.comment" ;;
esac
[ "$BUILD_STD" != yes ] || drop="$drop --remove-section=.eh_frame --remove-section=.eh_frame_hdr"
if [ -n "$drop" ]; then
    if ! command -v llvm-objcopy >/dev/null 2>&1; then
        echo "llvm-objcopy missing (run cross/setup.sh): dist/$out/crd keeps .pdr (MIPS, ~96 KB) and unwind tables" >&2
    elif [ "$variant" != symbols ] && [ "$variant" != edge-symbols ]; then
        llvm-objcopy $drop "dist/$out/.crd.new"
    fi
fi
mv -f "dist/$out/.crd.new" "dist/$out/crd"
echo "dist/$out/crd"
