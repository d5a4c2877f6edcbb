//! What the benches share: each side-by-side comparison (crd against another tool
//! doing the same work in the same run) is also appended to `$BENCH_RESULTS`, when
//! set, for `bench/report.py` to chart (`make bench` sets it).

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
