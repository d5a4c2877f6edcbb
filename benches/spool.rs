//! `make bench-spool`: the spool's budgets, on this machine's disk, as a table.
//!
//! 1. Append throughput of 200-byte events under the default group-commit policy,
//!    with a flush every 16 appends as the daemon's loop does (real files, real
//!    fdatasync), and the fsyncs that cost per 1,000 events.
//! 2. Fsyncs per 1,000 events at paced rates (simulated clock, real files): the
//!    flash-wear figure of the default policy (64 KiB or 1 s).
//! 3. Recovery (open) of a full 4 MiB spool, after a clean close and after a crash
//!    (no close), median of 20.
//! 4. The real daemon's RSS with an empty spool and with a full 64 MiB one
//!    (`CRD_BIN`, default cargo's build of crd).
//!
//! Files live under cargo's target tmpdir (the project's disk, not tmpfs).

use crd::spool::storage::FileStorage;
use crd::spool::{Spool, SpoolConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const EVENT_BYTES: usize = 200;

fn fresh(dir: &Path) -> PathBuf {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    dir.to_path_buf()
}

fn open(dir: &Path, cfg: SpoolConfig) -> Spool<FileStorage> {
    Spool::open(FileStorage::open(dir).unwrap(), cfg, || 7, false)
        .unwrap()
        .0
}

fn payload(i: u64) -> Vec<u8> {
    (0..EVENT_BYTES).map(|k| (i as usize + k) as u8).collect()
}

/// Appends `n` events as fast as possible; (events/s, fsyncs per 1000 events).
fn throughput(dir: &Path, n: u64) -> (f64, f64) {
    let cfg = SpoolConfig {
        size: 1 << 30,
        ..SpoolConfig::default()
    };
    let mut sp = open(&fresh(dir), cfg);
    let p = payload(1);
    let f0 = sp.stats().fsyncs;
    let t = Instant::now();
    for i in 0..n {
        let now = Instant::now();
        sp.append(&p, now).unwrap();
        if i % 16 == 15 {
            sp.flush(now).unwrap();
            sp.handle_timer(now).unwrap();
        }
    }
    sp.sync(Instant::now()).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let fsyncs = sp.stats().fsyncs - f0;
    (n as f64 / secs, fsyncs as f64 * 1000.0 / n as f64)
}

/// Fsyncs per 1000 events when events come at `rate` per second (simulated clock).
/// With `forwarded`, every durable record is also read and acknowledged at once,
/// as over a live broker: the watermark's writes count too.
fn paced(dir: &Path, rate: u64, n: u64, forwarded: bool) -> f64 {
    let mut sp = open(&fresh(dir), SpoolConfig::default());
    let p = payload(2);
    let t0 = Instant::now();
    let f0 = sp.stats().fsyncs;
    let mut read = Vec::new();
    for i in 0..n {
        let now = t0 + Duration::from_micros(i * 1_000_000 / rate);
        if forwarded {
            while let Some((seq, _)) = sp.read_next().unwrap() {
                read.push(seq);
            }
            for seq in read.drain(..) {
                sp.ack(seq, now).unwrap();
            }
        }
        sp.append(&p, now).unwrap();
        sp.flush(now).unwrap();
        // The loop also wakes at the spool's own deadline before the next event.
        let next = t0 + Duration::from_micros((i + 1) * 1_000_000 / rate);
        if let Some(d) = sp.poll_timeout().filter(|&d| d <= next) {
            sp.handle_timer(d).unwrap();
        }
    }
    (sp.stats().fsyncs - f0) as f64 * 1000.0 / n as f64
}

/// Fills `dir` with `cfg.size` worth of records; `close` or leave as after a crash.
fn fill(dir: &Path, cfg: SpoolConfig, close: bool) -> u64 {
    let mut sp = open(&fresh(dir), cfg);
    let p = payload(3);
    let now = Instant::now();
    while sp.stats().dropped == 0 {
        sp.append(&p, now).unwrap();
    }
    if close {
        sp.close(now).unwrap();
    } else {
        sp.sync(now).unwrap();
    }
    sp.depth()
}

fn median_open_ms(dir: &Path, cfg: SpoolConfig, runs: usize) -> f64 {
    let mut v: Vec<f64> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            let sp = open(dir, cfg);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            assert!(sp.depth() > 0);
            ms
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[runs / 2]
}

fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Starts the real daemon on `spool`, waits until it runs, returns (VmHWM, VmRSS) KiB.
fn daemon_rss(work: &Path, spool: &Path, size: &str) -> (u64, u64) {
    let modules = work.join("modules");
    std::fs::create_dir_all(&modules).unwrap();
    let conf = work.join("crd.conf");
    std::fs::write(
        &conf,
        format!(
            "node = bench\nmodules_dir = {}\nspool_dir = {}\ncontrol_socket = {}\nspool_size = {size}\n",
            modules.display(),
            spool.display(),
            work.join("crd.sock").display()
        ),
    )
    .unwrap();
    let log = work.join("crd.log");
    // CRD_BIN: the binary to measure (make bench-spool passes the musl release
    // build, the one that ships); else cargo's bench build.
    let bin = std::env::var_os("CRD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_crd").into());
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("started")
    {
        assert!(Instant::now() < end, "crd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let r = (
        status_kib(child.id(), "VmHWM"),
        status_kib(child.id(), "VmRSS"),
    );
    let _ = crd::child::sys::kill_pid(child.id(), libc::SIGTERM);
    let _ = child.wait();
    r
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-spool");
    let row =
        |what: &str, value: String, budget: &str| println!("{what:<52} {value:>14}  {budget}");
    println!(
        "{:<52} {:>14}  budget",
        "spool benchmark (this machine's disk)", "value"
    );

    let (eps, f1000) = throughput(&base.join("tp"), 300_000);
    row(
        "append 200 B events, default group commit",
        format!("{eps:.0}/s"),
        ">= 50000/s",
    );
    row(
        "  fsyncs per 1000 events at that rate",
        format!("{f1000:.2}"),
        "-",
    );
    for rate in [1u64, 10, 100, 1000] {
        let n = (rate * 30).clamp(500, 5000);
        let f = paced(&base.join("paced"), rate, n, false);
        row(
            &format!("fsyncs per 1000 events at {rate} events/s"),
            format!("{f:.1}"),
            "-",
        );
        let f = paced(&base.join("paced"), rate, n, true);
        row("  forwarded and acked at once", format!("{f:.1}"), "-");
    }

    let cfg4 = SpoolConfig::default();
    let d4 = base.join("full4m");
    let depth = fill(&d4, cfg4, true);
    row(
        &format!("recover full 4 MiB spool ({depth} records), clean"),
        format!("{:.2} ms", median_open_ms(&d4, cfg4, 20)),
        "< 100 ms",
    );
    let depth = fill(&d4, cfg4, false);
    row(
        &format!("recover full 4 MiB spool ({depth} records), crashed"),
        format!("{:.2} ms", median_open_ms(&d4, cfg4, 20)),
        "< 100 ms",
    );

    let cfg64 = SpoolConfig {
        size: 64 << 20,
        ..SpoolConfig::default()
    };
    let d64 = base.join("full64m");
    let depth = fill(&d64, cfg64, false);
    row(
        &format!("recover full 64 MiB spool ({depth} records), crashed"),
        format!("{:.2} ms", median_open_ms(&d64, cfg64, 5)),
        "-",
    );
    let (hwm0, rss0) = daemon_rss(
        &fresh(&base.join("rss-empty")),
        &base.join("rss-empty/spool"),
        "64M",
    );
    let (hwm1, rss1) = daemon_rss(&fresh(&base.join("rss-full")), &d64, "64M");
    row(
        "crd VmHWM / VmRSS, empty spool",
        format!("{hwm0} / {rss0} KiB"),
        "-",
    );
    row(
        "crd VmHWM / VmRSS, full 64 MiB spool",
        format!("{hwm1} / {rss1} KiB"),
        "unchanged",
    );
    row(
        "  difference in VmHWM",
        format!("{} KiB", hwm1 as i64 - hwm0 as i64),
        "~0",
    );
    let _ = std::fs::remove_dir_all(&base);
}
