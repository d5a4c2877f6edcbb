//! The metrics file: the figures of `crd status` in Prometheus's text format
//! (`Status::to_prometheus`, the daemon renders it), put at `metrics_file`
//! every `metrics_interval` for node_exporter's textfile collector, which
//! reads the `*.prom` files of its directory at each scrape. Written beside
//! it and renamed over it (`files::replace`), so a scrape reads one write
//! whole, never half of one. A failed write is counted (`metrics_errors`)
//! and logged when writes start to fail and when they get through again
//! (not at every interval), and the next interval tries again: metrics
//! never stop the daemon. It owns the file and its timer, not
//! what is in it.

use crate::core::status::Status;
use crate::host::files;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The metrics file's mode: node_exporter runs as a user of its own.
const METRICS_FILE_MODE: u32 = 0o644;

pub struct Metrics {
    /// `metrics_file`; `None`: no metrics are written.
    path: Option<PathBuf>,
    interval: Duration,
    /// When the next write is due; `None`: at the next loop turn.
    next: Option<Instant>,
    writes: u64,
    errors: u64,
    /// The last write failed: the next failure is not logged, the next
    /// write that gets through is.
    failing: bool,
}

impl Metrics {
    /// Metrics to `path` (if any) every `interval`, the first at the next turn.
    pub fn new(path: Option<&Path>, interval: Duration) -> Metrics {
        Metrics {
            path: path.map(Path::to_path_buf),
            interval,
            next: None,
            writes: 0,
            errors: 0,
            failing: false,
        }
    }

    /// The config's `metrics_file` and `metrics_interval` after a reload:
    /// written at the next turn, then on the interval.
    pub fn configure(&mut self, path: Option<&Path>, interval: Duration) {
        self.path = path.map(Path::to_path_buf);
        self.interval = interval;
        self.next = None;
    }

    /// When the next write is due (`now`: at this turn); `None` without a file.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        self.path.as_ref()?;
        Some(self.next.unwrap_or(now))
    }

    /// Whether the file is to be written at `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.poll_timeout(now).is_some_and(|t| now >= t)
    }

    /// Puts `text` at the metrics file; the next write is an interval on.
    pub fn write(&mut self, text: &str, now: Instant) {
        let Some(path) = &self.path else {
            return;
        };
        self.next = Some(now + self.interval);
        match files::replace(path, text.as_bytes(), METRICS_FILE_MODE) {
            Ok(()) => {
                self.writes += 1;
                if self.failing {
                    log::info!("metrics: {} written again", path.display());
                    self.failing = false;
                }
            }
            Err(e) => {
                self.errors += 1;
                if !self.failing {
                    log::warn!("metrics: cannot write {}: {e}", path.display());
                }
                self.failing = true;
            }
        }
    }

    /// The `metrics_*` figures of `crd status`.
    pub fn status(&self, s: &mut Status) {
        s.count("metrics_writes", self.writes);
        s.count("metrics_errors", self.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first write is due at once, the next an interval later; a failed
    /// one (its directory missing) is counted and the one after is still
    /// tried; a reload to a new path writes at once.
    #[test]
    fn writes_on_its_interval_and_counts_a_failure_without_stopping() {
        let dir = std::env::temp_dir().join(format!("crd-metrics-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("crd.prom");
        let t0 = Instant::now();
        let every = Duration::from_secs(15);
        assert_eq!(Metrics::new(None, every).poll_timeout(t0), None);
        let mut m = Metrics::new(Some(&file), every);
        assert!(m.due(t0));
        m.write("a 1\n", t0);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 1\n");
        assert!(!dir.join("crd.prom.tmp").exists());
        assert_eq!(m.poll_timeout(t0), Some(t0 + every));
        assert!(!m.due(t0 + every - Duration::from_millis(1)) && m.due(t0 + every));
        let gone = dir.join("no/crd.prom");
        m.configure(Some(&gone), every);
        assert!(m.due(t0 + Duration::from_secs(1)), "a new path at once");
        m.write("a 2\n", t0 + Duration::from_secs(1));
        m.write("a 3\n", t0 + Duration::from_secs(16));
        assert_eq!((m.writes, m.errors, m.failing), (1, 2, true));
        m.configure(Some(&file), every);
        m.write("a 4\n", t0 + Duration::from_secs(17));
        assert_eq!((m.writes, m.errors, m.failing), (2, 2, false));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "a 4\n");
        let mut s = Status::new("0", "n", 1);
        m.status(&mut s);
        assert_eq!(
            s.get("metrics_errors"),
            Some(&crate::core::status::Value::Count(2))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
