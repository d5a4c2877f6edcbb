#!/bin/sh
# cross/deb.sh: packs the x86_64 musl build (dist/x86_64/crd, built if missing)
# into dist/crd_VERSION_amd64.deb with dpkg-deb, for the collector host: the
# binary, the hardened systemd unit (cross/deb/crd.service), /etc/CRD/crd.conf as
# a conffile, the manual page crd(8), the README, docs/ and the copyright. No maintainer
# scripts: the service is not started by the install (a collector needs its
# broker configured first): `systemctl enable --now crd`. Reproducible: fixed
# owner, order and mtime (the last commit's). CRD_DEB_BIN and CRD_DEB_OUT (a
# directory) let tests pack another binary elsewhere, CRD_DEB_COMPRESS (default
# xz) faster.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
bin="${CRD_DEB_BIN:-$top/dist/x86_64/crd}"
[ -x "$bin" ] || "$top/cross/build.sh" x86_64 >/dev/null
out="${CRD_DEB_OUT:-$top/dist}"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
src="$top/cross/deb"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
d="$work/root"
install -d -m 755 "$d/DEBIAN" "$d/usr/sbin" "$d/lib/systemd/system" "$d/etc/CRD" \
    "$d/usr/share/man/man8" "$d/usr/share/doc/crd"
install -m 755 "$bin" "$d/usr/sbin/crd"
install -m 644 "$src/crd.service" "$d/lib/systemd/system/crd.service"
install -m 644 "$src/crd.conf" "$d/etc/CRD/crd.conf"
gzip -9n < "$src/crd.8" > "$d/usr/share/man/man8/crd.8.gz"
install -m 644 "$src/copyright" "$d/usr/share/doc/crd/copyright"
gzip -9n < "$top/README.md" > "$d/usr/share/doc/crd/README.md.gz"
install -d -m 755 "$d/usr/share/doc/crd/docs"
for f in "$top"/docs/*.md; do gzip -9n < "$f" > "$d/usr/share/doc/crd/docs/$(basename "$f").gz"; done
# Dated by the last commit (a fixed date outside git): the changelog and every
# file's mtime.
epoch=$(git -C "$top" log -1 --format=%ct 2>/dev/null || echo 1796342400)
date=$(date -u -R -d "@$epoch")
printf 'crd (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- crd maintainers <maintainers@example.org>  %s\n' \
    "$version" "$version" "$date" | gzip -9n > "$d/usr/share/doc/crd/changelog.gz"
chmod 644 "$d/usr/share/man/man8/crd.8.gz" "$d/usr/share/doc/crd/"*.gz "$d/usr/share/doc/crd/copyright" \
    "$d/usr/share/doc/crd/docs/"*
size=$(du -sk --exclude=DEBIAN "$d" | cut -f1)
cat > "$d/DEBIAN/control" <<CTL
Package: crd
Version: $version
Architecture: amd64
Maintainer: crd maintainers <maintainers@example.org>
Installed-Size: $size
Section: admin
Priority: optional
Description: Condition/Response Daemon: checks, responses, events over MQTT
 crd runs modules' checks on a schedule and their responses when a condition
 holds, and forwards every outcome to an MQTT broker from an on-disk spool,
 never losing an event. On a central host it is the collector: modules run on
 the fleet's messages, rules decide over registers, remote commands go to
 named nodes. One static binary; this package runs it as a hardened,
 unprivileged systemd service.
CTL
echo /etc/CRD/crd.conf > "$d/DEBIAN/conffiles"
(cd "$d" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    xargs md5sum) > "$d/DEBIAN/md5sums"
chmod 644 "$d/DEBIAN/"*
find "$d" -exec touch -h -d "@$epoch" {} +
mkdir -p "$out"
deb="$out/crd_${version}_amd64.deb"
SOURCE_DATE_EPOCH=$epoch dpkg-deb --root-owner-group "-Z${CRD_DEB_COMPRESS:-xz}" --build "$d" "$deb" >/dev/null
echo "$deb"
