//! The logger: one line per record on stderr, `LEVEL [module] message`, where init
//! systems (procd's logd, journald, busybox syslogd via a pipe) collect it.
//!
//! It never panics: a write error (a closed or broken stderr) drops the line. That is
//! why crd does not use simple_logger, whose `eprintln!` aborts the process when
//! stderr is a broken pipe. No timestamps: the collector adds its own, and a router
//! before NTP would print 1970 anyway.

use std::io::Write;

struct Stderr;

static LOGGER: Stderr = Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let target = r.target().strip_prefix("crd::").unwrap_or(r.target());
        // One write call per line, so lines from crd never interleave mid-line.
        let line = format!("{:<5} [{target}] {}\n", r.level(), r.args());
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {}
}

/// Installs the logger at `level`; a second call only changes the level.
pub fn init(level: log::LevelFilter) {
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Lines of one kind logged per `RATE_WINDOW` at most; the rest are counted and
/// said in one line when the next window opens.
pub const RATE_LINES: u32 = 10;
pub const RATE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// A bound on how often one kind of line (a hostile message, a failing check on
/// every message) is logged: a flood must not flood the log.
#[derive(Debug, Default)]
pub struct RateLimit {
    since: Option<std::time::Instant>,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    /// Whether a line may be logged at `now`; `what` names the kind in the line
    /// that tells how many were held back in the window that ended.
    pub fn allow(&mut self, now: std::time::Instant, what: &str) -> bool {
        if self.since.is_none_or(|t| now >= t + RATE_WINDOW) {
            if self.suppressed > 0 {
                log::warn!(
                    "{what}: {} more lines like the last were not logged in {} s",
                    self.suppressed,
                    RATE_WINDOW.as_secs()
                );
            }
            self.since = Some(now);
            self.used = 0;
            self.suppressed = 0;
        }
        if self.used < RATE_LINES {
            self.used += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_ten_times_a_minute() {
        let mut r = RateLimit::default();
        let t0 = std::time::Instant::now();
        let allowed = (0..1000).filter(|_| r.allow(t0, "x")).count();
        assert_eq!(allowed, RATE_LINES as usize);
        assert_eq!(r.suppressed, 990);
        assert!(r.allow(t0 + RATE_WINDOW, "x"), "a new window");
        assert_eq!(r.suppressed, 0);
    }
}
