#!/bin/sh
# make demo-fleet: a fleet on loopback for DEMO_SECONDS (default 120), printing
# what flows, then stopping everything. A mosquitto on a free port; two edge crds
# (edge1, edge2) whose module Flaky fires and clears in turn every 2 s and that
# allow the remote command Uptime; one collector (central) whose rule Storm
# counts each node's events over 30 s and reacts above 2, and which keeps the
# fleet page sandbox/fleet/fleet.html. Printed: the events and replies on the
# bus (mosquitto_sub), and a command sent a third of the way in (crd send --wait).
# Needs mosquitto, mosquitto_sub and python3 (for a free port). No root.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
crd="${CRD_BIN:-$top/target/release/crd}"
secs="${DEMO_SECONDS:-120}"
run="${CRD_DEMO_DIR:-$top/sandbox/fleet}"
for t in mosquitto mosquitto_sub python3; do
    command -v "$t" >/dev/null 2>&1 || { echo "demo-fleet: $t missing (Debian packages mosquitto, mosquitto-clients, python3)" >&2; exit 2; }
done
rm -rf "$run"
mkdir -p "$run"
pids=""
stop() {
    for p in $pids; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'stop' EXIT INT TERM
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$port" > "$run/mosquitto.conf"
mosquitto -c "$run/mosquitto.conf" 2>"$run/mosquitto.log" &
pids="$pids $!"

node() { # name extra-config
    d="$run/$1"
    mkdir -p "$d/modules"
    cat > "$d/crd.conf" <<C
node = $1
broker = 127.0.0.1:$port
modules_dir = $d/modules
spool_dir = $d/spool
control_socket = $d/crd.sock
log_level = warn
$2
C
}
for e in edge1 edge2; do
    node "$e" "interval = 2s
commands = Uptime"
    m="$run/$e/modules"
    mkdir -p "$m/Flaky" "$m/Uptime"
    printf '#!/bin/sh\n# fires and clears in turn\nif [ -e state ]; then rm state; exit 1; fi\n: > state; echo "flaky on %s"; exit 0\n' "$e" > "$m/Flaky/check"
    printf '#!/bin/sh\ncut -d" " -f1 /proc/uptime | sed "s/^/up (s): /"\n' > "$m/Uptime/Uptime"
    chmod 755 "$m/Flaky/check" "$m/Uptime/Uptime"
done
node central "fleet_html = $run/fleet.html"
m="$run/central/modules/Storm"
mkdir -p "$m"
cat > "$m/module.conf" <<C
subscribe = crd/+/event/#
register = count
by = node
period = 30s
above = 2
C
printf '#!/bin/sh\necho "storm on $CRD_REGISTER_KEY: $CRD_REGISTER_VALUE events in 30 s"\n' > "$m/response"
chmod 755 "$m/response"
chmod -R go-w "$run"

sleep 0.5
# One line a message: `event NODE MODULE KIND: OUT`, `reply NODE KIND (ID)`
# (through a fifo, so that both processes are known and stopped).
mkfifo "$run/bus"
sed -u -n \
    -e 's|^crd/\([^/]*\)/event/\([^ ]*\) .*"kind":"\([^"]*\)".*"out":"\(.*\)"}$|bus: event \1 \2 \3: \4|p' \
    -e 's|^crd/\([^/]*\)/reply/\([0-9a-f]*\) .*"reply":"\([^"]*\)".*|bus: reply \1 \3 (\2)|p' \
    < "$run/bus" &
pids="$pids $!"
mosquitto_sub -h 127.0.0.1 -p "$port" -v -t 'crd/+/event/#' -t 'crd/+/reply/+' > "$run/bus" &
pids="$pids $!"
for n in central edge1 edge2; do
    "$crd" -c "$run/$n/crd.conf" 2>>"$run/$n/crd.log" &
    pids="$pids $!"
done
echo "demo-fleet: mosquitto on 127.0.0.1:$port, edge1, edge2 and central running for ${secs} s (logs and fleet.html in $run)"
third=$((secs / 3))
sleep "$third"
echo "demo-fleet: crd send --wait 10s edge1 Uptime"
"$crd" -c "$run/central/crd.conf" send --wait 10s edge1 Uptime 2>&1 | sed 's/^/send: /' || true
sleep $((secs - third))
echo "demo-fleet: fleet"
"$crd" -c "$run/central/crd.conf" fleet 2>&1 | sed 's/^/fleet: /' || true
echo "demo-fleet: stopping"
