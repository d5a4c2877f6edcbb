//! Why the collector did not open, or what it read from disk was not used: the
//! journal's and the state's directories and the journal's recovery
//! (`collector.rs`), `crd register`'s answer when there is no such register or
//! key, the table of events done (`dedup.rs`), the registers' snapshot and
//! records (`rulestate.rs`) and the files of the format before the state's log
//! (`persist.rs`), each a variant carrying what its one-line message names.
//! `Display` writes the message. A build without the collector has one
//! variant, the one `off.rs`'s `open` gives; the others exist only with it.
//! The bounds a message names travel in the variant, so this file imports none
//! of the files that use it.

#[cfg(feature = "collector")]
use crate::spool::SpoolError;
use std::fmt;
#[cfg(feature = "collector")]
use std::io;
#[cfg(feature = "collector")]
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
    /// A build without the collector was asked for one.
    NoCollector,
    /// The journal's directory could not be opened or made.
    #[cfg(feature = "collector")]
    JournalDir(PathBuf, io::Error),
    /// A directory of the collector's state could not be opened or made.
    #[cfg(feature = "collector")]
    Dir(PathBuf, io::Error),
    /// The journal refused to recover: why, its directory.
    #[cfg(feature = "collector")]
    Recover(SpoolError, PathBuf),
    /// `crd register`: no rule module of this name has registers.
    #[cfg(feature = "collector")]
    NoRegister(String),
    /// `crd register`: the module's registers have no such key.
    #[cfg(feature = "collector")]
    NoKey(String, String),
    /// This member is still joining its group: the members to ask instead.
    #[cfg(feature = "collector")]
    Joining(String),
    /// A stream of the table of events done ends before its fields do.
    #[cfg(feature = "collector")]
    CutShort,
    /// A stream with this many ranges, over the bound.
    #[cfg(feature = "collector")]
    TooManyRanges(usize),
    #[cfg(feature = "collector")]
    RangesOutOfOrder,
    /// Bytes past the end of what a record or file holds.
    #[cfg(feature = "collector")]
    TrailingBytes,
    /// A table file shorter than its header and checksum.
    #[cfg(feature = "collector")]
    TooShort,
    /// A file whose CRC-32C is not the one it carries.
    #[cfg(feature = "collector")]
    ChecksumMismatch,
    /// A table file of a version this crd does not read.
    #[cfg(feature = "collector")]
    Version(u8),
    /// A table file with this many streams, over the bound.
    #[cfg(feature = "collector")]
    TooManyStreams(usize),
    /// The registers' snapshot: its header could not be read.
    #[cfg(feature = "collector")]
    Header(io::Error),
    #[cfg(feature = "collector")]
    NotASnapshot,
    /// Reading a snapshot failed (it ends too soon).
    #[cfg(feature = "collector")]
    Read(io::Error),
    #[cfg(feature = "collector")]
    NameNotUtf8,
    /// The snapshot's checksum could not be read.
    #[cfg(feature = "collector")]
    ChecksumRead(io::Error),
    /// A rule's registers could not be read: the module, why.
    #[cfg(feature = "collector")]
    Rule(String, io::Error),
    /// Bytes past the end of a rule's registers: the module.
    #[cfg(feature = "collector")]
    RuleTrailing(String),
    #[cfg(feature = "collector")]
    RuleRecordCutShort,
    #[cfg(feature = "collector")]
    PieceBeforeRule,
    #[cfg(feature = "collector")]
    NotARuleRecord,
    /// A file of the format before the state's log could not be read: its
    /// name, why.
    #[cfg(feature = "collector")]
    File(&'static str, io::Error),
    /// What is wrong with such a file: its name, what.
    #[cfg(feature = "collector")]
    InFile(&'static str, Error),
}

/// Fixed texts are written as they are, `write!` only where a value goes in, its
/// arguments dereferenced (a `&&T` would add a formatting function of its own).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::NoCollector => {
                f.write_str("this crd is built without the collector (cargo feature `collector`)")
            }
            #[cfg(feature = "collector")]
            Reason::JournalDir(d, e) => write!(f, "journal {}: {}", d.display(), *e),
            #[cfg(feature = "collector")]
            Reason::Dir(d, e) => write!(f, "collector {}: {}", d.display(), *e),
            #[cfg(feature = "collector")]
            Reason::Recover(e, d) => write!(f, "{} (journal {})", *e, d.display()),
            #[cfg(feature = "collector")]
            Reason::NoRegister(m) => write!(
                f,
                "no register `{}` (a rule module with `register`, fed at least once since the start)",
                *m
            ),
            #[cfg(feature = "collector")]
            Reason::NoKey(m, k) => write!(f, "register `{}` has no key `{}`", *m, *k),
            #[cfg(feature = "collector")]
            Reason::Joining(peers) => write!(
                f,
                "this member is still joining its group: its registers hold only what came \
                 since it joined; ask {}",
                *peers
            ),
            #[cfg(feature = "collector")]
            Reason::CutShort => f.write_str("cut short"),
            #[cfg(feature = "collector")]
            Reason::TooManyRanges(k) => write!(f, "{} ranges in a stream", *k),
            #[cfg(feature = "collector")]
            Reason::RangesOutOfOrder => f.write_str("ranges out of order"),
            #[cfg(feature = "collector")]
            Reason::TrailingBytes => f.write_str("trailing bytes"),
            #[cfg(feature = "collector")]
            Reason::TooShort => f.write_str("too short"),
            #[cfg(feature = "collector")]
            Reason::ChecksumMismatch => f.write_str("checksum mismatch"),
            #[cfg(feature = "collector")]
            Reason::Version(v) => write!(f, "version {}", *v),
            #[cfg(feature = "collector")]
            Reason::TooManyStreams(n) => write!(f, "{} streams", *n),
            #[cfg(feature = "collector")]
            Reason::Header(e) => write!(f, "header: {}", *e),
            #[cfg(feature = "collector")]
            Reason::NotASnapshot => f.write_str("not a register snapshot (or another version)"),
            #[cfg(feature = "collector")]
            Reason::Read(e) => fmt::Display::fmt(e, f),
            #[cfg(feature = "collector")]
            Reason::NameNotUtf8 => f.write_str("a module name that is not UTF-8"),
            #[cfg(feature = "collector")]
            Reason::ChecksumRead(e) => write!(f, "checksum: {}", *e),
            #[cfg(feature = "collector")]
            Reason::Rule(m, e) => write!(f, "rule {}: {}", *m, *e),
            #[cfg(feature = "collector")]
            Reason::RuleTrailing(m) => write!(f, "rule {}: trailing bytes", *m),
            #[cfg(feature = "collector")]
            Reason::RuleRecordCutShort => f.write_str("a rule record cut short"),
            #[cfg(feature = "collector")]
            Reason::PieceBeforeRule => f.write_str("a piece before any rule"),
            #[cfg(feature = "collector")]
            Reason::NotARuleRecord => f.write_str("not a rule record"),
            #[cfg(feature = "collector")]
            Reason::File(name, e) => write!(f, "{}: {}", *name, *e),
            #[cfg(feature = "collector")]
            Reason::InFile(name, e) => write!(f, "{}: {}", *name, *e),
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
        let e: Error = Reason::NoCollector.into();
        assert_eq!(
            e.to_string(),
            "this crd is built without the collector (cargo feature `collector`)"
        );
    }

    /// The same for the collector's own.
    #[cfg(feature = "collector")]
    #[test]
    fn collector_messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let version = || SpoolError::Version {
            file: "00000001.seg".into(),
            version: 9,
        };
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::JournalDir("/s/collect/journal".into(), io()).into(),
                "journal /s/collect/journal: entity not found",
            ),
            (
                Reason::Dir("/s/collect/state".into(), io()).into(),
                "collector /s/collect/state: entity not found",
            ),
            (
                Reason::Recover(version(), "/s/collect/journal".into()).into(),
                "spool: 00000001.seg has format version 9, this crd reads version 1; \
                 refusing to guess (move the spool directory aside to start a new one) \
                 (journal /s/collect/journal)",
            ),
            (
                Reason::NoRegister("Nope".into()).into(),
                "no register `Nope` (a rule module with `register`, fed at least once since the start)",
            ),
            (
                Reason::NoKey("R".into(), "q/x".into()).into(),
                "register `R` has no key `q/x`",
            ),
            (Reason::CutShort.into(), "cut short"),
            (Reason::TooManyRanges(300).into(), "300 ranges in a stream"),
            (Reason::RangesOutOfOrder.into(), "ranges out of order"),
            (Reason::TrailingBytes.into(), "trailing bytes"),
            (Reason::TooShort.into(), "too short"),
            (Reason::ChecksumMismatch.into(), "checksum mismatch"),
            (Reason::Version(2).into(), "version 2"),
            (Reason::TooManyStreams(70000).into(), "70000 streams"),
            (Reason::Header(io()).into(), "header: entity not found"),
            (
                Reason::NotASnapshot.into(),
                "not a register snapshot (or another version)",
            ),
            (Reason::Read(io()).into(), "entity not found"),
            (
                Reason::NameNotUtf8.into(),
                "a module name that is not UTF-8",
            ),
            (
                Reason::ChecksumRead(io()).into(),
                "checksum: entity not found",
            ),
            (
                Reason::Rule("R".into(), io()).into(),
                "rule R: entity not found",
            ),
            (
                Reason::RuleTrailing("R".into()).into(),
                "rule R: trailing bytes",
            ),
            (Reason::RuleRecordCutShort.into(), "a rule record cut short"),
            (Reason::PieceBeforeRule.into(), "a piece before any rule"),
            (Reason::NotARuleRecord.into(), "not a rule record"),
            (
                Reason::File("registers", io()).into(),
                "registers: entity not found",
            ),
            (
                Reason::InFile("registers", Reason::ChecksumMismatch.into()).into(),
                "registers: checksum mismatch",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
