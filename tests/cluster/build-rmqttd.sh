#!/usr/bin/env bash
# Builds the clustered MQTT broker that `make test-cluster` runs: rmqttd (RMQTT) from
# crates.io, every plugin it ships included (cluster-raft among them; the crate has
# no features to leave any out), into target/cluster/bin/rmqttd. A second run finds
# the binary and does nothing. The build is long (tens of minutes on two cores), so
# it runs at the lowest CPU priority and with one job unless CARGO_BUILD_JOBS says
# otherwise, leaving a core to whatever else runs.
#
# Its build needs cmake (aws-lc-sys, rdkafka-sys) and protoc (the gRPC code of the
# cluster); both come from Debian's packages, installed here when missing the way
# .ci/run installs the test tools.
set -euo pipefail
cd "$(dirname "$0")/../.."

RMQTTD_VERSION=${RMQTTD_VERSION:-0.24.0}
root=target/cluster
bin=$root/bin/rmqttd

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$RMQTTD_VERSION"; then
    echo "rmqttd $RMQTTD_VERSION: $bin (cached)"
    exit 0
fi

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
[ -e /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
    echo "rmqttd build needs: ${missing[*]} (Debian packages); installing with apt-get"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "no apt-get here: install ${missing[*]} (or their equivalents), then run this again" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "building rmqttd $RMQTTD_VERSION into $root (nice 19, CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}; long: tens of minutes)"
start=$(date +%s)
CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1} CARGO_TARGET_DIR=$root/build \
    nice -n 19 cargo install --locked --root "$root" --version "=$RMQTTD_VERSION" rmqttd
echo "rmqttd built in $(( $(date +%s) - start )) s: $bin"
