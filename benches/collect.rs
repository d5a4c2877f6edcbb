//! `make bench-collect`: the collector's budgets against a local mosquitto, as a
//! table, each side by side with what a user would run without crd, in one run.
//!
//! 1. Throughput with a `/bin/true` check, `max_parallel = 8`: messages per second
//!    from the broker to a finished check, journaled and acknowledged, against
//!    `mosquitto_sub -q 1 ... | xargs -P 8 -n 1 /bin/true` (no journal, no
//!    dedup). Both take the same N messages queued at the broker for their
//!    persistent session, from their start to the last run.
//! 2. Without a check (every message a hit, no response): messages journaled and
//!    acknowledged per second, against `mosquitto_sub -q 1 > /dev/null` on the same
//!    broker (the broker's own ceiling); and the journal's fsyncs per 1,000.
//! 3. RSS with 10,000 distinct nodes (one crd event from each of 10,000 streams),
//!    and again halfway through and at the end of `RSS_SECONDS` more of them
//!    (default 600, the issue's ten minutes): flat.
//!
//! 4. Rules: a rule module (the mean of each of 1,000 nodes' loads,
//!    a condition that never holds) journaled, fed and acknowledged per second,
//!    against `mosquitto_sub -q 1 > /dev/null`; and RSS with 100,000 distinct
//!    keys fed through the default 10,000 kept, per kept key above the idle
//!    collector, then flat over `RSS_SECONDS` of new keys.
//!
//! Collector groups (`group`: members with `subscribe_group` and
//! `group_join_wait = 0s`, started together and grouped before anything is
//! timed; timed from the release, SIGCONT, of messages queued at the broker
//! while they were held still, SIGSTOP):
//!
//! 5. Two members against one collector (no group), a 50 ms `sleep` check (exit
//!    1: no response) and `max_parallel = 8` each, `N_G` messages over 64
//!    topics: messages per second until the runs over the members add up to
//!    `N_G`, and that sum exactly `N_G` (no message run twice or lost).
//! 6. Without a check: messages journaled per second by a member of a group of
//!    two (the slower member) against a single collector, `N` 5-byte payloads
//!    over 64 topics; beside them two collectors in no group on one stream.
//! 7. RSS of each of two members with 10,000 distinct nodes (one crd event from
//!    each of 10,000 streams): with what it holds for the other member, once
//!    the other's progress released that, and VmHWM.
//!
//! Parts 1, 2, 4, 5 and 6 alternate crd and the other tool (or setup) for
//! `BENCH_ROUNDS` rounds (default 3) and compare medians.
//!
//! Needs `mosquitto`, `mosquitto_sub`, `xargs`; `CRD_BIN` is the binary measured
//! (make bench-collect passes the x86_64 musl release build, which has the
//! collector).

mod common;
use common::{Proc, crd_bin, free_port, mosquitto, row, stat, status_kib};

use bytes::BytesMut;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const N: u64 = 20_000;

/// Publishes `payloads` to `topic` at QoS 1 and waits for every PUBACK: all of
/// them are at the broker when this returns (mosquitto_pub -l is not used: it
/// exits at the end of its input without sending what it still queues).
fn publish(port: u16, topic: &str, payloads: impl Iterator<Item = Vec<u8>>) -> u64 {
    publish_to(port, payloads.map(|p| (topic.to_string(), p)))
}

/// `publish` with a topic per message.
fn publish_to(port: u16, items: impl Iterator<Item = (String, Vec<u8>)>) -> u64 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut out = BytesMut::new();
    let mut c = Connect::new("bench-pub");
    c.clean_session = true;
    Packet::Connect(c).write(&mut out, 1 << 20).unwrap();
    s.write_all(&out).unwrap();
    let mut inb = BytesMut::new();
    let mut buf = [0u8; 65536];
    let mut read_one = |s: &mut std::net::TcpStream, inb: &mut BytesMut| loop {
        match Packet::read(inb, 1 << 20) {
            Ok(p) => return p,
            Err(_) => {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "broker closed");
                inb.extend_from_slice(&buf[..n]);
            }
        }
    };
    assert!(matches!(read_one(&mut s, &mut inb), Packet::ConnAck(_)));
    let (mut sent, mut acked, mut pkid) = (0u64, 0u64, 0u16);
    let mut window = 0;
    let mut it = items.peekable();
    while it.peek().is_some() || window > 0 {
        out.clear();
        while window < 100 && it.peek().is_some() {
            pkid = pkid % 60_000 + 1;
            let (topic, payload) = it.next().unwrap();
            let mut p = Publish::new(topic, QoS::AtLeastOnce, payload);
            p.pkid = pkid;
            Packet::Publish(p).write(&mut out, 1 << 20).unwrap();
            sent += 1;
            window += 1;
        }
        s.write_all(&out).unwrap();
        if let Packet::PubAck(_) = read_one(&mut s, &mut inb) {
            acked += 1;
            window -= 1;
        }
    }
    assert_eq!(sent, acked);
    sent
}

/// A collector in `work` with module `M` on `filter` (`check`: a symlink to
/// /bin/true, or none).
fn collector(work: &Path, port: u16, filter: &str, check: bool) -> Proc {
    collector_with(work, port, &format!("subscribe = {filter}\n"), check)
}

/// `collector` with module `M`'s whole `module.conf`.
fn collector_with(work: &Path, port: u16, module_conf: &str, check: bool) -> Proc {
    collector_conf(work, port, module_conf, check, "")
}

/// `collector_with` with `extra_conf` (whole lines) at the end of its crd.conf.
fn collector_conf(
    work: &Path,
    port: u16,
    module_conf: &str,
    check: bool,
    extra_conf: &str,
) -> Proc {
    use std::os::unix::fs::PermissionsExt;
    let m = work.join("modules/M");
    std::fs::create_dir_all(&m).unwrap();
    for d in [work, &work.join("modules"), &m] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(m.join("module.conf"), module_conf).unwrap();
    std::fs::set_permissions(
        m.join("module.conf"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    if check && !m.join("check").exists() {
        std::os::unix::fs::symlink("/bin/true", m.join("check")).unwrap();
    }
    let conf = work.join("crd.conf");
    std::fs::write(
        &conf,
        format!(
            "node = {node}\nmodules_dir = {}\nspool_dir = {}\ncontrol_socket = {}\n\
             broker = 127.0.0.1:{port}\nmax_parallel = 8\nspool_size = 64M\nlog_level = warn\n\
             {extra_conf}",
            work.join("modules").display(),
            work.join("spool").display(),
            work.join("crd.sock").display(),
            node = work.file_name().unwrap().to_string_lossy(),
        ),
    )
    .unwrap();
    let c = Command::new(crd_bin())
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("crd.log")).unwrap())
        .spawn()
        .unwrap();
    Proc(c)
}

fn wait_until(limit: Duration, ok: impl FnMut() -> bool) {
    wait_every(Duration::from_millis(20), limit, ok)
}

/// `wait_until` asking every `step`: a timed run is asked every 2 ms, so the
/// asking adds at most 2 ms to a run of a few hundred (20 ms was up to 7%).
fn wait_every(step: Duration, limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(step);
    }
}

/// Starts a collector once so the broker keeps a session and a subscription for
/// it, then stops it: what is published next is queued for it.
fn make_session(work: &Path, port: u16, module_conf: &str, check: bool) {
    let p = collector_with(work, port, module_conf, check);
    wait_until(Duration::from_secs(10), || {
        stat(work, "mqtt_connects") == Some(1)
            && std::fs::read_to_string(work.join("crd.log"))
                .is_ok_and(|_| stat(work, "collect_received").is_some())
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(p);
}

fn mosquitto_sub(port: u16, id: &str, topic: &str, count: Option<u64>) -> Command {
    let mut c = Command::new("mosquitto_sub");
    c.args([
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-q",
        "1",
        "-c",
        "-i",
        id,
        "-t",
        topic,
    ]);
    match count {
        Some(n) => c.args(["-C", &n.to_string()]),
        None => c.arg("-E"),
    };
    c
}

/// The three rows of a side-by-side comparison: crd's rates, the other tool's
/// (`other`, called `name` in the ratio), and the ratio of the medians against
/// `budget` (a minimum).
fn compare_rows(
    crd_what: &str,
    crd: &mut [f64],
    (other, name): (&str, &str),
    rates: &mut [f64],
    budget: f64,
) {
    let (c, cs) = spread(crd);
    let (o, os) = spread(rates);
    row(crd_what, cs, "-");
    row(&format!("  {other}"), os, "-");
    row(
        &format!("  ratio crd / {name} (medians)"),
        format!("{:.2}", c / o),
        &format!(">= {budget:.2}"),
    );
    let metric = crd_what.split(": crd").next().unwrap_or(crd_what);
    common::record(
        "collect",
        metric,
        "messages/s",
        c,
        other,
        o,
        "higher",
        &format!(">= {budget:.2}"),
    );
}

fn msgs() -> Box<dyn Iterator<Item = Vec<u8>>> {
    Box::new((0..N).map(|i| format!("m{i}").into_bytes()))
}

/// `cargo bench --bench collect [throughput] [journal] [rss] [rules] [group]`:
/// the parts named, or all five; `group-runs`, `group-journal` and
/// `group-rss` name parts 5, 6 and 7 alone.
fn main() {
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-collect");
    let _ = std::fs::remove_dir_all(&base);
    let port = free_port();
    let _broker = mosquitto(
        &base.join("broker"),
        port,
        "max_queued_messages 0\nmax_inflight_messages 100\n",
    );
    println!(
        "{:<60} {:>24}  budget",
        "collector benchmark (local mosquitto, QoS 1)", "value"
    );
    if want("throughput") {
        throughput(&base, port);
    }
    if want("journal") {
        journal(&base, port);
    }
    if want("rss") {
        rss(&base, port);
    }
    if want("rules") {
        rules(&base, port);
    }
    if want("group") || want("group-runs") {
        group_runs(&base, port);
    }
    if want("group") || want("group-journal") {
        group_journal(&base, port);
    }
    if want("group") || want("group-rss") {
        group_rss(&base, port);
    }
}

/// A rule module's conf on `filter`: the mean of `value` per `by`, a condition
/// that never holds (the register path alone is measured).
fn rule_conf(filter: &str, value: &str, by: &str) -> String {
    format!(
        "subscribe = {filter}\nregister = avg\nvalue = {value}\nperiod = 10m\nby = {by}\n\
         above = 1e15\n"
    )
}

/// Part 4, rules: the register path (journal, register, condition, PUBACK)
/// against `mosquitto_sub -q 1 > /dev/null`; RSS with 100,000 distinct keys
/// through the default `register_keys` (10,000), then flat.
fn rules(base: &Path, port: u16) {
    let (mut crd, mut sub, _) = against_sub(
        base,
        port,
        "r",
        &|| Box::new(loads()),
        &|filter| rule_conf(filter, "message", "node"),
        &|w| {
            stat(w, "collect_journaled") == Some(N)
                && stat(w, "collect_journal_depth") == Some(0)
                && stat(w, "rule_M_keys") == Some(1000)
        },
    );
    compare_rows(
        &format!("rule (avg by node, 1,000 nodes), {N} queued: crd"),
        &mut crd,
        ("mosquitto_sub -q 1 > /dev/null", "mosquitto_sub"),
        &mut sub,
        0.8,
    );

    // RSS: 100,000 distinct keys (topics) through register_keys = 10,000.
    let w = base.join("c7");
    let p = collector_with(&w, port, &rule_conf("k/#", "v", "topic"), false);
    wait_until(Duration::from_secs(10), || {
        stat(&w, "mqtt_connects") == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    let idle = status_kib(p.0.id(), "VmRSS");
    let mut fed = 0u64;
    let feed = |fed: &mut u64| {
        let from = *fed;
        publish_to(
            port,
            (from..from + 100_000).map(|k| {
                (
                    format!("k/{k}"),
                    format!("{{\"v\":{}}}", k % 50).into_bytes(),
                )
            }),
        );
        *fed += 100_000;
        wait_until(Duration::from_secs(600), || {
            stat(&w, "collect_journaled") == Some(*fed)
                && stat(&w, "collect_journal_depth") == Some(0)
        });
    };
    feed(&mut fed);
    assert_eq!(stat(&w, "rule_M_keys"), Some(10_000));
    let rss0 = status_kib(p.0.id(), "VmRSS");
    let secs: u64 = std::env::var("RSS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let start = Instant::now();
    let mut half = None;
    while start.elapsed() < Duration::from_secs(secs) {
        feed(&mut fed);
        if half.is_none() && start.elapsed() >= Duration::from_secs(secs / 2) {
            half = Some((status_kib(p.0.id(), "VmRSS"), fed));
        }
    }
    let rss1 = status_kib(p.0.id(), "VmRSS");
    let hwm = status_kib(p.0.id(), "VmHWM");
    let per_key = |kib: u64| (kib.saturating_sub(idle) * 1024) / 10_000;
    row(
        "rule collector VmRSS connected, idle",
        format!("{idle} KiB"),
        "-",
    );
    row(
        "  after 100,000 distinct keys (10,000 kept, avg)",
        format!("{rss0} KiB"),
        "-",
    );
    row(
        "  above idle, per kept key",
        format!("{} B", per_key(rss0)),
        "<= 256 B",
    );
    if let Some((kib, n)) = half {
        row(
            &format!("  after {} s more ({n} keys fed in all)", secs / 2),
            format!("{kib} KiB"),
            "-",
        );
    }
    row(
        &format!("  after {secs} s more ({fed} keys fed in all)"),
        format!("{rss1} KiB ({} B a key)", per_key(rss1)),
        "flat",
    );
    row("  VmHWM", format!("{hwm} KiB"), "-");
    drop(p);
}

/// Rounds of each side-by-side comparison, alternating (`BENCH_ROUNDS`, default
/// 3); the ratio is of the medians.
fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// "median (min-max)" of rates per second.
fn spread(v: &mut [f64]) -> (f64, String) {
    v.sort_by(f64::total_cmp);
    let m = v[v.len() / 2];
    (m, format!("{m:.0}/s ({:.0}-{:.0})", v[0], v[v.len() - 1]))
}

/// 1. /bin/true per message: crd against mosquitto_sub | xargs -P 8.
fn throughput(base: &Path, port: u16) {
    let (mut crd, mut xargs) = (Vec::new(), Vec::new());
    for r in 0..rounds() {
        let w = base.join(format!("c1-{r}"));
        let filter = format!("b1-{r}/#");
        make_session(&w, port, &format!("subscribe = {filter}\n"), true);
        assert_eq!(publish(port, &format!("b1-{r}/x"), msgs()), N);
        let t = Instant::now();
        let p = collector(&w, port, &filter, true);
        wait_until(Duration::from_secs(600), || {
            stat(&w, "collect_runs") == Some(N) && stat(&w, "collect_running") == Some(0)
        });
        crd.push(N as f64 / t.elapsed().as_secs_f64());
        drop(p);

        let id = format!("bench-xargs-{r}");
        let filter = format!("b2-{r}/#");
        assert!(
            mosquitto_sub(port, &id, &filter, None)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(publish(port, &format!("b2-{r}/x"), msgs()), N);
        let t = Instant::now();
        let st = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "mosquitto_sub -h 127.0.0.1 -p {port} -q 1 -c -i {id} -t '{filter}' -C {N} \
                 | xargs -P 8 -n 1 /bin/true"
            ))
            .status()
            .unwrap();
        assert!(st.success());
        xargs.push(N as f64 / t.elapsed().as_secs_f64());
    }
    compare_rows(
        &format!("/bin/true per message, {N} queued: crd (journaled, acked)"),
        &mut crd,
        ("mosquitto_sub -q 1 | xargs -P 8 -n 1 /bin/true", "xargs"),
        &mut xargs,
        1.0,
    );
}

/// 2. No check: journaled and acknowledged, against mosquitto_sub > /dev/null.
fn journal(base: &Path, port: u16) {
    journal_of(base, port, "5-byte payloads", "j", &msgs);
    journal_of(base, port, "crd events of 1,000 nodes", "je", &|| {
        Box::new(loads())
    });
}

/// `BENCH_ROUNDS` rounds of: N `payloads` queued for a collector whose module
/// `M` has `conf(filter)`, timed from its start until `done`; then the same N
/// queued for `mosquitto_sub -q 1 > /dev/null`. Returns both rates and crd's
/// journal fsyncs per 1,000 messages, per round.
fn against_sub(
    base: &Path,
    port: u16,
    tag: &str,
    payloads: &Payloads,
    conf: &dyn Fn(&str) -> String,
    done: &dyn Fn(&Path) -> bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut crd, mut sub, mut fsyncs) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds() {
        let w = base.join(format!("c2{tag}-{r}"));
        let filter = format!("b3{tag}-{r}/#");
        let conf = conf(&filter);
        make_session(&w, port, &conf, false);
        assert_eq!(publish(port, &format!("b3{tag}-{r}/x"), payloads()), N);
        let t = Instant::now();
        let p = collector_with(&w, port, &conf, false);
        wait_every(Duration::from_millis(2), Duration::from_secs(600), || {
            done(&w)
        });
        crd.push(N as f64 / t.elapsed().as_secs_f64());
        fsyncs.push(stat(&w, "collect_journal_fsyncs").unwrap_or(0) as f64 * 1000.0 / N as f64);
        drop(p);

        let id = format!("bench-null{tag}-{r}");
        let filter = format!("b4{tag}-{r}/#");
        assert!(
            mosquitto_sub(port, &id, &filter, None)
                .status()
                .unwrap()
                .success()
        );
        assert_eq!(publish(port, &format!("b4{tag}-{r}/x"), payloads()), N);
        let t = Instant::now();
        let st = mosquitto_sub(port, &id, &filter, Some(N))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        sub.push(N as f64 / t.elapsed().as_secs_f64());
    }
    (crd, sub, fsyncs)
}

/// crd `emit` events from 1,000 nodes (about 230 bytes), a load each.
fn loads() -> impl Iterator<Item = Vec<u8>> {
    (0..N).map(|i| {
        let node = i % 1000;
        format!(
            "{{\"node\":\"n{node}\",\"stream\":\"{:016x}\",\"seq\":{},\"ts\":1,\
             \"module\":\"load\",\"kind\":\"emit\",\"code\":0,\"dur_ms\":0,\"message\":\"{}\"}}",
            node + 1,
            i / 1000 + 1,
            i % 97
        )
        .into_bytes()
    })
}

type Payloads = dyn Fn() -> Box<dyn Iterator<Item = Vec<u8>>>;

fn journal_of(base: &Path, port: u16, what: &str, tag: &str, payloads: &Payloads) {
    let (mut crd, mut sub, mut fsyncs) = against_sub(
        base,
        port,
        tag,
        payloads,
        &|filter| format!("subscribe = {filter}\n"),
        &|w| stat(w, "collect_journaled") == Some(N),
    );
    fsyncs.sort_by(f64::total_cmp);
    compare_rows(
        &format!("no check, {N} queued, {what}: crd journaled and acked"),
        &mut crd,
        ("mosquitto_sub -q 1 > /dev/null", "mosquitto_sub"),
        &mut sub,
        0.8,
    );
    row(
        "  journal fsyncs per 1,000 messages (median)",
        format!("{:.1}", fsyncs[fsyncs.len() / 2]),
        "-",
    );
}

fn rss(base: &Path, port: u16) {
    // 3. RSS with 10,000 distinct nodes, then flat.
    let w3 = base.join("c3");
    let p = collector(&w3, port, "crd/+/event/#", false);
    wait_until(Duration::from_secs(10), || {
        stat(&w3, "mqtt_connects") == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    let rss_start = status_kib(p.0.id(), "VmRSS");
    publish(port, "crd/n/event/M", (1..=10_000).map(|n| event(n, 1)));
    wait_until(Duration::from_secs(600), || {
        stat(&w3, "collect_seen_streams") == Some(10_000)
    });
    let rss0 = status_kib(p.0.id(), "VmRSS");
    let secs: u64 = std::env::var("RSS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let start = Instant::now();
    let (half, end) = (
        start + Duration::from_secs(secs / 2),
        start + Duration::from_secs(secs),
    );
    let mut seq = 1;
    let mut rss_half = None;
    while Instant::now() < end {
        seq += 1;
        publish(port, "crd/n/event/M", (1..=10_000).map(|n| event(n, seq)));
        if rss_half.is_none() && Instant::now() >= half {
            rss_half = Some((status_kib(p.0.id(), "VmRSS"), seq - 1));
        }
    }
    wait_until(Duration::from_secs(600), || {
        stat(&w3, "collect_journal_depth") == Some(0)
    });
    let rss1 = status_kib(p.0.id(), "VmRSS");
    let hwm = status_kib(p.0.id(), "VmHWM");
    row(
        "collector VmRSS connected, no node seen yet",
        format!("{rss_start} KiB"),
        "-",
    );
    row(
        "collector VmRSS after 10,000 nodes' first events",
        format!("{rss0} KiB"),
        "<= 4096 KiB",
    );
    if let Some((rss, rounds)) = rss_half {
        row(
            &format!("  after {} s more ({rounds} rounds of 10,000)", secs / 2),
            format!("{rss} KiB"),
            "-",
        );
    }
    row(
        &format!("  after {secs} s more ({} rounds of 10,000)", seq - 1),
        format!("{rss1} KiB"),
        "flat",
    );
    row("  VmHWM", format!("{hwm} KiB"), "<= 4096 KiB");
    drop(p);

    // The same 10,000 nodes to a module with a check that fires for each: a
    // firing state kept per origin (a later `cleared` needs it).
    let w4 = base.join("c4");
    let p = collector(&w4, port, "crd/+/event/#", true);
    wait_until(Duration::from_secs(10), || {
        stat(&w4, "mqtt_connects") == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
    publish(port, "crd/n/event/M", (1..=10_000).map(|n| event(n, 1)));
    wait_until(Duration::from_secs(600), || {
        stat(&w4, "collect_journal_depth") == Some(0)
    });
    assert_eq!(stat(&w4, "collect_origins"), Some(10_000));
    let rss = status_kib(p.0.id(), "VmRSS");
    let hwm = status_kib(p.0.id(), "VmHWM");
    row(
        "with a check firing for each node (10,000 origin states)",
        format!("{rss} KiB"),
        "<= 4096 KiB",
    );
    row("  VmHWM", format!("{hwm} KiB"), "<= 4096 KiB");
    drop(p);
}

/// A crd event from node `n<node>`, stream `node`.
fn event(node: u64, seq: u64) -> Vec<u8> {
    format!(
        "{{\"node\":\"n{node}\",\"stream\":\"{node:016x}\",\"seq\":{seq},\"ts\":1,\
         \"module\":\"M\",\"kind\":\"fired\",\"code\":0,\"dur_ms\":1,\"out\":\"\"}}"
    )
    .into_bytes()
}

/// Messages of part 5's two-members-against-one rows: a 50 ms check each, so
/// one collector at 8 runs at once takes about 12 s.
const N_G: u64 = 2_000;
/// Topics parts 5 and 6 spread their messages over: the keys the members
/// split. A fleet has thousands (one a node and module); with 64, the
/// rendezvous split alone left one member 53-56 % of the runs, capping two
/// members at 1.77-1.94 times one before any cost of the group.
const TOPICS: u64 = 1_000;

/// A word or a number from the daemon's status, as text (`stat` reads numbers).
fn stat_text(work: &Path, key: &str) -> Option<String> {
    use crd::host::control::{Request, Response, call};
    let req = Request::Status { json: false };
    let Ok(Response::Text(text)) = call(&work.join("crd.sock"), &req) else {
        return None;
    };
    text.lines()
        .find_map(|l| Some(l.strip_prefix(&format!("{key}: "))?.trim().to_string()))
}

/// The crd.conf lines of a member of group `name` that takes its share at
/// once (the members start together).
fn member_conf(name: &str) -> String {
    format!("subscribe_group = {name}\ngroup_join_wait = 0s\n")
}

/// Waits until every one of `works` counts `n` members in its group and is
/// not joining.
fn grouped(works: &[&Path], n: u64) {
    for w in works {
        wait_until(Duration::from_secs(30), || {
            stat(w, "collect_group_members") == Some(n)
                && stat_text(w, "collect_group_joining").as_deref() == Some("no")
        });
    }
}

/// Waits until the collector in `work` is connected and (300 ms later, as
/// `make_session`) subscribed.
fn connected(work: &Path) {
    wait_until(Duration::from_secs(10), || {
        stat(work, "mqtt_connects") == Some(1)
    });
    std::thread::sleep(Duration::from_millis(300));
}

/// Sends `sig` to each of `ps`: SIGSTOP holds collectors still (the broker
/// queues what is published meanwhile, and a group keeps its members: no
/// status changes), SIGCONT lets them go.
fn signal_all(ps: &[&Proc], sig: libc::c_int) {
    for p in ps {
        crd::child::sys::kill_pid(p.0.id(), sig).unwrap();
    }
}

/// `n` plain messages `m<i>`, spread round-robin over `TOPICS` topics under
/// `prefix`.
fn spread_msgs(prefix: &str, n: u64) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
    (0..n).map(move |i| {
        (
            format!("{prefix}/t{}", i % TOPICS),
            format!("m{i}").into_bytes(),
        )
    })
}

/// Module `M`'s check in `work`: 50 ms of I/O-bound work that finds the
/// condition absent (exit 1: no response runs).
fn sleep_check(work: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let m = work.join("modules/M");
    std::fs::create_dir_all(&m).unwrap();
    let check = m.join("check");
    std::fs::write(&check, "#!/bin/sh\nsleep 0.05\nexit 1\n").unwrap();
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Holds `ps` (in `works`) still, publishes `N_G` messages over `TOPICS`
/// topics under `prefix`, lets them go and waits until their runs add up to
/// `N_G` with none running: messages per second from their release.
///
/// Held still rather than stopped and started again as `throughput` does: a
/// member stopped says `offline`, and each member restarted reads the other's
/// `offline` before the messages queued meanwhile, so it is the only member
/// they were journaled under and runs them all (tried: 2,000 runs on each of
/// two members for 2,000 messages, stopped one after the other or at once).
fn timed_runs(port: u16, works: &[&Path], ps: &[&Proc], prefix: &str) -> f64 {
    signal_all(ps, libc::SIGSTOP);
    assert_eq!(publish_to(port, spread_msgs(prefix, N_G)), N_G);
    let t = Instant::now();
    signal_all(ps, libc::SIGCONT);
    wait_until(Duration::from_secs(600), || {
        let runs: u64 = works
            .iter()
            .map(|w| stat(w, "collect_runs").unwrap_or(0))
            .sum();
        runs >= N_G && works.iter().all(|w| stat(w, "collect_running") == Some(0))
    });
    N_G as f64 / t.elapsed().as_secs_f64()
}

/// Part 5, a 50 ms check per message, `max_parallel = 8`: two members of a group
/// against one collector (no group), alternating, from the release of the
/// messages queued for them until the last run.
fn group_runs(base: &Path, port: u16) {
    let (mut one, mut two) = (Vec::new(), Vec::new());
    let (mut sums, mut splits, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds() {
        let w = base.join(format!("g1-{r}"));
        let prefix = format!("gb1-{r}");
        sleep_check(&w);
        let p = collector_conf(&w, port, &format!("subscribe = {prefix}/#\n"), false, "");
        connected(&w);
        one.push(timed_runs(port, &[&w], &[&p], &prefix));
        assert_eq!(stat(&w, "collect_runs"), Some(N_G));
        drop(p);

        let (wa, wb) = (base.join(format!("g2a-{r}")), base.join(format!("g2b-{r}")));
        let prefix = format!("gb2-{r}");
        let conf = format!("subscribe = {prefix}/#\n");
        let members = member_conf(&format!("gr-{r}"));
        sleep_check(&wa);
        sleep_check(&wb);
        let pa = collector_conf(&wa, port, &conf, false, &members);
        let pb = collector_conf(&wb, port, &conf, false, &members);
        grouped(&[&wa, &wb], 2);
        two.push(timed_runs(port, &[&wa, &wb], &[&pa, &pb], &prefix));
        // A progress marker from each (one a second) releases what the other
        // holds for it; then nothing more may run.
        std::thread::sleep(Duration::from_millis(1500));
        let runs = [&wa, &wb].map(|w| stat(w, "collect_runs").unwrap_or(0));
        let owned = [&wa, &wb].map(|w| stat(w, "collect_group_owned").unwrap_or(0));
        let held = [&wa, &wb].map(|w| stat(w, "collect_group_held").unwrap_or(0));
        assert!(
            owned.iter().all(|&o| o > 0),
            "each member owns a share: {owned:?}"
        );
        assert_eq!(runs[0] + runs[1], N_G, "runs per member {runs:?}");
        assert_eq!(held, [0, 0], "held for the other member");
        sums.push((runs[0] + runs[1]).to_string());
        splits.push(format!("{}+{}", runs[0], runs[1]));
        bounds.push(format!("{:.2}", N_G as f64 / runs[0].max(runs[1]) as f64));
        drop(pa);
        drop(pb);
    }
    let (o, os) = spread(&mut one);
    let (t, ts) = spread(&mut two);
    row(
        &format!("group: 50 ms check per message, {N_G} over {TOPICS} topics: 1 collector"),
        os,
        "-",
    );
    row("  2 members of a group (runs summed)", ts, "-");
    row(
        "  ratio 2 members / 1 collector (medians)",
        format!("{:.2}", t / o),
        ">= 1.80",
    );
    row(
        "  runs over both members, each round (exact)",
        sums.join(", "),
        &format!("= {N_G}"),
    );
    row("  runs per member, each round", splits.join(", "), "-");
    row(
        "  the ratio that split allows (all / the larger share)",
        bounds.join(", "),
        "-",
    );
    common::record(
        "collect",
        &format!("group: 50 ms check per message, {N_G} over {TOPICS} topics"),
        "messages/s",
        t,
        "1 collector (no group)",
        o,
        "higher",
        ">= 1.80",
    );
}

/// Part 6, no check (every message a hit, no response), `N` 5-byte payloads over
/// `TOPICS` topics: journaled and acknowledged per second by a single collector
/// and by each member of a group of two (the slower one counts), alternating,
/// from the release of the messages queued for them. Beside them, without a
/// budget, two collectors in no group on the same stream (the slower): what
/// the broker sending each message twice and two collectors sharing the CPUs
/// cost a member, apart from what the group itself costs.
fn group_journal(base: &Path, port: u16) {
    let (mut single, mut member, mut pair) = (Vec::new(), Vec::new(), Vec::new());
    let done = |w: &Path| {
        stat(w, "collect_journaled") == Some(N) && stat(w, "collect_journal_depth") == Some(0)
    };
    // Each of `works` (held still) released with `N` queued for it: the
    // slowest one's rate.
    let timed = |works: &[&Path], ps: &[&Proc], prefix: &str| {
        signal_all(ps, libc::SIGSTOP);
        assert_eq!(publish_to(port, spread_msgs(prefix, N)), N);
        let t = Instant::now();
        signal_all(ps, libc::SIGCONT);
        let mut took = vec![None; works.len()];
        wait_every(Duration::from_millis(2), Duration::from_secs(600), || {
            for (i, w) in works.iter().enumerate() {
                if took[i].is_none() && done(w) {
                    took[i] = Some(t.elapsed());
                }
            }
            took.iter().all(Option::is_some)
        });
        let slowest = took.iter().flatten().max().unwrap();
        N as f64 / slowest.as_secs_f64()
    };
    for r in 0..rounds() {
        let w = base.join(format!("gj1-{r}"));
        let prefix = format!("gj1-{r}");
        let p = collector_conf(&w, port, &format!("subscribe = {prefix}/#\n"), false, "");
        connected(&w);
        single.push(timed(&[&w], &[&p], &prefix));
        drop(p);

        let (wa, wb) = (
            base.join(format!("gj2a-{r}")),
            base.join(format!("gj2b-{r}")),
        );
        let prefix = format!("gj2-{r}");
        let conf = format!("subscribe = {prefix}/#\n");
        let members = member_conf(&format!("gj-{r}"));
        let pa = collector_conf(&wa, port, &conf, false, &members);
        let pb = collector_conf(&wb, port, &conf, false, &members);
        grouped(&[&wa, &wb], 2);
        member.push(timed(&[&wa, &wb], &[&pa, &pb], &prefix));
        drop(pa);
        drop(pb);

        let (wa, wb) = (
            base.join(format!("gj3a-{r}")),
            base.join(format!("gj3b-{r}")),
        );
        let prefix = format!("gj3-{r}");
        let conf = format!("subscribe = {prefix}/#\n");
        let pa = collector_conf(&wa, port, &conf, false, "");
        let pb = collector_conf(&wb, port, &conf, false, "");
        connected(&wa);
        connected(&wb);
        pair.push(timed(&[&wa, &wb], &[&pa, &pb], &prefix));
        drop(pa);
        drop(pb);
    }
    let (s, ss) = spread(&mut single);
    let (m, ms) = spread(&mut member);
    let (d, ds) = spread(&mut pair);
    row(
        &format!("group: no check, {N} 5-byte over {TOPICS} topics: 1 collector"),
        ss,
        "-",
    );
    row("  each member of a group of 2 (the slower)", ms, "-");
    row(
        "  ratio member / single collector (medians)",
        format!("{:.2}", m / s),
        ">= 1.00",
    );
    row(
        "  2 collectors in no group, same stream (the slower)",
        ds,
        "-",
    );
    row(
        "  ratio member / collector of those 2 (medians)",
        format!("{:.2}", m / d),
        "-",
    );
    common::record(
        "collect",
        &format!("group: no check, {N} 5-byte over {TOPICS} topics, a member"),
        "messages/s",
        m,
        "single collector",
        s,
        "higher",
        ">= 1.00",
    );
}

/// Part 7, two members on `crd/+/event/#` (no check): each one's RSS once it
/// journaled and took one crd event from each of 10,000 streams (what it
/// still holds for the other member then, until the other's progress
/// releases it, is counted in), again once nothing is held, and its VmHWM;
/// beside them, without a budget, a single collector (no group) taking the
/// same events.
fn group_rss(base: &Path, port: u16) {
    let (wa, wb, ws) = (base.join("g3a"), base.join("g3b"), base.join("g3s"));
    let members = member_conf("g3");
    let conf = "subscribe = crd/+/event/#\n";
    let pa = collector_conf(&wa, port, conf, false, &members);
    let pb = collector_conf(&wb, port, conf, false, &members);
    let ps = collector_conf(&ws, port, conf, false, "");
    grouped(&[&wa, &wb], 2);
    connected(&ws);
    let idle = [&pa, &pb].map(|p| status_kib(p.0.id(), "VmRSS"));
    publish(port, "crd/n/event/M", (1..=10_000).map(|n| event(n, 1)));
    for w in [&wa, &wb, &ws] {
        wait_until(Duration::from_secs(600), || {
            stat(w, "collect_seen_streams") == Some(10_000)
                && stat(w, "collect_journal_depth") == Some(0)
        });
    }
    let rss = [&pa, &pb].map(|p| status_kib(p.0.id(), "VmRSS"));
    let held = [&wa, &wb].map(|w| stat(w, "collect_group_held").unwrap_or(0));
    for w in [&wa, &wb] {
        wait_until(Duration::from_secs(30), || {
            stat(w, "collect_group_held") == Some(0)
        });
    }
    let released = [&pa, &pb].map(|p| status_kib(p.0.id(), "VmRSS"));
    let hwm = [&pa, &pb].map(|p| status_kib(p.0.id(), "VmHWM"));
    row(
        "group: 2 members' VmRSS connected, no node seen yet",
        format!("{} + {} KiB", idle[0], idle[1]),
        "-",
    );
    for (i, name) in ["a", "b"].iter().enumerate() {
        row(
            &format!("  member {name} after 10,000 nodes' first events"),
            format!("{} KiB ({} held)", rss[i], held[i]),
            "<= 6144 KiB",
        );
        row(
            "    once the other's progress released them",
            format!("{} KiB", released[i]),
            "<= 6144 KiB",
        );
        row("    VmHWM", format!("{} KiB", hwm[i]), "<= 6144 KiB");
    }
    row(
        "  1 collector (no group), the same events: VmRSS",
        format!("{} KiB", status_kib(ps.0.id(), "VmRSS")),
        "-",
    );
    drop(pa);
    drop(pb);
    drop(ps);
}
