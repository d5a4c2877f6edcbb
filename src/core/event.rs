//! Events: what crd records about every outcome, and the sink they are handed to.
//!
//! The core produces `Event` values; the daemon encodes them (`encode`) and appends
//! them to the spool, which assigns `seq`. This file knows nothing of files, sockets
//! or MQTT.
//!
//! Payload in the spool: one version byte (`PAYLOAD_VERSION`), then the postcard
//! encoding of `Event` (fields in declaration order; `kind` as its variant index,
//! so new kinds are only ever added at the end).

use serde::{Deserialize, Serialize};
use std::fmt;

/// What happened. The names are the wire names (`kind` in the JSON, README: Forwarding to MQTT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A check found its condition present (and `trigger_after` was reached).
    Fired,
    /// A check found the condition gone after it had fired.
    Cleared,
    /// A response finished; `code` is its exit code.
    Response,
    /// A check failed (unexpected exit code, signal, timeout or exec failure), or
    /// crd itself reports a problem (module `spool`: records dropped).
    Error,
    /// `crd emit SUFFIX MESSAGE`: `module` holds the topic suffix, `out` the message.
    Emit,
    /// A remote command's reply: `module` holds the command's id, `out` the whole
    /// reply JSON, published as it is on `<prefix>/<node>/reply/<id>`.
    Reply,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fired => "fired",
            Kind::Cleared => "cleared",
            Kind::Response => "response",
            Kind::Error => "error",
            Kind::Emit => "emit",
            Kind::Reply => "reply",
        }
    }
}

/// Exit codes that stand for outcomes other than a normal exit, as shells and
/// coreutils' `timeout` spell them, so an operator reads `code` the usual way.
pub const CODE_TIMEOUT: i32 = 124;
pub const CODE_EXEC_FAILED: i32 = 127;
pub const CODE_SIGNAL_BASE: i32 = 128;

/// One outcome, before it is made durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Wall-clock unix milliseconds; may be 1970 before NTP, never used for ordering.
    pub ts_ms: u64,
    pub module: String,
    pub kind: Kind,
    pub code: i32,
    pub dur_ms: u32,
    /// Bounded by the module's `output_limit` plus a short note.
    pub out: String,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event module={} kind={} code={} dur_ms={}",
            self.module,
            self.kind.as_str(),
            self.code,
            self.dur_ms
        )?;
        if !self.out.is_empty() {
            write!(f, " out={:?}", self.out)?;
        }
        Ok(())
    }
}

/// The first byte of every spooled event payload.
pub const PAYLOAD_VERSION: u8 = 1;

/// The spool payload of `ev`. If it is larger than `max` bytes, `out` is cut (at a
/// character boundary, marked) until it fits; `None` only if even an empty `out`
/// does not fit.
pub fn encode(ev: &Event, max: usize) -> Option<Vec<u8>> {
    let mut buf = vec![PAYLOAD_VERSION];
    buf = postcard::to_extend(ev, buf).ok()?;
    if buf.len() <= max {
        return Some(buf);
    }
    const MARK: &str = " [cut to fit the spool's record limit]";
    let over = buf.len() - max + MARK.len();
    let mut keep = ev.out.len().checked_sub(over + 8)?;
    while !ev.out.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = Event {
        out: format!("{}{MARK}", &ev.out[..keep]),
        ..ev.clone()
    };
    let buf = postcard::to_extend(&cut, vec![PAYLOAD_VERSION]).ok()?;
    (buf.len() <= max).then_some(buf)
}

/// An event decoded in place from a spool payload (no allocation): the
/// forwarder's view. Same fields, same postcard layout as `Event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct EventRef<'a> {
    pub ts_ms: u64,
    pub module: &'a str,
    pub kind: Kind,
    pub code: i32,
    pub dur_ms: u32,
    pub out: &'a str,
}

impl Event {
    pub fn as_ref(&self) -> EventRef<'_> {
        EventRef {
            ts_ms: self.ts_ms,
            module: &self.module,
            kind: self.kind,
            code: self.code,
            dur_ms: self.dur_ms,
            out: &self.out,
        }
    }
}

impl EventRef<'_> {
    pub fn to_event(&self) -> Event {
        Event {
            ts_ms: self.ts_ms,
            module: self.module.to_string(),
            kind: self.kind,
            code: self.code,
            dur_ms: self.dur_ms,
            out: self.out.to_string(),
        }
    }
}

/// Decodes a spool payload without copying its strings.
pub fn decode_ref(payload: &[u8]) -> Result<EventRef<'_>, String> {
    match payload.split_first() {
        Some((&PAYLOAD_VERSION, rest)) => {
            postcard::from_bytes(rest).map_err(|e| format!("bad event payload: {e}"))
        }
        Some((v, _)) => Err(format!(
            "event payload version {v}, this crd reads {PAYLOAD_VERSION}"
        )),
        None => Err("empty event payload".into()),
    }
}

/// Decodes a spool payload.
pub fn decode(payload: &[u8]) -> Result<Event, String> {
    decode_ref(payload).map(|e| e.to_event())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(out: &str) -> Event {
        Event {
            ts_ms: 1_700_000_000_123,
            module: "Disk".into(),
            kind: Kind::Fired,
            code: 0,
            dur_ms: 12,
            out: out.into(),
        }
    }

    #[test]
    fn payload_round_trip_and_pinned_bytes() {
        let e = ev("hi");
        let b = encode(&e, 1024).unwrap();
        // version, varint ts, "Disk", kind 0, zigzag code 0, dur 12, "hi"
        assert_eq!(
            b,
            [
                1, 0xfb, 0xd0, 0x95, 0xff, 0xbc, 0x31, 4, b'D', b'i', b's', b'k', 0, 0, 12, 2,
                b'h', b'i'
            ]
        );
        assert_eq!(decode(&b), Ok(e.clone()));
        assert_eq!(
            decode_ref(&b),
            Ok(e.as_ref()),
            "the borrowed view reads the same bytes"
        );
        let emit = Event {
            kind: Kind::Emit,
            code: -3,
            ..ev("")
        };
        assert_eq!(decode(&encode(&emit, 1024).unwrap()), Ok(emit));
    }

    #[test]
    fn oversized_output_is_cut_to_fit_at_a_char_boundary() {
        let e = ev(&"é".repeat(1000));
        let b = encode(&e, 300).unwrap();
        assert!(b.len() <= 300);
        let d = decode(&b).unwrap();
        assert!(d.out.ends_with("[cut to fit the spool's record limit]"));
        assert!(d.out.starts_with("éé"));
        assert_eq!(
            encode(
                &Event {
                    module: "m".repeat(400),
                    ..ev("")
                },
                300
            ),
            None
        );
    }

    #[test]
    fn foreign_payloads_are_errors() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 2]).unwrap_err().contains("version 9"));
        assert!(decode(&[1, 0xff]).is_err());
    }
}
