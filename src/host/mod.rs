//! The daemon's host: module discovery, the control socket, the outbox in front of the
//! spool, and the logger.

pub mod clock;
pub mod control;
pub mod files;
pub mod logger;
pub mod modules;
pub mod outbox;
