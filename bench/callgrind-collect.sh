#!/bin/bash
# bench/callgrind-collect.sh BIN [BIN...]: user-space instructions per message
# on the collector's journal path (crd events of 1,000 nodes, no check), counted
# by valgrind's callgrind: unlike the timed benches, the count does not move
# with what else the machine runs, so two builds compare on a busy machine.
# For each BIN: a real mosquitto on a free loopback port; the collector (not
# traced) makes its persistent session and stops; N events (default 20,000,
# `N=`) are queued; the collector runs under callgrind until it journaled all
# of them, and stops. Prints instructions per message (start and stop included,
# a few million in all); `CG_KEEP=DIR` keeps each callgrind file there for
# callgrind_annotate. Needs valgrind, mosquitto and mosquitto_pub.
set -eu
n=${N:-20000}
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$port" > "$work/mosquitto.conf"
mosquitto -c "$work/mosquitto.conf" > "$work/mosquitto.log" 2>&1 &
echo $! > "$work/mosquitto.pid"
sleep 0.5
python3 - "$n" > "$work/events" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    node = i % 1000
    print('{"node":"n%d","stream":"%016x","seq":%d,"ts":1,"module":"load","kind":"emit","code":0,"dur_ms":0,"message":"%d"}'
          % (node, node + 1, i // 1000 + 1, i % 97))
PY
for bin in "$@"; do
    w=$work/$(basename "$bin")-$RANDOM
    mkdir -p "$w/modules/M"
    chmod 755 "$w" "$w/modules" "$w/modules/M"
    echo "subscribe = cg/#" > "$w/modules/M/module.conf"
    printf 'node = cg%s\nmodules_dir = %s/modules\nspool_dir = %s/spool\ncontrol_socket = %s/crd.sock\nbroker = 127.0.0.1:%s\nmax_parallel = 8\nspool_size = 64M\nlog_level = warn\n' \
        "$RANDOM" "$w" "$w" "$w" "$port" > "$w/crd.conf"
    journaled() { "$bin" -c "$w/crd.conf" status 2>/dev/null | awk '/^collect_journaled:/ { print $2 }'; }
    subscribed() { "$bin" -c "$w/crd.conf" status 2>/dev/null | grep -q '^mqtt_subscribed: cg/#'; }
    "$bin" -c "$w/crd.conf" 2> "$w/first.log" &
    pid=$!
    for _ in $(seq 100); do subscribed && break; sleep 0.1; done
    kill -TERM $pid; wait $pid || true
    mosquitto_pub -p "$port" -q 1 -t cg/x -l < "$work/events"
    valgrind -q --tool=callgrind --callgrind-out-file="$w/cg.out" "$bin" -c "$w/crd.conf" 2> "$w/cg.log" &
    pid=$!
    for _ in $(seq 6000); do [ "$(journaled)" = "$n" ] && break; sleep 0.1; done
    got=$(journaled)
    kill -TERM $pid; wait $pid || true
    ir=$(awk '/^(summary|totals):/ { print $2; exit }' "$w/cg.out")
    echo "$bin: $got of $n journaled, $ir instructions, $((ir / n)) a message"
    if [ -n "${CG_KEEP:-}" ]; then cp "$w/cg.out" "$CG_KEEP/$(basename "$bin").cg.out"; fi
done
