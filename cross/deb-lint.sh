#!/bin/sh
# cross/deb-lint.sh: lintian (--pedantic) on the release .deb (cross/deb.sh, built
# if missing). Fails on any tag but the ones explained here:
# - shared-library-lacks-prerequisites [usr/sbin/crd]: crd is a static-pie
#   executable (musl, no interpreter, no DT_NEEDED); lintian takes any ET_DYN
#   object without dependencies for a shared library.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
command -v lintian >/dev/null 2>&1 || { echo "lintian missing (Debian package lintian)" >&2; exit 2; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
deb="$top/dist/crd_${version}_amd64.deb"
"$top/cross/deb.sh" >/dev/null
out=$(lintian --pedantic --suppress-tags shared-library-lacks-prerequisites "$deb" 2>&1 |
    grep -v '^running with root privileges' || true)
if [ -n "$out" ]; then
    echo "$out"
    echo "lintian: $deb has tags not explained in cross/deb-lint.sh" >&2
    exit 1
fi
echo "lintian: $deb clean (one tag explained in cross/deb-lint.sh)"
