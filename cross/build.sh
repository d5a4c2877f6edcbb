#!/bin/sh
# cross/build.sh BOARD: builds the release binary for board-configs/BOARD.conf and
# copies it to dist/BOARD/crd. Boards whose std ships with rustup build with plain
# cargo; tier-3 boards (BUILD_STD=yes) are the cross-build issue's work.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
board=${1:?usage: cross/build.sh BOARD}
conf="$top/board-configs/$board.conf"
[ -f "$conf" ] || { echo "no board config $conf" >&2; exit 2; }
. "$conf"
if [ "$BUILD_STD" = yes ]; then
    echo "board $board needs std built from source; not supported by this script yet" >&2
    exit 2
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    echo "Rust target $TARGET is not installed: run 'rustup target add $TARGET'" >&2
    exit 2
fi
cd "$top"
RUSTFLAGS="${RUSTFLAGS_EXTRA:-}" cargo build --quiet --release --locked --target "$TARGET"
mkdir -p "dist/$board"
# Copy then rename: a running dist binary (a soak, a test) is never written over.
cp "target/$TARGET/release/crd" "dist/$board/.crd.new"
mv -f "dist/$board/.crd.new" "dist/$board/crd"
echo "dist/$board/crd"
