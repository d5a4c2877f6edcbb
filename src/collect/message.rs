//! An inbound message as the collector keeps and hands it on: its journal record
//! (bytes in the collector's spool), and what a subscribed module's children are
//! told about it (`CRD_TOPIC`, `CRD_MESSAGE_ID`, and `CRD_EVENT_*` when the
//! payload is a crd event). No IO here.
//!
//! Journal record: one byte `JOURNAL_VERSION`, then the postcard encoding of
//! `Message` (topic, payload bytes, wall-clock receive time). The version byte is
//! not the event payload's (1), so a record of one kind is never read as the other.

use serde::{Deserialize, Serialize};
use std::ffi::OsString;

/// The first byte of every journal record.
pub const JOURNAL_VERSION: u8 = 0x10;
/// Longest origin key kept per module (a node name, or a topic), bytes.
pub const MAX_ORIGIN_BYTES: usize = 256;

/// One message from the broker, as journaled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Unix milliseconds when it arrived (the collector's clock).
    pub received_ms: u64,
}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_extend(self, vec![JOURNAL_VERSION])
            .expect("invariant: postcard encodes into a Vec without failing")
    }

    pub fn decode(record: &[u8]) -> Result<Message, String> {
        match record.split_first() {
            Some((&JOURNAL_VERSION, rest)) => {
                postcard::from_bytes(rest).map_err(|e| format!("journal record: {e}"))
            }
            Some((v, _)) => Err(format!("journal record of unknown version {v}")),
            None => Err("empty journal record".into()),
        }
    }
}

/// The fields of a crd event's JSON (`mqtt::wire`) that a collector's module is
/// given; the rest of the payload stays on stdin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct EventFields {
    pub node: String,
    pub stream: String,
    pub seq: u64,
    pub module: String,
    pub kind: String,
    pub code: i32,
}

impl EventFields {
    /// The fields when `payload` is a crd event (a JSON object with at least
    /// `node`, `stream` as 16 hex digits, `seq`, `module`, `kind`, `code`).
    pub fn parse(payload: &[u8]) -> Option<EventFields> {
        let e: EventFields = serde_json::from_slice(payload).ok()?;
        let hex = e.stream.len() == 16 && e.stream.bytes().all(|b| b.is_ascii_hexdigit());
        (hex && !e.node.is_empty()).then_some(e)
    }

    /// The stream as a number (for the duplicate table).
    pub fn stream_id(&self) -> u64 {
        u64::from_str_radix(&self.stream, 16).unwrap_or(0)
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

/// What a subscribed module's check and response are told about one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub event: Option<EventFields>,
    /// `CRD_MESSAGE_ID`: `STREAM-SEQ` for a crd event (the same for every copy of
    /// it, so a response can be idempotent), else `m-` and a hash of topic and
    /// payload (the same for every redelivery of the same message).
    pub id: String,
    /// Whose message this is, for `trigger_after` and `cooldown`: the event's node,
    /// else the topic (at most `MAX_ORIGIN_BYTES`).
    pub origin: String,
}

impl Facts {
    pub fn of(m: &Message) -> Facts {
        let event = EventFields::parse(&m.payload);
        let id = match &event {
            Some(e) => format!("{}-{}", e.stream, e.seq),
            None => format!("m-{:016x}", fnv1a(&[m.topic.as_bytes(), &m.payload])),
        };
        let origin = cut(
            event.as_ref().map_or(&m.topic, |e| &e.node),
            MAX_ORIGIN_BYTES,
        )
        .to_string();
        Facts { event, id, origin }
    }

    /// The `CRD_*` variables beside the module's own three.
    pub fn env(&self, topic: &str) -> Vec<(&'static str, OsString)> {
        let mut v = vec![
            ("CRD_TOPIC", OsString::from(topic)),
            ("CRD_MESSAGE_ID", OsString::from(&self.id)),
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

    fn msg(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: payload.to_vec(),
            received_ms: 7,
        }
    }

    #[test]
    fn journal_records_round_trip_and_refuse_other_versions() {
        let m = msg("crd/r1/event/Disk", b"\x00\xffbinary");
        let r = m.encode();
        assert_eq!(r[0], JOURNAL_VERSION);
        assert_eq!(Message::decode(&r), Ok(m));
        assert!(
            Message::decode(&[1, 2, 3])
                .unwrap_err()
                .contains("version 1")
        );
        assert!(Message::decode(&[]).is_err());
        assert!(Message::decode(&r[..r.len() - 3]).is_err(), "a cut record");
    }

    #[test]
    fn a_crd_event_gives_its_fields_and_a_stable_id() {
        let p = br#"{"node":"r1","stream":"00000000000000ab","seq":42,"ts":5,"module":"Disk","kind":"fired","code":0,"dur_ms":7,"out":"97%"}"#;
        let f = Facts::of(&msg("crd/r1/event/Disk", p));
        let e = f.event.as_ref().unwrap();
        assert_eq!((e.node.as_str(), e.seq, e.stream_id()), ("r1", 42, 0xab));
        assert_eq!(f.id, "00000000000000ab-42");
        assert_eq!(f.origin, "r1");
        let env = f.env("crd/r1/event/Disk");
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(get("CRD_TOPIC").as_deref(), Some("crd/r1/event/Disk"));
        assert_eq!(get("CRD_EVENT_KIND").as_deref(), Some("fired"));
        assert_eq!(get("CRD_EVENT_CODE").as_deref(), Some("0"));
        assert_eq!(get("CRD_EVENT_SEQ").as_deref(), Some("42"));
    }

    #[test]
    fn any_other_payload_is_passed_as_it_is_with_a_hash_id_and_the_topic_as_origin() {
        for p in [
            &b"plain text"[..],
            br#"{"foreign":"json"}"#,
            br#"{"node":"r1","stream":"nothex","seq":1,"module":"m","kind":"k","code":0}"#,
            b"\xff\x00",
        ] {
            let f = Facts::of(&msg("plant/4/temp", p));
            assert!(f.event.is_none(), "{p:?}");
            assert!(f.id.starts_with("m-") && f.id.len() == 18, "{}", f.id);
            assert_eq!(f.origin, "plant/4/temp");
            assert_eq!(f.env("plant/4/temp").len(), 2);
        }
        let a = Facts::of(&msg("t", b"x")).id;
        assert_eq!(
            a,
            Facts::of(&msg("t", b"x")).id,
            "the same message, the same id"
        );
        assert_ne!(a, Facts::of(&msg("t", b"y")).id);
        assert_ne!(
            a,
            Facts::of(&msg("tx", b"")).id,
            "topic and payload do not run together"
        );
        let long = "é".repeat(300);
        assert!(Facts::of(&msg(&long, b"")).origin.len() <= MAX_ORIGIN_BYTES);
    }
}
