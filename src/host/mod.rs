//! The daemon's host: module discovery, the control socket, the outbox in front of the
//! spool, the metrics file, and the logger; `error.rs` says why a support module or
//! the spool was refused.

pub mod clock;
pub mod control;
pub mod error;
pub mod files;
pub mod logger;
pub mod metrics;
pub mod modules;
pub mod outbox;
