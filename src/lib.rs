//! crd, the Condition/Response Daemon: runs `check` executables on a schedule, runs
//! the module's `response` when a check finds its condition, and records every
//! outcome as an event.
//!
//! The crate is a library so that tests and fuzz targets reach the pure parts; the
//! binary (`main.rs`) only calls `cli::main`. Pure core: `config`, `decide`,
//! `schedule`, `output`, `event`. IO at the edge: `modules` (directory scans),
//! `spawn` (the one place that builds child processes), `run` (children in the poll
//! loop), `control` (the control socket), `daemon` (the one `mio::Poll`), `cli`, `logger`.
//! `unsafe` lives in `sys` alone.

#![deny(unsafe_code)]
// Inline assembly on MIPS is still behind a feature gate; MIPS builds use build-std
// with RUSTC_BOOTSTRAP=1 already (cross/build.sh). Used by `sys::raw`.
#![cfg_attr(target_arch = "mips", feature(asm_experimental_arch))]

pub mod child;
pub mod cli;
pub mod core;
pub mod daemon;
pub mod host;
pub mod install;
pub mod mqtt;
pub mod spool;
