//! The collector (issue 15) end to end: real edge and collector `crd` binaries, a
//! real mosquitto with persistence on a free loopback port, real `/bin/sh`
//! modules.

mod common;
use common::*;
use std::fs;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// A broker that queues enough for the tests (mosquitto's default limit is 1000).
fn broker(sb: &Sandbox) -> Broker {
    Broker::start(
        &sb.path("broker"),
        "allow_anonymous true\nmax_queued_messages 100000\nmax_inflight_messages 100\n",
    )
}

fn edge_and_collector(tag: &str) -> (Sandbox, Sandbox, Broker) {
    let edge = Sandbox::new(&format!("{tag}-edge"));
    let central = Sandbox::new(&format!("{tag}-central"));
    let b = broker(&central);
    (edge, central, b)
}

fn write(sb: &Sandbox, rel: &str, text: &str) {
    fs::write(sb.path(rel), text).unwrap();
    fs::set_permissions(
        sb.path(rel),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
}

/// Edge crd -> broker -> collector crd: an edge module fires; the collector's
/// module subscribed to `crd/+/event/#` gets the payload and the environment, and
/// its response runs with the check's output.
#[test]
fn an_edge_event_reaches_a_collector_module_with_its_environment() {
    let (edge, central, b) = edge_and_collector("e2e");
    edge.module("Full", "echo 'disk 97%'\nexit 0", None);
    edge.config(&format!(
        "node = edge1\nbroker = {}\ninterval = 1h",
        b.addr()
    ));
    // node is set by config(): rewrite it.
    fs::write(
        edge.conf(),
        edge.read("crd.conf").replace("node = testnode\n", ""),
    )
    .unwrap();
    central.script(
        "modules/Sink/check",
        "cat > ../../payload\n\
         printf '%s|%s|%s|%s|%s|%s' \"$CRD_TOPIC\" \"$CRD_EVENT_NODE\" \"$CRD_EVENT_MODULE\" \
         \"$CRD_EVENT_KIND\" \"$CRD_EVENT_CODE\" \"$CRD_MESSAGE_ID\" > ../../check_env\n\
         echo checked\nexit 0",
    );
    central.script(
        "modules/Sink/response",
        "cat > ../../response_stdin\n\
         printf '%s|%s|%s' \"$CRD_CHECK_OUTPUT\" \"$CRD_EVENT_NODE\" \"$CRD_MODULE\" > ../../response_env",
    );
    write(
        &central,
        "modules/Sink/module.conf",
        "subscribe = crd/+/event/#\n",
    );
    central.config(&format!("node = central\nbroker = {}", b.addr()));
    fs::write(
        central.conf(),
        central.read("crd.conf").replace("node = testnode\n", ""),
    )
    .unwrap();
    let c = central.start();
    assert!(
        wait_for(LONG, || c
            .log()
            .contains("mqtt: subscribed to crd/+/event/#")),
        "{}",
        c.log()
    );
    let e = edge.start();
    assert!(
        wait_for(LONG, || !central.read("response_env").is_empty()),
        "collector:\n{}\nedge:\n{}",
        c.log(),
        e.log()
    );
    let payload = central.read("payload");
    assert!(
        payload.contains(r#""node":"edge1""#) && payload.contains(r#""kind":"fired""#),
        "{payload}"
    );
    let env = central.read("check_env");
    let parts: Vec<&str> = env.split('|').collect();
    assert_eq!(
        &parts[..5],
        ["crd/edge1/event/Full", "edge1", "Full", "fired", "0"],
        "{env}"
    );
    assert!(
        parts[5].ends_with("-1"),
        "CRD_MESSAGE_ID is STREAM-SEQ: {env}"
    );
    assert_eq!(
        central.read("response_stdin"),
        payload,
        "the message on stdin"
    );
    assert_eq!(central.read("response_env"), "checked|edge1|Sink");
    // The collector's own event about Sink is not run again (no loop).
    std::thread::sleep(Duration::from_millis(1500));
    let status = c.status();
    assert_eq!(stat_of(&status, "collect_journaled"), 1, "{status}");
    assert_eq!(
        stat_of(&status, "collect_runs"),
        2,
        "check and response: {status}"
    );
    assert!(stat_of(&status, "collect_own_skipped") >= 1, "{status}");
    assert_eq!(stat_of(&status, "collect_journal_depth"), 0, "{status}");
}

/// A subscribed module without a check: every message is a hit and its response
/// runs with the message on stdin; an oversized message and a retained one
/// replayed at subscribe are counted and acknowledged, and the collector goes on.
#[test]
fn foreign_payloads_and_oversized_and_retained_messages_are_counted_and_the_collector_goes_on() {
    let central = Sandbox::new("foreign");
    let b = broker(&central);
    central.script(
        "modules/Plant/response",
        "cat >> ../../got\necho >> ../../got",
    );
    write(
        &central,
        "modules/Plant/module.conf",
        "subscribe = plant/+/temp\n",
    );
    central.config(&format!(
        "node = central\nbroker = {}\nmax_message = 1k",
        b.addr()
    ));
    fs::write(
        central.conf(),
        central.read("crd.conf").replace("node = testnode\n", ""),
    )
    .unwrap();
    let pubq = |topic: &str, msg: &str, extra: &[&str]| {
        let st = std::process::Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &b.port.to_string(),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                msg,
            ])
            .args(extra)
            .status()
            .unwrap();
        assert!(st.success());
    };
    pubq("plant/9/temp", "retained 1", &["-r"]);
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    pubq("plant/1/temp", "21.5", &[]);
    pubq("other/topic", "nobody", &[]);
    pubq("plant/2/temp", &"x".repeat(5000), &[]);
    pubq("plant/3/temp", "\u{ff}binary-ish", &[]);
    assert!(
        wait_for(LONG, || central.read("got").lines().count() >= 2),
        "{}",
        c.log()
    );
    let got = central.read("got");
    assert!(got.contains("21.5") && got.contains("binary-ish"), "{got}");
    assert!(!got.contains("retained"), "{got}");
    let status = c.status();
    // Four delivered (`other/topic` is not subscribed, so the broker keeps it).
    assert_eq!(stat_of(&status, "collect_received"), 4, "{status}");
    assert_eq!(stat_of(&status, "collect_oversized"), 1, "{status}");
    assert_eq!(stat_of(&status, "collect_retained_skipped"), 1, "{status}");
    assert!(c.log().contains("over max_message"), "{}", c.log());
}
