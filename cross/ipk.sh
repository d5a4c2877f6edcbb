#!/bin/sh
# cross/ipk.sh BOARD: packs dist/BOARD/crd into dist/BOARD/crd_VERSION-1_ARCH.ipk for
# opkg, without the OpenWrt SDK. Layout as OpenWrt's ipkg-build writes it: a gzip'd
# tar of debian-binary, control.tar.gz and data.tar.gz. Contents: /usr/sbin/crd, the
# procd init script, /etc/config/crd (a conffile, with this board's spool path, size and sync policy) and
# the restart-service support module. Reproducible: fixed owner, order and mtime.
# Each gzip layer is written by `pigz -11 -n` (zopfli's deflate: plain gzip that
# opkg's and busybox's gunzip read, about 4 % smaller than `gzip -9` on crd's
# binary; `make cross-setup` installs pigz).
set -eu
command -v pigz >/dev/null 2>&1 || { echo "pigz missing (Debian package pigz; cross/setup.sh installs it)" >&2; exit 2; }
top=$(cd "$(dirname "$0")/.." && pwd)
board=${1:?usage: cross/ipk.sh BOARD}
. "$top/board-configs/$board.conf"
# CRD_IPK_BIN and CRD_IPK_OUT (a directory) let tests pack another binary elsewhere.
bin="${CRD_IPK_BIN:-$top/dist/$board/crd}"
[ -x "$bin" ] || "$top/cross/build.sh" "$board" >/dev/null
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$top/Cargo.toml" | head -n 1)
files="$top/cross/openwrt/crd/files"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
d="$work/data"
install -d "$d/usr/sbin" "$d/etc/init.d" "$d/etc/config" "$d/opt/CRD/modules/restart-service"
install -m 755 "$bin" "$d/usr/sbin/crd"
install -m 755 "$files/crd.init" "$d/etc/init.d/crd"
sed -e "s|@SPOOL_DIR@|$SPOOL_DIR|" -e "s|@SPOOL_SIZE@|$SPOOL_SIZE|" \
    -e "s|@SPOOL_SYNC_BYTES@|$SPOOL_SYNC_BYTES|" -e "s|@SPOOL_SYNC_INTERVAL@|$SPOOL_SYNC_INTERVAL|" \
    "$files/crd.config" > "$d/etc/config/crd"
chmod 644 "$d/etc/config/crd"
install -m 755 "$top/modules/restart-service/restart-service" "$d/opt/CRD/modules/restart-service/"
install -m 644 "$top/modules/restart-service/module.conf" "$d/opt/CRD/modules/restart-service/"

c="$work/control"
mkdir -p "$c"
size=$(du -sk "$d" | cut -f1)
cat > "$c/control" <<CTL
Package: crd
Version: $version-1
Depends: libc
License: MIT
Section: utils
Architecture: $PKG_ARCH
Installed-Size: $((size * 1024))
Description: Condition/Response Daemon: scheduled checks, responses and events
 for routers and IoT gateways ($board: $BOARD_DESC).
CTL
echo /etc/config/crd > "$c/conffiles"
cat > "$c/postinst" <<'SH'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] || { /etc/init.d/crd enable; /etc/init.d/crd start; }
exit 0
SH
cat > "$c/prerm" <<'SH'
#!/bin/sh
[ -n "$IPKG_INSTROOT" ] || { /etc/init.d/crd stop; /etc/init.d/crd disable; }
exit 0
SH
chmod 755 "$c/postinst" "$c/prerm"

tarx() { # dir out
    tar --format=gnu --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 \
        -C "$1" -cf - . | pigz -11 -n > "$2"
}
tarx "$d" "$work/data.tar.gz"
tarx "$c" "$work/control.tar.gz"
echo 2.0 > "$work/debian-binary"
out="${CRD_IPK_OUT:-$top/dist/$board}/crd_${version}-1_${PKG_ARCH}.ipk"
tar --format=gnu --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$work" \
    -cf - ./debian-binary ./control.tar.gz ./data.tar.gz | pigz -11 -n > "$out"
echo "$out"
