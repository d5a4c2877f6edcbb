//! Home Assistant's MQTT discovery against a real mosquitto started by each
//! test on a free loopback port: what crd finds retained on the broker from
//! before it started (configs of modules removed while it is stopped, of
//! other nodes), a module's state across a restart, and the entities a Home
//! Assistant user sees. The discovery topics
//! and payloads are `mqtt::wire`'s; `tests/mqtt.rs` has the announce, the
//! birth message and the removal at run time.

mod common;
use common::*;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

/// The retained messages on `filter` as a subscriber arriving now sees them:
/// (topic, payload), in topic order.
fn retained(port: u16, filter: &str) -> Vec<(String, String)> {
    let (_, out, _) = run_to_end({
        let mut c = std::process::Command::new("mosquitto_sub");
        c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", filter]);
        c.args(["-v", "--retained-only", "-W", "2"]);
        c
    });
    let mut v: Vec<(String, String)> = out
        .lines()
        .map(|l| {
            let (t, p) = l.split_once(' ').unwrap_or((l, ""));
            (t.to_string(), p.to_string())
        })
        .collect();
    v.sort();
    v
}

/// Publishes `payload` on `topic`, retained, as another client would.
fn plant(port: u16, topic: &str, payload: &str) {
    let (code, _, err) = run_to_end({
        let mut c = std::process::Command::new("mosquitto_pub");
        c.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
        c.args(["-t", topic, "-r", "-q", "1", "-m", payload]);
        c
    });
    assert_eq!(code, 0, "{err}");
}

/// A module removed while crd is down leaves its retained config: at the next
/// connect crd finds it under its own node id and clears it; another node's
/// config, under that node's id, is not crd's to touch; crd's own are there.
#[test]
fn configs_left_from_before_the_start_are_cleared_and_only_this_nodes() {
    let sb = Sandbox::new("ha-stale");
    let broker = Broker::start(&sb.path("broker"), "");
    let gone = "homeassistant/binary_sensor/crd-testnode/Gone/config";
    let other = "homeassistant/binary_sensor/crd-othernode/Hit/config";
    plant(broker.port, gone, r#"{"name":"Gone"}"#);
    plant(broker.port, other, r#"{"name":"Hit"}"#);
    assert_eq!(retained(broker.port, "homeassistant/#").len(), 2);
    sb.module("Hit", "exit 1", None);
    sb.config(&format!(
        "interval = 200ms\nbroker = {}\nhomeassistant = yes",
        broker.addr()
    ));
    let d = sb.start();
    let own = "homeassistant/+/crd-testnode/+/config";
    let mut v = Vec::new();
    assert!(
        wait_for(LONG, || {
            v = retained(broker.port, own);
            v.iter().all(|(t, _)| t != gone) && !v.is_empty()
        }),
        "{v:?}\n{}",
        d.log()
    );
    assert!(
        v.iter()
            .any(|(t, _)| t == "homeassistant/binary_sensor/crd-testnode/Hit/config"),
        "crd's own config is there: {v:?}"
    );
    let o = retained(broker.port, "homeassistant/+/crd-othernode/#");
    assert_eq!(
        o,
        vec![(other.to_string(), r#"{"name":"Hit"}"#.to_string())],
        "another node's config is untouched"
    );
    assert!(
        d.log().contains("Gone"),
        "the log names what it cleared:\n{}",
        d.log()
    );
    d.stop(LONG);
}

/// A node renamed while crd is down: at the next start crd empties every
/// config under the old name's node id (the name Home Assistant knew is kept
/// in the spool directory), announces under the new one, and leaves another
/// node's alone.
#[test]
fn a_node_renamed_while_down_has_its_old_entities_removed() {
    let sb = Sandbox::new("ha-rename");
    let broker = Broker::start(&sb.path("broker"), "");
    let other = "homeassistant/binary_sensor/crd-othernode/Hit/config";
    plant(broker.port, other, r#"{"name":"Hit"}"#);
    sb.module("Hit", "exit 1", None);
    let extra = format!(
        "interval = 200ms\nbroker = {}\nhomeassistant = yes",
        broker.addr()
    );
    let (old, new) = (
        "homeassistant/+/crd-gw1/+/config",
        "homeassistant/+/crd-gw2/+/config",
    );
    sb.config_node("gw1", &extra);
    let d = sb.start();
    assert!(
        wait_for(LONG, || retained(broker.port, old).len() >= 2),
        "{}",
        d.log()
    );
    d.stop(LONG);
    sb.config_node("gw2", &extra);
    let d = sb.start();
    let mut v = Vec::new();
    assert!(
        wait_for(LONG, || {
            v = retained(broker.port, old);
            v.is_empty() && retained(broker.port, new).len() >= 2
        }),
        "left under the old name: {v:?}\n{}",
        d.log()
    );
    assert_eq!(
        retained(broker.port, "homeassistant/+/crd-othernode/#").len(),
        1
    );
    assert!(d.log().contains("renamed from gw1"), "{}", d.log());
    d.stop(LONG);
    // The new name is kept: the next start empties nothing more.
    let d = sb.start();
    assert!(
        wait_for(LONG, || retained(broker.port, new).len() >= 2),
        "{}",
        d.log()
    );
    assert!(!d.log().contains("renamed from"), "{}", d.log());
    d.stop(LONG);
}

/// A restart of crd with a module still firing: the retained state stays ON
/// until the module's first check decides, which says ON again; a subscriber
/// never sees OFF in between (HA would show the problem gone and back).
#[test]
fn a_restart_does_not_flip_a_firing_module_off_and_on() {
    let sb = Sandbox::new("ha-restart");
    let broker = Broker::start(&sb.path("broker"), "");
    sb.module("Hit", "sleep 1; echo still down", Some("exit 0"));
    sb.config(&format!(
        "interval = 200ms\nbroker = {}\nhomeassistant = yes",
        broker.addr()
    ));
    let state = "crd/testnode/state/Hit";
    let on = |v: &[(String, String)]| v.iter().any(|(_, p)| p.contains(r#""state":"ON""#));
    let d = sb.start();
    assert!(
        wait_for(LONG, || on(&retained(broker.port, state))),
        "{}",
        d.log()
    );
    d.stop(LONG);
    let sub = Subscriber::start(broker.port, state, "watch", &sb.path("seen"));
    assert!(
        wait_for(LONG, || !sub.lines().is_empty()),
        "the retained ON"
    );
    let d = sb.start();
    // The first check after the start takes a second, then fires: ON again.
    assert!(
        wait_for(LONG, || sub.lines().len() >= 2),
        "{:?}\n{}",
        sub.lines(),
        d.log()
    );
    d.stop(LONG);
    let seen = sub.lines();
    assert!(
        seen.iter().all(|l| l.contains(r#""state":"ON""#)),
        "never OFF: {seen:?}"
    );
}

/// The discovery configs crd announces, parsed, with the fields Home
/// Assistant's MQTT docs name for each component: topic, `unique_id`,
/// `state_topic`, availability (`availability_topic`, template, payloads),
/// `device` `identifiers`, `device_class`, `json_attributes_topic`, `origin`;
/// for the `event`, `event_types` and an event arriving on its `state_topic`;
/// for the node's connectivity, `entity_category` and no availability;
/// the node's two diagnostic sensors besides (their fields are
/// `the_diagnostics_say_the_backlog_and_the_last_error_and_go_with_discovery`'s).
#[test]
fn the_entities_a_home_assistant_user_sees() {
    let sb = Sandbox::new("ha-entities");
    let broker = Broker::start(&sb.path("broker"), "");
    sb.module("Wan.Down", "echo no route; exit 0", None);
    sb.write(
        "modules/Wan.Down/module.conf",
        "device_class = connectivity\n",
    );
    sb.config(&format!(
        "interval = 300ms\nbroker = {}\nhomeassistant = yes",
        broker.addr()
    ));
    let d = sb.start();
    let configs = || -> Vec<(String, serde_json::Value)> {
        retained(broker.port, "homeassistant/+/crd-testnode/+/config")
            .into_iter()
            .map(|(t, p)| (t, serde_json::from_str(&p).expect("JSON")))
            .collect()
    };
    let mut v = Vec::new();
    assert!(
        wait_for(LONG, || {
            v = configs();
            v.len() == 5
        }),
        "{v:?}\n{}",
        d.log()
    );
    let get = |t: &str| {
        v.iter()
            .find(|(topic, _)| topic == t)
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| panic!("no {t} in {v:?}"))
    };
    let state = get("homeassistant/binary_sensor/crd-testnode/Wan_2eDown/config");
    assert_eq!(state["unique_id"], "crd-testnode-Wan_2eDown");
    assert_eq!(state["state_topic"], "crd/testnode/state/Wan.Down");
    assert_eq!(state["json_attributes_topic"], state["state_topic"]);
    assert_eq!(state["device_class"], "connectivity");
    let events = get("homeassistant/event/crd-testnode/Wan_2eDown/config");
    assert_eq!(events["unique_id"], "crd-testnode-Wan_2eDown-event");
    assert_eq!(events["state_topic"], "crd/testnode/event/Wan.Down");
    let types = events["event_types"].as_array().unwrap();
    let link = get("homeassistant/binary_sensor/crd-testnode/crd-status/config");
    assert_eq!(link["unique_id"], "crd-testnode--status");
    assert_eq!(link["state_topic"], "crd/testnode/status");
    assert_eq!(link["json_attributes_topic"], link["state_topic"]);
    assert_eq!(link["device_class"], "connectivity");
    assert_eq!(link["entity_category"], "diagnostic");
    assert!(
        link.get("availability_topic").is_none(),
        "offline is its OFF"
    );
    assert_eq!(link["device"]["identifiers"][0], "crd-testnode");
    assert_eq!(link["origin"]["name"], "crd");
    for c in [&state, &events] {
        assert_eq!(c["availability_topic"], "crd/testnode/status");
        assert_eq!(c["payload_available"], "online");
        assert_eq!(c["device"]["identifiers"][0], "crd-testnode");
        assert_eq!(c["device"]["name"], "testnode");
        assert_eq!(c["origin"]["name"], "crd");
        assert_eq!(c["origin"]["sw_version"], env!("CARGO_PKG_VERSION"));
        assert!(
            c["origin"].get("support_url").is_none(),
            "none without homeassistant_support_url"
        );
    }
    // What the state topic holds: ON, and the attributes.
    let s = retained(broker.port, "crd/testnode/state/Wan.Down");
    let s: serde_json::Value = serde_json::from_str(&s[0].1).unwrap();
    assert_eq!(s["state"], "ON");
    assert_eq!((&s["code"], &s["out"]), (&0.into(), &"no route".into()));
    // What the event entity's topic carries: a kind HA is told of.
    let sub = Subscriber::start(broker.port, "crd/testnode/event/#", "ev", &sb.path("ev"));
    std::fs::write(sb.path("modules/Wan.Down/check"), "#!/bin/sh\nexit 1\n").unwrap();
    assert!(wait_for(LONG, || sub
        .lines()
        .iter()
        .any(|l| l.contains("cleared"))));
    for l in sub.lines() {
        let (t, j) = l.split_once(' ').unwrap();
        assert_eq!(t, events["state_topic"]);
        let j: serde_json::Value = serde_json::from_str(j).unwrap();
        assert!(types.contains(&j["kind"]), "{j}");
    }
    d.stop(LONG);
}

/// A crd with discovery on and no broker reachable at first, with a module
/// that errors at every check: its events wait in the spool. Once the broker
/// is up, the retained diagnostics say the backlog at the connect and the
/// module's last error (its first line, with a time), once in the seconds
/// that follow though the errors go on (the rate bound); the two diagnostic
/// sensors' configs are retained under the node id level. Restarted with
/// discovery off, crd clears every config of this node and the diagnostics.
#[test]
fn the_diagnostics_say_the_backlog_and_the_last_error_and_go_with_discovery() {
    let sb = Sandbox::new("ha-diag");
    let port = free_port();
    sb.module("Disk", "echo disk gone; exit 7", None);
    let conf =
        |ha: &str| format!("interval = 200ms\nbroker = 127.0.0.1:{port}\nhomeassistant = {ha}");
    sb.config(&conf("yes"));
    let d = sb.start();
    assert!(wait_for(LONG, || d.stat("spool_depth") >= 3), "{}", d.log());
    let broker = Broker::start_on(&sb.path("broker"), "", port);
    let sub = Subscriber::start(port, "crd/testnode/diag", "diag", &sb.path("diag"));
    let mut v = Vec::new();
    assert!(
        wait_for(LONG, || {
            v = retained(port, "crd/testnode/diag");
            !v.is_empty()
        }),
        "{}",
        d.log()
    );
    let j: serde_json::Value = serde_json::from_str(&v[0].1).unwrap();
    assert!(j["backlog"].as_u64().unwrap() >= 3, "{j}");
    assert_eq!(j["last_error"], "Disk: exit 7", "{j}");
    assert!(
        j["last_error_ms"].as_u64().unwrap() > 1_600_000_000_000,
        "{j}"
    );
    let configs = retained(port, "homeassistant/sensor/crd-testnode/+/config");
    let topics: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/sensor/crd-testnode/crd-backlog/config",
            "homeassistant/sensor/crd-testnode/crd-last-error/config"
        ]
    );
    for (_, c) in &configs {
        let c: serde_json::Value = serde_json::from_str(c).unwrap();
        assert_eq!(c["state_topic"], "crd/testnode/diag");
        assert_eq!(c["entity_category"], "diagnostic");
        assert_eq!(c["device"]["identifiers"][0], "crd-testnode");
    }
    // Errors every 200 ms, and the backlog drains meanwhile: one message
    // in 3 s.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(sub.lines().len(), 1, "{:?}", sub.lines());
    d.stop(LONG);
    sb.config(&conf("no"));
    let d = sb.start();
    assert!(
        wait_for(LONG, || {
            retained(port, "homeassistant/+/crd-testnode/+/config").is_empty()
                && retained(port, "crd/testnode/diag").is_empty()
        }),
        "{:?}\n{}",
        retained(port, "homeassistant/#"),
        d.log()
    );
    d.stop(LONG);
    drop(broker);
}
