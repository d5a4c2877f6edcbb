#!/bin/sh
# cross/test.sh [BOARD...]: runs a subset of the integration tests against each
# board's binary under its qemu-user runner (default: ath79, the big-endian one,
# mt7621 and ipq40xx). The tests take the binary from CRD_BIN and put CRD_RUNNER in
# front of it; the modules they run are the host's /bin/sh scripts.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- ath79 mt7621 ipq40xx
cd "$top"
for board in "$@"; do
    . "board-configs/$board.conf"
    cross/build.sh "$board" >/dev/null
    echo "== $board ($TARGET, $ENDIAN-endian) under $QEMU"
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test daemon --test cli --test limits -- \
        a_check_that_fires_runs_its_response \
        check_errors_are_events_without_response \
        sigterm_exits_zero_and_leaves_no_child_behind \
        sighup_applies_a_good_config \
        status_reports_modules_and_counters \
        a_hung_check_and_its_pipe_holding_grandchild \
        x_runs_a_support_module \
        x_refuses_bad_names \
        x_times_out_with_124 \
        check_command_runs_check_and_response_once \
        check_config_reports_every_error
done
