//! When each of the daemon's parts next needs a loop turn, through one
//! interface: the loop sleeps until the soonest of them (`Daemon::next_deadline`
//! folds over the parts), and a part with work it stopped short of (a read
//! budget used up) says "now" the same way as a timer says "later".

use crate::child::run::Runs;
use crate::collect::Collector;
use crate::command::edge::Edge;
use crate::command::relay::Relay;
use crate::core::schedule::Scheduler;
use crate::host::control::Control;
use crate::host::metrics::Metrics;
use crate::host::outbox::Outbox;
use crate::mqtt::forward::Forwarder;
use std::time::Instant;

/// A part of the daemon the loop wakes for.
pub trait Part {
    /// When it next needs a turn (`None`: only an event wakes it); `now`
    /// when it has work left for the next turn at once.
    fn wake_at(&self, now: Instant) -> Option<Instant>;
}

impl<T: Part> Part for Option<T> {
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        self.as_ref().and_then(|p| p.wake_at(now))
    }
}

/// The sooner of two wake-ups.
fn sooner(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Part for Scheduler {
    fn wake_at(&self, _: Instant) -> Option<Instant> {
        self.poll_timeout()
    }
}

impl Part for Runs {
    fn wake_at(&self, _: Instant) -> Option<Instant> {
        self.poll_timeout()
    }
}

impl Part for Control {
    /// A client with bytes left past its read budget: at once.
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        sooner(self.poll_timeout(), self.has_pending_reads().then_some(now))
    }
}

impl Part for Collector {
    /// Journal records left past its per-turn budget: at once.
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        sooner(self.poll_timeout(), self.busy().then_some(now))
    }
}

impl Part for Edge {
    fn wake_at(&self, _: Instant) -> Option<Instant> {
        self.poll_timeout()
    }
}

impl Part for Relay {
    fn wake_at(&self, _: Instant) -> Option<Instant> {
        self.poll_timeout()
    }
}

impl Part for Outbox {
    fn wake_at(&self, _: Instant) -> Option<Instant> {
        self.poll_timeout()
    }
}

impl Part for Forwarder {
    /// Broker bytes left past its read budget: at once.
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        sooner(self.poll_timeout(), self.has_pending_input().then_some(now))
    }
}

impl Part for Metrics {
    fn wake_at(&self, now: Instant) -> Option<Instant> {
        self.poll_timeout(now)
    }
}
