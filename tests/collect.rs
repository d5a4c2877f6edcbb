//! The collector end to end: real edge and collector `crd` binaries, a
//! real mosquitto with persistence on a free loopback port, real `/bin/sh`
//! modules.

#![cfg(feature = "collector")]

mod common;
use common::*;
use std::fs;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(30);

fn edge_and_collector(tag: &str) -> (Sandbox, Sandbox, Broker) {
    let edge = Sandbox::new(&format!("{tag}-edge"));
    let central = Sandbox::new(&format!("{tag}-central"));
    let b = central.queueing_broker();
    (edge, central, b)
}

/// Edge crd -> broker -> collector crd: an edge module fires; the collector's
/// module subscribed to `crd/+/event/#` gets the payload and the environment, and
/// its response runs with the message on stdin and the check's output (300,000
/// bytes) whole on descriptor 3 (`CRD_CHECK_OUTPUT_FILE`) and cut to 16 KiB in
/// `CRD_CHECK_OUTPUT`, as on the edge.
#[test]
fn an_edge_event_reaches_a_collector_module_with_its_environment() {
    let (edge, central, b) = edge_and_collector("e2e");
    edge.module("Full", "echo 'disk 97%'\nexit 0", None);
    edge.config_node("edge1", &format!("broker = {}\ninterval = 1h", b.addr()));
    central.script(
        "modules/Sink/check",
        "cat > ../../payload\n\
         printf '%s|%s|%s|%s|%s|%s' \"$CRD_TOPIC\" \"$CRD_EVENT_NODE\" \"$CRD_EVENT_MODULE\" \
         \"$CRD_EVENT_KIND\" \"$CRD_EVENT_CODE\" \"$CRD_MESSAGE_ID\" > ../../check_env\n\
         echo checked\nhead -c 300000 /dev/zero | tr '\\0' x\nexit 0",
    );
    central.script(
        "modules/Sink/response",
        "cat > ../../response_stdin\n\
         wc -c < \"$CRD_CHECK_OUTPUT_FILE\" > ../../response_fd3\n\
         head -c 8 <&3 > ../../response_fd3_head\n\
         printf '%s|%s|%s' \"$CRD_CHECK_OUTPUT\" \"$CRD_EVENT_NODE\" \"$CRD_MODULE\" > ../../response_env",
    );
    central.write("modules/Sink/module.conf", "subscribe = crd/+/event/#\n");
    central.config_node(
        "central",
        &format!("broker = {}\noutput_limit = 1M", b.addr()),
    );
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
    let env = central.read("response_env");
    assert!(
        env.starts_with("checked\nxxx") && env.ends_with("xxx|edge1|Sink"),
        "{}",
        &env[..100.min(env.len())]
    );
    assert!((16_000..=16_500).contains(&env.len()), "{}", env.len());
    assert_eq!(central.read("response_fd3").trim(), "300008");
    assert_eq!(central.read("response_fd3_head"), "checked\n");
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
    let b = central.queueing_broker();
    central.script(
        "modules/Plant/response",
        "p=$(cat)\nprintf '%s\\n' \"$p\" >> ../../got",
    );
    central.write("modules/Plant/module.conf", "subscribe = plant/+/temp\n");
    central.config_node(
        "central",
        &format!("broker = {}\nmax_message = 1k", b.addr()),
    );
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
    // Two journaled and run (`other/topic` is not subscribed: the broker keeps it).
    assert_eq!(stat_of(&status, "collect_journaled"), 2, "{status}");
    assert_eq!(stat_of(&status, "collect_oversized"), 1, "{status}");
    assert_eq!(stat_of(&status, "collect_retained_skipped"), 1, "{status}");
    assert!(c.log().contains("over max_message"), "{}", c.log());
}

/// A crd event that arrives again (the broker's redelivery, or the edge sending it
/// again after a reconnect or a crash) does not run its response twice, also
/// across a restart of the collector (the table of events done is kept on disk).
/// Other payloads are at least once: the same text twice runs twice.
#[test]
fn a_crd_event_sent_again_runs_once_also_after_a_restart() {
    let central = Sandbox::new("dedup");
    let b = central.queueing_broker();
    // One write per run (O_APPEND): two runs at once cannot interleave.
    central.script(
        "modules/Sink/response",
        "p=$(cat)\nprintf '%s\\n' \"$p\" >> ../../runs",
    );
    central.write(
        "modules/Sink/module.conf",
        "subscribe = crd/+/event/# plain/#\n",
    );
    central.config_node("central", &format!("broker = {}", b.addr()));
    let ev = |seq: u64| {
        format!(
            r#"{{"node":"r1","stream":"00000000000000ab","seq":{seq},"ts":1,"module":"Disk","kind":"fired","code":0,"dur_ms":1,"out":"x"}}"#
        )
    };
    let publish = |topic: &str, msg: &str| {
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
            .status()
            .unwrap();
        assert!(st.success());
    };
    let mut c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    for seq in [1, 2, 1, 2, 1] {
        publish("crd/r1/event/Disk", &ev(seq));
    }
    publish("plain/x", "same");
    publish("plain/x", "same");
    let runs = || {
        central
            .read("runs")
            .lines()
            .filter(|l| !l.is_empty())
            .count()
    };
    assert!(wait_for(LONG, || runs() >= 4), "{}", c.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        runs(),
        4,
        "seq 1, seq 2, and the plain text twice:\n{}",
        central.read("runs")
    );
    assert_eq!(stat_of(&c.status(), "collect_duplicates"), 3);
    // A clean stop writes the table; after the restart, seq 2 is still done.
    c.signal(libc::SIGTERM);
    assert!(c.wait_exit(LONG).is_some_and(|s| s.success()));
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    publish("crd/r1/event/Disk", &ev(2));
    publish("crd/r1/event/Disk", &ev(3));
    assert!(wait_for(LONG, || runs() >= 5), "{}", c.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(runs(), 5, "only seq 3 is new:\n{}", central.read("runs"));
}

/// SIGKILL loop: 5,000 crd-event-shaped messages published (QoS 1) while the
/// collector is killed at random points 20 times and restarted. Every message is
/// processed; each (stream, seq)'s response runs once, except runs cut by a kill:
/// those in flight (at most `max_parallel`, 8) and those that ended in the loop
/// turn the kill cut, before their retirement was synced (at most 8 more), so at
/// most 16 per kill; the test prints how many and asserts that bound.
#[test]
fn sigkill_loop_while_collecting_loses_nothing_and_runs_each_event_once_but_for_kills() {
    const MESSAGES: u64 = 5000;
    const KILLS: u64 = 20;
    let central = Sandbox::new("ckill");
    let b = central.queueing_broker();
    // The response records each event it ran, one line each (appends of a few
    // bytes are atomic).
    central.script(
        "modules/Sink/response",
        "echo \"$CRD_EVENT_SEQ\" >> ../../ran",
    );
    central.write("modules/Sink/module.conf", "subscribe = crd/+/event/#\n");
    central.config_node(
        "central",
        &format!("broker = {}\nmax_parallel = 8", b.addr()),
    );
    // First start: the persistent session and its subscription exist from now on,
    // so the broker queues for the collector while it is dead.
    let mut c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    let lines: String = (1..=MESSAGES)
        .map(|seq| {
            format!(
                "{{\"node\":\"r1\",\"stream\":\"00000000000000cd\",\"seq\":{seq},\"ts\":1,\"module\":\"M\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":1,\"out\":\"\"}}\n"
            )
        })
        .collect();
    fs::write(central.path("messages"), lines).unwrap();
    let port = b.port;
    let publisher = std::thread::spawn({
        let file = central.path("messages");
        // -l: one message per line of stdin; the same client publishes all.
        move || publish_file(port, "crd/r1/event/M", &file)
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    let mut rng = seed;
    for _ in 0..KILLS {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(100 + rng % 300));
        c.signal(libc::SIGKILL);
        c.wait_exit(LONG).expect("killed");
        c = central.start();
    }
    publisher.join().unwrap();
    let ran = || -> Vec<u64> {
        central
            .read("ran")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let done = wait_for(Duration::from_secs(120), || {
        let mut r = ran();
        r.sort();
        r.dedup();
        r.len() as u64 == MESSAGES
    });
    let all = ran();
    let mut distinct = all.clone();
    distinct.sort();
    distinct.dedup();
    let missing: Vec<u64> = (1..=MESSAGES)
        .filter(|s| distinct.binary_search(s).is_err())
        .collect();
    assert!(
        done,
        "seed {seed}: {} of {MESSAGES} ran; missing {:?}...\n{}",
        distinct.len(),
        &missing[..missing.len().min(20)],
        c.status()
    );
    let again = all.len() as u64 - MESSAGES;
    println!(
        "collector kill loop (seed {seed}): {MESSAGES} events, {KILLS} kills, {again} responses ran again"
    );
    // In flight at a kill: at most 8 runs, plus those finished in the cut loop turn.
    assert!(
        again <= KILLS * 16,
        "seed {seed}: {again} responses ran twice"
    );
}

/// A collector sandbox: node `name`, a module `Sink` on `filter` in group `g`
/// whose response records the message id in `<dir>/ran-<name>`.
/// Retirements are synced in batches (`RETIRE_SYNC_INTERVAL`, 50 ms) but on
/// the loop's own timer: messages that are not crd events (no table of events
/// done covers them) finished and left alone for longer than that do not run
/// again after a SIGKILL and a restart.
#[test]
fn finished_plain_messages_do_not_run_again_after_a_sigkill() {
    let home = Sandbox::new("retire-home");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let sb = collector("retire", &b, "plain/#", &dir);
    let mut c = sb.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    publish_lines(b.port, "plain/x", 0, 300, &dir);
    assert!(
        wait_for(LONG, || ids(&dir, "retire").len() >= 300),
        "{}",
        c.log()
    );
    std::thread::sleep(Duration::from_millis(400));
    c.signal(libc::SIGKILL);
    c.wait_exit(LONG).expect("killed");
    let c = sb.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    std::thread::sleep(Duration::from_millis(1000));
    let ran = ids(&dir, "retire");
    assert_eq!(
        ran.len(),
        300,
        "each ran once: {} runs\n{}",
        ran.len(),
        c.log()
    );
}

fn collector(name: &str, b: &Broker, filter: &str, dir: &std::path::Path) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.script(
        "modules/Sink/response",
        &format!("echo \"$CRD_MESSAGE_ID\" >> {}/ran-{name}", dir.display()),
    );
    sb.write(
        "modules/Sink/module.conf",
        &format!("subscribe = {filter}\n"),
    );
    sb.config_node(name, &format!("broker = {}\nsubscribe_group = g", b.addr()));
    sb
}

/// Starts collector `c` once, until it subscribed, and stops it: the broker keeps
/// its persistent session and queues what is published next for it.
fn make_session(c: &Sandbox) {
    let mut d = c.start();
    assert!(
        wait_for(LONG, || d.log().contains("mqtt: subscribed")),
        "{}",
        d.log()
    );
    d.signal(libc::SIGTERM);
    d.wait_exit(LONG).expect("stopped");
}

fn publish_lines(port: u16, topic: &str, from: u64, to: u64, dir: &std::path::Path) {
    let file = dir.join(format!("lines-{from}"));
    let lines: String = (from..to).map(|n| format!("m{n}\n")).collect();
    fs::write(&file, lines).unwrap();
    publish_file(port, topic, &file);
}

/// Each line of `file` a QoS 1 message on `topic` (`mosquitto_pub -l`).
fn publish_file(port: u16, topic: &str, file: &std::path::Path) {
    let st = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-t",
            topic,
            "-l",
        ])
        .stdin(fs::File::open(file).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
}

fn ids(dir: &std::path::Path, name: &str) -> Vec<String> {
    fs::read_to_string(dir.join(format!("ran-{name}")))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Publishes messages `from..to` as `m<N>`, spread over topics `load/0` ..
/// `load/<topics - 1>` (one `mosquitto_pub -l` a topic).
fn publish_spread(port: u16, topics: u64, from: u64, to: u64, dir: &std::path::Path) {
    for t in 0..topics {
        let file = dir.join(format!("spread-{from}-{t}"));
        let lines: String = (from..to)
            .filter(|n| n % topics == t)
            .map(|n| format!("m{n}\n"))
            .collect();
        fs::write(&file, lines).unwrap();
        publish_file(port, &format!("load/{t}"), &file);
    }
}

/// Waits until each of `ds` counts `n` members in its groups.
fn grouped(ds: &[&Daemon], n: u64) {
    for d in ds {
        assert!(
            wait_for(LONG, || d.stat("collect_group_members") == n),
            "{}\n{}",
            d.status(),
            d.log()
        );
    }
}

/// A group: 2 and then 3 collectors, each subscribed to the whole stream,
/// split 10,000 messages over 40 topics by topic (the origin of a plain
/// message), each running at least 20 % of what it owned; one is killed and
/// restarted midway; none is lost, and `crd status` names the members.
#[test]
fn collectors_in_one_group_split_the_work_and_lose_nothing_when_one_dies() {
    let home = Sandbox::new("share");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let (c1, c2, c3) = (
        collector("share1", &b, "load/#", &dir),
        collector("share2", &b, "load/#", &dir),
        collector("share3", &b, "load/#", &dir),
    );
    let d1 = c1.start();
    let mut d2 = c2.start();
    for d in [&d1, &d2] {
        let whole = || d.log().contains("mqtt: subscribed to load/#");
        assert!(wait_for(LONG, whole), "{}", d.log());
    }
    grouped(&[&d1, &d2], 2);
    assert!(
        d1.status().contains("collect_groups: g=share1,share2"),
        "{}",
        d1.status()
    );
    publish_spread(b.port, 40, 0, 5000, &dir);
    let seen = |names: &[&str]| -> std::collections::HashSet<String> {
        names.iter().flat_map(|n| ids(&dir, n)).collect()
    };
    assert!(
        wait_for(Duration::from_secs(60), || seen(&["share1", "share2"])
            .len()
            == 5000),
        "{} of 5000\n{}",
        seen(&["share1", "share2"]).len(),
        d1.status()
    );
    let (n1, n2) = (ids(&dir, "share1").len(), ids(&dir, "share2").len());
    assert_eq!(n1 + n2, 5000, "each message once while nothing died");
    assert!(n1 >= 1000 && n2 >= 1000, "split {n1} / {n2}");
    // A third joins; the second is killed midway and comes back.
    let d3 = c3.start();
    grouped(&[&d1, &d2, &d3], 3);
    let before = [1, 2, 3].map(|i| ids(&dir, &format!("share{i}")).len());
    let publisher = {
        let (port, dir) = (b.port, dir.clone());
        std::thread::spawn(move || {
            publish_spread(port, 40, 5000, 10_000, &dir);
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    d2.signal(libc::SIGKILL);
    d2.wait_exit(LONG).expect("killed");
    drop(d2);
    std::thread::sleep(Duration::from_millis(500));
    let d2 = c2.start();
    publisher.join().unwrap();
    let all = || seen(&["share1", "share2", "share3"]);
    assert!(
        wait_for(Duration::from_secs(60), || all().len() == 10_000),
        "{} of 10000\n{}\n{}",
        all().len(),
        d2.status(),
        d3.status()
    );
    let after = [1, 2, 3].map(|i| ids(&dir, &format!("share{i}")).len());
    let took: Vec<usize> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    println!(
        "group: 5,000 split {n1}/{n2}; then 5,000 split {took:?} (runs, those again after the kill included)"
    );
    for (i, t) in took.iter().enumerate() {
        assert!(*t >= 1000, "collector {} took {t} of 5000", i + 1);
    }
    drop(d1);
}

/// The whole group stopped (SIGTERM, one member after the other) and 1,000
/// messages published while none runs; both started again: each message runs
/// once in the group (the last member to stop owns that backlog as the ghost,
/// in both members' order, and runs it once its live status is back). Again,
/// with the ghost started 5 s after the other, past the grace (2 x keepalive,
/// 4 s): the other announces it buried, and wherever that lands against the
/// ghost's return in the order, each ran once. Stopped again, 1,000 more, and
/// only the member that stopped first started: it holds the backlog for the
/// ghost, and buries it after the grace: every message ran once. Before each
/// stop the members have reported all they ran (nothing held for another):
/// a member stopped with work done but not yet reported has it run again
/// by the others (documented).
#[test]
fn a_whole_group_restarted_runs_its_backlog_once() {
    let home = Sandbox::new("whole");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let names = ["wg1", "wg2"];
    let sbs: Vec<Sandbox> = names
        .iter()
        .map(|n| {
            let sb = collector(n, &b, "load/#", &dir);
            sb.config_node(
                n,
                &format!("broker = {}\nsubscribe_group = g\nkeepalive = 2s", b.addr()),
            );
            sb
        })
        .collect();
    let runs = || names.iter().map(|n| ids(&dir, n).len()).sum::<usize>();
    let distinct = || {
        let all = names.iter().flat_map(|n| ids(&dir, n));
        all.collect::<std::collections::HashSet<_>>().len()
    };
    let stop = |ds: Vec<Daemon>| {
        // Settled: whatever ran is reported, nothing held for another.
        let settled = || ds.iter().all(|d| d.stat("collect_group_held") == 0);
        assert!(
            wait_for(LONG, settled),
            "{}\n{}",
            ds[0].log(),
            ds[ds.len() - 1].log()
        );
        for mut d in ds {
            d.signal(libc::SIGTERM);
            d.wait_exit(LONG).expect("stopped");
        }
    };
    let mut ds: Vec<Daemon> = sbs.iter().map(Sandbox::start).collect();
    grouped(&ds.iter().collect::<Vec<_>>(), 2);
    for (round, late) in [(1, 0), (2, 5)] {
        stop(ds);
        let to = round * 1000;
        publish_spread(b.port, 16, to - 1000, to, &dir);
        ds = vec![sbs[0].start()];
        std::thread::sleep(Duration::from_secs(late));
        ds.push(sbs[1].start());
        assert!(
            wait_for(LONG, || distinct() == to as usize),
            "{} of {to}\n{}\n{}",
            distinct(),
            ds[0].status(),
            ds[1].status()
        );
        grouped(&ds.iter().collect::<Vec<_>>(), 2);
        // Nothing more runs (a second run would come within this).
        std::thread::sleep(Duration::from_secs(2));
        let split = names.map(|n| ids(&dir, n).len());
        assert_eq!(
            runs(),
            to as usize,
            "each once in the group, split {split:?}"
        );
        let buried = ds[0].stat("collect_group_buried");
        println!("whole group restarted, wg2 {late} s late: {to} ran {split:?}, buried {buried}");
    }
    stop(ds);
    publish_spread(b.port, 16, 2000, 3000, &dir);
    let d1 = sbs[0].start();
    assert!(
        wait_for(LONG, || distinct() == 3000),
        "{} of 3000\n{}\n{}",
        distinct(),
        d1.status(),
        d1.log()
    );
    assert_eq!(runs(), 3000, "each once: {}", d1.status());
    assert_eq!(d1.stat("collect_group_buried"), 1, "{}", d1.status());
    assert!(
        d1.status().contains("collect_groups: g=wg1"),
        "{}",
        d1.status()
    );
}

/// A member SIGKILLed for good midway through 5,000 messages over 40 topics:
/// all 5,000 run; the share it held unfinished runs on the other two once the
/// broker published its will (keepalive 2 s: within 2 x keepalive of the
/// kill, printed); and what ran twice is at most what the dead member had
/// journaled and not yet reported done.
#[test]
fn a_member_killed_for_good_has_its_unfinished_share_taken_over() {
    let home = Sandbox::new("takeover");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let names = ["tk1", "tk2", "tk3"];
    let sbs: Vec<Sandbox> = names
        .iter()
        .map(|n| {
            let sb = collector(n, &b, "load/#", &dir);
            // A slow response: the victim has work in hand when it dies.
            let line = format!(
                "sleep 0.01; echo \"$CRD_MESSAGE_ID\" >> {}/ran-{n}",
                dir.display()
            );
            sb.script("modules/Sink/response", &line);
            sb.config_node(
                n,
                &format!("broker = {}\nsubscribe_group = g\nkeepalive = 2s", b.addr()),
            );
            sb
        })
        .collect();
    let mut ds: Vec<Daemon> = sbs.iter().map(Sandbox::start).collect();
    grouped(&ds.iter().collect::<Vec<_>>(), 3);
    publish_spread(b.port, 40, 0, 5000, &dir);
    let victim = "tk2";
    assert!(
        wait_for(LONG, || ids(&dir, victim).len() >= 200),
        "{}",
        ds[1].status()
    );
    ds[1].signal(libc::SIGKILL);
    let killed = std::time::Instant::now();
    ds[1].wait_exit(LONG).expect("killed");
    let others = [&ds[0], &ds[2]];
    assert!(
        wait_for(LONG, || others
            .iter()
            .all(|d| d.stat("collect_group_members") == 2)),
        "the will never came\n{}",
        ds[0].status()
    );
    let takeover = killed.elapsed();
    let seen = || -> std::collections::HashSet<String> {
        names.iter().flat_map(|n| ids(&dir, n)).collect()
    };
    assert!(
        wait_for(Duration::from_secs(90), || seen().len() == 5000),
        "{} of 5000\n{}\n{}",
        seen().len(),
        ds[0].status(),
        ds[2].status()
    );
    let runs: usize = names.iter().map(|n| ids(&dir, n).len()).sum();
    let taken: u64 = others
        .iter()
        .map(|d| d.stat("collect_group_taken_over") + d.stat("collect_group_reassigned"))
        .sum();
    println!(
        "takeover: members saw the will {} ms after the kill; {taken} jobs taken over; {} runs of 5,000 ({} again)",
        takeover.as_millis(),
        runs,
        runs - 5000
    );
    assert!(
        takeover <= Duration::from_secs(4) + Duration::from_millis(500),
        "{takeover:?}"
    );
    assert!(taken > 0, "nothing was held for the victim");
    assert!(
        runs - 5000 <= taken as usize,
        "ran again beyond what was taken over"
    );
    for d in ds.iter_mut() {
        d.signal(libc::SIGTERM);
    }
}

/// A collector of group `g1` whose rule module `Cnt` counts messages on
/// `site/+/load` by topic over 30 minutes and reacts above 150: its response
/// appends a line to `dir/reacted`.
fn counter(name: &str, b: &Broker, dir: &std::path::Path) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.script(
        "modules/Cnt/response",
        &format!(
            "echo \"$CRD_NODE $CRD_REGISTER_KEY\" >> {}/reacted",
            dir.display()
        ),
    );
    sb.write(
        "modules/Cnt/module.conf",
        "subscribe = site/+/load\nregister = count\nby = topic\nperiod = 30m\nabove = 150\n",
    );
    // A group started together: each takes its share at once.
    sb.config_node(
        name,
        &format!(
            "broker = {}\nsubscribe_group = g1\ngroup_join_wait = 0s",
            b.addr()
        ),
    );
    sb
}

/// Group member `name` with rule module `Cnt`: crd events on `crd/+/event/#`
/// counted by node over an hour, reacting above 300 (a line with the node in
/// `dir/reacted`); `extra` goes into its crd.conf.
fn node_counter(name: &str, b: &Broker, dir: &std::path::Path, extra: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.script(
        "modules/Cnt/response",
        &format!("echo \"$CRD_REGISTER_KEY\" >> {}/reacted", dir.display()),
    );
    sb.write(
        "modules/Cnt/module.conf",
        "subscribe = crd/+/event/#\nregister = count\nby = node\nperiod = 1h\nabove = 300\n",
    );
    let conf = format!("broker = {}\nsubscribe_group = g1\n{extra}", b.addr());
    sb.config_node(name, &conf);
    sb
}

/// Events `from..=to` of edge `node` (stream `stream`), one per line.
fn events_range(
    dir: &std::path::Path,
    node: &str,
    stream: u64,
    from: u64,
    to: u64,
) -> std::path::PathBuf {
    let file = dir.join(format!("events-{node}-{from}"));
    let lines: String = (from..=to)
        .map(|s| {
            format!(
                "{{\"node\":\"{node}\",\"stream\":\"{stream:016x}\",\"seq\":{s},\"ts\":1,\"module\":\"Load\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":0,\"out\":\"\"}}\n"
            )
        })
        .collect();
    fs::write(&file, lines).unwrap();
    file
}

/// The group contract for a rule by node: four edges, three members started
/// together; midway one member is SIGKILLed for good and a fourth joins.
/// The members there from the start hold, for each edge, the count a
/// recomputation from what the edges sent gives; the joiner, whose registers
/// hold only what came since it joined, owns nothing and says whom to ask;
/// each edge's crossing reacts once for the group.
#[test]
fn a_rule_by_node_keeps_exact_registers_when_a_member_dies_and_one_joins() {
    let home = Sandbox::new("gnode");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let first = "group_join_wait = 0s\n";
    let sbs: Vec<Sandbox> = (0..3)
        .map(|i| node_counter(&format!("gn{i}"), &b, &dir, first))
        .collect();
    let ds: Vec<Daemon> = sbs.iter().map(Sandbox::start).collect();
    grouped(&ds.iter().collect::<Vec<_>>(), 3);
    let edges = ["e0", "e1", "e2", "e3"];
    let send = |from: u64, to: u64| {
        for (i, e) in edges.iter().enumerate() {
            let f = events_range(&dir, e, 0x20 + i as u64, from, to);
            publish_file(b.port, &format!("crd/{e}/event/Load"), &f);
        }
    };
    let count = |sb: &Sandbox, e: &str| sb.run(&["register", "Cnt", e]).1;
    send(1, 250);
    for sb in &sbs {
        for e in edges {
            assert!(
                wait_for(LONG, || count(sb, e) == "250\n"),
                "{e}: {}",
                count(sb, e)
            );
        }
    }
    ds[2].signal(libc::SIGKILL);
    let joiner = node_counter("gn3", &b, &dir, "");
    let dj = joiner.start();
    assert!(
        wait_for(LONG, || dj.stat("collect_group_members") == 3
            && ds[0].stat("collect_group_members") == 3),
        "gn2 gone, gn3 in\n{}\n{}",
        dj.status(),
        ds[0].status()
    );
    assert!(
        dj.status().contains("g1=gn0,gn1,gn3(joining)"),
        "{}",
        dj.status()
    );
    send(251, 500);
    for sb in &sbs[..2] {
        for e in edges {
            assert!(
                wait_for(LONG, || count(sb, e) == "500\n"),
                "{e}: {}",
                count(sb, e)
            );
        }
    }
    let (code, out, err) = joiner.run(&["register", "Cnt", "e0"]);
    assert!(
        code != 0 && err.contains("still joining") && err.contains("ask gn0 gn1"),
        "{code} {out} {err}"
    );
    let reacted = || count_lines(&dir.join("reacted"));
    assert_eq!(settled(Duration::from_secs(2), reacted), 4, "once an edge");
    let mut nodes: Vec<String> = fs::read_to_string(dir.join("reacted"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    nodes.sort();
    assert_eq!(nodes, edges);
    assert_eq!(dj.stat("collect_group_owned"), 0, "the joiner owns nothing");
    let joining = |d: &Daemon| d.status().contains("collect_group_joining: yes");
    assert!(joining(&dj) && !joining(&ds[0]) && !joining(&ds[1]));
}

/// The group contract for rules: 200 messages on one topic give count 200 on
/// every member (the value one collector would hold) and one reaction for the
/// group, with 1, 2 and 3 members.
#[test]
fn a_group_counts_the_whole_stream_on_every_member_and_reacts_once() {
    for n in 1..=3usize {
        let home = Sandbox::new(&format!("gcount{n}"));
        let b = home.queueing_broker();
        let dir = home.path("out");
        fs::create_dir_all(&dir).unwrap();
        let sbs: Vec<Sandbox> = (0..n)
            .map(|i| counter(&format!("gc{n}{i}"), &b, &dir))
            .collect();
        let ds: Vec<Daemon> = sbs.iter().map(Sandbox::start).collect();
        grouped(&ds.iter().collect::<Vec<_>>(), n as u64);
        publish_lines(b.port, "site/n0/load", 0, 200, &dir);
        for (sb, d) in sbs.iter().zip(&ds) {
            let count = || sb.run(&["register", "Cnt", "site/n0/load"]).1;
            assert!(
                wait_for(LONG, || count() == "200\n"),
                "{n} members: {:?}\n{}",
                count(),
                d.status()
            );
        }
        let reacted = || count_lines(&dir.join("reacted"));
        assert_eq!(settled(Duration::from_secs(2), reacted), 1, "{n} members");
        let owned: u64 = ds.iter().map(|d| d.stat("collect_group_owned")).sum();
        assert_eq!(owned, 200, "each message decided by one owner");
    }
}

/// The group contract for crd events: 2,000 events of four edges run once in
/// the group, and 200 of them published again run nowhere, with 1 and 2
/// members (every member saw and marked every event).
#[test]
fn a_crd_event_sent_again_runs_nowhere_in_a_group() {
    for n in 1..=2usize {
        let home = Sandbox::new(&format!("gdedup{n}"));
        let b = home.queueing_broker();
        let dir = home.path("out");
        fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = (0..n).map(|i| format!("gd{n}{i}")).collect();
        let sbs: Vec<Sandbox> = names
            .iter()
            .map(|m| collector(m, &b, "crd/+/event/#", &dir))
            .collect();
        let ds: Vec<Daemon> = sbs.iter().map(Sandbox::start).collect();
        grouped(&ds.iter().collect::<Vec<_>>(), n as u64);
        let files: Vec<_> = (0..4)
            .map(|e| stream_events(&dir, &format!("e{e}"), 0x10 + e, 500))
            .collect();
        for (e, f) in files.iter().enumerate() {
            publish_file(b.port, &format!("crd/e{e}/event/Load"), f);
        }
        let runs = || names.iter().map(|m| ids(&dir, m).len()).sum::<usize>();
        assert!(
            wait_for(Duration::from_secs(60), || runs() >= 2000),
            "{} of 2000",
            runs()
        );
        // The first 50 events of each edge again, as a resend would.
        for (e, f) in files.iter().enumerate() {
            let again = dir.join(format!("again-{e}"));
            let text = fs::read_to_string(f).unwrap();
            let head: Vec<&str> = text.lines().take(50).collect();
            fs::write(&again, head.join("\n") + "\n").unwrap();
            publish_file(b.port, &format!("crd/e{e}/event/Load"), &again);
        }
        let dups = || ds.iter().map(|d| d.stat("collect_duplicates")).sum::<u64>();
        assert!(
            wait_for(LONG, || dups() >= 200 * n as u64),
            "{n} members: {} duplicates\n{}",
            dups(),
            ds[0].status()
        );
        assert_eq!(
            settled(Duration::from_secs(2), runs),
            2000,
            "{n} members: runs"
        );
        let mut all: Vec<String> = names.iter().flat_map(|m| ids(&dir, m)).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 2000, "each event once");
        if n == 2 {
            assert!(
                names.iter().all(|m| !ids(&dir, m).is_empty()),
                "both ran some"
            );
        }
    }
}

/// The broker stopped and restarted while the collector has a backlog queued for
/// it (the collector was stopped): nothing is lost.
#[test]
fn a_broker_restart_with_a_backlog_queued_loses_nothing() {
    let home = Sandbox::new("brestart");
    let mut b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let c = collector("brestart1", &b, "q/#", &dir);
    make_session(&c);
    publish_lines(b.port, "q/x", 0, 2000, &dir);
    b.restart();
    let d = c.start();
    assert!(
        wait_for(Duration::from_secs(60), || {
            let got: std::collections::HashSet<String> =
                ids(&dir, "brestart1").into_iter().collect();
            got.len() == 2000
        }),
        "{} of 2000\n{}",
        ids(&dir, "brestart1").len(),
        d.status()
    );
}

/// Presence: the collector tracks the fleet's retained statuses and last events;
/// `crd fleet` (and `--json`) lists them; a node going offline is a message like
/// any other, so a module subscribed to `crd/+/status` runs on it (a replayed
/// retained status does not run it).
#[test]
fn crd_fleet_lists_nodes_and_an_edge_going_offline_triggers_a_module() {
    let (edge, central, b) = edge_and_collector("fleet");
    edge.module("Full", "exit 0", None);
    edge.config_node("edge9", &format!("broker = {}\ninterval = 1h", b.addr()));
    central.script(
        "modules/Gone/check",
        "grep -q '\"state\":\"offline\"' || exit 1\nexit 0",
    );
    central.script("modules/Gone/response", "echo \"$CRD_TOPIC\" >> ../../gone");
    central.write("modules/Gone/module.conf", "subscribe = crd/+/status\n");
    central.script("modules/Sink/response", ":");
    central.write("modules/Sink/module.conf", "subscribe = crd/+/event/#\n");
    central.config_node("central", &format!("broker = {}", b.addr()));
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    let mut e = edge.start();
    let fleet = || central.run(&["fleet"]).1;
    assert!(
        wait_for(LONG, || fleet().lines().any(|l| l.starts_with("edge9")
            && l.contains("online")
            && l.contains("Full fired"))),
        "{}\n{}",
        fleet(),
        c.log()
    );
    let (code, json, err) = central.run(&["fleet", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        json.contains(r#""node":"edge9","state":"online""#),
        "{json}"
    );
    assert!(!central.exists("gone"), "online does not trigger Gone");
    e.signal(libc::SIGTERM);
    e.wait_exit(LONG).expect("edge stops");
    assert!(
        wait_for(LONG, || central.read("gone").contains("crd/edge9/status")),
        "{}",
        c.log()
    );
    assert!(
        fleet()
            .lines()
            .any(|l| l.starts_with("edge9") && l.contains("offline")),
        "{}",
        fleet()
    );
    // A restarted collector knows the fleet again from the retained statuses,
    // without running Gone on the replay. (Killed once Gone's run is retired in
    // the journal's checkpoint, at most 50 ms after it ended: one that ended
    // just before a crash runs again, as `finished_plain_messages_...` shows.)
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    let c = central.start();
    assert!(wait_for(LONG, || fleet().contains("edge9")), "{}", c.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(central.read("gone").lines().count(), 1, "{}", c.log());
    // A crd without subscribed modules says it collects nothing.
    let (code, _, err) = edge.run(&["fleet"]);
    assert_eq!(code, 1, "{err}");
}

/// Bad input from the bus: a 10 MB payload, a topic of 190 levels (mosquitto
/// refuses more than 200), one of 60 KB,
/// malformed JSON on an event topic, a flood of 300 oversized messages. Each is
/// counted, the log holds at most 10 lines a minute of them, and the collector
/// still runs what comes after.
#[test]
fn hostile_messages_are_counted_logged_at_a_bounded_rate_and_cost_nothing() {
    let central = Sandbox::new("hostile");
    let b = central.queueing_broker();
    central.script(
        "modules/Bad/response",
        "printf '%s\\n' \"${#CRD_TOPIC}\" >> ../../ran",
    );
    central.write(
        "modules/Bad/module.conf",
        "subscribe = bad/# crd/+/event/#\n",
    );
    central.config_node(
        "central",
        &format!("broker = {}\nmax_message = 64k", b.addr()),
    );
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("mqtt: subscribed")),
        "{}",
        c.log()
    );
    let port = b.port.to_string();
    let pubf = |topic: &str, file: &std::path::Path| {
        let st = std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-f"])
            .arg(file)
            .status()
            .unwrap();
        assert!(st.success(), "publish to a topic of {} bytes", topic.len());
    };
    let big = central.path("big");
    fs::write(&big, vec![b'z'; 10 << 20]).unwrap();
    pubf("bad/big", &big);
    let small = central.path("small");
    fs::write(&small, b"x").unwrap();
    // mosquitto refuses topics of more than 200 levels: 190 is as deep as it goes.
    let deep = format!("bad/{}x", "l/".repeat(188));
    pubf(&deep, &small);
    let wide = format!("bad/{}", "w".repeat(60_000));
    pubf(&wide, &small);
    let json = central.path("json");
    fs::write(&json, br#"{"node":"r1","stream":"#).unwrap();
    pubf("crd/r1/event/Broken", &json);
    let flood = central.path("flood");
    fs::write(&flood, vec![b'f'; 70_000]).unwrap();
    let lines: String = (0..300).map(|_| "f".repeat(70_000) + "\n").collect();
    fs::write(&flood, lines).unwrap();
    publish_file(b.port, "bad/flood", &flood);
    pubf("bad/after", &small);
    // deep, wide, json and after ran; big and the flood did not.
    assert!(
        wait_for(LONG, || central.read("ran").lines().count() >= 4
            && stat_of(&c.status(), "collect_oversized") == 301),
        "{}\n{}",
        central.read("ran"),
        c.status()
    );
    let ran: Vec<usize> = central
        .read("ran")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        ran.contains(&deep.len()) && ran.contains(&wide.len()),
        "{ran:?}"
    );
    assert_eq!(ran.len(), 4, "{ran:?}");
    // At most 10 a minute, each a warning and its error event's line.
    let logged = c.log().matches("over max_message").count();
    assert!(logged <= 20, "{logged} lines for 301 oversized messages");
    assert_eq!(stat_of(&c.status(), "collect_journal_depth"), 0);
    assert_eq!(stat_of(&c.status(), "collect_malformed_events"), 1);
    assert!(
        c.log()
            .contains("on `crd/r1/event/Broken` is not a crd event")
    );
}

/// A backlog larger than the collector's pause mark (`BACKLOG_RECORDS`), for a
/// module without a check (every message settled in the loop, no child to wake
/// it): it drains by itself, with nothing polling the daemon, and every message
/// becomes a `fired` event at the broker.
#[test]
fn a_backlog_past_the_pause_mark_drains_with_nothing_else_waking_the_loop() {
    let home = Sandbox::new("drain");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let c = Sandbox::new("drain1");
    fs::create_dir_all(c.path("modules/Hit")).unwrap();
    c.write("modules/Hit/module.conf", "subscribe = q/#\n");
    c.config_node("drain1", &format!("broker = {}", b.addr()));
    make_session(&c);
    const N: u64 = 10_000;
    for from in (0..N).step_by(2000) {
        publish_lines(b.port, "q/x", from, from + 2000, &dir);
    }
    let out = dir.join("events");
    let _sub = Subscriber::start(b.port, "crd/drain1/event/Hit", "t-drain", &out);
    let d = c.start();
    let fired = || {
        fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"fired\""))
            .count() as u64
    };
    // Only the log file is read meanwhile: no control request wakes the daemon.
    assert!(
        wait_for(LONG, || fired() >= N),
        "{} of {N} fired events\n{}",
        fired(),
        d.status()
    );
}

/// A backlog larger than the whole journal (1,000 messages of 1,000 bytes for
/// a journal of 512 KiB, a check that takes a while): the collector stops
/// reading at three quarters full and never drops a message it acknowledged;
/// one it had to refuse the broker sends again after a reconnect. Every message
/// runs its check.
#[test]
fn a_backlog_larger_than_the_journal_pauses_the_socket_and_loses_nothing() {
    let home = Sandbox::new("jfull");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let c = Sandbox::new("jfull1");
    c.script(
        "modules/Slow/check",
        &format!(
            "m=$(cat); echo \"${{m%%:*}}\" >> {}/ran; sleep 0.01; exit 1",
            dir.display()
        ),
    );
    c.write("modules/Slow/module.conf", "subscribe = q/#\n");
    c.config_node(
        "jfull1",
        &format!(
            "broker = {}\nmax_message = 1k\nmax_parallel = 2\nspool_size = 256k\n\
             spool_segment = 128k",
            b.addr()
        ),
    );
    make_session(&c);
    const N: usize = 1000;
    let lines: String = (0..N)
        .map(|n| format!("m{n}:{}\n", "x".repeat(990)))
        .collect();
    let file = dir.join("lines");
    fs::write(&file, lines).unwrap();
    publish_file(b.port, "q/x", &file);
    let d = c.start();
    let ran = || -> std::collections::HashSet<String> {
        fs::read_to_string(dir.join("ran"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let mut paused = false;
    let done = wait_for(Duration::from_secs(120), || {
        paused |= d.status().contains("collect_paused: yes");
        ran().len() == N
    });
    let status = d.status();
    assert!(done, "{} of {N} ran\n{status}\n{}", ran().len(), d.log());
    assert!(paused, "never paused\n{status}");
    assert!(!d.log().contains("spool full: dropped"), "{}", d.log());
}

/// A message no module matches any more: the broker keeps a persistent
/// session's subscriptions, so after a module's filter changed while crd was
/// down, messages queued on the old filter still arrive. Acknowledged (not
/// redelivered forever) and counted as unmatched; the new filter works.
#[test]
fn messages_on_a_filter_no_module_has_any_more_are_counted_and_acknowledged() {
    let home = Sandbox::new("unmatched");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let c = collector("unmatched1", &b, "old/#", &dir);
    make_session(&c);
    publish_lines(b.port, "old/x", 0, 5, &dir);
    c.write("modules/Sink/module.conf", "subscribe = new/#\n");
    let d = c.start();
    assert!(
        wait_for(LONG, || d.stat("collect_unmatched") == 5),
        "{}",
        d.status()
    );
    publish_lines(b.port, "new/x", 5, 6, &dir);
    assert!(
        wait_for(LONG, || ids(&dir, "unmatched1").len() == 1),
        "{}",
        d.log()
    );
    assert_eq!(d.stat("collect_journaled"), 1, "{}", d.status());
}

/// The table cells of an HTML page, row by row, as html5gum tokenizes them;
/// panics on a tokenizer error or a `<script>` element.
fn html_cells(html: &str) -> Vec<Vec<String>> {
    use html5gum::{Token, Tokenizer};
    let (mut rows, mut in_cell) = (Vec::<Vec<String>>::new(), false);
    for t in Tokenizer::new(html) {
        match t.unwrap() {
            Token::Error(e) => panic!("HTML error {e:?} in\n{html}"),
            Token::StartTag(t) if &*t.name == b"script" => panic!("a script element:\n{html}"),
            Token::StartTag(t) if &*t.name == b"tr" => rows.push(Vec::new()),
            Token::StartTag(t) if matches!(&**t.name, b"td" | b"th") => {
                in_cell = true;
                rows.last_mut().unwrap().push(String::new());
            }
            Token::EndTag(t) if matches!(&**t.name, b"td" | b"th") => in_cell = false,
            Token::String(s) if in_cell => {
                let cell = rows.last_mut().unwrap().last_mut().unwrap();
                cell.push_str(&String::from_utf8_lossy(&s));
            }
            _ => {}
        }
    }
    rows
}

/// `fleet_html` alone makes a crd watch the fleet and keep a page of it: a real
/// edge (a condition ON, one OFF), a node named `<script>` (its status
/// published by hand), an edge going offline. The page is read with an HTML
/// tokenizer (structure, escaping), rewritten as things change, and rendered
/// once by headless Chromium when it is installed (`.ci/run` installs it).
#[test]
fn the_fleet_page_shows_nodes_by_modules_and_escapes_what_it_shows() {
    let (edge, central, b) = edge_and_collector("page");
    edge.module("WanDown", "exit 0", None);
    edge.module("Disk", "exit 1", None);
    edge.config_node("edge7", &format!("broker = {}\ninterval = 1h", b.addr()));
    let page = central.path("www/fleet.html");
    fs::create_dir_all(page.parent().unwrap()).unwrap();
    central.config_node(
        "central",
        &format!("broker = {}\nfleet_html = {}", b.addr(), page.display()),
    );
    let c = central.start();
    assert!(
        wait_for(LONG, || c.log().contains("crd/+/state/+")),
        "{}",
        c.log()
    );
    let mut e = edge.start();
    let status = std::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &b.port.to_string(),
            "-q",
            "1",
            "-r",
        ])
        .args(["-t", "crd/<script>/status"])
        .args(["-m", r#"{"state":"online","version":"x&y"}"#])
        .status()
        .unwrap();
    assert!(status.success());
    let read = || fs::read_to_string(&page).unwrap_or_default();
    let row = |html: &str, node: &str| {
        html_cells(html)
            .into_iter()
            .find(|r| r.first().is_some_and(|n| n == node))
    };
    assert!(
        wait_for(LONG, || {
            let h = read();
            row(&h, "edge7").is_some_and(|r| r.contains(&"ON".to_string()))
                && row(&h, "<script>").is_some()
        }),
        "{}\n{}",
        read(),
        c.log()
    );
    let html = read();
    let rows = html_cells(&html);
    assert_eq!(
        rows[0],
        [
            "node",
            "state",
            "since",
            "version",
            "last event",
            "event age",
            "Disk",
            "WanDown"
        ]
    );
    let r = row(&html, "edge7").unwrap();
    assert_eq!(
        (r[1].as_str(), r[6].as_str(), r[7].as_str()),
        ("online", "off", "ON")
    );
    let s = row(&html, "<script>").unwrap();
    assert_eq!((s[1].as_str(), s[3].as_str()), ("online", "x&y"));
    assert!(
        html.contains("<td class=\"node\">&lt;script&gt;</td>"),
        "{html}"
    );
    assert!(html.contains("1 conditions ON"), "{html}");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&page).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "readable by the web server");
    // The edge goes offline: the page follows within its 5 s.
    e.signal(libc::SIGTERM);
    e.wait_exit(LONG).expect("edge stops");
    assert!(
        wait_for(LONG, || row(&read(), "edge7")
            .is_some_and(|r| r[1] == "offline")),
        "{}",
        read()
    );
    assert!(c.stat("collect_page_writes") >= 2);
    assert_eq!(c.stat("collect_page_errors"), 0);

    // Rendered by a browser, where there is one.
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    let Some(chromium) = chromium else {
        eprintln!("no Chromium here: the page was checked with the tokenizer only");
        return;
    };
    let shot = central.path("fleet.png");
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1000,400",
        ])
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let png = fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5000,
        "{} bytes",
        png.len()
    );
}

/// A tmpfs mounted for one test, unmounted (lazily) when dropped, before the
/// sandbox that holds it is removed.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        fs::create_dir_all(at).unwrap();
        let st = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs at {}", at.display());
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk under the journal: a collector whose `spool_dir` is a 4 MiB
/// tmpfs filled to about 400 KiB free gets 5,000 crd events of about 1 KiB at
/// QoS 1. The journal stops acknowledging and reading (the broker keeps the
/// rest), says so once in the log with the path and the free space and in
/// `crd status` (`collect_journal_error`), drops nothing, and resumes by
/// itself once the space is freed: the count rule reads exactly 5,000 (each
/// crd event counted once). Needs root to mount (CI runs as root).
#[test]
fn a_full_disk_pauses_the_journal_which_drops_nothing_and_resumes_by_itself() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to mount a tmpfs (CI runs as root)");
        return;
    }
    const N: u64 = 5000;
    let home = Sandbox::new("enospc");
    let b = home.queueing_broker();
    let c = Sandbox::new("enospc1");
    let _disk = Tmpfs::mount(&c.path("spool"), "4m");
    c.write(
        "modules/Cnt/module.conf",
        "subscribe = crd/+/event/#\nregister = count\nby = all\nperiod = 30m\n",
    );
    c.config_node(
        "enospc1",
        &format!("broker = {}\nspool_size = 2m", b.addr()),
    );
    let d = c.start();
    assert!(
        wait_for(LONG, || d.log().contains("mqtt: subscribed")),
        "{}",
        d.log()
    );
    // Fill the disk, then give back about 400 KiB.
    let fill = c.path("spool/fill");
    {
        use std::io::Write;
        let mut f = fs::File::create(&fill).unwrap();
        let chunk = vec![0x55u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(400 * 1024)).unwrap();
    }
    let out = "x".repeat(900);
    let lines: String = (1..=N)
        .map(|seq| {
            format!(
                "{{\"node\":\"r1\",\"stream\":\"00000000000000ef\",\"seq\":{seq},\"ts\":1,\"module\":\"M\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":1,\"out\":\"{out}\"}}\n"
            )
        })
        .collect();
    let file = home.path("events");
    fs::write(&file, lines).unwrap();
    let port = b.port;
    let publisher = std::thread::spawn(move || publish_file(port, "crd/r1/event/M", &file));
    let mut fault = String::new();
    let faulted = wait_for(LONG, || {
        let st = d.status();
        if st.contains("collect_journal_error: ENOSPC") {
            fault = st;
            true
        } else {
            false
        }
    });
    assert!(faulted, "no journal fault\n{}\n{}", d.status(), d.log());
    assert!(fault.contains("collect_paused: yes"), "{fault}");
    assert!(fault.contains("bytes free"), "{fault}");
    // The fault stands for a while: nothing acknowledged is dropped meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    fs::remove_file(&fill).unwrap();
    let count = || {
        let (_, out, _) = c.run(&["register", "Cnt"]);
        out.split_whitespace()
            .last()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let done = wait_for(Duration::from_secs(120), || count() == N);
    publisher.join().unwrap();
    let st = d.status();
    let log = d.log();
    assert!(done, "counted {} of {N}\n{st}\n{log}", count());
    assert!(!log.contains("spool full: dropped"), "{log}");
    assert_eq!(
        log.matches("collector: journal: ENOSPC").count(),
        1,
        "told once\n{log}"
    );
    assert!(log.contains("writes again after"), "{log}");
    assert!(!st.contains("collect_journal_error"), "cleared\n{st}");
    assert!(stat_of(&st, "collect_journal_faults") >= 1, "{st}");
    // Nothing more arrives later: each event counted once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(), N, "{}", d.status());
}

/// Names from the bus are untrusted text that reaches an operator's terminal:
/// a node named with an ESC sequence and a U+202E reversal is shown escaped
/// by `crd fleet`, `crd register` and `crd status`, never raw.
#[test]
fn names_from_the_bus_are_escaped_for_the_terminal() {
    let home = Sandbox::new("esc");
    let b = home.queueing_broker();
    let c = Sandbox::new("esc1");
    c.write(
        "modules/Cnt/module.conf",
        "subscribe = crd/+/event/#\nregister = count\nby = node\nperiod = 30m\n",
    );
    c.config_node("esc1", &format!("broker = {}", b.addr()));
    let d = c.start();
    assert!(
        wait_for(LONG, || d.log().contains("mqtt: subscribed")),
        "{}",
        d.log()
    );
    let node = "gw\\u001b]0;owned\\u0007\\u001b[2J\\u202elive";
    let event = format!(
        "{{\"node\":\"{node}\",\"stream\":\"00000000000000aa\",\"seq\":1,\"ts\":1,\"module\":\"M\\u202e\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":1,\"out\":\"\"}}\n"
    );
    let file = home.path("event");
    fs::write(&file, event).unwrap();
    publish_file(b.port, "crd/x/event/M", &file);
    assert!(
        wait_for(LONG, || stat_of(&d.status(), "collect_decided") == 1),
        "{}\n{}",
        d.status(),
        d.log()
    );
    let raw = |s: &str| s.contains('\u{1b}') || s.contains('\u{7}') || s.contains('\u{202e}');
    let (code, fleet, err) = c.run(&["fleet"]);
    assert_eq!(code, 0, "{err}");
    assert!(!raw(&fleet), "{fleet:?}");
    assert!(fleet.contains("gw\\u{001b}]0;owned\\u{0007}"), "{fleet}");
    let (code, reg, err) = c.run(&["register", "Cnt"]);
    assert_eq!(code, 0, "{err}");
    assert!(!raw(&reg), "{reg:?}");
    assert!(reg.contains("\\u{202e}live 1"), "{reg}");
    let st = d.status();
    assert!(!raw(&st), "{st:?}");
}

/// A run as a module's response wrote it: `$CRD_HOP $CRD_CAUSE
/// $CRD_EVENT_NODE $CRD_TOPIC`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Hop {
    hop: u32,
    cause: String,
    node: String,
    topic: String,
}

fn hop_lines(dir: &std::path::Path, name: &str) -> Vec<Hop> {
    let mut v: Vec<Hop> = ids(dir, name)
        .iter()
        .map(|l| {
            let mut w = l.split(' ').map(str::to_string);
            Hop {
                hop: w.next().unwrap_or_default().parse().unwrap_or(0),
                cause: w.next().unwrap_or_default(),
                node: w.next().unwrap_or_default(),
                topic: w.next().unwrap_or_default(),
            }
        })
        .collect();
    v.sort();
    v
}

const HOP_LINE: &str = "echo \"$CRD_HOP $CRD_CAUSE $CRD_EVENT_NODE $CRD_TOPIC\"";

/// A collector whose module `Loop` subscribes to `filter` (a check that exits
/// 0 when `check`); its response appends a `Hop` line to `dir/ran-NAME`.
fn looping(
    name: &str,
    b: &Broker,
    filter: &str,
    check: bool,
    extra: &str,
    dir: &std::path::Path,
) -> Sandbox {
    let sb = Sandbox::new(name);
    if check {
        sb.script("modules/Loop/check", "exit 0");
    }
    let line = format!("{HOP_LINE} >> {}/ran-{name}", dir.display());
    sb.script("modules/Loop/response", &line);
    sb.write(
        "modules/Loop/module.conf",
        &format!("subscribe = {filter}\n"),
    );
    sb.config_node(name, &format!("broker = {}\n{extra}", b.addr()));
    sb
}

/// `n` crd events of node `node` (stream ab, seqs 1..=n), one JSON a line.
fn edge_events(dir: &std::path::Path, node: &str, n: u64) -> std::path::PathBuf {
    stream_events(dir, node, 0xab, n)
}

/// `n` crd events of node `node` on `stream` (seqs 1..=n), one JSON a line.
fn stream_events(dir: &std::path::Path, node: &str, stream: u64, n: u64) -> std::path::PathBuf {
    events_range(dir, node, stream, 1, n)
}

/// Waits until `count` has not changed for `quiet` (at most `LONG`); its
/// last value.
fn settled(quiet: Duration, mut count: impl FnMut() -> usize) -> usize {
    let end = std::time::Instant::now() + LONG;
    let mut last = (count(), std::time::Instant::now());
    while std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
        let n = count();
        if n != last.0 {
            last = (n, std::time::Instant::now());
        } else if last.1.elapsed() >= quiet {
            break;
        }
    }
    last.0
}

/// Two collectors in one group with docs/collector.md's module on `crd/+/event/#` (a
/// check that exits 0, a response that appends a line): 1,500 edge events run
/// once each, and the members' own `fired`/`response` events (hop 1) run
/// nothing on the other member (`max_hops` 1 by default): counted, logged
/// with the chain, and in 10 s of quiet the run count does not grow.
#[test]
fn collectors_in_a_group_do_not_run_each_others_run_events() {
    let home = Sandbox::new("loop-group");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let group = "subscribe_group = g1";
    let c1 = looping("lg1", &b, "crd/+/event/#", true, group, &dir);
    let c2 = looping("lg2", &b, "crd/+/event/#", true, group, &dir);
    let (d1, d2) = (c1.start(), c2.start());
    for d in [&d1, &d2] {
        let up = || d.log().contains("mqtt: subscribed");
        assert!(wait_for(LONG, up), "{}", d.log());
    }
    publish_file(b.port, "crd/e0/event/Load", &edge_events(&dir, "e0", 1500));
    let runs = || hop_lines(&dir, "lg1").len() + hop_lines(&dir, "lg2").len();
    assert!(
        wait_for(Duration::from_secs(90), || runs() >= 1500),
        "{} of 1500 runs\n{}",
        runs(),
        d1.status()
    );
    // Every run's events reach the group: a member's own are skipped, the
    // other's stopped at max_hops.
    let seen = |d: &Daemon| d.stat("collect_own_skipped") + d.stat("collect_loop_dropped");
    let all = || (seen(&d1) + seen(&d2)) as usize;
    assert!(
        settled(Duration::from_secs(2), all) >= 1500,
        "{}",
        d1.status()
    );
    let before = runs();
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(runs(), before, "runs grew in 10 s of quiet");
    let ran = [hop_lines(&dir, "lg1"), hop_lines(&dir, "lg2")].concat();
    assert_eq!(ran.len(), 1500, "each edge event once");
    for r in &ran {
        assert_eq!(
            (r.hop, r.node.as_str()),
            (1, "e0"),
            "a run of a run event: {r:?}"
        );
    }
    let dropped = d1.stat("collect_loop_dropped") + d2.stat("collect_loop_dropped");
    assert!(dropped > 0, "{}", d1.status());
    let chain = "(max_hops 1), caused by e0/00000000000000ab/";
    assert!(
        [&d1, &d2].iter().any(|d| d.log().contains(chain)),
        "the chain is logged\n{}",
        d1.log()
    );
}

/// Two independent collectors on one broker, both on `crd/+/event/#` with
/// `max_hops = 3`: an edge event runs on both (hop 1), each runs the other's
/// run events (hop 2), then the other's runs of those (hop 3, the bound), and
/// the chain stops there: the hop-3 events are dropped, counted, and nothing
/// more runs.
#[test]
fn a_chain_between_two_collectors_runs_up_to_max_hops_and_stops() {
    let home = Sandbox::new("loop-chain");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let ca = looping("lca", &b, "crd/+/event/#", false, "max_hops = 3", &dir);
    let cb = looping("lcb", &b, "crd/+/event/#", false, "max_hops = 3", &dir);
    let (da, db) = (ca.start(), cb.start());
    for d in [&da, &db] {
        let up = || d.log().contains("mqtt: subscribed");
        assert!(wait_for(LONG, up), "{}", d.log());
    }
    publish_file(b.port, "crd/e0/event/Load", &edge_events(&dir, "e0", 1));
    let dropped = || {
        da.stat("collect_loop_dropped")
            .min(db.stat("collect_loop_dropped"))
    };
    assert!(
        wait_for(LONG, || dropped() > 0),
        "{}\n{}",
        da.status(),
        db.status()
    );
    let runs = || hop_lines(&dir, "lca").len() + hop_lines(&dir, "lcb").len();
    let n = settled(Duration::from_secs(3), runs);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(runs(), n, "the chain stopped");
    for (name, other) in [("lca", "lcb"), ("lcb", "lca")] {
        let got = hop_lines(&dir, name);
        let hops: std::collections::BTreeSet<u32> = got.iter().map(|r| r.hop).collect();
        assert_eq!(
            hops.into_iter().collect::<Vec<_>>(),
            [1, 2, 3],
            "{name}: {got:?}"
        );
        for r in &got {
            // CRD_CAUSE names the message the run is of.
            let (node, cause) = match r.hop {
                1 => ("e0", "e0/00000000000000ab/1".to_string()),
                _ => (other, format!("{other}/")),
            };
            assert_eq!(r.node, node, "{name}: {r:?}");
            assert!(r.cause.starts_with(&cause), "{name}: {r:?}");
        }
    }
}

/// A deliberate chain within the bound: a real edge's event reaches a site
/// collector (a hop-1 run, which also `crd emit`s), whose `response` event and
/// emit reach a central collector with `max_hops = 2`: they run there at hop
/// 2, caused by the site's records, and the central's own events stop there.
#[test]
fn an_edge_site_central_chain_runs_within_max_hops_2() {
    let home = Sandbox::new("loop-tiers");
    let b = home.queueing_broker();
    let dir = home.path("out");
    fs::create_dir_all(&dir).unwrap();
    let edge = Sandbox::new("loop-tiers-edge");
    edge.module("Wan", "exit 0", None);
    edge.config_node("edge1", &format!("broker = {}\ninterval = 1h", b.addr()));
    let site = looping("site", &b, "crd/edge1/event/#", false, "", &dir);
    let crd = std::env::var_os("CRD_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_crd").into());
    let runner = std::env::var("CRD_RUNNER").unwrap_or_default();
    site.script(
        "modules/Loop/response",
        &format!(
            "{HOP_LINE} >> {d}/ran-site\n{runner} {crd} -c {conf} emit alerts/wan \"edge1 is down\"",
            d = dir.display(),
            crd = crd.display(),
            conf = site.conf().display()
        ),
    );
    let filters = "crd/site/event/# crd/site/alerts/#";
    let central = looping("central", &b, filters, false, "max_hops = 2", &dir);
    let dc = central.start();
    let ds = site.start();
    for d in [&dc, &ds] {
        let up = || d.log().contains("mqtt: subscribed");
        assert!(wait_for(LONG, up), "{}", d.log());
    }
    let de = edge.start();
    let emitted = || {
        let c = hop_lines(&dir, "central");
        c.iter().any(|r| r.topic == "crd/site/alerts/wan") && c.len() >= 2
    };
    assert!(
        wait_for(LONG, emitted),
        "{:?}\n{:?}\n{}\n{}",
        hop_lines(&dir, "site"),
        hop_lines(&dir, "central"),
        ds.log(),
        dc.log()
    );
    settled(Duration::from_secs(2), || hop_lines(&dir, "central").len());
    let s = hop_lines(&dir, "site");
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!((s[0].hop, s[0].node.as_str()), (1, "edge1"), "{s:?}");
    for r in hop_lines(&dir, "central") {
        assert_eq!((r.hop, r.node.as_str()), (2, "site"), "{r:?}");
        assert!(r.cause.starts_with("site/"), "{r:?}");
    }
    assert_eq!(dc.stat("collect_loop_dropped"), 0);
    drop(de);
}
