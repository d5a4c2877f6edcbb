//! Why a command, a reply or a request about them was refused or failed: the
//! envelope's (`envelope.rs`: a command's JSON as its scanner reads it, its id,
//! module and arguments; a reply's fields), the key file's and the tables'
//! directories (`edge.rs`, `relay.rs`), what the relay refuses of `crd send`
//! and `crd replies` (`relay.rs`, and `relay_off.rs` in a build without it),
//! and `crd send`'s own (`send.rs`), each a variant carrying what its one-line
//! message names. `Display` writes the message; where it travels as text (a
//! refusal's detail in a reply, a control socket answer) the caller writes it
//! there. The bounds a message names travel in the variant, so this file
//! imports none of the files that use it. The relay's and `crd send`'s
//! variants are in a build with the collector only, a reply's too (only the
//! relay, `crd send` and tests read replies): a router's `Display` has no arm
//! for them.

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

/// The scanner's refusals are all `not a command: ...`.
impl From<Syntax> for Error {
    fn from(s: Syntax) -> Error {
        Reason::NotACommand(s).into()
    }
}

#[derive(Debug)]
pub enum Reason {
    /// A command's JSON refused by the scanner: where and why.
    NotACommand(Syntax),
    /// A command of this many bytes, over the bound.
    TooLarge(usize, usize),
    /// An id that is not this many lowercase hex digits.
    BadId(String, usize),
    /// The command's id, and its topic's.
    NotTheTopics(String, String),
    /// A module name `valid_name` refused, and why.
    BadModule(String, &'static str),
    /// This many arguments, over the bound.
    TooManyArgs(usize, usize),
    /// An argument with a NUL byte (no `execve` could pass it).
    NulInArgument,
    /// A reply that is not a reply's JSON.
    #[cfg(any(test, feature = "collector"))]
    NotAReply(serde_json::Error),
    /// A reply of this kind without this field.
    #[cfg(any(test, feature = "collector"))]
    ReplyWithout(String, &'static str),
    /// A refused reply whose `why` this build does not know.
    #[cfg(any(test, feature = "collector"))]
    UnknownWhy(String),
    /// A reply of a kind this build does not know.
    #[cfg(any(test, feature = "collector"))]
    UnknownReply(String),
    /// A file or directory (the key file, a table's directory), and why.
    At(PathBuf, io::Error),
    /// The key file and its mode, which lets group or others in.
    KeyMode(PathBuf, u32),
    /// The key file, its bytes, and the fewest a key has.
    KeyShort(PathBuf, usize, usize),
    /// Why `command_key_file` could not be used.
    CommandKey(Error),
    /// A node name `valid_node` refused, and why.
    #[cfg(feature = "collector")]
    BadNode(String, &'static str),
    /// The node the command names in `to`, and the node it was queued for.
    #[cfg(feature = "collector")]
    ForAnother(String, String),
    /// The relay: a command id with no bytes (`parse` checked its digits).
    #[cfg(feature = "collector")]
    IdNotBytes,
    /// The relay: a ttl in ms, under the minimum in ms.
    #[cfg(feature = "collector")]
    TtlTooShort(u64, u64),
    /// The relay: a command id it has already.
    #[cfg(feature = "collector")]
    Known(String),
    /// The relay: this many commands wait for an answer, its bound.
    #[cfg(feature = "collector")]
    Full(usize),
    /// Writing a command as JSON failed.
    #[cfg(feature = "collector")]
    Json(serde_json::Error),
    /// The relay's journal could not take the command.
    #[cfg(feature = "collector")]
    Journal(io::Error),
    /// `crd replies ID`: an id that is not one.
    #[cfg(feature = "collector")]
    BadAskedId(String),
    /// `crd replies ID`: an id the relay does not know.
    #[cfg(feature = "collector")]
    NoCommand(String),
    /// The relay in a build without the collector.
    NoCollector,
    /// `crd send`: no random id (`/dev/urandom`).
    #[cfg(feature = "collector")]
    Random(io::Error),
}

/// What the scanner found wrong with a command's JSON.
#[derive(Debug)]
pub enum Syntax {
    /// What was expected or found at this byte offset (`expected a value`,
    /// or why `core::json::read_string` refused a string): one variant, so
    /// one message shape, for them all.
    At(&'static str, usize),
    /// Nested deeper than this.
    TooDeep(usize),
    BadNumber(String),
    DuplicateField(&'static str),
    WrongType(&'static str),
    MissingField(&'static str),
}

/// Fixed texts are written as they are, `write!` only where a value goes in, its
/// arguments dereferenced (a `&&T` would add a formatting function of its own).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Reason::NotACommand(s) => {
                f.write_str("not a command: ")?;
                fmt::Display::fmt(s, f)
            }
            Reason::TooLarge(n, max) => write!(f, "{} bytes, over {}", *n, *max),
            Reason::BadId(id, digits) => write!(
                f,
                "bad id `{}` (want {} lowercase hex digits)",
                *id, *digits
            ),
            Reason::NotTheTopics(id, topic) => {
                write!(f, "id `{}` is not the topic's `{}`", *id, *topic)
            }
            Reason::BadModule(m, why) => write!(f, "bad module name `{}`: {}", *m, *why),
            Reason::TooManyArgs(n, max) => write!(f, "{} arguments, over {}", *n, *max),
            Reason::NulInArgument => f.write_str("an argument holds a NUL byte"),
            #[cfg(any(test, feature = "collector"))]
            Reason::NotAReply(e) => write!(f, "not a reply: {}", *e),
            #[cfg(any(test, feature = "collector"))]
            Reason::ReplyWithout(kind, field) => {
                write!(f, "a `{}` reply without `{}`", *kind, *field)
            }
            #[cfg(any(test, feature = "collector"))]
            Reason::UnknownWhy(w) => write!(f, "unknown `why` `{}`", *w),
            #[cfg(any(test, feature = "collector"))]
            Reason::UnknownReply(r) => write!(f, "unknown `reply` `{}`", *r),
            Reason::At(p, e) => write!(f, "{}: {}", p.display(), *e),
            Reason::KeyMode(p, mode) => write!(
                f,
                "{}: mode {:04o}, must be 0600 (no group or other access)",
                p.display(),
                *mode
            ),
            Reason::KeyShort(p, n, min) => write!(
                f,
                "{}: {} bytes, a key has at least {}",
                p.display(),
                *n,
                *min
            ),
            Reason::CommandKey(e) => write!(f, "command_key_file {}", *e),
            #[cfg(feature = "collector")]
            Reason::BadNode(n, why) => write!(f, "bad node `{}`: {}", *n, *why),
            #[cfg(feature = "collector")]
            Reason::ForAnother(to, node) => {
                write!(f, "the command is for `{}`, not `{}`", *to, *node)
            }
            #[cfg(feature = "collector")]
            Reason::IdNotBytes => f.write_str("bad id"),
            #[cfg(feature = "collector")]
            Reason::TtlTooShort(ttl, min) => {
                write!(f, "ttl {} ms, under the minimum {} ms", *ttl, *min)
            }
            #[cfg(feature = "collector")]
            Reason::Known(id) => write!(f, "command {} is known already", *id),
            #[cfg(feature = "collector")]
            Reason::Full(max) => {
                write!(f, "{} commands are not answered yet; try again later", *max)
            }
            #[cfg(feature = "collector")]
            Reason::Json(e) => fmt::Display::fmt(e, f),
            #[cfg(feature = "collector")]
            Reason::Journal(e) => write!(f, "relay journal: {}", *e),
            #[cfg(feature = "collector")]
            Reason::BadAskedId(id) => write!(f, "bad id `{}`", *id),
            #[cfg(feature = "collector")]
            Reason::NoCommand(id) => write!(f, "no command {} in this relay", *id),
            Reason::NoCollector => {
                f.write_str("this crd is built without the collector (cargo feature `collector`)")
            }
            #[cfg(feature = "collector")]
            Reason::Random(e) => write!(f, "/dev/urandom: {}", *e),
        }
    }
}

impl fmt::Display for Syntax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Syntax::At(what, at) => write!(f, "{} at byte {}", *what, *at),
            Syntax::TooDeep(max) => write!(f, "nested deeper than {}", *max),
            Syntax::BadNumber(t) => write!(f, "bad number `{}`", *t),
            Syntax::DuplicateField(k) => write!(f, "duplicate field `{}`", *k),
            Syntax::WrongType(k) => write!(f, "field `{}` has the wrong type", *k),
            Syntax::MissingField(k) => write!(f, "missing field `{}`", *k),
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
        let json = || serde_json::from_str::<u8>("x").unwrap_err();
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::TooLarge(20000, 16384).into(),
                "20000 bytes, over 16384",
            ),
            (
                Reason::BadId("X".into(), 32).into(),
                "bad id `X` (want 32 lowercase hex digits)",
            ),
            (
                Reason::NotTheTopics("a".into(), "b".into()).into(),
                "id `a` is not the topic's `b`",
            ),
            (
                Reason::BadModule("../x".into(), "why").into(),
                "bad module name `../x`: why",
            ),
            (Reason::TooManyArgs(65, 64).into(), "65 arguments, over 64"),
            (Reason::NulInArgument.into(), "an argument holds a NUL byte"),
            (
                Reason::NotAReply(json()).into(),
                "not a reply: expected value at line 1 column 1",
            ),
            (
                Reason::ReplyWithout("done".into(), "code").into(),
                "a `done` reply without `code`",
            ),
            (
                Reason::UnknownWhy("tired".into()).into(),
                "unknown `why` `tired`",
            ),
            (
                Reason::UnknownReply("paused".into()).into(),
                "unknown `reply` `paused`",
            ),
            (
                Reason::At("/s/command".into(), io()).into(),
                "/s/command: entity not found",
            ),
            (
                Reason::KeyMode("/k".into(), 0o644).into(),
                "/k: mode 0644, must be 0600 (no group or other access)",
            ),
            (
                Reason::KeyShort("/k".into(), 5, 32).into(),
                "/k: 5 bytes, a key has at least 32",
            ),
            (
                Reason::CommandKey(Reason::KeyShort("/k".into(), 5, 32).into()).into(),
                "command_key_file /k: 5 bytes, a key has at least 32",
            ),
            (
                Reason::NoCollector.into(),
                "this crd is built without the collector (cargo feature `collector`)",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// The same for the relay's and `crd send`'s.
    #[cfg(feature = "collector")]
    #[test]
    fn relay_and_send_messages_are_the_ones_users_know() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let json = || serde_json::from_str::<u8>("x").unwrap_err();
        let id = "0123456789abcdef0123456789abcdef";
        let cases: Vec<(Error, &str)> = vec![
            (
                Reason::BadNode("a/b".into(), "why").into(),
                "bad node `a/b`: why",
            ),
            (
                Reason::ForAnother("r2".into(), "r1".into()).into(),
                "the command is for `r2`, not `r1`",
            ),
            (Reason::IdNotBytes.into(), "bad id"),
            (
                Reason::TtlTooShort(10, 1000).into(),
                "ttl 10 ms, under the minimum 1000 ms",
            ),
            (
                Reason::Known(id.into()).into(),
                "command 0123456789abcdef0123456789abcdef is known already",
            ),
            (
                Reason::Full(4096).into(),
                "4096 commands are not answered yet; try again later",
            ),
            (
                Reason::Json(json()).into(),
                "expected value at line 1 column 1",
            ),
            (
                Reason::Journal(io()).into(),
                "relay journal: entity not found",
            ),
            (Reason::BadAskedId("x".into()).into(), "bad id `x`"),
            (
                Reason::NoCommand(id.into()).into(),
                "no command 0123456789abcdef0123456789abcdef in this relay",
            ),
            (
                Reason::Random(io()).into(),
                "/dev/urandom: entity not found",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }

    /// The same for the scanner's, each after `not a command: `.
    #[test]
    fn syntax_messages_are_the_ones_users_know() {
        let cases: Vec<(Syntax, &str)> = vec![
            (Syntax::At("expected `{`", 0), "expected `{` at byte 0"),
            (Syntax::At("lone surrogate", 9), "lone surrogate at byte 9"),
            (Syntax::TooDeep(32), "nested deeper than 32"),
            (Syntax::BadNumber("01".into()), "bad number `01`"),
            (Syntax::DuplicateField("id"), "duplicate field `id`"),
            (Syntax::WrongType("sent"), "field `sent` has the wrong type"),
            (Syntax::MissingField("ttl_ms"), "missing field `ttl_ms`"),
        ];
        for (s, want) in cases {
            assert_eq!(Error::from(s).to_string(), format!("not a command: {want}"));
        }
    }
}
