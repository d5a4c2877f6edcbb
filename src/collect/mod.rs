//! The collector (cargo feature `collector`, on by default, off in the router
//! board configs): subscribed modules run on MQTT messages. `collector.rs` is
//! the machine the daemon drives (messages, run ends, ticks in; `Action`s and
//! recipes out), over `intake.rs` (the journal, its PUBACKs and faults),
//! `work.rs` (records held, jobs queued, runs in flight) and `ruling.rs` (the
//! registers fed and the per-origin lifecycle); `message.rs` is what a message
//! is, `persist.rs` the events done and the registers fed on disk (`dedup.rs`,
//! `rulestate.rs` their tables and records), `fault.rs` what happens while the
//! disk refuses the journal's writes, `group.rs` which member of a
//! `subscribe_group` does the work of a key, `holds.rs` the work held for the
//! other members until they report progress or leave, `origins.rs` the per-origin decision
//! states, `presence.rs` the fleet, `gaps.rs` the records of the edges'
//! streams that never arrived, `page.rs` the fleet page, `shards.rs` the
//! split map under the tables of streams and origins; `error.rs` says why it
//! did not open or what it read was not used. Without the feature,
//! `Collector` is an empty type the daemon never gets (`open` says the build
//! has none, with `error.rs`'s one variant then, and the config refuses
//! `subscribe` before that), so none of it is in the binary.

#[cfg(feature = "collector")]
mod collector;
#[cfg(feature = "collector")]
pub mod dedup;
pub mod error;
#[cfg(feature = "collector")]
pub mod fault;
#[cfg(feature = "collector")]
pub mod gaps;
#[cfg(feature = "collector")]
pub mod group;
#[cfg(feature = "collector")]
pub mod holds;
#[cfg(feature = "collector")]
pub mod intake;
#[cfg(feature = "collector")]
pub mod message;
#[cfg(feature = "collector")]
pub mod origins;
#[cfg(feature = "collector")]
pub mod page;
#[cfg(feature = "collector")]
pub mod persist;
#[cfg(feature = "collector")]
pub mod presence;
#[cfg(feature = "collector")]
pub mod rulestate;
#[cfg(feature = "collector")]
pub mod ruling;
#[cfg(feature = "collector")]
mod shards;
#[cfg(feature = "collector")]
pub mod work;

#[cfg(feature = "collector")]
pub use collector::*;

/// Journal records `Collector::pump` takes in one call at most: the daemon
/// carries out the actions they made (an event each, for a module without a
/// check) before it calls again, so a slice's events are held at a time
/// (~30 KB), not a whole turn's (~400 KB of `Action`s and their strings,
/// written and read back through the cache).
pub const PUMP_SLICE_RECORDS: usize = 256;
/// Journal records pumped in one loop turn at most, in slices.
pub const PUMP_BUDGET_RECORDS: usize = 4096;

/// What the collector asks the daemon to carry out, taken with
/// `Collector::poll_action` after each call into it: the PUBACKs due first,
/// then the rest in the order asked.
#[derive(Debug)]
pub enum Action {
    /// An event to the spool (and so to the broker): an `error`, or a run's
    /// `fired`, `cleared`, `response`.
    Emit(crate::core::event::Event),
    /// A PUBACK (connection, packet id): the message is durable in the
    /// journal, or needed none.
    Ack(u64, u16),
    /// The fleet page, put in place whole (mode 0644); `page_written` says how
    /// it went.
    WritePage(std::path::PathBuf, String),
    /// A message published now, outside the spool (a group member's progress
    /// marker: a lost one only delays the next).
    Publish(String, Vec<u8>),
    /// This member stopped joining its collector groups: its status is to
    /// say so.
    Settled,
}

#[cfg(not(feature = "collector"))]
mod off;
#[cfg(not(feature = "collector"))]
pub use off::Collector;
