//! What the benches share: each side-by-side comparison (crd against another tool
//! doing the same work in the same run) is also appended to `$BENCH_RESULTS`, when
//! set, for `bench/report.py` to chart (`make bench` sets it). And the helpers
//! every bench had a copy of: a free port, a mosquitto, the binary measured, a
//! status figure, a table row. Each bench uses some of them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Appends one comparison as a tab-separated line: bench, metric, unit, crd's
/// value, the peer's name and value, which is better (`lower` or `higher`), and
/// the budget on the ratio crd / peer as text.
#[allow(clippy::too_many_arguments)]
pub fn record(
    bench: &str,
    metric: &str,
    unit: &str,
    crd: f64,
    peer: &str,
    peer_value: f64,
    better: &str,
    budget: &str,
) {
    let Ok(path) = std::env::var("BENCH_RESULTS") else {
        return;
    };
    use std::io::Write;
    let line =
        format!("{bench}\t{metric}\t{unit}\t{crd}\t{peer}\t{peer_value}\t{better}\t{budget}\n");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path);
    if let Err(e) = f.and_then(|mut f| f.write_all(line.as_bytes())) {
        eprintln!("BENCH_RESULTS {path}: {e}");
    }
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process, sent SIGTERM and reaped when dropped.
pub struct Proc(pub Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = crd::child::sys::kill_pid(self.0.id(), libc::SIGTERM);
        let _ = self.0.wait();
    }
}

/// A mosquitto on 127.0.0.1:`port` (anonymous, `extra` config lines), its config
/// in `dir`; returns once it accepts connections.
pub fn mosquitto(dir: &Path, port: u16, extra: &str) -> Proc {
    std::fs::create_dir_all(dir).unwrap();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\n{extra}"),
    )
    .unwrap();
    let c = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto on PATH");
    let end = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < end, "mosquitto did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Proc(c)
}

/// The binary measured: `$CRD_BIN` (make passes the x86_64 musl release build),
/// else the one cargo built.
pub fn crd_bin() -> PathBuf {
    std::env::var_os("CRD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_crd").into())
}

/// A number from the daemon's status, asked over its control socket directly (a
/// `crd status` process per poll would compete for the CPU being measured).
pub fn stat(work: &Path, key: &str) -> Option<u64> {
    use crd::host::control::{Request, Response, call};
    let req = Request::Status { json: false };
    let Ok(Response::Text(text)) = call(&work.join("crd.sock"), &req) else {
        return None;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: "))?.trim().parse().ok())
}

/// A `/proc/PID/status` figure in KiB (`VmHWM`, `VmRSS`); 0 if it cannot be read.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Asks `ok` every 20 ms until it holds; panics after `limit`.
pub fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One row of a bench's table: what, its value, its budget.
pub fn row(what: &str, value: String, budget: &str) {
    println!("{what:<60} {value:>24}  {budget}");
}
