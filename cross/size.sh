#!/bin/sh
# cross/size.sh [BOARD...]: builds each board (all of board-configs/ by default) and
# prints its binary size, raw and gzip -9, against SIZE_BUDGET; exits 1 if any board
# is over budget. With SIZE_VARIANT=tls it sizes the TLS builds instead
# (dist/BOARD-tls/crd), for comparison only: the budget is for the plain build.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
variant=${SIZE_VARIANT:-}
[ $# -gt 0 ] || set -- $(ls "$top/board-configs" | sed -n 's/\.conf$//p')
over=0
printf '%-8s %-32s %-6s %9s %9s %9s  %s\n' BOARD TARGET ENDIAN RAW GZIP BUDGET VERDICT
for board in "$@"; do
    . "$top/board-configs/$board.conf"
    "$top/cross/build.sh" "$board" $variant >/dev/null
    bin="$top/dist/$board${variant:+-$variant}/crd"
    raw=$(wc -c < "$bin")
    gz=$(gzip -9 -c "$bin" | wc -c)
    verdict=ok
    if [ -n "$variant" ]; then
        verdict="($variant build: not budgeted)"
    elif [ "$raw" -gt "$SIZE_BUDGET" ]; then
        verdict=OVER
        over=1
    fi
    printf '%-8s %-32s %-6s %9d %9d %9d  %s\n' "$board" "$TARGET" "$ENDIAN" "$raw" "$gz" "$SIZE_BUDGET" "$verdict"
done
exit $over
