//! `make bench-mqtt`: the forwarding budgets against a local mosquitto, as a table.
//!
//! 1. Drain a 100,000-event backlog (200-byte outputs) to mosquitto at QoS 1, and
//!    side by side in the same run `mosquitto_pub -q 1 -l` sending the same 100,000
//!    JSON payloads (one per line): messages the broker received per second, each,
//!    and the ratio. Counted by the broker (`$SYS/broker/publish/messages/received`,
//!    `sys_interval 1`), not by lines fed: mosquitto_pub 2.0 exits at the end of its
//!    input without waiting for what it has not sent yet, so the broker receives only
//!    part of the 100,000 (about a third here) in the time measured.
//! 2. Idle with the broker connected (no modules): wake-ups over 30 s, against the
//!    keepalive pings that are the only work left.
//! 3. RSS (VmHWM) while draining a full 64 MiB backlog with the broker up.
//!
//! Needs `mosquitto` and `mosquitto_pub` on PATH; `CRD_BIN` is the binary measured
//! (make bench-mqtt passes the x86_64 musl release build).

mod common;
use common::{Proc, crd_bin, free_port, mosquitto, stat, status_kib};

use crd::core::event::{self, Event, Kind};
use crd::mqtt::wire::render;
use crd::spool::storage::FileStorage;
use crd::spool::{Spool, SpoolConfig};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENTS: u64 = 100_000;
const STREAM: u64 = 0xbe9c;

fn event(i: u64) -> Event {
    Event {
        ts_ms: 1_795_000_000_000 + i,
        module: "Bench".into(),
        kind: Kind::Fired,
        code: 0,
        dur_ms: 3,
        out: format!("{i:08} {}", "x".repeat(191)),
        cause: None,
    }
}

/// A spool of `n` events (or until `cfg.size` is reached), closed cleanly.
fn fill(dir: &Path, cfg: SpoolConfig, n: u64) -> u64 {
    let _ = std::fs::remove_dir_all(dir);
    let (mut sp, _) = Spool::open(FileStorage::open(dir).unwrap(), cfg, || STREAM, false).unwrap();
    let now = Instant::now();
    let mut i = 0;
    while i < n && sp.stats().dropped == 0 {
        i += 1;
        sp.append(&event::encode(&event(i), 1 << 16).unwrap(), now)
            .unwrap();
    }
    sp.close(now).unwrap();
    sp.depth()
}

/// PUBLISH packets the broker has received since it started, once the count has
/// settled: its `$SYS` tree is refreshed about every second (measured: up to
/// 1.1 s late), so the same value read twice 2.5 s apart (at most 20 reads) is final.
fn broker_received(port: u16) -> u64 {
    let mut last = broker_received_now(port);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(2500));
        let now = broker_received_now(port);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("$SYS/broker/publish/messages/received did not settle");
}

fn broker_received_now(port: u16) -> u64 {
    let out = Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-C",
            "1",
            "-W",
            "5",
        ])
        .args(["-t", "$SYS/broker/publish/messages/received"])
        .output()
        .expect("mosquitto_sub on PATH");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count from $SYS/broker/publish/messages/received")
}

fn start_crd(work: &Path, spool: &Path, port: u16, extra: &str) -> Proc {
    std::fs::create_dir_all(work.join("modules")).unwrap();
    let conf = work.join("crd.conf");
    std::fs::write(
        &conf,
        format!(
            "node = bench\nmodules_dir = {}\nspool_dir = {}\ncontrol_socket = {}\nbroker = 127.0.0.1:{port}\n{extra}\n",
            work.join("modules").display(),
            spool.display(),
            work.join("crd.sock").display()
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

/// Starts crd on `spool` and waits until `want` publishes are acked: seconds taken
/// from the daemon's start, and the peak VmHWM seen.
fn drain(work: &Path, spool: &Path, port: u16, want: u64) -> (f64, u64) {
    let t = Instant::now();
    let p = start_crd(work, spool, port, "");
    let mut hwm = 0;
    loop {
        std::thread::sleep(Duration::from_millis(10));
        hwm = hwm.max(status_kib(p.0.id(), "VmHWM"));
        if stat(work, "mqtt_acked").is_some_and(|n| n >= want) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "drain did not finish"
        );
    }
    (t.elapsed().as_secs_f64(), hwm)
}

fn main() {
    // BENCH_FILL=DIR: only write the 100,000-event spool to DIR (for profiling).
    if let Some(dir) = std::env::var_os("BENCH_FILL") {
        let cfg = SpoolConfig {
            size: 256 << 20,
            ..SpoolConfig::default()
        };
        println!(
            "{} events in {}",
            fill(Path::new(&dir), cfg, EVENTS),
            Path::new(&dir).display()
        );
        return;
    }
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-mqtt");
    let _ = std::fs::remove_dir_all(&base);
    let port = free_port();
    let _broker = mosquitto(&base.join("broker"), port, "sys_interval 1\n");
    let row =
        |what: &str, value: String, budget: &str| println!("{what:<56} {value:>16}  {budget}");
    println!(
        "{:<56} {:>16}  budget",
        "mqtt benchmark (local mosquitto, QoS 1)", "value"
    );

    // 1. The same payloads through mosquitto_pub -l and through crd.
    let cfg = SpoolConfig {
        size: 256 << 20,
        ..SpoolConfig::default()
    };
    let spool = base.join("spool100k");
    assert_eq!(fill(&spool, cfg, EVENTS), EVENTS);
    let lines = base.join("payloads.txt");
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&lines).unwrap());
        for i in 1..=EVENTS {
            let (_, json) = render(
                "crd",
                "bench",
                &format!("{STREAM:016x}"),
                (i, None),
                &event(i),
            );
            f.write_all(&json).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }
    let before = broker_received(port);
    let t = Instant::now();
    let st = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-q",
            "1",
            "-l",
            "-t",
            "crd/bench/event/Bench",
        ])
        .stdin(std::fs::File::open(&lines).unwrap())
        .status()
        .expect("mosquitto_pub on PATH");
    assert!(st.success());
    let pub_s = t.elapsed().as_secs_f64();
    let mid = broker_received(port);
    let pub_got = mid - before;
    let work = base.join("crd-drain");
    let (crd_s, _) = drain(&work, &spool, port, EVENTS);
    // A cross-check: the events plus crd's own `online` status. The rate counts the
    // events crd saw acknowledged (each PUBACK is the broker's receipt).
    let crd_got = broker_received(port) - mid;
    let (crd_rate, pub_rate) = (EVENTS as f64 / crd_s, pub_got as f64 / pub_s);
    row(
        "mosquitto_pub -q 1 -l, 100,000 lines: broker received",
        format!("{pub_got}"),
        "-",
    );
    row(
        &format!("  in {pub_s:.3} s, received per second"),
        format!("{pub_rate:.0}/s"),
        "-",
    );
    row(
        "crd draining 100,000 events: broker received",
        format!("{crd_got}"),
        "-",
    );
    row(
        &format!("  all acked in {crd_s:.3} s (incl. start), per second"),
        format!("{crd_rate:.0}/s"),
        ">= mosquitto_pub",
    );
    row(
        "  ratio crd / mosquitto_pub",
        format!("{:.2}", crd_rate / pub_rate),
        ">= 1.00",
    );
    common::record(
        "mqtt",
        "draining 100,000 events to the broker at QoS 1",
        "events/s",
        crd_rate,
        "mosquitto_pub -q 1 -l",
        pub_rate,
        "higher",
        ">= 1.00",
    );

    // 2. Idle, connected, no modules: only keepalive pings should wake crd.
    let idle = base.join("crd-idle");
    let _ = std::fs::create_dir_all(&idle);
    let p = start_crd(&idle, &idle.join("spool"), port, "keepalive = 10s");
    let end = Instant::now() + Duration::from_secs(10);
    while stat(&idle, "mqtt_connects") != Some(1) {
        assert!(Instant::now() < end, "crd did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    let w0 = stat(&idle, "wakeups").unwrap();
    std::thread::sleep(Duration::from_secs(30));
    let w1 = stat(&idle, "wakeups").unwrap();
    // Each `crd status` is two wake-ups (accept, request); one was counted in w0.
    let idle_wakeups = w1 - w0 - 2;
    row(
        "idle wake-ups over 30 s, keepalive 10 s, no modules",
        format!("{idle_wakeups}"),
        "pings only: ~6 (3 PINGREQ + 3 PINGRESP)",
    );
    drop(p);

    // 3. RSS while draining a full 64 MiB backlog.
    let big = base.join("spool64m");
    let cfg64 = SpoolConfig {
        size: 64 << 20,
        ..SpoolConfig::default()
    };
    let n = fill(&big, cfg64, u64::MAX);
    let work = base.join("crd-64m");
    let (s64, hwm) = drain(&work, &big, port, n);
    row(
        &format!("drain a full 64 MiB backlog ({n} events)"),
        format!("{:.0}/s", n as f64 / s64),
        "-",
    );
    row(
        "  crd VmHWM during that drain",
        format!("{hwm} KiB"),
        "<= 1280 KiB (1 MiB + 256 KiB)",
    );
    let _ = std::fs::remove_dir_all(&base);
}
