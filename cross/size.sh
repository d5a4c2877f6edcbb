#!/bin/sh
# cross/size.sh [BOARD...]: builds each board (all of board-configs/ by default) and
# prints its binary size, raw and gzip -9, against SIZE_BUDGET, and for a router
# board (one with IPK_BUDGET) the .ipk that cross/ipk.sh packs from it, against
# IPK_TARGET; exits 1 if any board is over a budget. SIZE_BUDGET sits just above
# today's size, so CI fails when a change grows a board; IPK_BUDGET is OpenWrt's
# monit-nossl package (253,000 bytes), the line no board may ever cross;
# IPK_TARGET (230,000), the edge diet's goal below it, is enforced since every
# router board met it: a board over it is OVER, with the bytes to cut. With SIZE_VARIANT=tls it sizes the TLS
# builds instead (dist/BOARD-tls/crd), for comparison only: the budgets are for
# the plain build.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
variant=${SIZE_VARIANT:-}
[ $# -gt 0 ] || set -- $(ls "$top/board-configs" | sed -n 's/\.conf$//p')
over=0
ipkdir=$(mktemp -d)
trap 'rm -rf "$ipkdir"' EXIT
printf '%-8s %-37s %-6s %8s %8s %8s %8s %8s  %-7s %s\n' \
    BOARD TARGET ENDIAN RAW GZIP BUDGET IPK IPK_BUDG VERDICT "IPK TARGET"
for board in "$@"; do
    IPK_BUDGET= IPK_TARGET=
    . "$top/board-configs/$board.conf"
    "$top/cross/build.sh" "$board" $variant >/dev/null
    bin="$top/dist/$board${variant:+-$variant}/crd"
    raw=$(wc -c < "$bin")
    gz=$(gzip -9 -c "$bin" | wc -c)
    ipk=- target=-
    verdict=ok
    if [ -n "$variant" ]; then
        verdict="($variant build: not budgeted)"
    else
        [ "$raw" -le "$SIZE_BUDGET" ] || { verdict=OVER; over=1; }
        if [ -n "$IPK_BUDGET" ]; then
            CRD_IPK_BIN="$bin" CRD_IPK_OUT="$ipkdir" "$top/cross/ipk.sh" "$board" >/dev/null
            ipk=$(cat "$ipkdir"/crd_*_"$PKG_ARCH".ipk | wc -c)
            rm -f "$ipkdir"/*.ipk
            [ "$ipk" -le "$IPK_BUDGET" ] || { verdict=OVER; over=1; }
            if [ "$ipk" -le "${IPK_TARGET:-$IPK_BUDGET}" ]; then
                target="${IPK_TARGET:-$IPK_BUDGET}: met"
            else
                target="$IPK_TARGET: $((ipk - IPK_TARGET)) bytes to cut"
                verdict=OVER
                over=1
            fi
        fi
    fi
    printf '%-8s %-37s %-6s %8d %8d %8d %8s %8s  %-7s %s\n' "$board" "$TARGET" "$ENDIAN" \
        "$raw" "$gz" "$SIZE_BUDGET" "$ipk" "${IPK_BUDGET:--}" "$verdict" "$target"
done
exit $over
