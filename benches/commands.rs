//! `make bench-commands`: the remote commands' budgets against a local
//! mosquitto, as a table, in one run.
//!
//! 1. Round trip, send -> done, of a command running `/bin/true` on an edge crd:
//!    `crd send --wait` (a process: connect, subscribe to the reply, publish, wait)
//!    against the same request/reply by hand with mosquitto's clients: a
//!    responder `mosquitto_sub | while read; do /bin/true; mosquitto_pub; done`
//!    and, per request, `mosquitto_pub` beside `mosquitto_sub -C 1` (a persistent
//!    session, so no reply is missed). `BENCH_ROUNDS` x 20 requests each,
//!    alternating; p50 and p99 of each, the ratio of the p50s (budget: within 2x).
//! 2. 1,000 commands to 100 edge crds (real daemons, one broker) through one
//!    collector's relay (`crd send` hands each over the control socket): all
//!    answered, none run twice (each edge's module logs its `CRD_COMMAND_ID`).
//! 3. The edge's RSS with commands on, after 600 commands, in the shape of the
//!    core daemon's RSS budget (50 modules x 1 s), against the same edge with
//!    commands off beside it: at most 64 KiB more anonymous memory.
//!
//! Needs `mosquitto`, `mosquitto_pub`, `mosquitto_sub`, `sh`; `CRD_BIN` is the
//! binary measured (make passes the x86_64 musl release build).

mod common;
use common::{Proc, crd_bin, free_port, mosquitto, row, stat, status_kib, wait_until};

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A shell pipeline in a process group of its own, ended whole.
struct Group(Child);
impl Drop for Group {
    fn drop(&mut self) {
        let _ = crd::child::sys::kill_group(self.0.id(), libc::SIGTERM);
        let _ = self.0.wait();
    }
}

fn write_exec(p: &Path, body: &str) {
    std::fs::write(p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A crd's directory `work` (node = its name) with `extra` config; support module
/// `True` (/bin/true) and `Log` (appends its command id to `ran`).
fn node_dir(work: &Path, port: u16, extra: &str) -> PathBuf {
    for m in ["True", "Log"] {
        std::fs::create_dir_all(work.join("modules").join(m)).unwrap();
    }
    for d in [
        work.to_path_buf(),
        work.join("modules"),
        work.join("modules/True"),
        work.join("modules/Log"),
    ] {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let t = work.join("modules/True/True");
    if !t.exists() {
        std::os::unix::fs::symlink("/bin/true", &t).unwrap();
    }
    write_exec(
        &work.join("modules/Log/Log"),
        "echo \"$CRD_COMMAND_ID\" >> ../../ran",
    );
    let conf = work.join("crd.conf");
    std::fs::write(
        &conf,
        format!(
            "node = {node}\nmodules_dir = {}\nspool_dir = {}\ncontrol_socket = {}\n\
             broker = 127.0.0.1:{port}\nlog_level = warn\n{extra}\n",
            work.join("modules").display(),
            work.join("spool").display(),
            work.join("crd.sock").display(),
            node = work.file_name().unwrap().to_string_lossy(),
        ),
    )
    .unwrap();
    conf
}

fn start(conf: &Path) -> Proc {
    let log = conf.parent().unwrap().join("crd.log");
    Proc(
        Command::new(crd_bin())
            .arg("-c")
            .arg(conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// Waits until `work`'s crd is connected and subscribed (its log says so at
/// `info`; at `warn`, a connect and a short settle).
fn connected(work: &Path) {
    wait_until(Duration::from_secs(20), || {
        stat(work, "mqtt_connects").is_some_and(|n| n >= 1)
    });
    std::thread::sleep(Duration::from_millis(300));
}

fn percentile(v: &mut [f64], p: usize) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) * p) / 100]
}

fn main() {
    let parts: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |p: &str| parts.is_empty() || parts.iter().any(|a| a == p);
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-commands");
    let _ = std::fs::remove_dir_all(&base);
    let port = free_port();
    let _broker = mosquitto(
        &base.join("broker"),
        port,
        "max_queued_messages 0\nmax_connections -1\n",
    );
    println!(
        "{:<60} {:>24}  budget",
        "remote commands benchmark (local mosquitto, QoS 1)", "value"
    );
    if want("latency") {
        latency(&base, port);
    }
    if want("fleet") {
        fleet(&base, port);
    }
    if want("rss") {
        rss(&base, port);
    }
}

/// Part 1: send -> done round trips, crd against mosquitto's clients by hand.
fn latency(base: &Path, port: u16) {
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let per = 20;
    let edge = node_dir(&base.join("n1"), port, "commands = True\n");
    let _e = start(&edge);
    connected(edge.parent().unwrap());
    let central = node_dir(&base.join("central"), port, "");
    // The by-hand responder: a line in, /bin/true, a line out.
    let p = port.to_string();
    use std::os::unix::process::CommandExt;
    let _responder = Group(
        Command::new("sh")
            .process_group(0)
            .arg("-c")
            .arg(format!(
                "mosquitto_sub -h 127.0.0.1 -p {p} -q 1 -t hand/n1/cmd | while read -r l; do \
                 /bin/true; mosquitto_pub -h 127.0.0.1 -p {p} -q 1 -t hand/n1/reply -m done; done"
            ))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The by-hand sender's persistent session, subscribed once.
    let sub = |count: &str| {
        let mut c = Command::new("mosquitto_sub");
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &p,
            "-q",
            "1",
            "-c",
            "-i",
            "hand-sender",
        ])
        .args(["-t", "hand/n1/reply", "-C", count])
        .stdout(Stdio::null());
        c
    };
    let mut s = sub("1")
        .args(["-W", "1"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = s.wait();
    std::thread::sleep(Duration::from_millis(500));
    let (mut crd, mut hand) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..per {
            let t = Instant::now();
            let out = Command::new(crd_bin())
                .arg("-c")
                .arg(&central)
                .args(["send", "--wait", "10s", "n1", "True"])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{out:?}");
            crd.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        for _ in 0..per {
            let t = Instant::now();
            let mut s = sub("1").spawn().unwrap();
            let st = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &p, "-q", "1"])
                .args(["-t", "hand/n1/cmd", "-m", "x"])
                .status()
                .unwrap();
            assert!(st.success());
            assert!(s.wait().unwrap().success());
            hand.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let n = crd.len();
    let (c50, c99) = (percentile(&mut crd, 50), percentile(&mut crd, 99));
    let (h50, h99) = (percentile(&mut hand, 50), percentile(&mut hand, 99));
    row(
        &format!("crd send --wait, /bin/true on an edge crd: p50 / p99 ({n})"),
        format!("{c50:.1} / {c99:.1} ms"),
        "",
    );
    row(
        "mosquitto_pub + mosquitto_sub -C 1 by hand: p50 / p99",
        format!("{h50:.1} / {h99:.1} ms"),
        "",
    );
    row(
        "ratio crd / by hand, p50",
        format!("{:.2}", c50 / h50),
        if c50 / h50 <= 2.0 {
            "<= 2: met"
        } else {
            "<= 2: NOT met"
        },
    );
    common::record(
        "commands",
        "command round trip send -> done, p50",
        "ms",
        c50,
        "mosquitto_pub + mosquitto_sub by hand",
        h50,
        "lower",
        "<= 2.00",
    );
}

/// Part 2: 1,000 commands to 100 edge crds through one collector's relay.
fn fleet(base: &Path, port: u16) {
    const NODES: usize = 100;
    const EACH: usize = 10;
    let mut edges = Vec::new();
    let mut dirs = Vec::new();
    for i in 0..NODES {
        let dir = base.join(format!("e{i:03}"));
        let conf = node_dir(&dir, port, "commands = Log\n");
        edges.push(start(&conf));
        dirs.push(dir);
    }
    for d in &dirs {
        connected(d);
    }
    let cdir = base.join("relay");
    std::fs::create_dir_all(cdir.join("modules/Sink")).unwrap();
    let conf = node_dir(&cdir, port, "");
    std::fs::write(
        cdir.join("modules/Sink/module.conf"),
        "subscribe = crd/+/event/#\n",
    )
    .unwrap();
    write_exec(&cdir.join("modules/Sink/check"), "exit 1");
    let _relay = start(&conf);
    connected(&cdir);
    let t = Instant::now();
    for round in 0..EACH {
        for d in &dirs {
            let node = d.file_name().unwrap().to_string_lossy().to_string();
            let out = Command::new(crd_bin())
                .arg("-c")
                .arg(&conf)
                .args(["send", &node, "Log", &round.to_string()])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{out:?}");
        }
    }
    let handed = t.elapsed();
    let total = (NODES * EACH) as u64;
    wait_until(Duration::from_secs(300), || {
        stat(&cdir, "relay_answered") == Some(total)
    });
    let all = t.elapsed();
    let (mut runs, mut twice) = (0usize, 0usize);
    for d in &dirs {
        let ran = std::fs::read_to_string(d.join("ran")).unwrap_or_default();
        let mut ids: Vec<&str> = ran.lines().collect();
        runs += ids.len();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        twice += n - ids.len();
    }
    let published = stat(&cdir, "relay_published").unwrap_or(0);
    row(
        &format!("{total} commands to {NODES} edge crds through one relay: handed over"),
        format!("{:.1} s", handed.as_secs_f64()),
        "",
    );
    row(
        "... all answered `done` (relay_answered) after",
        format!("{:.1} s", all.as_secs_f64()),
        "all answered: met",
    );
    row(
        "... runs on the edges / run twice / publishes by the relay",
        format!("{runs} / {twice} / {published}"),
        if runs == total as usize && twice == 0 {
            "none twice: met"
        } else {
            "none twice: NOT met"
        },
    );
    drop(edges);
}

/// Part 3: the RSS that commands add to an edge, in the shape of the core
/// daemon's RSS budget (`make bench`, bench/bench.py: 50 modules, a check each
/// every second), connected to the broker, after 600 commands (its table of ids
/// full): the same edge with commands off runs beside it. The budget (64 KiB)
/// is on the anonymous memory, the daemon's own; VmHWM is shown beside it, but
/// it also counts the binary's pages, mapped 64 KiB at a time as code first
/// runs, which vary by tens of KiB from run to run.
fn rss(base: &Path, port: u16) {
    const COMMANDS: usize = 600;
    let fifty = |dir: &Path| {
        for i in 0..50 {
            let m = dir.join(format!("modules/M{i:03}"));
            std::fs::create_dir_all(&m).unwrap();
            std::fs::set_permissions(&m, std::fs::Permissions::from_mode(0o755)).unwrap();
            write_exec(&m.join("check"), "exit 1");
            write_exec(&m.join("response"), "exit 0");
        }
    };
    fifty(&base.join("rss-off"));
    fifty(&base.join("rss-on"));
    let off = node_dir(&base.join("rss-off"), port, "interval = 1\n");
    let on = node_dir(
        &base.join("rss-on"),
        port,
        "interval = 1\ncommands = True\n",
    );
    let central = node_dir(&base.join("rss-central"), port, "");
    let p_off = start(&off);
    let p_on = start(&on);
    connected(off.parent().unwrap());
    connected(on.parent().unwrap());
    for _ in 0..COMMANDS {
        let out = Command::new(crd_bin())
            .arg("-c")
            .arg(&central)
            .args(["send", "--wait", "10s", "rss-on", "True"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let hwm_off = status_kib(p_off.0.id(), "VmHWM");
    let hwm_on = status_kib(p_on.0.id(), "VmHWM");
    row(
        &format!("edge VmHWM, 50 modules x 1 s, commands off / on after {COMMANDS}"),
        format!("{hwm_off} / {hwm_on} KiB"),
        "",
    );
    let anon = |pid: u32| {
        let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let get = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (get("Anonymous:"), get("Rss:") - get("Anonymous:"))
    };
    let ((a_off, f_off), (a_on, f_on)) = (anon(p_off.0.id()), anon(p_on.0.id()));
    row(
        "... of VmRSS now: anonymous / file-backed (the binary's pages)",
        format!("{a_off}/{f_off} / {a_on}/{f_on} KiB"),
        "",
    );
    let more = a_on as i64 - a_off as i64;
    row(
        "... more with commands on: anonymous (VmHWM)",
        format!("{more} KiB ({:+} KiB)", hwm_on as i64 - hwm_off as i64),
        if more <= 64 {
            "<= 64 KiB: met"
        } else {
            "<= 64 KiB: NOT met"
        },
    );
}
