//! Why files from a stranger were not taken: the tar reader's refusals and failures
//! (`tar.rs`), the staging copy's (`stage` in `mod.rs`) and the shared mode rule's
//! (`safety.rs`), each a variant carrying what its one-line message names.
//! `Display` writes the message; the transaction turns it into a `Failure` where
//! it reports. The bounds a message names travel in the variant, so this file
//! imports none of the files that use it.

use std::fmt;
use std::io;

/// A `Reason`, boxed: a `Result` carrying it is one word wide, so `?` moves a
/// pointer, not the widest variant (unboxed, the router binary was 2 KB larger).
#[derive(Debug)]
pub struct Error(Box<Reason>);

impl Error {
    /// `name: why`, for the entry, path or file `name`.
    pub fn at(name: &str, why: Why) -> Error {
        Reason::At(name.to_string(), why).into()
    }

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
    /// What is wrong with the entry, path or file named.
    At(String, Why),
    /// A numeric header field (`checksum`, `mode`, `size`) in base-256.
    Base256(&'static str),
    /// A numeric header field that is not octal: which, and its text when UTF-8.
    BadField(&'static str, Option<String>),
    /// A name or link target that is not UTF-8.
    NotUtf8,
    /// A header block whose checksum is wrong.
    Checksum,
    /// pax records that do not parse.
    BadPax,
    /// A path longer than the bound, in bytes.
    PathTooLong(usize),
    /// The archive ends inside an entry.
    Truncated,
    /// Reading the archive failed.
    Read(io::Error),
    /// More entries than the bound.
    TooManyEntries(usize),
    /// More bytes of files than `install_max_size` (the bound).
    ArchiveTooLarge(u64),
    /// Staging: a tree deeper than the bound.
    TreeTooDeep(usize),
    /// Staging: more files than the bound.
    TooManyFiles(usize),
    /// Staging: more bytes of files than `install_max_size` (the bound).
    TreeTooLarge(u64),
    /// Writing a file's data failed (inside `Why::In`).
    Write(io::Error),
}

/// What is wrong with one entry, path or file (`Reason::At`).
#[derive(Debug)]
pub enum Why {
    /// A type crd refuses (hard link, device, fifo, other): its type flag.
    EntryType(u8),
    /// A GNU long name or pax header over 64 KiB.
    MetaTooLarge,
    Absolute,
    DotDot,
    /// Deeper than the bound, in components.
    TooDeep(usize),
    /// Under one of the archive's symlinks.
    ThroughSymlink,
    /// A symlink to this target, which leads out of the module.
    LinkOutside(String),
    /// A setuid, setgid or sticky bit in this mode.
    Mode(u32),
    /// Not a file, directory or symlink (staging).
    NotAFile,
    Io(io::Error),
    /// Reading or writing the entry's data.
    In(Error),
}

/// Fixed texts are written as they are, `write!` only where a value goes in
/// (each costs the binary more), its arguments dereferenced (a `&&T` would add
/// a formatting function of its own).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::At(n, why) => {
                f.write_str(n)?;
                f.write_str(": ")?;
                fmt::Display::fmt(why, f)
            }
            Reason::Base256(what) => write!(f, "{} in base-256 (over 8 GiB): refused", *what),
            Reason::BadField(what, None) => write!(f, "bad {} field", *what),
            Reason::BadField(what, Some(s)) => write!(f, "bad {} field `{}`", *what, *s),
            Reason::NotUtf8 => f.write_str("a name that is not UTF-8"),
            Reason::Checksum => f.write_str("not a tar archive (header checksum mismatch)"),
            Reason::BadPax => f.write_str("bad pax header"),
            Reason::PathTooLong(max) => write!(f, "path longer than {} bytes", *max),
            Reason::Truncated => f.write_str("archive ends in the middle of an entry"),
            Reason::Read(e) => write!(f, "reading the archive: {}", *e),
            Reason::TooManyEntries(max) => write!(f, "archive holds more than {} entries", *max),
            Reason::ArchiveTooLarge(max) => write!(
                f,
                "archive holds more than {} bytes of files (install_max_size)",
                *max
            ),
            Reason::TreeTooDeep(max) => write!(f, "deeper than {} levels", *max),
            Reason::TooManyFiles(max) => write!(f, "more than {} files", *max),
            Reason::TreeTooLarge(max) => {
                write!(f, "more than {} bytes of files (install_max_size)", *max)
            }
            Reason::Write(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::EntryType(b'1') => f.write_str("hard links are not supported"),
            Why::EntryType(b'3' | b'4') => f.write_str("device files are refused"),
            Why::EntryType(b'6') => f.write_str("fifos are refused"),
            Why::EntryType(t) => write!(f, "unsupported entry type `{}`", *t as char),
            Why::MetaTooLarge => f.write_str("metadata header over 64 KiB"),
            Why::Absolute => f.write_str("absolute path refused"),
            Why::DotDot => f.write_str("`..` in a path refused"),
            Why::TooDeep(max) => write!(f, "deeper than {} levels", *max),
            Why::ThroughSymlink => f.write_str("written through a symlink in the archive"),
            Why::LinkOutside(t) => write!(f, "symlink to `{}` points outside the module", *t),
            Why::Mode(m) => write!(f, "setuid, setgid or sticky bit (mode {:04o}) refused", *m),
            Why::NotAFile => f.write_str("not a file, directory or symlink; refused"),
            Why::Io(e) => fmt::Display::fmt(e, f),
            Why::In(e) => fmt::Display::fmt(e, f),
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
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::Base256("size").into(),
                "size in base-256 (over 8 GiB): refused",
            ),
            (Reason::BadField("mode", None).into(), "bad mode field"),
            (
                Reason::BadField("mode", Some("9x".into())).into(),
                "bad mode field `9x`",
            ),
            (Reason::NotUtf8.into(), "a name that is not UTF-8"),
            (
                Reason::Checksum.into(),
                "not a tar archive (header checksum mismatch)",
            ),
            (Reason::BadPax.into(), "bad pax header"),
            (
                Reason::PathTooLong(1024).into(),
                "path longer than 1024 bytes",
            ),
            (
                Reason::Truncated.into(),
                "archive ends in the middle of an entry",
            ),
            (
                Reason::Read(io()).into(),
                "reading the archive: entity not found",
            ),
            (
                Reason::TooManyEntries(4096).into(),
                "archive holds more than 4096 entries",
            ),
            (
                Reason::ArchiveTooLarge(1000).into(),
                "archive holds more than 1000 bytes of files (install_max_size)",
            ),
            (Reason::TreeTooDeep(16).into(), "deeper than 16 levels"),
            (Reason::TooManyFiles(1024).into(), "more than 1024 files"),
            (
                Reason::TreeTooLarge(5).into(),
                "more than 5 bytes of files (install_max_size)",
            ),
            (
                Error::at("h", Why::EntryType(b'1')),
                "h: hard links are not supported",
            ),
            (
                Error::at("c", Why::EntryType(b'3')),
                "c: device files are refused",
            ),
            (
                Error::at("b", Why::EntryType(b'4')),
                "b: device files are refused",
            ),
            (Error::at("p", Why::EntryType(b'6')), "p: fifos are refused"),
            (
                Error::at("v", Why::EntryType(b'V')),
                "v: unsupported entry type `V`",
            ),
            (
                Error::at("x", Why::MetaTooLarge),
                "x: metadata header over 64 KiB",
            ),
            (Error::at("/a", Why::Absolute), "/a: absolute path refused"),
            (
                Error::at("../a", Why::DotDot),
                "../a: `..` in a path refused",
            ),
            (
                Error::at("a/b", Why::TooDeep(16)),
                "a/b: deeper than 16 levels",
            ),
            (
                Error::at("l/x", Why::ThroughSymlink),
                "l/x: written through a symlink in the archive",
            ),
            (
                Error::at("l", Why::LinkOutside("/etc".into())),
                "l: symlink to `/etc` points outside the module",
            ),
            (
                Error::at("m", Why::Mode(0o4755)),
                "m: setuid, setgid or sticky bit (mode 4755) refused",
            ),
            (
                Error::at("s", Why::Mode(0o1644)),
                "s: setuid, setgid or sticky bit (mode 1644) refused",
            ),
            (
                Error::at("f", Why::NotAFile),
                "f: not a file, directory or symlink; refused",
            ),
            (Error::at("f", Why::Io(io())), "f: entity not found"),
            (
                Error::at("f", Why::In(Reason::Truncated.into())),
                "f: archive ends in the middle of an entry",
            ),
            (
                Error::at("f", Why::In(Reason::Write(io()).into())),
                "f: entity not found",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
