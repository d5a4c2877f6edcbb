//! Why the host refused or failed: a support module that cannot run
//! (`modules.rs`: `crd -x`, and a remote command's module), the spool that
//! would not open (`outbox.rs`: the daemon's, and `crd dump`'s read-only one)
//! and a `crd emit` the outbox refused, each a variant carrying what its
//! one-line message names. `Display` writes the message; the daemon's control
//! socket and the command edge write it out as text where it travels. The
//! bounds a message names travel in the variant, so this file imports none of
//! the files that use it.

use crate::spool::{AppendError, SpoolError};
use std::fmt;
use std::io;
use std::path::PathBuf;

/// A `Reason`, boxed: a `Result` carrying it is one word wide, so `?` moves a
/// pointer, not the widest variant.
#[derive(Debug)]
pub struct Error(Box<Reason>);

impl Error {
    pub fn reason(&self) -> &Reason {
        &self.0
    }
}

impl From<Reason> for Error {
    fn from(r: Reason) -> Error {
        Error(Box::new(r))
    }
}

#[derive(Debug)]
pub enum Reason {
    /// A support module name `valid_name` refused, and why.
    BadSupportName(String, &'static str),
    /// No support module of this name: the executable that is missing.
    NoSupport(String, PathBuf),
    /// What is wrong with a module's files or its `module.conf`: each problem
    /// as module discovery warns of it, joined by `; `.
    Problems(String),
    /// The spool directory is locked by another crd (the lock's own message).
    Locked(io::Error),
    /// The spool directory could not be opened or made.
    SpoolDir(PathBuf, io::Error),
    /// The spool refused to recover: why, its directory.
    Recover(SpoolError, PathBuf),
    /// The same for `crd dump`'s read-only spool.
    RecoverReadOnly(SpoolError, PathBuf),
    /// `crd emit`: a topic suffix `valid_topic_suffix` refused, and why.
    BadSuffix(String, &'static str),
    /// `crd emit`: a record of this many bytes, over `spool_max_record`.
    TooLarge(usize, u32),
    /// `crd emit`: the spool refused the record.
    Append(AppendError),
    /// `crd emit`: record `seq` waits in memory, not yet written (or synced,
    /// when true).
    NotWritten(u64, bool),
}

/// Fixed texts are written as they are, `write!` only where a value goes in, its
/// arguments dereferenced (a `&&T` would add a formatting function of its own).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::BadSupportName(n, why) => {
                write!(f, "bad support module name `{}`: {}", *n, *why)
            }
            Reason::NoSupport(n, exe) => write!(
                f,
                "no support module `{}`: {} is missing",
                *n,
                exe.display()
            ),
            Reason::Problems(ps) => f.write_str(ps),
            Reason::Locked(e) => fmt::Display::fmt(e, f),
            Reason::SpoolDir(d, e) => write!(f, "spool {}: {}", d.display(), *e),
            Reason::Recover(e, d) => write!(f, "{} (spool_dir {})", *e, d.display()),
            Reason::RecoverReadOnly(e, d) => write!(f, "{} ({})", *e, d.display()),
            Reason::BadSuffix(s, why) => write!(f, "bad suffix `{}`: {}", *s, *why),
            Reason::TooLarge(n, max) => write!(
                f,
                "message too large: {} bytes as a record, spool_max_record is {}",
                *n, *max
            ),
            Reason::Append(e @ AppendError::Backlog) => {
                write!(f, "spool refused the record: {}", *e)
            }
            Reason::Append(e) => write!(f, "spool: {}", *e),
            Reason::NotWritten(seq, sync) => write!(
                f,
                "record {} is queued in memory but the spool cannot write it yet ({}); \
                 it is kept and retried",
                *seq,
                if *sync { "sync failed" } else { "write failed" }
            ),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts users saw when these were `format!`ed strings, byte for byte.
    #[test]
    fn messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let version = || SpoolError::Version {
            file: "00000001.seg".into(),
            version: 9,
        };
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::BadSupportName("../x".into(), "why").into(),
                "bad support module name `../x`: why",
            ),
            (
                Reason::NoSupport("X".into(), "/m/X/X".into()).into(),
                "no support module `X`: /m/X/X is missing",
            ),
            (
                Reason::Problems("/m/X: a; /m/X/X: b".into()).into(),
                "/m/X: a; /m/X/X: b",
            ),
            (Reason::Locked(io()).into(), "entity not found"),
            (
                Reason::SpoolDir("/s".into(), io()).into(),
                "spool /s: entity not found",
            ),
            (
                Reason::Recover(version(), "/s".into()).into(),
                "spool: 00000001.seg has format version 9, this crd reads version 1; \
                 refusing to guess (move the spool directory aside to start a new one) \
                 (spool_dir /s)",
            ),
            (
                Reason::RecoverReadOnly(version(), "/s".into()).into(),
                "spool: 00000001.seg has format version 9, this crd reads version 1; \
                 refusing to guess (move the spool directory aside to start a new one) (/s)",
            ),
            (
                Reason::BadSuffix("a//b".into(), "why").into(),
                "bad suffix `a//b`: why",
            ),
            (
                Reason::TooLarge(70000, 65536).into(),
                "message too large: 70000 bytes as a record, spool_max_record is 65536",
            ),
            (
                Reason::Append(AppendError::Backlog).into(),
                "spool refused the record: storage is failing and the unsynced backlog is full",
            ),
            (
                Reason::Append(AppendError::Io(io())).into(),
                "spool: entity not found",
            ),
            (
                Reason::NotWritten(7, true).into(),
                "record 7 is queued in memory but the spool cannot write it yet (sync failed); \
                 it is kept and retried",
            ),
            (
                Reason::NotWritten(7, false).into(),
                "record 7 is queued in memory but the spool cannot write it yet (write failed); \
                 it is kept and retried",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
