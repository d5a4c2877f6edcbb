//! Events: what crd records about every outcome, and the sink they are handed to.
//!
//! The core produces `Event` values; a `Sink` takes them. Today the sink logs each
//! event; the spool (its own issue) will become the sink that makes them durable and
//! assigns `stream` and `seq`. This file knows nothing of files, sockets or MQTT.

use std::fmt;

/// What happened. The names are the wire names (`kind` in DESIGN.md, Events).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A check found its condition present (and `trigger_after` was reached).
    Fired,
    /// A check found the condition gone after it had fired.
    Cleared,
    /// A response finished; `code` is its exit code.
    Response,
    /// A check failed: unexpected exit code, signal, timeout or exec failure.
    Error,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fired => "fired",
            Kind::Cleared => "cleared",
            Kind::Response => "response",
            Kind::Error => "error",
        }
    }
}

/// Exit codes that stand for outcomes other than a normal exit, as shells and
/// coreutils' `timeout` spell them, so an operator reads `code` the usual way.
pub const CODE_TIMEOUT: i32 = 124;
pub const CODE_EXEC_FAILED: i32 = 127;
pub const CODE_SIGNAL_BASE: i32 = 128;

/// One outcome, before it is made durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Wall-clock unix milliseconds; may be 1970 before NTP, never used for ordering.
    pub ts_ms: u64,
    pub module: String,
    pub kind: Kind,
    pub code: i32,
    pub dur_ms: u32,
    /// Bounded by the module's `output_limit` plus a short note.
    pub out: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event module={} kind={} code={} dur_ms={}",
            self.module,
            self.kind.as_str(),
            self.code,
            self.dur_ms
        )?;
        if !self.out.is_empty() {
            write!(f, " out={:?}", self.out)?;
        }
        Ok(())
    }
}

/// Where events go. Implementations must not block the poll loop.
pub trait Sink {
    fn push(&mut self, ev: Event);
}

/// The sink until the spool exists: numbers events and logs them at `info`.
#[derive(Default)]
pub struct LogSink {
    pub seq: u32,
}

impl Sink for LogSink {
    fn push(&mut self, ev: Event) {
        self.seq = self.seq.wrapping_add(1);
        log::info!("seq={} {ev}", self.seq);
    }
}
