#!/bin/sh
# cross/setup.sh: installs what cross builds and emulated tests need, and nothing
# that is already there (idempotent): rust-src (std is built from source for the
# router targets), the x86_64 musl target, zig + cargo-zigbuild (the linker),
# qemu-user-static (to run the router binaries here) and llvm (llvm-objcopy drops
# the MIPS binaries' .pdr section; llvm-nm and llvm-size for make size-report).
set -eu
if command -v apt-get >/dev/null 2>&1; then
    need=
    command -v qemu-mips-static >/dev/null 2>&1 || need="$need qemu-user-static"
    command -v llvm-objcopy >/dev/null 2>&1 || need="$need llvm"
    command -v pigz >/dev/null 2>&1 || need="$need pigz"
    if [ -n "$need" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need >/dev/null
    fi
fi
rustup component list --installed | grep -q '^rust-src' || rustup component add rust-src
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -c 'import ziglang' 2>/dev/null; then
    # Pinned: the size budgets (make size) hold for this linker and libc.
    python3 -m pip install -q ziglang==0.17.1 cargo-zigbuild==0.24.1
fi
echo "cross toolchain ready: $(python3 -m ziglang version 2>/dev/null | sed 's/^/zig /'), $(command -v qemu-mips-static || echo 'no qemu'), $(command -v llvm-objcopy || echo 'no llvm-objcopy')"
