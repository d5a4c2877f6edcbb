//! The host behind the machines' ports: what the command edge needs of the
//! daemon (`command::edge::Port`: the outbox its replies go to, the module
//! directory its commands name) and where the relay publishes
//! (`command::relay::Publish`: the forwarder), given here so neither machine
//! touches them itself.

use crate::command::edge::{Outgoing, Port};
use crate::core::config::{Config, ModuleSettings};
use crate::core::event::Event;
use crate::host::error::Error;
use crate::host::modules;
use crate::host::outbox::Outbox;
use std::path::PathBuf;
use std::time::Instant;

/// The command edge's port: replies into the daemon's outbox, modules from
/// `modules_dir` as the daemon's user (`euid`) may run them.
pub struct EdgePort<'a> {
    pub outbox: &'a mut Outbox,
    pub cfg: &'a Config,
    pub euid: u32,
}

impl Port for EdgePort<'_> {
    fn push(&mut self, ev: Event, now: Instant) -> Option<u64> {
        self.outbox.push(ev, now)
    }

    fn sync(&mut self, seq: u64, now: Instant) -> bool {
        let spool = self.outbox.spool();
        let _ = spool.sync(now);
        spool.durable_seq() >= seq
    }

    fn support(&self, name: &str) -> Result<(PathBuf, ModuleSettings), Error> {
        modules::support(self.cfg, name, self.euid)
    }
}

impl<'a> EdgePort<'a> {
    /// What the edge's calls take: this port, `now` and the wall clock.
    pub fn at(&'a mut self, now: Instant, wall: u64) -> Outgoing<'a> {
        Outgoing {
            port: self,
            now,
            wall,
        }
    }
}

#[cfg(feature = "collector")]
impl crate::command::relay::Publish for crate::mqtt::forward::Forwarder {
    fn publish_now(&mut self, topic: &str, payload: &[u8], now: Instant) -> bool {
        self.publish_now(topic, payload, now)
    }
}
