//! crd, the Condition/Response Daemon: runs `check` executables on a schedule, runs
//! the module's `response` when a check finds its condition, records every outcome
//! as an event in a persistent spool, and forwards the events to an MQTT broker.
//!
//! The crate is a library so that tests, benches and fuzz targets reach its parts;
//! the binary (`main.rs`) only calls `cli::main`. One folder per subsystem, each
//! importing only what ARCHITECTURE.md's "may import" table allows (`tests/tidy.rs`
//! enforces it): `core` (pure: config, module, schedule, decide, lifecycle, event,
//! output), `spool` (the on-disk ring), `child` (the one `unsafe` file `sys`, the
//! recipe of every child, spawn, runs, the poll loop), `host` (files, clock, module
//! discovery, control socket, outbox, logger), `mqtt` (session, wire, forward,
//! transport), `install` (`crd --install/--list/--remove`), `collect` (the
//! collector: modules run on MQTT messages), `rules` (registers and conditions,
//! pure), `command` (remote commands: the envelope, the edge's table, `crd send`,
//! the relay), `daemon` (the loop), `cli` (the command line).

#![deny(unsafe_code)]
// Inline assembly on MIPS is still behind a feature gate; MIPS builds use build-std
// with RUSTC_BOOTSTRAP=1 already (cross/build.sh). Used by `sys::raw`.
#![cfg_attr(target_arch = "mips", feature(asm_experimental_arch))]

pub mod child;
pub mod cli;
pub mod collect;
pub mod command;
pub mod core;
pub mod daemon;
pub mod host;
pub mod install;
pub mod mqtt;
#[cfg(feature = "collector")]
pub mod rules;
pub mod spool;
