//! What the node's diagnostics topic (`wire::diag_topic`) says and when it is
//! published, without IO: the spool's backlog and the last error crd spooled,
//! handed in by the forwarder, and whether a publish is due. Home Assistant's
//! diagnostic sensors read it (with `homeassistant` only).
//!
//! The rate bound is the point: a burst of errors, or a backlog that grows by
//! one per event while the broker is slow, must not flood the bus, so after
//! the publish at each connect a change goes out at most once per
//! `DIAG_INTERVAL`, with the values of that moment. Time comes in as `now`;
//! `poll_timeout` says when a held-back change is due.

use std::time::{Duration, Instant};

/// Shortest time between two publishes of the diagnostics topic on one
/// connection (the one at each connect aside).
pub const DIAG_INTERVAL: Duration = Duration::from_secs(60);

/// The diagnostics now and as last published.
#[derive(Debug, Default)]
pub struct Diag {
    backlog: u64,
    /// The last error: its text (`MODULE: first line`) and unix ms, and how
    /// many errors crd spooled in all, which tells a new one from the same.
    error: Option<(String, u64)>,
    errors: u64,
    /// (backlog, errors) as last published on this connection, and when;
    /// `None`: nothing published since the connect.
    sent: Option<((u64, u64), Instant)>,
}

impl Diag {
    /// The spool's backlog now.
    pub fn handle_backlog(&mut self, backlog: u64) {
        self.backlog = backlog;
    }

    /// The last error crd spooled (`text`, unix `ms`), the `errors`th; the
    /// text is copied only when `errors` moved.
    pub fn handle_error(&mut self, errors: u64, text: &str, ms: u64) {
        if errors != self.errors {
            self.errors = errors;
            self.error = Some((text.to_string(), ms));
        }
    }

    /// A new connection: the next `poll_publish` says yes whatever the bound.
    pub fn handle_connected(&mut self) {
        self.sent = None;
    }

    /// Whether to publish now: nothing published on this connection yet, or
    /// the values changed and `DIAG_INTERVAL` passed since the last publish.
    /// A yes counts as published at `now`.
    pub fn poll_publish(&mut self, now: Instant) -> bool {
        let cur = (self.backlog, self.errors);
        let due = match self.sent {
            None => true,
            Some((v, at)) => v != cur && now >= at + DIAG_INTERVAL,
        };
        if due {
            self.sent = Some((cur, now));
        }
        due
    }

    /// When a change held back by the bound is due; `None` when nothing
    /// changed since the last publish (or nothing published yet on this connection).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (v, at) = self.sent?;
        (v != (self.backlog, self.errors)).then_some(at + DIAG_INTERVAL)
    }

    /// The payload of the values now (`wire::diag_json`).
    pub fn payload(&self) -> Vec<u8> {
        let e = self.error.as_ref().map(|(t, ms)| (t.as_str(), *ms));
        crate::mqtt::wire::diag_json(self.backlog, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A virtual clock: the publish at the connect, then a change every
    /// second for ten minutes (a growing backlog, a burst of errors): one
    /// publish per `DIAG_INTERVAL`, each with the values of its moment, and
    /// nothing while nothing changes.
    #[test]
    fn changes_go_out_at_most_once_per_interval() {
        let t0 = Instant::now();
        let mut d = Diag::default();
        assert!(d.poll_publish(t0), "at the connect");
        assert!(!d.poll_publish(t0), "nothing changed");
        assert_eq!(d.poll_timeout(), None);
        let mut at = Vec::new();
        for s in 1..=600u64 {
            let now = t0 + Duration::from_secs(s);
            d.handle_backlog(s);
            d.handle_error(s, "Disk: full", s * 1000);
            if d.poll_publish(now) {
                at.push(s);
                let j: serde_json::Value = serde_json::from_slice(&d.payload()).unwrap();
                assert_eq!(j["backlog"], s, "the values of that moment");
                assert_eq!(j["last_error_ms"], s * 1000);
            } else {
                let due = d.poll_timeout().expect("a change is held back");
                assert!(due > now && due <= now + DIAG_INTERVAL);
            }
        }
        assert_eq!(at, (1..=10).map(|k| k * 60).collect::<Vec<_>>());
        // Idle: no wake-up for nothing.
        assert!(!d.poll_publish(t0 + Duration::from_secs(700)));
        assert_eq!(d.poll_timeout(), None);
        // A reconnect publishes at once, bound or not.
        d.handle_connected();
        d.handle_backlog(0);
        assert!(d.poll_publish(t0 + Duration::from_secs(701)));
    }

    /// The last error is copied once per new error, and `none` (empty, no
    /// time) until the first.
    #[test]
    fn the_last_error_is_the_newest_and_empty_until_one() {
        let mut d = Diag::default();
        let j: serde_json::Value = serde_json::from_slice(&d.payload()).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"backlog":0,"last_error":"","last_error_ms":null})
        );
        d.handle_error(1, "Disk: full", 5);
        d.handle_error(1, "ignored: the same error", 6);
        d.handle_error(2, "Wan: no route", 7);
        d.handle_backlog(3);
        let j: serde_json::Value = serde_json::from_slice(&d.payload()).unwrap();
        assert_eq!(
            j,
            serde_json::json!({"backlog":3,"last_error":"Wan: no route","last_error_ms":7})
        );
    }
}
