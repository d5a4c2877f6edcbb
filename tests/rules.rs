//! Rules and registers end to end: real edge and collector `crd`
//! binaries, a real mosquitto with persistence on a free loopback port, real
//! `/bin/sh` responses; the register's condition is evaluated in the daemon.

#![cfg(feature = "collector")]

mod common;
use common::*;
use std::fs;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn crd_bin() -> String {
    std::env::var("CRD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_crd").to_string())
}

fn publish(port: u16, topic: &str, msg: &str) {
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
        .args(["-t", topic, "-m", msg])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A crd `emit` event from `node` (its own stream), as an edge sends it.
fn emit_event(node: &str, stream: u64, seq: u64, suffix: &str, message: &str) -> String {
    format!(
        r#"{{"node":"{node}","stream":"{stream:016x}","seq":{seq},"ts":1,"module":"{suffix}","kind":"emit","code":0,"dur_ms":0,"message":"{message}"}}"#
    )
}

fn lines(sb: &Sandbox, rel: &str) -> Vec<String> {
    sb.read(rel)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// The seed's example: events on `crd/+/load` from three edges, one hot; the
/// rule "average load over 10 s above 20" holds for the hot node only; its
/// response runs once per crossing (not once per message) and emits
/// `reconfig/lb` naming the node, which reaches the broker. `crd register`
/// prints the registers.
#[test]
fn the_load_rule_fires_for_the_hot_node_once_per_crossing_and_its_event_reaches_the_broker() {
    let central = Sandbox::new("lb-central");
    let b = central.queueing_broker();
    central.write(
        "modules/LbTurnDown/module.conf",
        "subscribe = crd/+/load\nregister = avg\nvalue = message\nperiod = 10s\nabove = 20\n",
    );
    central.script(
        "modules/LbTurnDown/response",
        &format!(
            "printf '%s %s\\n' \"$CRD_REGISTER_KEY\" \"$CRD_REGISTER_VALUE\" >> ../../responses\n\
             exec {} -c \"$CRD_CONFIG\" emit reconfig/lb \"{{\\\"turn_down\\\":\\\"$CRD_EVENT_NODE\\\"}}\"",
            crd_bin()
        ),
    );
    central.config_node("central", &format!("broker = {}", b.addr()));
    let sub = Subscriber::start(b.port, "crd/central/#", "watch", &central.path("seen"));
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    // Three real edges, each emitting its load through its own spool.
    let edges: Vec<(Sandbox, Daemon)> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| {
            let e = Sandbox::new(&format!("lb-{n}"));
            fs::create_dir_all(e.path("modules")).unwrap();
            e.config_node(n, &format!("broker = {}", b.addr()));
            let d = e.start();
            (e, d)
        })
        .collect();
    for (_, d) in &edges {
        assert!(
            wait_for(LONG, || d.log().contains("mqtt: connected")),
            "{}",
            d.log()
        );
    }
    let emit = |i: usize, v: &str| {
        let (code, out, err) = edges[i].0.run(&["emit", "load", v]);
        assert_eq!(code, 0, "{out}{err}");
    };
    for v in ["30", "31", "29"] {
        emit(0, v);
        emit(1, "5");
        emit(2, "12");
    }
    let fed = || {
        let st = c.status();
        st.contains("\nrule_LbTurnDown_keys: 3\n") && stat_of(&st, "collect_journal_depth") == 0
    };
    assert!(
        wait_for(LONG, || fed() && c.stat("collect_received") >= 9),
        "{}",
        c.status()
    );
    assert!(
        wait_for(LONG, || lines(&central, "responses").len() == 1),
        "{}",
        c.log()
    );
    // Down (a run of zeros pulls the mean under 20: `cleared`), and up again.
    for _ in 0..7 {
        emit(0, "0");
    }
    for _ in 0..3 {
        emit(0, "100");
    }
    assert!(
        wait_for(LONG, || lines(&central, "responses").len() >= 2),
        "{}\n{}\n{:?}",
        c.log(),
        c.status(),
        central.run(&["register", "LbTurnDown"])
    );
    std::thread::sleep(Duration::from_millis(500));
    let responses = lines(&central, "responses");
    assert_eq!(responses.len(), 2, "{responses:?}");
    assert_eq!(responses[0], "n1 30", "{responses:?}");
    assert!(responses[1].starts_with("n1 2"), "{responses:?}");
    // The reactions reached the broker, and the rule's own events say what
    // happened: fired, cleared, fired, each for n1.
    assert!(
        wait_for(LONG, || sub
            .lines()
            .iter()
            .filter(|l| l.contains("reconfig/lb"))
            .count()
            == 2),
        "{:?}",
        sub.lines()
    );
    let seen = sub.lines();
    assert!(
        seen.iter()
            .filter(|l| l.contains("reconfig/lb"))
            .all(|l| l.contains(r#"\"turn_down\":\"n1\""#) || l.contains(r#"{"turn_down":"n1"}"#)),
        "{seen:?}"
    );
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|l| l.starts_with("crd/central/event/LbTurnDown "))
        .filter_map(|l| {
            ["\"fired\"", "\"cleared\""]
                .into_iter()
                .find(|k| l.contains(&format!("\"kind\":{k}")))
        })
        .collect();
    assert_eq!(kinds, ["\"fired\"", "\"cleared\"", "\"fired\""], "{seen:?}");
    // The registers, all keys and one.
    let (code, out, err) = central.run(&["register", "LbTurnDown"]);
    assert_eq!(code, 0, "{err}");
    let keys: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(keys, ["n1", "n2", "n3"], "{out}");
    assert_eq!(central.run(&["register", "LbTurnDown", "n2"]).1, "5\n");
    assert_eq!(central.run(&["register", "LbTurnDown", "n3"]).1, "12\n");
    let (code, _, err) = central.run(&["register", "LbTurnDown", "n9"]);
    assert_eq!(code, 1);
    assert!(err.contains("no key `n9`"), "{err}");
    let (code, _, err) = central.run(&["register", "Nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no register `Nope`"), "{err}");
    // No fork per message: 19 messages, two responses, no check.
    let st = c.status();
    assert_eq!(stat_of(&st, "collect_runs"), 2, "{st}");
    assert_eq!(stat_of(&st, "rule_LbTurnDown_skipped"), 0, "{st}");
    // Each of the 19 decided by the rule without a fork, and counted so.
    assert_eq!(stat_of(&st, "collect_decided"), 19, "{st}");
    drop(edges);
}

/// `count` over a period as a flap detector: a node whose WAN went down 3 times
/// in 10 minutes; the module's check runs after the condition as a further
/// filter (AND). Values a rule cannot use are counted as skipped, and the
/// daemon goes on.
#[test]
fn a_count_rule_detects_a_flapping_wan_and_its_check_filters_further() {
    let central = Sandbox::new("flap");
    let b = central.queueing_broker();
    central.write(
        "modules/WanFlap/module.conf",
        "subscribe = crd/+/wan/down\nregister = count\nperiod = 10m\nabove = 2\n",
    );
    // The check: every node but the lab's.
    central.script(
        "modules/WanFlap/check",
        "echo \"$CRD_REGISTER_KEY $CRD_REGISTER_VALUE\" >> ../../checks\ntest \"$CRD_EVENT_NODE\" != lab",
    );
    central.script(
        "modules/WanFlap/response",
        "printf '%s %s\\n' \"$CRD_REGISTER_KEY\" \"$CRD_REGISTER_VALUE\" >> ../../responses",
    );
    central.write(
        "modules/Temp/module.conf",
        "subscribe = plant/+/temp\nregister = max\nvalue = celsius\nperiod = 1h\nby = topic\n",
    );
    central.config_node("central", &format!("broker = {}", b.addr()));
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    let mut seq = 0;
    let mut down = |node: &str, stream: u64| {
        seq += 1;
        publish(
            b.port,
            &format!("crd/{node}/wan/down"),
            &emit_event(node, stream, seq, "wan/down", ""),
        );
    };
    for _ in 0..3 {
        down("r1", 1);
        down("r2", 2);
        down("lab", 3);
    }
    down("r2", 2); // r2: 4 times; still one crossing
    down("r3", 4);
    assert!(
        wait_for(LONG, || {
            let st = c.status();
            st.contains("\nrule_WanFlap_keys: 4\n")
                && stat_of(&st, "collect_journal_depth") == 0
                && stat_of(&st, "collect_running") == 0
                && lines(&central, "checks").len() >= 3
        }),
        "{}",
        c.status()
    );
    std::thread::sleep(Duration::from_millis(500));
    let mut responses = lines(&central, "responses");
    responses.sort();
    assert_eq!(responses, ["r1 3", "r2 3"], "{}", c.log());
    let mut checks = lines(&central, "checks");
    checks.sort();
    assert_eq!(
        checks,
        ["lab 3", "r1 3", "r2 3"],
        "the check runs once per crossing"
    );
    // Hits: the messages after which the condition held (r1's third, r2's third
    // and fourth, lab's third), whatever the check then said.
    assert_eq!(c.stat("rule_WanFlap_hits"), 4, "{}", c.status());
    assert_eq!(c.stat("rule_WanFlap_evicted"), 0);
    // Bad values for the Temp rule: counted as skipped, never an error.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for bad in [
        r#"{"celsius":"NaN"}"#,
        r#"{"celsius":"warm"}"#,
        r#"{"celsius":1e308}"#,
        r#"{"celsius":{"x":1}}"#,
        r#"{"other":1}"#,
        "not json",
        deep.as_str(),
    ] {
        publish(b.port, "plant/1/temp", bad);
    }
    publish(b.port, "plant/1/temp", r#"{"celsius":21.5}"#);
    publish(b.port, "plant/1/temp", r#"{"celsius":"19"}"#);
    assert!(
        wait_for(LONG, || {
            let st = c.status();
            st.contains("\nrule_Temp_skipped: 7\n") && stat_of(&st, "collect_journal_depth") == 0
        }),
        "{}",
        c.status()
    );
    assert_eq!(
        central.run(&["register", "Temp", "plant/1/temp"]).1,
        "21.5\n"
    );
    assert_eq!(c.stat("rule_Temp_keys"), 1);
    // The daemon is still processing.
    down("r3", 4);
    down("r3", 4);
    assert!(
        wait_for(LONG, || lines(&central, "responses").len() == 3),
        "{}",
        c.log()
    );
}

/// `trigger_after` and `cooldown` hold per register key, as per origin node on
/// the edge: with `trigger_after = 2` a key's condition must hold on two
/// messages in a row before its response runs, a message where it does not
/// starts the count again; with `cooldown = 1h` a key that fires a second time
/// has its `fired` event but not a second response, while another key's first
/// response is not held back by it.
#[test]
fn trigger_after_and_cooldown_hold_per_register_key() {
    let central = Sandbox::new("trig");
    let b = central.queueing_broker();
    central.write(
        "modules/Hot/module.conf",
        "subscribe = crd/+/temp\nregister = last\nvalue = message\nabove = 10\n\
         trigger_after = 2\ncooldown = 1h\n",
    );
    central.script(
        "modules/Hot/response",
        "printf '%s %s\\n' \"$CRD_REGISTER_KEY\" \"$CRD_REGISTER_VALUE\" >> ../../responses",
    );
    central.config_node("central", &format!("broker = {}", b.addr()));
    let sub = Subscriber::start(
        b.port,
        "crd/central/event/Hot",
        "trig",
        &central.path("seen"),
    );
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    // (node, value) in order: n1 holds twice (fires); n2 holds, breaks, holds
    // twice (fires); n1 clears and holds twice again (fires, cooled down).
    let steps = [
        ("n1", 20),
        ("n2", 20),
        ("n2", 5),
        ("n1", 30),
        ("n2", 21),
        ("n2", 22),
        ("n1", 3),
        ("n1", 40),
        ("n1", 41),
    ];
    let mut seqs = std::collections::HashMap::new();
    let text: String = steps
        .iter()
        .map(|(n, v)| {
            let seq = seqs.entry(*n).or_insert(0u64);
            *seq += 1;
            let stream = if *n == "n1" { 1 } else { 2 };
            emit_event(n, stream, *seq, "temp", &v.to_string()) + "\n"
        })
        .collect();
    let file = central.path("lines");
    fs::write(&file, text).unwrap();
    let st = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.port.to_string(), "-q", "1"])
        .args(["-t", "crd/n/temp", "-l"])
        .stdin(fs::File::open(&file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    let kinds = || -> Vec<String> {
        sub.lines()
            .iter()
            .filter_map(|l| {
                ["fired", "cleared"]
                    .into_iter()
                    .find(|k| l.contains(&format!("\"kind\":\"{k}\"")))
                    .map(str::to_string)
            })
            .collect()
    };
    assert!(
        wait_for(LONG, || c.stat("collect_journaled") == steps.len() as u64
            && c.stat("collect_journal_depth") == 0
            && kinds().len() >= 4),
        "{:?}\n{}",
        kinds(),
        c.status()
    );
    std::thread::sleep(Duration::from_millis(500));
    // Two keys' responses run at once: in either order.
    let mut responses = lines(&central, "responses");
    responses.sort();
    assert_eq!(responses, ["n1 30", "n2 22"]);
    assert_eq!(
        kinds(),
        ["fired", "fired", "cleared", "fired"],
        "{:?}",
        sub.lines()
    );
    // Each event says the key and the value it was decided on.
    let outs: Vec<String> = sub
        .lines()
        .iter()
        .filter(|l| !l.contains("\"kind\":\"response\""))
        .filter_map(|l| Some(l.split("\"out\":\"").nth(1)?.split('"').next()?.to_string()))
        .collect();
    assert_eq!(
        outs,
        ["n1 30", "n2 22", "n1 3", "n1 41"],
        "{:?}",
        sub.lines()
    );
}

/// A collector with rule modules `Avg` (the mean of each node's values) and
/// `Cnt` (all messages), fed crd events from five nodes.
fn rule_collector(name: &str, b: &Broker) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write(
        "modules/Avg/module.conf",
        "subscribe = crd/+/load\nregister = avg\nvalue = message\nperiod = 1h\n",
    );
    sb.write(
        "modules/Cnt/module.conf",
        "subscribe = crd/+/load\nregister = count\nperiod = 1h\nby = all\n",
    );
    sb.config_node(name, &format!("broker = {}", b.addr()));
    sb
}

/// SIGKILL between (and during) messages: a collector killed 8 times while
/// 2,000 crd events of five nodes arrive ends with exactly the registers of a
/// collector that never died: every message counted, none twice (the
/// registers' log is synced before a message is retired; a replayed journal
/// record that fed them already feeds nothing again). Then a clean stop and
/// start (the snapshot) keeps them too.
#[test]
fn registers_after_sigkills_equal_those_of_a_collector_that_never_died() {
    const ROUNDS: u64 = 8;
    const PER_ROUND: u64 = 250;
    let home = Sandbox::new("regkill");
    let b = home.queueing_broker();
    let a = rule_collector("regkill-a", &b);
    let r = rule_collector("regkill-ref", &b);
    let mut da = a.start();
    let dr = r.start();
    for d in [&da, &dr] {
        assert!(
            wait_for(LONG, || d.log().contains("mqtt: subscribed")),
            "{}",
            d.log()
        );
    }
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut seqs = [0u64; 5];
    for round in 0..ROUNDS {
        let mut lines = String::new();
        for i in 0..PER_ROUND {
            let node = (i % 5) as usize;
            seqs[node] += 1;
            let v = (round * PER_ROUND + i) * 37 % 101;
            lines.push_str(&emit_event(
                &format!("n{node}"),
                node as u64 + 1,
                seqs[node],
                "load",
                &v.to_string(),
            ));
            lines.push('\n');
        }
        let file = home.path(&format!("lines-{round}"));
        fs::write(&file, lines).unwrap();
        let port = b.port;
        let publisher = std::thread::spawn(move || {
            let st = std::process::Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
                .args(["-t", "crd/n/load", "-l"])
                .stdin(fs::File::open(&file).unwrap())
                .status()
                .unwrap();
            assert!(st.success());
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(20 + rng % 200));
        da.signal(libc::SIGKILL);
        da.wait_exit(LONG).expect("killed");
        drop(da);
        publisher.join().unwrap();
        da = a.start();
    }
    let total = ROUNDS * PER_ROUND;
    let settled = |sb: &Sandbox, d: &Daemon| {
        let st = d.status();
        st.contains("\nrule_Cnt_keys: 1\n")
            && stat_of(&st, "collect_journal_depth") == 0
            && sb.run(&["register", "Cnt", "*"]).1.trim() == total.to_string()
    };
    assert!(
        wait_for(Duration::from_secs(60), || settled(&r, &dr)),
        "reference: {:?}\n{}",
        r.run(&["register", "Cnt"]),
        dr.status()
    );
    assert!(
        wait_for(Duration::from_secs(60), || settled(&a, &da)),
        "killed one: {:?}\n{}\n{}",
        a.run(&["register", "Cnt"]),
        da.status(),
        da.log()
    );
    let want = r.run(&["register", "Avg"]).1;
    assert_eq!(want.lines().count(), 5, "{want}");
    assert_eq!(a.run(&["register", "Avg"]).1, want);
    // A clean stop syncs the state's log; the next start has the same registers.
    da.signal(libc::SIGTERM);
    assert!(da.wait_exit(LONG).is_some_and(|s| s.success()));
    assert!(a.exists("spool/collect/state") && !a.exists("spool/collect/registers"));
    let mut da = a.start();
    assert!(
        wait_for(LONG, || da.log().contains("registers of 2 rules restored")),
        "{}",
        da.log()
    );
    assert_eq!(a.run(&["register", "Avg"]).1, want);
    assert_eq!(a.run(&["register", "Cnt", "*"]).1.trim(), total.to_string());
    // A corrupt snapshot (its header) is logged and the registers start empty;
    // the collector runs on (the next message is counted afresh).
    da.signal(libc::SIGTERM);
    assert!(da.wait_exit(LONG).is_some_and(|s| s.success()));
    let dir = a.path("spool/collect/state");
    let snap = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("state.")
        })
        .expect("the state's log");
    let mut bytes = fs::read(&snap).unwrap();
    bytes[20] ^= 0xff;
    fs::write(&snap, bytes).unwrap();
    let da = a.start();
    assert!(
        wait_for(LONG, || da.log().contains("the registers start empty")
            && da.log().contains("mqtt: subscribed")),
        "{}",
        da.log()
    );
    publish(b.port, "crd/n/load", &emit_event("n9", 9, 1, "load", "7"));
    assert!(
        wait_for(LONG, || a.run(&["register", "Cnt", "*"]).1.trim() == "1"),
        "{:?}\n{}",
        a.run(&["register", "Cnt"]),
        da.log()
    );
    assert_eq!(a.run(&["register", "Avg"]).1, "n9 7\n");
}

/// An upgrade with state on disk: a collector started on the files the crd
/// before the state's log wrote (`tests/fixtures/v1`, made by that code's own
/// encoders: events done of streams 7, 9 and 11, and rule `Cnt` fed through
/// journal record 35) takes them over and removes them: a copy of an event
/// done runs nothing, a new one runs, and the registers say they were fed
/// through record 35.
#[test]
fn a_collector_upgraded_with_old_state_files_takes_them_over() {
    let c = Sandbox::new("upgrade");
    let b = c.queueing_broker();
    c.write(
        "modules/Cnt/module.conf",
        "subscribe = site/+/load\nregister = count\nperiod = 10m\nby = topic\nabove = 100\n",
    );
    c.write("modules/Run/module.conf", "subscribe = crd/+/up\n");
    c.module(
        "Run",
        "echo \"$CRD_EVENT_STREAM $CRD_EVENT_SEQ\" >> ../../ran",
        None,
    );
    c.config_node("central", &format!("broker = {}", b.addr()));
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1");
    fs::create_dir_all(c.path("spool/collect")).unwrap();
    for f in ["seen", "seen.log", "registers", "registers.log"] {
        fs::copy(fixtures.join(f), c.path(&format!("spool/collect/{f}"))).unwrap();
    }
    let d = c.start();
    assert!(
        wait_for(LONG, || d.log().contains("mqtt: subscribed")),
        "{}",
        d.log()
    );
    let log = d.log();
    assert!(log.contains("taken over from seen"), "{log}");
    assert!(
        log.contains("registers of 1 rules restored, through journal record 35"),
        "{log}"
    );
    for f in ["seen", "seen.log", "registers", "registers.log"] {
        assert!(!c.exists(&format!("spool/collect/{f}")), "{f} removed");
    }
    // Done before the upgrade: 7/55 (the old log), 11/1, 7/1 (the old table).
    for (stream, seq) in [(7, 55), (11, 1), (7, 1), (7, 56)] {
        publish(b.port, "crd/e/up", &emit_event("e", stream, seq, "up", ""));
    }
    assert!(
        wait_for(LONG, || c.exists("ran")
            && c.read("ran").lines().count() >= 1),
        "{}",
        d.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.read("ran"), "0000000000000007 56\n", "{}", d.log());
}
