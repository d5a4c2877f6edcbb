//! Remote commands: a command to a named node, run there at most once
//! from an allow-list of support modules, answered with its exit code and output.
//!
//! - `envelope.rs` (no IO): the command and reply JSON, the signature (HMAC-SHA256
//!   over the whole envelope), expiry.
//! - `table.rs`: the edge's persisted, bounded table of ids seen (at most once).
//! - `edge.rs`: the edge's side in the daemon's loop: commands from the broker,
//!   checked, journaled and acknowledged once durable, run one at a time through
//!   the daemon's `Runs`, replies through the spool.
//! - `send.rs` (collector builds: the central host's side): `crd send`: make,
//!   sign, publish, wait for the replies.
//! - `relay.rs`: in a collector daemon, the commands `crd send` hands over,
//!   journaled and republished until their node accepts them.
//! - `error.rs`: why a command, a reply, the key file or a request to the relay
//!   was refused, one type for all of them.

pub mod edge;
pub mod envelope;
pub mod error;
#[cfg(feature = "collector")]
pub mod relay;
#[cfg(not(feature = "collector"))]
#[path = "relay_off.rs"]
pub mod relay;
#[cfg(feature = "collector")]
pub mod send;
pub mod table;
