//! The collector (cargo feature `collector`, on by default, off in the router
//! board configs): subscribed modules run on MQTT messages. `collector.rs` is the
//! machinery, `message.rs` what a message is, `dedup.rs` the events done, `fault.rs` what
//! happens while the disk refuses the journal's writes,
//! `origins.rs` the per-origin decision states, `presence.rs` the fleet, `page.rs`
//! the fleet page, `rulestate.rs` the rule modules' registers on disk, `shards.rs`
//! the split map under the tables of streams and origins. Without the
//! feature, `Collector` is an empty type the
//! daemon never gets (`open` says the build has none, and the config refuses
//! `subscribe` before that), so none of it is in the binary.

#[cfg(feature = "collector")]
mod collector;
#[cfg(feature = "collector")]
pub mod dedup;
#[cfg(feature = "collector")]
pub mod fault;
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
mod shards;

#[cfg(feature = "collector")]
pub use collector::*;

#[cfg(not(feature = "collector"))]
mod off;
#[cfg(not(feature = "collector"))]
pub use off::Collector;
