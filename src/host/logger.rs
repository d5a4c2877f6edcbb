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
