//! An inbound message as the collector keeps and hands it on: its journal record
//! (bytes in the collector's spool), and what a subscribed module's children are
//! told about it (`CRD_TOPIC`, `CRD_MESSAGE_ID`, and `CRD_EVENT_*` when the
//! payload is a crd event). No IO here.
//!
//! Journal record: one byte `JOURNAL_VERSION`, then the postcard encoding of
//! `Message` (topic, payload bytes, wall-clock receive time), written and read by
//! hand here: a varint length and the topic's bytes, a varint length and the
//! payload, a varint time (postcard's own path took a call per payload byte; a
//! test holds the two encodings equal). The version byte is not the event
//! payload's (1), so a record of one kind is never read as the other.
//!
//! A crd event's record is `EVENT_JOURNAL_VERSION` and the same, followed by
//! the fields the inbound path already read from its JSON (node, stream,
//! module, kind: varint length and bytes; seq: varint; code: zigzag varint;
//! hop: varint), so the record read back for its run needs no second parse. A record of
//! `JOURNAL_VERSION` (any payload, and journals written before) is parsed.

use crate::core::event::Cause;
use crate::core::output::push_decimal;
use crate::rules::value::{self, Member};
use std::borrow::Cow;
use std::ffi::OsString;

/// The first byte of a journal record (a payload that is not a crd event).
pub const JOURNAL_VERSION: u8 = 0x10;
/// The first byte of a crd event's journal record (its fields follow, `hop`
/// last); `EVENT_JOURNAL_VERSION_NO_HOP`'s, written before `hop`, is read as
/// hop 0.
pub const EVENT_JOURNAL_VERSION: u8 = 0x12;
pub const EVENT_JOURNAL_VERSION_NO_HOP: u8 = 0x11;
/// Longest origin key kept per module (a node name, or a topic), bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// One message from the broker, as journaled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Unix milliseconds when it arrived (the collector's clock).
    pub received_ms: u64,
}

// The owned encodings and decodings below are the tests' (the collector writes
// with `encode_into` and reads with `View`).
impl Message {
    #[cfg(test)]
    pub fn encode(&self) -> Vec<u8> {
        Self::encode_parts(&self.topic, &self.payload, self.received_ms)
    }

    /// The record of a message not yet made a `Message` (no copy on the way).
    #[cfg(test)]
    pub fn encode_parts(topic: &str, payload: &[u8], received_ms: u64) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_into(&mut out, topic, payload, received_ms, None);
        out
    }

    /// The record of a crd event: `encode_parts`' with the fields `e` read from
    /// `payload` after it.
    #[cfg(test)]
    pub fn encode_event(
        topic: &str,
        payload: &[u8],
        received_ms: u64,
        e: &EventRef<'_>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        Self::encode_into(&mut out, topic, payload, received_ms, Some(e));
        out
    }

    /// Writes the record (a crd event's with `event`) over `out`, whose
    /// allocation the collector reuses from message to message.
    pub fn encode_into(
        out: &mut Vec<u8>,
        topic: &str,
        payload: &[u8],
        received_ms: u64,
        event: Option<&EventRef<'_>>,
    ) {
        out.clear();
        out.push(match event {
            Some(_) => EVENT_JOURNAL_VERSION,
            None => JOURNAL_VERSION,
        });
        varint(out, topic.len() as u64);
        out.extend_from_slice(topic.as_bytes());
        varint(out, payload.len() as u64);
        out.extend_from_slice(payload);
        varint(out, received_ms);
        if let Some(e) = event {
            for s in [&e.node, &e.stream, &e.module, &e.kind] {
                varint(out, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            varint(out, e.seq);
            varint(out, ((e.code << 1) ^ (e.code >> 31)) as u32 as u64);
            varint(out, u64::from(e.hop));
        }
    }

    #[cfg(test)]
    pub fn decode(record: &[u8]) -> Result<Message, RecordError> {
        Self::decode_with_facts(record).map(|(m, _)| m)
    }

    /// The message of a record and what its children are told: from the
    /// record's fields for a crd event's record, else parsed from the payload.
    #[cfg(test)]
    pub fn decode_with_facts(record: &[u8]) -> Result<(Message, Facts), RecordError> {
        View::of(record).map(|v| v.to_owned())
    }
}

/// Why a journal record cannot be read (its `Display` is the log's text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordError {
    Empty,
    /// A version byte this crd does not know.
    Version(u8),
    /// A field (named) that is not UTF-8.
    NotUtf8(&'static str),
    /// A varint too long (`core::event::take_varint`'s reason).
    Varint(&'static str),
    CutShort,
    /// Bytes past the record's last field.
    Trailing(usize),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::Empty => f.write_str("empty journal record"),
            RecordError::Version(v) => write!(f, "journal record of unknown version {v}"),
            RecordError::NotUtf8(what) => write!(f, "journal record: {what} is not UTF-8"),
            RecordError::Varint(e) => write!(f, "journal record: {e}"),
            RecordError::CutShort => f.write_str("journal record: cut short"),
            RecordError::Trailing(n) => write!(f, "journal record: {n} bytes past its end"),
        }
    }
}

/// A journal record read in place: what the rule path needs of a message
/// without an allocation (most messages there lead to no run); `to_owned` for
/// one that is held for its runs.
#[derive(Debug)]
pub struct View<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub received_ms: u64,
    pub event: Option<EventRef<'a>>,
}

impl<'a> View<'a> {
    /// The record's message, and its event's fields: from the record for a crd
    /// event's record, else parsed from the payload.
    pub fn of(record: &'a [u8]) -> Result<View<'a>, RecordError> {
        let (event, mut r) = match record.split_first() {
            Some((&JOURNAL_VERSION, rest)) => (None, rest),
            Some((&EVENT_JOURNAL_VERSION, rest)) => (Some(true), rest),
            Some((&EVENT_JOURNAL_VERSION_NO_HOP, rest)) => (Some(false), rest),
            Some((&v, _)) => return Err(RecordError::Version(v)),
            None => return Err(RecordError::Empty),
        };
        let topic = take_str(&mut r, "topic")?;
        let payload = take(&mut r)?;
        let received_ms = read_varint(&mut r)?;
        let event = if let Some(with_hop) = event {
            let node = take_str(&mut r, "node")?;
            let stream = take_str(&mut r, "stream")?;
            let module = take_str(&mut r, "module")?;
            let kind = take_str(&mut r, "kind")?;
            let seq = read_varint(&mut r)?;
            let z =
                crate::core::event::take_varint(&mut r, 32).map_err(RecordError::Varint)? as u32;
            let code = (z >> 1) as i32 ^ -((z & 1) as i32);
            let hop = match with_hop {
                true => {
                    crate::core::event::take_varint(&mut r, 32).map_err(RecordError::Varint)? as u32
                }
                false => 0,
            };
            Some(EventRef {
                node: Cow::Borrowed(node),
                stream: Cow::Borrowed(stream),
                seq,
                module: Cow::Borrowed(module),
                kind: Cow::Borrowed(kind),
                code,
                hop,
                cause: Cow::Borrowed(""),
                prev: None,
            })
        } else {
            EventRef::parse(payload)
        };
        if !r.is_empty() {
            return Err(RecordError::Trailing(r.len()));
        }
        Ok(View {
            topic,
            payload,
            received_ms,
            event,
        })
    }

    /// `Facts::id` of the message.
    pub fn id(&self) -> String {
        match &self.event {
            Some(e) => event_id(&e.stream, e.seq),
            None => hash_id(self.topic, self.payload),
        }
    }

    /// `Facts::cause` of the message.
    pub fn cause(&self) -> Cause {
        match &self.event {
            Some(e) => cause_of(e.hop, &e.node, &e.stream, e.seq),
            None => first_cause(self.id()),
        }
    }

    /// `Facts::origin` of the message.
    pub fn origin(&self) -> &str {
        cut(
            self.event.as_ref().map_or(self.topic, |e| &e.node),
            MAX_ORIGIN_BYTES,
        )
    }

    pub fn to_owned(&self) -> (Message, Facts) {
        let event = self.event.as_ref().map(|e| EventFields {
            node: e.node.to_string(),
            stream: e.stream.to_string(),
            seq: e.seq,
            module: e.module.to_string(),
            kind: e.kind.to_string(),
            code: e.code,
            hop: e.hop,
        });
        (
            Message {
                topic: self.topic.to_string(),
                payload: self.payload.to_vec(),
                received_ms: self.received_ms,
            },
            Facts { event },
        )
    }
}

/// A length-prefixed UTF-8 string off the front of `r`, borrowed (`what`
/// names it in the error).
fn take_str<'a>(r: &mut &'a [u8], what: &'static str) -> Result<&'a str, RecordError> {
    let b = take(r)?;
    std::str::from_utf8(b).map_err(|_| RecordError::NotUtf8(what))
}

use crate::core::event::put_varint as varint;

/// A varint of at most 64 bits off the front of `r` (`core::event`'s, postcard's).
fn read_varint(r: &mut &[u8]) -> Result<u64, RecordError> {
    crate::core::event::take_varint(r, 64).map_err(RecordError::Varint)
}

/// A length-prefixed byte string off the front of `r`.
fn take<'a>(r: &mut &'a [u8]) -> Result<&'a [u8], RecordError> {
    let n = read_varint(r)?;
    if n > r.len() as u64 {
        return Err(RecordError::CutShort);
    }
    let (head, rest) = r.split_at(n as usize);
    *r = rest;
    Ok(head)
}

/// The fields of a crd event's JSON (`mqtt::wire`) that a collector's module is
/// given; the rest of the payload stays on stdin.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFields {
    pub node: String,
    pub stream: String,
    pub seq: u64,
    pub module: String,
    pub kind: String,
    pub code: i32,
    /// Its `hop` (0 when it has none: an edge's event).
    pub hop: u32,
}

/// `EventFields` borrowed from the payload where no escape needs undoing: what
/// the inbound path reads of every message without an allocation.
#[derive(Debug)]
pub struct EventRef<'a> {
    pub node: Cow<'a, str>,
    pub stream: Cow<'a, str>,
    pub seq: u64,
    pub module: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub code: i32,
    /// Its `hop` and `cause` (0 and "" when it has none: an edge's event).
    pub hop: u32,
    pub cause: Cow<'a, str>,
    /// Its `prev`: the seq before it, where the edge's numbering jumped
    /// (`collect::gaps`); not kept in the journal.
    pub prev: Option<u64>,
}

impl<'a> EventRef<'a> {
    /// The fields when `payload` is a crd event: a JSON object with `node` (not
    /// empty), `stream` (16 hex digits), `module` and `kind` as strings, `seq` a
    /// u64 and `code` an i32 as integers, each once; other members are ignored.
    /// Read by `rules::value::members` (once per message, no tree).
    pub fn parse(payload: &'a [u8]) -> Option<EventRef<'a>> {
        Self::parse_own(payload).or_else(|| Self::parse_members(payload))
    }

    /// `parse` for any JSON object, member by member.
    fn parse_members(payload: &'a [u8]) -> Option<EventRef<'a>> {
        let (mut node, mut stream, mut module, mut kind) = (None, None, None, None);
        let (mut seq, mut code, mut hop, mut cause) = (None, None, None, None);
        let mut prev: Option<Option<u64>> = None;
        let mut ok = true;
        let r = value::members(payload, |k, v| {
            let slot = match (k, v) {
                (b"node", Member::Str(s)) => set(&mut node, s),
                (b"stream", Member::Str(s)) => set(&mut stream, s),
                (b"module", Member::Str(s)) => set(&mut module, s),
                (b"kind", Member::Str(s)) => set(&mut kind, s),
                (b"seq", Member::Token(t)) => {
                    set(&mut seq, json_int(t).and_then(|t| t.parse().ok()))
                }
                (b"code", Member::Token(t)) => {
                    set(&mut code, json_int(t).and_then(|t| t.parse().ok()))
                }
                (b"hop", Member::Token(t)) => {
                    set(&mut hop, json_int(t).and_then(|t| t.parse().ok()))
                }
                (b"cause", Member::Str(s)) => set(&mut cause, s),
                (b"prev", Member::Token(t)) => {
                    set(&mut prev, json_int(t).and_then(|t| t.parse().ok()))
                }
                (b"node" | b"stream" | b"module" | b"kind" | b"seq" | b"code", _) => false,
                (b"hop" | b"cause" | b"prev", _) => false,
                _ => true,
            };
            ok &= slot;
        });
        if r.is_err() || !ok || prev == Some(None) {
            return None;
        }
        let e = EventRef {
            node: node?,
            stream: stream?,
            seq: seq??,
            module: module?,
            kind: kind?,
            code: code??,
            hop: hop.unwrap_or(Some(0))?,
            cause: cause.unwrap_or(Cow::Borrowed("")),
            prev: prev.flatten(),
        };
        let hex = e.stream.len() == 16 && e.stream.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && !e.node.is_empty()).then_some(e)
    }

    /// The stream as a number (for the duplicate table).
    pub fn stream_id(&self) -> u64 {
        hex_u64(&self.stream)
    }

    /// `parse`'s answer for an event exactly as crd writes one
    /// (`mqtt::wire::render_into`: its keys in its order, no blanks, no escape
    /// in any string), in one pass over it; `None` for anything else, which
    /// `parse` then reads member by member (a unit test holds the two equal).
    /// Every message a collector of crd events receives is one of these, and
    /// the general reader took about 3,500 instructions for it.
    fn parse_own(payload: &'a [u8]) -> Option<EventRef<'a>> {
        // Every byte is in a key, a string or a number here, so the whole
        // is valid UTF-8 exactly when every string is.
        let r = std::str::from_utf8(payload).ok()?;
        let r = r.strip_prefix(r#"{"node":""#)?;
        let (node, r) = plain_string(r)?;
        let (stream, r) = plain_string(r.strip_prefix(r#","stream":""#)?)?;
        let (seq, r) = number(r.strip_prefix(r#","seq":"#)?)?;
        let (prev, r) = match r.strip_prefix(r#","prev":"#) {
            Some(r) => {
                let (prev, r) = number(r)?;
                (Some(json_int(prev)?.parse().ok()?), r)
            }
            None => (None, r),
        };
        let (_, r) = number(r.strip_prefix(r#","ts":"#)?)?;
        let (module, r) = plain_string(r.strip_prefix(r#","module":""#)?)?;
        let (kind, r) = plain_string(r.strip_prefix(r#","kind":""#)?)?;
        let (code, r) = number(r.strip_prefix(r#","code":"#)?)?;
        let (_, r) = number(r.strip_prefix(r#","dur_ms":"#)?)?;
        let r = r
            .strip_prefix(r#","out":""#)
            .or_else(|| r.strip_prefix(r#","message":""#))?;
        let (_, r) = plain_string(r)?;
        let (hop, cause, r) = match r.strip_prefix(r#","hop":"#) {
            Some(r) => {
                let (hop, r) = number(r)?;
                let (cause, r) = plain_string(r.strip_prefix(r#","cause":""#)?)?;
                (json_int(hop)?.parse().ok()?, cause, r)
            }
            None => (0, "", r),
        };
        let hex = stream.len() == 16 && stream.bytes().all(|b| b.is_ascii_hexdigit());
        if r != "}" || node.is_empty() || !hex {
            return None;
        }
        Some(EventRef {
            node: Cow::Borrowed(node),
            stream: Cow::Borrowed(stream),
            seq: json_int(seq)?.parse().ok()?,
            module: Cow::Borrowed(module),
            kind: Cow::Borrowed(kind),
            code: json_int(code)?.parse().ok()?,
            hop,
            cause: Cow::Borrowed(cause),
            prev,
        })
    }
}

/// A string's text up to its closing quote, and what follows the quote, where
/// it has no escape (`None` at a backslash or no quote).
fn plain_string(r: &str) -> Option<(&str, &str)> {
    let end = r.bytes().position(|c| c == b'"' || c == b'\\')?;
    (r.as_bytes()[end] == b'"').then(|| (&r[..end], &r[end + 1..]))
}

/// A bare token as `rules::value` reads one, not empty, and what follows it.
fn number(r: &str) -> Option<(&str, &str)> {
    let end = r
        .bytes()
        .position(|c| !value::token_byte(c))
        .unwrap_or(r.len());
    (end > 0).then(|| r.split_at(end))
}

/// `s` as a number when it is at most 16 hex digits (0 otherwise): a stream id,
/// read per message, so in one pass (`from_str_radix` took about 500
/// instructions for 16 digits).
pub fn hex_u64(s: &str) -> u64 {
    if s.is_empty() || s.len() > 16 {
        return 0;
    }
    let mut v = 0u64;
    for c in s.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return 0,
        };
        v = v << 4 | u64::from(d);
    }
    v
}

/// `t` where it is a JSON integer (Rust's parse also takes `+1` and `007`).
fn json_int(t: &str) -> Option<&str> {
    let digits = t.strip_prefix('-').unwrap_or(t);
    let ok = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !(digits.len() > 1 && digits.starts_with('0'));
    ok.then_some(t)
}

/// Fills `slot` once: a second value for one field is no event.
fn set<T>(slot: &mut Option<T>, v: T) -> bool {
    slot.replace(v).is_none()
}

impl EventFields {
    /// `EventRef::parse`, owned.
    #[cfg(test)]
    pub fn parse(payload: &[u8]) -> Option<EventFields> {
        let e = EventRef::parse(payload)?;
        Some(EventFields {
            node: e.node.into_owned(),
            stream: e.stream.into_owned(),
            seq: e.seq,
            module: e.module.into_owned(),
            kind: e.kind.into_owned(),
            code: e.code,
            hop: e.hop,
        })
    }

    /// The stream as a number (for the duplicate table).
    pub fn stream_id(&self) -> u64 {
        hex_u64(&self.stream)
    }
}

// The ids and causes below are built by hand, not with `format!`: they are
// made for every message a module without a check settles (its event's
// cause), and `format!`'s machinery (`{:016x}`'s padding above all) costs more
// than the rest of settling one: about 1,300 instructions a plain message's
// id and 2,500 a crd event's cause, against about 420 and 430 by hand
// (callgrind).

/// The cause of a run of a crd event at `hop`: hop + 1 (at most `u32::MAX`),
/// and `node/stream/seq` (`stream` alone for an empty node). A byte of a node
/// name that is not printable ASCII (a hostile one) becomes `_`, and it is
/// cut, so `of` is one word (`Cause::new`).
fn cause_of(hop: u32, node: &str, stream: &str, seq: u64) -> Cause {
    let hop = hop.saturating_add(1);
    if node.is_empty() {
        let of = stream.to_string();
        return Cause { hop, of };
    }
    let cut = node.len().min(200);
    let mut of = String::with_capacity(cut + stream.len() + 22);
    match node.get(..cut) {
        // A fleet's names: copied whole, not a byte at a time.
        Some(n) if n.bytes().all(|b| b.is_ascii_graphic()) => of.push_str(n),
        _ => of.extend(
            node.as_bytes()[..cut]
                .iter()
                .map(|&b| match b.is_ascii_graphic() {
                    true => char::from(b),
                    false => '_',
                }),
        ),
    }
    of.push('/');
    of.push_str(stream);
    of.push('/');
    push_decimal(&mut of, seq);
    Cause { hop, of }
}

/// The cause of a run of a message that is no crd event: hop 1, its id.
fn first_cause(id: String) -> Cause {
    Cause { hop: 1, of: id }
}

/// `CRD_MESSAGE_ID` of a crd event: `STREAM-SEQ`.
fn event_id(stream: &str, seq: u64) -> String {
    let mut id = String::with_capacity(stream.len() + 21);
    id.push_str(stream);
    id.push('-');
    push_decimal(&mut id, seq);
    id
}

/// `CRD_MESSAGE_ID` of any other payload: `m-` and the hash of topic and
/// payload, 16 lowercase hex digits.
fn hash_id(topic: &str, payload: &[u8]) -> String {
    let h = fnv1a(&[topic.as_bytes(), payload]);
    let mut id = *b"m-0000000000000000";
    hex16(h, &mut id[2..]);
    String::from_utf8(id.to_vec()).expect("`m-` and hex digits are ASCII")
}

/// `v` as 16 lowercase hex digits, into `out` (16 bytes).
fn hex16(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[(v >> (60 - 4 * i)) as usize & 0xf];
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// 64-bit FNV-1a: a stable id for a payload that carries none of its own.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What a subscribed module's check and response are told about one message
/// (`m`, kept beside it: the id and the origin are made from both on demand).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub event: Option<EventFields>,
}

impl Facts {
    #[cfg(test)]
    pub fn of(m: &Message) -> Facts {
        Facts {
            event: EventFields::parse(&m.payload),
        }
    }

    /// `CRD_MESSAGE_ID`: `STREAM-SEQ` for a crd event (the same for every copy of
    /// it, so a response can be idempotent), else `m-` and a hash of topic and
    /// payload (the same for every redelivery of the same message).
    pub fn id(&self, m: &Message) -> String {
        match &self.event {
            Some(e) => event_id(&e.stream, e.seq),
            None => hash_id(&m.topic, &m.payload),
        }
    }

    /// Whose message this is, for `trigger_after` and `cooldown`: the event's
    /// node, else the topic `m` came on (at most `MAX_ORIGIN_BYTES`).
    pub fn origin<'a>(&'a self, m: &'a Message) -> &'a str {
        cut(
            self.event.as_ref().map_or(&m.topic, |e| &e.node),
            MAX_ORIGIN_BYTES,
        )
    }

    /// The cause the events of a run of `m` carry: the message's hop plus
    /// one, and `node/stream/seq` of a crd event, else `CRD_MESSAGE_ID`.
    pub fn cause(&self, m: &Message) -> Cause {
        match &self.event {
            Some(e) => cause_of(e.hop, &e.node, &e.stream, e.seq),
            None => first_cause(self.id(m)),
        }
    }

    /// The `CRD_*` variables beside the module's own three.
    pub fn env(&self, m: &Message) -> Vec<(&'static str, OsString)> {
        let cause = self.cause(m);
        let mut v = vec![
            ("CRD_TOPIC", OsString::from(&m.topic)),
            ("CRD_MESSAGE_ID", OsString::from(self.id(m))),
            ("CRD_HOP", cause.hop.to_string().into()),
            ("CRD_CAUSE", cause.of.into()),
        ];
        if let Some(e) = &self.event {
            v.push(("CRD_EVENT_NODE", e.node.clone().into()));
            v.push(("CRD_EVENT_MODULE", e.module.clone().into()));
            v.push(("CRD_EVENT_KIND", e.kind.clone().into()));
            v.push(("CRD_EVENT_CODE", e.code.to_string().into()));
            v.push(("CRD_EVENT_STREAM", e.stream.clone().into()));
            v.push(("CRD_EVENT_SEQ", e.seq.to_string().into()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repeatable stream of numbers below `n` (xorshift64).
    fn xorshift(mut x: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        }
    }

    fn msg(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.to_vec(),
            received_ms: 7,
        }
    }

    /// The one-pass reader of crd's own events gives what the general one
    /// gives, or leaves the payload to it: events as crd writes them (with and
    /// without escapes, odd strings, large numbers), the same reordered or
    /// spaced, and every one of them cut short or with a byte changed.
    #[test]
    fn crds_own_events_read_in_one_pass_as_member_by_member() {
        let same = |p: &[u8]| {
            let own = EventRef::parse_own(p).map(|e| format!("{e:?}"));
            let all = EventRef::parse_members(p).map(|e| format!("{e:?}"));
            if own.is_some() {
                assert_eq!(own, all, "{}", String::from_utf8_lossy(p));
            }
            own.is_some()
        };
        let mut rnd = xorshift(0x2545_f491_4f6c_dd1d);
        let mut jump = xorshift(0x9e37_79b9_7f4a_7c15);
        let words = [
            "",
            "r1",
            "Disk",
            "fired",
            "n\\\"x",
            "é€😀",
            "a\\nb",
            "-1",
            "🙂🙂",
        ];
        let nums = [
            "0",
            "1",
            "-1",
            "42",
            "18446744073709551615",
            "-2147483648",
            "1e3",
            "007",
            "+1",
        ];
        let mut fast = 0;
        for i in 0..4_000u64 {
            let w = |r: u64| words[r as usize % words.len()];
            let n = |r: u64| nums[r as usize % nums.len()];
            let stream = match rnd(4) {
                0 => "00000000000000ab".to_string(),
                1 => format!("{:016x}", rnd(u64::MAX)),
                2 => "ABCDEF0123456789".to_string(),
                _ => "12345".to_string(),
            };
            let last = if rnd(2) == 0 { "out" } else { "message" };
            // From a generator of its own: the rest is drawn as before.
            let prev = match jump(3) {
                0 => format!(
                    r#","prev":{}"#,
                    ["0", "42", "18446744073709551615"][jump(3) as usize]
                ),
                _ => String::new(),
            };
            let caused = match rnd(3) {
                0 => String::new(),
                _ => format!(r#","hop":{},"cause":"{}""#, n(rnd(9)), w(rnd(9))),
            };
            let p = format!(
                r#"{{"node":"{}","stream":"{stream}","seq":{}{prev},"ts":{},"module":"{}","kind":"{}","code":{},"dur_ms":{},"{last}":"{}"{caused}}}"#,
                w(rnd(9)),
                n(rnd(9)),
                n(rnd(9)),
                w(rnd(9)),
                w(rnd(9)),
                n(rnd(9)),
                n(rnd(9)),
                w(rnd(9)),
            );
            fast += usize::from(same(p.as_bytes()));
            let spaced = p.replacen(',', " , ", 1 + i as usize % 3);
            assert!(!same(spaced.as_bytes()), "{spaced}");
            let b = p.as_bytes();
            same(&b[..rnd(b.len() as u64) as usize]);
            let mut m = b.to_vec();
            let at = rnd(m.len() as u64) as usize;
            m[at] = [b'"', b'\\', b',', b'}', b'0', b' ', 0xff, b'x'][rnd(8) as usize];
            same(&m);
        }
        // The one-pass reader did take most of them (the rest had an escape,
        // an empty node, a bad stream or a number that is no JSON integer).
        assert!(fast > 100, "{fast}");
        let own = br#"{"node":"r1","stream":"00000000000000ab","seq":3,"ts":1,"module":"M","kind":"fired","code":0,"dur_ms":2,"out":""}"#;
        assert!(same(own));
        let e = EventRef::parse(own).unwrap();
        assert_eq!((&*e.node, e.seq, &*e.kind, e.code), ("r1", 3, "fired", 0));
        assert_eq!((e.hop, &*e.cause), (0, ""), "an edge's event: hop 0");
        let run = br#"{"node":"c1","stream":"00000000000000cd","seq":9,"ts":1,"module":"M","kind":"response","code":0,"dur_ms":2,"out":"","hop":2,"cause":"r1/00000000000000ab/3"}"#;
        assert!(same(run));
        let e = EventRef::parse(run).unwrap();
        assert_eq!((e.hop, &*e.cause), (2, "r1/00000000000000ab/3"));
        assert_eq!(e.prev, None);
        let jumped = br#"{"node":"r1","stream":"00000000000000ab","seq":70000,"prev":3,"ts":1,"module":"spool","kind":"error","code":0,"dur_ms":0,"out":""}"#;
        assert!(same(jumped));
        assert_eq!(EventRef::parse(jumped).unwrap().prev, Some(3));
    }

    #[test]
    fn stream_ids_read_as_from_str_radix_reads_16_hex_digits() {
        for s in [
            "0000000000000000",
            "00000000000000ab",
            "ffffffffffffffff",
            "FFFFFFFFFFFFFFFF",
            "0123456789abcdef",
            "fedcba9876543210",
            "DeadBeefCafe0001",
            "1",
            "a",
        ] {
            assert_eq!(hex_u64(s), u64::from_str_radix(s, 16).unwrap(), "{s}");
        }
        for bad in [
            "",
            "g000000000000000",
            "+1",
            "-1",
            "10000000000000000",
            "0x1",
            " 1",
        ] {
            assert_eq!(hex_u64(bad), 0, "{bad}");
        }
    }

    #[test]
    fn journal_records_round_trip_and_refuse_other_versions() {
        let m = msg("crd/r1/event/Disk", b"\x00\xffbinary");
        let r = m.encode();
        let v = View::of(&r).unwrap();
        assert_eq!(v.id(), Facts::of(&m).id(&m), "a payload's hash");
        assert_eq!(v.origin(), Facts::of(&m).origin(&m), "the topic");
        assert_eq!(r[0], JOURNAL_VERSION);
        assert_eq!(Message::decode(&r), Ok(m));
        let unknown = Message::decode(&[1, 2, 3]).unwrap_err();
        assert_eq!(unknown, RecordError::Version(1));
        assert_eq!(unknown.to_string(), "journal record of unknown version 1");
        assert_eq!(Message::decode(&[]), Err(RecordError::Empty));
        assert!(Message::decode(&r[..r.len() - 3]).is_err(), "a cut record");
        let mut long = r.clone();
        long.push(0);
        let past = Message::decode(&long).unwrap_err();
        assert_eq!(past.to_string(), "journal record: 1 bytes past its end");
    }

    #[test]
    fn an_events_record_carries_the_fields_its_json_gives() {
        let payloads = [
            r#"{"node":"r1","stream":"00000000000000AB","seq":7,"ts":1,"module":"Disk","kind":"fired","code":-3,"dur_ms":1,"out":"x"}"#,
            r#"{"node":"r\"1\u00e9","stream":"ffffffffffffffff","seq":18446744073709551615,"module":"M","kind":"k","code":2147483647}"#,
            r#"{"node":"n","stream":"0123456789abcdef","seq":0,"module":"","kind":"","code":-2147483648}"#,
            r#"{"node":"c","stream":"0123456789abcdef","seq":5,"module":"M","kind":"fired","code":0,"hop":300,"cause":"r/0123456789abcdef/1"}"#,
        ];
        for p in payloads {
            let e = EventRef::parse(p.as_bytes()).expect(p);
            let r = Message::encode_event("crd/r1/event/Disk", p.as_bytes(), 9, &e);
            assert_eq!(r[0], EVENT_JOURNAL_VERSION);
            let m = msg("crd/r1/event/Disk", p.as_bytes());
            let m = Message {
                received_ms: 9,
                ..m
            };
            let want = Facts::of(&m);
            assert!(want.event.is_some(), "{p}");
            assert_eq!(
                Message::decode_with_facts(&r),
                Ok((m.clone(), want.clone()))
            );
            assert_eq!(View::of(&r).unwrap().origin(), want.origin(&m));
            assert_eq!(View::of(&r).unwrap().id(), want.id(&m));
            assert_eq!(View::of(&m.encode()).unwrap().origin(), want.origin(&m));
            // The same message in a plain record (a journal written before):
            // parsed, the same facts.
            assert_eq!(Message::decode_with_facts(&m.encode()), Ok((m, want)));
            for cut in 1..r.len() {
                assert!(
                    Message::decode_with_facts(&r[..cut]).is_err(),
                    "cut at {cut}"
                );
            }
            let mut long = r.clone();
            long.push(0);
            assert!(Message::decode_with_facts(&long).is_err());
            // A record journaled before `hop`: read, hop 0.
            let mut old = r[..r.len() - varint_len(u64::from(e.hop))].to_vec();
            old[0] = EVENT_JOURNAL_VERSION_NO_HOP;
            let v = View::of(&old).expect("an old record");
            assert_eq!(v.event.map(|e| (e.seq, e.hop)), Some((e.seq, 0)));
        }
    }

    fn varint_len(v: u64) -> usize {
        let mut b = Vec::new();
        varint(&mut b, v);
        b.len()
    }

    #[derive(serde::Serialize)]
    struct Postcard<'a> {
        topic: &'a str,
        payload: &'a [u8],
        received_ms: u64,
    }

    #[test]
    fn the_hand_encoding_is_postcards_byte_for_byte() {
        // Journals written before it (by postcard) read the same, and the other way.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for n in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let payload: Vec<u8> = (0..n).map(|i| (i as u64 ^ rng) as u8).collect();
            let topic = "é/".repeat(n % 200);
            for ms in [0, 1, 127, 128, rng, u64::MAX] {
                let m = Message {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    received_ms: ms,
                };
                let pc = postcard::to_extend(
                    &Postcard {
                        topic: &topic,
                        payload: &payload,
                        received_ms: ms,
                    },
                    vec![JOURNAL_VERSION],
                )
                .unwrap();
                assert_eq!(m.encode(), pc, "{n} bytes, {ms}");
                assert_eq!(Message::decode(&pc), Ok(m));
            }
        }
        // A varint of 11 bytes, or of 10 past 64 bits: refused, not wrapped.
        let mut bad = vec![JOURNAL_VERSION];
        bad.extend([0xff; 9]);
        bad.push(0x02);
        let e = Message::decode(&bad).unwrap_err();
        assert_eq!(e, RecordError::Varint("varint past 64 bits"));
    }

    /// What `EventRef::parse` must agree with: serde_json's derive (the reader it
    /// replaced) on the same fields.
    #[derive(serde::Deserialize)]
    struct Serde {
        node: String,
        stream: String,
        seq: u64,
        module: String,
        kind: String,
        code: i32,
    }

    type Fields = (String, String, u64, String, String, i32);

    fn by_serde(p: &[u8]) -> Option<Fields> {
        let e: Serde = serde_json::from_slice(p).ok()?;
        let hex = e.stream.len() == 16 && e.stream.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && !e.node.is_empty()).then_some((e.node, e.stream, e.seq, e.module, e.kind, e.code))
    }

    #[test]
    fn the_event_reader_agrees_with_serde_json_on_json_objects() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let values = [
            r#""r1""#,
            r#""""#,
            r#""00000000000000ab""#,
            r#""0000000000000zab""#,
            r#""a\"b\u00e9\ud83d\ude00""#,
            "42",
            "-3",
            "0",
            "007",
            "+1",
            "1.0",
            "1e2",
            "18446744073709551615",
            "18446744073709551616",
            "2147483648",
            "-2147483648",
            "null",
            "true",
            r#"{"x":[1,"}"]}"#,
            "[]",
        ];
        let fields = [
            "node", "stream", "seq", "module", "kind", "code", "ts", "out",
        ];
        let (mut events, mut total) = (0, 0);
        for _ in 0..20_000 {
            let mut members = Vec::new();
            for f in fields {
                // Usually once with a good value; sometimes missing, twice, or odd.
                let times = [1, 1, 1, 1, 1, 1, 0, 2][next(8) as usize];
                for _ in 0..times {
                    let good = match f {
                        "node" | "module" | "kind" => r#""r1""#,
                        "stream" => r#""00000000000000ab""#,
                        _ => "42",
                    };
                    let v = if next(4) == 0 {
                        values[next(values.len() as u64) as usize]
                    } else {
                        good
                    };
                    members.push(format!("{f:?}:{v}"));
                }
            }
            for i in (1..members.len()).rev() {
                members.swap(i, next(i as u64 + 1) as usize);
            }
            let sep = if next(2) == 0 { "," } else { " , " };
            let p = format!("{{{}}}", members.join(sep));
            let ours: Option<Fields> = EventRef::parse(p.as_bytes()).map(|e| {
                (
                    e.node.into_owned(),
                    e.stream.into_owned(),
                    e.seq,
                    e.module.into_owned(),
                    e.kind.into_owned(),
                    e.code,
                )
            });
            if serde_json::from_slice::<serde::de::IgnoredAny>(p.as_bytes()).is_err() {
                // Not JSON (`007`, `+1`): where it is an event's own field the
                // reader refuses it (below); elsewhere it is not read.
                continue;
            }
            assert_eq!(ours, by_serde(p.as_bytes()), "{p}");
            total += 1;
            events += usize::from(ours.is_some());
        }
        for bad in ["007", "+1", "-", "1.0", "0x10"] {
            let p = format!(
                r#"{{"node":"r1","stream":"00000000000000ab","seq":{bad},"module":"m","kind":"k","code":0}}"#
            );
            assert!(EventRef::parse(p.as_bytes()).is_none(), "{p}");
            let p = p
                .replace(&format!(":{bad},"), ":1,")
                .replace("\"code\":0", &format!("\"code\":{bad}"));
            assert!(EventRef::parse(p.as_bytes()).is_none(), "{p}");
        }
        assert!(
            events > total / 20 && events < total,
            "{events} of {total}: both kinds seen"
        );
    }

    #[test]
    fn an_event_borrows_its_fields_unless_escaped() {
        let p = br#"{"node":"r\u0031","stream":"00000000000000ab","seq":42,"module":"Disk","kind":"fired","code":0}"#;
        let e = EventRef::parse(p).unwrap();
        assert_eq!(e.node, "r1");
        assert!(matches!(e.node, Cow::Owned(_)), "unescaped");
        assert!(matches!(e.module, Cow::Borrowed("Disk")));
        assert_eq!(e.stream_id(), 0xab);
        let owned = EventFields::parse(p).unwrap();
        assert_eq!((owned.node.as_str(), owned.kind.as_str()), ("r1", "fired"));
        assert!(EventRef::parse(br#"{"node":"r1","stream":"00000000000000ab"}"#).is_none());
    }

    #[test]
    fn a_crd_event_gives_its_fields_and_a_stable_id() {
        let p = br#"{"node":"r1","stream":"00000000000000ab","seq":42,"ts":5,"module":"Disk","kind":"fired","code":0,"dur_ms":7,"out":"97%"}"#;
        let m = msg("crd/r1/event/Disk", p);
        let f = Facts::of(&m);
        let e = f.event.as_ref().unwrap();
        assert_eq!((e.node.as_str(), e.seq, e.stream_id()), ("r1", 42, 0xab));
        assert_eq!(f.id(&m), "00000000000000ab-42");
        assert_eq!(f.origin(&m), "r1");
        let env = f.env(&m);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("CRD_TOPIC").as_deref(), Some("crd/r1/event/Disk"));
        assert_eq!(get("CRD_EVENT_KIND").as_deref(), Some("fired"));
        assert_eq!(get("CRD_EVENT_CODE").as_deref(), Some("0"));
        assert_eq!(get("CRD_EVENT_SEQ").as_deref(), Some("42"));
        // A run of an edge's event is hop 1, caused by that event.
        assert_eq!(get("CRD_HOP").as_deref(), Some("1"));
        assert_eq!(get("CRD_CAUSE").as_deref(), Some("r1/00000000000000ab/42"));
        let relayed = br#"{"node":"c 1","stream":"00000000000000cd","seq":3,"module":"M","kind":"response","code":0,"hop":1,"cause":"r1/00000000000000ab/42"}"#;
        let m = msg("crd/c1/event/M", relayed);
        let c = Facts::of(&m).cause(&m);
        assert_eq!((c.hop, c.of.as_str()), (2, "c_1/00000000000000cd/3"));
        let plain = msg("site/t", b"21.5");
        let c = Facts::of(&plain).cause(&plain);
        assert_eq!((c.hop, c.of), (1, Facts::of(&plain).id(&plain)));
    }

    #[test]
    fn ids_and_causes_built_by_hand_read_as_format_writes_them() {
        for v in [0, 1, 9, 10, 99, 100, 12_345, 0xab, u64::MAX - 1, u64::MAX] {
            assert_eq!(
                event_id("00000000000000ab", v),
                format!("00000000000000ab-{v}")
            );
            let mut hex = [0u8; 16];
            hex16(v, &mut hex);
            assert_eq!(hex, format!("{v:016x}").as_bytes());
        }
        for (t, p) in [("t", &b"x"[..]), ("", b""), ("plant/4/temp", b"\xff\x00")] {
            let want = format!("m-{:016x}", fnv1a(&[t.as_bytes(), p]));
            assert_eq!(hash_id(t, p), want);
        }
        let reference = |node: &str, stream: &str, seq: u64| {
            if node.is_empty() {
                return stream.to_string();
            }
            let node: String = node
                .bytes()
                .take(200)
                .map(|b| {
                    if b.is_ascii_graphic() {
                        char::from(b)
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("{node}/{stream}/{seq}")
        };
        let long = "é".repeat(150);
        for node in ["r1", "c 1", "\u{7f}x\ty", "", &long, &"n".repeat(300)] {
            for seq in [0, 42, u64::MAX] {
                let c = cause_of(3, node, "00000000000000cd", seq);
                assert_eq!(c.of, reference(node, "00000000000000cd", seq), "{node:?}");
                assert_eq!(c.hop, 4);
            }
        }
        assert_eq!(cause_of(u32::MAX, "n", "s", 1).hop, u32::MAX);
    }

    #[test]
    fn any_other_payload_is_passed_as_it_is_with_a_hash_id_and_the_topic_as_origin() {
        for p in [
            &b"plain text"[..],
            br#"{"foreign":"json"}"#,
            br#"{"node":"r1","stream":"nothex","seq":1,"module":"m","kind":"k","code":0}"#,
            b"\xff\x00",
        ] {
            let m = msg("plant/4/temp", p);
            let f = Facts::of(&m);
            assert!(f.event.is_none(), "{p:?}");
            let id = f.id(&m);
            assert!(id.starts_with("m-") && id.len() == 18, "{id}");
            assert_eq!(f.origin(&m), "plant/4/temp");
            let names: Vec<_> = f.env(&m).into_iter().map(|(k, _)| k).collect();
            assert_eq!(
                names,
                ["CRD_TOPIC", "CRD_MESSAGE_ID", "CRD_HOP", "CRD_CAUSE"]
            );
        }
        let id = |t: &str, p: &[u8]| {
            let m = msg(t, p);
            Facts::of(&m).id(&m)
        };
        let a = id("t", b"x");
        assert_eq!(a, id("t", b"x"), "the same message, the same id");
        assert_ne!(a, id("t", b"y"));
        assert_ne!(a, id("tx", b""), "topic and payload do not run together");
        let long = msg(&"é".repeat(300), b"");
        assert!(Facts::of(&long).origin(&long).len() <= MAX_ORIGIN_BYTES);
    }
}
