#!/bin/sh
# cross/test.sh [BOARD...]: runs a subset of the integration tests against each
# board's binary under its qemu-user runner (default: ath79, the big-endian one,
# mt7621 and ipq40xx), events reaching a real mosquitto included, over TLS too
# (each board's `tls` build). The tests take
# the binary from CRD_BIN and put CRD_RUNNER in front of it; the modules they run
# are the host's /bin/sh scripts.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
[ $# -gt 0 ] || set -- ath79 mt7621 ipq40xx
cd "$top"

# spool_swap WRITER READER: the daemon WRITER spools three emits; READER's and
# WRITER's `crd dump` of that spool must be identical.
spool_swap() {
    w=$1 r=$2
    tmp=$(mktemp -d)
    mkdir "$tmp/modules"
    printf 'node = swap\nmodules_dir = %s/modules\nspool_dir = %s/spool\ncontrol_socket = %s/crd.sock\n' \
        "$tmp" "$tmp" "$tmp" >"$tmp/crd.conf"
    $w -c "$tmp/crd.conf" 2>"$tmp/log" &
    pid=$!
    i=0
    until [ -S "$tmp/crd.sock" ] || [ $i -ge 200 ]; do sleep 0.1; i=$((i + 1)); done
    for m in one "two words" "é ü"; do $w -c "$tmp/crd.conf" emit swap/test "$m" >/dev/null; done
    kill -TERM $pid
    wait $pid
    $w -c "$tmp/crd.conf" dump >"$tmp/w.txt"
    $r -c "$tmp/crd.conf" dump >"$tmp/r.txt"
    [ "$(grep -c ' emit swap/test ' "$tmp/r.txt")" = 3 ] || { cat "$tmp/r.txt" "$tmp/log"; exit 1; }
    cmp "$tmp/w.txt" "$tmp/r.txt" || { diff "$tmp/w.txt" "$tmp/r.txt"; exit 1; }
    rm -rf "$tmp"
}

cargo build --quiet --locked
for board in "$@"; do
    . "board-configs/$board.conf"
    cross/build.sh "$board" >/dev/null
    echo "== $board ($TARGET, $ENDIAN-endian) under $QEMU"
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test daemon --test cli --test limits -- \
        a_check_that_fires_runs_its_response \
        check_errors_are_events_without_response \
        sigterm_exits_zero_and_leaves_no_child_behind \
        a_fatal_signal_is_named_in_the_log \
        sighup_applies_a_good_config \
        status_reports_modules_and_counters \
        a_hung_check_and_its_pipe_holding_grandchild \
        x_runs_a_support_module \
        x_refuses_bad_names \
        x_times_out_with_124 \
        check_command_runs_check_and_response_once \
        check_config_reports_every_error
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test hardening -- \
        a_chatty_check_still_starts_its_response_with_the_output_on_stdin \
        sighup_keeps_each_modules_schedule
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test spool -- \
        events_survive_a_restart_and_seq_continues \
        emit_records_messages_from_arguments_and_stdin \
        sigkill_while_emitting_loses_no_acknowledged_emit \
        an_unknown_spool_version_is_refused_with_a_clear_message
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test mqtt -- \
        events_arrive_as_json_and_status_is_online_then_offline \
        a_broker_restart_mid_stream_loses_nothing
    # Remote commands on the router build (its own JSON scanner, the table's
    # byte order, SIGKILL during a run).
    CRD_BIN="$top/dist/$board/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --test commands -- \
        a_command_runs_once_with_its_argv_and_every_refusal_says_why \
        a_run_cut_by_a_crash_is_interrupted_and_never_run_twice \
        signed_commands_run_and_unsigned_or_misdirected_ones_do_not
    # The TLS build (rustls + ring) against mosquitto with a test CA.
    cross/build.sh "$board" tls >/dev/null
    CRD_BIN="$top/dist/$board-tls/crd" CRD_RUNNER="$QEMU" \
        cargo test --quiet --locked --features tls --test mqtt -- \
        tls_with_a_test_ca_and_a_client_certificate
    # The spool format is byte-order free: a spool written by the host binary
    # reads the same on the board, and the other way round.
    host="$top/target/debug/crd"
    spool_swap "$host" "$QEMU $top/dist/$board/crd"
    spool_swap "$QEMU $top/dist/$board/crd" "$host"
    echo "spool written by one byte order and read by the other: same records"
done
