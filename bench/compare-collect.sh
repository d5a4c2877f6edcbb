#!/bin/sh
# bench/compare-collect.sh BASE_BIN [RUNS]: this tree's collector against another
# build of crd (BASE_BIN, e.g. an older commit's `cross/build.sh x86_64` output),
# on make bench-collect's throughput, journal and rules parts. Whole bench runs
# alternate, this tree's binary then BASE_BIN, RUNS times each (default 2), so
# both see the same machine; each run's row is its ratio to the run's own anchor
# (`xargs -P 8` running /bin/true, `mosquitto_sub -q 1`), which takes out what
# the machine's load does to both. Prints every run's ratios and, per part, the
# median ratio of each binary and new / base (>= 1.00: no worse). The rules
# part's RSS phase runs RSS_SECONDS (default 5 here) only.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
base=${1:?usage: bench/compare-collect.sh BASE_BIN [RUNS]}
runs=${2:-2}
base=$(cd "$(dirname "$base")" && pwd)/$(basename "$base")
[ -x "$base" ] || { echo "not an executable: $base" >&2; exit 2; }
cd "$top"
cross/build.sh x86_64 >/dev/null
new=$top/dist/x86_64/crd
out=$(mktemp)
trap 'rm -f "$out"' EXIT
i=0
while [ "$i" -lt "$runs" ]; do
    for which in new base; do
        if [ "$which" = new ]; then bin=$new; else bin=$base; fi
        # The four ratio rows, in their order: throughput (/bin/true), journal
        # of 5-byte payloads and of crd events (no check), rules; a row is
        # `WHAT VALUE >= BUDGET`, so the value is the third field from the end.
        CRD_BIN=$bin RSS_SECONDS=${RSS_SECONDS:-5} cargo bench --locked --bench collect -- throughput journal rules 2>/dev/null |
            awk -v w="$which" '/ratio crd \// { n++; print w, n, $(NF - 2) }' >> "$out"
    done
    i=$((i + 1))
done
echo "run ratios (binary, part, crd / anchor):"
cat "$out"
echo
printf '%-34s %10s %10s %12s\n' "part" "this tree" "base" "this / base"
for part in 1 2 3 4; do
    case $part in
        1) name="/bin/true check per message" ;;
        2) name="journal, 5-byte payloads" ;;
        3) name="journal, crd events" ;;
        4) name="rule (avg by node)" ;;
    esac
    med() { awk -v w="$1" -v p="$part" '$1 == w && $2 == p { print $3 }' "$out" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    a=$(med new)
    b=$(med base)
    printf '%-34s %10s %10s %12s\n' "$name" "$a" "$b" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
done
