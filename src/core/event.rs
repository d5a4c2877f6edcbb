//! Events: what crd records about every outcome, and the sink they are handed to.
//!
//! The core produces `Event` values; the daemon encodes them (`encode`) and appends
//! them to the spool, which assigns `seq`. This file knows nothing of files, sockets
//! or MQTT.
//!
//! Payload in the spool: one version byte (`PAYLOAD_VERSION`), then the postcard
//! encoding of `Event` (fields in declaration order; `kind` as its variant index,
//! so new kinds are only ever added at the end), written and read by hand here:
//! LEB128 varints for the integers and string lengths, zigzag for `code`. The
//! postcard crate and serde's derives would cost a router's build more than
//! this; the tests hold the two byte for byte, so spools postcard wrote read
//! the same. The last field, `cause` (an `Option`: a 0 byte for none), is
//! optional on the wire too: a payload that ends before it reads as none.

use std::fmt;

/// What happened. The names are the wire names (`kind` in the JSON, README: Forwarding to MQTT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
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
    /// In variant order: a kind's index in the payload.
    const ALL: [Kind; 6] = [
        Kind::Fired,
        Kind::Cleared,
        Kind::Response,
        Kind::Error,
        Kind::Emit,
        Kind::Reply,
    ];

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
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Event {
    /// Wall-clock unix milliseconds; may be 1970 before NTP, never used for ordering.
    pub ts_ms: u64,
    pub module: String,
    pub kind: Kind,
    pub code: i32,
    pub dur_ms: u32,
    /// Bounded by the module's `output_limit` plus a short note.
    pub out: String,
    /// The message whose run made it, for a collector's run (and `crd emit`
    /// inside one); `None` for an edge's own events and a collector's
    /// spontaneous ones (hop 0).
    pub cause: Option<Cause>,
}

/// What started the run an event comes from: how many runs of messages lie
/// between it and an event no message caused (`hop`, at least 1), and which
/// message started its run (`of`: `node/stream/seq` of a crd event, else its
/// topic). A collector runs nothing on an event whose hop reached `max_hops`,
/// so collectors that subscribe to each other's events cannot feed each other
/// forever.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(test, derive(serde::Serialize, serde::Deserialize))]
pub struct Cause {
    pub hop: u32,
    pub of: String,
}

/// The longest `Cause::of`, bytes.
pub const MAX_CAUSE_BYTES: usize = 256;

impl Cause {
    /// A cause with hop `hop` (at least 1) of `of` (not empty, at most
    /// `MAX_CAUSE_BYTES`, printable ASCII without blanks: it travels as one
    /// word of the control protocol and one environment variable).
    pub fn new(hop: u32, of: &str) -> Option<Cause> {
        let word = !of.is_empty()
            && of.len() <= MAX_CAUSE_BYTES
            && of.bytes().all(|b| b.is_ascii_graphic());
        (hop >= 1 && word).then(|| Cause {
            hop,
            of: of.to_string(),
        })
    }

    /// `HOP,OF`, as `crd emit` passes it to the daemon.
    pub fn parse(w: &str) -> Option<Cause> {
        let (hop, of) = w.split_once(',')?;
        Cause::new(hop.parse().ok()?, of)
    }
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
    let mut buf = Vec::new();
    encode_into(ev, max, &mut buf).then_some(buf)
}

/// `encode` into `buf` (cleared first), so a caller that keeps it allocates
/// nothing per event; false where `encode` gives `None`.
pub fn encode_into(ev: &Event, max: usize, buf: &mut Vec<u8>) -> bool {
    encode_raw(&ev.as_ref(), buf);
    if buf.len() <= max {
        return true;
    }
    const MARK: &str = " [cut to fit the spool's record limit]";
    let over = buf.len() - max + MARK.len();
    let Some(mut keep) = ev.out.len().checked_sub(over + 8) else {
        return false;
    };
    while !ev.out.is_char_boundary(keep) {
        keep -= 1;
    }
    let cut = Event {
        out: format!("{}{MARK}", &ev.out[..keep]),
        ..ev.clone()
    };
    encode_raw(&cut.as_ref(), buf);
    buf.len() <= max
}

/// The version byte and the postcard layout of `ev`, into `b` (cleared first).
fn encode_raw(ev: &EventRef<'_>, b: &mut Vec<u8>) {
    b.clear();
    b.reserve(24 + ev.module.len() + ev.out.len());
    b.push(PAYLOAD_VERSION);
    put_varint(b, ev.ts_ms);
    put_varint(b, ev.module.len() as u64);
    b.extend_from_slice(ev.module.as_bytes());
    put_varint(b, ev.kind as u64);
    put_varint(b, u64::from(((ev.code << 1) ^ (ev.code >> 31)) as u32));
    put_varint(b, u64::from(ev.dur_ms));
    put_varint(b, ev.out.len() as u64);
    b.extend_from_slice(ev.out.as_bytes());
    match ev.cause {
        None => b.push(0),
        Some((hop, of)) => {
            b.push(1);
            put_varint(b, u64::from(hop));
            put_varint(b, of.len() as u64);
            b.extend_from_slice(of.as_bytes());
        }
    }
}

/// Appends `v` as an unsigned LEB128 varint (postcard's integers and lengths).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Takes a varint of at most `bits` (32 or 64) off the front of `r`, refusing
/// one longer than that width's encoding or with bits past it, as postcard does.
pub fn take_varint(r: &mut &[u8], bits: u32) -> Result<u64, &'static str> {
    let too_large = if bits > 32 {
        "varint past 64 bits"
    } else {
        "varint past 32 bits"
    };
    let most = bits.div_ceil(7);
    let mut v: u64 = 0;
    for i in 0..most {
        let (&b, rest) = r.split_first().ok_or("cut short")?;
        *r = rest;
        let low = u64::from(b & 0x7f);
        let shift = 7 * i;
        if i + 1 == most && (b & 0x80 != 0 || low >> (bits - shift) != 0) {
            return Err(too_large);
        }
        v |= low << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(too_large)
}

/// A length-prefixed UTF-8 string off the front of `r`, borrowed.
fn take_str<'a>(r: &mut &'a [u8]) -> Result<&'a str, &'static str> {
    let n = take_varint(r, 64)?;
    if n > r.len() as u64 {
        return Err("cut short");
    }
    let (head, rest) = r.split_at(n as usize);
    *r = rest;
    std::str::from_utf8(head).map_err(|_| "a string that is not UTF-8")
}

/// The postcard layout of an `EventRef` (bytes past it are ignored, as postcard
/// ignores them).
fn decode_fields(mut r: &[u8]) -> Result<EventRef<'_>, &'static str> {
    let r = &mut r;
    let ts_ms = take_varint(r, 64)?;
    let module = take_str(r)?;
    let kind = *Kind::ALL
        .get(take_varint(r, 32)? as usize)
        .ok_or("an unknown kind")?;
    let z = take_varint(r, 32)? as u32;
    let code = (z >> 1) as i32 ^ -((z & 1) as i32);
    let dur_ms = take_varint(r, 32)? as u32;
    let out = take_str(r)?;
    // Ends here in a payload written before `cause`.
    let cause = match r.split_first() {
        None | Some((0, _)) => None,
        Some((1, rest)) => {
            *r = rest;
            Some((take_varint(r, 32)? as u32, take_str(r)?))
        }
        Some(_) => return Err("a bad option tag"),
    };
    Ok(EventRef {
        ts_ms,
        module,
        kind,
        code,
        dur_ms,
        out,
        cause,
    })
}

/// An event decoded in place from a spool payload (no allocation): the
/// forwarder's view. Same fields, same postcard layout as `Event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub ts_ms: u64,
    pub module: &'a str,
    pub kind: Kind,
    pub code: i32,
    pub dur_ms: u32,
    pub out: &'a str,
    /// `Cause`: its hop and whose message.
    pub cause: Option<(u32, &'a str)>,
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
            cause: self.cause.as_ref().map(|c| (c.hop, c.of.as_str())),
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
            cause: self.cause.map(|(hop, of)| Cause {
                hop,
                of: of.to_string(),
            }),
        }
    }
}

/// Decodes a spool payload without copying its strings.
pub fn decode_ref(payload: &[u8]) -> Result<EventRef<'_>, String> {
    match payload.split_first() {
        Some((&PAYLOAD_VERSION, rest)) => {
            decode_fields(rest).map_err(|e| format!("bad event payload: {e}"))
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
            cause: None,
        }
    }

    #[test]
    fn payload_round_trip_and_pinned_bytes() {
        let e = ev("hi");
        let b = encode(&e, 1024).unwrap();
        // version, varint ts, "Disk", kind 0, zigzag code 0, dur 12, "hi", no cause
        let before_cause = [
            1, 0xfb, 0xd0, 0x95, 0xff, 0xbc, 0x31, 4, b'D', b'i', b's', b'k', 0, 0, 12, 2, b'h',
            b'i',
        ];
        assert_eq!(b[..], [&before_cause[..], &[0]].concat());
        assert_eq!(
            decode(&before_cause),
            Ok(e.clone()),
            "a payload written before `cause` reads as one with none"
        );
        let caused = Event {
            cause: Some(Cause {
                hop: 2,
                of: "n0/00000000000000ab/7".into(),
            }),
            ..e.clone()
        };
        let cb = encode(&caused, 1024).unwrap();
        assert_eq!(cb[..before_cause.len()], before_cause);
        assert_eq!(cb[before_cause.len()..before_cause.len() + 3], [1, 2, 21]);
        assert_eq!(decode(&cb), Ok(caused));
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

    /// The hand codec is postcard's, byte for byte: spools written by a crd that
    /// used postcard read the same, and the other way round; what postcard
    /// refuses, this refuses.
    #[test]
    fn the_hand_codec_is_postcards() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for i in 0..3000 {
            let n = next();
            let text = |k: u64| -> String {
                ["", "é", "x", "\u{0}", "€🙂", "long output line "]
                    .iter()
                    .cycle()
                    .skip((k % 6) as usize)
                    .take((k % 40) as usize)
                    .copied()
                    .collect()
            };
            let e = Event {
                ts_ms: if i % 3 == 0 { n } else { n >> (n % 64) },
                module: text(n >> 7),
                kind: Kind::ALL[(n % 6) as usize],
                code: [0, 1, -1, i32::MIN, i32::MAX, (n >> 3) as i32][(n % 6) as usize],
                dur_ms: [0, 127, 128, u32::MAX, (n >> 5) as u32][(n % 5) as usize],
                out: text(n >> 13),
                cause: (n % 3 == 1).then(|| Cause {
                    hop: (n >> 20) as u32 % 300,
                    of: text(n >> 29),
                }),
            };
            let mut want = vec![PAYLOAD_VERSION];
            want = postcard::to_extend(&e, want).unwrap();
            let got = encode(&e, usize::MAX).unwrap();
            assert_eq!(got, want, "{e:?}");
            // Every cut and one flipped byte: both codecs agree on the outcome.
            let cut = (n as usize) % got.len();
            let mut flipped = got.clone();
            let at = 1 + (n as usize >> 8) % (got.len() - 1);
            flipped[at] ^= 1 << (n % 8);
            for b in [&got[..cut], &flipped[..]] {
                let theirs: Result<Event, _> = postcard::from_bytes(b.get(1..).unwrap_or(&[]));
                let ours = decode(b);
                if b.first() != Some(&PAYLOAD_VERSION) {
                    continue;
                }
                // Ending just before `cause`: the layout written before it,
                // read as no cause (postcard wants the tag); exactly those.
                let old_layout = |x: &Event| {
                    let tagged = [&b[1..], &[0][..]].concat();
                    x.cause.is_none()
                        && postcard::from_bytes::<Event>(&tagged).ok() == Some(x.clone())
                };
                match (ours.ok(), theirs.ok()) {
                    (Some(x), None) => assert!(old_layout(&x), "{b:?}"),
                    (o, t) => assert_eq!(o, t, "{b:?}"),
                }
                if b == &got[..cut] && cut + 1 == got.len() && e.cause.is_none() {
                    assert_eq!(decode(b), Ok(e.clone()), "cut before the tag");
                }
            }
        }
    }

    #[test]
    fn varints_refuse_what_overflows_their_width() {
        let take = |b: &[u8], bits| take_varint(&mut &b[..], bits);
        assert_eq!(
            take(&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            Ok(u64::from(u32::MAX))
        );
        assert_eq!(
            take(&[0xff, 0xff, 0xff, 0xff, 0x1f], 32),
            Err("varint past 32 bits")
        );
        assert_eq!(
            take(&[0x80, 0x80, 0x80, 0x80, 0x80, 0], 32),
            Err("varint past 32 bits")
        );
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(take(&max, 64), Ok(u64::MAX));
        let over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert_eq!(take(&over, 64), Err("varint past 64 bits"));
        assert_eq!(take(&[0x80], 64), Err("cut short"));
    }

    #[test]
    fn foreign_payloads_are_errors() {
        assert!(decode(&[]).is_err());
        assert!(decode(&[9, 1, 2]).unwrap_err().contains("version 9"));
        assert!(decode(&[1, 0xff]).is_err());
    }
}
