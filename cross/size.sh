#!/bin/sh
# cross/size.sh BOARD...: prints each board's binary size (raw and gzip -9) against
# its SIZE_BUDGET and exits 1 if any is over. Builds what is missing.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
over=0
printf '%-10s %-34s %10s %10s %10s  %s\n' BOARD TARGET RAW GZIP BUDGET VERDICT
for board in "$@"; do
    . "$top/board-configs/$board.conf"
    "$top/cross/build.sh" "$board" >/dev/null
    bin="$top/dist/$board/crd"
    raw=$(wc -c < "$bin")
    gz=$(gzip -9 -c "$bin" | wc -c)
    verdict=ok
    if [ "$raw" -gt "$SIZE_BUDGET" ]; then verdict=OVER; over=1; fi
    printf '%-10s %-34s %10d %10d %10d  %s\n' "$board" "$TARGET" "$raw" "$gz" "$SIZE_BUDGET" "$verdict"
done
exit $over
