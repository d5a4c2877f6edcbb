#!/bin/sh
# Builds a runnable sandbox under sandbox/run/ (git-ignored): a copy of the example
# modules with parameters that keep every effect inside the sandbox, a demo module
# that grows a log, and a crd.conf with absolute paths. No root needed.
# CRD_SANDBOX_RUN puts it elsewhere (the tests).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
run="${CRD_SANDBOX_RUN:-$top/sandbox/run}"
rm -rf "$run"
mkdir -p "$run/modules" "$run/log" "$run/tmp" "$run/spool"
for m in LogSize DiskFull WanDown ProcessDown restart-service; do
    cp -R "$top/modules/$m" "$run/modules/$m"
done
cp -R "$top/sandbox/LogWriter" "$run/modules/LogWriter"
chmod -R go-w "$run"
cat > "$run/modules/LogSize/params" <<P
LOG_DIR=$run/log
LIMIT_KB=48
P
cat > "$run/modules/DiskFull/params" <<P
MOUNT=$run
PERCENT=0
CLEAN_DIRS=$run/tmp
P
# Loopback answers (when ping exists); where it does not, the response is a dry
# run that says what it would do.
cat > "$run/modules/WanDown/params" <<P
HOSTS=127.0.0.1
DEVICE=crd-sandbox0
IFACE=crd-sandbox0
DRY_RUN=1
P
cat > "$run/modules/ProcessDown/params" <<P
PROCESS=crd
SERVICE=crd-sandbox-none
P
echo "LOG_DIR=$run/log" > "$run/modules/LogWriter/params"
cat > "$run/crd.conf" <<C
# Sandbox config written by sandbox/setup.sh.
node = sandbox
interval = 5s
modules_dir = $run/modules
spool_dir = $run/spool
control_socket = $run/crd.sock
[module LogSize]
interval = 3s
[module DiskFull]
interval = 10s
[module WanDown]
interval = 10s
trigger_after = 1
[module ProcessDown]
interval = 10s
[module LogWriter]
interval = 1s
C
echo "$run/crd.conf"
