//! A remote command and its replies as they travel, without IO: the command's JSON
//! (`id`, `module`, `args`, `from`, `sent`, `ttl_ms`, `sig`) parsed and checked,
//! the bytes its HMAC-SHA256 signature covers, and the reply JSON the edge sends
//! back on `<prefix>/<node>/reply/<id>` (`reply_json` from an `Answer`;
//! `Reply::parse` gives the `Answer` back). Both ends use this file: the edge to
//! check and answer, `crd send` and the relay to build, sign and read replies.
//!
//! What the signature covers (`signed_bytes`): a version tag, then the target node,
//! id, module, from, sent, ttl_ms and every argument, each as a netstring
//! (`LEN:BYTES,`), so no two envelopes sign the same bytes and a signed command
//! cannot be moved to another node or given a longer life.
//!
//! A command is read by a small scanner of its own (`Scan`), not serde_json's
//! deserializer: on a router that is the only JSON crd reads, and the scanner is a
//! few KB where the deserializer's code is tens of KB. It takes what serde_json
//! takes for this shape (any field order, unknown fields of any type skipped,
//! escapes, surrogate pairs: strings are `core::json::read_string`'s) and
//! refuses duplicates, negative or fractional `sent`/`ttl_ms`, and nesting
//! deeper than `MAX_DEPTH`.

use crate::command::error::{Error, Reason, Syntax};
use crate::core::sha256::{ct_eq, hmac, to_hex};
use serde::Serialize;

/// A command id: 128 random bits as 32 lowercase hex digits, made by the sender.
pub const ID_HEX_DIGITS: usize = 32;
/// Largest command payload taken, bytes (a larger one is refused as malformed).
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// Most arguments in a command.
pub const MAX_ARGS: usize = 64;
/// Bytes of a run's output in its `done` reply (head and tail, marked where cut).
pub const REPLY_OUT_BYTES: usize = 8 * 1024;
/// Shortest ttl `crd send` and the relay take: less could not reach a node and
/// be answered (`--ttl 0s` would only ever be `expired`, or run on a node whose
/// clock is behind).
pub const MIN_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Shortest shared secret in `command_key_file`, bytes.
pub const MIN_KEY_BYTES: usize = 32;
/// Wall clocks before this (2020-01-01, unix ms) are taken as not set (a router
/// before NTP): they give no basis for a command's expiry.
pub const CLOCK_SET_MS: u64 = 1_577_836_800_000;

/// A command as sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Command {
    pub id: String,
    pub module: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub from: String,
    /// The target node (informative: the signature covers the node the command
    /// is for whether or not this is given).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub to: String,
    /// The sender's wall clock when it made the command, unix ms.
    pub sent: u64,
    /// How long after `sent` the command may still run, ms.
    pub ttl_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// Why a command is not run; the `why` of a `refused` reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not valid JSON, a field missing or out of bounds, or its id not the topic's.
    Malformed,
    /// Signing is on and `sig` is missing or wrong.
    BadSignature,
    /// `sent + ttl_ms` is past (by the edge's clock, or the newest command it ran).
    Expired,
    /// The module is not in `commands`.
    NotAllowed,
    /// No such support module on this node.
    UnknownModule,
    /// Too many commands already wait to run.
    Busy,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadSignature => "bad signature",
            Refusal::Expired => "expired",
            Refusal::NotAllowed => "not allowed",
            Refusal::UnknownModule => "unknown module",
            Refusal::Busy => "busy",
        }
    }

    /// Its number in the edge's table on disk.
    pub fn code(self) -> u8 {
        match self {
            Refusal::Malformed => 1,
            Refusal::BadSignature => 2,
            Refusal::Expired => 3,
            Refusal::NotAllowed => 4,
            Refusal::UnknownModule => 5,
            Refusal::Busy => 6,
        }
    }

    pub fn from_code(c: u8) -> Option<Refusal> {
        [
            Refusal::Malformed,
            Refusal::BadSignature,
            Refusal::Expired,
            Refusal::NotAllowed,
            Refusal::UnknownModule,
            Refusal::Busy,
        ]
        .into_iter()
        .find(|r| r.code() == c)
    }

    pub fn from_name(s: &str) -> Option<Refusal> {
        (1..=6)
            .filter_map(Refusal::from_code)
            .find(|r| r.as_str() == s)
    }
}

/// Deepest nesting of an unknown field's value in a command.
pub const MAX_DEPTH: usize = 32;

/// A JSON scanner over a command's bytes: positions, never a tree.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

/// What a field of a command holds.
enum Val {
    Str(String),
    Num(u64),
    Strs(Vec<String>),
    Null,
    /// Anything else (a bool, a negative or fractional number, an object, an
    /// array not all of strings): fine for an unknown field, wrong for a known one.
    Other,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// Byte `c` next; else `expected`, the refusal's text (which names it).
    fn eat(&mut self, c: u8, expected: &'static str) -> Result<(), Error> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Syntax::At(expected, self.i).into())
        }
    }

    fn lit(&mut self, word: &[u8]) -> Result<(), Error> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Syntax::At("bad literal", self.i).into())
        }
    }

    /// A string, the opening quote next.
    fn string(&mut self) -> Result<String, Error> {
        self.ws();
        let (s, end) =
            crate::core::json::read_string(self.b, self.i).map_err(|e| Syntax::At(e.why, e.at))?;
        self.i = end;
        Ok(s.into_owned())
    }

    /// Any value; `depth` is how deep it sits.
    fn value(&mut self, depth: usize) -> Result<Val, Error> {
        if depth > MAX_DEPTH {
            return Err(Syntax::TooDeep(MAX_DEPTH).into());
        }
        match self.peek() {
            Some(b'"') => self.string().map(Val::Str),
            Some(b'n') => self.lit(b"null").map(|_| Val::Null),
            Some(b't') => self.lit(b"true").map(|_| Val::Other),
            Some(b'f') => self.lit(b"false").map(|_| Val::Other),
            Some(b'0'..=b'9' | b'-') => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    self.i += 1;
                }
                let t = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("");
                match t.parse::<u64>() {
                    Ok(n) if !t.starts_with('+') && (t == "0" || !t.starts_with('0')) => {
                        Ok(Val::Num(n))
                    }
                    _ if is_json_number(t) => Ok(Val::Other),
                    _ => Err(Syntax::BadNumber(t.to_string()).into()),
                }
            }
            Some(b'[') => {
                self.i += 1;
                let (mut strs, mut all) = (Vec::new(), true);
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Ok(Val::Strs(strs));
                }
                loop {
                    match self.value(depth + 1)? {
                        Val::Str(s) => strs.push(s),
                        _ => all = false,
                    }
                    if strs.len() > MAX_ARGS {
                        all = false;
                        strs.clear();
                    }
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(if all { Val::Strs(strs) } else { Val::Other });
                        }
                        _ => return Err(Syntax::At("expected `,` or `]`", self.i).into()),
                    }
                }
            }
            Some(b'{') => {
                self.i += 1;
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Ok(Val::Other);
                }
                loop {
                    self.string()?;
                    self.eat(b':', "expected `:`")?;
                    self.value(depth + 1)?;
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Val::Other);
                        }
                        _ => return Err(Syntax::At("expected `,` or `}`", self.i).into()),
                    }
                }
            }
            _ => Err(Syntax::At("expected a value", self.i).into()),
        }
    }
}

/// Whether `t` is a JSON number (RFC 8259: `-? int frac? exp?`).
fn is_json_number(t: &str) -> bool {
    let b = t.strip_prefix('-').unwrap_or(t).as_bytes();
    let digits = |b: &[u8], i: &mut usize| {
        let s = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > s
    };
    let mut i = 0;
    if b.first() == Some(&b'0') {
        i = 1;
    } else if !digits(b, &mut i) {
        return false;
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(b, &mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(b, &mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The command in `payload` whatever its id (`parse` checks it against a
/// topic): its JSON object, by the scanner: required `id`, `module`, `sent`,
/// `ttl_ms`; `args`, `from`, `to`, `sig` optional; others skipped.
pub fn read(payload: &[u8]) -> Result<Command, Error> {
    let mut s = Scan { b: payload, i: 0 };
    s.eat(b'{', "expected `{`")?;
    let mut c = Command {
        id: String::new(),
        module: String::new(),
        args: Vec::new(),
        from: String::new(),
        to: String::new(),
        sent: 0,
        ttl_ms: 0,
        sig: None,
    };
    let mut seen = [false; 8];
    const KEYS: [&str; 8] = [
        "id", "module", "args", "from", "to", "sent", "ttl_ms", "sig",
    ];
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let key = s.string()?;
            s.eat(b':', "expected `:`")?;
            let v = s.value(1)?;
            if let Some(k) = KEYS.iter().position(|k| *k == key) {
                if std::mem::replace(&mut seen[k], true) {
                    return Err(Syntax::DuplicateField(KEYS[k]).into());
                }
                match (k, v) {
                    (0, Val::Str(x)) => c.id = x,
                    (1, Val::Str(x)) => c.module = x,
                    (2, Val::Strs(x)) => c.args = x,
                    (3, Val::Str(x)) => c.from = x,
                    (4, Val::Str(x)) => c.to = x,
                    (5, Val::Num(x)) => c.sent = x,
                    (6, Val::Num(x)) => c.ttl_ms = x,
                    (7, Val::Str(x)) => c.sig = Some(x),
                    (7, Val::Null) => c.sig = None,
                    _ => return Err(Syntax::WrongType(KEYS[k]).into()),
                }
            }
            match s.peek() {
                Some(b',') => s.i += 1,
                Some(b'}') => {
                    s.i += 1;
                    break;
                }
                _ => return Err(Syntax::At("expected `,` or `}`", s.i).into()),
            }
        }
    }
    if s.peek().is_some() {
        return Err(Syntax::At("trailing characters", s.i).into());
    }
    for (k, name) in [(0, "id"), (1, "module"), (5, "sent"), (6, "ttl_ms")] {
        if !seen[k] {
            return Err(Syntax::MissingField(name).into());
        }
    }
    Ok(c)
}

/// Whether `s` is a command id.
pub fn valid_id(s: &str) -> bool {
    s.len() == ID_HEX_DIGITS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The command in `payload`, received on a topic whose last level is `topic_id`.
pub fn parse(topic_id: &str, payload: &[u8]) -> Result<Command, Error> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Reason::TooLarge(payload.len(), MAX_COMMAND_BYTES).into());
    }
    let c = read(payload)?;
    if !valid_id(&c.id) {
        return Err(Reason::BadId(c.id, ID_HEX_DIGITS).into());
    }
    if c.id != topic_id {
        return Err(Reason::NotTheTopics(c.id, topic_id.to_string()).into());
    }
    if let Err(why) = crate::core::config::valid_name(&c.module) {
        return Err(Reason::BadModule(c.module, why).into());
    }
    if c.args.len() > MAX_ARGS {
        return Err(Reason::TooManyArgs(c.args.len(), MAX_ARGS).into());
    }
    if c.args.iter().any(|a| a.contains('\0')) {
        return Err(Reason::NulInArgument.into());
    }
    Ok(c)
}

/// The bytes the signature of `c` to node `node` covers.
pub fn signed_bytes(node: &str, c: &Command) -> Vec<u8> {
    let mut b = b"crd-command-v1\n".to_vec();
    let mut put = |x: &[u8]| {
        b.extend_from_slice(x.len().to_string().as_bytes());
        b.push(b':');
        b.extend_from_slice(x);
        b.push(b',');
    };
    put(node.as_bytes());
    put(c.id.as_bytes());
    put(c.module.as_bytes());
    put(c.from.as_bytes());
    put(c.sent.to_string().as_bytes());
    put(c.ttl_ms.to_string().as_bytes());
    put(c.args.len().to_string().as_bytes());
    for a in &c.args {
        put(a.as_bytes());
    }
    b
}

/// The signature of `c` to `node` under `key`, as hex.
pub fn sign(key: &[u8], node: &str, c: &Command) -> String {
    to_hex(&hmac(key, &signed_bytes(node, c)))
}

/// Whether `c` carries a valid signature for `node` under `key` (compared in
/// constant time).
pub fn verify(key: &[u8], node: &str, c: &Command) -> bool {
    let Some(sig) = &c.sig else {
        return false;
    };
    ct_eq(sign(key, node, c).as_bytes(), sig.as_bytes())
}

/// Whether `c` is past its life at time `basis` (unix ms).
pub fn expired(c: &Command, basis: u64) -> bool {
    c.sent.saturating_add(c.ttl_ms) < basis
}

/// A reply's kind and what it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Journaled; it will run (or has run).
    Accepted,
    /// It ran: the exit code (124 timed out, 128+N killed by signal N), the run's
    /// duration and its output (head and tail).
    Done {
        code: i32,
        dur_ms: u32,
        out: String,
    },
    /// It was cut by a crash or power cut; it is not run again.
    Interrupted,
    Refused {
        why: Refusal,
        detail: String,
    },
}

impl Answer {
    pub fn name(&self) -> &'static str {
        match self {
            Answer::Accepted => "accepted",
            Answer::Done { .. } => "done",
            Answer::Interrupted => "interrupted",
            Answer::Refused { .. } => "refused",
        }
    }

    /// A `busy` refusal: the node had no room then; the same command may go again.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Answer::Refused {
                why: Refusal::Busy,
                ..
            }
        )
    }
}

/// The reply JSON: `{"id","node","reply","module","ts",...}` with `code`, `dur_ms`,
/// `out` for `done`, `why` and `detail` for `refused`, and `"resent":true` when it
/// answers a command seen before (`module` left out when empty).
pub fn reply_json(id: &str, node: &str, module: &str, ts: u64, a: &Answer, resent: bool) -> String {
    let mut out = Vec::with_capacity(128);
    let mut o = crate::core::json::Obj::new(&mut out);
    o.str("id", id).str("node", node).str("reply", a.name());
    if !module.is_empty() {
        o.str("module", module);
    }
    o.uint("ts", ts);
    match a {
        Answer::Done { code, dur_ms, out } => {
            o.int("code", i64::from(*code))
                .uint("dur_ms", u64::from(*dur_ms))
                .str("out", out);
        }
        Answer::Refused { why, detail } => {
            o.str("why", why.as_str());
            if !detail.is_empty() {
                o.str("detail", detail);
            }
        }
        Answer::Accepted | Answer::Interrupted => {}
    }
    if resent {
        o.bool("resent", true);
    }
    o.end();
    String::from_utf8(out).unwrap_or_default()
}

/// A reply as `crd send`, `crd replies` and the relay read it back: what
/// `reply_json` wrote, its kind and fields an `Answer` again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub node: String,
    pub module: String,
    pub ts: u64,
    pub answer: Answer,
    pub resent: bool,
}

/// A reply's fields as they travel, before `Reply::parse` types them.
#[cfg(any(test, feature = "collector"))]
#[derive(serde::Deserialize)]
struct WireReply {
    id: String,
    #[serde(default)]
    node: String,
    reply: String,
    #[serde(default)]
    module: String,
    #[serde(default)]
    ts: u64,
    code: Option<i32>,
    dur_ms: Option<u32>,
    out: Option<String>,
    why: Option<String>,
    detail: Option<String>,
    #[serde(default)]
    resent: bool,
}

/// Only the relay, `crd send` and tests read replies: a router's build has no
/// reply reader, nor serde_json's deserializer for it.
#[cfg(any(test, feature = "collector"))]
impl Reply {
    /// The reply in `payload`. A kind (`reply`) or a refusal (`why`) this build
    /// does not know, or a `done` without `code` or `dur_ms`, is an error naming
    /// the field: the reply is skipped, as a malformed one always was (no
    /// `Unknown` variant: every reply comes from a crd edge, and a final word
    /// that could not be acted on would be no better than none).
    pub fn parse(payload: &[u8]) -> Result<Reply, Error> {
        let w: WireReply = serde_json::from_slice(payload).map_err(Reason::NotAReply)?;
        let missing = |f: &'static str| Reason::ReplyWithout(w.reply.clone(), f);
        let answer = match w.reply.as_str() {
            "accepted" => Answer::Accepted,
            "done" => Answer::Done {
                code: w.code.ok_or_else(|| missing("code"))?,
                dur_ms: w.dur_ms.ok_or_else(|| missing("dur_ms"))?,
                out: w.out.unwrap_or_default(),
            },
            "interrupted" => Answer::Interrupted,
            "refused" => {
                let why = w.why.ok_or_else(|| missing("why"))?;
                Answer::Refused {
                    why: Refusal::from_name(&why).ok_or(Reason::UnknownWhy(why))?,
                    detail: w.detail.unwrap_or_default(),
                }
            }
            other => return Err(Reason::UnknownReply(other.to_string()).into()),
        };
        Ok(Reply {
            id: w.id,
            node: w.node,
            module: w.module,
            ts: w.ts,
            answer,
            resent: w.resent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command {
            id: "0123456789abcdef0123456789abcdef".into(),
            module: "Reboot".into(),
            args: vec!["now".into(), "a b".into()],
            from: "central".into(),
            to: String::new(),
            sent: 1_800_000_000_000,
            ttl_ms: 3_600_000,
            sig: None,
        }
    }

    #[test]
    fn a_command_round_trips_and_its_id_must_be_the_topics() {
        let c = cmd();
        let j = serde_json::to_vec(&c).unwrap();
        assert_eq!(parse(&c.id, &j).unwrap(), c);
        let e = parse("ffffffffffffffffffffffffffffffff", &j)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not the topic's"), "{e}");
        for bad in [
            &b"{"[..],
            br#"{"id":"0123456789ABCDEF0123456789ABCDEF","module":"X","sent":1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"../x","sent":1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","sent":-1,"ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","ttl_ms":1}"#,
            br#"{"id":"0123456789abcdef0123456789abcdef","module":"X","args":[1],"sent":1,"ttl_ms":1}"#,
        ] {
            assert!(parse(&c.id, bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let many = Command {
            args: vec!["x".into(); MAX_ARGS + 1],
            ..cmd()
        };
        assert!(parse(&c.id, &serde_json::to_vec(&many).unwrap()).is_err());
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert!(parse(&c.id, &big).unwrap_err().to_string().contains("over"));
    }

    /// The scanner takes what serde_json takes for a command's shape, and
    /// refuses what serde_json refuses (checked against serde_json itself).
    #[test]
    fn the_scanner_reads_what_serde_json_reads() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Known {
            id: String,
            module: String,
            #[serde(default)]
            args: Vec<String>,
            #[serde(default)]
            from: String,
            #[serde(default)]
            to: String,
            sent: u64,
            ttl_ms: u64,
            #[serde(default)]
            sig: Option<String>,
        }
        let good: &[&str] = &[
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2}"#,
            r#" { "ttl_ms" : 0 , "sent" : 18446744073709551615, "module":"M","id":"a" } "#,
            r#"{"id":"a\u00e9\ud83d\ude00\n\"\\\/","module":"M","args":["x","","\t"],"sent":1,"ttl_ms":2,"sig":null,"from":"f","to":"t"}"#,
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2,"sig":"ab"}"#,
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2,"args":[]}"#,
        ];
        for j in good {
            let k: Known = serde_json::from_str(j).unwrap();
            let c = read(j.as_bytes()).unwrap_or_else(|e| panic!("{e}: {j}"));
            assert_eq!(
                (
                    c.id, c.module, c.args, c.from, c.to, c.sent, c.ttl_ms, c.sig
                ),
                (
                    k.id, k.module, k.args, k.from, k.to, k.sent, k.ttl_ms, k.sig
                ),
                "{j}"
            );
        }
        // Unknown fields of any type are skipped, as serde_json skips them.
        let extra = r#"{"x":{"a":[1,-2.5e3,{"b":null}],"c":true},"id":"a","y":[1,"s"],"module":"M","sent":1,"ttl_ms":2,"z":false}"#;
        assert_eq!(read(extra.as_bytes()).unwrap().module, "M");
        let bad: &[&str] = &[
            "",
            "{",
            "[]",
            r#"{"id":"a","module":"M","sent":1}"#,
            r#"{"id":"a","module":"M","sent":-1,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","sent":1.5,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","sent":01,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","sent":18446744073709551616,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","sent":"1","ttl_ms":2}"#,
            r#"{"id":"a","module":"M","args":[1],"sent":1,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","args":"x","sent":1,"ttl_ms":2}"#,
            r#"{"id":"a","id":"b","module":"M","sent":1,"ttl_ms":2}"#,
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2}x"#,
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2,}"#,
            r#"{"id":"\ud800","module":"M","sent":1,"ttl_ms":2}"#,
            r#"{"id":"\q","module":"M","sent":1,"ttl_ms":2}"#,
            "{\"id\":\"a\nb\",\"module\":\"M\",\"sent\":1,\"ttl_ms\":2}",
            r#"{"id":"a","module":"M","sent":1,"ttl_ms":2,"x":tru}"#,
        ];
        for j in bad {
            assert!(read(j.as_bytes()).is_err(), "took {j}");
            assert!(serde_json::from_str::<Known>(j).is_err(), "serde took {j}");
        }
        let deep = format!(
            r#"{{"x":{}1{},"id":"a","module":"M","sent":1,"ttl_ms":2}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(
            read(deep.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let mut b = vec![b'{'];
        b.extend_from_slice(&[0xff, 0xfe]);
        assert!(read(&b).is_err(), "not UTF-8, no panic");
    }

    /// Each refusal of the scanner, as a refused command's detail says it.
    #[test]
    fn the_scanner_says_what_and_where() {
        let deep = format!("{{\"x\":{}", "[".repeat(40));
        let cases: &[(&str, &str)] = &[
            ("", "expected `{` at byte 0"),
            (r#"{"id" 1}"#, "expected `:` at byte 6"),
            (r#"{"x":[1 2]}"#, "expected `,` or `]` at byte 8"),
            (r#"{"x":1 "y":2}"#, "expected `,` or `}` at byte 7"),
            (r#"{"x":{"a":1 "b":2}}"#, "expected `,` or `}` at byte 12"),
            (r#"{"x":}"#, "expected a value at byte 5"),
            (r#"{"x":tru}"#, "bad literal at byte 5"),
            ("{}x", "trailing characters at byte 2"),
            ("{1:2}", "expected a string at byte 1"),
            (&deep, "nested deeper than 32"),
            (r#"{"x":01}"#, "bad number `01`"),
            (r#"{"id":"a","id":"b"}"#, "duplicate field `id`"),
            (r#"{"sent":"1"}"#, "field `sent` has the wrong type"),
            ("{}", "missing field `id`"),
        ];
        for (j, want) in cases {
            let e = read(j.as_bytes()).unwrap_err().to_string();
            assert_eq!(e, format!("not a command: {want}"), "{j}");
        }
    }

    #[test]
    fn a_signature_binds_node_id_module_args_sent_and_ttl() {
        let key = [7u8; 32];
        let mut c = cmd();
        c.sig = Some(sign(&key, "r1", &c));
        assert!(verify(&key, "r1", &c));
        assert!(!verify(&key, "r2", &c), "another node");
        assert!(!verify(&[8u8; 32], "r1", &c), "another key");
        let changed: [fn(&mut Command); 7] = [
            |c| c.id.replace_range(0..1, "f"),
            |c| c.module.push('X'),
            |c| c.args.push("x".into()),
            |c| c.args[1] = "a".into(),
            |c| c.sent += 1,
            |c| c.ttl_ms += 1,
            |c| c.from.push('x'),
        ];
        for f in changed {
            let mut d = c.clone();
            f(&mut d);
            assert!(!verify(&key, "r1", &d), "{d:?}");
        }
        // Moving bytes between fields changes the signed bytes too.
        let mut d = c.clone();
        d.args = vec!["now".into(), "a".into(), "b".into()];
        assert_ne!(signed_bytes("r1", &c), signed_bytes("r1", &d));
        assert!(!verify(&key, "r1", &Command { sig: None, ..c }));
    }

    #[test]
    fn expiry_is_sent_plus_ttl() {
        let c = cmd();
        assert!(!expired(&c, c.sent + c.ttl_ms));
        assert!(expired(&c, c.sent + c.ttl_ms + 1));
        let forever = Command {
            ttl_ms: u64::MAX,
            ..cmd()
        };
        assert!(!expired(&forever, u64::MAX));
    }

    #[test]
    fn replies_are_json_with_what_each_kind_carries() {
        let id = "0123456789abcdef0123456789abcdef";
        let done = Answer::Done {
            code: 3,
            dur_ms: 12,
            out: "a\"b".into(),
        };
        let r = Reply::parse(reply_json(id, "r1", "Ping", 9, &done, false).as_bytes()).unwrap();
        assert_eq!(
            (r.answer, r.module.as_str(), r.resent),
            (done, "Ping", false)
        );
        let no = Answer::Refused {
            why: Refusal::NotAllowed,
            detail: String::new(),
        };
        let j = reply_json(id, "r1", "Reboot", 9, &no, true);
        assert_eq!(
            j,
            r#"{"id":"0123456789abcdef0123456789abcdef","node":"r1","reply":"refused","module":"Reboot","ts":9,"why":"not allowed","resent":true}"#
        );
        for c in 1..=6 {
            let r = Refusal::from_code(c).unwrap();
            assert_eq!(Refusal::from_name(r.as_str()), Some(r));
        }
        assert_eq!(Refusal::from_code(0), None);
    }

    /// Every answer `reply_json` writes reads back as itself, with its id, node,
    /// module (or none), ts and `resent`.
    #[test]
    fn every_reply_round_trips() {
        let id = "0123456789abcdef0123456789abcdef";
        let mut all = vec![
            Answer::Accepted,
            Answer::Interrupted,
            Answer::Done {
                code: -1,
                dur_ms: 0,
                out: String::new(),
            },
            Answer::Done {
                code: 137,
                dur_ms: u32::MAX,
                out: "a\n\"b\" \u{e9}\t".into(),
            },
        ];
        for c in 1..=6 {
            let why = Refusal::from_code(c).unwrap();
            for detail in ["", "no such module `X`"] {
                all.push(Answer::Refused {
                    why,
                    detail: detail.into(),
                });
            }
        }
        for a in all {
            for (module, resent) in [("", false), ("Reboot", true)] {
                let j = reply_json(id, "r1", module, 9, &a, resent);
                let r = Reply::parse(j.as_bytes()).unwrap_or_else(|e| panic!("{e}: {j}"));
                let want = Reply {
                    id: id.into(),
                    node: "r1".into(),
                    module: module.into(),
                    ts: 9,
                    answer: a.clone(),
                    resent,
                };
                assert_eq!(r, want, "{j}");
            }
        }
    }

    #[test]
    fn a_reply_of_an_unknown_kind_or_refusal_is_an_error_naming_the_field() {
        let e = |j: &str| Reply::parse(j.as_bytes()).unwrap_err().to_string();
        assert!(e(r#"{"id":"a","reply":"paused"}"#).contains("`reply` `paused`"));
        assert!(e(r#"{"id":"a","reply":"refused","why":"tired"}"#).contains("`why` `tired`"));
        assert!(e(r#"{"id":"a","reply":"refused"}"#).contains("without `why`"));
        assert!(e(r#"{"id":"a","reply":"done","dur_ms":1}"#).contains("without `code`"));
        assert!(e(r#"{"id":"a"}"#).contains("not a reply"));
    }
}
