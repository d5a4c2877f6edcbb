//! End-to-end loss detection against a real mosquitto on loopback: a
//! collector whose module covers every topic of the edges (`crd/#`) reports
//! what never arrived of an edge's stream, and nothing the edge explained
//! itself. `keepalive = 1s` on the collector makes the grace 2 s.

#![cfg(feature = "collector")]

mod common;
use common::*;
use std::fs;
use std::path::Path;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);
/// More than the collector's grace (2 x its 1 s keepalive).
const PAST_GRACE: Duration = Duration::from_secs(3);

/// A collector `central` on `b` with a rule module on `crd/#` (every topic of
/// every node; a count that never crosses: no fork), started and subscribed;
/// its own events are read by a subscriber into `events`.
fn collector(sb: &Sandbox, b: &Broker) -> (Daemon, Subscriber) {
    sb.write(
        "modules/All/module.conf",
        "subscribe = crd/#\nregister = count\nperiod = 1m\nabove = 1000000000\n",
    );
    sb.config_node("central", &format!("broker = {}\nkeepalive = 1s", b.addr()));
    let events = Subscriber::start(
        b.port,
        "crd/central/event/collector",
        "gaps-watch",
        &sb.path("events"),
    );
    let c = sb.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    (c, events)
}

/// Crd events of node `node` (stream `00000000000000ab`) with these seqs,
/// published in this order by one `mosquitto_pub -l` (one connection, QoS 1).
fn publish_seqs(port: u16, node: &str, seqs: &[u64], dir: &Path) {
    let file = dir.join(format!("seqs-{node}-{}", seqs[0]));
    let lines: String = seqs
        .iter()
        .map(|q| {
            format!(
                "{{\"node\":\"{node}\",\"stream\":\"00000000000000ab\",\"seq\":{q},\"ts\":1,\
                 \"module\":\"M\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":0,\"out\":\"\"}}\n"
            )
        })
        .collect();
    fs::write(&file, lines).unwrap();
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", &format!("crd/{node}/event/M"), "-l"])
        .stdin(fs::File::open(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
}

/// A publisher that skips seqs 4..=6: reported once past the grace, as a
/// count, an `error` event of the collector naming node, stream and range,
/// a log line and a line of `crd fleet`.
#[test]
fn a_publisher_that_skips_seqs_is_reported_with_the_range_it_skipped() {
    let sb = Sandbox::new("gaps-skip");
    let b = sb.queueing_broker();
    let (c, events) = collector(&sb, &b);
    publish_seqs(b.port, "skipper", &[1, 2, 3, 7, 8], &sb.dir);
    assert!(
        wait_for(LONG, || c.stat("collect_gaps") == 1),
        "{}\n{}",
        c.status(),
        c.log()
    );
    let status = c.status();
    assert_eq!(stat_of(&status, "collect_gap_events"), 3, "{status}");
    assert_eq!(stat_of(&status, "collect_gap_open"), 0, "{status}");
    let said =
        "seq 4..=6 of node skipper (stream 00000000000000ab, 3 events) did not arrive within 2 s";
    assert!(
        wait_for(LONG, || events.lines().iter().any(|l| l.contains(said))),
        "{:?}\n{}",
        events.lines(),
        c.log()
    );
    assert!(c.log().contains(said), "{}", c.log());
    let fleet = sb.run(&["fleet"]).1;
    assert!(
        fleet.contains("skipper 00000000000000ab: 3 lost in 1 gaps (last seq 4..=6)"),
        "{fleet}"
    );
    let json = sb.run(&["fleet", "--json"]).1;
    assert!(json.contains(r#""last":[4,6]"#), "{json}");
    // Reported once: the seqs arriving late now change nothing.
    publish_seqs(b.port, "skipper", &[4, 5, 6, 9], &sb.dir);
    std::thread::sleep(PAST_GRACE);
    assert_eq!(c.stat("collect_gaps"), 1, "{}", c.status());
}

/// Seqs out of order, the missing one arriving within the grace: nothing
/// reported.
#[test]
fn reordering_inside_the_grace_reports_nothing() {
    let sb = Sandbox::new("gaps-reorder");
    let b = sb.queueing_broker();
    let (c, _events) = collector(&sb, &b);
    publish_seqs(b.port, "shuffled", &[1, 2, 5, 3], &sb.dir);
    assert!(
        wait_for(LONG, || c.stat("collect_gap_open") == 1),
        "{}",
        c.status()
    );
    std::thread::sleep(Duration::from_millis(500));
    publish_seqs(b.port, "shuffled", &[4, 6], &sb.dir);
    assert!(
        wait_for(LONG, || c.stat("collect_gap_open") == 0),
        "{}",
        c.status()
    );
    std::thread::sleep(PAST_GRACE);
    let status = c.status();
    assert_eq!(stat_of(&status, "collect_gaps"), 0, "{status}");
    assert_eq!(stat_of(&status, "collect_gap_streams"), 1, "{status}");
}

/// An edge crd that emits `n` records with a payload of `bytes` bytes each.
fn emit(edge: &Sandbox, from: u64, n: u64, bytes: usize) {
    for i in from..from + n {
        let msg = format!("{i:0>bytes$}");
        let (code, _, err) = edge.run(&["emit", "load", &msg]);
        assert_eq!(code, 0, "{err}");
    }
}

/// An edge whose spool dropped records while its broker was down: the
/// records after the drop say the seq before them, the drop notice names the
/// range; counted as dropped at the edge, never as lost.
#[test]
fn records_an_edge_spool_dropped_are_counted_as_dropped_not_lost() {
    let edge = Sandbox::new("gaps-drop-edge");
    let central = Sandbox::new("gaps-drop-central");
    let mut b = central.queueing_broker();
    let (c, _events) = collector(&central, &b);
    edge.config_node(
        "edge1",
        &format!(
            "broker = {}\nspool_size = 16k\nspool_segment = 4k\nspool_max_record = 1k\nspool_sync = always",
            b.addr()
        ),
    );
    let mut load = Subscriber::start(b.port, "crd/edge1/load", "gaps-load", &edge.path("load"));
    let e = edge.start();
    emit(&edge, 1, 3, 16);
    assert!(
        wait_for(LONG, || e.stat("spool_depth") == 0
            && c.stat("collect_gap_streams") == 1),
        "{}\n{}",
        c.status(),
        e.log()
    );
    b.stop();
    // About 20 KiB into a 16 KiB spool: its oldest segments go.
    emit(&edge, 4, 90, 200);
    let dropped = e.stat("spool_dropped");
    assert!(dropped > 0, "{}", e.status());
    b.restart();
    assert!(
        wait_for(LONG, || e.stat("spool_depth") == 0),
        "{}\n{}",
        e.status(),
        e.log()
    );
    assert!(
        wait_for(LONG, || c.stat("collect_gap_dropped_events") == dropped),
        "{}\n{}",
        c.status(),
        e.status()
    );
    // The first record after the drop said where the stream was: no gap
    // opened for the notice to close.
    // (The subscriber exited with the broker: started again, its persistent
    // session has what was queued for it.)
    let said_prev = |l: &String| l.contains(r#","prev":3,"#);
    assert!(
        wait_for(LONG, || {
            load.keep_alive();
            load.lines().iter().any(said_prev)
        }),
        "{:?}",
        load.lines()
    );
    std::thread::sleep(PAST_GRACE);
    let status = c.status();
    assert_eq!(stat_of(&status, "collect_gaps"), 0, "{status}");
    assert_eq!(stat_of(&status, "collect_gap_open"), 0, "{status}");
    let fleet = central.run(&["fleet"]).1;
    assert!(
        fleet.contains(&format!("{dropped} dropped by its spool")) && !fleet.contains("lost"),
        "{fleet}"
    );
}

/// An edge crd killed with SIGKILL and started again: its spool resumes
/// above its seq lease, which it says in a notice; the jump is no loss.
#[test]
fn an_edge_killed_and_restarted_is_no_loss() {
    let edge = Sandbox::new("gaps-kill-edge");
    let central = Sandbox::new("gaps-kill-central");
    let b = central.queueing_broker();
    let (c, _events) = collector(&central, &b);
    edge.config_node("edge1", &format!("broker = {}", b.addr()));
    let mut e = edge.start();
    emit(&edge, 1, 5, 8);
    assert!(
        wait_for(LONG, || c.stat("collect_journaled") >= 5
            && e.stat("spool_depth") == 0),
        "{}\n{}",
        c.status(),
        e.status()
    );
    e.signal(libc::SIGKILL);
    e.wait_exit(LONG).expect("killed");
    let e = edge.start();
    emit(&edge, 6, 5, 8);
    assert!(
        wait_for(LONG, || c.stat("collect_gap_resumed") == 1
            && e.stat("spool_depth") == 0),
        "{}\n{}",
        c.status(),
        e.log()
    );
    std::thread::sleep(PAST_GRACE);
    let status = c.status();
    assert_eq!(stat_of(&status, "collect_gaps"), 0, "{status}");
    assert_eq!(stat_of(&status, "collect_gap_open"), 0, "{status}");
}
